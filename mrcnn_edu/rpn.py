"""Lecture stage 3, the Region Proposal Network: anchor labels, the 256-anchor mini-batch, regression
targets, the RPN loss and proposals.

Training (slides "RPN: which anchors are objects" and "RPN mini-batch"):

    IoU matrix (G x A)  ->  match_anchors   ->  matched gt per anchor (-1 below low, -2 in between)
                        ->  label_anchors   ->  1 object / 0 not object / -1 ignored
                        ->  sample_balanced ->  at most 256 anchors, at most half of them objects
                        ->  rpn_targets     ->  labels after sampling + box_encode(anchor, gt) deltas
                        ->  rpn_loss        ->  BCE on sampled anchors + smooth-L1 on sampled objects

Inference (slide "RPN proposals"): ``generate_proposals`` keeps the top-k anchors by objectness, decodes
their deltas, clips to the image, drops tiny boxes and runs NMS.

Everything follows torchvision (``models/detection/_utils.py`` ``Matcher`` and
``BalancedPositiveNegativeSampler``, ``models/detection/rpn.py``), vectorized: no Python loop over anchors
or boxes. The matcher and the sampler, which the box head uses too, live in ``matching.py`` (and are
importable from here). Each public function checks its inputs, then calls its core ``_<name>``, which
holds only the maths; the model calls the cores. Boxes are ``(x1, y1, x2, y2)`` in continuous pixel
coordinates (width ``x2 - x1``). Shapes: A anchors, G ground-truth boxes, P proposals, N images.
"""
from __future__ import annotations

from . import backend
from .activations import sigmoid
from ._validate import as_float_array, check_boxes, check_finite, check_ndim, check_same_length, number, pair
from .boxes import (RPN_BOX_WEIGHTS, _big_enough, _box_decode, _box_encode, _box_iou, _check_positive_size,
                    _clip_boxes_to_image, _greedy_keep, _nms, _pad_images, _real_rows, _remove_small_boxes)
from .losses import _binary_cross_entropy_with_logits, _smooth_l1_loss
# The matcher and the sampler are shared with the box head; they stay importable from here (lesson 03 does).
from .matching import (BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, BOX_BETA, _check_rng, _check_sampler,
                       _check_thresholds, _match_by_iou, _sample_balanced, match_by_iou, sample_balanced)

__all__ = ["BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS", "match_by_iou", "match_anchors", "label_anchors",
           "sample_balanced", "rpn_targets", "rpn_loss", "generate_proposals", "generate_proposals_batch"]


# ---------------------------------------------------------------------------------------------------------
# Matching and labels (slide "RPN: which anchors are objects"); the matcher itself is matching.match_by_iou.

def match_anchors(gt_boxes, anchors, high=0.7, low=0.3, allow_low_quality=True):
    """Matched ground-truth index per anchor (torchvision ``Matcher`` on ``box_iou(gt_boxes, anchors)``).

    gt_boxes : G x 4 float (x1, y1, x2, y2) ground-truth boxes
    anchors  : A x 4 float (x1, y1, x2, y2), same dtype family
    Returns A int64: index in [0, G) for an object anchor, -1 when its best IoU is < ``low`` ("not
    object"), -2 when it is in [low, high) ("ignored"). With ``allow_low_quality`` each ground truth's
    best anchors (ties included) are matched even below ``high``; see ``match_by_iou``.

    Note: the lecture says "object = IoU > 0.7"; torchvision, and this function, use IoU >= 0.7.
    """
    gt_boxes = check_boxes(gt_boxes, "gt_boxes")
    anchors = check_boxes(anchors, "anchors")
    _check_thresholds(high, low)
    return _match_anchors(gt_boxes, anchors, high, low, allow_low_quality)


def _match_anchors(gt_boxes, anchors, high=0.7, low=0.3, allow_low_quality=True):
    """The maths of ``match_anchors``: gt_boxes G x 4, anchors A x 4, float."""
    return _match_by_iou(_box_iou(gt_boxes, anchors), high, low, allow_low_quality)


def label_anchors(anchors, gt_boxes, high=0.7, low=0.3):
    """Anchor labels before sampling, as torchvision ``RegionProposalNetwork.assign_targets_to_anchors``.

    anchors  : A x 4 float (x1, y1, x2, y2)
    gt_boxes : G x 4 float (x1, y1, x2, y2); G may be 0 (a background image)
    Returns ``(labels, matches)``:
      labels  : A float (dtype of ``anchors``): 1 object (IoU >= high or a ground truth's best anchor),
                0 not object (best IoU < low), -1 ignored (in between)
      matches : A int64, the matched ground-truth index or -1 / -2 as ``match_anchors``
    An image without ground truth labels every anchor 0 (all "not object") and matches -1.
    """
    anchors, gt_boxes = _anchors_and_gt(anchors, gt_boxes)
    _check_thresholds(high, low)
    return _label_anchors(anchors, gt_boxes, high, low)


def _label_anchors(anchors, gt_boxes, high=0.7, low=0.3):
    """The maths of ``label_anchors``: anchors A x 4, gt_boxes G x 4, one float dtype."""
    matches = _match_by_iou(_box_iou(gt_boxes, anchors), high, low, allow_low_quality=True)
    return _anchor_labels(matches, anchors.dtype), matches


def _anchor_labels(matches, dtype):
    """1 object (matched), -1 ignored (between the thresholds), 0 not object, from the matcher's codes."""
    xp = backend.get_array_module(matches)
    return xp.where(matches >= 0, 1.0, xp.where(matches == BETWEEN_THRESHOLDS, -1.0, 0.0)).astype(dtype)


# ---------------------------------------------------------------------------------------------------------
# The mini-batch and its targets (slide "RPN mini-batch: 256 anchors, up to 1:1"); the sampler itself is
# matching.sample_balanced.

def rpn_targets(anchors, gt_boxes, rng, batch_size_per_image=256, positive_fraction=0.5, high=0.7, low=0.3):
    """Labels and regression targets of one image's anchors, after sampling the mini-batch.

    anchors  : A x 4 float (x1, y1, x2, y2)
    gt_boxes : G x 4 float (x1, y1, x2, y2); G may be 0
    rng      : random generator of the backend
    Returns ``(labels, regression_targets)``:
      labels             : A float (dtype of ``anchors``): 1 sampled object, 0 sampled not-object, -1 not
                           in the mini-batch (ignored anchors and anchors the sampler left out)
      regression_targets : A x 4 float, ``box_encode(anchor, matched gt)`` with weights (1, 1, 1, 1), for
                           every anchor as in torchvision (only the sampled objects enter the loss); an
                           anchor that is not an object is encoded against ground truth 0, and an image
                           without ground truth gets zeros.
    """
    anchors, gt_boxes = _anchors_and_gt(anchors, gt_boxes)
    _check_positive_size(anchors, "anchors")    # the targets divide by the anchors' sizes and take logs
    _check_positive_size(gt_boxes, "gt_boxes")
    _check_thresholds(high, low)
    _check_sampler(batch_size_per_image, positive_fraction)
    _check_rng(rng)
    return _rpn_targets(anchors, gt_boxes, rng, batch_size_per_image, positive_fraction, high, low)


def _rpn_targets(anchors, gt_boxes, rng, batch_size_per_image=256, positive_fraction=0.5, high=0.7, low=0.3):
    """The maths of ``rpn_targets``: anchors A x 4, gt_boxes G x 4 (G may be 0), one float dtype, sizes > 0."""
    xp = backend.get_array_module(anchors)
    labels, matches = _label_anchors(anchors, gt_boxes, high, low)
    pos, neg = _sample_balanced(labels, rng, batch_size_per_image, positive_fraction)
    sampled_labels = _sampled_labels(pos, neg, anchors.dtype)
    if gt_boxes.shape[0] == 0:
        return sampled_labels, xp.zeros_like(anchors)
    return sampled_labels, _box_encode(anchors, gt_boxes[xp.maximum(matches, 0)], RPN_BOX_WEIGHTS)


def _sampled_labels(pos, neg, dtype):
    """1 sampled object, 0 sampled not-object, -1 not in the mini-batch."""
    xp = backend.get_array_module(pos)
    return xp.where(pos, 1.0, xp.where(neg, 0.0, -1.0)).astype(dtype)


def _rpn_targets_batch(anchors, gt_boxes_per_image, rng, batch_size_per_image=256, positive_fraction=0.5,
                       high=0.7, low=0.3):
    """``_rpn_targets`` of every image of a batch at once: anchors A x 4, a list of B arrays G_i x 4 of the
    anchors' dtype. Returns labels B x A and regression targets B x A x 4, each image's row equal to
    ``_rpn_targets`` on that image alone, the sampler's random draws included (``_rpn_targets_each``).

    The images' ground truths are padded to the longest (B x G x 4); a padded row gets IoU -1 with every
    anchor, which the matcher reads as "no ground truth here". An image without objects encodes each anchor
    against itself: the zero deltas ``_rpn_targets`` gives it.
    """
    xp = backend.get_array_module(anchors)
    gt_boxes, real = _pad_images(gt_boxes_per_image, 0.0), _real_rows(gt_boxes_per_image)   # B x G x 4, B x G
    iou = xp.where(real[..., None], _box_iou(gt_boxes, anchors), -1.0)     # B x G x A
    matches = _match_by_iou(iou, high, low, allow_low_quality=True)        # B x A
    pos, neg = _sample_balanced(_anchor_labels(matches, anchors.dtype), rng, batch_size_per_image,
                                positive_fraction)
    matched = gt_boxes[xp.arange(len(gt_boxes))[:, None], xp.maximum(matches, 0)]    # B x A x 4
    matched = xp.where(real.any(axis=1)[:, None, None], matched, anchors)  # no objects: the anchor, deltas 0
    return _sampled_labels(pos, neg, anchors.dtype), _box_encode(anchors, matched, RPN_BOX_WEIGHTS)


def _rpn_targets_each(anchors, gt_boxes_per_image, rng, batch_size_per_image=256, positive_fraction=0.5,
                      high=0.7, low=0.3):
    """``_rpn_targets_batch`` image by image, through ``_rpn_targets`` (the capstone's stand-in for the batched
    core while a student's per-image function is in place)."""
    xp = backend.get_array_module(anchors)
    labels, targets = zip(*(_rpn_targets(anchors, gt, rng, batch_size_per_image, positive_fraction, high, low)
                            for gt in gt_boxes_per_image))
    return xp.stack(labels), xp.stack(targets)


# ---------------------------------------------------------------------------------------------------------
# The RPN loss (slide "RPN multi-task loss").

def rpn_loss(objectness, deltas, labels, regression_targets):
    """Objectness and box losses of the RPN, with their gradients (torchvision ``RPN.compute_loss``).

    objectness         : (...) float logits, one per anchor (A, or N x A for a batch)
    deltas             : (..., 4) float predicted (dx, dy, dw, dh) per anchor
    labels             : (...) float after sampling: 1 object, 0 not object, -1 not in the mini-batch
    regression_targets : (..., 4) float target deltas
    Returns ``(loss_objectness, loss_box, dobjectness, ddeltas)``:
      loss_objectness = mean over the S sampled anchors of BCE-with-logits(objectness, label)
      loss_box        = sum over the sampled objects of smooth-L1(deltas - targets, beta=1/9) / S
      dobjectness, ddeltas: gradients with the shapes of ``objectness`` and ``deltas`` (zero outside the
      mini-batch). With S == 0 both losses are 0 (torchvision would return NaN).
    """
    objectness = as_float_array(objectness, "objectness")
    xp = backend.get_array_module(objectness)
    deltas = as_float_array(deltas, "deltas", xp)
    labels = as_float_array(labels, "labels", xp)
    regression_targets = as_float_array(regression_targets, "regression_targets", xp)
    _check_loss_inputs(objectness, deltas, labels, regression_targets)
    return _rpn_loss(objectness, deltas, labels.astype(objectness.dtype, copy=False),
                     regression_targets.astype(deltas.dtype, copy=False))


def _rpn_loss(objectness, deltas, labels, regression_targets):
    """The maths of ``rpn_loss``: objectness and labels (...) of one float dtype (labels -1, 0, 1),
    deltas and regression_targets (..., 4) of one float dtype."""
    xp = backend.get_array_module(objectness)
    logits, d4 = objectness.reshape(-1), deltas.reshape(-1, 4)
    flat_labels, t4 = labels.reshape(-1), regression_targets.reshape(-1, 4)
    sampled = xp.nonzero(flat_labels >= 0)[0]
    positive = xp.nonzero(flat_labels == 1)[0]
    num_sampled = int(sampled.shape[0])
    dlogits, dd4 = xp.zeros_like(logits), xp.zeros_like(d4)
    zero = xp.zeros((), dtype=objectness.dtype)
    if num_sampled == 0:
        return zero, zero.copy(), dlogits.reshape(objectness.shape), dd4.reshape(deltas.shape)
    loss_obj, grad_obj = _binary_cross_entropy_with_logits(logits[sampled], flat_labels[sampled], "mean")
    dlogits[sampled] = grad_obj
    loss_box = zero
    if positive.shape[0]:
        box_sum, grad_box = _smooth_l1_loss(d4[positive], t4[positive], BOX_BETA, "sum")
        loss_box = xp.asarray(box_sum / num_sampled, dtype=objectness.dtype)
        dd4[positive] = grad_box / num_sampled
    return loss_obj, loss_box, dlogits.reshape(objectness.shape), dd4.reshape(deltas.shape)


# ---------------------------------------------------------------------------------------------------------
# Proposals (slide "RPN proposals: decode, clip, NMS").

def generate_proposals(anchors, objectness, deltas, image_size, pre_nms_top_n=2000, post_nms_top_n=2000,
                       nms_thresh=0.7, min_size=1e-3, score_thresh=0.0):
    """Proposals of ONE image and one feature level (torchvision ``RPN.filter_proposals``).

    anchors    : A x 4 float (x1, y1, x2, y2)
    objectness : A float logits
    deltas     : A x 4 float (dx, dy, dw, dh), weights (1, 1, 1, 1)
    image_size : (height, width) in pixels
    Steps: keep the ``pre_nms_top_n`` anchors of highest objectness; decode their deltas (dw, dh clamped
    at log(1000/16)); clip to the image; drop boxes with a side < ``min_size``; drop boxes whose sigmoid
    score is < ``score_thresh``; NMS at ``nms_thresh``; keep the ``post_nms_top_n`` best.
    Returns ``(boxes, scores)``: P x 4 float boxes inside the image and P float sigmoid probabilities,
    sorted by decreasing score. Proposals carry no gradient.
    """
    anchors = check_boxes(anchors, "anchors")
    xp = backend.get_array_module(anchors)
    objectness = as_float_array(objectness, "objectness", xp)
    deltas = as_float_array(deltas, "deltas", xp)
    _check_proposal_inputs(anchors, objectness, deltas)
    image_size = pair(image_size, "image_size")
    settings = _proposal_settings(pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh)
    return _generate_proposals(anchors, objectness, deltas, image_size, *settings)


def _generate_proposals(anchors, objectness, deltas, image_size, pre_nms_top_n=2000, post_nms_top_n=2000,
                        nms_thresh=0.7, min_size=1e-3, score_thresh=0.0):
    """The maths of ``generate_proposals``: anchors A x 4, objectness A, deltas A x 4, float; image_size
    ``(height, width)``; the rest as the public function's, already checked."""
    xp = backend.get_array_module(anchors)
    top = xp.argsort(-objectness)[:pre_nms_top_n]
    boxes = _box_decode(deltas[top], anchors[top].astype(deltas.dtype, copy=False), RPN_BOX_WEIGHTS)
    scores = sigmoid(objectness[top])
    boxes = _clip_boxes_to_image(boxes, image_size)
    keep = _remove_small_boxes(boxes, min_size)
    boxes, scores = boxes[keep], scores[keep]
    keep = xp.nonzero(scores >= score_thresh)[0]  # ">=" as torchvision, so score_thresh=0 keeps all
    boxes, scores = boxes[keep], scores[keep]
    keep = _nms(boxes, scores, nms_thresh)[:post_nms_top_n]
    return boxes[keep], scores[keep]


def generate_proposals_batch(anchors, objectness, deltas, image_sizes, pre_nms_top_n=2000, post_nms_top_n=2000,
                             nms_thresh=0.7, min_size=1e-3, score_thresh=0.0):
    """``generate_proposals`` for each image of a batch (one feature level).

    anchors     : A x 4 float, shared by every image (or N x A x 4, one set per image)
    objectness  : N x A float logits
    deltas      : N x A x 4 float
    image_sizes : N pairs (height, width)
    Returns a list of N ``(boxes P_i x 4, scores P_i)`` pairs.
    """
    xp = backend.get_array_module(objectness)
    objectness = as_float_array(objectness, "objectness", xp)
    check_ndim(objectness, "objectness", 2, "N x A logits")
    num_images = objectness.shape[0]
    deltas = as_float_array(deltas, "deltas", xp)
    if deltas.ndim != 3 or deltas.shape[0] != num_images:
        raise ValueError(f"deltas: expected N x A x 4 with N = {num_images}, got shape {tuple(deltas.shape)}")
    if len(image_sizes) != num_images:
        raise ValueError(f"image_sizes: expected {num_images} (height, width) pairs, got {len(image_sizes)}")
    anchors = xp.asarray(anchors)
    if anchors.ndim == 3 and anchors.shape[0] != num_images:
        raise ValueError(f"anchors: expected A x 4 or N x A x 4 with N = {num_images}, "
                         f"got shape {tuple(anchors.shape)}")
    per_image = ([check_boxes(a, "anchors", xp) for a in anchors] if anchors.ndim == 3
                 else [check_boxes(anchors, "anchors", xp)] * num_images)
    for a, o, d in zip(per_image, objectness, deltas):
        _check_proposal_inputs(a, o, d)
    sizes = [pair(s, "image_sizes") for s in image_sizes]
    settings = _proposal_settings(pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh)
    return [_generate_proposals(per_image[i], objectness[i], deltas[i], sizes[i], *settings)
            for i in range(num_images)]


def _generate_proposals_batch(anchors, objectness, deltas, image_size, pre_nms_top_n, post_nms_top_n, nms_thresh,
                              min_size):
    """The proposal boxes of each image of a batch, every image at once: a list of N arrays P_i x 4 (anchors
    A x 4 shared, objectness N x A, deltas N x A x 4, one ``(height, width)`` for all images; no score
    threshold). The same boxes as ``_generate_proposals`` image by image (``_generate_proposals_each``).

    The steps are ``_generate_proposals``'s on an N x k layout (k = the top-k anchors of each image). Only
    "drop the boxes that are too small" would give each image its own length: here they stay, sorted after
    every box of their image that counts, where NMS's upper triangle lets them suppress nothing that counts,
    and they are left out with the NMS losers at the end.
    """
    xp = backend.get_array_module(anchors)
    n = objectness.shape[0]
    top = xp.argsort(-objectness, axis=1)[:, :pre_nms_top_n]                           # N x k
    k = top.shape[1]
    boxes = _box_decode(xp.take_along_axis(deltas, top[..., None], axis=1).reshape(n * k, 4),
                        anchors[top.reshape(-1)].astype(deltas.dtype, copy=False), RPN_BOX_WEIGHTS)
    boxes = _clip_boxes_to_image(boxes, image_size).reshape(n, k, 4)
    scores = sigmoid(xp.take_along_axis(objectness, top, axis=1))
    big = _big_enough(boxes, min_size)
    # NMS of each image: score order (stable, as _nms), the boxes too small last
    order = xp.argsort(xp.where(big, -scores, xp.inf), axis=1, kind="stable")
    boxes, big = xp.take_along_axis(boxes, order[..., None], axis=1), xp.take_along_axis(big, order, axis=1)
    keep = _greedy_keep(xp.triu(_box_iou(boxes, boxes) > nms_thresh, k=1)) & big       # N x k
    keep &= xp.cumsum(keep, axis=1) <= post_nms_top_n
    counts = backend.to_host(keep.sum(axis=1))                   # the one read back: each image's length
    return xp.split(boxes[keep], [int(c) for c in counts.cumsum()[:-1]])


def _generate_proposals_each(anchors, objectness, deltas, image_size, pre_nms_top_n, post_nms_top_n, nms_thresh,
                             min_size):
    """``_generate_proposals_batch`` image by image, through ``_generate_proposals`` (the capstone's stand-in
    for the batched core while a student's per-image function is in place)."""
    return [_generate_proposals(anchors, objectness[i], deltas[i], image_size, pre_nms_top_n, post_nms_top_n,
                                nms_thresh, min_size)[0] for i in range(objectness.shape[0])]


# ---------------------------------------------------------------------------------------------------------
# Checks of the public functions (the shared ones, of thresholds, sampler and rng, are in matching.py).

def _anchors_and_gt(anchors, gt_boxes):
    """Both box arrays checked, the ground truth in the anchors' array module and dtype."""
    anchors = check_boxes(anchors, "anchors")
    gt_boxes = check_boxes(gt_boxes, "gt_boxes", backend.get_array_module(anchors))
    return anchors, gt_boxes.astype(anchors.dtype, copy=False)


def _check_loss_inputs(objectness, deltas, labels, regression_targets):
    for a, name in ((objectness, "objectness"), (deltas, "deltas"), (labels, "labels"),
                    (regression_targets, "regression_targets")):
        check_finite(a, name)
    if labels.shape != objectness.shape:
        raise ValueError(f"labels: expected shape {tuple(objectness.shape)} like objectness, got {tuple(labels.shape)}")
    want = tuple(objectness.shape) + (4,)
    if tuple(deltas.shape) != want:
        raise ValueError(f"deltas: expected shape {want} (objectness shape x 4), got {tuple(deltas.shape)}")
    if tuple(regression_targets.shape) != want:
        raise ValueError(f"regression_targets: expected shape {want}, got {tuple(regression_targets.shape)}")
    if labels.size and not bool(((labels == -1) | (labels == 0) | (labels == 1)).all()):
        raise ValueError("labels: expected values -1 (not sampled), 0 (not object) or 1 (object)")


def _check_proposal_inputs(anchors, objectness, deltas):
    check_ndim(objectness, "objectness", 1, "A logits")
    check_same_length(anchors, "anchors", objectness, "objectness")
    if deltas.ndim != 2 or deltas.shape[1] != 4:
        raise ValueError(f"deltas: expected A x 4, got shape {tuple(deltas.shape)}")
    check_same_length(anchors, "anchors", deltas, "deltas")
    check_finite(objectness, "objectness")
    check_finite(deltas, "deltas")


def _proposal_settings(pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh):
    """The knobs of ``generate_proposals``, checked, in its order."""
    for value, name in ((pre_nms_top_n, "pre_nms_top_n"), (post_nms_top_n, "post_nms_top_n")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    return (pre_nms_top_n, post_nms_top_n, number(nms_thresh, "nms_thresh", 0.0, 1.0), number(min_size, "min_size"),
            number(score_thresh, "score_thresh"))
