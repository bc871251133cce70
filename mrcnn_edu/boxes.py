"""Lecture stage 1: boxes. Intersection over union, box encoding and decoding, non-maximum suppression.

Every box is ``(x1, y1, x2, y2)`` in continuous pixel coordinates, as in torchvision: its width is
``x2 - x1`` (no ``+ 1``), its centre ``x1 + 0.5 * width``. Box arrays are ``N x 4`` floats (float32 by
default; float64 works everywhere and is kept; float16 is computed in float32 and gives float32, since a
300 x 300 box's area overflows float16's 65504). The functions follow the arrays they are given (NumPy or
CuPy) and reproduce torchvision's ops operation for operation, so that the tests can compare them with
``torchvision.ops`` and ``torchvision.models.detection._utils.BoxCoder``:

=========================  ===============================================================
``box_area``               ``torchvision.ops.box_area``
``box_iou``                ``torchvision.ops.box_iou`` (0, not NaN, where the union is 0)
``box_encode``             ``BoxCoder.encode_single`` (arguments in the lecture's order)
``box_decode``             ``BoxCoder.decode_single``
``box_decode_backward``    its gradient (for box losses on decoded boxes, such as GIoU)
``nms``                    ``torchvision.ops.nms``
``batched_nms``            ``torchvision.ops.batched_nms``
``clip_boxes_to_image``    ``torchvision.ops.clip_boxes_to_image``
``remove_small_boxes``     ``torchvision.ops.remove_small_boxes``
=========================  ===============================================================
"""
from __future__ import annotations

import math

from . import backend
from ._validate import as_float_array, check_boxes, check_finite, check_ndim, check_same_length, number, pair

__all__ = ["BBOX_XFORM_CLIP", "RPN_BOX_WEIGHTS", "BOX_HEAD_WEIGHTS", "box_area", "box_iou", "box_encode", "box_decode",
           "box_decode_backward", "nms", "batched_nms", "clip_boxes_to_image", "remove_small_boxes"]

# Largest dw, dh fed to exp() when decoding: a box may grow at most 1000/16 = 62.5 times (torchvision's value).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)
# Box-coding weights (wx, wy, ww, wh) of the two stages, torchvision's: the RPN's deltas are plain, the box
# head's are scaled up (its proposals already sit close to the objects, so its deltas are small).
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


# ---------------------------------------------------------------------------------------------- IoU
def box_area(boxes):
    """Area of each box: ``(x2 - x1) * (y2 - y1)``.

    boxes : N x 4 float ``(x1, y1, x2, y2)``
    returns N, same dtype.
    """
    return _box_area(check_boxes(boxes, "boxes"))


def _box_area(boxes):
    """The maths of ``box_area``: boxes N x 4 float (or B x N x 4, a batch of images' boxes: B x N)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _inter_union(boxes1, boxes2):
    """Pairwise intersection and union areas, N x M each (B x N x M for a batch: boxes1 B x N x 4, boxes2
    B x M x 4 or M x 4 shared by every image).

    The arithmetic is torchvision's, in this order, so results agree to the last bit:
    ``inter = max(0, min(x2) - max(x1)) * max(0, min(y2) - max(y1))``, ``union = area1 + area2 - inter``.
    """
    xp = backend.get_array_module(boxes1, boxes2)
    b1, b2 = boxes1[..., :, None, :], boxes2[..., None, :, :]
    # worked out in place (the same operations as new arrays, so the same numbers, in arrays still in the cache)
    inter = xp.minimum(b1[..., 2], b2[..., 2])
    inter -= xp.maximum(b1[..., 0], b2[..., 0])
    xp.maximum(inter, 0, out=inter)                             # the width of the overlap
    h = xp.minimum(b1[..., 3], b2[..., 3])
    h -= xp.maximum(b1[..., 1], b2[..., 1])
    inter *= xp.maximum(h, 0, out=h)                           # times its height
    area1 = _box_area(boxes1)
    area2 = area1 if boxes2 is boxes1 else _box_area(boxes2)    # NMS: the boxes against themselves
    union = area1[..., :, None] + area2[..., None, :]
    union -= inter
    return inter, union


def box_iou(boxes1, boxes2):
    """Intersection over union of every pair of boxes (lecture stage 1, "IoU").

    boxes1 : N x 4 float ``(x1, y1, x2, y2)``
    boxes2 : M x 4 float ``(x1, y1, x2, y2)``
    returns N x M, ``iou[i, j] = area(b1_i & b2_j) / area(b1_i | b2_j)`` in ``[0, 1]``, the inputs' dtype.

    Equal to ``torchvision.ops.box_iou`` except where the union is 0 (two zero-area boxes, e.g. the same
    point twice): there torchvision returns NaN (0 / 0) and this returns 0, so that a degenerate box never
    matches anything. Empty inputs give an empty ``N x M`` result.
    """
    xp = backend.get_array_module(boxes1, boxes2)
    boxes1 = check_boxes(boxes1, "boxes1", xp)
    boxes2 = check_boxes(boxes2, "boxes2", xp)
    return _box_iou(boxes1, boxes2)


def _box_iou(boxes1, boxes2):
    """The maths of ``box_iou``: boxes1 N x 4, boxes2 M x 4, float. The model's batched cores also hand it a
    batch, boxes1 B x N x 4 and boxes2 B x M x 4 (or M x 4), for B x N x M; per image the same numbers."""
    xp = backend.get_array_module(boxes1, boxes2)
    inter, union = _inter_union(boxes1, boxes2)
    # A zero union means two zero-area boxes (then inter is 0 too): IoU 0 instead of torchvision's 0/0 = NaN.
    return inter / xp.where(union > 0, union, 1)


# --------------------------------------------------------------------------------- encode / decode
def _size_centre(boxes):
    """Widths, heights and centres ``(w, h, cx, cy)`` of N x 4 boxes, each of length N (B x N for B x N x 4)."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return w, h, boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h


def box_encode(reference, targets, weights=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets that move each reference box onto its target (lecture stage 1, "box encoding").

    reference : N x 4 float, the boxes the deltas are relative to (anchors or proposals)
    targets   : N x 4 float, the ground-truth box matched to each reference box
    weights   : ``(wx, wy, ww, wh)``, positive; ``(10, 10, 5, 5)`` for the box head in torchvision
    returns N x 4 deltas ``(dx, dy, dw, dh)``, the common dtype of the inputs::

        dx = wx * (cx_t - cx_r) / w_r        dw = ww * log(w_t / w_r)
        dy = wy * (cy_t - cy_r) / h_r        dh = wh * log(h_t / h_r)

    The same numbers as torchvision's ``BoxCoder(weights).encode_single(targets, reference)`` (torchvision
    names the ground truth "reference_boxes"; here "reference" is the anchor, as on the slide). Every
    box needs a positive width and height (a ``ValueError`` otherwise: the division or the log would give
    inf or NaN).
    """
    xp = backend.get_array_module(reference, targets)
    reference = check_boxes(reference, "reference", xp)
    targets = check_boxes(targets, "targets", xp)
    check_same_length(reference, "reference", targets, "targets")
    _check_positive_size(reference, "reference")
    _check_positive_size(targets, "targets")
    return _box_encode(reference, targets, _weights(weights))


def _box_encode(reference, targets, weights=RPN_BOX_WEIGHTS):
    """The maths of ``box_encode``: reference, targets N x 4 float with positive sizes; weights 4 floats.
    The model's batched cores hand it a batch: targets B x N x 4 against reference N x 4 (or B x N x 4)."""
    xp = backend.get_array_module(reference, targets)
    wx, wy, ww, wh = weights
    rw, rh, rcx, rcy = _size_centre(reference)
    tw, th, tcx, tcy = _size_centre(targets)
    dx = wx * (tcx - rcx) / rw
    dy = wy * (tcy - rcy) / rh
    dw = ww * xp.log(tw / rw)
    dh = wh * xp.log(th / rh)
    return xp.stack([dx, dy, dw, dh], axis=-1)


def box_decode(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), clip=BBOX_XFORM_CLIP):
    """Apply regression deltas to reference boxes: the inverse of ``box_encode`` (lecture stage 1, "decoding").

    deltas    : N x 4K float, K sets of ``(dx, dy, dw, dh)`` per box (K = 1 for the RPN, one set per class
                for the box head)
    reference : N x 4 float, the anchors or proposals the deltas are relative to
    weights   : ``(wx, wy, ww, wh)``, positive, the ones ``box_encode`` used
    clip      : upper bound on ``dw / ww`` and ``dh / wh`` before ``exp`` (default ``log(1000 / 16)``, so a
                box grows at most 62.5 times); there is no lower bound, as in torchvision
    returns N x 4K boxes ``(x1, y1, x2, y2)``, columns ``4k:4k+4`` decoded from deltas ``4k:4k+4``::

        cx = dx / wx * w_r + cx_r     w = exp(min(dw / ww, clip)) * w_r     x1, x2 = cx -+ 0.5 * w
        cy = dy / wy * h_r + cy_r     h = exp(min(dh / wh, clip)) * h_r     y1, y2 = cy -+ 0.5 * h

    The same numbers as torchvision's ``BoxCoder(weights, clip).decode_single(deltas, reference)``.
    torchvision computes in the deltas' dtype; this computes in the common dtype of both inputs.
    """
    xp = backend.get_array_module(deltas, reference)
    deltas = _deltas(deltas, xp)
    reference = check_boxes(reference, "reference", xp)
    check_same_length(deltas, "deltas", reference, "reference")
    return _box_decode(deltas, reference, _weights(weights), number(clip, "clip", allow_inf=True))


def _box_decode(deltas, reference, weights=RPN_BOX_WEIGHTS, clip=BBOX_XFORM_CLIP):
    """The maths of ``box_decode``: deltas N x 4K, reference N x 4, float; weights 4 floats; clip a float."""
    xp = backend.get_array_module(deltas, reference)
    dtype = xp.result_type(deltas, reference)
    deltas, reference = deltas.astype(dtype, copy=False), reference.astype(dtype, copy=False)
    wx, wy, ww, wh = weights
    w, h, cx, cy = (v[:, None] for v in _size_centre(reference))
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    # Only an upper bound: a huge dw would overflow exp(), a very negative one only shrinks the box to 0.
    dw = xp.minimum(deltas[:, 2::4] / ww, clip)
    dh = xp.minimum(deltas[:, 3::4] / wh, clip)
    pred_cx = dx * w + cx
    pred_cy = dy * h + cy
    half_w = 0.5 * (xp.exp(dw) * w)
    half_h = 0.5 * (xp.exp(dh) * h)
    boxes = xp.stack([pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h], axis=2)
    return boxes.reshape(deltas.shape)


def box_decode_backward(dboxes, deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), clip=BBOX_XFORM_CLIP):
    """The gradient of ``box_decode`` with respect to its deltas (the reference boxes carry none).

    dboxes    : N x 4K, the loss's gradient with respect to the decoded boxes ``(x1, y1, x2, y2)``
    deltas, reference, weights, clip : what ``box_decode`` was given
    returns N x 4K, the gradient with respect to ``deltas``. With x1, x2 = cx -+ w / 2::

        dL/ddx = (dL/dx1 + dL/dx2) * w_r / wx
        dL/ddw = (dL/dx2 - dL/dx1) * (w / 2) / ww      0 where dw / ww was clipped

    and likewise for dy, dh with y1, y2 and the heights.
    """
    xp = backend.get_array_module(dboxes, deltas, reference)
    deltas = _deltas(deltas, xp)
    reference = check_boxes(reference, "reference", xp)
    dboxes = as_float_array(dboxes, "dboxes", xp)
    if tuple(dboxes.shape) != tuple(deltas.shape):
        raise ValueError(f"dboxes: expected the deltas' shape {tuple(deltas.shape)}, got {tuple(dboxes.shape)}")
    return _box_decode_backward(dboxes, deltas, reference, _weights(weights), number(clip, "clip", allow_inf=True))


def _box_decode_backward(dboxes, deltas, reference, weights=RPN_BOX_WEIGHTS, clip=BBOX_XFORM_CLIP):
    """The maths of ``box_decode_backward``: dboxes and deltas N x 4K, reference N x 4, float."""
    xp = backend.get_array_module(dboxes, deltas, reference)
    wx, wy, ww, wh = weights
    dtype = xp.result_type(dboxes, deltas, reference)
    w, h, _, _ = (v[:, None].astype(dtype) for v in _size_centre(reference))
    dw, dh = deltas[:, 2::4] / ww, deltas[:, 3::4] / wh
    half_w = 0.5 * xp.exp(xp.minimum(dw, clip)) * w
    half_h = 0.5 * xp.exp(xp.minimum(dh, clip)) * h
    g = dboxes.astype(dtype).reshape(len(dboxes), -1, 4)
    grad = xp.stack([(g[..., 0] + g[..., 2]) * w / wx,
                     (g[..., 1] + g[..., 3]) * h / wy,
                     xp.where(dw < clip, (g[..., 2] - g[..., 0]) * half_w / ww, 0.0),
                     xp.where(dh < clip, (g[..., 3] - g[..., 1]) * half_h / wh, 0.0)], axis=2)
    return grad.reshape(deltas.shape).astype(dtype, copy=False)


# ------------------------------------------------------------------------------------------------ NMS
_ITERATIONS_PER_CHECK = 6   # NMS's fixed-point iterations between two reads of "did anything change?"


def _greedy_keep(suppresses):
    """Solve greedy NMS on a score-sorted N x N "i suppresses j" matrix (True only for i < j).

    Greedy NMS keeps box j exactly when no *kept* earlier box overlaps it:

        keep[j] = not any(keep[i] and suppresses[i, j] for i < j)

    Each keep[j] depends only on keep[0:j], so the equation has exactly one solution, and iterating it
    from ``keep = all True`` finds it: after iteration t the first t + 1 entries are exact (keep[0] is
    always exact; entry t becomes exact once entries 0..t-1 are). So the loop stops after at most N
    iterations, and in practice after a handful: it only needs as many iterations as the longest chain of
    "A suppresses B, B would have suppressed C" decisions. Each iteration is one matrix-vector product.
    A batch of matrices, B x N x N, is solved at once (B x N; each image's answer is its own alone, and
    the loop runs as long as the slowest image needs). Whether an iteration changed anything is read back
    only every ``_ITERATIONS_PER_CHECK``-th (each read waits for the device): iterating past the solution
    leaves it as it is.
    """
    xp = backend.get_array_module(suppresses)
    # float32 counts are exact up to 2**24 boxes, and matmul runs on BLAS / cuBLAS.
    suppresses = suppresses.astype(xp.float32)

    def iterate(keep):
        return (keep.astype(xp.float32)[..., None, :] @ suppresses)[..., 0, :] == 0

    keep = xp.ones(suppresses.shape[:-1], dtype=bool)
    while True:
        for _ in range(_ITERATIONS_PER_CHECK - 1):
            keep = iterate(keep)
        new_keep = iterate(keep)
        if bool(xp.all(new_keep == keep)):
            return keep
        keep = new_keep


def nms(boxes, scores, iou_threshold):
    """Non-maximum suppression (lecture stage 1, "NMS"): indices of the boxes kept, by decreasing score.

    boxes         : N x 4 float ``(x1, y1, x2, y2)``
    scores        : N float, finite
    iou_threshold : in ``[0, 1]``; a box is dropped when its IoU with a higher-scored *kept* box is
                    strictly greater than this
    returns K int64 indices into ``boxes``, sorted by decreasing score, as ``torchvision.ops.nms``.

    Greedy NMS as a loop over boxes ("take the best, drop what it overlaps, repeat") would be a Python
    loop of N steps. Instead the boxes are sorted by score (a stable sort on ``-scores``: ties keep the
    lower index first, as torchvision) and their N x N IoU matrix is computed once; the greedy decisions
    are then the fixed point of ``keep[j] = not any_{i<j}(keep[i] and iou[i, j] > threshold)``, found by
    iterating from all-True (see ``_greedy_keep``: the kept prefix is exact after each iteration, so it
    converges in at most N iterations, in practice in a handful). Time and memory are O(N^2): a few
    N x N temporaries, about 70 MB for 2000 float32 boxes, which is why proposals are cut to the top few
    thousand by score before NMS.
    """
    xp = backend.get_array_module(boxes, scores)
    boxes = check_boxes(boxes, "boxes", xp)
    scores = _scores(scores, boxes, xp)
    return _nms(boxes, scores, number(iou_threshold, "iou_threshold", 0.0, 1.0))


def _nms(boxes, scores, iou_threshold):
    """The maths of ``nms``: boxes N x 4 and scores N, float (N may be 0); iou_threshold a float."""
    xp = backend.get_array_module(boxes, scores)
    if boxes.shape[0] == 0:
        return xp.zeros(0, dtype=xp.int64)
    # A stable sort of -scores: equal scores keep their input order (lower index first), as torchvision's
    # CPU kernel (a stable descending sort) does.
    order = xp.argsort(-scores, kind="stable")
    sorted_boxes = boxes[order]
    iou = _box_iou(sorted_boxes, sorted_boxes)
    # Strictly greater, as torchvision; the upper triangle because only a higher-scored box suppresses.
    suppresses = xp.triu(iou > iou_threshold, k=1)
    keep = _greedy_keep(suppresses)
    return order[xp.nonzero(keep)[0]].astype(xp.int64)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """Class-wise NMS: boxes of different classes never suppress each other.

    boxes         : N x 4 float ``(x1, y1, x2, y2)``
    scores        : N float, finite
    idxs          : N int, the class (or image) of each box
    iou_threshold : in ``[0, 1]``, as in ``nms``
    returns K int64 indices into ``boxes``, sorted by decreasing score.

    One NMS over all boxes, not a loop over classes: each class is moved to its own region of the plane,
    ``boxes + idxs * (max_coordinate + 1)``, so boxes of different classes cannot overlap (torchvision's
    coordinate trick; for N <= 1000 boxes torchvision itself runs exactly this, so the results are
    identical). torchvision assumes coordinates >= 0; where some are negative the shift here grows to
    ``max_coordinate - min_coordinate + 1`` so that classes still never touch (torchvision's shift can then
    let two classes overlap).
    """
    xp = backend.get_array_module(boxes, scores, idxs)
    boxes = check_boxes(boxes, "boxes", xp)
    scores = _scores(scores, boxes, xp)
    idxs = _class_indices(idxs, boxes, xp)
    return _batched_nms(boxes, scores, idxs, number(iou_threshold, "iou_threshold", 0.0, 1.0))


def _batched_nms(boxes, scores, idxs, iou_threshold):
    """The maths of ``batched_nms``: as ``_nms``, with idxs N integers."""
    xp = backend.get_array_module(boxes, scores)
    if boxes.shape[0] == 0:
        return xp.zeros(0, dtype=xp.int64)
    span = boxes.max() - xp.minimum(boxes.min(), 0) + 1
    offsets = idxs.astype(boxes.dtype) * span
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


# --------------------------------------------------------------------------------- clip and filter
def clip_boxes_to_image(boxes, image_size):
    """Clamp boxes to the image: ``0 <= x <= width``, ``0 <= y <= height``.

    boxes      : N x 4 float ``(x1, y1, x2, y2)``
    image_size : ``(height, width)`` in pixels (an int means a square image)
    returns N x 4, same dtype, as ``torchvision.ops.clip_boxes_to_image``.
    """
    return _clip_boxes_to_image(check_boxes(boxes, "boxes"), pair(image_size, "image_size"))


def _clip_boxes_to_image(boxes, image_size):
    """The maths of ``clip_boxes_to_image``: boxes N x 4 float; image_size ``(height, width)``."""
    xp = backend.get_array_module(boxes)
    height, width = image_size
    upper = xp.asarray([width, height, width, height], dtype=boxes.dtype)
    return xp.minimum(xp.maximum(boxes, 0), upper)


def remove_small_boxes(boxes, min_size):
    """Indices of the boxes whose width and height are both ``>= min_size``.

    boxes    : N x 4 float ``(x1, y1, x2, y2)``
    min_size : a number (pixels)
    returns K int64 indices in increasing order, as ``torchvision.ops.remove_small_boxes``.
    """
    return _remove_small_boxes(check_boxes(boxes, "boxes"), number(min_size, "min_size"))


def _remove_small_boxes(boxes, min_size):
    """The maths of ``remove_small_boxes``: boxes N x 4 float; min_size a number."""
    xp = backend.get_array_module(boxes)
    return xp.nonzero(_big_enough(boxes, min_size))[0].astype(xp.int64)


def _big_enough(boxes, min_size):
    """Which boxes (N x 4, or B x N x 4) are at least ``min_size`` wide and high: N (B x N) bool."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def _pad_images(rows_per_image, fill):
    """The rows of each image (a list of B arrays G_i x ...) in one B x G x ... array, G = max G_i (at least 1,
    so that row 0 can always be read), an image's missing rows set to ``fill``."""
    xp = backend.get_array_module(*rows_per_image)
    first, length = rows_per_image[0], max(1, *(len(a) for a in rows_per_image))
    padded = xp.full((len(rows_per_image), length) + first.shape[1:], fill, dtype=first.dtype)
    for i, rows in enumerate(rows_per_image):
        padded[i, :len(rows)] = rows
    return padded


def _real_rows(rows_per_image):
    """The B x G bool mask of the rows of ``_pad_images(rows_per_image, ...)`` that are real."""
    xp = backend.get_array_module(*rows_per_image)
    counts = [len(a) for a in rows_per_image]
    return xp.arange(max(1, *counts))[None, :] < xp.asarray(counts)[:, None]


# ----------------------------------------------------------------------------------------------- checks
# What the public functions check before they call the maths above.

def _weights(weights):
    """The four positive box-coding weights ``(wx, wy, ww, wh)`` as Python floats."""
    try:
        values = tuple(weights)
    except TypeError:
        raise ValueError(f"weights: expected 4 positive numbers (wx, wy, ww, wh), got {weights!r}") from None
    if len(values) != 4:
        raise ValueError(f"weights: expected 4 positive numbers (wx, wy, ww, wh), got {weights!r}")
    return tuple(number(w, "weights", 0, low_open=True) for w in values)


def _scores(scores, boxes, xp):
    """``scores`` as a finite 1-D float array with one score per box."""
    scores = as_float_array(scores, "scores", xp)
    check_ndim(scores, "scores", 1, "N scores, one per box (1-D)")
    check_same_length(boxes, "boxes", scores, "scores")
    check_finite(scores, "scores")
    return scores


def _check_positive_size(boxes, name):
    """Encoding divides by widths and takes logs of them: every box needs ``x2 > x1`` and ``y2 > y1``."""
    xp = backend.get_array_module(boxes)
    if boxes.shape[0] and not bool(xp.all((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))):
        raise ValueError(f"{name}: every box needs a positive width and height (x2 > x1, y2 > y1) to be encoded")


def _deltas(deltas, xp):
    """``deltas`` as a finite N x 4K float array (K >= 1 sets of ``(dx, dy, dw, dh)``)."""
    deltas = as_float_array(deltas, "deltas", xp)
    if deltas.ndim == 1 and deltas.size == 0:
        deltas = deltas.reshape(0, 4)
    if deltas.ndim != 2 or deltas.shape[1] == 0 or deltas.shape[1] % 4:
        raise ValueError(f"deltas: expected N x 4K deltas (dx, dy, dw, dh per class), got shape {tuple(deltas.shape)}")
    check_finite(deltas, "deltas")
    return deltas


def _class_indices(idxs, boxes, xp):
    """``idxs`` as a 1-D integer array with one class (or image) index per box."""
    idxs = xp.asarray(idxs)
    if idxs.size == 0:
        idxs = idxs.astype(xp.int64)  # ``[]`` arrives as float64
    if idxs.dtype.kind not in "iu":
        raise TypeError(f"idxs: expected integer class indices, got dtype {idxs.dtype}")
    check_ndim(idxs, "idxs", 1, "N class indices, one per box (1-D)")
    check_same_length(boxes, "boxes", idxs, "idxs")
    return idxs
