"""Stage 6 against PyTorch (the oracle, skipped where it is absent): every layer's forward and backward,
the optimizers step by step, gradient clipping, and a whole model whose parameter names match torch's."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from mrcnn_edu import backend, nn, optim  # noqa: E402
from mrcnn_edu.nn import functional as F  # noqa: E402

TF = torch.nn.functional


def host(a):
    return backend.to_host(a)


def leaf(a):
    return torch.tensor(np.asarray(a), requires_grad=True)


def assert_close(got, expected, what, dtype):
    tol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(host(got), expected.detach().numpy(), rtol=tol, atol=tol,
                               err_msg=f"{what}: torch vs mrcnn_edu")


def compare(xp, ours, ours_backward, theirs, arrays, dtype, what, seed=0):
    """Run our forward/backward and torch's on the same arrays and upstream gradient; compare all."""
    gen = np.random.default_rng(seed)
    out, cache = ours(*[None if a is None else xp.asarray(a) for a in arrays])
    leaves = [None if a is None else leaf(a) for a in arrays]
    expected = theirs(*leaves)
    assert_close(out, expected, f"{what} forward", dtype)
    dout = gen.standard_normal(expected.shape).astype(dtype)
    expected.backward(torch.tensor(dout))
    grads = ours_backward(xp.asarray(dout), cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for k, (g, t) in enumerate(zip(grads, leaves)):
        if t is not None:
            assert_close(g, t.grad, f"{what} gradient of argument {k}", dtype)


CONV = [  # (N, C_in, H, W, C_out, kernel, stride, padding)
    (2, 3, 9, 7, 4, (3, 2), (2, 1), (1, 0)),
    (2, 4, 8, 8, 6, 3, 1, 1),
    (1, 3, 7, 9, 5, (1, 3), (1, 2), (0, 2)),
    (3, 4, 6, 5, 2, 1, 2, 0),
    (2, 3, 13, 11, 8, (5, 3), 2, (2, 1)),
    (2, 3, 9, 8, 4, (5, 3), 1, (1, 2)),      # stride 1: dx by the flipped-kernel correlation
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CONV)
def test_conv2d(xp, case, dtype):
    n, c, h, w, c_out, k, s, p = case
    k = k if isinstance(k, tuple) else (k, k)
    gen = np.random.default_rng(1)
    arrays = [gen.standard_normal(shape).astype(dtype) for shape in [(n, c, h, w), (c_out, c) + k, (c_out,)]]
    compare(xp, lambda x, wt, b: F.conv2d(x, wt, b, s, p), F.conv2d_backward,
            lambda x, wt, b: TF.conv2d(x, wt, b, stride=s, padding=p), arrays, dtype, f"conv2d {case}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", [(2, 8, 7, 7, 4, 2, 2, 0, 0), (1, 3, 4, 5, 2, (3, 2), (2, 1), (1, 0), (1, 0)),
                                  (2, 3, 5, 4, 3, 3, 1, 1, 0), (1, 2, 3, 3, 2, (4, 3), 3, (1, 0), (2, 1))])
def test_conv_transpose2d(xp, case, dtype):
    n, c, h, w, c_out, k, s, p, op = case
    k = k if isinstance(k, tuple) else (k, k)
    gen = np.random.default_rng(2)
    arrays = [gen.standard_normal(shape).astype(dtype) for shape in [(n, c, h, w), (c, c_out) + k, (c_out,)]]
    compare(xp, lambda x, wt, b: F.conv_transpose2d(x, wt, b, s, p, op), F.conv_transpose2d_backward,
            lambda x, wt, b: TF.conv_transpose2d(x, wt, b, stride=s, padding=p, output_padding=op),
            arrays, dtype, f"conv_transpose2d {case}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_relu_upsample(xp, dtype):
    gen = np.random.default_rng(3)
    arrays = [gen.standard_normal(s).astype(dtype) for s in [(6, 5), (4, 5), (4,)]]
    compare(xp, F.linear, F.linear_backward, TF.linear, arrays, dtype, "linear")
    compare(xp, F.relu, F.relu_backward, TF.relu, [gen.standard_normal((2, 3, 4, 5)).astype(dtype)], dtype, "relu")
    compare(xp, F.upsample_nearest2x, F.upsample_nearest2x_backward,
            lambda x: TF.interpolate(x, scale_factor=2, mode="nearest"),
            [gen.standard_normal((2, 3, 4, 5)).astype(dtype)], dtype, "upsample_nearest2x")


@pytest.mark.parametrize("k, s, p", [(3, 2, 1), ((2, 3), (1, 2), (1, 1)), (2, 2, 0), ((3, 1), 1, 0)])
def test_max_pool2d(xp, k, s, p):
    gen = np.random.default_rng(4)
    x = gen.permutation(2 * 3 * 9 * 8).reshape(2, 3, 9, 8).astype(np.float64) / 10     # no ties
    compare(xp, lambda x: F.max_pool2d(x, k, s, p), F.max_pool2d_backward,
            lambda x: TF.max_pool2d(x, k, s, p), [x], np.float64, f"max_pool2d {k} {s} {p}")


def test_max_pool2d_ties_as_torch(xp):
    x = np.round(np.random.default_rng(5).standard_normal((1, 2, 6, 6)))          # many ties
    compare(xp, lambda x: F.max_pool2d(x, 3, 1, 1), F.max_pool2d_backward,
            lambda x: TF.max_pool2d(x, 3, 1, 1), [x], np.float64, "max_pool2d with ties")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, groups", [((2, 8, 5, 6), 4), ((1, 6, 3, 3), 1), ((3, 4, 2, 5), 4)])
def test_group_norm(xp, shape, groups, dtype):
    gen = np.random.default_rng(6)
    arrays = [(gen.standard_normal(shape) * 2 + 0.5).astype(dtype), gen.standard_normal(shape[1]).astype(dtype),
              gen.standard_normal(shape[1]).astype(dtype)]
    compare(xp, lambda x, g, b: F.group_norm(x, g, b, groups), F.group_norm_backward,
            lambda x, g, b: TF.group_norm(x, groups, g, b, eps=1e-5), arrays, dtype, f"group_norm {shape}")


def small_cnn(rng):
    """Every layer type once (as in test_nn_modules.py), float64: 2 x 3 x 8 x 8 images -> 2 x 5 scores."""
    d = "float64"
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, rng=rng, dtype=d), nn.GroupNorm(2, 8, dtype=d), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, (3, 1), stride=(1, 2), padding=(1, 0), rng=rng, dtype=d), nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 2, stride=2, rng=rng, dtype=d), nn.UpsampleNearest2x(),
        nn.Conv2d(4, 2, 1, stride=2, rng=rng, dtype=d), nn.Flatten(), nn.Linear(64, 5, rng=rng, dtype=d))


def torch_twin(model):
    """The same architecture in torch.nn, loaded with our parameters through their (equal) names."""
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(2, 8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, (3, 1), stride=(1, 2), padding=(1, 0)), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(8, 4, 2, stride=2), torch.nn.Upsample(scale_factor=2, mode="nearest"),
        torch.nn.Conv2d(4, 2, 1, stride=2), torch.nn.Flatten(), torch.nn.Linear(64, 5)).double()
    twin.load_state_dict({k: torch.tensor(host(v)) for k, v in model.parameters().items()})
    return twin


def test_whole_model_forward_and_backward(xp):
    model = small_cnn(np.random.default_rng(0))
    twin = torch_twin(model)
    gen = np.random.default_rng(7)
    x, dout = gen.standard_normal((2, 3, 8, 8)), gen.standard_normal((2, 5))
    tx = leaf(x)
    expected = twin(tx)
    np.testing.assert_allclose(host(model(xp.asarray(x))), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    expected.backward(torch.tensor(dout))
    np.testing.assert_allclose(host(model.backward(xp.asarray(dout))), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    theirs = dict(twin.named_parameters())
    for name, g in model.gradients().items():
        np.testing.assert_allclose(host(g), theirs[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("ours, theirs", [
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2)),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True)),
    (lambda p: optim.Adam(p, lr=0.01, weight_decay=1e-2), lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2)),
    (lambda p: optim.AdamW(p, lr=0.01, betas=(0.8, 0.99)), lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.8, 0.99))),
], ids=["SGD", "SGD-nesterov", "Adam", "AdamW"])
def test_optimizers_step_by_step(xp, ours, theirs):
    """Five steps with changing gradients and a parameter that skips two of them; lr changed midway."""
    gen = np.random.default_rng(8)
    start = {"a": gen.standard_normal((3, 4)), "b": gen.standard_normal(5)}
    params = {k: xp.asarray(v) for k, v in start.items()}
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in start.items()}
    opt, topt = ours(params), theirs(list(tparams.values()))
    for step in range(5):
        names = ["a"] if step in (1, 2) else ["a", "b"]
        grads = {k: gen.standard_normal(start[k].shape) for k in names}
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k]) if k in grads else None
        if step == 3:
            opt.lr *= 0.5
            for group in topt.param_groups:
                group["lr"] *= 0.5
        topt.step()
        opt.step({k: xp.asarray(g) for k, g in grads.items()})
        for k, t in tparams.items():
            np.testing.assert_allclose(host(params[k]), t.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"step {step}, parameter {k}")


def test_clip_grad_norm(xp):
    gen = np.random.default_rng(9)
    grads = {"a": gen.standard_normal((3, 4)), "b": gen.standard_normal(5)}
    tensors = [torch.tensor(g, requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g)
    expected = torch.nn.utils.clip_grad_norm_(tensors, max_norm=1.5)
    ours = {k: xp.asarray(v) for k, v in grads.items()}
    assert optim.clip_grad_norm(ours, 1.5) == pytest.approx(float(expected), rel=1e-12)
    for g, t in zip(ours.values(), tensors):
        np.testing.assert_allclose(host(g), t.grad.numpy(), rtol=1e-12)


def test_kaiming_matches_torch_formula(xp):
    """Our std for a conv equals torch's kaiming_normal_(mode='fan_in', nonlinearity='relu') gain / sqrt(fan)."""
    t = torch.empty(32, 16, 3, 3)
    fan = torch.nn.init._calculate_correct_fan(t, "fan_in")
    expected_std = torch.nn.init.calculate_gain("relu") / fan ** 0.5
    ours = host(nn.Conv2d(16, 32, 3, rng=np.random.default_rng(0)).weight)
    assert abs(ours.std() / expected_std - 1) < 0.03
