"""Lesson 01, graded: the conventions of the README, one small case each (ties, tiny and empty inputs, dtypes).

The cases ``test_01_iou.py`` leaves out: each states a rule of the lesson's README and fails on a solution that
breaks it (``tools/mutate_lessons.py`` plants such mistakes in the library and checks that some test here or
there catches each). ``impl`` is the module under test, as in ``test_01_iou.py``.
"""
import numpy as np
from _grading import expect_close, expect_equal, expect_true

TASKS = {1: "box_area", 2: "box_iou", 3: "box_encode", 4: "box_decode", 5: "nms"}


# --------------------------------------------------------------------------------------- task 1: box_area

def test_task1_no_boxes_and_float32(impl):
    boxes = np.zeros((0, 4))
    expect_equal(np.shape(impl.box_area(boxes)), (0,), "box_area of 0 boxes: an empty array of 0 areas",
                 inputs=dict(boxes=boxes))
    small = np.array([[0.0, 0.0, 4.0, 2.0]], dtype=np.float32)
    got = impl.box_area(small)
    expect_equal(str(np.asarray(got).dtype), "float32", "box_area of float32 boxes keeps float32",
                 inputs=dict(boxes=small))


# ---------------------------------------------------------------------------------------- task 2: box_iou

def test_task2_boxes_smaller_than_a_pixel(impl):
    # a union below 1 is still a union: only a union of exactly 0 gives 0
    boxes1 = np.array([[0.0, 0.0, 0.5, 0.5]])
    boxes2 = np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]])
    expect_close(impl.box_iou(boxes1, boxes2), [[1.0, 1 / 3]],
                 "box_iou of a 0.5 x 0.5 box with itself (1) and with its copy moved by 0.25 (0.125 / 0.375)",
                 inputs=dict(boxes1=boxes1, boxes2=boxes2))


def test_task2_empty_sides(impl):
    boxes = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    none = np.zeros((0, 4))
    expect_equal(np.shape(impl.box_iou(boxes, none)), (2, 0), "box_iou of 2 boxes with 0 boxes: a 2 x 0 matrix",
                 inputs=dict(boxes1=boxes, boxes2=none))
    expect_equal(np.shape(impl.box_iou(none, boxes)), (0, 2), "box_iou of 0 boxes with 2 boxes: a 0 x 2 matrix",
                 inputs=dict(boxes1=none, boxes2=boxes))


def test_task2_float32(impl):
    boxes1 = np.array([[0.0, 0.0, 4.0, 2.0]], dtype=np.float32)
    boxes2 = np.array([[2.0, 1.0, 6.0, 4.0]], dtype=np.float32)
    got = impl.box_iou(boxes1, boxes2)
    expect_equal(str(np.asarray(got).dtype), "float32", "box_iou of float32 boxes keeps float32",
                 inputs=dict(boxes1=boxes1, boxes2=boxes2))
    expect_close(got, [[1 / 9]], "box_iou of (0,0,4,2) and (2,1,6,4) in float32", rtol=1e-6,
                 inputs=dict(boxes1=boxes1, boxes2=boxes2))


# ------------------------------------------------------------------------------------- task 3: box_encode

def test_task3_no_boxes_and_float32(impl):
    none = np.zeros((0, 4))
    expect_equal(np.shape(impl.box_encode(none, none)), (0, 4), "box_encode of 0 pairs: 0 x 4 deltas",
                 inputs=dict(reference=none, targets=none))
    anchor = np.array([[0.0, 0.0, 10.0, 10.0]], dtype=np.float32)
    target = np.array([[5.0, 5.0, 15.0, 25.0]], dtype=np.float32)
    got = impl.box_encode(anchor, target)
    expect_equal(str(np.asarray(got).dtype), "float32", "box_encode of float32 boxes keeps float32",
                 inputs=dict(reference=anchor, targets=target))


# ------------------------------------------------------------------------------------- task 4: box_decode

def test_task4_no_boxes_and_float32(impl):
    none, no_deltas = np.zeros((0, 4)), np.zeros((0, 8))
    expect_equal(np.shape(impl.box_decode(no_deltas, none)), (0, 8),
                 "box_decode of 0 boxes with K = 2 sets of deltas: 0 x 8",
                 inputs=dict(deltas=no_deltas, reference=none))
    anchor = np.array([[0.0, 0.0, 10.0, 10.0]], dtype=np.float32)
    deltas = np.array([[0.5, 1.0, 0.0, 0.5]], dtype=np.float32)
    got = impl.box_decode(deltas, anchor)
    expect_equal(str(np.asarray(got).dtype), "float32", "box_decode of float32 deltas and boxes keeps float32",
                 inputs=dict(deltas=deltas, reference=anchor))


def test_task4_only_dw_and_dh_are_clamped(impl):
    # dw = 10 is clamped at log(1000/16); dx = 10 and a very negative dh are not
    anchor, deltas = np.array([[0.0, 0.0, 16.0, 16.0]]), np.array([[10.0, 0.0, 10.0, -10.0]])
    half_h = 8 * np.exp(-10.0)
    expect_close(impl.box_decode(deltas, anchor), [[168 - 500, 8 - half_h, 168 + 500, 8 + half_h]],
                 "box_decode of (dx, dy, dw, dh) = (10, 0, 10, -10) on (0,0,16,16): the centre moves 10 widths "
                 "to x = 168, the width is clamped to 1000, the height shrinks by exp(-10) (no lower clamp)",
                 inputs=dict(deltas=deltas, reference=anchor))


# -------------------------------------------------------------------------------------------- task 5: nms

def test_task5_equal_scores_keep_the_input_order(impl):
    # 24 disjoint boxes, scored .9 and .5 in turn: nothing is removed, and a stable sort of -scores keeps
    # equal scores in the input order (NumPy's default quicksort gives 0, 2, 6, 4, 12, 14, ... here)
    x = np.arange(24, dtype=float) * 20
    boxes = np.column_stack([x, np.zeros(24), x + 10, np.full(24, 10.0)])
    scores = np.tile([0.9, 0.5], 12)
    expect_equal(impl.nms(boxes, scores, 0.5), np.r_[0:24:2, 1:24:2],
                 "nms of 24 disjoint boxes scored .9, .5, .9, .5, ...: all kept, the .9 ones first, and equal scores "
                 "in the input order (0, 2, 4, ..., 22, then 1, 3, ..., 23): sort -scores with a stable sort",
                 inputs=dict(boxes=boxes, scores=scores, iou_threshold=0.5))


def test_task5_of_equal_boxes_with_equal_scores_the_first_stays(impl):
    # even indices: 10 copies of one box, scored .9; odd indices: 10 disjoint boxes elsewhere, scored .5.
    # The first copy (index 0) removes the other 9, as torchvision; an unstable sort may keep another copy
    copy = [0.0, 0.0, 10.0, 10.0]
    boxes = np.array([copy if i % 2 == 0 else [20.0 * i, 50, 20 * i + 10, 60] for i in range(20)])
    scores = np.tile([0.9, 0.5], 10)
    expect_equal(impl.nms(boxes, scores, 0.5), np.r_[0, 1:20:2],
                 "nms of 10 copies of one box (even indices, score .9) between 10 disjoint boxes (odd indices, "
                 "score .5): the first copy, index 0, stays and removes the other copies",
                 inputs=dict(boxes=boxes, scores=scores, iou_threshold=0.5))


def test_task5_one_box_and_no_box(impl):
    box, score = np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([0.3])
    expect_equal(impl.nms(box, score, 0.5), [0], "nms of one box: it is kept",
                 inputs=dict(boxes=box, scores=score, iou_threshold=0.5))
    none = impl.nms(np.zeros((0, 4)), np.zeros(0), 0.5)
    expect_true(np.asarray(none).shape == (0,) and np.asarray(none).dtype.kind == "i",
                "nms of 0 boxes: an empty array of integer indices (int64, as torchvision), not of floats",
                f"got {np.asarray(none)!r}", inputs=dict(boxes=np.zeros((0, 4)), scores=np.zeros(0), iou_threshold=0.5))
