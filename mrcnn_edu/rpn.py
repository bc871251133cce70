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
or boxes. Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates (width ``x2 - x1``). Shapes:
A anchors, G ground-truth boxes, P proposals, N images.
"""
from __future__ import annotations

from . import backend
from ._validate import as_float_array, check_boxes, check_finite, check_ndim, check_same_length, checks_values, pair
from .boxes import box_decode, box_encode, box_iou, clip_boxes_to_image, nms, remove_small_boxes
from .losses import binary_cross_entropy_with_logits, smooth_l1_loss

__all__ = ["BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS", "match_by_iou", "match_anchors", "label_anchors",
           "sample_balanced", "rpn_targets", "rpn_loss", "generate_proposals", "generate_proposals_batch"]

BELOW_LOW_THRESHOLD = -1  # matched index of an anchor whose best IoU is < low ("not object")
BETWEEN_THRESHOLDS = -2   # matched index of an anchor whose best IoU is in [low, high) ("ignored")
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
BOX_BETA = 1.0 / 9.0      # smooth-L1 beta of both the RPN and the box head, as in torchvision


# ---------------------------------------------------------------------------------------------------------
# Small local checks (the shared _validate module covers arrays of boxes; these cover the knobs).

def _check_thresholds(high, low):
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"low, high: expected 0 <= low <= high <= 1, got low={low!r}, high={high!r}")


def _check_sampler(batch_size, positive_fraction):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size_per_image: expected a non-negative int, got {batch_size!r}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction: expected a value in [0, 1], got {positive_fraction!r}")


def _check_rng(rng):
    if not hasattr(rng, "random"):
        raise TypeError(f"rng: expected a random generator of the backend (numpy.random.Generator on NumPy), "
                        f"got {type(rng).__name__}")


def _sigmoid(x):
    """Logistic function of a float array, computed from ``exp(-|x|)`` so that it never overflows."""
    xp = backend.get_array_module(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# Matching and labels (slide "RPN: which anchors are objects").

def match_by_iou(iou, high=0.7, low=0.3, allow_low_quality=True):
    """The matcher on a precomputed IoU matrix: best ground truth per anchor, or a negative code.

    iou               : G x A float, IoU of every ground-truth box (rows) with every anchor (columns)
    high, low         : IoU >= high is a match; [low, high) gives BETWEEN_THRESHOLDS (-2); < low gives
                        BELOW_LOW_THRESHOLD (-1)
    allow_low_quality : for each ground truth, every anchor whose IoU equals that ground truth's best IoU
                        (ties included) gets back its own best match, even below ``high`` -- the paper's
                        "anchor with the highest IoU for a ground-truth box" rule, which makes sure every
                        object has at least one positive anchor. As in torchvision, a ground truth that
                        overlaps no anchor at all (best IoU 0) hands its "best" status to every anchor with
                        IoU 0 to it; such anchors then keep their own argmax, so avoid boxes outside the grid.
    Returns A int64 matched ground-truth index in [0, G) or -1 / -2 (torchvision's ``Matcher``).
    With G == 0 every anchor is -1 (not object).
    """
    xp = backend.get_array_module(iou)
    check_ndim(iou, "iou", 2, "G x A")
    _check_thresholds(high, low)
    num_gt, num_anchors = iou.shape
    if num_gt == 0 or num_anchors == 0:
        return xp.full((num_anchors,), BELOW_LOW_THRESHOLD, dtype=xp.int64)
    best_iou = iou.max(axis=0)
    best_gt = iou.argmax(axis=0).astype(xp.int64)
    matches = xp.where(best_iou < low, BELOW_LOW_THRESHOLD,
                       xp.where(best_iou < high, BETWEEN_THRESHOLDS, best_gt)).astype(xp.int64)
    if allow_low_quality:
        # exact equality on purpose: ties of the best IoU all count, as in torchvision
        is_best_for_some_gt = (iou == iou.max(axis=1, keepdims=True)).any(axis=0)
        matches = xp.where(is_best_for_some_gt, best_gt, matches)
    return matches


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
    return match_by_iou(box_iou(gt_boxes, anchors), high, low, allow_low_quality)


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
    anchors = check_boxes(anchors, "anchors")
    gt_boxes = check_boxes(gt_boxes, "gt_boxes", backend.get_array_module(anchors))
    xp = backend.get_array_module(anchors)
    matches = match_by_iou(box_iou(gt_boxes.astype(anchors.dtype, copy=False), anchors), high, low, True)
    labels = xp.where(matches >= 0, 1.0, xp.where(matches == BETWEEN_THRESHOLDS, -1.0, 0.0))
    return labels.astype(anchors.dtype), matches


# ---------------------------------------------------------------------------------------------------------
# The balanced mini-batch (slide "RPN mini-batch: 256 anchors, up to 1:1").

def sample_balanced(labels, rng, batch_size=256, positive_fraction=0.5):
    """Pick a random mini-batch of positives and negatives (torchvision ``BalancedPositiveNegativeSampler``).

    labels            : A float or int array: >= 1 positive (object, or a class id), 0 negative, -1 ignored
    rng               : random generator of the backend (``numpy.random.Generator`` on NumPy)
    batch_size        : mini-batch size B per image (256 in the RPN, 512 in the box head)
    positive_fraction : wanted share of positives (0.5 in the RPN, 0.25 in the box head)
    Returns ``(pos_mask, neg_mask)``, two A bool arrays, with
      num_pos = min(int(B * positive_fraction), #positives)
      num_neg = min(B - num_pos, #negatives)
    chosen uniformly without replacement. Vectorized: each element draws a uniform random key, and the
    positives (negatives) with the smallest keys win -- the first entries of a random permutation.
    The draw is not torchvision's (that one uses ``torch.randperm``); the counts are the same.
    """
    xp = backend.get_array_module(labels)
    labels = xp.asarray(labels)
    check_ndim(labels, "labels", 1, "a 1-D array of A labels")
    _check_sampler(batch_size, positive_fraction)
    _check_rng(rng)
    positive, negative = labels >= 1, labels == 0
    num_pos = min(int(batch_size * positive_fraction), int(positive.sum()))
    num_neg = min(batch_size - num_pos, int(negative.sum()))
    keys = xp.asarray(rng.random(labels.shape[0]))
    return _first_by_key(positive, keys, num_pos), _first_by_key(negative, keys, num_neg)


def _first_by_key(candidates, keys, count):
    """Mask of the ``count`` candidates with the smallest keys (keys in [0, 1); others pushed to 2)."""
    xp = backend.get_array_module(candidates)
    mask = xp.zeros(candidates.shape, dtype=bool)
    if count > 0:
        order = xp.argsort(xp.where(candidates, keys, 2.0))
        mask[order[:count]] = True
    return mask


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
    anchors = check_boxes(anchors, "anchors")
    xp = backend.get_array_module(anchors)
    gt_boxes = check_boxes(gt_boxes, "gt_boxes", xp).astype(anchors.dtype, copy=False)
    labels, matches = label_anchors(anchors, gt_boxes, high, low)
    pos, neg = sample_balanced(labels, rng, batch_size_per_image, positive_fraction)
    sampled_labels = xp.where(pos, 1.0, xp.where(neg, 0.0, -1.0)).astype(anchors.dtype)
    if gt_boxes.shape[0] == 0:
        return sampled_labels, xp.zeros_like(anchors)
    targets = box_encode(anchors, gt_boxes[xp.maximum(matches, 0)], RPN_BOX_WEIGHTS)
    return sampled_labels, targets


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
    _check_loss_shapes(objectness, deltas, labels, regression_targets)
    logits, d4 = objectness.reshape(-1), deltas.reshape(-1, 4)
    flat_labels, t4 = labels.reshape(-1), regression_targets.reshape(-1, 4)
    sampled = xp.nonzero(flat_labels >= 0)[0]
    positive = xp.nonzero(flat_labels == 1)[0]
    num_sampled = int(sampled.shape[0])
    dlogits, dd4 = xp.zeros_like(logits), xp.zeros_like(d4)
    zero = xp.zeros((), dtype=objectness.dtype)
    if num_sampled == 0:
        return zero, zero.copy(), dlogits.reshape(objectness.shape), dd4.reshape(deltas.shape)
    loss_obj, grad_obj = binary_cross_entropy_with_logits(logits[sampled], flat_labels[sampled], reduction="mean")
    dlogits[sampled] = grad_obj
    loss_box = zero
    if positive.shape[0]:
        box_sum, grad_box = smooth_l1_loss(d4[positive], t4[positive], beta=BOX_BETA, reduction="sum")
        loss_box = xp.asarray(box_sum / num_sampled, dtype=objectness.dtype)
        dd4[positive] = grad_box / num_sampled
    return loss_obj, loss_box, dlogits.reshape(objectness.shape), dd4.reshape(deltas.shape)


def _check_loss_shapes(objectness, deltas, labels, regression_targets):
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
    if labels.size and checks_values() and not bool(((labels == -1) | (labels == 0) | (labels == 1)).all()):
        raise ValueError("labels: expected values -1 (not sampled), 0 (not object) or 1 (object)")


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
    height, width = pair(image_size, "image_size")
    for value, name in ((pre_nms_top_n, "pre_nms_top_n"), (post_nms_top_n, "post_nms_top_n")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    top = xp.argsort(-objectness)[:pre_nms_top_n]
    boxes = box_decode(deltas[top], anchors[top].astype(deltas.dtype, copy=False), weights=RPN_BOX_WEIGHTS)
    scores = _sigmoid(objectness[top])
    boxes = clip_boxes_to_image(boxes, (height, width))
    keep = remove_small_boxes(boxes, min_size)
    boxes, scores = boxes[keep], scores[keep]
    keep = xp.nonzero(scores >= score_thresh)[0]  # ">=" as torchvision, so score_thresh=0 keeps all
    boxes, scores = boxes[keep], scores[keep]
    keep = nms(boxes, scores, nms_thresh)[:post_nms_top_n]
    return boxes[keep], scores[keep]


def _check_proposal_inputs(anchors, objectness, deltas):
    check_ndim(objectness, "objectness", 1, "A logits")
    check_same_length(anchors, "anchors", objectness, "objectness")
    if deltas.ndim != 2 or deltas.shape[1] != 4:
        raise ValueError(f"deltas: expected A x 4, got shape {tuple(deltas.shape)}")
    check_same_length(anchors, "anchors", deltas, "deltas")
    check_finite(objectness, "objectness")
    check_finite(deltas, "deltas")


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
    objectness = xp.asarray(objectness)
    check_ndim(objectness, "objectness", 2, "N x A logits")
    deltas = xp.asarray(deltas)
    if deltas.ndim != 3 or deltas.shape[0] != objectness.shape[0]:
        raise ValueError(f"deltas: expected N x A x 4 with N = {objectness.shape[0]}, got shape {tuple(deltas.shape)}")
    if len(image_sizes) != objectness.shape[0]:
        raise ValueError(f"image_sizes: expected {objectness.shape[0]} (height, width) pairs, got {len(image_sizes)}")
    anchors = xp.asarray(anchors)
    per_image = anchors if anchors.ndim == 3 else [anchors] * objectness.shape[0]
    if anchors.ndim == 3 and anchors.shape[0] != objectness.shape[0]:
        raise ValueError(f"anchors: expected A x 4 or N x A x 4 with N = {objectness.shape[0]}, "
                         f"got shape {tuple(anchors.shape)}")
    return [generate_proposals(per_image[i], objectness[i], deltas[i], image_sizes[i], pre_nms_top_n,
                               post_nms_top_n, nms_thresh, min_size, score_thresh)
            for i in range(objectness.shape[0])]
