"""Lesson 06 exercises: layers with a hand-written backward pass, from the fully connected layer to the
convolution as im2col + one matrix product (lecture stage 6).

Work in your copy, ``lessons/06_layers/exercise_work.py``: ``mrcnn-edu lessons start`` makes it from this file
and never overwrites it, and git ignores it. Replace each ``raise NotImplementedError`` in task order, then
grade your copy:

    mrcnn-edu lessons check 06                  a table: passed / failed / not yet written, and a score
    pytest lessons/06_layers --impl exercise    the tests themselves, each failure expected against got

The signatures and docstrings are the library's, ``mrcnn_edu/nn/functional.py`` and ``mrcnn_edu/nn/conv.py``,
whose functions are the reference solutions: try first, read them after. Every forward returns
``(out, cache)``: the cache is yours, hold in it whatever your backward needs, in any layout you like (the
tests always hand your backward the cache of *your* forward). The tests hand ``im2col`` and
``col2im`` ``kernel_size``, ``stride`` and ``padding`` as pairs ``(vertical, horizontal)`` (the library's
take ints too); ``conv2d`` takes an int or a pair, and ``size_pair`` (imported below) turns either into a
pair (``size_pair(padding, "padding", minimum=0)`` for a padding, which may be 0). ``conv_output_size`` gives OH and OW.
A loop over the kh x kw kernel offsets is the intended design; write a loop over output pixels first if it
helps you think, then replace it. There is no need to validate the inputs. The hints are in README.md.
"""
import numpy as np  # noqa: F401

from mrcnn_edu.nn.conv import conv_output_size, size_pair  # noqa: F401


# --- Task 1: linear -------------------------------------------------------------------------------

def linear(x, w, b=None):
    """``out = x @ w.T + b``, returns ``(out, cache)``.

    x : N x D_in (or ... x D_in: leading axes are kept); w : D_out x D_in, as PyTorch; b : D_out or None.
    out : N x D_out.
    """
    raise NotImplementedError("linear (task 1) is not written yet")


# --- Task 2: linear_backward ----------------------------------------------------------------------

def linear_backward(dout, cache):
    """Gradients of ``linear``: ``(dx, dw, db)`` (``db`` None without bias); dout : N x D_out."""
    raise NotImplementedError("linear_backward (task 2) is not written yet")


# --- Task 3: im2col -------------------------------------------------------------------------------

def im2col(x, kernel_size, stride, padding):
    """The windows of ``x`` as columns: ``N x C x H x W`` -> ``N x (C kh kw) x (OH OW)``.

    kernel_size, stride, padding : an int or a pair ``(vertical, horizontal)`` each.
    Row ``(c, i, j)`` of image n's matrix holds ``x_padded[n, c, i + sh * oy, j + sw * ox]`` for every output
    pixel ``(oy, ox)``: the input that kernel tap ``(c, i, j)`` sees.
    (``conv2d`` keeps the same numbers with all images side by side, ``(C kh kw) x (N OH OW)``, so that
    one GEMM serves the whole batch; this is that array seen image by image.)
    """
    raise NotImplementedError("im2col (task 3) is not written yet")


# --- Task 4: col2im -------------------------------------------------------------------------------

def col2im(cols, x_shape, kernel_size, stride, padding):
    """The adjoint of ``im2col``: ``N x (C kh kw) x (OH OW)`` -> ``N x C x H x W``.

    x_shape : ``(N, C, H, W)``, the shape of the input that ``im2col`` read; the sizes as in ``im2col``.
    Every column entry is added back to the input pixel it was copied from; pixels that several windows
    share (stride < kernel) receive the sum. For ``im2col``'s output this is *not* an inverse: it is the
    transpose, which is exactly what backpropagation needs.
    """
    raise NotImplementedError("col2im (task 4) is not written yet")


# --- Task 5: conv2d -------------------------------------------------------------------------------

def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation, as in PyTorch), returns ``(out, cache)``.

    x : N x C_in x H x W float array; w : C_out x C_in x kh x kw (kh != kw allowed); b : C_out or None;
    stride, padding : an int or a pair ``(vertical, horizontal)``; zero padding.
    out : N x C_out x OH x OW with ``OH = (H + 2 ph - kh) // sh + 1``, the dtype of ``x``.
    """
    raise NotImplementedError("conv2d (task 5) is not written yet")


# --- Task 6: conv2d_backward ----------------------------------------------------------------------

def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of ``conv2d``: ``(dx, dw, db)`` with the shapes of ``x``, ``w``, ``b`` (``db`` None without bias).

    dout : N x C_out x OH x OW, the gradient of the loss with respect to ``conv2d``'s output.
    need_dx : False skips ``dx`` (returned as None): the first layer's input is the image, which needs
    no gradient, and ``dx`` (a GEMM and col2im) is about half of the backward's work.
    """
    raise NotImplementedError("conv2d_backward (task 6) is not written yet")
