"""Stage 5 of the lecture: the losses of Mask R-CNN, each with its gradient right beside it.

Every function returns ``(loss, grad)``:

* ``loss``: a 0-d array of the prediction's float dtype (an array of the prediction's shape for
  ``reduction="none"``);
* ``grad``: the derivative of ``loss`` with respect to the prediction (``pred`` or the logits), with the
  prediction's shape. Targets and labels carry no gradient, as in the paper.

Each public function checks its inputs, then calls its core: the same name with a leading underscore
(``smooth_l1_loss`` -> ``_smooth_l1_loss``), which holds only the maths, in two halves, ``# forward`` and
``# backward``, so the derivative can be read next to the formula it differentiates. The model calls the
cores on arrays it made itself, so nothing is checked twice.

==========================  ===============================================  ==========================
loss                        used for                                         lecture slide
==========================  ===============================================  ==========================
``smooth_l1_loss``          box regression (RPN deltas, box-head deltas)     "smooth-L1"
``softmax_cross_entropy``   box-head classification over K + 1 classes       "softmax cross-entropy"
``binary_cross_entropy_``   RPN objectness                                   "object / not object"
``with_logits``
``sigmoid_mask_loss``       mask head: per-class sigmoid (Mask R-CNN)        "per-class sigmoid masks"
``softmax_mask_loss``       mask head: per-pixel softmax (the ablation)      "softmax vs sigmoid masks"
``giou_loss``               box head, instead of smooth-L1 (an ablation)     "IoU as L_box?"
==========================  ===============================================  ==========================

Semantics follow PyTorch (``torch.nn.functional``) and torchvision's ``maskrcnn_loss``, with one
departure: a *mean* over zero elements is 0 here (PyTorch returns NaN), so an image without positive
RoIs adds nothing to the total loss instead of poisoning it.
"""
from __future__ import annotations

from . import backend
from ._validate import as_float_array, check_finite, check_ndim
from .activations import _sigmoid_from, log_softmax

__all__ = ["smooth_l1_loss", "softmax_cross_entropy", "binary_cross_entropy_with_logits",
           "sigmoid_mask_loss", "softmax_mask_loss", "giou_loss"]

REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------------------------------
# the losses, each public function followed by its core
# ----------------------------------------------------------------------------------------------------

def smooth_l1_loss(pred, target, beta=1.0, reduction="mean"):
    """Smooth-L1 (Huber-like) loss of box-regression deltas, as ``torch.nn.functional.smooth_l1_loss``.

    Lecture slide "smooth-L1" (beta = 1): ``0.5 x^2 if |x| < 1 else |x| - 0.5``, quadratic near 0 so
    small errors get small gradients, linear far out so one bad box cannot dominate.

    pred      : any shape, float32 or float64 (e.g. N x 4 deltas (dx, dy, dw, dh))
    target    : pred's shape; cast to pred's dtype
    beta      : float >= 0, where the quadratic part meets the linear one; ``beta == 0`` is the L1 loss
    reduction : "mean" (over all elements; 0 for an empty input, where PyTorch gives NaN), "sum" or "none"

    Maths, with x = pred - target:

        forward   l(x)     = 0.5 x^2 / beta     if |x| < beta
                           = |x| - 0.5 beta     otherwise
        backward  dl/dx    = x / beta           if |x| < beta
                           = sign(x)            otherwise (sign(0) = 0, as PyTorch)

    "mean" divides both by the number of elements; the gradient for ``target`` is ``-grad``.

    Returns ``(loss, grad)``: ``loss`` 0-d (pred's shape for "none"), ``grad`` pred's shape, pred's dtype.
    """
    xp = backend.get_array_module(pred, target)
    pred = _float_input(pred, "pred", xp)
    target = _float_input(target, "target", xp, dtype=pred.dtype)
    _check_same_shape(pred, "pred", target, "target")
    _check_reduction(reduction)
    return _smooth_l1_loss(pred, target, _check_beta(beta), reduction)


def _smooth_l1_loss(pred, target, beta, reduction):
    """The maths of ``smooth_l1_loss``: pred, target one shape and float dtype; beta a float >= 0."""
    xp = backend.get_array_module(pred)
    # beta == 0 leaves no quadratic part (plain L1); dividing by 1 there only avoids a 0/0 nobody uses
    quad_beta = beta if beta > 0 else 1.0

    # forward
    x = pred - target
    abs_x = xp.abs(x)
    inside = abs_x < beta
    loss = xp.where(inside, 0.5 * x * x / quad_beta, abs_x - 0.5 * beta)

    # backward
    grad = xp.where(inside, x / quad_beta, xp.sign(x))
    return _reduce(loss, grad, reduction)


def _reduce(loss, grad, reduction):
    """Apply ``reduction`` ("mean", "sum" or "none") to an elementwise loss and its elementwise derivative."""
    xp = backend.get_array_module(loss)
    if reduction == "none":
        return loss, grad
    if reduction == "sum":
        return xp.asarray(loss.sum(), dtype=loss.dtype), grad
    scale = _mean_scale(loss.size, loss.dtype, xp)
    return xp.asarray(loss.sum() * scale, dtype=loss.dtype), grad * scale


def _mean_scale(count, dtype, xp):
    """``1 / count`` for a mean, and 0 for a mean over nothing (PyTorch gives NaN there)."""
    return xp.asarray(1.0 / count if count else 0.0, dtype=dtype)


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy of classification logits, as ``torch.nn.functional.cross_entropy``.

    Lecture slide "softmax cross-entropy": the box head scores K classes (background = 0 included) and
    pays ``-log p[label]``, with ``p = softmax(logits)``.

    logits : N x K float32 or float64 (N RoIs or anchors, K classes)
    labels : N integers in [0, K)

    Maths, per row, with z the logits:

        forward   loss = log(sum_k exp(z_k)) - z[label]          (computed after subtracting max_k z_k)
        backward  dloss/dz = softmax(z) - onehot(label)

    both divided by N (the mean). N == 0 gives loss 0 (PyTorch gives NaN) and an N x K zero gradient.

    Returns ``(loss, dlogits)``: ``loss`` 0-d, ``dlogits`` N x K, the logits' dtype.
    """
    xp = backend.get_array_module(logits, labels)
    logits = _float_input(logits, "logits", xp)
    check_ndim(logits, "logits", 2, "N x K logits")
    _check_classes(logits, "logits")
    labels = _int_labels(labels, "labels", logits.shape[0], 0, logits.shape[1], xp)
    return _softmax_cross_entropy(logits, labels)


def _softmax_cross_entropy(logits, labels):
    """The maths of ``softmax_cross_entropy``, softmax along axis 1, mean over every label.

    logits : N x K float (or R x K x m x m: the per-pixel softmax of the mask loss)
    labels : logits' shape without axis 1, integers in [0, K)
    """
    xp = backend.get_array_module(logits)
    scale = _mean_scale(labels.size, logits.dtype, xp)
    labels = xp.expand_dims(labels, 1)

    # forward: -log p[label], p = softmax(logits)
    log_p = log_softmax(logits, axis=1)
    loss = -xp.take_along_axis(log_p, labels, axis=1).sum()

    # backward: p - onehot(label)
    classes = xp.arange(logits.shape[1]).reshape((1, -1) + (1,) * (logits.ndim - 2))
    dlogits = xp.exp(log_p) - (classes == labels).astype(logits.dtype)
    return xp.asarray(loss * scale, dtype=logits.dtype), dlogits * scale


def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    """Binary cross-entropy on raw scores, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Lecture slide "object / not object": the RPN objectness loss, one logit per sampled anchor.

    logits    : any shape, float32 or float64 (e.g. A sampled anchors)
    targets   : logits' shape, values in [0, 1] (1 object, 0 not object); cast to the logits' dtype
    reduction : "mean" (0 for an empty input, where PyTorch gives NaN), "sum" or "none"

    Maths, with x a logit, t its target and s = sigmoid(x):

        forward   l = -t log s - (1 - t) log(1 - s)
                    = max(x, 0) - x t + log(1 + exp(-|x|))        (the stable form: exp never overflows)
        backward  dl/dx = s - t

    "mean" divides both by the number of elements.

    Returns ``(loss, dlogits)``: ``loss`` 0-d (logits' shape for "none"), ``dlogits`` logits' shape.
    """
    xp = backend.get_array_module(logits, targets)
    logits = _float_input(logits, "logits", xp)
    targets = _float_input(targets, "targets", xp, dtype=logits.dtype)
    _check_same_shape(logits, "logits", targets, "targets")
    _check_unit_interval(targets, "targets")
    _check_reduction(reduction)
    return _binary_cross_entropy_with_logits(logits, targets, reduction)


def _binary_cross_entropy_with_logits(logits, targets, reduction):
    """The maths of ``binary_cross_entropy_with_logits``: logits, targets one shape and float dtype."""
    xp = backend.get_array_module(logits)
    x, t = logits, targets

    # forward, elementwise: -t log s - (1 - t) log(1 - s), s = sigmoid(x), in its stable form
    e = xp.exp(-xp.abs(x))                 # the loss and its gradient both need it
    loss = xp.maximum(x, 0) - x * t + xp.log1p(e)

    # backward
    grad = _sigmoid_from(x, e) - t
    return _reduce(loss, grad, reduction)


def sigmoid_mask_loss(mask_logits, labels, mask_targets):
    """Mask R-CNN's mask loss: per-pixel sigmoid on each RoI's own class channel, as torchvision.

    Lecture slide "per-class sigmoid masks": the mask head predicts K masks per RoI and only the one of
    the RoI's class is trained, so classes do not compete for a pixel (the classification branch already
    chose the class). torchvision's ``maskrcnn_loss`` computes
    ``F.binary_cross_entropy_with_logits(mask_logits[arange(R), labels], mask_targets)``.

    mask_logits  : R x K x m x m float32 or float64 (R positive RoIs, K classes, background = channel 0)
    labels       : R integers in [1, K), the class of each RoI
    mask_targets : R x m x m floats in [0, 1], the ground-truth mask cropped to each RoI

    Maths, with x = mask_logits[r, labels[r], i, j], t = mask_targets[r, i, j] and s = sigmoid(x):

        forward   loss = 1 / (R m m) * sum_{r, i, j} max(x, 0) - x t + log(1 + exp(-|x|))
        backward  dloss/dx = (s - t) / (R m m)     on channel labels[r] of RoI r
                           = 0                      on the other K - 1 channels

    R == 0 gives loss 0 and a zero gradient (torchvision returns ``mask_logits.sum() * 0``).

    Returns ``(loss, dmask_logits)``: ``loss`` 0-d, ``dmask_logits`` R x K x m x m, mask_logits' dtype.
    """
    return _sigmoid_mask_loss(*_mask_inputs(mask_logits, labels, mask_targets))


def _sigmoid_mask_loss(mask_logits, labels, mask_targets):
    """The maths of ``sigmoid_mask_loss``: mask_logits R x K x m x m float, labels R integers in [1, K),
    mask_targets R x m x m of mask_logits' dtype."""
    xp = backend.get_array_module(mask_logits)
    rois = xp.arange(mask_logits.shape[0])

    # forward: binary cross-entropy on each RoI's own channel (R x m x m), the mean over RoIs and pixels
    loss, grad_own = _binary_cross_entropy_with_logits(mask_logits[rois, labels], mask_targets, "mean")

    # backward: the own channel gets (s - t) / (R m m), the others nothing (each (r, label) is hit once:
    # no scatter-add)
    dmask_logits = xp.zeros_like(mask_logits)
    dmask_logits[rois, labels] = grad_own
    return loss, dmask_logits


def softmax_mask_loss(mask_logits, labels, mask_targets):
    """The mask loss Mask R-CNN replaced: a per-pixel softmax over all K channels (the paper's ablation).

    Lecture slide "softmax vs sigmoid masks": here the K masks of a RoI compete for each pixel, as in an
    FCN for semantic segmentation. A pixel inside the object (``mask_targets >= 0.5``) is of the RoI's
    class, any other pixel of class 0 (background). The paper measured 5.5 mask AP less than the sigmoid.

    mask_logits  : R x K x m x m float32 or float64 (background = channel 0)
    labels       : R integers in [1, K), the class of each RoI
    mask_targets : R x m x m floats in [0, 1]

    Maths, with z = mask_logits[r, :, i, j] and c = labels[r] if mask_targets[r, i, j] >= 0.5 else 0:

        forward   loss = 1 / (R m m) * sum_{r, i, j} log(sum_k exp(z_k)) - z_c
        backward  dloss/dz = (softmax(z) - onehot(c)) / (R m m)     on every channel

    R == 0 gives loss 0 and a zero gradient.

    Returns ``(loss, dmask_logits)``: ``loss`` 0-d, ``dmask_logits`` R x K x m x m, mask_logits' dtype.
    """
    return _softmax_mask_loss(*_mask_inputs(mask_logits, labels, mask_targets))


def _softmax_mask_loss(mask_logits, labels, mask_targets):
    """The maths of ``softmax_mask_loss``: mask_logits R x K x m x m float, labels R integers in [1, K),
    mask_targets R x m x m of mask_logits' dtype."""
    xp = backend.get_array_module(mask_logits)
    # the per-pixel class: the RoI's label inside the object, background outside; R x m x m
    pixel_class = xp.where(mask_targets >= 0.5, labels[:, None, None], 0)
    # forward and backward: softmax cross-entropy along axis 1 (the K channels), the mean over every pixel
    return _softmax_cross_entropy(mask_logits, pixel_class)


def giou_loss(pred_boxes, target_boxes, reduction="sum", eps=1e-7):
    """Generalized-IoU loss ``1 - GIoU`` of predicted boxes (``torchvision.ops.generalized_box_iou_loss``).

    The lecture asks whether IoU itself could be the box loss. Plain ``1 - IoU`` has no gradient once the
    boxes stop overlapping; GIoU (Rezatofighi et al., 2019) subtracts the share of the smallest enclosing box
    C that the union U does not cover, which still pulls disjoint boxes together:

        I = |A n B|,  U = |A| + |B| - I,  C = |smallest box holding A and B|
        GIoU = I / (U + eps) - (C - U) / (C + eps),    loss = 1 - GIoU in [0, 2]

    pred_boxes   : N x 4 float ``(x1, y1, x2, y2)``, x2 >= x1 and y2 >= y1
    target_boxes : N x 4 float, the matched ground truth (no gradient)
    reduction    : "sum" (default, as torchvision's loss), "mean" or "none"
    Returns ``(loss, dpred_boxes)``. Backward, with dL/dI = -1/(U+eps) + dL/dU(-1) and the chain rule through
    the min/max corners::

        dL/dU = I / (U + eps)^2 - 1 / (C + eps)        dL/dC = (U + eps) / (C + eps)^2

    Where two corners tie in a min or max, the predicted box's corner takes the gradient.
    """
    pred_boxes = as_float_array(pred_boxes, "pred_boxes")
    xp = backend.get_array_module(pred_boxes)
    target_boxes = _float_input(target_boxes, "target_boxes", xp, pred_boxes.dtype)
    _check_reduction(reduction)
    for a, name in ((pred_boxes, "pred_boxes"), (target_boxes, "target_boxes")):
        if a.ndim != 2 or a.shape[1] != 4:
            raise ValueError(f"{name}: expected N x 4 boxes, got shape {tuple(a.shape)}")
        check_finite(a, name)
    _check_same_shape(pred_boxes, "pred_boxes", target_boxes, "target_boxes")
    return _giou_loss(pred_boxes, target_boxes, reduction, eps)


def _giou_loss(pred_boxes, target_boxes, reduction, eps):
    """The maths of ``giou_loss``: pred_boxes, target_boxes N x 4 of one float dtype; eps a small float."""
    xp = backend.get_array_module(pred_boxes)
    x1, y1, x2, y2 = (pred_boxes[:, i] for i in range(4))
    gx1, gy1, gx2, gy2 = (target_boxes[:, i] for i in range(4))

    # forward
    iw, ih = xp.minimum(x2, gx2) - xp.maximum(x1, gx1), xp.minimum(y2, gy2) - xp.maximum(y1, gy1)
    overlap = (iw > 0) & (ih > 0)
    inter = xp.where(overlap, iw * ih, 0.0)
    union = (x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - inter
    cw, ch = xp.maximum(x2, gx2) - xp.minimum(x1, gx1), xp.maximum(y2, gy2) - xp.minimum(y1, gy1)
    hull = cw * ch
    loss = 1.0 - inter / (union + eps) + (hull - union) / (hull + eps)

    # backward: through I, U = A_pred + A_gt - I and C to the four corners of the predicted box
    d_union = inter / (union + eps) ** 2 - 1.0 / (hull + eps)
    d_inter = -1.0 / (union + eps) - d_union
    d_hull = (union + eps) / (hull + eps) ** 2
    di_w, di_h = xp.where(overlap, d_inter * ih, 0.0), xp.where(overlap, d_inter * iw, 0.0)
    pw, ph = x2 - x1, y2 - y1
    grad = xp.stack([
        -d_union * ph - di_w * (x1 >= gx1) - d_hull * ch * (x1 <= gx1),
        -d_union * pw - di_h * (y1 >= gy1) - d_hull * cw * (y1 <= gy1),
        d_union * ph + di_w * (x2 <= gx2) + d_hull * ch * (x2 >= gx2),
        d_union * pw + di_h * (y2 <= gy2) + d_hull * cw * (y2 >= gy2)], axis=1)
    return _reduce(loss, grad, reduction)


# ----------------------------------------------------------------------------------------------------
# input checks of the public functions (the cores above trust their inputs)
# ----------------------------------------------------------------------------------------------------

def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")


def _check_beta(beta):
    """``beta`` as a Python float >= 0."""
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta: expected a finite number >= 0, got {beta!r}") from None
    if not 0 <= beta < float("inf"):
        raise ValueError(f"beta: expected a finite number >= 0, got {beta!r}")
    return beta


def _check_classes(logits, name):
    """At least one class along axis 1 (a softmax over nothing has no value)."""
    if logits.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one class along axis 1, got shape {tuple(logits.shape)}")


def _float_input(a, name, xp, dtype=None):
    """``a`` as a finite float array of ``xp`` (cast to ``dtype`` when given, e.g. a target to its prediction's)."""
    a = as_float_array(a, name, xp)
    if dtype is not None:
        a = a.astype(dtype, copy=False)
    check_finite(a, name)
    return a


def _check_same_shape(a, a_name, b, b_name):
    if a.shape != b.shape:
        raise ValueError(f"{b_name}: expected shape {tuple(a.shape)} to match {a_name}, got {tuple(b.shape)}")


def _check_unit_interval(a, name):
    """Targets are probabilities: a mask of 0/255 or a label of 2 is a bug, not a target."""
    xp = backend.get_array_module(a)
    if a.size and bool(xp.any((a < 0) | (a > 1))):
        raise ValueError(f"{name}: expected values in [0, 1]")


def _int_labels(labels, name, n, low, high, xp):
    """``labels`` as a 1-D integer array of length ``n`` with every value in ``[low, high)``."""
    labels = xp.asarray(labels)
    if labels.size == 0 and labels.dtype.kind not in "iu":
        labels = labels.astype(xp.int64)  # an empty Python list arrives as float64
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class indices, got dtype {labels.dtype}")
    check_ndim(labels, name, 1, f"{n} class indices (a 1-D array)")
    if labels.shape[0] != n:
        raise ValueError(f"{name}: expected {n} class indices, got {labels.shape[0]}")
    if n and bool(xp.any((labels < low) | (labels >= high))):
        raise ValueError(f"{name}: expected class indices in [{low}, {high - 1}], "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
    return labels


def _mask_inputs(mask_logits, labels, mask_targets):
    """The mask losses' inputs checked: ``(mask_logits, labels, mask_targets)`` as arrays of one module."""
    xp = backend.get_array_module(mask_logits, labels, mask_targets)
    mask_logits = _float_input(mask_logits, "mask_logits", xp)
    check_ndim(mask_logits, "mask_logits", 4, "R x K x m x m mask logits")
    _check_classes(mask_logits, "mask_logits")
    r, k, mh, mw = mask_logits.shape
    labels = _int_labels(labels, "labels", r, 1, k, xp)
    mask_targets = _float_input(mask_targets, "mask_targets", xp, dtype=mask_logits.dtype)
    if mask_targets.shape != (r, mh, mw):
        raise ValueError(f"mask_targets: expected shape {(r, mh, mw)} (R x m x m, as mask_logits), "
                         f"got {tuple(mask_targets.shape)}")
    _check_unit_interval(mask_targets, "mask_targets")
    return mask_logits, labels, mask_targets
