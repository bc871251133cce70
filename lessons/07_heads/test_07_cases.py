"""Lesson 07, graded: the conventions of the README, one small case each (integer labels and indices even
without objects, float32 kept, the ignored band between the two thresholds, masks pasted in float32).

The cases ``test_07_heads.py`` leaves out: each states a rule of the lesson's README or of the library's
docstring and fails on a solution that breaks it (``tools/mutate_lessons.py`` plants such mistakes in the
library and checks that some test catches each). ``impl`` is the module under test, as in ``test_07_heads.py``.
"""
import numpy as np
from _grading import expect_close, expect_equal

TASKS = {1: "box_head_targets", 2: "fast_rcnn_loss", 3: "mask_targets", 4: "paste_masks"}


# ----------------------------------------------------------------------------------- task 1: box_head_targets

def test_task1_labels_and_indices_are_integers_without_objects(impl):
    proposals = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 15.0]])
    gt_boxes, gt_labels = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    _, labels, _, matched = impl.box_head_targets(proposals, gt_boxes, gt_labels, np.random.default_rng(0))
    expect_equal([np.asarray(labels).dtype.kind, np.asarray(matched).dtype.kind], ["i", "i"],
                 "box_head_targets of 2 proposals in an image without objects: (labels, matched_gt_index) are "
                 "integer arrays (int64), as with objects", inputs=dict(proposals=proposals, gt_boxes=gt_boxes,
                                                                      gt_labels=gt_labels))


def test_task1_the_ignored_band(impl):
    # fg_iou 0.6, bg_iou 0.3: IoU 0.6 is foreground, 0.3 is ignored (in [0.3, 0.6)), 0.2 is background
    gt_boxes, gt_labels = np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([3])
    proposals = np.array([[0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 10.0, 3.0], [0.0, 0.0, 10.0, 2.0]])
    rois, labels, _, _ = impl.box_head_targets(proposals, gt_boxes, gt_labels, np.random.default_rng(0),
                                               fg_iou=0.6, bg_iou=0.3)
    inputs = dict(proposals=proposals, gt_boxes=gt_boxes, gt_labels=gt_labels, fg_iou=0.6, bg_iou=0.3)
    expect_close(rois, [[0, 0, 10, 6], [0, 0, 10, 2], [0, 0, 10, 10]],
                 "box_head_targets with fg_iou 0.6, bg_iou 0.3 of proposals with IoU 0.6, 0.3, 0.2 and the appended "
                 "ground truth: the RoI with IoU 0.3 is ignored (not sampled), the others kept in order", inputs=inputs)
    expect_equal(np.asarray(labels), [3, 0, 3], "the same: labels (IoU 0.6 >= fg_iou: class 3; 0.2 < bg_iou: 0)",
                 inputs=inputs)


# ------------------------------------------------------------------------------------- task 2: fast_rcnn_loss

def test_task2_float32_stays_float32(impl):
    logits = np.zeros((2, 3), dtype=np.float32)
    deltas = np.zeros((2, 12), dtype=np.float32)
    targets = np.zeros((2, 4), dtype=np.float32)
    for labels, what in [(np.array([2, 0]), "one foreground RoI"), (np.array([0, 0]), "background RoIs only")]:
        got = impl.fast_rcnn_loss(logits, deltas, labels, targets)
        expect_equal([str(np.asarray(g).dtype) for g in got], ["float32"] * 4,
                     f"fast_rcnn_loss of float32 inputs, {what}: (loss_cls, loss_box, dclass_logits, "
                     "dbox_regression) dtypes", inputs=dict(class_logits=logits, box_regression=deltas, labels=labels,
                                                          regression_targets=targets))


# --------------------------------------------------------------------------------------- task 3: mask_targets

def test_task3_float32_boxes_give_float32_targets(impl):
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 1:4, 1:5] = True
    proposals = np.array([[1.0, 1.0, 5.0, 4.0]], dtype=np.float32)
    got = impl.mask_targets(masks, proposals, np.array([0]), 4)
    expect_equal(str(np.asarray(got).dtype), "float32", "mask_targets with float32 proposals: float32 targets "
                                                        "(the proposals' dtype)",
                 inputs=dict(gt_masks=masks, proposals=proposals, matched_gt_index=np.array([0]), m=4))


# --------------------------------------------------------------------------------------- task 4: paste_masks

def test_task4_float32_stays_float32(impl):
    masks = np.ones((1, 2, 2), dtype=np.float32)
    boxes = np.array([[1.0, 1.0, 3.0, 3.0]], dtype=np.float32)
    got = impl.paste_masks(masks, boxes, (4, 4))
    expect_equal(str(np.asarray(got).dtype), "float32", "paste_masks of a float32 mask: float32",
                 inputs=dict(masks=masks, boxes=boxes, image_size=(4, 4)))
    none = impl.paste_masks(np.zeros((0, 2, 2), dtype=np.float32), np.zeros((0, 4), dtype=np.float32), (4, 4))
    expect_equal(str(np.asarray(none).dtype), "float32", "paste_masks of 0 float32 masks: a float32 0 x 4 x 4 array")


def test_task4_box_edges_on_pixel_centres(impl):
    # a full 2 x 2 mask in the box (1.5, 0.5, 3.5, 2.5), 2 x 2 pixels: columns x read u = x - 1.5, rows v = y - 0.5.
    # A centre on the box's edge (u or v = -0.5 or 1.5) reads half the edge value from the zero border; a
    # centre inside reads 1; one a whole mask pixel out (u = -1.5, 2.5) reads 0
    masks, boxes = np.ones((1, 2, 2)), np.array([[1.5, 0.5, 3.5, 2.5]])
    expect_close(impl.paste_masks(masks, boxes, (4, 5)), np.outer([0.5, 1, 0.5, 0], [0, 0.5, 1, 0.5, 0])[None],
                 "paste_masks of a full 2 x 2 mask into the box (1.5, 0.5, 3.5, 2.5) of a 4 x 5 image: the pixel "
                 "centres on the box's edges (x = 1.5, 3.5; y = 0.5, 2.5) read 0.5, the one inside reads 1",
                 inputs=dict(masks=masks, boxes=boxes, image_size=(4, 5)))
