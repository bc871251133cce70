"""Stage 6, layers (mrcnn_edu/nn/functional.py, nn/conv.py): loop references, hand-computed values,
gradient checks in float64 (non-square kernels, strides, padding, odd sizes), adjoint identities, errors."""
import functools
import itertools

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu._validate import pair
from mrcnn_edu.gradcheck import check_gradients
from mrcnn_edu.nn import functional as F


def host(a):
    return backend.to_host(a)


def normal(gen, shape, xp, dtype=np.float64):
    return xp.asarray(gen.standard_normal(shape).astype(dtype))


def distinct(gen, shape, xp):
    """Values 0.01 apart in random order, none of them 0: no ties in a max, nothing within eps of a kink."""
    values = gen.permutation(np.arange(np.prod(shape))) + 0.5
    return xp.asarray(((values - 0.5 * values.size) * 0.01).reshape(shape))


def assert_close(got, expected, what, rtol=1e-10, atol=1e-10):
    np.testing.assert_allclose(host(got), expected, rtol=rtol, atol=atol, err_msg=f"{what}: expected vs got")


# ----------------------------------------------------------------------------------------------------
# references: the loops the fast layers replace (over pixels, fine in a test)
# ----------------------------------------------------------------------------------------------------

def conv2d_loops(x, w, b, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c_out, oh, ow))
    for oy, ox in itertools.product(range(oh), range(ow)):
        window = xpad[:, :, oy * sh:oy * sh + kh, ox * sw:ox * sw + kw]          # N x C x kh x kw
        out[:, :, oy, ox] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + (0 if b is None else b[None, :, None, None])


def max_pool_loops(x, k, s, p):
    n, c, h, w = x.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=-np.inf)
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    out = np.empty((n, c, oh, ow))
    for oy, ox in itertools.product(range(oh), range(ow)):
        out[:, :, oy, ox] = xpad[:, :, oy * s[0]:oy * s[0] + k[0], ox * s[1]:ox * s[1] + k[1]].max(axis=(2, 3))
    return out


# (N, C_in, H, W, C_out, kernel, stride, padding): non-square kernels, unequal strides and paddings,
# odd sizes, windows that stop short of the border, 1 x 1 kernels with and without stride
CONV_CASES = [
    (2, 3, 7, 6, 4, (3, 2), (2, 1), (1, 0)),
    (1, 2, 5, 8, 3, (1, 3), (1, 2), (0, 1)),
    (2, 2, 6, 5, 3, (3, 3), 2, 1),
    (1, 3, 5, 5, 2, 1, 1, 0),
    (2, 3, 7, 5, 2, 1, (2, 3), 0),
    (1, 2, 4, 4, 2, 1, 1, 1),
    # stride 1, k > p: dx by the "full" correlation with the flipped kernel instead of col2im
    (2, 3, 5, 6, 4, 3, 1, 1),
    (2, 2, 6, 5, 3, (3, 2), 1, (1, 0)),
    (1, 2, 7, 7, 2, 5, 1, (1, 2)),
    (2, 2, 4, 5, 3, 2, 1, 0),
    # stride = kernel, no padding: windows that tile the input exactly (dx is one copy), and with a spare row
    (2, 3, 6, 6, 2, (2, 3), (2, 3), 0),
    (1, 2, 7, 4, 2, 2, 2, 0),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_loops(xp, rng, case):
    n, c, h, w, c_out, k, s, p = case
    k, s, p = (pair(v, "v", 0) for v in (k, s, p))
    x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((c_out, c) + k), rng.standard_normal(c_out)
    out, _ = F.conv2d(xp.asarray(x), xp.asarray(wt), xp.asarray(b), stride=s, padding=p)
    assert_close(out, conv2d_loops(x, wt, b, s, p), f"conv2d {case}")


def test_conv2d_hand_example(xp):
    """A 1-channel 3 x 3 image, a 2 x 2 kernel of ones, stride 1, no padding: sums of 2 x 2 blocks."""
    x = xp.asarray(np.arange(9.0).reshape(1, 1, 3, 3))
    out, _ = F.conv2d(x, xp.ones((1, 1, 2, 2)), xp.asarray([10.0]))
    assert_close(out, [[[[10 + 0 + 1 + 3 + 4, 10 + 1 + 2 + 4 + 5], [10 + 3 + 4 + 6 + 7, 10 + 4 + 5 + 7 + 8]]]],
                 "2 x 2 box filter")


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradients(xp, rng, case):
    n, c, h, w, c_out, k, s, p = case
    k = pair(k, "k")
    x, wt, b = normal(rng, (n, c, h, w), xp), normal(rng, (c_out, c) + k, xp), normal(rng, (c_out,), xp)
    cache = {}

    def forward(x, wt, b):
        out, cache["c"] = F.conv2d(x, wt, b, stride=s, padding=p)
        return out

    forward(x, wt, b)
    check_gradients(forward, lambda dout: F.conv2d_backward(dout, cache["c"]), [x, wt, b])


def test_conv2d_without_bias(xp, rng):
    x, wt = normal(rng, (2, 3, 5, 4), xp), normal(rng, (2, 3, 2, 3), xp)
    out, cache = F.conv2d(x, wt, None, stride=(1, 2), padding=(1, 0))
    assert_close(out, conv2d_loops(host(x), host(wt), None, (1, 2), (1, 0)), "conv2d without bias")
    dx, dw, db = F.conv2d_backward(xp.ones_like(out), cache)
    assert db is None and dx.shape == x.shape and dw.shape == wt.shape


@pytest.mark.parametrize("case", [
    (2, 3, 4, 5, 2, (2, 2), 2, 0, 0),        # the mask head's upsampling: no overlaps
    (1, 2, 3, 4, 3, (3, 2), (2, 1), (1, 0), (1, 0)),
    (2, 2, 3, 3, 2, (3, 3), 1, 1, 0),
    (1, 2, 3, 2, 2, 1, 2, 0, 1),             # 1 x 1 kernel, strided, with output padding
])
def test_conv_transpose2d_gradients_and_adjoint(xp, rng, case):
    """Gradcheck, and ``<conv2d(y, w), x> = <y, conv_transpose2d(x, w)>``: the transpose of conv2d in y."""
    n, c_in, h, w, c_out, k, s, p, op = case
    k = pair(k, "k")
    x, wt, b = normal(rng, (n, c_in, h, w), xp), normal(rng, (c_in, c_out) + k, xp), normal(rng, (c_out,), xp)
    out, _ = F.conv_transpose2d(x, wt, None, stride=s, padding=p, output_padding=op)
    y = normal(rng, out.shape, xp)
    back, _ = F.conv2d(y, wt, None, stride=s, padding=p)
    assert back.shape == x.shape
    np.testing.assert_allclose(float(xp.sum(out * y)), float(xp.sum(back * x)), rtol=1e-10)
    cache = {}

    def forward(x, wt, b):
        out, cache["c"] = F.conv_transpose2d(x, wt, b, stride=s, padding=p, output_padding=op)
        return out

    forward(x, wt, b)
    check_gradients(forward, lambda dout: F.conv_transpose2d_backward(dout, cache["c"]), [x, wt, b])


def test_conv_transpose2d_paints_the_kernel(xp):
    """A single 1 at input pixel (1, 0) paints the 2 x 2 kernel at output rows 2-3, columns 0-1 (stride 2)."""
    x = xp.zeros((1, 1, 2, 2))
    x[0, 0, 1, 0] = 1.0
    wt = xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, _ = F.conv_transpose2d(x, wt, xp.asarray([0.5]), stride=2)
    expected = np.full((4, 4), 0.5)
    expected[2:, :2] += [[1, 2], [3, 4]]
    assert_close(out[0, 0], expected, "painted kernel")


@pytest.mark.parametrize("shape, args", [
    ((2, 3, 7, 6), ((3, 2), (2, 1), (1, 2))),
    ((2, 3, 6, 6), ((2, 3), (2, 3), (0, 0))),    # windows that tile the image: col2im only reorders
    ((2, 3, 7, 6), ((2, 2), (2, 2), (0, 0))),    # stride = kernel, but the last row is in no window
])
def test_im2col_col2im_are_adjoint(xp, rng, shape, args):
    x = normal(rng, shape, xp)
    cols = F.im2col(x, *args)
    y = normal(rng, cols.shape, xp)
    np.testing.assert_allclose(float(xp.sum(cols * y)), float(xp.sum(x * F.col2im(y, x.shape, *args))),
                               rtol=1e-10)


def test_im2col_and_col2im_take_ints_or_pairs_and_check_their_input(xp, rng):
    """Like ``conv2d``, the two public column functions take an int or a pair for each size, and bad input is
    an error that names the argument (before, ints failed deep inside with "cannot unpack non-iterable int")."""
    x = normal(rng, (2, 3, 7, 6), xp)
    cols = F.im2col(x, (3, 3), (2, 2), (1, 1))
    assert cols.shape == (2, 27, 4 * 3)
    np.testing.assert_array_equal(host(F.im2col(x, 3, 2, 1)), host(cols))
    np.testing.assert_array_equal(host(F.col2im(cols, x.shape, 3, 2, 1)),
                                  host(F.col2im(cols, x.shape, (3, 3), (2, 2), (1, 1))))
    # the windows at the image's corner: tap (c, i, j) of output pixel (0, 0) reads x_padded[c, i, j]
    first = host(cols)[0, :, 0].reshape(3, 3, 3)
    np.testing.assert_array_equal(first[:, 1:, 1:], host(x)[0, :, :2, :2])
    assert not first[:, 0, :].any() and not first[:, :, 0].any()          # the padding's zeros
    with pytest.raises(ValueError, match=r"x: expected N x C x H x W, got shape \(3, 7, 6\)"):
        F.im2col(x[0], 3, 1, 1)
    with pytest.raises(ValueError, match="x: contains NaN or inf"):
        F.im2col(xp.full((1, 1, 4, 4), xp.nan), 3, 1, 1)
    with pytest.raises(ValueError, match="smaller than the 9 x 9 kernel"):
        F.im2col(x, 9, 1, 0)
    with pytest.raises(ValueError, match="stride: expected sizes >= 1"):
        F.im2col(x, 3, 0, 1)
    with pytest.raises(ValueError, match="padding: expected an int or a pair of ints"):
        F.im2col(x, 3, 1, 0.5)
    with pytest.raises(ValueError, match=r"cols: expected shape \(2, 27, 12\) \(what im2col makes of an "
                                         r"x of shape \(2, 3, 7, 6\)\), got \(2, 27, 11\)"):
        F.col2im(cols[:, :, :11], x.shape, 3, 2, 1)
    with pytest.raises(ValueError, match=r"x_shape: expected \(N, C, H, W\)"):
        F.col2im(cols, (3, 7, 6), 3, 2, 1)
    with pytest.raises(ValueError, match="kernel_size: expected an int or a pair of ints"):
        F.col2im(cols, x.shape, "3", 2, 1)


@pytest.mark.parametrize("shape, kh, ph", [
    ((3, 2, 5, 7), 3, 1), ((2, 3, 4, 1), 3, 1), ((2, 1, 1, 1), 3, 1),    # a map one pixel wide or one pixel in all
    ((2, 2, 6, 5), 5, 2), ((2, 2, 6, 5), 1, 0), ((2, 2, 6, 5), 3, 0),    # other heights of kernel and padding
])
def test_im2col_of_a_3_wide_stride_1_kernel_in_long_runs(xp, rng, shape, kh, ph):
    """Kernels 3 wide at stride 1, padded by 1 across, take the long-run copy (``_windows_in_runs``): its
    columns equal the windows read one by one from the padded map, the zeros of the padding included, for
    any map width (the reads that cross a row's end are zeroed) and for an input given with any strides."""
    from mrcnn_edu.nn import conv
    n, c, h, w = shape
    oh = h + 2 * ph - kh + 1
    wide = normal(rng, (n, c, h, 2 * w), xp)
    for x in (wide[:, :, :, :w].copy(), wide[:, :, :, ::2]):               # C-contiguous, and every other column
        padded = np.pad(backend.to_host(x), ((0, 0), (0, 0), (ph, ph), (1, 1)))
        want = np.stack([padded[:, :, i:i + oh, j:j + w] for i in range(kh) for j in range(3)])   # (i j) n c oy ox
        want = want.transpose(2, 0, 1, 3, 4).reshape(c * kh * 3, n * oh * w)
        got = backend.to_host(conv._windows_cm(x.transpose(1, 0, 2, 3), (kh, 3), (1, 1), (ph, 1)))
        np.testing.assert_array_equal(got, want)
        assert not np.signbit(got[want == 0]).any()                         # the padding's zeros are +0.0


def test_conv2d_backward_can_skip_dx(xp, rng):
    x, wt, b = normal(rng, (2, 3, 6, 5), xp), normal(rng, (4, 3, 3, 3), xp), normal(rng, (4,), xp)
    out, cache = F.conv2d(x, wt, b, stride=2, padding=1)
    dout = normal(rng, out.shape, xp)
    dx, dw, db = F.conv2d_backward(dout, cache)
    none, dw2, db2 = F.conv2d_backward(dout, cache, need_dx=False)
    assert none is None and dx.shape == x.shape
    np.testing.assert_array_equal(host(dw2), host(dw))
    np.testing.assert_array_equal(host(db2), host(db))


def test_linear_values_and_gradients(xp, rng):
    x, wt, b = normal(rng, (5, 4), xp), normal(rng, (3, 4), xp), normal(rng, (3,), xp)
    out, _ = F.linear(x, wt, b)
    assert_close(out, host(x) @ host(wt).T + host(b), "linear")
    cache = {}

    def forward(x, wt, b):
        out, cache["c"] = F.linear(x, wt, b)
        return out

    check_gradients(forward, lambda dout: F.linear_backward(dout, cache["c"]), [x, wt, b])


def test_relu_values_and_gradient(xp, rng):
    x = xp.asarray([[-2.0, 0.0, 3.0]])
    out, cache = F.relu(x)
    assert_close(out, [[0.0, 0.0, 3.0]], "relu")
    assert_close(F.relu_backward(xp.asarray([[5.0, 6.0, 7.0]]), cache), [[0.0, 0.0, 7.0]], "relu' (0 at x = 0)")
    x = distinct(rng, (2, 3, 4), xp)
    cache = {}

    def forward(x):
        out, cache["c"] = F.relu(x)
        return out

    check_gradients(forward, lambda dout: F.relu_backward(dout, cache["c"]), [x])


@pytest.mark.parametrize("k, s, p", [((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 0)), ((2, 2), None, (0, 0)),
                                     ((3, 1), (2, 1), (0, 0))])
def test_max_pool2d_matches_loops_and_gradchecks(xp, rng, k, s, p):
    x = distinct(rng, (2, 2, 7, 6), xp)
    out, _ = F.max_pool2d(x, k, s, p)
    assert_close(out, max_pool_loops(host(x), k, s or k, p), f"max_pool2d {k} {s} {p}")
    cache = {}

    def forward(x):
        out, cache["c"] = F.max_pool2d(x, k, s, p)
        return out

    check_gradients(forward, lambda dout: F.max_pool2d_backward(dout, cache["c"]), [x])


def test_max_pool2d_tie_goes_to_the_first_pixel(xp):
    """All four pixels equal: the whole gradient goes to the top-left one (PyTorch's choice)."""
    out, cache = F.max_pool2d(xp.ones((1, 1, 2, 2)), 2)
    dx = F.max_pool2d_backward(xp.full((1, 1, 1, 1), 3.0), cache)
    assert_close(dx[0, 0], [[3.0, 0.0], [0.0, 0.0]], "tie")


def test_max_pool2d_overlapping_windows_add_up(xp):
    """Stride 1, 2 x 2 windows on a 3 x 3 image with its maximum in the centre: all 4 outputs pick it."""
    x = xp.asarray(np.array([[1.0, 2, 3], [4, 9, 5], [6, 7, 8]])[None, None])
    out, cache = F.max_pool2d(x, 2, 1)
    assert_close(out[0, 0], [[9, 9], [9, 9]], "max")
    dx = F.max_pool2d_backward(xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)
    assert_close(dx[0, 0], [[0, 0, 0], [0, 10, 0], [0, 0, 0]], "routed gradient")


@pytest.mark.parametrize("shape, groups", [((2, 6, 5, 3), 3), ((3, 4, 3, 3), 1), ((2, 4, 2, 3), 4), ((5, 6), 2)])
def test_group_norm_values_and_gradients(xp, rng, shape, groups):
    x = normal(rng, shape, xp) * 3 + 1
    gamma, beta = normal(rng, shape[1:2], xp), normal(rng, shape[1:2], xp)
    out, _ = F.group_norm(x, gamma, beta, groups)
    xg = host(x).reshape(shape[0], groups, -1)
    xhat = ((xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, keepdims=True) + 1e-5)).reshape(shape)
    channel = (1, -1) + (1,) * (len(shape) - 2)
    assert_close(out, xhat * host(gamma).reshape(channel) + host(beta).reshape(channel), "group_norm")
    cache = {}

    def forward(x, gamma, beta):
        out, cache["c"] = F.group_norm(x, gamma, beta, groups)
        return out

    check_gradients(forward, lambda dout: F.group_norm_backward(dout, cache["c"]), [x, gamma, beta])


def test_group_norm_is_per_image(xp, rng):
    """The same image normalizes the same alone or in a batch of 5: no batch statistics."""
    x = normal(rng, (5, 4, 3, 3), xp)
    ones, zeros = xp.ones(4), xp.zeros(4)
    batch, _ = F.group_norm(x, ones, zeros, 2)
    alone, _ = F.group_norm(x[3:4], ones, zeros, 2)
    assert_close(batch[3:4], host(alone), "image 3")
    groups = host(batch).reshape(5, 2, -1)
    assert_close(groups.mean(axis=2), np.zeros((5, 2)), "group means", atol=1e-12)
    assert_close(groups.var(axis=2), np.full((5, 2), 1 - 1e-5), "group variances", rtol=1e-5)


def test_upsample_nearest2x(xp, rng):
    x = xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, cache = F.upsample_nearest2x(x)
    assert_close(out[0, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], "upsampled")
    dx = F.upsample_nearest2x_backward(xp.asarray(np.arange(16.0).reshape(1, 1, 4, 4)), cache)
    assert_close(dx[0, 0], [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]], "block sums")
    x = normal(rng, (2, 3, 3, 2), xp)
    cache = {}

    def forward(x):
        out, cache["c"] = F.upsample_nearest2x(x)
        return out

    check_gradients(forward, lambda dout: F.upsample_nearest2x_backward(dout, cache["c"]), [x])


# ----------------------------------------------------------------------------------------------------
# dtypes, empty inputs, errors
# ----------------------------------------------------------------------------------------------------

LAYERS = {
    "conv2d": lambda x, xp: F.conv2d(x, xp.ones((2, 3, 3, 3), dtype=x.dtype), xp.zeros(2, dtype=x.dtype), 1, 1),
    "conv1x1": lambda x, xp: F.conv2d(x, xp.ones((2, 3, 1, 1), dtype=x.dtype), None, 2),
    "conv_transpose2d": lambda x, xp: F.conv_transpose2d(x, xp.ones((3, 2, 2, 2), dtype=x.dtype), None, 2),
    "relu": lambda x, xp: F.relu(x),
    "max_pool2d": lambda x, xp: F.max_pool2d(x, 2),
    "group_norm": lambda x, xp: F.group_norm(x, xp.ones(3, dtype=x.dtype), xp.zeros(3, dtype=x.dtype), 3),
    "upsample_nearest2x": lambda x, xp: F.upsample_nearest2x(x),
}
BACKWARDS = {"conv2d": F.conv2d_backward, "conv1x1": F.conv2d_backward,
             "conv_transpose2d": F.conv_transpose2d_backward, "relu": F.relu_backward,
             "max_pool2d": F.max_pool2d_backward, "group_norm": F.group_norm_backward,
             "upsample_nearest2x": F.upsample_nearest2x_backward}


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_keep_the_dtype(xp, rng, name, dtype):
    x = normal(rng, (2, 3, 4, 6), xp, dtype)
    out, cache = LAYERS[name](x, xp)
    grads = BACKWARDS[name](xp.ones_like(out), cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads if g is not None)
    assert grads[0].shape == x.shape


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layers_accept_an_empty_batch(xp, name):
    x = xp.zeros((0, 3, 4, 6), dtype=xp.float32)
    out, cache = LAYERS[name](x, xp)
    grads = BACKWARDS[name](xp.zeros_like(out), cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert out.shape[0] == 0 and grads[0].shape == x.shape
    assert all(float(xp.abs(g).sum()) == 0 for g in grads[1:] if g is not None)


def test_linear_empty_batch(xp):
    out, cache = F.linear(xp.zeros((0, 4)), xp.ones((3, 4)), xp.ones(3))
    dx, dw, db = F.linear_backward(xp.zeros((0, 3)), cache)
    assert out.shape == (0, 3) and dx.shape == (0, 4) and float(xp.abs(dw).sum()) == 0


def test_bad_inputs_name_the_argument(xp):
    x, w = xp.ones((1, 3, 5, 5)), xp.ones((2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"x: expected N x C x H x W, got shape \(3, 5, 5\)"):
        F.conv2d(xp.ones((3, 5, 5)), w)
    with pytest.raises(ValueError, match="w: expected C_out x C_in x kh x kw with C_in = 3"):
        F.conv2d(x, xp.ones((2, 4, 3, 3)))
    with pytest.raises(ValueError, match=r"b: expected a bias per output channel \(C_out\) of shape 2"):
        F.conv2d(x, w, xp.ones(3))
    with pytest.raises(TypeError, match="w: dtype float32 differs from the input's float64"):
        F.conv2d(x, w.astype(xp.float32))
    with pytest.raises(ValueError, match="x: contains NaN or inf"):
        F.conv2d(xp.full((1, 3, 5, 5), xp.nan), w)
    with pytest.raises(ValueError, match="smaller than the 3 x 3 kernel"):
        F.conv2d(xp.ones((1, 3, 2, 2)), w)
    with pytest.raises(ValueError, match="stride: expected sizes >= 1"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="padding: expected an int or a pair of ints"):
        F.conv2d(x, w, padding=1.5)
    with pytest.raises(ValueError, match="output_padding: expected values smaller than stride"):
        F.conv_transpose2d(x, xp.ones((3, 2, 2, 2)), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="num_groups: expected a positive divisor of the 3 channels"):
        F.group_norm(x, xp.ones(3), xp.zeros(3), 2)
    with pytest.raises(ValueError, match="w: expected D_out x D_in with D_in = 5"):
        F.linear(xp.ones((2, 5)), xp.ones((3, 4)))
    out, cache = F.conv2d(x, w, padding=1)
    with pytest.raises(ValueError, match=r"dout: expected the forward output's shape \(1, 2, 5, 5\)"):
        F.conv2d_backward(xp.ones((1, 2, 4, 4)), cache)
    with pytest.raises(ValueError, match="dout: contains NaN or inf"):
        F.conv2d_backward(xp.full(out.shape, xp.inf), cache)


def test_pair_takes_whole_numbers_and_names_the_argument():
    """The one ``pair`` of the layers and the RoI ops: ints, pairs, whole floats (a row of an image-size
    array); a fraction or a string is an error, not a silent truncation."""
    assert pair(7, "k") == (7, 7) and pair((3, 2), "k") == (3, 2) and pair(np.array([64.0, 48.0]), "k") == (64, 48)
    assert pair(np.int64(2), "k") == (2, 2) and pair(0, "padding", minimum=0) == (0, 0)
    for bad in (1.5, (1.5, 1), "7", (600, np.nan), (1, 2, 3), None):
        with pytest.raises(ValueError, match="k: expected an int or a pair of ints"):
            pair(bad, "k")
    with pytest.raises(ValueError, match=r"k: expected sizes >= 1, got \(2, 0\)"):
        pair((2, 0), "k")


def test_caches_name_their_parts(xp, rng):
    x, wt = normal(rng, (2, 3, 5, 4), xp), normal(rng, (2, 3, 3, 3), xp)
    out, cache = F.conv2d(x, wt, None, stride=2, padding=1)
    assert cache.out_shape == out.shape and cache.stride == (2, 2) and cache.padding == (1, 1)
    assert not cache.has_bias and not cache.pointwise and cache.cols.shape == (3 * 3 * 3, 2 * 3 * 2)
    out, cache = F.conv_transpose2d(x, normal(rng, (3, 2, 2, 2), xp), None, stride=2)
    assert cache.out_shape == out.shape == (2, 2, 10, 8) and cache.x is x


def test_conv_layers_take_lists_and_float32_by_default(xp):
    """Python lists (and integer arrays) become float32, like the rest of the library."""
    out, _ = F.conv2d([[[[1, 2], [3, 4]]]], xp.ones((1, 1, 2, 2), dtype=xp.float32))
    assert out.dtype == np.float32 and float(out[0, 0, 0, 0]) == 10.0
    assert backend.get_array_module(out) is xp  # the list went to the weights' device
    out, _ = F.linear([[1, 2]], xp.ones((3, 2), dtype=xp.float32))
    assert backend.get_array_module(out) is xp and backend.to_host(out).tolist() == [[3.0, 3.0, 3.0]]


def test_arrays_on_two_backends_are_an_error_not_a_silent_copy():
    """A NumPy input with CuPy weights (or the reverse) says which argument is on the wrong device."""
    if not backend.gpu_available():
        pytest.skip("needs CuPy and a CUDA GPU")
    cupy = backend._import_cupy()
    with pytest.raises(TypeError, match="w: a cupy array, but the input is a numpy array"):
        F.conv2d(np.ones((1, 1, 3, 3), dtype=np.float32), cupy.ones((1, 1, 2, 2), dtype=cupy.float32))
    with pytest.raises(TypeError, match="b: a numpy array, but the input is a cupy array"):
        F.linear(cupy.ones((2, 3), dtype=cupy.float32), cupy.ones((4, 3), dtype=cupy.float32),
                 np.zeros(4, dtype=np.float32))


def test_partial_arguments_gradcheck(xp, rng):
    """The gradient with respect to the input alone, with stride and padding bound by functools.partial."""
    wt = normal(rng, (2, 2, 2, 3), xp)
    conv = functools.partial(F.conv2d, w=wt, b=None, stride=(2, 1), padding=(0, 1))
    cache = {}

    def forward(x):
        out, cache["c"] = conv(x)
        return out

    check_gradients(forward, lambda dout: F.conv2d_backward(dout, cache["c"])[0], [normal(rng, (1, 2, 5, 4), xp)])
