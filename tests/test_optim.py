"""Stage 6, optimizers (mrcnn_edu/optim.py): update rules by hand, weight decay coupled vs decoupled,
schedules, gradient clipping, state round trip, errors."""
import math

import numpy as np
import pytest

from mrcnn_edu import backend, optim


def host(a):
    return backend.to_host(a)


def params_and_grads(xp, p, g):
    return {"w": xp.asarray(p, dtype=xp.float64)}, {"w": xp.asarray(g, dtype=xp.float64)}


def test_sgd_momentum_two_steps_by_hand(xp):
    params, grads = params_and_grads(xp, [1.0, -2.0], [0.5, 1.0])
    opt = optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step(grads)
    g1 = np.array([0.5, 1.0]) + 0.01 * np.array([1.0, -2.0])                     # v1 = g1
    p1 = np.array([1.0, -2.0]) - 0.1 * g1
    np.testing.assert_allclose(host(params["w"]), p1, rtol=1e-14)
    opt.step(grads)
    v2 = 0.9 * g1 + (np.array([0.5, 1.0]) + 0.01 * p1)
    np.testing.assert_allclose(host(params["w"]), p1 - 0.1 * v2, rtol=1e-14)
    assert opt.t == 2 and opt.counts == {"w": 2}


def test_sgd_nesterov_and_plain(xp):
    params, grads = params_and_grads(xp, [1.0], [2.0])
    optim.SGD(params, lr=0.5).step(grads)
    assert host(params["w"])[0] == 0.0                                          # 1 - 0.5 * 2
    params, grads = params_and_grads(xp, [1.0], [2.0])
    optim.SGD(params, lr=0.5, momentum=0.5, nesterov=True).step(grads)
    assert host(params["w"])[0] == 1 - 0.5 * (2 + 0.5 * 2)


def test_adam_first_step_moves_by_lr_times_sign(xp):
    """After bias correction, step 1 is lr * g / (|g| + eps): every weight moves by about lr."""
    params, grads = params_and_grads(xp, [1.0, 1.0, 1.0], [1e-3, -5.0, 200.0])
    optim.Adam(params, lr=0.01).step(grads)
    g = np.array([1e-3, -5.0, 200.0])
    np.testing.assert_allclose(host(params["w"]), 1 - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)


def test_adam_second_step_by_hand(xp):
    params, _ = params_and_grads(xp, [0.0], [0.0])
    opt = optim.Adam(params, lr=0.1, betas=(0.8, 0.9), eps=1e-8)
    p, m, v = 0.0, 0.0, 0.0
    for t, g in enumerate([1.0, -3.0], start=1):
        opt.step({"w": xp.asarray([g])})
        m, v = 0.8 * m + 0.2 * g, 0.9 * v + 0.1 * g * g
        p -= 0.1 / (1 - 0.8 ** t) * m / (math.sqrt(v) / math.sqrt(1 - 0.9 ** t) + 1e-8)
        np.testing.assert_allclose(host(params["w"])[0], p, rtol=1e-14)


def test_adamw_decays_decoupled_adam_couples(xp):
    """With a zero gradient, AdamW shrinks the weight by exactly (1 - lr wd) and Adam's moments stay 0;
    Adam's L2 decay goes through the adaptive scaling instead and moves the weight by about lr."""
    params, grads = params_and_grads(xp, [2.0, -4.0], [0.0, 0.0])
    optim.AdamW(params, lr=0.1, weight_decay=0.5).step(grads)
    np.testing.assert_allclose(host(params["w"]), [2.0 * 0.95, -4.0 * 0.95], rtol=1e-14)
    params, grads = params_and_grads(xp, [2.0, -4.0], [0.0, 0.0])
    optim.Adam(params, lr=0.1, weight_decay=0.5).step(grads)
    np.testing.assert_allclose(host(params["w"]), [2.0 - 0.1, -4.0 + 0.1], rtol=1e-7)


def test_parameters_without_gradient_are_left_alone(xp):
    params = {"a": xp.ones(2), "b": xp.ones(3)}
    opt = optim.Adam(params, lr=0.1)
    opt.step({"a": xp.ones(2)})
    opt.step({"a": xp.ones(2)})
    opt.step({"a": xp.ones(2), "b": xp.ones(3)})
    np.testing.assert_allclose(host(params["a"]), 1 - 0.3 * np.ones(2) / (1 + 1e-8), rtol=1e-14)
    np.testing.assert_allclose(host(params["b"]), 1 - 0.1 / (1 + 1e-8), rtol=1e-14)   # its own step 1
    assert opt.counts == {"a": 3, "b": 1} and opt.t == 3


@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: optim.Adam(p, lr=0.1), lambda p: optim.AdamW(p, lr=0.1)],
                         ids=["SGD", "Adam", "AdamW"])
def test_optimizers_minimize_a_quadratic(xp, make):
    """f(w) = |A w - y|^2 / 2 from w = 0: each optimizer gets within 1e-3 of the solution."""
    gen = np.random.default_rng(0)
    a = gen.standard_normal((6, 3)) + 2 * np.eye(6, 3)
    y = gen.standard_normal(6)
    solution = np.linalg.lstsq(a, y, rcond=None)[0]
    A, Y = xp.asarray(a), xp.asarray(y)
    params = {"w": xp.zeros(3)}
    opt = make(params)
    opt.weight_decay = 0.0
    for step in range(3000):
        opt.lr = optim.WarmupCosineLR(0.1, 3000, warmup_steps=50)(step)
        opt.step({"w": A.T @ (A @ params["w"] - Y) / 6})
    np.testing.assert_allclose(host(params["w"]), solution, atol=1e-3)


def test_state_dict_round_trip_continues_identically(xp):
    gen = np.random.default_rng(1)
    grads = [{"w": xp.asarray(gen.standard_normal(4))} for _ in range(4)]
    params = {"w": xp.asarray(gen.standard_normal(4))}
    opt = optim.Adam(params, lr=0.05, weight_decay=0.1)
    for g in grads[:2]:
        opt.step(g)
    state = opt.state_dict()
    copy_params = {"w": params["w"].copy()}
    resumed = optim.Adam(copy_params, lr=1.0)
    resumed.load_state_dict(state)
    assert resumed.lr == 0.05 and resumed.weight_decay == 0.1 and resumed.t == 2
    for g in grads[2:]:
        opt.step(g)
        resumed.step(g)
    np.testing.assert_array_equal(host(copy_params["w"]), host(params["w"]))


def test_state_dict_mismatches_are_refused(xp):
    opt = optim.SGD({"w": xp.ones(3)}, lr=0.1, momentum=0.9)
    opt.step({"w": xp.ones(3)})
    state = opt.state_dict()
    with pytest.raises(ValueError, match="saved by SGD, cannot load into Adam"):
        optim.Adam({"w": xp.ones(3)}).load_state_dict(state)
    with pytest.raises(ValueError, match=r"momentum_buffer\['w'\] has shape \(3,\), the parameter has \(4,\)"):
        optim.SGD({"w": xp.ones(4)}, lr=0.1, momentum=0.9).load_state_dict(state)
    with pytest.raises(ValueError, match="parameter 'w' the model lacks"):
        optim.SGD({"v": xp.ones(3)}, lr=0.1, momentum=0.9).load_state_dict(state)


def test_bad_arguments(xp):
    with pytest.raises(TypeError, match="params: expected a non-empty dict"):
        optim.SGD([xp.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="lr: expected a finite number >= 0"):
        optim.SGD({"w": xp.ones(2)}, lr=-1)
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\)"):
        optim.SGD({"w": xp.ones(2)}, lr=0.1, momentum=1.5)
    opt = optim.SGD({"w": xp.ones(2)}, lr=0.1)
    with pytest.raises(ValueError, match="grads: no parameter named 'v'"):
        opt.step({"v": xp.ones(2)})
    with pytest.raises(ValueError, match=r"grads\['w'\]: expected shape \(2,\), got \(3,\)"):
        opt.step({"w": xp.ones(3)})


def test_warmup_cosine_schedule():
    s = optim.WarmupCosineLR(0.1, total_steps=100, warmup_steps=0, min_lr=0.001)
    assert [s(0), s(50), s(100), s(200)] == pytest.approx([0.1, 0.0505, 0.001, 0.001])
    w = optim.WarmupCosineLR(0.1, total_steps=100, warmup_steps=20, warmup_factor=0.01)
    assert w(0) == pytest.approx(0.001)
    assert w(10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.1)) * (0.01 * 0.5 + 0.5))


def test_clip_grad_norm(xp):
    grads = {"a": xp.asarray([3.0, 0.0]), "b": xp.asarray([[0.0], [4.0]])}
    assert optim.clip_grad_norm(grads, max_norm=10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(host(grads["a"]), [3.0, 0.0])                 # below the cap: unchanged
    assert optim.clip_grad_norm(grads, max_norm=1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(host(grads["a"]), [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(host(grads["b"]), [[0.0], [0.8]], rtol=1e-6)
    assert optim.global_grad_norm(grads) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(FloatingPointError, match="gradient norm is nan"):
        optim.clip_grad_norm({"a": xp.asarray([xp.nan])}, 1.0)


def _laid_and_separate(xp, seed=5):
    gen = np.random.default_rng(seed)
    grads = {n: gen.standard_normal(s).astype(np.float32) for n, s in (("w", (6, 5)), ("b", (6,)), ("v", (40,)))}
    params = {n: xp.asarray(g) for n, g in grads.items()}
    return optim.lay_end_to_end({n: xp.asarray(g) for n, g in grads.items()}, params), \
        {n: xp.asarray(g) for n, g in grads.items()}


def test_far_below_the_cap_laid_gradients_are_measured_in_one_pass_and_left_alone(xp, monkeypatch):
    laid, separate = _laid_and_separate(xp)
    exact = optim.global_grad_norm(separate)
    monkeypatch.setattr(optim, "global_grad_norm", lambda grads: pytest.fail("the per-gradient norm was taken"))
    before = {n: host(g).copy() for n, g in laid.items()}
    norm = optim.clip_grad_norm(laid, exact / (optim.CLEARLY_BELOW * 0.999))
    assert norm == pytest.approx(exact, rel=1e-6)
    assert all(np.array_equal(host(laid[n]), before[n]) for n in laid)


@pytest.mark.parametrize("share", [0.995, 1.0, 0.5])
def test_near_or_above_the_cap_laid_gradients_clip_as_separate_ones_bit_for_bit(xp, share):
    """The scale of a clipped step comes from the per-gradient norm whichever way the gradients lie."""
    laid, separate = _laid_and_separate(xp, seed=6)
    max_norm = share * optim.global_grad_norm(separate)
    assert optim.clip_grad_norm(laid, max_norm) == optim.clip_grad_norm(separate, max_norm)
    assert all(np.array_equal(host(laid[n]), host(separate[n])) for n in laid)
    assert optim.global_grad_norm(laid) == pytest.approx(max_norm, rel=1e-5)      # clipped to max_norm


class _OneAtATime(optim.AdamW):
    """AdamW that never takes the flat path: the reference the flat update must equal bit for bit."""

    def _update_all(self, grads):
        return False


@pytest.mark.parametrize("skip", [None, 2], ids=["every step flat", "a gradient missing at step 2"])
def test_adamw_on_flat_buffers_equals_the_update_one_parameter_at_a_time(xp, skip):
    gen = np.random.default_rng(7)
    shapes = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "fc.weight": (5, 12), "fc.bias": (5,)}
    start = {n: gen.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    steps = [{n: gen.standard_normal(s).astype(np.float32) for n, s in shapes.items()} for _ in range(5)]
    if skip is not None:            # then one at a time from there on (the bias corrections differ)
        del steps[skip]["fc.bias"]
    runs = []
    for make in (optim.AdamW, _OneAtATime):
        params = {n: xp.asarray(a) for n, a in start.items()}
        views = dict(params)             # the layers' own arrays: updated in place, never rebound
        opt = make(params, lr=3e-3, weight_decay=1e-2)
        for g in steps:
            opt.step({n: xp.asarray(a) for n, a in g.items()})
        assert all(params[n] is views[n] for n in params)
        runs.append((params, opt.state_dict(), opt))
    (flat, flat_state, flat_opt), (loop, loop_state, _) = runs
    assert set(flat_opt._flat) == {"exp_avg", "exp_avg_sq"}      # the first step went the flat way
    for n in shapes:
        assert np.array_equal(host(flat[n]), host(loop[n])), n
        for slot in ("exp_avg", "exp_avg_sq"):
            assert np.array_equal(host(flat_state["slots"][slot][n]), host(loop_state["slots"][slot][n]))
    assert flat_state["counts"] == loop_state["counts"]


def test_parameters_laid_end_to_end_are_updated_in_their_one_array(xp):
    """``Module.flatten_parameters``: every layer's parameter a view into one array, same values; AdamW then
    updates that array in place (no copies in and out) and gives the numbers of separate arrays, bit for bit;
    the layers see the new values; a checkpoint-style in-place load still reaches them."""
    from mrcnn_edu.nn import Conv2d, Linear, Sequential
    gen = np.random.default_rng(3)

    def net():
        return Sequential(Conv2d(3, 4, 3, rng=np.random.default_rng(0)), Linear(6, 5, rng=np.random.default_rng(1)))

    separate, flat = net(), net()
    base = flat.flatten_parameters()
    params = flat.parameters()
    assert base.ndim == 1 and base.size == sum(p.size for p in params.values())
    assert all(p.base is base for p in params.values())
    for n, p in separate.parameters().items():
        assert np.array_equal(host(p), host(params[n]))
    runs = []
    for model in (separate, flat):
        opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
        assert (opt._flat_params is base) == (model is flat)
        for step in range(4):
            opt.step({n: xp.asarray(gen.standard_normal(p.shape).astype(p.dtype)) for n, p in
                      model.parameters().items()} if step != 2 else {})
        runs.append(model.parameters())
        gen = np.random.default_rng(3)     # the same gradients for the second model
    for n in runs[0]:
        assert np.array_equal(host(runs[0][n]), host(runs[1][n])), n
    assert runs[1]["0.weight"] is flat.parameters()["0.weight"]          # the layer's array, updated in place
    params["1.bias"][...] = 7.0                                          # as load_checkpoint writes
    assert float(host(base)[-1]) == 7.0


def test_parameters_that_are_not_end_to_end_take_the_copying_path(xp):
    flat = xp.zeros(10, dtype=xp.float32)
    params = {"a": flat[4:10].reshape(2, 3), "b": flat[0:4]}            # views, but out of order
    assert optim.AdamW(params)._flat_params is None
    assert optim.AdamW({"a": flat[0:4], "b": flat[4:9]})._flat_params is None     # not the whole array
    assert optim.AdamW({"a": flat[0:4], "b": flat[4:10]})._flat_params is flat


def test_gradients_laid_end_to_end_clip_and_update_as_separate_ones(xp):
    """``lay_end_to_end``: the gradients copied into one array in the optimizer's order (views by name, a missing
    one skipped); ``clip_grad_norm`` then scales the one array, and AdamW uses it as it is. The norm, the
    clipping and the update equal those of separate gradients bit for bit."""
    gen = np.random.default_rng(11)
    shapes = {"a.weight": (4, 3, 3, 3), "a.bias": (4,), "b.weight": (5, 12)}
    start = {n: gen.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    grads = {n: (gen.standard_normal(s) * 0.1).astype(np.float32) for n, s in shapes.items()}
    params = {n: xp.asarray(a) for n, a in start.items()}
    laid = optim.lay_end_to_end({n: xp.asarray(grads[n]) for n in reversed(list(grads))}, params)
    assert list(laid) == list(shapes) and optim._end_to_end(laid) is not None
    assert optim._end_to_end(laid).size == sum(a.size for a in start.values())
    for n in shapes:
        assert np.array_equal(host(laid[n]), grads[n])
    separate = {n: xp.asarray(g) for n, g in grads.items()}
    assert optim.global_grad_norm(laid) == optim.global_grad_norm(separate)
    results = []
    for g in (laid, separate):
        p = {n: xp.asarray(a) for n, a in start.items()}
        opt = optim.AdamW(p, lr=1e-2)
        opt.step(g)
        results.append(p)
    for n in shapes:
        assert np.array_equal(host(results[0][n]), host(results[1][n])), n
    norm = optim.clip_grad_norm(laid, 0.5 * optim.global_grad_norm(laid))      # clipped to half, in place
    optim.clip_grad_norm(separate, 0.5 * norm)
    assert optim.global_grad_norm(laid) == pytest.approx(norm / 2, rel=1e-5)
    for n in shapes:
        assert np.array_equal(host(laid[n]), host(separate[n])), n
    partial = optim.lay_end_to_end({"b.weight": xp.asarray(grads["b.weight"])}, params)
    assert list(partial) == ["b.weight"]
    # a gradient that is a strided view (conv2d's dw is the transpose of a GEMM's result) lands in C order
    transposed = xp.asarray(np.ascontiguousarray(grads["b.weight"].T)).T
    assert not transposed.flags.c_contiguous
    laid = optim.lay_end_to_end({"a.bias": xp.asarray(grads["a.bias"]), "b.weight": transposed}, params)
    assert np.array_equal(host(laid["b.weight"]), grads["b.weight"])
    assert np.array_equal(host(optim._end_to_end(laid))[4:], grads["b.weight"].ravel())
