"""Stage 5, losses: hand-computed values, gradient checks, empty and bad inputs (mrcnn_edu/losses.py)."""
import functools
import math

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.gradcheck import check_gradients
from mrcnn_edu.losses import (binary_cross_entropy_with_logits, sigmoid_mask_loss, smooth_l1_loss,
                              softmax_cross_entropy, softmax_mask_loss)

REDUCTIONS = ("mean", "sum", "none")


def host(a):
    return backend.to_host(a)


def assert_close(got, expected, rtol=1e-12, atol=1e-12, what=""):
    np.testing.assert_allclose(host(got), expected, rtol=rtol, atol=atol, err_msg=f"{what}: expected vs got")


def check_loss_gradient(loss_fn, x, *rest, **kwargs):
    """Gradient check of ``loss_fn(x, *rest, **kwargs) -> (loss, dloss/dx)`` with respect to ``x``."""
    def forward(x):
        return loss_fn(x, *rest, **kwargs)[0]

    def backward(dout):
        return (dout * loss_fn(x, *rest, **kwargs)[1],)

    return check_gradients(forward, backward, [x], tol=1e-6)


def offsets_away_from_kinks(gen, shape, beta):
    """Differences pred - target with |x| at least 0.1 (or 0.1 beta) away from 0 and from beta."""
    sign = gen.choice([-1.0, 1.0], size=shape)
    if beta == 0:
        return sign * gen.uniform(0.2, 2.0, size=shape)
    near = gen.uniform(0.1, 0.8, size=shape) * beta
    far = gen.uniform(1.2, 2.5, size=shape) * beta
    return sign * np.where(gen.random(shape) < 0.5, near, far)


# --------------------------------------------------------------------------------------------- the module

# --------------------------------------------------------------------------------------------- smooth-L1

def test_smooth_l1_lecture_formula(xp):
    # the slide: 0.5 x^2 if |x| < 1 else |x| - 0.5, on both sides of the kink at |x| = 1
    x = np.array([-3.0, -1.5, -1.0, -0.5, 0.0, 0.25, 0.999, 1.0, 2.0])
    expected = np.array([2.5, 1.0, 0.5, 0.125, 0.0, 0.03125, 0.4990005, 0.5, 1.5])
    expected_grad = np.array([-1.0, -1.0, -1.0, -0.5, 0.0, 0.25, 0.999, 1.0, 1.0])
    target = np.full_like(x, 0.75)
    loss, grad = smooth_l1_loss(xp.asarray(x + target), xp.asarray(target), reduction="none")
    assert_close(loss, expected, what="smooth-L1 beta=1")
    assert_close(grad, expected_grad, what="d smooth-L1 / d pred, beta=1")


def test_smooth_l1_other_beta(xp):
    # beta = 2: 0.5 x^2 / 2 inside, |x| - 1 outside
    x = xp.asarray([1.0, -1.9, 2.0, -3.0])
    loss, grad = smooth_l1_loss(x, xp.zeros(4), beta=2.0, reduction="none")
    assert_close(loss, [0.25, 0.9025, 1.0, 2.0], what="smooth-L1 beta=2")
    assert_close(grad, [0.5, -0.95, 1.0, -1.0], what="grad beta=2")


def test_smooth_l1_beta_zero_is_l1(xp):
    x = xp.asarray([-2.0, -0.1, 0.0, 0.3, 4.0])
    loss, grad = smooth_l1_loss(x, xp.zeros(5), beta=0.0, reduction="none")
    assert_close(loss, [2.0, 0.1, 0.0, 0.3, 4.0], what="L1")
    assert_close(grad, [-1.0, -1.0, 0.0, 1.0, 1.0], what="sign, 0 at 0")


def test_smooth_l1_reductions(xp):
    pred = xp.asarray([[0.5, 3.0], [-2.0, 0.0]])
    target = xp.zeros((2, 2))
    # elementwise: 0.125, 2.5, 1.5, 0; derivatives 0.5, 1, -1, 0
    loss, grad = smooth_l1_loss(pred, target, reduction="sum")
    assert loss.shape == () and float(loss) == pytest.approx(4.125, abs=1e-15)
    assert_close(grad, [[0.5, 1.0], [-1.0, 0.0]], what="sum")
    loss, grad = smooth_l1_loss(pred, target)  # mean by default
    assert loss.shape == () and float(loss) == pytest.approx(4.125 / 4, abs=1e-15)
    assert_close(grad, [[0.125, 0.25], [-0.25, 0.0]], what="mean")


@pytest.mark.parametrize("beta", [1.0, 1.0 / 9, 0.5, 0.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_smooth_l1_gradient(xp, rng, beta, reduction):
    target = rng.standard_normal((3, 4))
    pred = xp.asarray(target + offsets_away_from_kinks(rng, (3, 4), beta))
    check_loss_gradient(smooth_l1_loss, pred, xp.asarray(target), beta=beta, reduction=reduction)


def test_smooth_l1_target_gradient_is_minus_pred_gradient(xp, rng):
    pred = rng.standard_normal((2, 4))
    target = xp.asarray(pred - offsets_away_from_kinks(rng, (2, 4), 1.0))
    pred = xp.asarray(pred)
    check_gradients(lambda t: smooth_l1_loss(pred, t)[0],
                    lambda dout: (-dout * smooth_l1_loss(pred, target)[1],), [target])


# --------------------------------------------------------------------------------------------- cross-entropy

@pytest.mark.parametrize("k", [2, 5, 81])
def test_cross_entropy_uniform_logits_is_log_k(xp, k):
    loss, grad = softmax_cross_entropy(xp.full((3, k), 0.7), xp.asarray([0, 1, k - 1]))
    assert float(loss) == pytest.approx(math.log(k), rel=1e-14)
    expected = np.full((3, k), 1.0 / k)
    expected[[0, 1, 2], [0, 1, k - 1]] -= 1.0
    assert_close(grad, expected / 3, what="(softmax - onehot) / N")


def test_cross_entropy_hand_example(xp):
    # logits (0, log 3): p = (1/4, 3/4); label 1 pays -log(3/4), label 0 pays -log(1/4)
    logits = xp.asarray([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    loss, grad = softmax_cross_entropy(logits, xp.asarray([1, 0]))
    assert float(loss) == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, rel=1e-14)
    assert_close(grad, [[0.125, -0.125], [-0.375, 0.375]], what="dlogits")


def test_cross_entropy_is_stable_for_large_logits(xp):
    loss, grad = softmax_cross_entropy(xp.asarray([[1000.0, 0.0], [-1000.0, 1000.0]]), xp.asarray([1, 1]))
    assert float(loss) == pytest.approx(500.0)
    assert_close(grad, [[0.5, -0.5], [0.0, 0.0]], what="saturated softmax")


def test_cross_entropy_gradient(xp, rng):
    logits = xp.asarray(rng.standard_normal((4, 5)) * 2)
    check_loss_gradient(softmax_cross_entropy, logits, xp.asarray(rng.integers(0, 5, size=4)))


# --------------------------------------------------------------------------------------------- BCE

def test_bce_hand_values(xp):
    x = xp.asarray([0.0, 0.0, 100.0, -1000.0, 1000.0, math.log(3.0)])
    t = xp.asarray([1.0, 0.25, 0.0, 0.0, 1.0, 1.0])
    loss, grad = binary_cross_entropy_with_logits(x, t, reduction="none")
    # log 2; log 2 again (x = 0 costs log 2 whatever t); 100; 0; 0; -log sigmoid(log 3) = -log(3/4)
    assert_close(loss, [math.log(2), math.log(2), 100.0, 0.0, 0.0, -math.log(0.75)], rtol=1e-13, what="BCE")
    assert_close(grad, [-0.5, 0.25, 1.0, 0.0, 0.0, -0.25], rtol=1e-13, atol=1e-15, what="sigmoid(x) - t")
    loss, grad = binary_cross_entropy_with_logits(x, t)
    assert float(loss) == pytest.approx((2 * math.log(2) + 100 - math.log(0.75)) / 6, rel=1e-13)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_gradient(xp, rng, reduction):
    x = xp.asarray(rng.standard_normal((3, 5)) * 3)
    t = xp.asarray(rng.random((3, 5)))
    check_loss_gradient(binary_cross_entropy_with_logits, x, t, reduction=reduction)


# --------------------------------------------------------------------------------------------- mask losses

def mask_inputs(gen, r=3, k=4, m=3):
    logits = gen.standard_normal((r, k, m, m)) * 2
    labels = gen.integers(1, k, size=r)
    targets = gen.random((r, m, m))
    return logits, labels, targets


def test_sigmoid_mask_loss_hand_example(xp):
    # zero logits cost log 2 per pixel; the own channel gets (1/2 - t) / (R m m), the others nothing
    logits = xp.zeros((2, 3, 1, 2))
    targets = xp.asarray([[[1.0, 0.0]], [[0.25, 1.0]]])
    loss, grad = sigmoid_mask_loss(logits, xp.asarray([2, 1]), targets)
    assert float(loss) == pytest.approx(math.log(2), rel=1e-14)
    expected = np.zeros((2, 3, 1, 2))
    expected[0, 2, 0] = [-0.5 / 4, 0.5 / 4]
    expected[1, 1, 0] = [0.25 / 4, -0.5 / 4]
    assert_close(grad, expected, what="dmask_logits")


def test_sigmoid_mask_loss_is_bce_on_own_channel(xp, rng):
    logits, labels, targets = mask_inputs(rng)
    loss, grad = sigmoid_mask_loss(xp.asarray(logits), xp.asarray(labels), xp.asarray(targets))
    own = np.stack([logits[r, labels[r]] for r in range(len(labels))])  # the slow way, on purpose
    ref_loss, ref_grad = binary_cross_entropy_with_logits(xp.asarray(own), xp.asarray(targets))
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-14)
    grad = host(grad)
    for r, label in enumerate(labels):
        np.testing.assert_allclose(grad[r, label], host(ref_grad)[r], rtol=1e-14)
        others = [c for c in range(logits.shape[1]) if c != label]
        assert not grad[r, others].any(), f"RoI {r}: channels other than {label} got a gradient"


def test_sigmoid_mask_loss_ignores_other_channels_softmax_does_not(xp, rng):
    logits, labels, targets = mask_inputs(rng)
    changed = logits + 5.0 * rng.standard_normal(logits.shape)
    changed[np.arange(len(labels)), labels] = logits[np.arange(len(labels)), labels]  # own channel kept
    args = (xp.asarray(labels), xp.asarray(targets))
    assert float(sigmoid_mask_loss(xp.asarray(changed), *args)[0]) == \
        float(sigmoid_mask_loss(xp.asarray(logits), *args)[0])
    softmax_before = float(softmax_mask_loss(xp.asarray(logits), *args)[0])
    softmax_after = float(softmax_mask_loss(xp.asarray(changed), *args)[0])
    assert abs(softmax_after - softmax_before) > 1e-3


def test_softmax_mask_loss_hand_example(xp):
    # zero logits: log K per pixel; pixel classes (label inside, 0 outside) decide where the -1 goes
    logits = xp.zeros((1, 3, 1, 3))
    loss, grad = softmax_mask_loss(logits, xp.asarray([2]), xp.asarray([[[0.5, 0.49, 1.0]]]))
    assert float(loss) == pytest.approx(math.log(3), rel=1e-14)
    expected = np.full((1, 3, 1, 3), 1.0 / 3)
    expected[0, [2, 0, 2], 0, [0, 1, 2]] -= 1.0
    assert_close(grad, expected / 3, what="(softmax - onehot) / (R m m)")


def test_softmax_mask_loss_is_pixelwise_cross_entropy(xp, rng):
    logits, labels, targets = mask_inputs(rng)
    loss, grad = softmax_mask_loss(xp.asarray(logits), xp.asarray(labels), xp.asarray(targets))
    r, k, m, _ = logits.shape
    pixel_class = np.where(targets >= 0.5, labels[:, None, None], 0)
    flat_logits = logits.transpose(0, 2, 3, 1).reshape(-1, k)  # one row per pixel
    ref_loss, ref_grad = softmax_cross_entropy(xp.asarray(flat_logits), xp.asarray(pixel_class.ravel()))
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-13)
    np.testing.assert_allclose(host(grad), host(ref_grad).reshape(r, m, m, k).transpose(0, 3, 1, 2), rtol=1e-13)


@pytest.mark.parametrize("loss_fn", [sigmoid_mask_loss, softmax_mask_loss])
def test_mask_loss_gradient(xp, rng, loss_fn):
    logits, labels, targets = mask_inputs(rng, r=3, k=3, m=3)
    check_loss_gradient(loss_fn, xp.asarray(logits), xp.asarray(labels), xp.asarray(targets))


# --------------------------------------------------------------------------------------------- dtypes

def test_float32_in_float32_out(xp, rng):
    f32 = functools.partial(xp.asarray, dtype=xp.float32)
    logits, labels, targets = mask_inputs(rng)
    results = [
        smooth_l1_loss(f32(rng.standard_normal(5)), xp.asarray(rng.standard_normal(5))),  # float64 target
        softmax_cross_entropy(f32(rng.standard_normal((3, 4))), xp.asarray([0, 1, 3])),
        binary_cross_entropy_with_logits(f32(rng.standard_normal(5)), f32(rng.random(5))),
        sigmoid_mask_loss(f32(logits), xp.asarray(labels), xp.asarray(targets)),
        softmax_mask_loss(f32(logits), xp.asarray(labels), xp.asarray(targets)),
    ]
    for loss, grad in results:
        assert loss.shape == () and loss.dtype == xp.float32 and grad.dtype == xp.float32
        assert isinstance(loss, xp.ndarray)


# --------------------------------------------------------------------------------------------- empty inputs

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_smooth_l1_and_bce(xp, reduction):
    for fn in (smooth_l1_loss, binary_cross_entropy_with_logits):
        loss, grad = fn(xp.zeros((0, 4)), xp.zeros((0, 4)), reduction=reduction)
        assert grad.shape == (0, 4)
        if reduction == "none":
            assert loss.shape == (0, 4)
        else:
            assert loss.shape == () and float(loss) == 0.0  # a mean over nothing is 0 here (NaN in PyTorch)


def test_empty_cross_entropy(xp):
    loss, grad = softmax_cross_entropy(xp.zeros((0, 5)), xp.zeros(0, dtype=xp.int64))
    assert float(loss) == 0.0 and grad.shape == (0, 5)
    loss, grad = softmax_cross_entropy(xp.zeros((0, 5)), [])
    assert float(loss) == 0.0 and grad.shape == (0, 5)


@pytest.mark.parametrize("loss_fn", [sigmoid_mask_loss, softmax_mask_loss])
def test_empty_mask_losses(xp, loss_fn):
    loss, grad = loss_fn(xp.zeros((0, 4, 7, 7)), xp.zeros(0, dtype=xp.int64), xp.zeros((0, 7, 7)))
    assert loss.shape == () and float(loss) == 0.0
    assert grad.shape == (0, 4, 7, 7)


# --------------------------------------------------------------------------------------------- the cores

def test_each_core_gives_its_public_function_s_result(xp, rng):
    """The model calls the cores (``_<name>``) on arrays it made: the same result, bit for bit."""
    from mrcnn_edu import losses
    f32 = functools.partial(xp.asarray, dtype=xp.float32)
    pred, target = f32(rng.standard_normal((6, 4))), f32(rng.standard_normal((6, 4)))
    logits, labels = f32(rng.standard_normal((5, 4))), xp.asarray(rng.integers(0, 4, 5))
    x, t = f32(rng.standard_normal(7) * 3), f32(rng.random(7))
    mask_logits, mask_labels, mask_targets = (f32(a) if a.dtype.kind == "f" else xp.asarray(a)
                                              for a in mask_inputs(rng))
    boxes = f32(np.column_stack([rng.uniform(0, 5, (4, 2)), rng.uniform(6, 9, (4, 2))]))
    cases = [
        (losses.smooth_l1_loss(pred, target, 1 / 9, "sum"), losses._smooth_l1_loss(pred, target, 1 / 9, "sum")),
        (losses.softmax_cross_entropy(logits, labels), losses._softmax_cross_entropy(logits, labels)),
        (losses.binary_cross_entropy_with_logits(x, t), losses._binary_cross_entropy_with_logits(x, t, "mean")),
        (losses.sigmoid_mask_loss(mask_logits, mask_labels, mask_targets),
         losses._sigmoid_mask_loss(mask_logits, mask_labels, mask_targets)),
        (losses.softmax_mask_loss(mask_logits, mask_labels, mask_targets),
         losses._softmax_mask_loss(mask_logits, mask_labels, mask_targets)),
        (losses.giou_loss(boxes, boxes[::-1]), losses._giou_loss(boxes, boxes[::-1], "sum", 1e-7)),
    ]
    for (loss, grad), (core_loss, core_grad) in cases:
        assert core_loss.dtype == core_grad.dtype == xp.float32
        np.testing.assert_array_equal(host(core_loss), host(loss))
        np.testing.assert_array_equal(host(core_grad), host(grad))


# --------------------------------------------------------------------------------------------- activations

def test_sigmoid_and_softmax_are_stable_and_keep_the_dtype(xp):
    from mrcnn_edu.activations import log_softmax, sigmoid, softmax
    x = xp.asarray([-1000.0, -1.0, 0.0, math.log(3.0), 1000.0], dtype=xp.float32)
    s = sigmoid(x)
    assert s.dtype == xp.float32
    assert_close(s, [0.0, 1 / (1 + math.e), 0.5, 0.75, 1.0], rtol=1e-6, atol=1e-7, what="sigmoid")
    z = xp.asarray([[1000.0, 1000.0 + math.log(3.0)], [-5.0, -5.0]])
    assert_close(softmax(z), [[0.25, 0.75], [0.5, 0.5]], what="softmax along the last axis")
    assert_close(log_softmax(z), np.log([[0.25, 0.75], [0.5, 0.5]]), what="log_softmax")
    assert_close(softmax(z.T, axis=0), [[0.25, 0.5], [0.75, 0.5]], what="softmax along axis 0")


# --------------------------------------------------------------------------------------------- bad inputs

def test_bad_smooth_l1_inputs(xp):
    a = xp.zeros((2, 4))
    with pytest.raises(ValueError, match="target"):
        smooth_l1_loss(a, xp.zeros((2, 3)))
    with pytest.raises(ValueError, match="pred.*NaN"):
        smooth_l1_loss(xp.asarray([[float("nan")] * 4] * 2), a)
    with pytest.raises(ValueError, match="target.*inf"):
        smooth_l1_loss(a, xp.full((2, 4), float("inf")))
    with pytest.raises(ValueError, match="reduction"):
        smooth_l1_loss(a, a, reduction="average")
    for beta in (-1.0, float("nan"), float("inf"), "one"):
        with pytest.raises(ValueError, match="beta"):
            smooth_l1_loss(a, a, beta=beta)


def test_bad_cross_entropy_inputs(xp):
    logits = xp.zeros((3, 4))
    with pytest.raises(ValueError, match="labels.*\\[0, 3\\]"):
        softmax_cross_entropy(logits, xp.asarray([0, 4, 1]))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, xp.asarray([0, -1, 1]))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, xp.asarray([0, 1]))
    with pytest.raises(TypeError, match="labels"):
        softmax_cross_entropy(logits, xp.asarray([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="logits"):
        softmax_cross_entropy(xp.zeros(4), xp.asarray([0]))
    with pytest.raises(ValueError, match="logits"):
        softmax_cross_entropy(xp.zeros((0, 0)), xp.zeros(0, dtype=xp.int64))
    with pytest.raises(ValueError, match="logits.*inf"):
        softmax_cross_entropy(xp.asarray([[0.0, -float("inf")]]), xp.asarray([0]))


def test_bad_bce_inputs(xp):
    with pytest.raises(ValueError, match="targets"):
        binary_cross_entropy_with_logits(xp.zeros(3), xp.zeros(4))
    with pytest.raises(ValueError, match="targets.*\\[0, 1\\]"):
        binary_cross_entropy_with_logits(xp.zeros(3), xp.asarray([0.0, 1.0, 255.0]))
    with pytest.raises(ValueError, match="reduction"):
        binary_cross_entropy_with_logits(xp.zeros(3), xp.zeros(3), reduction=None)


@pytest.mark.parametrize("loss_fn", [sigmoid_mask_loss, softmax_mask_loss])
def test_bad_mask_loss_inputs(xp, loss_fn):
    logits, labels, targets = xp.zeros((2, 3, 4, 4)), xp.asarray([1, 2]), xp.zeros((2, 4, 4))
    with pytest.raises(ValueError, match="labels.*\\[1, 2\\]"):
        loss_fn(logits, xp.asarray([0, 2]), targets)  # background is not a mask class
    with pytest.raises(ValueError, match="labels"):
        loss_fn(logits, xp.asarray([1, 3]), targets)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(logits, xp.asarray([1, 2, 1]), targets)
    with pytest.raises(ValueError, match="mask_targets"):
        loss_fn(logits, labels, xp.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="mask_targets.*\\[0, 1\\]"):
        loss_fn(logits, labels, xp.full((2, 4, 4), 2.0))
    with pytest.raises(ValueError, match="mask_logits"):
        loss_fn(xp.zeros((2, 4, 4)), labels, targets)
    bad = xp.zeros((2, 3, 4, 4))
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="mask_logits.*NaN"):
        loss_fn(bad, labels, targets)
