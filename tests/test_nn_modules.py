"""Stage 6, layer objects (mrcnn_edu/nn/modules.py): bookkeeping, He initialization, printout, gradient checks
of a whole model, and a small CNN that overfits a tiny batch with each optimizer."""
import math

import numpy as np
import pytest

from mrcnn_edu import backend, nn, optim
from mrcnn_edu.gradcheck import check_gradients
from mrcnn_edu.nn import functional as F


def host(a):
    return backend.to_host(a)


def small_cnn(rng, dtype="float32", classes=5):
    """Every layer type once: 4 x 3 x 8 x 8 images -> 4 x classes scores."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, rng=rng, dtype=dtype), nn.GroupNorm(2, 8, dtype=dtype), nn.ReLU(),
        nn.MaxPool2d(2),                                                            # 8 x 4 x 4
        nn.Conv2d(8, 8, (3, 1), stride=(1, 2), padding=(1, 0), rng=rng, dtype=dtype), nn.ReLU(),  # 8 x 4 x 2
        nn.ConvTranspose2d(8, 4, 2, stride=2, rng=rng, dtype=dtype),                # 4 x 8 x 4
        nn.UpsampleNearest2x(), nn.Conv2d(4, 2, 1, stride=2, rng=rng, dtype=dtype),  # 2 x 8 x 4
        nn.Flatten(), nn.Linear(64, classes, rng=rng, dtype=dtype))


def test_parameter_names_shapes_and_count(xp):
    model = small_cnn(np.random.default_rng(0))
    params = model.parameters()
    assert list(params)[:4] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert params["4.weight"].shape == (8, 8, 3, 1) and params["6.weight"].shape == (8, 4, 2, 2)
    assert params["10.weight"].shape == (5, 64)
    expected = (8 * 3 * 9 + 8) + 2 * 8 + (8 * 8 * 3 + 8) + (8 * 4 * 4 + 4) + (2 * 4 + 2) + (64 * 5 + 5)
    assert nn.count_parameters(model) == expected
    assert all(type(p).__module__.split(".")[0] == xp.__name__ for p in params.values())
    assert all(p.dtype == np.float32 for p in params.values())


def test_printout_lists_layers_and_counts(xp):
    text = repr(small_cnn(np.random.default_rng(0)))
    lines = text.splitlines()
    assert lines[0] == "Sequential("
    assert lines[1].startswith("  (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))")
    assert lines[1].endswith(" 224")
    assert "(4): Conv2d(8, 8, kernel_size=(3, 1), stride=(1, 2), padding=(1, 0))" in text
    assert "(3): MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))" in text
    assert lines[-1] == "907 parameters (3.5 KiB)" and lines[-2] == ")"


def test_kaiming_normal_has_he_variance(xp):
    """std of a 64 -> 64, 3 x 3 conv's weights: sqrt(2 / (64 * 9)) = 0.0589; biases start at zero."""
    conv = nn.Conv2d(64, 64, 3, rng=np.random.default_rng(1))
    w = host(conv.weight)
    assert abs(w.std() / math.sqrt(2 / 576) - 1) < 0.02 and abs(w.mean()) < 0.002
    assert not host(conv.bias).any()
    up = nn.ConvTranspose2d(64, 32, 2, stride=2, rng=np.random.default_rng(1))
    assert abs(host(up.weight).std() / math.sqrt(2 / 64) - 1) < 0.03          # fan-in C_in: no overlaps


def test_same_seed_same_model_other_seed_other_model(xp):
    a, b = small_cnn(np.random.default_rng(3)), small_cnn(np.random.default_rng(3))
    c = small_cnn(np.random.default_rng(4))
    for name, p in a.parameters().items():
        np.testing.assert_array_equal(host(p), host(b.parameters()[name]))
    assert not np.array_equal(host(a.parameters()["0.weight"]), host(c.parameters()["0.weight"]))


def test_layers_need_a_generator():
    with pytest.raises(TypeError, match="rng: expected a random Generator"):
        nn.Linear(3, 2, rng=None)


def test_sequential_equals_the_functional_chain(xp, rng):
    model = small_cnn(np.random.default_rng(0), dtype="float64")
    p = model.parameters()
    x = xp.asarray(rng.standard_normal((2, 3, 8, 8)))
    h, _ = F.conv2d(x, p["0.weight"], p["0.bias"], 1, 1)
    h, _ = F.relu(F.group_norm(h, p["1.weight"], p["1.bias"], 2)[0])
    h, _ = F.max_pool2d(h, 2)
    h, _ = F.relu(F.conv2d(h, p["4.weight"], p["4.bias"], (1, 2), (1, 0))[0])
    h, _ = F.conv_transpose2d(h, p["6.weight"], p["6.bias"], 2)
    h, _ = F.conv2d(F.upsample_nearest2x(h)[0], p["8.weight"], p["8.bias"], 2)
    h, _ = F.linear(h.reshape(2, -1), p["10.weight"], p["10.bias"])
    np.testing.assert_allclose(host(model(x)), host(h), rtol=1e-12, atol=1e-12)


def test_model_gradients_check_numerically(xp, rng):
    """Backprop through the whole Sequential: w.r.t. the input and two parameters (float64)."""
    model = small_cnn(np.random.default_rng(0), dtype="float64")
    params = model.parameters()
    x = xp.asarray(rng.standard_normal((2, 3, 8, 8)))
    names = ["4.weight", "6.bias"]

    def forward(x, *_):
        return model(x)

    def backward(dout):
        dx = model.backward(dout)
        return (dx,) + tuple(model.gradients()[n] for n in names)

    check_gradients(forward, backward, [x] + [params[n] for n in names])


def test_gradients_accumulate_until_zero_grad(xp, rng):
    layer = nn.Linear(3, 2, rng=np.random.default_rng(0), dtype="float64")
    x = xp.asarray(rng.standard_normal((4, 3)))
    dout = xp.asarray(rng.standard_normal((4, 2)))
    layer(x)
    layer.backward(dout)
    once = host(layer.gradients()["weight"]).copy()
    np.testing.assert_allclose(once, host(dout).T @ host(x), rtol=1e-12)
    layer(x)
    layer.backward(dout)
    np.testing.assert_allclose(host(layer.gradients()["weight"]), 2 * once, rtol=1e-12)
    layer.zero_grad()
    assert layer.gradients() == {}


def test_shared_module_backpropagates_each_use(xp, rng):
    """A head applied to two inputs (like an RPN head on two FPN levels): caches are taken back last-in
    first-out and the weight's gradient is the sum of both uses."""
    head = nn.Conv2d(2, 3, 3, padding=1, rng=np.random.default_rng(0), dtype="float64")
    a, b = xp.asarray(rng.standard_normal((1, 2, 4, 4))), xp.asarray(rng.standard_normal((1, 2, 2, 6)))
    da, db = xp.asarray(rng.standard_normal((1, 3, 4, 4))), xp.asarray(rng.standard_normal((1, 3, 2, 6)))
    head(a)
    head(b)
    dxb, dxa = head.backward(db), head.backward(da)
    _, cache_a = F.conv2d(a, head.weight, head.bias, 1, 1)
    _, cache_b = F.conv2d(b, head.weight, head.bias, 1, 1)
    ga, gb = F.conv2d_backward(da, cache_a), F.conv2d_backward(db, cache_b)
    np.testing.assert_allclose(host(dxa), host(ga[0]), rtol=1e-12)
    np.testing.assert_allclose(host(dxb), host(gb[0]), rtol=1e-12)
    np.testing.assert_allclose(host(head.gradients()["weight"]), host(ga[1] + gb[1]), rtol=1e-12)
    with pytest.raises(RuntimeError, match="Conv2d.backward called without a forward to match"):
        head.backward(da)


def test_eval_mode_keeps_no_cache(xp, rng):
    model = small_cnn(np.random.default_rng(0)).eval()
    out = model(xp.asarray(rng.standard_normal((2, 3, 8, 8)), dtype=xp.float32))
    assert all(m._caches == [] for m in model.modules()) and not model[0].training
    with pytest.raises(RuntimeError, match="eval mode"):
        model.backward(xp.ones_like(out))
    assert model.train() is model and model[5].training


def test_first_layer_can_skip_the_image_gradient(xp, rng):
    """need_dx=False on the layer that reads the image: same parameter gradients, no dx."""
    x = xp.asarray(rng.standard_normal((2, 3, 8, 8)), dtype=xp.float32)
    grads = []
    for need_dx in (True, False):
        model = small_cnn(np.random.default_rng(0))
        model[0].need_dx = need_dx
        out = model(x)
        dx = model.backward(xp.ones_like(out))
        assert (dx is None) == (not need_dx)
        grads.append(model.gradients())
    for name, g in grads[0].items():
        np.testing.assert_array_equal(host(grads[1][name]), host(g), err_msg=name)


def test_parameters_change_in_place_only(xp):
    conv = nn.Conv2d(1, 1, 1, rng=np.random.default_rng(0))
    with pytest.raises(AttributeError, match=r"weight is a parameter: change it in place"):
        conv.weight = xp.zeros((1, 1, 1, 1), dtype=xp.float32)
    conv.weight[...] = 2.0
    assert float(conv.parameters()["weight"][0, 0, 0, 0]) == 2.0


@pytest.mark.parametrize("make_optimizer", [
    lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
    lambda p: optim.Adam(p, lr=0.01),
    lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.01),
], ids=["SGD", "Adam", "AdamW"])
def test_small_cnn_overfits_a_tiny_batch(xp, make_optimizer):
    """4 images, 5 classes, softmax cross-entropy: the loss falls at least 100-fold in 150 steps."""
    gen = np.random.default_rng(7)
    model = small_cnn(gen)
    images = xp.asarray(gen.standard_normal((4, 3, 8, 8)), dtype=xp.float32)
    labels = xp.asarray([0, 3, 1, 4])
    opt = make_optimizer(model.parameters())
    losses = []
    for _ in range(150):
        model.zero_grad()
        scores = model(images)
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_p = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        losses.append(-float(log_p[xp.arange(4), labels].mean()))
        dscores = xp.exp(log_p)
        dscores[xp.arange(4), labels] -= 1
        model.backward(dscores / 4)
        opt.step(model.gradients())
    assert losses[-1] < losses[0] / 100, f"loss {losses[0]:.4f} -> {losses[-1]:.6f}"


def test_relu_in_place_writes_into_its_input(xp, rng):
    """``ReLU(inplace=True)``: the output is the input array, overwritten with ``max(x, 0)``; the gradient is
    the incoming gradient array, overwritten with the plain ReLU's (the mask of positives is taken before the
    forward's write); the printout says so."""
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    dout = xp.asarray(rng.standard_normal(x.shape).astype(np.float32))
    plain, in_place = nn.ReLU(), nn.ReLU(inplace=True)
    expected = host(plain.forward(xp.asarray(x)))
    given = xp.asarray(x)
    out = in_place.forward(given)
    assert out is given
    np.testing.assert_array_equal(host(out), np.maximum(x, 0))
    np.testing.assert_array_equal(host(out), expected)
    assert not np.signbit(expected).any()                   # the plain ReLU gives 0, never -0.0
    expected = host(plain.backward(dout))
    given = in_place.backward(dout)
    assert given is dout
    np.testing.assert_array_equal(host(given), expected)
    assert repr(in_place).splitlines()[0] == "ReLU(inplace=True)" and repr(plain).splitlines()[0] == "ReLU()"
