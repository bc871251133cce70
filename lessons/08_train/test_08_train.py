"""Lesson 08, graded: the plain-function steps of the whole model, training and inference (lecture stage 8).

``impl`` is the module under test (``--impl reference|exercise|stub``, see ``lessons/conftest.py``); the
library (``mrcnn_edu.roi``, ``matching``, ``postprocess``) gives the expected values. ``sample_mask_rois`` draws random numbers, so its
tests check what any correct draw satisfies (a subset of the positives, the right count, no draw when none
is needed, every positive equally likely), not one particular draw. Each test belongs to the task in its name.
"""
import itertools

import numpy as np
import pytest
from _grading import expect_close, expect_equal, expect_true

from mrcnn_edu import postprocess, roi

TASKS = {1: "rois_from_boxes", 2: "sample_mask_rois", 3: "postprocess_detections", 4: "detection_masks"}

# README's worked example: 2 proposals, K = 3 (background, class 1, class 2), a 64 x 64 image.
# exp(logits) = (2, 7, 1) and (9, 15, 1): the softmax is (0.2, 0.7, 0.1) and (0.36, 0.6, 0.04).
EXAMPLE_LOGITS = np.log(np.array([[2.0, 7.0, 1.0], [9.0, 15.0, 1.0]]))
EXAMPLE_PROPOSALS = np.array([[10.0, 10.0, 50.0, 50.0], [14.0, 12.0, 54.0, 52.0]])
EXAMPLE_DELTAS = np.zeros((2, 12))
EXAMPLE_DELTAS[0, 8] = 1.0          # proposal 0, class 2: dx = 1 / wx = 0.1 of the width, 4 px to the right


# --------------------------------------------------------------------------------- task 1: rois_from_boxes

def test_task1_by_hand(impl):
    boxes = [np.array([[1.0, 2, 3, 4], [5, 6, 7, 8]]), np.array([[9.0, 10, 11, 12]])]
    got = impl.rois_from_boxes(boxes, "float64")
    expect_close(got, [[0, 1, 2, 3, 4], [0, 5, 6, 7, 8], [1, 9, 10, 11, 12]],
                 "rois_from_boxes of 2 boxes in image 0 and 1 box in image 1: (batch index, x1, y1, x2, y2) rows")
    expect_equal(str(np.asarray(got).dtype), "float64", "rois_from_boxes(..., 'float64'): the dtype asked for")


def test_task1_an_image_without_boxes_keeps_the_numbering(impl):
    boxes = [np.array([[1.0, 1, 5, 5]]), np.zeros((0, 4)), np.array([[2.0, 2, 6, 6], [3, 3, 7, 7]])]
    got = impl.rois_from_boxes(boxes, "float32")
    expect_close(got, [[0, 1, 1, 5, 5], [2, 2, 2, 6, 6], [2, 3, 3, 7, 7]],
                 "rois_from_boxes of 1, 0 and 2 boxes: the third image's boxes keep batch index 2")
    expect_equal(str(np.asarray(got).dtype), "float32", "rois_from_boxes(..., 'float32'): the dtype asked for")


def test_task1_empty(impl):
    for boxes, what in [([], "no images"), ([np.zeros((0, 4)), np.zeros((0, 4))], "two images without boxes")]:
        got = np.asarray(impl.rois_from_boxes(boxes))
        expect_equal(got.shape, (0, 5), f"rois_from_boxes of {what}: a 0 x 5 array")
        expect_equal(str(got.dtype), "float32", f"rois_from_boxes of {what}: float32 by default")


def test_task1_random(impl):
    rng = np.random.default_rng(8)
    boxes = []
    for n in (3, 0, 5, 1):
        corner = rng.uniform(0, 100, size=(n, 2))
        boxes.append(np.concatenate([corner, corner + rng.uniform(1, 30, size=(n, 2))], axis=1))
    expect_close(impl.rois_from_boxes(boxes, "float64"), roi.rois_from_boxes(boxes, "float64"),
                 "rois_from_boxes of 3, 0, 5 and 1 random boxes in 4 images")


# -------------------------------------------------------------------------------- task 2: sample_mask_rois

class NoDraws:
    """A generator that refuses to be used: sampling is needed only when there are more positives than cap."""

    def __init__(self, case):
        self.case = case

    def __getattr__(self, name):
        raise AssertionError(f"{self.case}: drew random numbers (rng.{name}) although every positive is kept; "
                             "the docstring says the rng is used only when there are more than cap")


def positives(num_rois, num_positive, seed):
    mask = np.zeros(num_rois, dtype=bool)
    mask[np.random.default_rng(seed).choice(num_rois, num_positive, replace=False)] = True
    return mask


@pytest.mark.parametrize("num_rois, num_positive, cap", [(30, 12, 8), (30, 12, 1), (64, 40, 8), (10, 10, 3),
                                                         (20, 9, 8)])
def test_task2_a_subset_of_the_right_size(impl, num_rois, num_positive, cap):
    positive = positives(num_rois, num_positive, num_rois + cap)
    case = f"sample_mask_rois of {num_rois} RoIs, {num_positive} positive, cap {cap}"
    for seed in range(5):
        keep = np.asarray(impl.sample_mask_rois(positive, cap, np.random.default_rng(seed)))
        expect_equal([keep.dtype == bool, keep.shape == positive.shape], [True, True],
                     case + ": (a bool mask?, of the RoIs' shape?)")
        expect_equal(int(keep.sum()), min(cap, num_positive), case + f" (seed {seed}): how many are kept")
        expect_true(not np.any(keep & ~positive), case + f" (seed {seed}): only positives may be kept",
                    f"kept the negatives {np.flatnonzero(keep & ~positive).tolist()}")


@pytest.mark.parametrize("num_positive, cap", [(5, 0), (5, -1), (5, 5), (3, 8), (0, 8), (0, 0)])
def test_task2_keeps_every_positive_without_drawing(impl, num_positive, cap):
    positive = positives(16, num_positive, 3)
    case = f"sample_mask_rois of 16 RoIs, {num_positive} positive, cap {cap}"
    keep = impl.sample_mask_rois(positive, cap, NoDraws(case))
    expect_equal(np.asarray(keep), positive, case + ": every positive is kept (cap <= 0 or positives <= cap)")


def test_task2_every_positive_is_equally_likely(impl):
    positive = np.zeros(12, dtype=bool)
    positive[[0, 3, 4, 7, 9, 11]] = True
    rng = np.random.default_rng(2017)
    draws = np.array([np.asarray(impl.sample_mask_rois(positive, 2, rng)) for _ in range(3000)])
    frequency = draws.mean(axis=0)[positive]
    expect_close(frequency, np.full(6, 1 / 3), "sample_mask_rois, 6 positives, cap 2, 3000 draws: how often each "
                 "positive is kept (2 of 6 each time: 1/3 when the choice is uniform)", rtol=0, atol=0.04)
    kept = [tuple(np.flatnonzero(d)) for d in draws]
    pairs = {pair: kept.count(pair) / len(kept) for pair in itertools.combinations(np.flatnonzero(positive), 2)}
    expect_true(min(pairs.values()) > 0.04, "sample_mask_rois, 6 positives, cap 2: every one of the 15 pairs "
                "should come up about 1/15 of the time",
                f"the rarest pair came up {min(pairs.values()):.3f} of the time")


# -------------------------------------------------------------------------- task 3: postprocess_detections

def test_task3_the_worked_example(impl):
    got = impl.postprocess_detections(EXAMPLE_LOGITS, EXAMPLE_DELTAS, EXAMPLE_PROPOSALS, (64, 64))
    case = "postprocess_detections of README's 2 proposals, K = 3"
    expect_close(got["scores"], [0.7, 0.1], case + ": scores (0.6 of class 1 is suppressed by NMS, the class-2 "
                                                   "0.04 is under the 0.05 threshold)")
    expect_equal(got["labels"], [1, 2], case + ": labels")
    expect_close(got["boxes"], [[10, 10, 50, 50], [14, 10, 54, 50]],
                 case + ": boxes (class 2's box of proposal 0 is moved 4 px to the right by its own deltas)")


def test_task3_thresholds_and_caps(impl):
    base = dict(class_logits=EXAMPLE_LOGITS, box_deltas=EXAMPLE_DELTAS, proposals=EXAMPLE_PROPOSALS,
                image_size=(64, 64))
    got = impl.postprocess_detections(**base, score_threshold=0.15)
    expect_close(got["scores"], [0.7], "the worked example with score_threshold 0.15: class 2's 0.1 is dropped too")
    got = impl.postprocess_detections(**base, nms_threshold=0.8)
    expect_close(got["scores"], [0.7, 0.6, 0.1], "the worked example with nms_threshold 0.8: the class-1 boxes "
                                                 "overlap with IoU 0.747, so both stay")
    got = impl.postprocess_detections(**base, detections_per_image=1)
    expect_close(got["scores"], [0.7], "the worked example with detections_per_image 1: the best only")


def test_task3_clipping_and_empty_boxes(impl):
    logits = np.log(np.array([[1.0, 3.0], [1.0, 3.0]]))                  # K = 2, class 1 at 0.75
    proposals = np.array([[50.0, 10.0, 80.0, 30.0], [70.0, 10.0, 90.0, 30.0]])
    got = impl.postprocess_detections(logits, np.zeros((2, 8)), proposals, (40, 64))
    case = "postprocess_detections of 2 proposals sticking out of a 40 x 64 image (H x W)"
    expect_close(got["boxes"], [[50, 10, 64, 30]], case + ": the first is clipped at x = 64, the second, "
                                                          "entirely outside, is clipped to width 0 and dropped")
    got = impl.postprocess_detections(np.zeros((0, 3)), np.zeros((0, 12)), np.zeros((0, 4)), (64, 64))
    shapes = [np.asarray(got[k]).shape for k in ("boxes", "scores", "labels")]
    expect_true(shapes == [(0, 4), (0,), (0,)], "postprocess_detections of no proposals: empty boxes (0 x 4), "
                "scores (0,) and labels (0,)", f"got the shapes {shapes}")


@pytest.mark.parametrize("seed, limit", [(0, 100), (1, 5)])
def test_task3_random(impl, seed, limit):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 80, size=(12, 2))
    proposals = np.concatenate([corner, corner + rng.uniform(10, 40, size=(12, 2))], axis=1)
    logits, deltas = rng.normal(0, 2, size=(12, 4)), rng.normal(0, 0.5, size=(12, 16))
    got = impl.postprocess_detections(logits, deltas, proposals, (96, 100), 0.05, 0.5, limit)
    want = postprocess.postprocess_detections(logits, deltas, proposals, (96, 100), 0.05, 0.5, limit)
    case = f"postprocess_detections of 12 random proposals, K = 4, detections_per_image {limit}"
    expect_close(got["scores"], want["scores"], case + ": scores")
    expect_equal(got["labels"], want["labels"], case + ": labels")
    expect_close(got["boxes"], want["boxes"], case + ": boxes")


# ------------------------------------------------------------------------------------ task 4: detection_masks

def test_task4_a_box_that_fits_the_mask_grid(impl):
    # a 4 x 4 box on a 4 x 4 mask: every image pixel inside reads exactly one mask pixel
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, size=(2, 3, 4, 4))
    boxes = np.array([[0.0, 0.0, 4.0, 4.0], [2.0, 1.0, 6.0, 5.0]])
    got = np.asarray(impl.detection_masks(logits, np.array([2, 1]), boxes, (6, 8)))
    expect_equal([got.dtype == bool, got.shape == (2, 6, 8)], [True, True], "detection_masks: D x H x W bool")
    expect_equal(got[0, :4, :4], logits[0, 2] >= 0, "detection_masks, detection 0 of class 2 in the box "
                 "(0, 0, 4, 4): inside, sigmoid(logit of class 2) >= 0.5, that is logit >= 0")
    expect_equal(got[1, 1:5, 2:6], logits[1, 1] >= 0, "detection_masks, detection 1 of class 1 in the box "
                 "(2, 1, 6, 5): inside, its class-1 logits >= 0")
    expect_equal(got[0, :, 6:], np.zeros((6, 2), bool), "detection_masks, detection 0: pixels more than a mask "
                 "pixel to the right of its box are off")


def test_task4_only_the_detections_class_counts(impl):
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2, size=(3, 4, 5, 5))
    labels, boxes = np.array([3, 1, 2]), np.array([[1.0, 2, 9, 8], [0, 0, 12, 10], [4.5, 3.2, 8.7, 9.9]])
    other = rng.normal(0, 5, size=logits.shape)
    other[np.arange(3), labels] = logits[np.arange(3), labels]
    expect_equal(impl.detection_masks(other, labels, boxes, (10, 12)),
                 impl.detection_masks(logits, labels, boxes, (10, 12)),
                 "detection_masks after changing every class channel but each detection's own: the same masks")


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_task4_random(impl, threshold):
    rng = np.random.default_rng(6)
    corner = rng.uniform(-3, 15, size=(4, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(3, 12, size=(4, 2))], axis=1)
    logits, labels = rng.normal(0, 3, size=(4, 3, 6, 6)), rng.integers(1, 3, size=4)
    expect_equal(impl.detection_masks(logits, labels, boxes, (20, 24), threshold),
                 postprocess.detection_masks(logits, labels, boxes, (20, 24), threshold),
                 f"detection_masks of 4 random detections (m = 6) in a 20 x 24 image, threshold {threshold}")


def test_task4_no_detections(impl):
    got = np.asarray(impl.detection_masks(np.zeros((0, 3, 4, 4)), np.zeros(0, np.int64), np.zeros((0, 4)), (6, 8)))
    expect_equal([got.shape == (0, 6, 8), got.dtype == bool], [True, True],
                 "detection_masks of no detections: a 0 x 6 x 8 bool array")
