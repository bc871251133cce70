"""Lesson 03, graded: the RPN's anchor labels, balanced mini-batch, targets, loss and proposals (stage 3).

``impl`` is the module under test (``--impl reference|exercise|stub``, see ``lessons/conftest.py``); the
library, ``mrcnn_edu.rpn``, gives the expected values, and each test feeds a task only the library's
outputs of the other tasks, so one unfinished task does not fail another. Each test belongs to the task
in its name.
"""
import math

import numpy as np
import pytest
from _grading import expect_close, expect_equal, expect_gradient, expect_true

from mrcnn_edu import rpn as lib
from mrcnn_edu.anchors import generate_anchors

TASKS = {1: "match_by_iou", 2: "label_anchors", 3: "sample_balanced", 4: "rpn_targets", 5: "rpn_loss",
         6: "generate_proposals"}


def small_image_anchors():
    """480 anchors of a 128 x 160 image: stride 16, sizes 32 and 64, ratios 0.5, 1, 2."""
    return generate_anchors((128, 160), 16, (32, 64), (0.5, 1.0, 2.0)).astype(np.float64)


GT_BOXES = np.array([[20.0, 30.0, 70.0, 90.0], [90.0, 20.0, 150.0, 60.0]])


# ----------------------------------------------------------------------------------- task 1: match_by_iou

# G = 2 ground truths (rows) x A = 7 anchors (columns)
IOU = np.array([[0.75, 0.70, 0.50, 0.10, 0.29, 0.00, 0.05],
                [0.10, 0.20, 0.40, 0.65, 0.05, 0.00, 0.65]])


def test_task1_match_by_hand(impl):
    expect_equal(impl.match_by_iou(IOU), [0, 0, -2, 1, -1, -1, 1],
                 "match_by_iou(iou) of the 2 x 7 matrix in the test, high 0.7, low 0.3: IoU >= 0.7 matches, "
                 "[0.3, 0.7) is -2, < 0.3 is -1, and ground truth 1's best anchors (3 and 6, a tie) match it")


def test_task1_match_without_low_quality(impl):
    expect_equal(impl.match_by_iou(IOU, allow_low_quality=False), [0, 0, -2, -2, -1, -1, -2],
                 "match_by_iou(iou, allow_low_quality=False): no rescue of a ground truth's best anchors")


def test_task1_match_random(impl):
    rng = np.random.default_rng(0)
    iou = rng.uniform(0, 0.9, size=(4, 40))
    expect_equal(impl.match_by_iou(iou, 0.6, 0.4), lib.match_by_iou(iou, 0.6, 0.4),
                 "match_by_iou of a random 4 x 40 IoU matrix, high 0.6, low 0.4")


# ---------------------------------------------------------------------------------- task 2: label_anchors

def test_task2_labels_by_hand(impl):
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    anchors = np.array([[0.0, 0, 10, 10], [0, 0, 10, 14], [0, 0, 10, 20], [0, 0, 20, 20], [30, 30, 40, 40]])
    labels, matches = impl.label_anchors(anchors, gt)
    expect_close(labels, [1, 1, -1, 0, 0], "label_anchors labels of anchors with IoU 1, 0.714, 0.5, 0.25, 0 "
                                           "to the one ground truth (0,0,10,10)")
    expect_equal(matches, [0, 0, -2, -1, -1], "label_anchors matches of the same anchors")


def test_task2_labels_random(impl):
    anchors = small_image_anchors()
    labels, matches = impl.label_anchors(anchors, GT_BOXES)
    want_labels, want_matches = lib.label_anchors(anchors, GT_BOXES)
    expect_close(labels, want_labels, "label_anchors labels of the 480 anchors of a 128 x 160 image, 2 ground truths")
    expect_equal(matches, want_matches, "label_anchors matches of the same anchors")


def test_task2_image_without_objects(impl):
    labels, matches = impl.label_anchors(small_image_anchors()[:5], np.zeros((0, 4)))
    expect_close(labels, np.zeros(5), "label_anchors labels of 5 anchors in an image without ground truth")
    expect_equal(matches, np.full(5, -1), "label_anchors matches of 5 anchors in an image without ground truth")


# -------------------------------------------------------------------------------- task 3: sample_balanced

def _labels(num_pos, num_neg, num_ignored, seed, positive_value=1.0):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.concatenate([np.full(num_pos, positive_value), np.zeros(num_neg),
                                           np.full(num_ignored, -1.0)]))


@pytest.mark.parametrize("num_pos, num_neg, batch, fraction, positive_value", [
    (300, 1000, 256, 0.5, 1.0),     # plenty of both: 128 + 128
    (10, 1000, 256, 0.5, 1.0),      # few objects: 10 + 246, the rest filled with not-objects
    (300, 50, 256, 0.5, 1.0),       # few negatives: 128 + 50
    (100, 900, 512, 0.25, 3.0),     # the box head's 512 RoIs, a quarter positive; classes >= 1 are positives
])
def test_task3_counts_and_membership(impl, num_pos, num_neg, batch, fraction, positive_value):
    labels = _labels(num_pos, num_neg, 40, 1, positive_value)
    case = (f"sample_balanced of {num_pos} positives, {num_neg} negatives, 40 ignored, batch {batch}, "
            f"fraction {fraction}")
    pos, neg = (np.asarray(m) for m in impl.sample_balanced(labels, np.random.default_rng(2), batch, fraction))
    want_pos = min(int(batch * fraction), num_pos)
    want_neg = min(batch - want_pos, num_neg)
    expect_equal([pos.dtype == bool, neg.dtype == bool], [True, True], case + ": both masks bool")
    expect_equal([int(pos.sum()), int(neg.sum())], [want_pos, want_neg], case + ": (positives, negatives) drawn")
    expect_true(bool(np.all(labels[pos] >= 1)), case + ": every drawn positive has label >= 1")
    expect_true(bool(np.all(labels[neg] == 0)), case + ": every drawn negative has label 0")


def test_task3_draw_is_random(impl):
    labels = np.concatenate([np.ones(300), np.zeros(1000)])
    pos, neg = (np.asarray(m) for m in impl.sample_balanced(labels, np.random.default_rng(3)))
    first = np.zeros(1300, dtype=bool)
    first[:128] = True
    expect_true(pos.sum() == 128 and not np.array_equal(pos, first),
                "sample_balanced draws its 128 positives at random, not the first 128",
                f"drew {int(pos.sum())} positives, the first 128: {bool(np.array_equal(pos, first))}")


# ------------------------------------------------------------------------------------ task 4: rpn_targets

def test_task4_regression_targets(impl):
    anchors = small_image_anchors()
    _, targets = impl.rpn_targets(anchors, GT_BOXES, np.random.default_rng(4))
    _, want = lib.rpn_targets(anchors, GT_BOXES, np.random.default_rng(4))
    expect_close(targets, want, "rpn_targets regression targets of 480 anchors, 2 ground truths "
                                "(box_encode of every anchor against its matched ground truth, or ground truth 0)")


def test_task4_sampled_labels(impl):
    anchors = small_image_anchors()
    before, _ = lib.label_anchors(anchors, GT_BOXES)
    labels, _ = impl.rpn_targets(anchors, GT_BOXES, np.random.default_rng(5), batch_size_per_image=64)
    labels = np.asarray(labels)
    num_pos, num_neg = int((before == 1).sum()), int((before == 0).sum())
    want_pos = min(32, num_pos)
    case = "rpn_targets labels after sampling, batch_size_per_image=64"
    expect_equal([int((labels == 1).sum()), int((labels == 0).sum()), int((labels == -1).sum())],
                 [want_pos, min(64 - want_pos, num_neg), 480 - want_pos - min(64 - want_pos, num_neg)],
                 case + ": counts of (1 sampled object, 0 sampled not-object, -1 left out)")
    expect_true(bool(np.all(before[labels == 1] == 1) and np.all(before[labels == 0] == 0)),
                case + ": sampled objects were objects and sampled not-objects were not-objects before sampling")


def test_task4_image_without_objects(impl):
    anchors = small_image_anchors()[:100]
    labels, targets = impl.rpn_targets(anchors, np.zeros((0, 4)), np.random.default_rng(6), batch_size_per_image=32)
    expect_equal([int((np.asarray(labels) == 0).sum()), int((np.asarray(labels) == 1).sum())], [32, 0],
                 "rpn_targets of 100 anchors, no ground truth, batch 32: (not-objects, objects) sampled")
    expect_close(targets, np.zeros((100, 4)), "rpn_targets regression targets without ground truth: zeros")


# --------------------------------------------------------------------------------------- task 5: rpn_loss

def test_task5_loss_by_hand(impl):
    objectness = np.array([0.0, 0.0, 5.0])
    labels = np.array([1.0, 0.0, -1.0])                 # an object, a not-object, one left out of the batch
    deltas = np.array([[0.0, 0, 0, 0], [1, 1, 1, 1], [9, 9, 9, 9]])
    targets = np.array([[0.1, 0, 0, 0.5], [0, 0, 0, 0], [0, 0, 0, 0]])
    loss_obj, loss_box, dobj, ddeltas = impl.rpn_loss(objectness, deltas, labels, targets)
    case = "rpn_loss of the test's 3 anchors (S = 2 sampled)"
    expect_close([loss_obj, loss_box], [math.log(2), (0.5 * 0.01 * 9 + 0.5 - 0.5 / 9) / 2],
                 case + ": (loss_objectness = mean BCE = log 2, loss_box = smooth-L1 beta 1/9 of the object / S)")
    expect_close(dobj, [-0.25, 0.25, 0.0], case + ": dobjectness = (sigmoid - label) / S, 0 outside the batch")
    expect_close(ddeltas, [[-0.45, 0, 0, -0.5], [0, 0, 0, 0], [0, 0, 0, 0]],
                 case + ": ddeltas, only the object's row")


def _random_loss_inputs(seed, shape=(2, 30)):
    rng = np.random.default_rng(seed)
    objectness = rng.normal(0, 2, size=shape)
    deltas = rng.normal(0, 0.4, size=shape + (4,))
    targets = rng.normal(0, 0.4, size=shape + (4,))
    labels = rng.choice([-1.0, 0.0, 1.0], size=shape, p=[0.4, 0.4, 0.2])
    return objectness, deltas, labels, targets


def test_task5_loss_random(impl):
    objectness, deltas, labels, targets = _random_loss_inputs(7)
    got = impl.rpn_loss(objectness, deltas, labels, targets)
    want = lib.rpn_loss(objectness, deltas, labels, targets)
    names = ["loss_objectness", "loss_box", "dobjectness", "ddeltas"]
    for name, g, w in zip(names, got, want):
        expect_close(g, w, f"rpn_loss {name} of a batch of N = 2 images x A = 30 anchors")


def test_task5_gradients_match_finite_differences(impl):
    objectness, deltas, labels, targets = _random_loss_inputs(8, shape=(12,))
    _, _, dobj, ddeltas = impl.rpn_loss(objectness, deltas, labels, targets)
    expect_gradient(dobj, lambda x: impl.rpn_loss(x, deltas, labels, targets)[0], objectness,
                    "rpn_loss: dobjectness against finite differences of loss_objectness")
    expect_gradient(ddeltas, lambda x: impl.rpn_loss(objectness, x, labels, targets)[1], deltas,
                    "rpn_loss: ddeltas against finite differences of loss_box")


# ----------------------------------------------------------------------------- task 6: generate_proposals

def test_task6_proposals_by_hand(impl):
    anchors = np.array([[0.0, 0, 20, 20], [2, 0, 22, 20], [40, 40, 60, 60]])
    boxes, scores = impl.generate_proposals(anchors, np.array([1.0, 2.0, 0.0]), np.zeros((3, 4)), (50, 50))
    case = "generate_proposals of 3 anchors with zero deltas in a 50 x 50 image"
    expect_close(boxes, [[2, 0, 22, 20], [40, 40, 50, 50]],
                 case + ": anchor 0 falls to anchor 1 in NMS (IoU 0.82), anchor 2 is clipped")
    expect_close(scores, [1 / (1 + math.exp(-2)), 0.5], case + ": scores are sigmoid(objectness)")


def test_task6_proposals_random(impl):
    rng = np.random.default_rng(9)
    anchors = generate_anchors((64, 80), 16, (16, 32), (0.5, 1.0, 2.0)).astype(np.float64)
    objectness = rng.normal(0, 2, size=len(anchors))
    deltas = rng.normal(0, 0.3, size=(len(anchors), 4))
    kwargs = dict(pre_nms_top_n=50, post_nms_top_n=20, nms_thresh=0.6)
    boxes, scores = impl.generate_proposals(anchors, objectness, deltas, (64, 80), **kwargs)
    want_boxes, want_scores = lib.generate_proposals(anchors, objectness, deltas, (64, 80), **kwargs)
    case = "generate_proposals of 120 random anchors, pre_nms_top_n=50, post_nms_top_n=20, nms_thresh=0.6"
    expect_close(boxes, want_boxes, case + ": boxes")
    expect_close(scores, want_scores, case + ": scores")


def test_task6_small_boxes_and_low_scores_go(impl):
    anchors = np.array([[0.0, 0, 20, 20], [30, 30, 30.5, 40], [0, 30, 20, 50]])
    boxes, scores = impl.generate_proposals(anchors, np.array([0.0, 3.0, -3.0]), np.zeros((3, 4)), (60, 60),
                                            min_size=1.0, score_thresh=0.1)
    case = "generate_proposals with min_size=1 and score_thresh=0.1"
    expect_close(boxes, [[0, 0, 20, 20]],
                 case + ": the 0.5-wide box and the box scored sigmoid(-3) = 0.047 are dropped")
    expect_close(scores, [0.5], case + ": scores")
