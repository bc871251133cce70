"""Stage 4 of the lecture: RoI feature extraction. RoIPool (quantized bins + max) and RoIAlign (bilinear
samples, no quantization), each with its hand-written backward.

Shapes: N images, C channels, H x W feature map, R RoIs, an ``oh x ow`` output grid of bins.
RoIs are ``R x 5`` rows ``(batch_index, x1, y1, x2, y2)`` in image pixels; ``spatial_scale`` (1/16 for a
stride-16 feature map) maps them onto the feature map.

RoIAlign as two matrix products
-------------------------------
RoIAlign averages, in every bin, a ``gh x gw`` grid of bilinearly interpolated samples. Bilinear weights
factor into a row part and a column part, the sample grid is a product of rows and columns, and the
"outside the map" test is one test on y and one on x. So the whole operation factors too::

    out[r, c] = Ay[r] @ features[b_r, c] @ Ax[r].T        Ay[r]: oh x H,  Ax[r]: ow x W

where ``Ay[r][p, h]`` is the total weight that the samples of bin-row ``p`` give feature-row ``h``, divided
by ``gh`` (and ``Ax`` likewise). Building ``Ay`` and ``Ax`` is a scatter-add of the two bilinear weights of
every sample; the rest is GEMM, and the backward is the same two products transposed::

    dfeatures[b] = sum over r in image b of  Ay[r].T @ dout[r, c] @ Ax[r]

This is exactly torchvision's arithmetic (the same samples, weights and clamping), summed in another order.

Each public function checks its inputs, then calls its core: the same name with a leading underscore
(``roi_align`` -> ``_roi_align``), which holds only the maths. The model calls the cores on arrays it made
itself, so nothing is checked twice.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from . import backend
from ._validate import as_float_array, check_finite, check_ndim, check_rois, nchw_shape, number, pair

__all__ = ["rois_from_boxes", "roi_align", "roi_align_backward", "roi_pool", "roi_pool_backward"]

# Caps the temporary of one block of RoIs (elements); larger batches of RoIs run in a few blocks.
_BLOCK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------------------------------------
# The RoI format (lesson 08 grades it)
# ----------------------------------------------------------------------------------------------------------

def rois_from_boxes(boxes_per_image, dtype="float32"):
    """The RoI ops' ``R x 5`` format from each image's boxes: batch index, then ``(x1, y1, x2, y2)``.

    boxes_per_image : a list of N arrays, image i's ``R_i x 4`` boxes (any float dtype)
    dtype           : the dtype of the result
    Returns ``R x 5`` with R = sum R_i, image 0's boxes first; ``0 x 5`` for no images or no boxes.
    """
    xp = backend.get_array_module(*boxes_per_image) if boxes_per_image else backend.xp
    if not boxes_per_image:
        return xp.zeros((0, 5), dtype=dtype)
    boxes = [xp.asarray(b).reshape(-1, 4) for b in boxes_per_image]
    index = xp.repeat(xp.arange(len(boxes), dtype=dtype), [len(b) for b in boxes])
    return xp.concatenate([index[:, None], xp.concatenate(boxes).astype(dtype, copy=False)], axis=1)


# ----------------------------------------------------------------------------------------------------------
# RoIAlign
# ----------------------------------------------------------------------------------------------------------

def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign forward, as ``torchvision.ops.roi_align`` (lecture: "RoI Align in Mask R-CNN").

    features       : N x C x H x W float
    rois           : R x 5 ``(batch_index, x1, y1, x2, y2)`` in image pixels
    output_size    : ``(oh, ow)`` or an int
    spatial_scale  : image pixels -> feature-map pixels (1/16 at stride 16)
    sampling_ratio : samples per bin along each axis; ``<= 0`` means ``ceil(bin size)`` (adaptive)
    aligned        : shift the box by -0.5 pixel so that a pixel's centre sits at integer + 0.5
    Returns R x C x oh x ow, the average of the bilinear samples of each bin.
    """
    features, rois, output_size, spatial_scale = _check_forward(features, rois, output_size, spatial_scale)
    return _roi_align(features, rois, output_size, spatial_scale, int(sampling_ratio), bool(aligned))


def _roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """The maths of ``roi_align``: features N x C x H x W float, rois R x 5 of its dtype (valid image indices
    and boxes), output_size ``(oh, ow)``, spatial_scale a float > 0, sampling_ratio an int, aligned a bool."""
    plan = _align_plan(rois, features.shape, output_size, spatial_scale, sampling_ratio, aligned, features.dtype)
    return _roi_align_planned(features, plan)


class AlignPlan(NamedTuple):
    """What RoIAlign's forward and backward share for one set of RoIs on one map (``_align_plan``): the
    arguments, and each RoI's interpolation matrices in its image's row of an ``N x S`` table (``_slots``)."""
    rois: Any               # R x 5
    input_shape: tuple      # (N, C, H, W)
    output_size: tuple      # (oh, ow)
    spatial_scale: float
    sampling_ratio: int
    aligned: bool
    batch: Any              # R int64, each RoI's image
    slot: Any               # R int64, its column in the table (None: every image fills its row, in order)
    Ay_t: Any               # N x S x oh x H
    Ax_t: Any               # N x S x ow x W


def _align_plan(rois, input_shape, output_size, spatial_scale, sampling_ratio, aligned, dtype, most=None,
                in_order=False):
    """RoIAlign's matrices for these RoIs, made once: the model's forward and backward both read them.
    ``most``: the most RoIs of one image, when the caller knows it (else it is read back from the device);
    ``in_order``: the RoIs come image by image (see ``_slots``)."""
    xp = backend.get_array_module(rois)
    N, C, H, W = input_shape
    matrices = (None,) * 4
    if rois.shape[0] and C and H and W:
        Ay, Ax = _align_matrices(rois, (H, W), output_size, spatial_scale, sampling_ratio, aligned, dtype)
        batch = rois[:, 0].astype(xp.int64)
        slot, S = _slots(batch, N, xp, most, in_order)
        matrices = (batch, slot, _padded(Ay, batch, slot, N, S, xp), _padded(Ax, batch, slot, N, S, xp))
    return AlignPlan(rois, tuple(input_shape), tuple(output_size), spatial_scale, sampling_ratio, aligned, *matrices)


def _roi_align_planned(features, plan):
    """``_roi_align`` on the matrices of an ``AlignPlan`` made for ``features``' shape."""
    xp = backend.get_array_module(features)
    N, C, H, W = features.shape
    oh, ow = plan.output_size
    if plan.batch is None:   # nothing to sample
        return xp.zeros((plan.rois.shape[0], C, oh, ow), dtype=features.dtype)
    S = plan.Ay_t.shape[1]
    f_t = features.transpose(0, 3, 1, 2).reshape(N, W, C * H)   # columns of the map as GEMM rows
    parts = []
    for s0, s1 in _blocks(S, N * ow * C * H, xp):
        k = s1 - s0
        # contract x:  (N, k*ow, W) @ (N, W, C*H)  ->  per RoI a (ow*C) x H block
        t = xp.matmul(plan.Ax_t[:, s0:s1].reshape(N, k * ow, W), f_t).reshape(N * k, ow * C, H)
        # contract y:  (ow*C, H) @ (H, oh) for every RoI
        ay = plan.Ay_t[:, s0:s1].reshape(N * k, oh, H).transpose(0, 2, 1)
        parts.append(xp.matmul(t, ay).reshape(N, k, ow, C, oh))
    out = parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=1)          # N x S x ow x C x oh
    out = out.reshape((-1,) + out.shape[2:]) if plan.slot is None else out[plan.batch, plan.slot]
    return xp.ascontiguousarray(out.transpose(0, 2, 3, 1))   # R x ow x C x oh -> R x C x oh x ow


def _roi_align_unplanned(features, plan):
    """``_roi_align_planned`` through ``_roi_align`` (the capstone's stand-in while the student's is in place)."""
    return _roi_align(features, plan.rois, plan.output_size, plan.spatial_scale, plan.sampling_ratio, plan.aligned)


def roi_align_backward(grad_output, rois, input_shape, output_size, spatial_scale=1.0, sampling_ratio=-1,
                       aligned=False):
    """RoIAlign backward: the gradient with respect to ``features`` (N x C x H x W).

    grad_output : R x C x oh x ow, the gradient of the loss with respect to ``roi_align``'s output
    input_shape : ``(N, C, H, W)`` of the features; the other arguments as in ``roi_align``.
    Every sample hands its share of the bin's gradient back to its four bilinear neighbours; in matrix form
    ``dfeatures[b] = sum_r Ay[r].T @ grad_output[r] @ Ax[r]`` (torchvision does it with atomic adds).
    """
    N, C, H, W = nchw_shape(input_shape, "input_shape")
    grad_output = as_float_array(grad_output, "grad_output")
    xp = backend.get_array_module(grad_output)
    rois = _check_rois(rois, N, xp)
    output_size = pair(output_size, "output_size")
    spatial_scale = _check_scale(spatial_scale)
    grad_output = _check_grad_output(grad_output, rois, C, output_size)
    return _roi_align_backward(grad_output, rois.astype(grad_output.dtype, copy=False), (N, C, H, W), output_size,
                               spatial_scale, int(sampling_ratio), bool(aligned))


def _roi_align_backward(grad_output, rois, input_shape, output_size, spatial_scale, sampling_ratio, aligned):
    """The maths of ``roi_align_backward``: grad_output R x C x oh x ow float, rois R x 5 of its dtype,
    input_shape ``(N, C, H, W)`` ints; the rest as ``_roi_align``'s."""
    plan = _align_plan(rois, input_shape, output_size, spatial_scale, sampling_ratio, aligned, grad_output.dtype)
    return _roi_align_backward_planned(grad_output, plan)


def _roi_align_backward_planned(grad_output, plan):
    """``_roi_align_backward`` on the matrices of the forward's ``AlignPlan``."""
    xp = backend.get_array_module(grad_output)
    N, C, H, W = plan.input_shape
    oh, ow = plan.output_size
    dtype = grad_output.dtype
    if plan.batch is None:   # nothing was sampled
        return xp.zeros((N, C, H, W), dtype=dtype)
    S = plan.Ay_t.shape[1]
    g_t = _padded(grad_output.transpose(0, 3, 1, 2), plan.batch, plan.slot, N, S, xp)   # N x S x ow x C x oh
    df_t = None
    for s0, s1 in _blocks(S, N * ow * C * H, xp):
        k = s1 - s0
        # spread over rows:  (ow*C, oh) @ (oh, H) for every RoI
        u = xp.matmul(g_t[:, s0:s1].reshape(N * k, ow * C, oh), plan.Ay_t[:, s0:s1].reshape(N * k, oh, H))
        # spread over columns and sum the RoIs of each image:  (N, W, k*ow) @ (N, k*ow, C*H)
        ax = plan.Ax_t[:, s0:s1].reshape(N, k * ow, W).transpose(0, 2, 1)
        part = xp.matmul(ax, u.reshape(N, k * ow, C * H))
        df_t = part if df_t is None else df_t + part                           # N x W x (C H)
    return xp.ascontiguousarray(df_t.reshape(N, W, C, H).transpose(0, 2, 3, 1))


def _roi_align_backward_unplanned(grad_output, plan):
    """``_roi_align_backward_planned`` through ``_roi_align_backward`` (the capstone's stand-in while the
    student's is in place)."""
    return _roi_align_backward(grad_output, plan.rois, plan.input_shape, plan.output_size, plan.spatial_scale,
                               plan.sampling_ratio, plan.aligned)


def _align_matrices(rois, feature_hw, output_size, spatial_scale, sampling_ratio, aligned, dtype):
    """``Ay``: R x oh x H and ``Ax``: R x ow x W for every RoI (see the module docstring). Both axes are
    worked on side by side, as R x 2 arrays ``(y, x)``: one pass of ``_axis_weights`` when the map and the
    output are square (they always are in the model), and ``Ay``, ``Ax`` are then views of its result."""
    xp = backend.get_array_module(rois)
    (H, W), (oh, ow) = feature_hw, output_size
    boxes = rois[:, 1:] * dtype.type(spatial_scale) - dtype.type(0.5 if aligned else 0.0)
    start = boxes[:, 1::-1]                       # R x 2: (y1, x1), a view
    extent = boxes[:, 3:1:-1] - start             # R x 2: the RoI's height and width
    if not aligned:  # the legacy rule: force malformed RoIs to be 1 x 1
        extent = xp.maximum(extent, 1)
    bin_size = extent / (dtype.type(oh) if oh == ow else xp.asarray([oh, ow], dtype=dtype))
    if sampling_ratio > 0:
        grid = int(sampling_ratio)                # the same for every RoI and axis
    else:  # adaptive: about one sample per feature-map pixel
        grid = xp.maximum(xp.ceil(bin_size), 0).astype(xp.int64)
    if (oh, H) == (ow, W):
        both = _axis_weights(start, bin_size, grid, oh, H, dtype, xp)      # R x 2 x oh x H
        return both[:, 0], both[:, 1]
    axis = [(start[:, k], bin_size[:, k], grid if isinstance(grid, int) else grid[:, k]) for k in (0, 1)]
    return _axis_weights(*axis[0], oh, H, dtype, xp), _axis_weights(*axis[1], ow, W, dtype, xp)


def _axis_weights(start, bin_size, grid, n_bins, size, dtype, xp):
    """The interpolation matrices of one axis: ``... x n_bins x size``.

    start, bin_size : the RoIs' starts and bin sizes on this axis in feature-map coordinates, any shape ``...``
                      (R for one axis, R x 2 for both)
    grid            : samples per bin on this axis: one int for every RoI (a fixed sampling ratio), or ints of
                      ``start``'s shape (``gh`` or ``gw``; 0 gives an all-zero row)
    Entry ``[..., p, i]`` is the summed bilinear weight that the samples of bin ``p`` put on feature index
    ``i``, divided by the number of samples. torchvision's rules: a sample beyond ``[-1, size]`` counts as 0,
    one in ``[-1, 0]`` is clamped to 0, one past ``size - 1`` reads the last index.
    """
    lead = tuple(start.shape)
    fixed = isinstance(grid, int)
    # the most samples a bin takes: read back from the device only for an adaptive grid
    g_max = max(grid if fixed else (int(grid.max()) if start.size else 0), 1)
    p = xp.arange(n_bins, dtype=dtype)[:, None]                    # n_bins x 1
    half = xp.arange(0.5, g_max, dtype=dtype)                      # sample s sits at s + 0.5 of the bin
    g = dtype.type(max(grid, 1)) if fixed else xp.maximum(grid, 1).astype(dtype)[..., None, None]
    b = bin_size[..., None, None]
    # same order of float operations as torchvision, so float32 results round the same way
    coord = start[..., None, None] + p * b + half * b / g             # ... x n_bins x g_max
    used = (coord >= -1.0) & (coord <= size)
    if not fixed:
        used &= half < grid[..., None, None]                        # only the RoI's own samples
    coord = xp.clip(coord, 0, size - 1)       # from size - 1 on, all the weight goes to the last index
    low = xp.floor(coord)
    frac = coord - low
    low = low.astype(xp.int64)
    high = xp.minimum(low + 1, size - 1)
    share = used.astype(dtype) / g
    weights = xp.zeros(math.prod(lead) * n_bins * size, dtype=dtype)
    row = xp.arange(0, weights.size, size).reshape(lead + (n_bins, 1))   # where each bin's row starts
    backend.scatter_add(weights, (row + low).ravel(), ((1 - frac) * share).ravel())
    backend.scatter_add(weights, (row + high).ravel(), (frac * share).ravel())
    return weights.reshape(lead + (n_bins, size))


def _slots(batch_index, num_images, xp, most=None, in_order=False):
    """Place RoIs in an ``N x S`` table, S = most RoIs of one image, so each image is one batched GEMM.

    in_order : the RoIs come image by image (image 0's first, as ``rois_from_boxes`` lays them out), so a
               RoI's column is its distance from its image's first RoI, with no sort
    Returns ``slot`` (R,) with the RoI's column in that table and S (``most`` when given: the caller knew it).
    ``slot`` is None when the RoIs come in order and every image has ``most`` of them: the table is then the
    RoIs themselves, ``R = N x S`` rows seen as N rows of S.
    """
    R = batch_index.shape[0]
    if in_order and most is not None and R == num_images * most:
        return None, most
    counts = xp.bincount(batch_index, minlength=num_images)
    first = xp.cumsum(counts) - counts                       # where each image's RoIs start, in image order
    if in_order:
        slot = xp.arange(R) - first[batch_index]
    else:
        order = xp.argsort(batch_index, kind="stable")
        slot = xp.empty(R, dtype=xp.int64)
        slot[order] = xp.arange(R) - first[batch_index[order]]
    if most is None:
        most = int(counts.max()) if R else 0
    return slot, most


def _padded(per_roi, batch_index, slot, num_images, width, xp):
    """Scatter an ``R x ...`` array into its ``N x width x ...`` table (zeros where no RoI)."""
    if slot is None:                                         # every image fills its row: no scatter
        return per_roi.reshape((num_images, width) + per_roi.shape[1:])
    table = xp.zeros((num_images, width) + per_roi.shape[1:], dtype=per_roi.dtype)
    table[batch_index, slot] = per_roi
    return table


def _blocks(S, per_slot, xp):
    """Ranges of table columns whose temporaries stay under ``_BLOCK_ELEMENTS``."""
    step = max(1, _BLOCK_ELEMENTS // max(per_slot, 1))
    return [(s, min(s + step, S)) for s in range(0, S, step)]


# ----------------------------------------------------------------------------------------------------------
# RoIPool
# ----------------------------------------------------------------------------------------------------------

def roi_pool(features, rois, output_size, spatial_scale=1.0, bins="caffe"):
    """RoIPool forward (lecture: "RoI Pooling in Fast R-CNN"): quantize the RoI, split it into bins, max.

    features      : N x C x H x W float
    rois          : R x 5 ``(batch_index, x1, y1, x2, y2)`` in image pixels
    output_size   : ``(oh, ow)`` or an int
    spatial_scale : image -> feature-map pixels; the scaled corners are rounded to whole pixels
    bins          : ``"caffe"`` (= ``torchvision.ops.roi_pool``) or ``"slides"`` (the lecture's worked example)
    Returns ``(output, argmax)``: output R x C x oh x ow; argmax R x C x oh x ow int64, the flat index
    ``y * W + x`` of each maximum in its image's channel, -1 (and output 0) for an empty bin.
    """
    features, rois, output_size, spatial_scale = _check_forward(features, rois, output_size, spatial_scale)
    if bins not in ("caffe", "slides"):
        raise ValueError(f"bins: expected 'caffe' or 'slides', got {bins!r}")
    return _roi_pool(features, rois, output_size, spatial_scale, bins)


def _roi_pool(features, rois, output_size, spatial_scale, bins):
    """The maths of ``roi_pool``: features N x C x H x W float, rois R x 5 of its dtype (valid image indices
    and boxes), output_size ``(oh, ow)``, spatial_scale a float > 0, bins "caffe" or "slides"."""
    xp = backend.get_array_module(features)
    N, C, H, W = features.shape
    R, dtype = rois.shape[0], features.dtype
    oh, ow = output_size
    output = xp.zeros((R, C, oh, ow), dtype=dtype)
    argmax = xp.full((R, C, oh, ow), -1, dtype=xp.int64)
    if R == 0 or C == 0:   # nothing to pool
        return output, argmax

    # quantize the RoI to whole feature-map pixels, split it into bins, read every bin as a window of pixels
    corners = _round_half_away(rois[:, 1:] * dtype.type(spatial_scale), xp).astype(xp.int64)
    y_lo, y_hi = _pool_bins(corners[:, 1], corners[:, 3], oh, H, bins, dtype, xp)   # R x oh
    x_lo, x_hi = _pool_bins(corners[:, 0], corners[:, 2], ow, W, bins, dtype, xp)   # R x ow
    flat, inside = _bin_windows(y_lo, y_hi, x_lo, x_hi, H, W, xp)                   # R x oh x ow x bh*bw

    # max over each window. Channels last, one row a pixel, and one extra row of -inf that every window slot
    # past its bin reads: the max then never picks it, with no masking pass over the (large) gathered windows
    pixels = xp.concatenate([features.transpose(0, 2, 3, 1).reshape(N * H * W, C),
                             xp.full((1, C), -xp.inf, dtype=dtype)])
    batch = rois[:, 0].astype(xp.int64)
    row = xp.where(inside, batch[:, None, None, None] * (H * W) + flat, N * H * W)   # R x oh x ow x bh*bw
    row = xp.ascontiguousarray(xp.moveaxis(row, 3, 0))                               # window slot first
    empty = ~inside.any(axis=3)[..., None]                                           # R x oh x ow x 1
    step = max(1, _BLOCK_ELEMENTS // (oh * ow * row.shape[0] * C))
    for r0 in range(0, R, step):
        r1 = min(r0 + step, R)
        value, slot = _max_and_first_argmax(pixels[row[:, r0:r1]], xp)   # of bh*bw x r x oh x ow x C
        where = xp.take_along_axis(flat[r0:r1], slot, axis=3)                        # flat y * W + x
        output[r0:r1] = xp.where(empty[r0:r1], 0, value).transpose(0, 3, 1, 2)
        argmax[r0:r1] = xp.where(empty[r0:r1], -1, where).transpose(0, 3, 1, 2)
    return output, argmax


def _round_half_away(x, xp):
    """C's ``round``: halves go away from zero (NumPy's ``round`` goes to even)."""
    return xp.sign(x) * xp.floor(xp.abs(x) + 0.5)


def _pool_bins(start, end, n_bins, size, bins, dtype, xp):
    """Integer bin edges of one axis: ``lo, hi``, each R x n_bins, clipped to ``[0, size]``, ``hi`` exclusive.

    start, end : R ints, the RoI's first and last pixel (both inclusive)
    bins="caffe"  : Fast R-CNN / torchvision: ``floor(p * s / n)`` to ``ceil((p + 1) * s / n)``, may overlap
    bins="slides" : the lecture's: ``floor(p * s / n)`` to ``floor((p + 1) * s / n)``, never overlap
    """
    extent = xp.maximum(end - start + 1, 1)[:, None]            # R x 1 pixels, ends included
    p = xp.arange(n_bins)[None, :]
    if bins == "caffe":
        bin_size = extent.astype(dtype) / dtype.type(n_bins)
        lo = xp.floor(p.astype(dtype) * bin_size).astype(xp.int64)
        hi = xp.ceil((p + 1).astype(dtype) * bin_size).astype(xp.int64)
    else:
        lo, hi = (p * extent) // n_bins, ((p + 1) * extent) // n_bins
    lo = xp.clip(lo + start[:, None], 0, size)
    hi = xp.clip(hi + start[:, None], 0, size)
    return lo, hi


def _bin_windows(y_lo, y_hi, x_lo, x_hi, H, W, xp):
    """Every bin as a padded ``bh x bw`` window of pixels, bh and bw the tallest and widest bin.

    y_lo, y_hi : R x oh bin edges (``hi`` exclusive);  x_lo, x_hi : R x ow
    Returns ``flat``, the ``y * W + x`` index of each window pixel, and ``inside``, False for the padding
    past the bin's end; both R x oh x ow x bh*bw.
    """
    R, oh, ow = y_lo.shape[0], y_lo.shape[1], x_lo.shape[1]
    bh = max(int((y_hi - y_lo).max()), 1)
    bw = max(int((x_hi - x_lo).max()), 1)
    ys = y_lo[:, :, None] + xp.arange(bh)                                 # R x oh x bh
    xs = x_lo[:, :, None] + xp.arange(bw)                                 # R x ow x bw
    inside = (ys < y_hi[:, :, None])[:, :, None, :, None] & (xs < x_hi[:, :, None])[:, None, :, None, :]
    flat = xp.minimum(ys, H - 1)[:, :, None, :, None] * W + xp.minimum(xs, W - 1)[:, None, :, None, :]
    flat = xp.broadcast_to(flat, (R, oh, ow, bh, bw)).reshape(R, oh, ow, bh * bw)
    inside = xp.broadcast_to(inside, (R, oh, ow, bh, bw)).reshape(R, oh, ow, bh * bw)
    return flat, inside


def _max_and_first_argmax(window, xp):
    """The max of ``window`` (K x ...) over its first axis, and the first index that reaches it.

    The same as ``window.max(0), window.argmax(0)``, without the copy that ``argmax`` along any axis but the
    last makes of the whole array (into that order) first. Ranking the K slots K, K - 1, ..., 1, keeping the
    rank where a slot equals the max, and taking the max rank finds the first maximal slot with two more
    reductions over axis 0, which read the array in place.
    """
    K = window.shape[0]
    best = window.max(axis=0)
    rank = xp.arange(K, 0, -1, dtype=xp.int16 if K < 2 ** 15 else xp.int64).reshape((K,) + (1,) * (window.ndim - 1))
    first = K - xp.where(window == best, rank, 0).max(axis=0)
    return best, xp.minimum(first, K - 1)   # a NaN equals nothing: point at the last slot, not past it


def roi_pool_backward(grad_output, argmax, input_shape, rois=None):
    """RoIPool backward: each bin's gradient goes to the one pixel that won its max (none for empty bins).

    grad_output : R x C x oh x ow
    argmax      : R x C x oh x ow int64 from ``roi_pool`` (flat ``y * W + x``, -1 for empty bins)
    input_shape : ``(N, C, H, W)``
    rois        : R x 5, needed only to know each RoI's image when N > 1
    Returns N x C x H x W; pixels that win several bins (overlapping RoIs or caffe bins) add up.
    """
    N, C, H, W = nchw_shape(input_shape, "input_shape")
    grad_output = as_float_array(grad_output, "grad_output")
    xp = backend.get_array_module(grad_output)
    argmax = xp.asarray(argmax)
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax: expected integers, got dtype {argmax.dtype}")
    check_ndim(argmax, "argmax", 4, "R x C x oh x ow")
    if tuple(grad_output.shape) != tuple(argmax.shape) or argmax.shape[1] != C:
        raise ValueError(f"grad_output: expected the shape of argmax {tuple(argmax.shape)} with C = {C}, "
                         f"got {tuple(grad_output.shape)}")
    check_finite(grad_output, "grad_output")
    if argmax.size and bool(xp.any((argmax < -1) | (argmax >= H * W))):
        raise ValueError(f"argmax: expected indices in [-1, {H * W}) (H * W = {H} * {W})")
    R = argmax.shape[0]
    if rois is None:
        if N > 1 and R:
            raise ValueError("rois: needed to know each RoI's image when input_shape has N > 1")
        rois = xp.zeros((R, 5), dtype=grad_output.dtype)   # every RoI in image 0
    else:
        rois = _check_rois(rois, N, xp)
        if rois.shape[0] != R:
            raise ValueError(f"rois: expected {R} rows to match argmax, got {rois.shape[0]}")
    return _roi_pool_backward(grad_output, argmax, (N, C, H, W), rois)


def _roi_pool_backward(grad_output, argmax, input_shape, rois):
    """The maths of ``roi_pool_backward``: grad_output R x C x oh x ow float, argmax its shape, integers in
    [-1, H W), input_shape ``(N, C, H, W)`` ints, rois R x 5 (only column 0, the image index, is read)."""
    xp = backend.get_array_module(grad_output)
    N, C, H, W = input_shape
    batch = rois[:, 0].astype(xp.int64)
    grad = xp.zeros(N * C * H * W, dtype=grad_output.dtype)
    won = argmax >= 0
    plane = (batch[:, None] * C + xp.arange(C)[None, :]) * (H * W)           # R x C: start of each channel
    index = (plane[:, :, None, None] + argmax)[won]
    backend.scatter_add(grad, index, grad_output[won])
    return grad.reshape(N, C, H, W)


# ----------------------------------------------------------------------------------------------------------
# input checks of the public functions (the cores above trust their inputs)
# ----------------------------------------------------------------------------------------------------------

def _check_features(features):
    features = as_float_array(features, "features")
    check_ndim(features, "features", 4, "N x C x H x W")
    check_finite(features, "features")
    return features


def _check_rois(rois, num_images, xp):
    """``rois`` as an R x 5 float array of ``xp`` with image indices in ``[0, num_images)`` and valid boxes."""
    rois = check_rois(rois, "rois", xp)
    batch = rois[:, 0]
    if rois.shape[0] and bool(xp.any((batch != xp.floor(batch)) | (batch < 0) | (batch >= num_images))):
        raise ValueError(f"rois: column 0 must hold image indices in [0, {num_images})")
    return rois


def _check_scale(spatial_scale):
    return number(spatial_scale, "spatial_scale", 0, low_open=True)


def _check_forward(features, rois, output_size, spatial_scale):
    """The checks RoIAlign and RoIPool share: ``(features, rois, (oh, ow), spatial_scale)``, the rois cast to
    the features' dtype."""
    features = _check_features(features)
    xp = backend.get_array_module(features)
    rois = _check_rois(rois, features.shape[0], xp).astype(features.dtype, copy=False)
    return features, rois, pair(output_size, "output_size"), _check_scale(spatial_scale)


def _check_grad_output(grad_output, rois, channels, output_size):
    grad_output = as_float_array(grad_output, "grad_output")
    expected = (rois.shape[0], channels) + tuple(output_size)
    if tuple(grad_output.shape) != expected:
        raise ValueError(f"grad_output: expected shape {expected} (R x C x oh x ow), got {tuple(grad_output.shape)}")
    check_finite(grad_output, "grad_output")
    return grad_output
