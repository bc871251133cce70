"""Lesson 09, graded: the conventions of the README, one small case each (equal scores keep their order in
every sort, flags are booleans, the best ``max_detections`` of an image by a stable sort).

The cases ``test_09_evaluate.py`` leaves out: each states a rule of the lesson's README and fails on a
solution that breaks it (``tools/mutate_lessons.py`` plants such mistakes in the library and checks that some
test catches each). ``impl`` is the module under test, as in ``test_09_evaluate.py``.
"""
import numpy as np
from _grading import expect_close, expect_equal

TASKS = {1: "mask_iou", 2: "match_detections", 3: "precision_recall", 4: "average_precision",
         5: "ap_at_thresholds"}


def interleaved(n=24):
    """n detections scored .9 and .5 in turn, all on one object with IoU 0.8: only the first to go matches.
    NumPy's default (unstable) argsort of -scores visits the .9s as 0, 2, 6, 4, 12, ... instead of 0, 2, 4, ..."""
    return np.full((n, 1), 0.8), np.tile([0.9, 0.5], n // 2)


# ------------------------------------------------------------------------------------------ task 1: mask_iou

def test_task1_the_counts_are_pixels(impl):
    a = np.zeros((1, 3, 4), dtype=bool)
    a[0, :2, :2] = True                                   # 4 pixels
    b = np.zeros((2, 3, 4), dtype=bool)
    b[0, 1:, 1:] = True                                   # 6 pixels, 1 shared with a
    expect_close(impl.mask_iou(a, b), [[1 / 9, 0.0]], "mask_iou of a 2 x 2 square and a 2 x 3 block sharing 1 pixel "
                                                      "(1 / (4 + 6 - 1)), and of it with an empty mask (0)",
                 inputs=dict(masks1=a, masks2=b))


# ---------------------------------------------------------------------------------- task 2: match_detections

def test_task2_equal_scores_keep_the_input_order(impl):
    # 24 detections scored .9, .5, .9, ...; the .9 rows 0 and 2 overlap object 0, rows 4 and 6 object 1, and
    # so on (IoU 0.8). Of each pair the row visited first takes the object: by a stable sort of -scores (COCO's
    # order) the earlier row, 0, 4, 8, ...; NumPy's default argsort visits 6 before 4 and 10 before 8
    _, scores = interleaved()
    ious = np.zeros((24, 6))
    for k in range(6):
        ious[[4 * k, 4 * k + 2], k] = 0.8
    want = np.arange(24) % 4 == 0
    expect_equal(impl.match_detections(ious, scores, 0.5), want,
                 "match_detections of 24 detections scored .9, .5, .9, ...; rows 4k and 4k + 2 (both .9) overlap "
                 "object k with IoU 0.8: equal scores go in row order, so row 4k takes object k and 4k + 2 is a "
                 "duplicate", inputs=dict(ious=ious, scores=scores, iou_threshold=0.5))


def test_task2_flags_are_booleans(impl):
    ious, scores = np.array([[0.8], [0.2]]), np.array([0.9, 0.8])
    got = np.asarray(impl.match_detections(ious, scores, 0.5))
    expect_equal(str(got.dtype), "bool", "match_detections returns booleans (True: true positive)",
                 inputs=dict(ious=ious, scores=scores, iou_threshold=0.5))
    none = np.asarray(impl.match_detections(np.zeros((2, 0)), scores, 0.5))
    expect_equal(str(none.dtype), "bool", "match_detections without objects returns booleans too (all False)",
                 inputs=dict(ious=np.zeros((2, 0)), scores=scores, iou_threshold=0.5))


# ---------------------------------------------------------------------------------- task 3: precision_recall

def test_task3_equal_scores_keep_the_input_order(impl):
    tp = np.arange(24) % 4 == 0                           # rows 0, 4, 8, ... are hits, all scored .9
    scores = np.tile([0.9, 0.5], 12)
    precision, _ = impl.precision_recall(tp, scores, 6)
    hits = np.cumsum(np.r_[tp[0::2], tp[1::2]])
    expect_close(precision, hits / np.arange(1, 25),
                 "precision_recall of 24 detections scored .9, .5, .9, ..., every fourth a hit: the .9s first, in "
                 "their row order 0, 2, 4, ... (a stable sort), so the hits come at ranks 1, 3, 5, ...",
                 inputs=dict(tp=tp, scores=scores, num_gt=6))


# ---------------------------------------------------------------------------------- task 5: ap_at_thresholds

def test_task5_the_best_detections_by_a_stable_sort(impl):
    ious, scores = interleaved()
    ious = ious.copy()
    ious[2:] = 0.0                                        # only rows 0 and 1 overlap the object
    got = impl.ap_at_thresholds([ious], [scores], [0.5], max_detections=1)
    expect_close(got, [1.0], "ap_at_thresholds with max_detections=1 of 24 detections scored .9, .5, ...: the "
                             "image's best one is row 0 (stable sort), which finds the only object: AP 1",
                 inputs=dict(ious_per_image=[ious], scores_per_image=[scores], iou_thresholds=[0.5],
                             max_detections=1))
