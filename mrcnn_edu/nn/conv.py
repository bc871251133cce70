"""Stage 6 of the lecture: convolution as one matrix product (im2col + GEMM), forward and backward side by side.

Used by the backbone ("Network architecture: Backbone - ResNet / FPN"), the RPN head and the mask head, a
small fully convolutional network ("Mask Head on Faster R-CNN", "Fully Convolutional Networks") whose
2 x 2 stride-2 transposed convolution doubles the mask resolution.

Shapes (N images, C / C_in input channels, C_out output channels, H x W input, OH x OW output,
kh x kw kernel, sh, sw strides, ph, pw paddings):

    x    N x C_in x H x W            w    C_out x C_in x kh x kw  (conv2d, as PyTorch)
    out  N x C_out x OH x OW         w    C_in x C_out x kh x kw  (conv_transpose2d, as PyTorch)
    b    C_out, or None              OH = (H + 2 ph - kh) // sh + 1   (conv2d)

The idea (CS231n, DeZero): gather every kh x kw window of the padded input into a column, so that the
convolution becomes one matrix product ``W (C_out x C_in kh kw) @ cols (C_in kh kw x N OH OW)``; a BLAS GEMM
runs that product close to the machine's peak. ``im2col`` pads once and copies one strided *view* of the
padded input: its six axes ``(c, i, j, n, oy, ox)`` reach ``x_padded[n, c, i + sh oy, j + sw ox]`` by strides
alone, so there are no index arrays and no Python loop at all (DeZero loops over the kh x kw kernel offsets,
one strided slice each, which gives the same columns). ``col2im`` is its adjoint: it scatters the columns
back with ``+=``, one strided slice per kernel offset (windows that overlap must add up, which a view cannot
do), and the backward pass is three products:

    dW    = dout @ cols^T                  (C_out x C_in kh kw)
    dcols = W^T @ dout                     (C_in kh kw x N OH OW), then dx = col2im(dcols)
    db    = sum of dout over images and pixels

with dout as ``C_out x (N OH OW)``. At stride 1, dx is itself a convolution (dout, padded by ``k - 1 - p``,
correlated with the kernel flipped in space and with its channel axes swapped), so it is computed the
same way as the forward: gathering (im2col) is cheaper than scattering (col2im's ``+=`` passes).

Layout (the choices ``benchmarks/layers.py`` measures; ``benchmarks/RESULTS.md`` has the numbers): the
columns keep all images side by side, channel-major, ``(C_in kh kw) x (N OH OW)``, so each product is one
large GEMM for the whole batch rather than N small ones. It costs one transpose of x (inside the padding
copy) and of the output and of dout, each the size of one map, not of the columns. ``im2col`` and
``col2im`` show the same numbers image by image, ``N x (C_in kh kw) x (OH OW)``, as the lecture draws
them. A 1 x 1 convolution without padding needs no columns: they are the input itself, one GEMM per image.

``conv_transpose2d`` is the adjoint of ``conv2d`` with respect to its input: its forward is conv2d's
``dx`` computation (a GEMM, then col2im) and its backward is conv2d's forward (im2col, then a GEMM).
All functions follow the array module of their inputs (NumPy or CuPy) and keep the input's float dtype.
Each public function checks its arguments once (``mrcnn_edu._validate``) and then calls a private core of
the same name (``conv2d`` -> ``_conv2d``) that holds only the maths; the caches are named tuples.
"""
from __future__ import annotations

from typing import NamedTuple

from .. import backend
from .._validate import check_dout, check_param, float_input, nchw_shape, pair

__all__ = ["conv_output_size", "conv_transpose_output_size", "im2col", "col2im", "conv2d", "conv2d_backward",
           "conv_transpose2d", "conv_transpose2d_backward"]

size_pair = pair  # lesson 06's name for it (its stubs import it from here)


# ----------------------------------------------------------------------------------------------------
# im2col and its adjoint col2im
# ----------------------------------------------------------------------------------------------------

def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis: ``(size + 2 padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _padded_channel_major(x, ph, pw):
    """``x`` (C x N x H x W, any strides) as a zero-padded ``C x N x (H + 2 ph) x (W + 2 pw)`` array (one copy;
    without padding, ``x`` itself: the windows are a view of any strides)."""
    if (ph, pw) == (0, 0):
        return x
    xp = backend.get_array_module(x)
    c, n, h, w = x.shape
    padded = xp.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    return padded


def _windows(x, kernel_size, stride, padding):
    """The columns of ``x`` (N x C x H x W) in the layout the GEMMs use: ``(C kh kw) x (N OH OW)``."""
    return _windows_cm(x.transpose(1, 0, 2, 3), kernel_size, stride, padding)


def _windows_cm(x, kernel_size, stride, padding):
    """The columns of ``x`` given channel-major (``C x N x H x W``, any strides): ``(C kh kw) x (N OH OW)``,
    all images side by side.

    Row ``(c, i, j)``, column ``(n, oy, ox)`` holds ``x_padded[n, c, i + sh * oy, j + sw * ox]``. The six axes
    ``(c, i, j, n, oy, ox)`` are a strided *view* of the padded input (no copy: moving one step along ``i``
    or ``oy`` moves down image rows alike), and one copy of that view makes the columns: one kernel on
    the GPU, and on the CPU as fast as a copy per kernel offset. A kernel 3 wide at stride 1, padded by 1
    across, takes ``_windows_in_runs``: the same columns, copied in longer runs.
    """
    xp = backend.get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    c, n, h, w = x.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    if (sh, sw) == (1, 1) and (kw, pw) == (3, 1):
        return _windows_in_runs(x, kh, ph, oh)
    padded = _padded_channel_major(x, ph, pw)
    s_c, s_n, s_y, s_x = padded.strides
    windows = xp.lib.stride_tricks.as_strided(padded, shape=(c, kh, kw, n, oh, ow),
                                              strides=(s_c, s_y, s_x, s_n, sh * s_y, sw * s_x))
    return xp.ascontiguousarray(windows).reshape(c * kh * kw, n * oh * ow)


def _windows_in_runs(x, kh, ph, oh):
    """``_windows_cm`` of a kernel 3 wide at stride 1, padded by 1 across (every 3 x 3 conv of the model but
    the stride-2 ones), made with long copies: the same columns, to the bit.

    The output rows are then as wide as the input's (OW = W). Each image channel is laid out flat, with ``ph``
    zero rows above and below and one zero before and after; window row ``(c, i, j, n)`` is then one run of
    ``OH x W`` floats of it, starting at ``i W + j``. The general view reads in runs of OW floats, which NumPy
    copies several times slower. Crossing the end of a row, the left tap (j = 0) of output column 0 reads the
    previous row's last pixel and the right tap (j = 2) of column W - 1 the next row's first, where the
    padding holds zeros: a view of just those entries puts the zeros back.
    """
    xp = backend.get_array_module(x)
    c, n, h, w = x.shape
    flat = xp.zeros((c, n, (h + 2 * ph) * w + 2), dtype=x.dtype)
    flat[:, :, 1 + ph * w:1 + (ph + h) * w] = x.reshape(c, n, h * w)
    s_c, s_n, s = flat.strides
    runs = xp.lib.stride_tricks.as_strided(flat, shape=(c, kh, 3, n, oh * w), strides=(s_c, w * s, s, s_n, s))
    cols = xp.ascontiguousarray(runs)                                   # (c, i, j, n, oy * W + ox)
    s_c, s_i, s_j, s_n, s = cols.strides
    # entries (j = 0, ox = 0) and (j = 2, ox = W - 1) of every (c, i, n, oy): 2 s_j + (W - 1) s apart
    wrapped = xp.lib.stride_tricks.as_strided(cols, shape=(c, kh, 2, n, oh),
                                              strides=(s_c, s_i, 2 * s_j + (w - 1) * s, s_n, w * s))
    xp.copyto(wrapped, 0)
    return cols.reshape(c * kh * 3, n * oh * w)


def _unwindows(cols, x_shape, kernel_size, stride, padding):
    """The adjoint of ``_windows``: ``(C kh kw) x (N OH OW)`` -> ``N x C x H x W`` (C-contiguous)."""
    xp = backend.get_array_module(cols)
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    cols = cols.reshape(c, kh, kw, n, oh, ow)
    if (kh, kw) == (sh, sw) and (ph, pw) == (0, 0) and (h, w) == (kh * oh, kw * ow):
        # windows that tile the image (the mask head's 2 x 2 kernel at stride 2): every pixel lies in exactly
        # one window, so nothing adds up and col2im is a reordering, (c, i, j, n, oy, ox) -> (n, c, oy, i, ox, j).
        # One copy a kernel offset: each reads and writes whole rows of ox (one copy of the whole 6-axis
        # transpose would run along j, two elements at a time, several times slower on the CPU)
        out = xp.empty((n, c, oh, kh, ow, kw), dtype=cols.dtype)
        for i in range(kh):
            for j in range(kw):
                out[:, :, :, i, :, j] = cols[:, i, j].transpose(1, 0, 2, 3)
        return out.reshape(n, c, h, w)
    # the windows may stop short of the padded border when (H + 2 ph - kh) is not a multiple of sh
    padded = xp.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]   # a view: += adds into padded in place
            window += cols[:, i, j]                                      # (padded[...] += would copy it back too)
    return xp.ascontiguousarray(padded[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3))


def _check_windows(x_shape, kernel_size, stride, padding):
    """``(kernel_size, stride, padding)`` as pairs (an int or a pair each), and windows that fit in the padded
    ``N x C x H x W`` input."""
    kernel_size, stride = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    padding = pair(padding, "padding", minimum=0)
    (h, w), (kh, kw) = x_shape[2:], kernel_size
    if conv_output_size(h, kh, stride[0], padding[0]) < 1 or conv_output_size(w, kw, stride[1], padding[1]) < 1:
        raise ValueError(f"x: its {h} x {w} maps, padded by {padding}, are smaller than the {kh} x {kw} kernel")
    return kernel_size, stride, padding


def im2col(x, kernel_size, stride, padding):
    """The windows of ``x`` as columns: ``N x C x H x W`` -> ``N x (C kh kw) x (OH OW)``.

    kernel_size, stride, padding : an int or a pair ``(vertical, horizontal)`` each.
    Row ``(c, i, j)`` of image n's matrix holds ``x_padded[n, c, i + sh * oy, j + sw * ox]`` for every output
    pixel ``(oy, ox)``: the input that kernel tap ``(c, i, j)`` sees.
    (``conv2d`` keeps the same numbers with all images side by side, ``(C kh kw) x (N OH OW)``, so that
    one GEMM serves the whole batch; this is that array seen image by image.)
    """
    x = float_input(x, "x", "N x C x H x W", ndim=4)
    return _im2col(x, *_check_windows(x.shape, kernel_size, stride, padding))


def _im2col(x, kernel_size, stride, padding):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    return _windows(x, kernel_size, stride, padding).reshape(c * kh * kw, n, oh * ow).transpose(1, 0, 2)


def col2im(cols, x_shape, kernel_size, stride, padding):
    """The adjoint of ``im2col``: ``N x (C kh kw) x (OH OW)`` -> ``N x C x H x W``.

    x_shape : ``(N, C, H, W)``, the shape of the input that ``im2col`` read; the sizes as in ``im2col``.
    Every column entry is added back to the input pixel it was copied from; pixels that several windows
    share (stride < kernel) receive the sum. For ``im2col``'s output this is *not* an inverse: it is the
    transpose, which is exactly what backpropagation needs.
    """
    cols = float_input(cols, "cols", "N x (C kh kw) x (OH OW)", ndim=3)
    x_shape = nchw_shape(x_shape, "x_shape", minimum=1)
    kernel_size, stride, padding = _check_windows(x_shape, kernel_size, stride, padding)
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    want = (n, c * kh * kw, conv_output_size(h, kh, sh, ph) * conv_output_size(w, kw, sw, pw))
    if tuple(cols.shape) != want:
        raise ValueError(f"cols: expected shape {want} (what im2col makes of an x of shape {x_shape}), got "
                         f"{tuple(cols.shape)}")
    return _col2im(cols, x_shape, kernel_size, stride, padding)


def _col2im(cols, x_shape, kernel_size, stride, padding):
    n, ckk, l = cols.shape
    return _unwindows(cols.transpose(1, 0, 2).reshape(ckk, n * l), x_shape, kernel_size, stride, padding)


def _is_pointwise(kernel_size, padding):
    return kernel_size == (1, 1) and padding == (0, 0)


def _pointwise_cols(x, stride):
    """The columns of a 1 x 1 convolution: the (strided) input itself, ``N x C x (OH OW)``, no copy at stride 1."""
    if stride != (1, 1):
        x = x[:, :, ::stride[0], ::stride[1]]
    n, c, oh, ow = x.shape
    return x.reshape(n, c, oh * ow)


def _pointwise_dx(dcols, x_shape, stride):
    """The adjoint of ``_pointwise_cols``: ``N x C x (OH OW)`` -> ``N x C x H x W``."""
    xp = backend.get_array_module(dcols)
    n, c, h, w = x_shape
    if stride == (1, 1):
        return dcols.reshape(x_shape)
    dx = xp.zeros(x_shape, dtype=dcols.dtype)
    sub = dx[:, :, ::stride[0], ::stride[1]]
    sub[...] = dcols.reshape(sub.shape)
    return dx


def _to_cols(x, kernel_size, stride, padding):
    """``(cols, pointwise)``: for a 1 x 1 kernel without padding (``pointwise``) the input itself, batched
    ``N x C_in x (OH OW)``, else the ``(C_in kh kw) x (N OH OW)`` columns of ``_windows``."""
    if _is_pointwise(kernel_size, padding):
        return _pointwise_cols(x, stride), True
    return _windows(x, kernel_size, stride, padding), False


def _from_cols(dcols, x_shape, kernel_size, stride, padding):
    if _is_pointwise(kernel_size, padding):
        return _pointwise_dx(dcols, x_shape, stride)
    return _unwindows(dcols, x_shape, kernel_size, stride, padding)


def _images_side_by_side(a):
    """``N x C x H x W`` -> ``C x (N H W)`` (a copy), the layout of the GEMMs' outputs and gradients."""
    n, c, h, w = a.shape
    return backend.get_array_module(a).ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(c, n * h * w)


def _images_first(a, n, h, w):
    """The inverse of ``_images_side_by_side``: ``C x (N H W)`` -> ``N x C x H x W`` (C-contiguous)."""
    c = a.shape[0]
    return backend.get_array_module(a).ascontiguousarray(a.reshape(c, n, h, w).transpose(1, 0, 2, 3))


# ----------------------------------------------------------------------------------------------------
# conv2d
# ----------------------------------------------------------------------------------------------------

class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs from the forward."""
    x_shape: tuple      # N x C_in x H x W
    w: object           # the kernel, C_out x C_in x kh x kw
    has_bias: bool
    cols: object        # im2col(x): (C_in kh kw) x (N OH OW), or x itself, N x C_in x (OH OW), when pointwise
    pointwise: bool     # a 1 x 1 kernel without padding: no columns, one GEMM per image
    stride: tuple       # (sh, sw)
    padding: tuple      # (ph, pw)
    out_shape: tuple    # N x C_out x OH x OW


def _check_conv(x, w, b, stride, padding, transposed):
    """Validated ``(x, w, b, stride, padding)``; w's input-channel axis is 0 when ``transposed``, else 1."""
    x = float_input(x, "x", "N x C x H x W", ndim=4, params=(w, b))
    c = x.shape[1]
    shape = (c, None, None, None) if transposed else (None, c, None, None)
    what = "C_in x C_out x kh x kw" if transposed else "C_out x C_in x kh x kw"
    w = check_param(w, "w", x, shape, f"{what} with C_in = {c} (x's channels)")
    if w.size == 0:
        raise ValueError(f"w: expected a non-empty kernel, got shape {tuple(w.shape)}")
    c_out = w.shape[1] if transposed else w.shape[0]
    b = None if b is None else check_param(b, "b", x, (c_out,), "a bias per output channel (C_out)")
    return x, w, b, pair(stride, "stride"), pair(padding, "padding", minimum=0)


def _check_conv2d(x, w, b, stride, padding):
    """``_check_conv``, and windows that fit in the padded input."""
    x, w, b, stride, padding = _check_conv(x, w, b, stride, padding, transposed=False)
    _check_windows(x.shape, tuple(w.shape[2:]), stride, padding)
    return x, w, b, stride, padding


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation, as in PyTorch), returns ``(out, cache)``.

    x : N x C_in x H x W float array; w : C_out x C_in x kh x kw (kh != kw allowed); b : C_out or None;
    stride, padding : an int or a pair ``(vertical, horizontal)``; zero padding.
    out : N x C_out x OH x OW with ``OH = (H + 2 ph - kh) // sh + 1``, the dtype of ``x``.
    """
    return _conv2d(*_check_conv2d(x, w, b, stride, padding))


def _conv2d(x, w, b, stride, padding):
    """``conv2d`` on checked arguments (``stride`` and ``padding`` pairs): im2col, one GEMM, the bias."""
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    oh, ow = conv_output_size(h, kh, stride[0], padding[0]), conv_output_size(wd, kw, stride[1], padding[1])
    cols, pointwise = _to_cols(x, (kh, kw), stride, padding)
    # 1 x 1: N x C_out x OH OW, a GEMM per image; otherwise one GEMM for the batch, C_out x (N OH OW)
    out = w.reshape(c_out, -1) @ cols
    if b is not None:
        out += b[:, None]
    out = out.reshape(n, c_out, oh, ow) if pointwise else _images_first(out, n, oh, ow)
    return out, Conv2dCache(x.shape, w, b is not None, cols, pointwise, stride, padding, out.shape)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of ``conv2d``: ``(dx, dw, db)`` with the shapes of ``x``, ``w``, ``b`` (``db`` None without bias).

    dout : N x C_out x OH x OW, the gradient of the loss with respect to ``conv2d``'s output.
    need_dx : False skips ``dx`` (returned as None): the first layer's input is the image, which needs
    no gradient, and ``dx`` (a GEMM and col2im) is about half of the backward's work.
    """
    return _conv2d_backward(check_dout(dout, cache.out_shape, cache.w.dtype), cache, need_dx)


def _conv2d_backward(dout, cache, need_dx=True):
    """``conv2d_backward`` on a checked ``dout``: the three products of the module docstring."""
    x_shape, w, has_bias, cols, pointwise, stride, padding, out_shape = cache
    c_out, _, kh, kw = w.shape
    n, _, oh, ow = out_shape
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if pointwise:
        dout = dout.reshape(n, c_out, oh * ow)
        # one GEMM per image, summed; matmul reads the transposed columns in place, without a copy
        dw = (dout @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    else:
        dout = _images_side_by_side(dout)                    # C_out x (N OH OW)
        # as (cols @ dout^T)^T: the same products and sums, which OpenBLAS runs faster in this orientation
        # (its M is then the long C_in kh kw axis, not the few output channels); a view, no copy
        dw = (cols @ dout.T).T.reshape(w.shape)
    if not need_dx:
        return None, dw, db
    if not pointwise and stride == (1, 1) and padding[0] < kh and padding[1] < kw:
        return _full_correlation(dout, w, x_shape, (oh, ow), padding), dw, db
    dcols = w.reshape(c_out, -1).T @ dout                    # C_in kh kw x (N OH OW), or per image for 1 x 1
    return _from_cols(dcols, x_shape, (kh, kw), stride, padding), dw, db


def _full_correlation(dout, w, x_shape, out_hw, padding):
    """dx of a stride-1 conv2d as a convolution itself: dout (``C_out x (N OH OW)``), padded by ``k - 1 - p``,
    correlated with the kernel flipped in space and with its channel axes swapped. The same numbers as
    ``col2im(W^T @ dout)``, but gathered (im2col) instead of scattered (nine ``+=`` passes), which is faster."""
    xp = backend.get_array_module(dout)
    c_out, c_in, kh, kw = w.shape
    n, _, h, wd = x_shape
    flipped = xp.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c_in, c_out * kh * kw)
    cols = _windows_cm(dout.reshape(c_out, n, *out_hw), (kh, kw), (1, 1), (kh - 1 - padding[0], kw - 1 - padding[1]))
    return _images_first(flipped @ cols, n, h, wd)


# ----------------------------------------------------------------------------------------------------
# conv_transpose2d: conv2d with the roles of its forward and its input gradient swapped
# ----------------------------------------------------------------------------------------------------

class ConvTranspose2dCache(NamedTuple):
    """What ``conv_transpose2d_backward`` needs from the forward."""
    x: object           # the input, N x C_in x H x W (its gradient dw reads it)
    w: object           # the kernel, C_in x C_out x kh x kw
    has_bias: bool
    stride: tuple       # (sh, sw)
    padding: tuple      # (ph, pw)
    out_shape: tuple    # N x C_out x OH x OW


def conv_transpose_output_size(size, kernel, stride, padding, output_padding=0):
    """Output length of a transposed convolution: ``(size - 1) stride - 2 padding + kernel + output_padding``."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def _check_conv_transpose2d(x, w, b, stride, padding, output_padding):
    """``_check_conv``, ``output_padding`` as a pair below ``stride``, and an output left after the cropping."""
    x, w, b, stride, padding = _check_conv(x, w, b, stride, padding, transposed=True)
    out_pad = pair(output_padding, "output_padding", minimum=0)
    if out_pad[0] >= stride[0] or out_pad[1] >= stride[1]:
        raise ValueError(f"output_padding: expected values smaller than stride {stride}, got {out_pad}")
    (h, wd), (kh, kw) = x.shape[2:], w.shape[2:]
    if (conv_transpose_output_size(h, kh, stride[0], padding[0], out_pad[0]) < 1
            or conv_transpose_output_size(wd, kw, stride[1], padding[1], out_pad[1]) < 1):
        raise ValueError(f"padding: {padding} crops away the whole output of a {h} x {wd} input")
    return x, w, b, stride, padding, out_pad


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0):
    """Transposed convolution (PyTorch's ``conv_transpose2d``), returns ``(out, cache)``.

    x : N x C_in x H x W; w : C_in x C_out x kh x kw; b : C_out or None;
    stride, padding, output_padding : an int or a pair; ``output_padding`` (< stride) adds rows/columns at
    the bottom/right so that a stride-s layer can invert any conv2d output size.
    out : N x C_out x OH x OW, ``OH = (H - 1) sh - 2 ph + kh + oph``.

    Each input pixel paints a ``kh x kw`` copy of the kernel, scaled by its value, at ``stride`` spacing,
    and overlapping paint adds up: exactly ``conv2d``'s input gradient, ``col2im(W^T @ x)``. The mask
    head's 2 x 2, stride-2 layer doubles a 14 x 14 map to 28 x 28 with no overlaps.
    """
    return _conv_transpose2d(*_check_conv_transpose2d(x, w, b, stride, padding, output_padding))


def _conv_transpose2d(x, w, b, stride, padding, output_padding):
    """``conv_transpose2d`` on checked arguments (pairs for the sizes): one GEMM, then col2im, the bias."""
    n, c_in, h, wd = x.shape
    _, c_out, kh, kw = w.shape
    out_shape = (n, c_out, conv_transpose_output_size(h, kh, stride[0], padding[0], output_padding[0]),
                 conv_transpose_output_size(wd, kw, stride[1], padding[1], output_padding[1]))
    # out is the input of the conv2d whose output has x's size; conv2d's windows stop short of the
    # output_padding rows, which therefore receive only the bias
    if _is_pointwise((kh, kw), padding):
        dcols = w.reshape(c_in, -1).T @ x.reshape(n, c_in, h * wd)     # N x C_out x H W
    else:
        dcols = w.reshape(c_in, -1).T @ _images_side_by_side(x)        # C_out kh kw x (N H W)
    out = _from_cols(dcols, out_shape, (kh, kw), stride, padding)
    if b is not None:
        out += b[:, None, None]
    return out, ConvTranspose2dCache(x, w, b is not None, stride, padding, out_shape)


def conv_transpose2d_backward(dout, cache):
    """Gradients of ``conv_transpose2d``: ``(dx, dw, db)`` (``db`` None without bias).

    dout : N x C_out x OH x OW. ``dx`` is ``conv2d(dout, w)`` at the same stride and padding (im2col + GEMM).
    """
    return _conv_transpose2d_backward(check_dout(dout, cache.out_shape, cache.w.dtype), cache)


def _conv_transpose2d_backward(dout, cache):
    """``conv_transpose2d_backward`` on a checked ``dout``: conv2d's forward products."""
    x, w, has_bias, stride, padding, out_shape = cache
    n, c_in, h, wd = x.shape
    _, _, kh, kw = w.shape
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    cols, pointwise = _to_cols(dout, (kh, kw), stride, padding)
    if pointwise:                                                  # 1 x 1: N x C_out x H W
        dx = (w.reshape(c_in, -1) @ cols).reshape(x.shape)
        dw = (x.reshape(n, c_in, h * wd) @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(w.shape)
    else:                                                          # C_out kh kw x (N H W)
        dx = _images_first(w.reshape(c_in, -1) @ cols, n, h, wd)
        dw = (cols @ _images_side_by_side(x).T).T.reshape(w.shape)     # as conv2d's dw (a view, no copy)
    return dx, dw, db
