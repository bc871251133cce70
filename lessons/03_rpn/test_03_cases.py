"""Lesson 03, graded: the conventions of the README, one small case each (IoU exactly at a threshold, one
ground truth or one anchor, empty inputs, a mini-batch of one, a score exactly at the cut).

The cases ``test_03_rpn.py`` leaves out: each states a rule of the lesson's README and fails on a solution that
breaks it (``tools/mutate_lessons.py`` plants such mistakes in the library and checks that some test catches
each). ``impl`` is the module under test, as in ``test_03_rpn.py``.
"""
import math

import numpy as np
from _grading import expect_close, expect_equal

TASKS = {1: "match_by_iou", 2: "label_anchors", 3: "sample_balanced", 4: "rpn_targets", 5: "rpn_loss",
         6: "generate_proposals"}


# ----------------------------------------------------------------------------------- task 1: match_by_iou

def test_task1_iou_exactly_at_the_thresholds(impl):
    # one ground truth; 0.7 is an object (IoU >= high), 0.3 is ignored ([low, high)), just below 0.3 is not
    iou = np.array([[0.9, 0.7, 0.3, 0.2999]])
    expect_equal(impl.match_by_iou(iou, allow_low_quality=False), [0, 0, -2, -1],
                 "match_by_iou of one ground truth with IoUs 0.9, 0.7, 0.3, 0.2999 (high 0.7, low 0.3): "
                 ">= 0.7 matches, exactly 0.3 is ignored (-2), below 0.3 is not an object (-1)",
                 inputs=dict(iou=iou, allow_low_quality=False))
    expect_equal(impl.match_by_iou(iou), [0, 0, -2, -1],
                 "the same with the low-quality rule: 0.9 is already the ground truth's best, nothing changes",
                 inputs=dict(iou=iou))


def test_task1_one_anchor(impl):
    iou = np.array([[0.5], [0.4]])
    expect_equal(impl.match_by_iou(iou), [0],
                 "match_by_iou of 2 ground truths and a single anchor with IoUs 0.5, 0.4: it is ground truth 0's "
                 "best anchor (and ground truth 1's), so it matches its own best, ground truth 0",
                 inputs=dict(iou=iou))


def test_task1_no_ground_truth_or_no_anchors(impl):
    none = np.zeros((0, 5))
    expect_equal(impl.match_by_iou(none), [-1] * 5, "match_by_iou of a 0 x 5 matrix (no ground truth): all -1",
                 inputs=dict(iou=none))
    empty = np.zeros((2, 0))
    expect_equal(np.shape(impl.match_by_iou(empty)), (0,), "match_by_iou of a 2 x 0 matrix (no anchors): 0 matches",
                 inputs=dict(iou=empty))


# -------------------------------------------------------------------------------- task 3: sample_balanced

def test_task3_a_batch_with_one_positive(impl):
    labels = np.array([0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0])
    pos, neg = (np.asarray(m) for m in impl.sample_balanced(labels, np.random.default_rng(0), 4, 0.5))
    expect_equal([int(pos.sum()), bool(pos[2]), int(neg.sum())], [1, True, 3],
                 "sample_balanced of 1 positive, 5 negatives, 1 ignored, batch 4, fraction 0.5: (positives drawn, "
                 "the positive is drawn, negatives drawn): min(2, 1) = 1 positive, 4 - 1 = 3 negatives",
                 inputs=dict(labels=labels, batch_size=4, positive_fraction=0.5))


# --------------------------------------------------------------------------------------- task 5: rpn_loss

def test_task5_nothing_sampled(impl):
    objectness = np.array([1.0, -2.0], dtype=np.float32)
    deltas = np.ones((2, 4), dtype=np.float32)
    labels = np.array([-1.0, -1.0], dtype=np.float32)
    got = impl.rpn_loss(objectness, deltas, labels, np.zeros((2, 4), dtype=np.float32))
    inputs = dict(objectness=objectness, deltas=deltas, labels=labels, regression_targets=np.zeros((2, 4)))
    expect_close([got[0], got[1]], [0.0, 0.0], "rpn_loss with no anchor in the mini-batch (S = 0): both losses 0, "
                                               "not NaN", inputs=inputs)
    expect_close(got[2], np.zeros(2), "rpn_loss with S = 0: dobjectness zero", inputs=inputs)
    expect_close(got[3], np.zeros((2, 4)), "rpn_loss with S = 0: ddeltas zero", inputs=inputs)
    expect_equal([str(np.asarray(g).dtype) for g in got], ["float32"] * 4,
                 "rpn_loss of float32 inputs, S = 0: (loss_objectness, loss_box, dobjectness, ddeltas) stay float32",
                 inputs=inputs)


def test_task5_one_sampled_anchor(impl):
    objectness = np.array([0.0, 3.0])
    deltas = np.array([[0.05, 0.0, 0.0, 1.0], [5.0, 5.0, 5.0, 5.0]])
    labels = np.array([1.0, -1.0])
    targets = np.zeros((2, 4))
    loss_obj, loss_box, dobj, ddeltas = impl.rpn_loss(objectness, deltas, labels, targets)
    inputs = dict(objectness=objectness, deltas=deltas, labels=labels, regression_targets=targets)
    case = "rpn_loss of one object anchor (logit 0) and one left out (S = 1)"
    expect_close([loss_obj, loss_box], [math.log(2), 0.5 * 0.05 ** 2 * 9 + 1 - 0.5 / 9],
                 case + ": (loss_objectness = log 2, loss_box = smooth-L1 of (0.05, 0, 0, 1) with beta 1/9)",
                 inputs=inputs)
    expect_close(dobj, [-0.5, 0.0], case + ": dobjectness", inputs=inputs)
    expect_close(ddeltas, [[0.45, 0, 0, 1], [0, 0, 0, 0]], case + ": ddeltas", inputs=inputs)


# ----------------------------------------------------------------------------- task 6: generate_proposals

def test_task6_a_score_exactly_at_the_threshold_stays(impl):
    anchors = np.array([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    objectness, deltas = np.array([0.0, -1.0]), np.zeros((2, 4))
    boxes, scores = impl.generate_proposals(anchors, objectness, deltas, (40, 40), score_thresh=0.5)
    inputs = dict(anchors=anchors, objectness=objectness, deltas=deltas, image_size=(40, 40), score_thresh=0.5)
    expect_close(boxes, [[0, 0, 10, 10]], "generate_proposals with score_thresh=0.5: the box scored sigmoid(0) = 0.5 "
                                          "stays (a score >= the threshold is kept), sigmoid(-1) = 0.27 goes",
                 inputs=inputs)
    expect_close(scores, [0.5], "generate_proposals with score_thresh=0.5: scores", inputs=inputs)
