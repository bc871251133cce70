"""Lesson 01, graded: IoU, box encoding and decoding, NMS (lecture stage 1).

``impl`` is the module under test (``--impl reference|exercise|stub``, see ``lessons/conftest.py``); the
library, ``mrcnn_edu.boxes``, gives the expected values on random inputs. Each test belongs to the task in
its name.
"""
import math

import numpy as np
import pytest
from _grading import expect_close, expect_equal

from mrcnn_edu import boxes as lib

TASKS = {1: "box_area", 2: "box_iou", 3: "box_encode", 4: "box_decode", 5: "nms"}


def random_boxes(rng, n, extent=100.0, min_size=1.0):
    """``n`` boxes with corners in ``[0, 1.5 * extent]`` and sides of at least ``min_size``."""
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(min_size, extent / 2, size=(n, 2))
    return np.hstack([xy, xy + wh])


# --------------------------------------------------------------------------------------- task 1: box_area

def test_task1_area_by_hand(impl):
    boxes = np.array([[0.0, 0.0, 4.0, 2.0], [2.0, 1.0, 6.0, 4.0], [1.0, 1.0, 1.0, 5.0]])
    expect_close(impl.box_area(boxes), [8.0, 12.0, 0.0], "box_area of (0,0,4,2), (2,1,6,4) and the flat box (1,1,1,5)",
                 inputs=dict(boxes=boxes))


def test_task1_area_random(impl):
    boxes = random_boxes(np.random.default_rng(0), 7)
    expect_close(impl.box_area(boxes), lib.box_area(boxes), "box_area of 7 random boxes", inputs=dict(boxes=boxes))


# ---------------------------------------------------------------------------------------- task 2: box_iou

IOU_CASES = {
    "lecture": ("the lecture's picture: two 100x100 boxes overlapping 50x50", (0, 0, 100, 100), (50, 50, 150, 150),
                2500 / 17500),
    "by-hand": ("(0,0,4,2) and (2,1,6,4): intersection 2, union 8 + 12 - 2 = 18", (0, 0, 4, 2), (2, 1, 6, 4), 2 / 18),
    "disjoint": ("disjoint boxes", (0, 0, 1, 1), (2, 2, 3, 3), 0.0),
    "edge": ("boxes that share an edge only", (0, 0, 1, 1), (1, 0, 2, 1), 0.0),
    "inside": ("a 2x2 box inside a 10x10 box", (0, 0, 10, 10), (2, 2, 4, 4), 4 / 100),
    "itself": ("a box with itself", (3, 1, 7, 9), (3, 1, 7, 9), 1.0),
}


@pytest.mark.parametrize("name", IOU_CASES)
def test_task2_iou_by_hand(impl, name):
    case, box1, box2, expected = IOU_CASES[name]
    boxes1, boxes2 = np.array([box1], dtype=float), np.array([box2], dtype=float)
    expect_close(impl.box_iou(boxes1, boxes2), [[expected]], f"box_iou, {case}",
                 inputs=dict(boxes1=boxes1, boxes2=boxes2))


def test_task2_iou_matrix_random(impl):
    rng = np.random.default_rng(1)
    boxes1, boxes2 = random_boxes(rng, 5), random_boxes(rng, 3)
    expect_close(impl.box_iou(boxes1, boxes2), lib.box_iou(boxes1, boxes2), "box_iou of 5 x 3 random boxes (N x M)",
                 inputs=dict(boxes1=boxes1, boxes2=boxes2))


def test_task2_iou_of_zero_area_boxes_is_zero(impl):
    point = np.array([[2.0, 3.0, 2.0, 3.0]])
    expect_close(impl.box_iou(point, point), [[0.0]],
                 "box_iou of the point (2,3,2,3) with itself (union 0: 0, not NaN)",
                 inputs=dict(boxes1=point, boxes2=point))


# ------------------------------------------------------------------------------------- task 3: box_encode

def test_task3_encode_by_hand(impl):
    anchor, target = np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([[5.0, 5.0, 15.0, 25.0]])
    expect_close(impl.box_encode(anchor, target), [[0.5, 1.0, 0.0, math.log(2)]],
                 "box_encode of target (5,5,15,25) against anchor (0,0,10,10)",
                 inputs=dict(reference=anchor, targets=target))
    expect_close(impl.box_encode(anchor, target, weights=(10.0, 10.0, 5.0, 5.0)), [[5.0, 10.0, 0.0, 5 * math.log(2)]],
                 "the same with weights (10, 10, 5, 5)",
                 inputs=dict(reference=anchor, targets=target, weights=(10.0, 10.0, 5.0, 5.0)))


def test_task3_encode_random(impl):
    rng = np.random.default_rng(2)
    reference, targets = random_boxes(rng, 6), random_boxes(rng, 6)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        expect_close(impl.box_encode(reference, targets, weights), lib.box_encode(reference, targets, weights),
                     f"box_encode of 6 random pairs, weights {weights}",
                     inputs=dict(reference=reference, targets=targets, weights=weights))


# ------------------------------------------------------------------------------------- task 4: box_decode

def test_task4_decode_by_hand(impl):
    anchor, deltas = np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([[0.5, 1.0, 0.0, math.log(2)]])
    expect_close(impl.box_decode(deltas, anchor), [[5.0, 5.0, 15.0, 25.0]],
                 "box_decode of (0.5, 1, 0, log 2) on anchor (0,0,10,10)", inputs=dict(deltas=deltas, reference=anchor))


def test_task4_decode_inverts_encode(impl):
    rng = np.random.default_rng(3)
    reference, targets = random_boxes(rng, 6), random_boxes(rng, 6)
    deltas = lib.box_encode(reference, targets, (10.0, 10.0, 5.0, 5.0))
    expect_close(impl.box_decode(deltas, reference, (10.0, 10.0, 5.0, 5.0)), targets,
                 "box_decode(box_encode(reference, targets)) with weights (10, 10, 5, 5) gives the targets back",
                 inputs=dict(deltas=deltas, reference=reference, weights=(10.0, 10.0, 5.0, 5.0)))


def test_task4_decode_clamps_dw_dh(impl):
    anchor, deltas = np.array([[0.0, 0.0, 16.0, 16.0]]), np.array([[0.0, 0.0, 10.0, 0.0]])
    expect_close(impl.box_decode(deltas, anchor), [[-492.0, 0.0, 508.0, 16.0]],
                 "box_decode of dw = 10 on a 16x16 anchor: dw clamped at log(1000/16), width 1000",
                 inputs=dict(deltas=deltas, reference=anchor))


def test_task4_decode_several_classes_random(impl):
    rng = np.random.default_rng(4)
    reference = random_boxes(rng, 5)
    deltas = rng.normal(0, 0.5, size=(5, 12))
    expect_close(impl.box_decode(deltas, reference), lib.box_decode(deltas, reference),
                 "box_decode of 5 x 12 deltas (K = 3 classes, 4 columns each)",
                 inputs=dict(deltas=deltas, reference=reference))


# -------------------------------------------------------------------------------------------- task 5: nms

def test_task5_nms_only_kept_boxes_suppress(impl):
    # B overlaps A (IoU 1/3) and C (IoU 1/3); A and C do not overlap. B falls to A, so C survives.
    boxes = np.array([[10.0, 0, 20, 10], [0, 0, 10, 10], [5, 0, 15, 10]])   # C, A, B
    scores = np.array([0.7, 0.9, 0.8])
    expect_equal(impl.nms(boxes, scores, 0.3), [1, 0],
                 "nms at 0.3 of boxes given in the order C, A, B: A (score .9), B (.8) overlapping A and C by 1/3, "
                 "C (.7); keeps A (index 1) then C (index 0)",
                 inputs=dict(boxes=boxes, scores=scores, iou_threshold=0.3))


def test_task5_nms_threshold_is_strict(impl):
    boxes = np.array([[0.0, 0, 3, 1], [1, 0, 4, 1]])    # IoU exactly 2 / 4
    scores = np.array([0.6, 0.9])
    expect_equal(impl.nms(boxes, scores, 0.5), [1, 0],
                 "nms at 0.5 of two boxes with IoU exactly 0.5: both kept (suppress only IoU > threshold)",
                 inputs=dict(boxes=boxes, scores=scores, iou_threshold=0.5))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_task5_nms_random(impl, threshold):
    rng = np.random.default_rng(5)
    centres = rng.uniform(20, 80, size=(3, 2))
    xy = np.repeat(centres, 8, axis=0) + rng.normal(0, 4, size=(24, 2))
    boxes = np.hstack([xy - 10, xy + rng.uniform(8, 14, size=(24, 2))])
    scores = rng.permutation(24) / 24.0
    expect_equal(impl.nms(boxes, scores, threshold), lib.nms(boxes, scores, threshold),
                 f"nms at {threshold} of 24 random boxes around 3 objects",
                 inputs=dict(boxes=boxes, scores=scores, iou_threshold=threshold))


def test_task5_nms_of_no_boxes(impl):
    expect_equal(impl.nms(np.zeros((0, 4)), np.zeros(0), 0.5), np.zeros(0, dtype=np.int64), "nms of 0 boxes")
