"""Lesson 06, graded: the linear layer, im2col and col2im, the convolution, forward and backward (lecture stage 6).

``impl`` is the module under test (``--impl reference|exercise|stub``, see ``lessons/conftest.py``); the
library, ``mrcnn_edu.nn``, gives the expected values on small random inputs, and every backward is also
checked against central finite differences of the library's forward. A cache is private to its layer, so a
backward test always gets its cache from *your* forward (``impl.linear``, ``impl.conv2d``) on the same
inputs, never from the library's: a backward task therefore also needs its forward task written. Each test
belongs to the task in its name.
"""
import numpy as np
import pytest
from _grading import expect_close, expect_gradient, expect_true

from mrcnn_edu.nn import functional as lib

TASKS = {1: "linear", 2: "linear_backward", 3: "im2col", 4: "col2im", 5: "conv2d", 6: "conv2d_backward"}

# The worked example of README.md: one image, one channel, a 3 x 3 input and a 2 x 2 kernel.
X33 = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)          # 1 2 3 / 4 5 6 / 7 8 9
W22 = np.array([[[[1.0, 0.0], [2.0, -1.0]]]])            # C_out = C_in = 1, kernel 1 0 / 2 -1
B1 = np.array([1.0])

# (H, W, kernel_size, stride, padding) of the im2col / col2im / conv tests: non-square kernels, odd sizes,
# strides that do not divide the padded size (the windows stop short of the border), 1 x 1 kernels
GEOMETRIES = [
    (5, 6, (3, 3), (1, 1), (1, 1)),
    (7, 6, (3, 2), (2, 1), (1, 0)),
    (6, 7, (2, 3), (3, 2), (0, 2)),
    (5, 5, (1, 1), (2, 2), (0, 0)),
    (4, 5, (1, 2), (1, 1), (0, 1)),
]
GEOMETRY_IDS = [f"{h}x{w}-k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{p[0]}{p[1]}" for h, w, k, s, p in GEOMETRIES]


def geometry(h, w, kernel_size, stride, padding):
    return f"a 2 x 3 x {h} x {w} input, kernel {kernel_size}, stride {stride}, padding {padding}"


def conv_case(seed, h, w, kernel_size, c_in=3, c_out=2, n=2, bias=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w))
    weight = rng.standard_normal((c_out, c_in) + tuple(kernel_size))
    b = rng.standard_normal(c_out) if bias else None
    return x, weight, b


def expect_none(value, case):
    __tracebackhide__ = True
    expect_true(value is None, case, f"expected None, got {type(value).__name__}")


# ------------------------------------------------------------------------------------------- task 1: linear

def test_task1_by_hand(impl):
    x = np.array([[1.0, 2.0, 3.0]])
    w = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    out, _ = impl.linear(x, w, np.array([0.5, -1.0]))
    expect_close(out, [[1 - 3 + 0.5, 2 + 2 - 1]], "linear of x = (1, 2, 3), w = (1 0 -1 / 2 1 0), b = (0.5, -1): "
                                                  "out = x @ w.T + b")


@pytest.mark.parametrize("x_shape, bias", [((4, 5), True), ((4, 5), False), ((2, 3, 5), True)])
def test_task1_random(impl, x_shape, bias):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(x_shape), rng.standard_normal((3, 5))
    b = rng.standard_normal(3) if bias else None
    case = f"linear of a {' x '.join(map(str, x_shape))} x, w 3 x 5, " + ("with a bias" if bias else "b = None")
    expect_close(impl.linear(x, w, b)[0], lib.linear(x, w, b)[0], case)


def test_task1_keeps_float32(impl):
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((4, 5), (3, 5), (3,)))
    out, _ = impl.linear(x, w, b)
    expect_close(out, lib.linear(x, w, b)[0], "linear of float32 inputs", rtol=1e-5, atol=1e-6)
    expect_true(np.asarray(out).dtype == np.float32, "linear of float32 inputs keeps float32",
                f"got dtype {np.asarray(out).dtype}")


# ---------------------------------------------------------------------------------- task 2: linear_backward

def test_task2_by_hand(impl):
    x = np.array([[1.0, 2.0, 3.0]])
    w = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    _, cache = impl.linear(x, w, np.array([0.5, -1.0]))
    dx, dw, db = impl.linear_backward(np.array([[1.0, -1.0]]), cache)
    case = "linear_backward of dout = (1, -1) for the by-hand linear of task 1"
    expect_close(dx, [[-1.0, -1.0, -1.0]], case + ": dx = dout @ w")
    expect_close(dw, [[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]], case + ": dw = dout.T @ x")
    expect_close(db, [1.0, -1.0], case + ": db = dout summed over the rows")


@pytest.mark.parametrize("x_shape", [(4, 5), (2, 3, 5)])
def test_task2_random(impl, x_shape):
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal((3, 5)), rng.standard_normal(3)
    dout = rng.standard_normal(x_shape[:-1] + (3,))
    got = impl.linear_backward(dout, impl.linear(x, w, b)[1])
    want = lib.linear_backward(dout, lib.linear(x, w, b)[1])
    case = f"linear_backward of a {' x '.join(map(str, x_shape))} x, w 3 x 5, with a bias"
    for name, g, e in zip(("dx", "dw", "db"), got, want):
        expect_close(g, e, f"{case}: {name}" + (" (summed over every leading axis)" if name != "dx" else ""))


def test_task2_without_bias(impl):
    rng = np.random.default_rng(4)
    x, w, dout = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal((4, 3))
    dx, dw, db = impl.linear_backward(dout, impl.linear(x, w, None)[1])
    want = lib.linear_backward(dout, lib.linear(x, w, None)[1])
    expect_close(dx, want[0], "linear_backward without a bias: dx")
    expect_close(dw, want[1], "linear_backward without a bias: dw")
    expect_none(db, "linear_backward without a bias returns db = None")


def test_task2_matches_finite_differences(impl):
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2)
    dout = rng.standard_normal((3, 2))
    dx, dw, db = impl.linear_backward(dout, impl.linear(x, w, b)[1])
    case = "linear_backward against finite differences of linear, x 3 x 4, w 2 x 4"
    expect_gradient(dx, lambda v: lib.linear(v, w, b)[0], x, case + ": dx", dout=dout)
    expect_gradient(dw, lambda v: lib.linear(x, v, b)[0], w, case + ": dw", dout=dout)
    expect_gradient(db, lambda v: lib.linear(x, w, v)[0], b, case + ": db", dout=dout)


# ------------------------------------------------------------------------------------------- task 3: im2col

def test_task3_by_hand(impl):
    cols = impl.im2col(X33, (2, 2), (1, 1), (0, 0))
    expect_close(cols, [[[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]]],
                 "im2col of the 3 x 3 input 1..9, 2 x 2 kernel, stride 1, no padding: row (i, j) = what tap "
                 "(i, j) sees at the 4 output pixels")


def test_task3_padding_by_hand(impl):
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    cols = impl.im2col(x, (2, 2), (1, 1), (1, 1))
    expect_close(np.asarray(cols)[0, 0], [0, 0, 0, 0, 1, 2, 0, 3, 4],
                 "im2col of the 2 x 2 input 1 2 / 3 4, 2 x 2 kernel, padding 1: row (0, 0), the top-left tap "
                 "at the 3 x 3 output pixels (zeros where it sees the padding)")


@pytest.mark.parametrize("h, w, kernel_size, stride, padding", GEOMETRIES, ids=GEOMETRY_IDS)
def test_task3_random(impl, h, w, kernel_size, stride, padding):
    x = np.random.default_rng(6).standard_normal((2, 3, h, w))
    expect_close(impl.im2col(x, kernel_size, stride, padding), lib.im2col(x, kernel_size, stride, padding),
                 "im2col of " + geometry(h, w, kernel_size, stride, padding) + ": N x (C kh kw) x (OH OW), "
                 "rows in (c, i, j) order, columns in (oy, ox) order")


# ------------------------------------------------------------------------------------------- task 4: col2im

def test_task4_by_hand(impl):
    counts = impl.col2im(np.ones((1, 4, 4)), (1, 1, 3, 3), (2, 2), (1, 1), (0, 0))
    expect_close(counts, [[[[1, 2, 1], [2, 4, 2], [1, 2, 1]]]],
                 "col2im of ones (3 x 3 input, 2 x 2 kernel, stride 1): each pixel counts the windows that see it")


@pytest.mark.parametrize("h, w, kernel_size, stride, padding", GEOMETRIES, ids=GEOMETRY_IDS)
def test_task4_random(impl, h, w, kernel_size, stride, padding):
    x_shape = (2, 3, h, w)
    cols_shape = lib.im2col(np.zeros(x_shape), kernel_size, stride, padding).shape
    cols = np.random.default_rng(7).standard_normal(cols_shape)
    expect_close(impl.col2im(cols, x_shape, kernel_size, stride, padding),
                 lib.col2im(cols, x_shape, kernel_size, stride, padding),
                 "col2im of random columns, " + geometry(h, w, kernel_size, stride, padding))


def test_task4_is_the_adjoint_of_im2col(impl):
    rng = np.random.default_rng(8)
    x_shape, kernel_size, stride, padding = (2, 2, 6, 5), (3, 2), (2, 1), (1, 1)
    x = rng.standard_normal(x_shape)
    cols = rng.standard_normal(lib.im2col(x, kernel_size, stride, padding).shape)
    left = float(np.sum(lib.im2col(x, kernel_size, stride, padding) * cols))
    right = float(np.sum(x * np.asarray(impl.col2im(cols, x_shape, kernel_size, stride, padding))))
    expect_close(right, left, "sum(x * col2im(c)) against sum(im2col(x) * c) for random x and c "
                              "(the adjoint: col2im is im2col's transpose)")


# ------------------------------------------------------------------------------------------- task 5: conv2d

def test_task5_by_hand(impl):
    out, _ = impl.conv2d(X33, W22, B1)
    expect_close(out, [[[[5.0, 7.0], [11.0, 13.0]]]],
                 "conv2d of the 3 x 3 input 1..9 with the kernel 1 0 / 2 -1 and bias 1: "
                 "out[y, x] = x[y, x] + 2 x[y+1, x] - x[y+1, x+1] + 1", inputs=dict(x=X33, w=W22, b=B1))


@pytest.mark.parametrize("h, w, kernel_size, stride, padding", GEOMETRIES, ids=GEOMETRY_IDS)
def test_task5_random(impl, h, w, kernel_size, stride, padding):
    x, weight, b = conv_case(9, h, w, kernel_size)
    got, _ = impl.conv2d(x, weight, b, stride, padding)
    expect_close(got, lib.conv2d(x, weight, b, stride, padding)[0],
                 "conv2d of " + geometry(h, w, kernel_size, stride, padding) + ", 2 output channels, with a bias",
                 inputs=dict(x=x, w=weight, b=b, stride=stride, padding=padding))


def test_task5_ints_no_bias_float32(impl):
    x, weight, _ = conv_case(10, 6, 5, (3, 3))
    got, _ = impl.conv2d(x, weight, None, 2, 1)
    expect_close(got, lib.conv2d(x, weight, None, 2, 1)[0],
                 "conv2d with stride=2, padding=1 given as ints, b = None")
    x32, w32 = x.astype(np.float32), weight.astype(np.float32)
    out, _ = impl.conv2d(x32, w32, None, 1, 1)
    expect_close(out, lib.conv2d(x32, w32, None, 1, 1)[0], "conv2d of float32 inputs", rtol=1e-5, atol=1e-5)
    expect_true(np.asarray(out).dtype == np.float32, "conv2d of float32 inputs keeps float32",
                f"got dtype {np.asarray(out).dtype}")


# ---------------------------------------------------------------------------------- task 6: conv2d_backward

def test_task6_by_hand(impl):
    out, cache = impl.conv2d(X33, W22, B1)
    dout = np.ones((1, 1, 2, 2))
    dx, dw, db = impl.conv2d_backward(dout, cache)
    case = "conv2d_backward of dout = ones for the by-hand conv2d of task 5"
    inputs = dict(x=X33, w=W22, b=B1, dout=dout)   # the cache comes from conv2d(x, w, b)
    expect_close(db, [4.0], case + ": db, the sum of dout", inputs=inputs)
    expect_close(dw, [[[[12.0, 16.0], [24.0, 28.0]]]], case + ": dw[i, j], the sum of what tap (i, j) saw",
                 inputs=inputs)
    expect_close(dx, [[[[1.0, 1.0, 0.0], [3.0, 2.0, -1.0], [2.0, 1.0, -1.0]]]],
                 case + ": dx[y, x], the sum of the kernel taps that touched pixel (y, x)", inputs=inputs)


@pytest.mark.parametrize("h, w, kernel_size, stride, padding", GEOMETRIES, ids=GEOMETRY_IDS)
def test_task6_random(impl, h, w, kernel_size, stride, padding):
    x, weight, b = conv_case(11, h, w, kernel_size)
    _, cache = impl.conv2d(x, weight, b, stride, padding)
    lib_out, lib_cache = lib.conv2d(x, weight, b, stride, padding)
    dout = np.random.default_rng(12).standard_normal(lib_out.shape)
    got, want = impl.conv2d_backward(dout, cache), lib.conv2d_backward(dout, lib_cache)
    case = "conv2d_backward of " + geometry(h, w, kernel_size, stride, padding) + ", random dout"
    inputs = dict(x=x, w=weight, b=b, stride=stride, padding=padding, dout=dout)   # the cache: conv2d(x, w, ...)
    for name, g, e in zip(("dx", "dw", "db"), got, want):
        expect_close(g, e, f"{case}: {name}", inputs=inputs)


def test_task6_matches_finite_differences(impl):
    x, weight, b = conv_case(13, 5, 4, (3, 2), c_in=2, c_out=3)
    stride, padding = (2, 1), (1, 0)
    out, cache = impl.conv2d(x, weight, b, stride, padding)
    dout = np.random.default_rng(14).standard_normal(np.asarray(out).shape)
    dx, dw, db = impl.conv2d_backward(dout, cache)
    case = "conv2d_backward against finite differences of conv2d, x 2 x 2 x 5 x 4, w 3 x 2 x 3 x 2, stride (2, 1)"
    expect_gradient(dx, lambda v: lib.conv2d(v, weight, b, stride, padding)[0], x, case + ": dx", dout=dout,
                    inputs=dict(x=x, w=weight, b=b, stride=stride, padding=padding, dout=dout))
    expect_gradient(dw, lambda v: lib.conv2d(x, v, b, stride, padding)[0], weight, case + ": dw", dout=dout)
    expect_gradient(db, lambda v: lib.conv2d(x, weight, v, stride, padding)[0], b, case + ": db", dout=dout)


def test_task6_need_dx_and_no_bias(impl):
    x, weight, _ = conv_case(15, 5, 6, (2, 3))
    _, cache = impl.conv2d(x, weight, None, 1, (1, 0))
    lib_out, lib_cache = lib.conv2d(x, weight, None, 1, (1, 0))
    dout = np.random.default_rng(16).standard_normal(lib_out.shape)
    want = lib.conv2d_backward(dout, lib_cache)
    dx, dw, db = impl.conv2d_backward(dout, cache, need_dx=False)
    expect_none(dx, "conv2d_backward with need_dx=False returns dx = None")
    expect_close(dw, want[1], "conv2d_backward with need_dx=False, no bias: dw")
    expect_none(db, "conv2d_backward of a conv2d without bias returns db = None")
    dx, _, _ = impl.conv2d_backward(dout, cache)
    expect_close(dx, want[0], "conv2d_backward of the same conv2d with need_dx=True: dx")
