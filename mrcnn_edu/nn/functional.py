"""Stage 6 of the lecture: the layers of Mask R-CNN as forward/backward pairs, each backward beside its forward.

The CS231n convention: ``out, cache = layer(x, params...)`` computes the output and keeps what the
backward pass needs; ``layer_backward(dout, cache)`` turns the gradient of the loss with respect to
``out`` into the gradients with respect to the forward's array arguments, in the forward's order
(``dx`` alone for a layer without parameters).

============================  ======================================  =====================================
layer                         used for                                lecture slide
============================  ======================================  =====================================
``conv2d`` (conv.py)          backbone, FPN, RPN head, mask head      "Network architecture", "FCN"
``conv_transpose2d``          mask head: 14 x 14 -> 28 x 28           "Mask Head on Faster R-CNN"
``linear``                    box head (fc6, fc7, class, deltas),     "Fast R-CNN Architecture"
                              the MLP mask head
``relu``                      after every conv and fc                 "Network architecture"
``max_pool2d``                notebook 06's small classifier (the     "Backbone - ResNet" (its stem)
                              model's backbone downsamples by
                              stride-2 convs instead)
``group_norm``                normalization at batch sizes 1 to 8     "Network architecture"
``upsample_nearest2x``        FPN top-down pathway                    "Backbone - FPN"
============================  ======================================  =====================================

Shapes: N images (or R RoIs), C channels, H x W maps, D_in / D_out features. Every function keeps the
input's float dtype (float32 by default; float64 for the gradient checks) and follows the array module of
its input (NumPy or CuPy). Semantics follow ``torch.nn.functional``, so the oracle tests compare with it.

Each public function checks its arguments once (``mrcnn_edu._validate``) and then calls a private core of the
same name (``relu`` -> ``_relu``) that holds only the maths.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

from .. import backend
from .._validate import check_dout, check_param, float_input, pair
from .conv import (col2im, conv2d, conv2d_backward, conv_output_size, conv_transpose2d, conv_transpose2d_backward,
                   im2col)

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward", "im2col", "col2im",
           "linear", "linear_backward", "relu", "relu_backward", "max_pool2d", "max_pool2d_backward",
           "group_norm", "group_norm_backward", "upsample_nearest2x", "upsample_nearest2x_backward"]


# ----------------------------------------------------------------------------------------------------
# linear (fully connected)
# ----------------------------------------------------------------------------------------------------

def linear(x, w, b=None):
    """``out = x @ w.T + b``, returns ``(out, cache)``.

    x : N x D_in (or ... x D_in: leading axes are kept); w : D_out x D_in, as PyTorch; b : D_out or None.
    out : N x D_out.
    """
    x = float_input(x, "x", "N x D_in", min_ndim=1, params=(w, b))
    w = check_param(w, "w", x, (None, x.shape[-1]), f"D_out x D_in with D_in = {x.shape[-1]} (x's last axis)")
    b = None if b is None else check_param(b, "b", x, (w.shape[0],), "a bias per output feature (D_out)")
    return _linear(x, w, b)


def _linear(x, w, b):
    out = x @ w.T
    if b is not None:
        out += b
    return out, (x, w, b is not None)


def linear_backward(dout, cache):
    """Gradients of ``linear``: ``(dx, dw, db)`` (``db`` None without bias); dout : N x D_out."""
    x, w, _ = cache
    return _linear_backward(check_dout(dout, x.shape[:-1] + (w.shape[0],), w.dtype), cache)


def _linear_backward(dout, cache):
    x, w, has_bias = cache
    # dw and db sum over every sample: the leading axes flattened into one, M rows
    dout_rows, x_rows = dout.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1])   # M x D_out, M x D_in
    db = dout_rows.sum(axis=0) if has_bias else None
    return dout @ w, dout_rows.T @ x_rows, db


# ----------------------------------------------------------------------------------------------------
# relu
# ----------------------------------------------------------------------------------------------------

def relu(x):
    """``max(x, 0)`` elementwise, returns ``(out, cache)``; x : any shape."""
    return _relu(float_input(x, "x", "an array"))


def _relu(x, inplace=False):
    """``relu``'s maths; ``inplace`` writes the result into ``x`` (``ReLU(inplace=True)``), as ``x * (x > 0)``:
    the same values, faster in NumPy than ``maximum``, but -0.0 (equal to 0) where x was negative."""
    xp = backend.get_array_module(x)
    positive = x > 0
    out = xp.multiply(x, positive, out=x) if inplace else xp.maximum(x, 0)
    return out, (positive, x.dtype)


def relu_backward(dout, cache):
    """Gradient of ``relu``: ``dout`` where the input was positive, 0 elsewhere (0 at x = 0, as PyTorch)."""
    positive, dtype = cache
    return _relu_backward(check_dout(dout, positive.shape, dtype), cache)


def _relu_backward(dout, cache, inplace=False):
    """``relu_backward``'s maths; ``inplace`` writes the result into ``dout`` (``ReLU(inplace=True)``)."""
    positive, _ = cache
    return backend.get_array_module(dout).multiply(dout, positive, out=dout if inplace else None)


# ----------------------------------------------------------------------------------------------------
# max_pool2d
# ----------------------------------------------------------------------------------------------------

class MaxPool2dCache(NamedTuple):
    """What ``max_pool2d_backward`` needs from the forward."""
    x_shape: tuple      # N x C x H x W
    winner: object      # N x C x OH x OW int16: the window offset i * kw + j that held each maximum
    kernel_size: tuple  # (kh, kw)
    stride: tuple       # (sh, sw)
    padding: tuple      # (ph, pw)
    dtype: object       # x's dtype, which dx takes


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling over ``kernel_size`` windows (stride defaults to the kernel size), returns ``(out, cache)``.

    x : N x C x H x W; kernel_size, stride, padding : an int or a pair; padding counts as -inf.
    out : N x C x OH x OW, ``OH = (H + 2 ph - kh) // sh + 1``.

    Like im2col, a loop over the kh x kw window offsets: offset ``(i, j)`` is one strided slice, compared
    with the running maximum. The cache keeps which offset won (the first one on a tie, as PyTorch), so
    the backward pass sends each output's gradient to that input pixel only.
    """
    x = float_input(x, "x", "N x C x H x W", ndim=4)
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride")
    ph, pw = pair(padding, "padding", minimum=0)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"padding: expected at most half the kernel ({kh} x {kw}), got {(ph, pw)}")
    h, w = x.shape[2:]
    if conv_output_size(h, kh, sh, ph) < 1 or conv_output_size(w, kw, sw, pw) < 1:
        raise ValueError(f"x: its {h} x {w} maps, padded by {(ph, pw)}, are smaller than the {kh} x {kw} window")
    return _max_pool2d(x, (kh, kw), (sh, sw), (ph, pw))


def _max_pool2d(x, kernel_size, stride, padding):
    xp = backend.get_array_module(x)
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    padded = x
    if ph or pw:
        padded = xp.full((n, c, h + 2 * ph, w + 2 * pw), -xp.inf, dtype=x.dtype)
        padded[:, :, ph:ph + h, pw:pw + w] = x
    out = padded[:, :, :sh * oh:sh, :sw * ow:sw].copy()
    winner = xp.zeros(out.shape, dtype=xp.int16)              # flat window offset i * kw + j of the max
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw]
            better = window > out                             # strict: a tie keeps the earlier offset
            xp.copyto(out, window, where=better)
            xp.copyto(winner, i * kw + j, where=better)
    return out, MaxPool2dCache(x.shape, winner, kernel_size, stride, padding, x.dtype)


def max_pool2d_backward(dout, cache):
    """Gradient of ``max_pool2d``: ``dx`` (N x C x H x W), each output's gradient routed to its max."""
    return _max_pool2d_backward(check_dout(dout, cache.winner.shape, cache.dtype), cache)


def _max_pool2d_backward(dout, cache):
    x_shape, winner, kernel_size, stride, padding, dtype = cache
    xp = backend.get_array_module(winner)
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    n, c, h, w = x_shape
    oh, ow = winner.shape[2:]
    # col2im of the window slices, keeping only the winning offset's share of each output's gradient
    dx = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += xp.where(winner == i * kw + j, dout, 0)
    return dx[:, :, ph:ph + h, pw:pw + w]


# ----------------------------------------------------------------------------------------------------
# group normalization
# ----------------------------------------------------------------------------------------------------

class GroupNormCache(NamedTuple):
    """What ``group_norm_backward`` needs from the forward."""
    xhat: object        # the normalized input, x's shape
    inv_std: object     # N x G x 1: 1 / sqrt(var_group + eps)
    gamma: object       # the scale, C
    num_groups: int     # G


def group_norm(x, gamma, beta, num_groups, eps=1e-5):
    """Group normalization (Wu & He, 2018), returns ``(out, cache)``.

    x : N x C x ... (e.g. N x C x H x W); gamma, beta : C (a scale and a shift per channel);
    num_groups : G, dividing C. Each image's channels are split into G groups of C / G channels; each
    group is normalized by its own mean and (biased) variance over its channels and pixels, then every
    channel is scaled by gamma and shifted by beta:

        xhat = (x - mean_group) / sqrt(var_group + eps),     out = gamma * xhat + beta

    Why GroupNorm and not BatchNorm: detection trains on 1 to 8 images a step, and batch statistics over
    so few images are noisy and differ between training and inference, which hurts; the usual cure,
    BatchNorm frozen at statistics learned on ImageNet, needs a pretrained backbone, and this course
    trains from scratch. GroupNorm's statistics come from one image alone, so it behaves the same at any
    batch size, in training and at inference (no running averages, no train/eval difference).
    """
    x = float_input(x, "x", "N x C x ...", min_ndim=2, params=(gamma, beta))
    n, c = x.shape[:2]
    if not isinstance(num_groups, numbers.Integral) or num_groups < 1 or c % num_groups:
        raise ValueError(f"num_groups: expected a positive divisor of the {c} channels, got {num_groups!r}")
    gamma = check_param(gamma, "gamma", x, (c,), "a scale per channel (C)")
    beta = check_param(beta, "beta", x, (c,), "a shift per channel (C)")
    return _group_norm(x, gamma, beta, num_groups, eps)


def _group_norm(x, gamma, beta, num_groups, eps):
    xp = backend.get_array_module(x)
    n, c = x.shape[:2]
    group_shape = (n, num_groups, math.prod(x.shape[1:]) // num_groups)   # N x G x (C / G) H W
    groups = x.reshape(group_shape)
    mean = groups.mean(axis=2, keepdims=True)
    centered = groups - mean
    squares = centered * centered
    inv_std = 1.0 / xp.sqrt(squares.mean(axis=2, keepdims=True) + eps)
    # in place, here and below: the same operations as new arrays, so the same numbers; the output goes into
    # the squares' array, which is still in the cache
    centered *= inv_std
    xhat = centered.reshape(x.shape)
    channel = (1, c) + (1,) * (x.ndim - 2)                    # broadcasts a per-channel vector over x
    out = xp.multiply(xhat, gamma.reshape(channel), out=squares.reshape(x.shape))
    out += beta.reshape(channel)
    return out, GroupNormCache(xhat, inv_std, gamma, num_groups)


def group_norm_backward(dout, cache):
    """Gradients of ``group_norm``: ``(dx, dgamma, dbeta)`` with the shapes of ``x``, ``gamma``, ``beta``.

    With ``g = dout * gamma`` seen per group (M = C / G x H x W elements each),
    ``dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))``: the normalization removes the part of the
    gradient that would only shift or rescale the group.
    """
    return _group_norm_backward(check_dout(dout, cache.xhat.shape, cache.xhat.dtype), cache)


def _group_norm_backward(dout, cache):
    xp = backend.get_array_module(dout)
    xhat, inv_std, gamma, num_groups = cache
    n, c = xhat.shape[:2]
    axes = (0,) + tuple(range(2, xhat.ndim))                  # every axis but the channels
    dbeta = dout.sum(axis=axes)
    product = dout * xhat
    dgamma = product.sum(axis=axes)
    group_shape = (n, num_groups, math.prod(xhat.shape[1:]) // num_groups)
    g = (dout * gamma.reshape((1, c) + (1,) * (xhat.ndim - 2))).reshape(group_shape)
    xg, product = xhat.reshape(group_shape), product.reshape(group_shape)
    # dx = inv_std * (g - mean(g) - xg * mean(g * xg)), worked out in place in g and product (the same
    # operations in the same order as the formula, so the same numbers, without five new arrays)
    g_mean = g.mean(axis=2, keepdims=True)
    xp.multiply(g, xg, out=product)
    xp.multiply(xg, product.mean(axis=2, keepdims=True), out=product)
    g -= g_mean
    g -= product
    g *= inv_std
    return g.reshape(xhat.shape), dgamma, dbeta


# ----------------------------------------------------------------------------------------------------
# nearest-neighbour 2x upsampling
# ----------------------------------------------------------------------------------------------------

def upsample_nearest2x(x):
    """Each pixel repeated into a 2 x 2 block, returns ``(out, cache)``: N x C x H x W -> N x C x 2H x 2W.

    The FPN's top-down pathway doubles a coarse map to add it to the next finer one; equal to PyTorch's
    ``interpolate(x, scale_factor=2, mode="nearest")``.
    """
    return _upsample_nearest2x(float_input(x, "x", "N x C x H x W", ndim=4))


def _upsample_nearest2x(x):
    # every column twice, then every row twice (NumPy copies a broadcast 2 x 2 view of x several times slower)
    out = x.repeat(2, axis=3).repeat(2, axis=2)
    return out, (x.shape, x.dtype)


def upsample_nearest2x_backward(dout, cache):
    """Gradient of ``upsample_nearest2x``: each 2 x 2 block of ``dout`` summed into its source pixel."""
    (n, c, h, w), dtype = cache
    return _upsample_nearest2x_backward(check_dout(dout, (n, c, 2 * h, 2 * w), dtype), cache)


def _upsample_nearest2x_backward(dout, cache):
    (n, c, h, w), _ = cache
    blocks = dout.reshape(n, c, h, 2, w, 2)                   # block row at axis 3, block column at axis 5
    top, bottom = blocks[:, :, :, 0], blocks[:, :, :, 1]
    # the same sums, in the same order, as .sum(axis=(3, 5)), which NumPy runs many times slower (it
    # reduces over two axes of length 2)
    dx = top[..., 0] + top[..., 1]
    dx += bottom[..., 0] + bottom[..., 1]
    return dx
