"""GIoU loss and box decoding's backward against torchvision and PyTorch autograd (skipped without torch)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection._utils import BoxCoder  # noqa: E402
from torchvision.ops import generalized_box_iou_loss  # noqa: E402

from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.boxes import box_decode_backward  # noqa: E402
from mrcnn_edu.losses import giou_loss  # noqa: E402


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_giou_loss_matches_torchvision(xp, reduction):
    gen = np.random.default_rng(0)
    xy = gen.uniform(0, 50, (20, 2))
    target = np.concatenate([xy, xy + gen.uniform(5, 40, (20, 2))], 1)
    pred = target + gen.normal(0, 8, (20, 4))
    pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2] + 1)
    p = torch.tensor(pred, requires_grad=True)
    want = generalized_box_iou_loss(p, torch.tensor(target), reduction=reduction)
    want.backward(torch.ones_like(want))
    loss, grad = giou_loss(xp.asarray(pred), xp.asarray(target), reduction)
    np.testing.assert_allclose(backend.to_host(loss), want.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(backend.to_host(grad), p.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_box_decode_backward_matches_autograd(xp):
    gen = np.random.default_rng(1)
    xy = gen.uniform(0, 50, (7, 2))
    ref = np.concatenate([xy, xy + gen.uniform(5, 40, (7, 2))], 1)
    deltas = gen.normal(0, 1, (7, 12))
    deltas[0, 2] = 30.0                                       # past the clip: no gradient
    up = gen.normal(size=(7, 12))
    d = torch.tensor(deltas, requires_grad=True)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    out = coder.decode_single(d, torch.tensor(ref))
    out.backward(torch.tensor(up))
    got = box_decode_backward(xp.asarray(up), xp.asarray(deltas), xp.asarray(ref), (10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(backend.to_host(got), d.grad.numpy(), rtol=1e-10, atol=1e-12)
