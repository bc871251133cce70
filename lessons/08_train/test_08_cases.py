"""Lesson 08, graded: the conventions of the README, one small case each (a score equal to the threshold is
dropped, classes never suppress each other, the detection's own class mask, a probability exactly at the
mask threshold).

The cases ``test_08_train.py`` leaves out: each states a rule of the lesson's README and fails on a solution
that breaks it (``tools/mutate_lessons.py`` plants such mistakes in the library and checks that some test
catches each). ``impl`` is the module under test, as in ``test_08_train.py``.
"""
import numpy as np
from _grading import expect_close, expect_equal

TASKS = {1: "rois_from_boxes", 2: "sample_mask_rois", 3: "postprocess_detections", 4: "detection_masks"}


# ----------------------------------------------------------------------------------- task 1: rois_from_boxes

def test_task1_the_dtype_asked_for(impl):
    boxes = [np.array([[1.0, 2.0, 3.0, 4.0]]), np.zeros((0, 4)), np.array([[5.0, 6.0, 7.0, 8.0]])]
    got = np.asarray(impl.rois_from_boxes(boxes, dtype="float64"))
    expect_equal(str(got.dtype), "float64", "rois_from_boxes(..., dtype='float64').dtype",
                 inputs=dict(boxes_per_image=boxes, dtype="float64"))
    expect_close(got, [[0, 1, 2, 3, 4], [2, 5, 6, 7, 8]], "rois_from_boxes of images with 1, 0 and 1 boxes: the "
                                                          "empty image 1 still counts, the third image is number 2",
                 inputs=dict(boxes_per_image=boxes, dtype="float64"))


# ---------------------------------------------------------------------------- task 3: postprocess_detections

def test_task3_a_score_equal_to_the_threshold_is_dropped(impl):
    # K = 2: proposal 0 scores 0.5 for class 1 (logits 0, 0), proposal 1 scores 0.75 (logits 0, ln 3)
    logits = np.array([[0.0, 0.0], [0.0, np.log(3.0)]])
    proposals = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    got = impl.postprocess_detections(logits, np.zeros((2, 8)), proposals, (40, 40), score_threshold=0.5)
    inputs = dict(class_logits=logits, box_deltas=np.zeros((2, 8)), proposals=proposals, image_size=(40, 40),
                  score_threshold=0.5)
    expect_close(got["scores"], [0.75], "postprocess_detections with score_threshold 0.5 of candidates scored 0.5 and "
                                        "0.75: a score <= the threshold is dropped, 0.5 included", inputs=inputs)


def test_task3_classes_never_suppress_each_other(impl):
    # one proposal, K = 3: classes 1 and 2 give the same box; NMS per class keeps both, the better first
    logits = np.log(np.array([[1.0, 5.0, 4.0]]))
    proposals = np.array([[5.0, 5.0, 25.0, 25.0]])
    got = impl.postprocess_detections(logits, np.zeros((1, 12)), proposals, (40, 40))
    inputs = dict(class_logits=logits, box_deltas=np.zeros((1, 12)), proposals=proposals, image_size=(40, 40))
    expect_close(got["scores"], [0.5, 0.4], "postprocess_detections of one proposal whose classes 1 and 2 give the "
                                            "same box (IoU 1), scores 0.5 and 0.4: both kept", inputs=inputs)
    expect_equal(got["labels"], [1, 2], "the same: labels", inputs=inputs)


# ----------------------------------------------------------------------------------- task 4: detection_masks

def test_task4_a_probability_exactly_at_the_threshold_is_inside(impl):
    # a 2 x 2 box with a 2 x 2 mask: image pixel (1 + v, 1 + u) reads mask pixel (v, u)
    logits = np.zeros((1, 2, 2, 2))
    logits[0, 1] = [[0.0, -1e-3], [5.0, -5.0]]      # class 1: sigmoid 0.5 (kept), just under, above, below
    logits[0, 0] = 9.0                              # the background channel would fill the box
    boxes = np.array([[1.0, 1.0, 3.0, 3.0]])
    got = np.asarray(impl.detection_masks(logits, np.array([1]), boxes, (4, 4)))
    want = np.zeros((1, 4, 4), dtype=bool)
    want[0, 1, 1] = want[0, 2, 1] = True
    expect_equal(got, want, "detection_masks of a box (1, 1, 3, 3) that fits its 2 x 2 mask, label 1, logits "
                            "0, -0.001 / 5, -5: sigmoid >= 0.5, so the logit 0 is inside; channel 0 is ignored",
                 inputs=dict(mask_logits=logits, labels=np.array([1]), boxes=boxes, image_size=(4, 4)))
