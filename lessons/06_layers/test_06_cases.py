"""Lesson 06, graded: more shapes of the convolution, the ones where shortcuts go wrong.

1 x 1 kernels (with and without padding, with a stride that differs per axis), 2 x 1 and 1 x 2 kernels,
padding as large as the kernel, a kernel larger than the input, and float32 kept by col2im and by the
backward. The library gives the expected values; a backward's cache comes from *your* forward, as in
``test_06_layers.py``. ``tools/mutate_lessons.py`` checks that a small mistake planted in the library fails
some test here or there.
"""
import numpy as np
import pytest
from _grading import expect_close, expect_equal

from mrcnn_edu.nn import functional as lib
from mrcnn_edu.nn.conv import conv_output_size

TASKS = {1: "linear", 2: "linear_backward", 3: "im2col", 4: "col2im", 5: "conv2d", 6: "conv2d_backward"}

# (H, W, kernel_size, stride, padding)
MORE_GEOMETRIES = [
    (4, 4, (1, 1), (1, 1), (0, 0)),    # 1 x 1, stride 1: the columns are the input itself
    (4, 5, (1, 1), (1, 1), (1, 1)),    # 1 x 1 with padding: the border outputs are the bias alone
    (4, 5, (1, 1), (1, 1), (1, 0)),    # 1 x 1, padding only above and below
    (4, 5, (1, 1), (2, 1), (0, 1)),    # 1 x 1, padding only left and right, a stride down
    (5, 6, (1, 1), (2, 1), (0, 0)),    # 1 x 1, a stride only down
    (5, 6, (1, 1), (1, 2), (0, 0)),    # 1 x 1, a stride only across
    (5, 4, (2, 1), (1, 1), (0, 0)),    # 2 x 1, no padding
    (4, 5, (1, 2), (1, 1), (0, 0)),    # 1 x 2, no padding
    (3, 4, (1, 3), (1, 1), (1, 0)),    # padding as tall as the kernel
    (4, 3, (3, 1), (1, 1), (0, 1)),    # padding as wide as the kernel
    (5, 6, (3, 2), (1, 2), (1, 1)),    # a stride only across, 3 x 2
    (3, 3, (5, 5), (1, 1), (2, 2)),    # a kernel larger than the input, padding 2
]
IDS = [f"{h}x{w}-k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{p[0]}{p[1]}" for h, w, k, s, p in MORE_GEOMETRIES]


def case_of(h, w, kernel_size, stride, padding):
    return f"a 2 x 2 x {h} x {w} input, kernel {kernel_size}, stride {stride}, padding {padding}"


def inputs_of(seed, h, w, kernel_size, c_in=2, c_out=3, n=2):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, c_in, h, w)), rng.standard_normal((c_out, c_in) + tuple(kernel_size)),
            rng.standard_normal(c_out))


# ------------------------------------------------------------------------------------------ task 3: im2col

@pytest.mark.parametrize("h, w, kernel_size, stride, padding", MORE_GEOMETRIES, ids=IDS)
def test_task3_more_geometries(impl, h, w, kernel_size, stride, padding):
    x, _, _ = inputs_of(1, h, w, kernel_size)
    expect_close(impl.im2col(x, kernel_size, stride, padding), lib.im2col(x, kernel_size, stride, padding),
                 "im2col of " + case_of(h, w, kernel_size, stride, padding),
                 inputs=dict(x=x, kernel_size=kernel_size, stride=stride, padding=padding))


# ------------------------------------------------------------------------------------------ task 4: col2im

@pytest.mark.parametrize("h, w, kernel_size, stride, padding", MORE_GEOMETRIES, ids=IDS)
def test_task4_more_geometries(impl, h, w, kernel_size, stride, padding):
    oh, ow = conv_output_size(h, kernel_size[0], stride[0], padding[0]), conv_output_size(w, kernel_size[1],
                                                                                           stride[1], padding[1])
    cols = np.random.default_rng(2).standard_normal((2, 2 * kernel_size[0] * kernel_size[1], oh * ow))
    x_shape = (2, 2, h, w)
    expect_close(impl.col2im(cols, x_shape, kernel_size, stride, padding),
                 lib.col2im(cols, x_shape, kernel_size, stride, padding),
                 "col2im to " + case_of(h, w, kernel_size, stride, padding),
                 inputs=dict(cols=cols, x_shape=x_shape, kernel_size=kernel_size, stride=stride, padding=padding))


def test_task4_float32_stays_float32(impl):
    cols = np.ones((1, 4, 4), dtype=np.float32)
    got = impl.col2im(cols, (1, 1, 3, 3), (2, 2), (1, 1), (0, 0))
    expect_equal(str(np.asarray(got).dtype), "float32", "col2im of float32 columns: float32",
                 inputs=dict(cols=cols, x_shape=(1, 1, 3, 3), kernel_size=(2, 2), stride=(1, 1), padding=(0, 0)))


# ------------------------------------------------------------------------------------------ task 5: conv2d

@pytest.mark.parametrize("h, w, kernel_size, stride, padding", MORE_GEOMETRIES, ids=IDS)
def test_task5_more_geometries(impl, h, w, kernel_size, stride, padding):
    x, weight, b = inputs_of(3, h, w, kernel_size)
    got, _ = impl.conv2d(x, weight, b, stride, padding)
    expect_close(got, lib.conv2d(x, weight, b, stride, padding)[0],
                 "conv2d of " + case_of(h, w, kernel_size, stride, padding) + ", 3 output channels, with a bias",
                 inputs=dict(x=x, w=weight, b=b, stride=stride, padding=padding))


# --------------------------------------------------------------------------------- task 6: conv2d_backward

@pytest.mark.parametrize("h, w, kernel_size, stride, padding", MORE_GEOMETRIES, ids=IDS)
def test_task6_more_geometries(impl, h, w, kernel_size, stride, padding):
    x, weight, b = inputs_of(4, h, w, kernel_size)
    _, cache = impl.conv2d(x, weight, b, stride, padding)
    lib_out, lib_cache = lib.conv2d(x, weight, b, stride, padding)
    dout = np.random.default_rng(5).standard_normal(lib_out.shape)
    got, want = impl.conv2d_backward(dout, cache), lib.conv2d_backward(dout, lib_cache)
    inputs = dict(x=x, w=weight, b=b, stride=stride, padding=padding, dout=dout)   # the cache: conv2d(x, w, ...)
    for name, g, e in zip(("dx", "dw", "db"), got, want):
        expect_close(g, e, "conv2d_backward of " + case_of(h, w, kernel_size, stride, padding) + f": {name}",
                     inputs=inputs)


def test_task6_float32_stays_float32(impl):
    for kernel_size, stride in [((1, 1), (2, 2)), ((3, 3), (1, 1)), ((2, 3), (2, 1))]:
        x, weight, b = (a.astype(np.float32) for a in inputs_of(6, 5, 6, kernel_size))
        out, cache = impl.conv2d(x, weight, b, stride, 0)
        dout = np.ones(np.asarray(out).shape, dtype=np.float32)
        grads = impl.conv2d_backward(dout, cache)
        expect_equal([str(np.asarray(g).dtype) for g in grads], ["float32"] * 3,
                     f"conv2d_backward of float32 inputs, kernel {kernel_size}, stride {stride}: (dx, dw, db) dtypes",
                     inputs=dict(x=x, w=weight, b=b, stride=stride, padding=0, dout=dout))
