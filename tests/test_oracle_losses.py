"""Stage 5, losses against PyTorch / torchvision: values and autograd gradients on random inputs."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
F = torch.nn.functional
from torchvision.models.detection.roi_heads import maskrcnn_loss, project_masks_on_boxes  # noqa: E402

from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.losses import (binary_cross_entropy_with_logits, sigmoid_mask_loss, smooth_l1_loss,  # noqa: E402
                              softmax_cross_entropy, softmax_mask_loss)

DTYPES = {"float32": (np.float32, torch.float32, 2e-5, 1e-7), "float64": (np.float64, torch.float64, 1e-12, 1e-15)}


def theirs(fn, x, *args, **kwargs):
    """PyTorch's loss of host array ``x`` and its autograd gradient (elementwise for reduction="none")."""
    x = torch.tensor(x, requires_grad=True)
    loss = fn(x, *args, **kwargs)
    loss.backward(torch.ones_like(loss))
    return loss.detach().numpy(), x.grad.numpy()


def assert_same(mine, expected, dtype, what, loss_atol=None):
    _, _, rtol, atol = DTYPES[dtype]
    loss, grad = mine
    exp_loss, exp_grad = expected
    assert backend.to_host(loss).dtype == exp_loss.dtype, f"{what}: loss dtype"
    assert backend.to_host(grad).dtype == exp_grad.dtype, f"{what}: grad dtype"
    np.testing.assert_allclose(backend.to_host(loss), exp_loss, rtol=rtol, atol=loss_atol or atol,
                               err_msg=f"{what}: loss, torch vs mine")
    np.testing.assert_allclose(backend.to_host(grad), exp_grad, rtol=rtol, atol=atol,
                               err_msg=f"{what}: gradient, torch vs mine")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta", [1.0, 1.0 / 9, 0.5, 2.0, 0.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_smooth_l1_matches_torch(xp, rng, dtype, beta, reduction):
    np_dtype = DTYPES[dtype][0]
    pred = (rng.standard_normal((64, 4)) * 2).astype(np_dtype)
    target = rng.standard_normal((64, 4)).astype(np_dtype)
    mine = smooth_l1_loss(xp.asarray(pred), xp.asarray(target), beta=beta, reduction=reduction)
    expected = theirs(F.smooth_l1_loss, pred, torch.tensor(target), beta=beta, reduction=reduction)
    assert_same(mine, expected, dtype, f"smooth_l1 beta={beta} {reduction}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k", [(50, 2), (128, 81), (1, 3)])
def test_cross_entropy_matches_torch(xp, rng, dtype, n, k):
    logits = (rng.standard_normal((n, k)) * 4).astype(DTYPES[dtype][0])
    labels = rng.integers(0, k, size=n)
    mine = softmax_cross_entropy(xp.asarray(logits), xp.asarray(labels))
    expected = theirs(F.cross_entropy, logits, torch.tensor(labels))
    assert_same(mine, expected, dtype, f"cross_entropy N={n} K={k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_matches_torch(xp, rng, dtype, reduction):
    np_dtype = DTYPES[dtype][0]
    logits = (rng.standard_normal(256) * 5).astype(np_dtype)
    logits[:4] = [60.0, -60.0, 0.0, 30.0]  # saturated sigmoids and the x = 0 branch point
    targets = np.where(rng.random(256) < 0.3, rng.random(256), rng.integers(0, 2, 256)).astype(np_dtype)
    mine = binary_cross_entropy_with_logits(xp.asarray(logits), xp.asarray(targets), reduction=reduction)
    expected = theirs(F.binary_cross_entropy_with_logits, logits, torch.tensor(targets), reduction=reduction)
    # near its minimum (t ~ sigmoid(x)) the loss cancels terms as large as |x|: both sides round there
    # (against a float64 reference, ours is no less accurate than PyTorch's in float32)
    loss_atol = 4 * np.finfo(np_dtype).eps * np.abs(logits).max()
    assert_same(mine, expected, dtype, f"bce_with_logits {reduction}", loss_atol=loss_atol)


def mask_case(gen, np_dtype, r=6, k=5, m=7):
    logits = (gen.standard_normal((r, k, m, m)) * 3).astype(np_dtype)
    labels = gen.integers(1, k, size=r)
    targets = np.where(gen.random((r, m, m)) < 0.5, gen.random((r, m, m)),
                       gen.integers(0, 2, (r, m, m))).astype(np_dtype)
    return logits, labels, targets


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_mask_loss_matches_maskrcnn_formula(xp, rng, dtype):
    logits, labels, targets = mask_case(rng, DTYPES[dtype][0])
    arange = torch.arange(len(labels))

    def formula(x):
        return F.binary_cross_entropy_with_logits(x[arange, torch.tensor(labels)], torch.tensor(targets))

    mine = sigmoid_mask_loss(xp.asarray(logits), xp.asarray(labels), xp.asarray(targets))
    assert_same(mine, theirs(formula, logits), dtype, "sigmoid_mask_loss vs maskrcnn_loss formula")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_mask_loss_matches_torchvision_maskrcnn_loss(xp, rng, dtype):
    # torchvision's own function, from ground-truth masks and proposals; its targets come from roi_align
    np_dtype, torch_dtype = DTYPES[dtype][:2]
    m, height, width = 6, 40, 48
    gt_masks = torch.tensor(rng.random((3, height, width)) < 0.4)
    gt_labels = torch.tensor([2, 1, 3])
    x1y1 = rng.uniform(0, 20, (5, 2))
    proposals = torch.tensor(np.concatenate([x1y1, x1y1 + rng.uniform(5, 20, (5, 2))], 1), dtype=torch_dtype)
    matched = torch.tensor(rng.integers(0, 3, 5))
    logits = (rng.standard_normal((5, 4, m, m)) * 2).astype(np_dtype)
    expected = theirs(maskrcnn_loss, logits, [proposals], [gt_masks], [gt_labels], [matched])
    targets = project_masks_on_boxes(gt_masks, proposals, matched, m).numpy()
    mine = sigmoid_mask_loss(xp.asarray(logits), xp.asarray(gt_labels[matched].numpy()), xp.asarray(targets))
    assert_same(mine, expected, dtype, "sigmoid_mask_loss vs torchvision maskrcnn_loss")


def test_empty_sigmoid_mask_loss_matches_torchvision(xp):
    logits = np.zeros((0, 4, 6, 6))
    empty = [torch.zeros((0, 4), dtype=torch.float64)]
    expected = theirs(maskrcnn_loss, logits, empty, [torch.zeros((1, 8, 8))], [torch.tensor([1])],
                      [torch.zeros(0, dtype=torch.int64)])
    mine = sigmoid_mask_loss(xp.asarray(logits), xp.zeros(0, dtype=xp.int64), xp.zeros((0, 6, 6)))
    assert_same(mine, expected, "float64", "empty maskrcnn_loss")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_mask_loss_matches_pixelwise_cross_entropy(xp, rng, dtype):
    logits, labels, targets = mask_case(rng, DTYPES[dtype][0])
    pixel_class = torch.tensor(np.where(targets >= 0.5, labels[:, None, None], 0))

    def formula(x):
        return F.cross_entropy(x, pixel_class)  # class dim 1: K channels; targets R x m x m

    mine = softmax_mask_loss(xp.asarray(logits), xp.asarray(labels), xp.asarray(targets))
    assert_same(mine, theirs(formula, logits), dtype, "softmax_mask_loss vs F.cross_entropy over channels")


def test_torch_mean_of_nothing_is_nan_ours_is_zero(xp):
    # the documented departure: an empty mean is 0 here, NaN in PyTorch
    assert torch.isnan(F.smooth_l1_loss(torch.zeros(0, 4), torch.zeros(0, 4)))
    assert float(smooth_l1_loss(xp.zeros((0, 4)), xp.zeros((0, 4)))[0]) == 0.0
    assert torch.isnan(F.cross_entropy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)))
    assert float(softmax_cross_entropy(xp.zeros((0, 3)), xp.zeros(0, dtype=xp.int64))[0]) == 0.0
