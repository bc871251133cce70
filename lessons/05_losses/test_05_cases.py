"""Lesson 05, graded: the conventions of the README, one small case each (a mean over nothing is 0, not NaN;
float32 stays float32; a mask target of exactly 0.5 is inside the object).

The cases ``test_05_losses.py`` leaves out: each states a rule of the lesson's README and fails on a solution
that breaks it (``tools/mutate_lessons.py`` plants such mistakes in the library and checks that some test
catches each). ``impl`` is the module under test, as in ``test_05_losses.py``.
"""
import math

import numpy as np
from _grading import expect_close, expect_equal

TASKS = {1: "smooth_l1_loss", 2: "binary_cross_entropy_with_logits", 3: "softmax_cross_entropy",
         4: "sigmoid_mask_loss", 5: "softmax_mask_loss"}


# -------------------------------------------------------------------------------- task 1: smooth_l1_loss

def test_task1_a_mean_over_nothing_is_zero(impl):
    none = np.zeros((0, 4))
    loss, grad = impl.smooth_l1_loss(none, none)
    expect_close(loss, 0.0, "smooth_l1_loss of 0 x 4 deltas, reduction 'mean': 0 (not NaN, as PyTorch's 0 / 0)",
                 inputs=dict(pred=none, target=none))
    expect_equal(np.shape(grad), (0, 4), "the same: the gradient has pred's shape, 0 x 4",
                 inputs=dict(pred=none, target=none))


def test_task1_float32_stays_float32(impl):
    pred = np.array([0.5, 2.0, -0.05], dtype=np.float32)
    target = np.zeros(3, dtype=np.float32)
    for reduction in ("mean", "sum", "none"):
        loss, grad = impl.smooth_l1_loss(pred, target, 1.0, reduction)
        expect_equal([str(np.asarray(loss).dtype), str(np.asarray(grad).dtype)], ["float32", "float32"],
                     f"smooth_l1_loss of float32 inputs, reduction {reduction!r}: (loss, grad) dtypes",
                     inputs=dict(pred=pred, target=target, beta=1.0, reduction=reduction))


# --------------------------------------------------------------- task 2: binary_cross_entropy_with_logits

def test_task2_a_mean_over_nothing_and_float32(impl):
    none = np.zeros(0)
    loss, grad = impl.binary_cross_entropy_with_logits(none, none)
    expect_close(loss, 0.0, "binary_cross_entropy_with_logits of 0 logits, reduction 'mean': 0, not NaN",
                 inputs=dict(logits=none, targets=none))
    logits = np.array([0.0, -3.0, 40.0], dtype=np.float32)
    targets = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    loss, grad = impl.binary_cross_entropy_with_logits(logits, targets)
    expect_equal([str(np.asarray(loss).dtype), str(np.asarray(grad).dtype)], ["float32", "float32"],
                 "binary_cross_entropy_with_logits of float32 inputs: (loss, grad) dtypes",
                 inputs=dict(logits=logits, targets=targets))


# ------------------------------------------------------------------------- task 3: softmax_cross_entropy

def test_task3_no_rows(impl):
    logits = np.zeros((0, 3))
    loss, grad = impl.softmax_cross_entropy(logits, np.zeros(0, dtype=np.int64))
    expect_close(loss, 0.0, "softmax_cross_entropy of 0 x 3 logits: 0, not NaN",
                 inputs=dict(logits=logits, labels=np.zeros(0, dtype=np.int64)))
    expect_equal(np.shape(grad), (0, 3), "the same: a 0 x 3 gradient",
                 inputs=dict(logits=logits, labels=np.zeros(0, dtype=np.int64)))


# ----------------------------------------------------------------------------- task 4: sigmoid_mask_loss

def test_task4_no_rois(impl):
    logits = np.zeros((0, 3, 2, 2))
    loss, grad = impl.sigmoid_mask_loss(logits, np.zeros(0, dtype=np.int64), np.zeros((0, 2, 2)))
    expect_close(loss, 0.0, "sigmoid_mask_loss of 0 RoIs (R = 0, K = 3, 2 x 2 masks): loss 0, not NaN")
    expect_equal(np.shape(grad), (0, 3, 2, 2), "the same: a 0 x 3 x 2 x 2 gradient")


# ----------------------------------------------------------------------------- task 5: softmax_mask_loss

def test_task5_a_target_of_exactly_one_half_is_inside(impl):
    # the pixel's class is the RoI's where mask_targets >= 0.5, the background (0) elsewhere
    logits = np.zeros((1, 3, 1, 2))
    logits[0, 2, 0, 0] = math.log(2)           # class 2 scores 2 / (1 + 1 + 2) = 0.5 on pixel 0
    labels, targets = np.array([2]), np.array([[[0.5, 0.4999]]])
    loss, _ = impl.softmax_mask_loss(logits, labels, targets)
    expect_close(loss, (math.log(2) + math.log(3)) / 2,
                 "softmax_mask_loss of one RoI of class 2, K = 3, a 1 x 2 mask with targets 0.5 and 0.4999, logits "
                 "(0, 0, ln 2) and (0, 0, 0): pixel 0 (target 0.5) is of class 2, -log(2/4); pixel 1 (0.4999) is "
                 "background, -log(1/3); the mean",
                 inputs=dict(mask_logits=logits, labels=labels, mask_targets=targets))


def test_task5_no_rois(impl):
    logits = np.zeros((0, 3, 2, 2))
    loss, grad = impl.softmax_mask_loss(logits, np.zeros(0, dtype=np.int64), np.zeros((0, 2, 2)))
    expect_close(loss, 0.0, "softmax_mask_loss of 0 RoIs: loss 0, not NaN")
    expect_equal(np.shape(grad), (0, 3, 2, 2), "the same: a 0 x 3 x 2 x 2 gradient")
