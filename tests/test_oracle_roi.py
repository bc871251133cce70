"""Parity with torchvision.ops.roi_align / roi_pool, forward and backward (skipped without the oracle).

Random feature maps and RoIs partly outside the image, several spatial scales, sampling ratios and both
values of ``aligned``; float32 and float64. Run with ``python3 tasks.py oracle``.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.roi import roi_align, roi_align_backward, roi_pool, roi_pool_backward  # noqa: E402


def random_case(seed, dtype):
    rng = np.random.default_rng(seed)
    N, C, H, W = rng.integers(1, 4), rng.integers(1, 5), rng.integers(3, 20), rng.integers(3, 20)
    scale = [1.0, 0.5, 0.25, 1 / 16][seed % 4]
    R = int(rng.integers(1, 30))
    corners = rng.uniform(-10, (max(H, W) + 10) / scale, size=(R, 2, 2))
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    rois = np.column_stack([rng.integers(0, N, R), lo, hi]).astype(dtype)
    features = rng.standard_normal((N, C, H, W)).astype(dtype)
    out = (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
    grad = rng.standard_normal((R, C) + out).astype(dtype)
    return features, rois, out, scale, grad


def torch_op(op, features, rois, grad, *args):
    f = torch.tensor(features, requires_grad=True)
    out = op(f, torch.tensor(rois), *args)
    out.backward(torch.tensor(grad))
    return out.detach().numpy(), f.grad.numpy()


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_roi_align_matches_torchvision(xp, seed, aligned, sampling_ratio, dtype, tol):
    features, rois, out, scale, grad = random_case(seed, dtype)
    want, want_grad = torch_op(torchvision.ops.roi_align, features, rois, grad, out, scale, sampling_ratio, aligned)
    got = roi_align(xp.asarray(features), xp.asarray(rois), out, scale, sampling_ratio, aligned)
    got_grad = roi_align_backward(xp.asarray(grad), xp.asarray(rois), features.shape, out, scale, sampling_ratio,
                                  aligned)
    np.testing.assert_allclose(backend.to_host(got), want, rtol=tol, atol=tol, err_msg="forward: mine vs torchvision")
    np.testing.assert_allclose(backend.to_host(got_grad), want_grad, rtol=tol, atol=tol,
                               err_msg="backward: mine vs torchvision")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(12))
def test_roi_pool_matches_torchvision(xp, seed, dtype):
    features, rois, out, scale, grad = random_case(seed, dtype)
    want, want_grad = torch_op(torchvision.ops.roi_pool, features, rois, grad, out, scale)
    got, argmax = roi_pool(xp.asarray(features), xp.asarray(rois), out, scale)
    got_grad = roi_pool_backward(xp.asarray(grad), argmax, features.shape, rois=xp.asarray(rois))
    np.testing.assert_array_equal(backend.to_host(got), want, err_msg="forward: mine vs torchvision")
    np.testing.assert_allclose(backend.to_host(got_grad), want_grad, rtol=1e-6, atol=1e-6,
                               err_msg="backward: mine vs torchvision")
