"""Lesson 05, graded: smooth-L1, binary and softmax cross-entropy, the sigmoid and softmax mask losses (stage 5).

``impl`` is the module under test (``--impl reference|exercise|stub``, see ``lessons/conftest.py``); the
library, ``mrcnn_edu.losses``, gives the expected values on random inputs, and every gradient is also
checked against finite differences of the loss it belongs to. Each test belongs to the task in its name.
"""
import math

import numpy as np
import pytest
from _grading import expect_close, expect_gradient

from mrcnn_edu import losses as lib

TASKS = {1: "smooth_l1_loss", 2: "binary_cross_entropy_with_logits", 3: "softmax_cross_entropy",
         4: "sigmoid_mask_loss", 5: "softmax_mask_loss"}

RNG_SEED = 2017   # the year of the Mask R-CNN paper


def errors_away_from_the_kink(rng, shape):
    """Differences pred - target with |x| in [0.1, 0.8] or [1.2, 3]: finite differences stay off |x| = 1."""
    magnitude = np.where(rng.uniform(size=shape) < 0.5, rng.uniform(0.1, 0.8, shape), rng.uniform(1.2, 3.0, shape))
    return magnitude * rng.choice([-1.0, 1.0], size=shape)


# -------------------------------------------------------------------------------- task 1: smooth_l1_loss

def test_task1_the_lectures_values(impl):
    pred, target = np.array([0.5, 2.0, -2.0, 0.0]), np.zeros(4)
    loss, grad = impl.smooth_l1_loss(pred, target, reduction="none")
    expect_close(loss, [0.125, 1.5, 1.5, 0.0],
                 "smooth_l1_loss of x = 0.5, 2, -2, 0 (beta 1, reduction 'none'): "
                 "0.5 x^2 inside |x| < 1, |x| - 0.5 outside")
    expect_close(grad, [0.5, 1.0, -1.0, 0.0], "its gradient: x inside, sign(x) outside")


def test_task1_beta(impl):
    pred, target = np.array([0.5, 0.05, -0.2]), np.zeros(3)
    loss, grad = impl.smooth_l1_loss(pred, target, beta=1 / 9, reduction="none")
    inputs = dict(pred=pred, target=target, beta=1 / 9, reduction="none")
    expect_close(loss, [0.5 - 0.5 / 9, 0.5 * 0.05 ** 2 * 9, 0.2 - 0.5 / 9],
                 "smooth_l1_loss of x = 0.5, 0.05, -0.2 with beta = 1/9 (the RPN's): 0.5 x^2 / beta or |x| - beta / 2",
                 inputs=inputs)
    expect_close(grad, [1.0, 0.45, -1.0], "its gradient: x / beta inside, sign(x) outside", inputs=inputs)
    loss, grad = impl.smooth_l1_loss(pred, target, beta=0.0, reduction="none")
    expect_close([loss, grad], [np.abs(pred), np.sign(pred)], "smooth_l1_loss with beta = 0 is L1: (|x|, sign(x))")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_task1_random(impl, reduction):
    rng = np.random.default_rng(RNG_SEED)
    pred, target = rng.normal(0, 1.5, size=(6, 4)), rng.normal(0, 1.5, size=(6, 4))
    got, want = impl.smooth_l1_loss(pred, target, 0.5, reduction), lib.smooth_l1_loss(pred, target, 0.5, reduction)
    inputs = dict(pred=pred, target=target, beta=0.5, reduction=reduction)
    expect_close(got[0], want[0], f"smooth_l1_loss of 6 x 4 random deltas, beta 0.5, reduction {reduction!r}: loss",
                 inputs=inputs)
    expect_close(got[1], want[1], "the same: gradient (divided by the 24 elements for 'mean')", inputs=inputs)


def test_task1_gradient_check(impl):
    rng = np.random.default_rng(RNG_SEED + 1)
    target = rng.normal(size=(3, 4))
    pred = target + errors_away_from_the_kink(rng, (3, 4))
    _, grad = impl.smooth_l1_loss(pred, target)
    expect_gradient(grad, lambda p: impl.smooth_l1_loss(p, target)[0], pred,
                    "smooth_l1_loss gradient against finite differences of its mean loss")


# ----------------------------------------------------------------- task 2: binary_cross_entropy_with_logits

def test_task2_by_hand(impl):
    loss, grad = impl.binary_cross_entropy_with_logits(np.array([0.0, 0.0, 2.0]), np.array([1.0, 0.0, 1.0]),
                                                       reduction="none")
    expect_close(loss, [math.log(2), math.log(2), math.log(1 + math.exp(-2))],
                 "binary_cross_entropy_with_logits of x = 0, 0, 2 with t = 1, 0, 1 (reduction 'none')")
    expect_close(grad, [-0.5, 0.5, 1 / (1 + math.exp(-2)) - 1], "its gradient, sigmoid(x) - t")


def test_task2_large_logits_do_not_overflow(impl):
    with np.errstate(all="ignore"):
        loss, grad = impl.binary_cross_entropy_with_logits(np.array([1000.0, -1000.0, 1000.0]),
                                                           np.array([0.0, 1.0, 1.0]), reduction="none")
    expect_close(loss, [1000.0, 1000.0, 0.0], "binary_cross_entropy_with_logits of x = 1000, -1000, 1000 with "
                                              "t = 0, 1, 1: finite (no exp(1000), no log(0))")
    expect_close(grad, [1.0, -1.0, 0.0], "its gradient at the same logits")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_task2_random(impl, reduction):
    rng = np.random.default_rng(RNG_SEED + 2)
    logits, targets = rng.normal(0, 3, size=(5, 3)), rng.uniform(0, 1, size=(5, 3))
    got = impl.binary_cross_entropy_with_logits(logits, targets, reduction)
    want = lib.binary_cross_entropy_with_logits(logits, targets, reduction)
    expect_close(got[0], want[0], f"binary_cross_entropy_with_logits of 5 x 3 random logits and soft targets, "
                                  f"reduction {reduction!r}: loss")
    expect_close(got[1], want[1], "the same: gradient")


def test_task2_gradient_check(impl):
    rng = np.random.default_rng(RNG_SEED + 3)
    logits, targets = rng.normal(0, 2, size=8), rng.integers(0, 2, size=8).astype(float)
    _, grad = impl.binary_cross_entropy_with_logits(logits, targets)
    expect_gradient(grad, lambda x: impl.binary_cross_entropy_with_logits(x, targets)[0], logits,
                    "binary_cross_entropy_with_logits gradient against finite differences of its mean loss")


# ------------------------------------------------------------------------- task 3: softmax_cross_entropy

def test_task3_by_hand(impl):
    loss, grad = impl.softmax_cross_entropy(np.zeros((1, 3)), np.array([0]))
    expect_close(loss, math.log(3), "softmax_cross_entropy of logits (0, 0, 0), label 0: -log(1/3)")
    expect_close(grad, [[1 / 3 - 1, 1 / 3, 1 / 3]], "its gradient, softmax - onehot")


def test_task3_large_logits_do_not_overflow(impl):
    with np.errstate(all="ignore"):
        loss, grad = impl.softmax_cross_entropy(np.array([[1000.0, 0.0, -1000.0], [1000.0, 0.0, -1000.0]]),
                                                np.array([0, 1]))
    expect_close(loss, 500.0, "softmax_cross_entropy of logits (1000, 0, -1000) twice, labels 0 and 1: "
                              "mean of 0 and 1000 (subtract the max before exp)")
    expect_close(grad, [[0.0, 0.0, 0.0], [0.5, -0.5, 0.0]], "its gradient, divided by N = 2")


def test_task3_random(impl):
    rng = np.random.default_rng(RNG_SEED + 4)
    logits, labels = rng.normal(0, 2, size=(6, 4)), rng.integers(0, 4, size=6)
    got, want = impl.softmax_cross_entropy(logits, labels), lib.softmax_cross_entropy(logits, labels)
    inputs = dict(logits=logits, labels=labels)
    expect_close(got[0], want[0], "softmax_cross_entropy of 6 random rows of 4 logits: loss", inputs=inputs)
    expect_close(got[1], want[1], "the same: gradient", inputs=inputs)


def test_task3_gradient_check(impl):
    rng = np.random.default_rng(RNG_SEED + 5)
    logits, labels = rng.normal(0, 2, size=(4, 3)), rng.integers(0, 3, size=4)
    _, grad = impl.softmax_cross_entropy(logits, labels)
    expect_gradient(grad, lambda z: impl.softmax_cross_entropy(z, labels)[0], logits,
                    "softmax_cross_entropy gradient against finite differences of its loss")


# ----------------------------------------------------------------------------- task 4: sigmoid_mask_loss

def random_masks(seed, rois=3, classes=4, m=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, size=(rois, classes, m, m))
    labels = rng.integers(1, classes, size=rois)
    targets = (rng.uniform(size=(rois, m, m)) > 0.5).astype(float)
    return logits, labels, targets


def test_task4_by_hand(impl):
    targets = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    inputs = dict(mask_logits=np.zeros((1, 3, 2, 2)), labels=np.array([2]), mask_targets=targets)
    loss, grad = impl.sigmoid_mask_loss(inputs["mask_logits"], inputs["labels"], targets)
    expect_close(loss, math.log(2), "sigmoid_mask_loss of zero logits, 1 RoI of class 2, K = 3, 2 x 2 mask: log 2",
                 inputs=inputs)
    want = np.zeros((1, 3, 2, 2))
    want[0, 2] = [[-0.125, 0.125], [0.125, -0.125]]
    expect_close(grad, want, "its gradient: (sigmoid - target) / (R m m) on channel 2 only", inputs=inputs)


def test_task4_only_the_rois_own_class_counts(impl):
    logits, labels, targets = random_masks(RNG_SEED + 6)
    other = logits.copy()
    for r, label in enumerate(labels):                       # scramble every channel but the RoI's own
        keep = other[r, label].copy()
        other[r] = np.random.default_rng(r).normal(0, 5, size=other[r].shape)
        other[r, label] = keep
    expect_close(impl.sigmoid_mask_loss(other, labels, targets)[0], impl.sigmoid_mask_loss(logits, labels, targets)[0],
                 "sigmoid_mask_loss after changing every channel except each RoI's own class: the same loss "
                 "(the slide: if the GT class is 3, L_mask = L_c3)")


def test_task4_random(impl):
    logits, labels, targets = random_masks(RNG_SEED + 7)
    got, want = impl.sigmoid_mask_loss(logits, labels, targets), lib.sigmoid_mask_loss(logits, labels, targets)
    inputs = dict(mask_logits=logits, labels=labels, mask_targets=targets)
    expect_close(got[0], want[0], "sigmoid_mask_loss of 3 RoIs x 4 classes x 5 x 5 random logits: loss", inputs=inputs)
    expect_close(got[1], want[1], "the same: gradient", inputs=inputs)


def test_task4_gradient_check(impl):
    logits, labels, targets = random_masks(RNG_SEED + 8, rois=2, classes=3, m=3)
    _, grad = impl.sigmoid_mask_loss(logits, labels, targets)
    expect_gradient(grad, lambda z: impl.sigmoid_mask_loss(z, labels, targets)[0], logits,
                    "sigmoid_mask_loss gradient against finite differences of its loss",
                    inputs=dict(mask_logits=logits, labels=labels, mask_targets=targets))


# ----------------------------------------------------------------------------- task 5: softmax_mask_loss

def test_task5_by_hand(impl):
    targets = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    inputs = dict(mask_logits=np.zeros((1, 3, 2, 2)), labels=np.array([2]), mask_targets=targets)
    loss, grad = impl.softmax_mask_loss(inputs["mask_logits"], inputs["labels"], targets)
    expect_close(loss, math.log(3), "softmax_mask_loss of zero logits, 1 RoI of class 2, K = 3, 2 x 2 mask: "
                                    "each pixel -log(1/3)", inputs=inputs)
    t = 1 / 3 / 4
    want = np.array([[[[t, t - 0.25], [t - 0.25, t]], [[t, t], [t, t]], [[t - 0.25, t], [t, t - 0.25]]]])
    expect_close(grad, want, "its gradient: (softmax - onehot) / (R m m), onehot = class 2 inside the mask, "
                             "class 0 outside", inputs=inputs)


def test_task5_classes_compete(impl):
    # K = 3 and every RoI of class 1: raising class 2's logits changes nothing for the sigmoid loss (task 4),
    # but under a softmax class 2 competes for every pixel, so the loss goes up
    logits, _, targets = random_masks(RNG_SEED + 9, classes=3)
    labels = np.ones(len(logits), dtype=np.int64)
    raised = logits.copy()
    raised[:, 2] += 1.0
    got = impl.softmax_mask_loss(raised, labels, targets)[0] - impl.softmax_mask_loss(logits, labels, targets)[0]
    want = lib.softmax_mask_loss(raised, labels, targets)[0] - lib.softmax_mask_loss(logits, labels, targets)[0]
    expect_close(got, want, "softmax_mask_loss(class 2 raised by 1) - softmax_mask_loss(as is), RoIs of class 1: "
                            "the loss rises, the classes compete")


def test_task5_random(impl):
    logits, labels, targets = random_masks(RNG_SEED + 10)
    targets = np.random.default_rng(0).uniform(size=targets.shape)          # soft targets: >= 0.5 is inside
    got, want = impl.softmax_mask_loss(logits, labels, targets), lib.softmax_mask_loss(logits, labels, targets)
    inputs = dict(mask_logits=logits, labels=labels, mask_targets=targets)
    expect_close(got[0], want[0], "softmax_mask_loss of 3 RoIs x 4 classes x 5 x 5, soft targets: loss", inputs=inputs)
    expect_close(got[1], want[1], "the same: gradient", inputs=inputs)


def test_task5_gradient_check(impl):
    logits, labels, targets = random_masks(RNG_SEED + 11, rois=2, classes=3, m=3)
    _, grad = impl.softmax_mask_loss(logits, labels, targets)
    expect_gradient(grad, lambda z: impl.softmax_mask_loss(z, labels, targets)[0], logits,
                    "softmax_mask_loss gradient against finite differences of its loss")
