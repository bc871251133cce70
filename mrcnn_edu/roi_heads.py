"""Lecture stages 3 and 7, the training targets of the second stage: which proposals the box head learns
from, what it must predict, and the mask each RoI must draw.

    proposals (P0 x 4) + gt boxes  ->  box_head_targets  ->  512 RoIs, a quarter of them foreground,
                                                              their classes and (10, 10, 5, 5) deltas
    class logits, 4K deltas        ->  fast_rcnn_loss    ->  softmax CE + smooth-L1 of the own class
    gt masks, positive RoIs        ->  mask_targets      ->  R x m x m crops (RoIAlign of the masks)

Everything follows torchvision's ``models/detection/roi_heads.py`` (``select_training_samples``,
``fastrcnn_loss``, ``project_masks_on_boxes``), vectorized: no loop over RoIs or boxes. The matcher and the
sampler are the RPN's, from ``matching.py``. Each public function checks its inputs, then calls its core
``_<name>``, which holds only the maths; the model calls the cores. Boxes are ``(x1, y1, x2, y2)`` in
continuous pixel coordinates. Shapes: P0 proposals, P sampled RoIs, G ground-truth boxes, K classes counting
the background as class 0, R positive RoIs, m the mask size.
"""
from __future__ import annotations

import math
from itertools import accumulate
from typing import NamedTuple

from . import backend
from ._validate import as_float_array, check_boxes, check_finite, check_ndim, pair
from .boxes import (BOX_HEAD_WEIGHTS, _box_decode, _box_decode_backward, _box_encode, _box_iou, _check_positive_size,
                    _pad_images, _real_rows, _weights)
from .losses import _giou_loss, _smooth_l1_loss, _softmax_cross_entropy
from .matching import (BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, BOX_BETA, _check_rng, _check_sampler,
                       _check_thresholds, _match_by_iou, _sample_balanced, _sample_by_keys)
from .roi import _BLOCK_ELEMENTS, _align_plan, _roi_align_planned

__all__ = ["BOX_HEAD_WEIGHTS", "BOX_LOSSES", "BoxHeadTargets", "box_head_targets", "fast_rcnn_loss", "mask_targets"]

BOX_LOSSES = ("smooth_l1", "giou")


class BoxHeadTargets(NamedTuple):
    """What ``box_head_targets`` returns, by name (it is still a 4-tuple)."""
    rois: object                # P x 4 float
    labels: object              # P int64, class or 0 (background)
    regression_targets: object  # P x 4 float deltas
    matched_gt_index: object    # P int64 in [0, G)


# ---------------------------------------------------------------------------------------------------------
# Sampling RoIs for the box head (slide "Fast R-CNN mini-batch: 25% foreground, IoU >= 0.5").

def box_head_targets(proposals, gt_boxes, gt_labels, rng, batch_size_per_image=512, positive_fraction=0.25,
                     fg_iou=0.5, bg_iou=0.5, weights=BOX_HEAD_WEIGHTS):
    """The box head's mini-batch of ONE image, as torchvision ``RoIHeads.select_training_samples``.

    proposals : P0 x 4 float (x1, y1, x2, y2), the RPN's proposals (no gradient)
    gt_boxes  : G x 4 float (x1, y1, x2, y2); G may be 0 (a background image)
    gt_labels : G int, classes in [1, K) (0 is the background)
    rng       : random generator of the backend (``numpy.random.Generator`` on NumPy)
    Steps: append the ground-truth boxes to the proposals (so that every object has a perfect RoI);
    match by IoU (>= fg_iou foreground, < bg_iou background, in between ignored; no low-quality rule);
    label each foreground RoI with its ground truth's class and the background 0; sample at most
    ``batch_size_per_image`` RoIs with at most ``positive_fraction`` of them foreground; encode the
    matched ground truth relative to each sampled RoI with ``weights``.
    Returns ``(rois, labels, regression_targets, matched_gt_index)``, kept in proposal order
    (proposals first, then the appended ground truth):
      rois               : P x 4 float (dtype of ``proposals``)
      labels             : P int64, class of the matched ground truth or 0
      regression_targets : P x 4 float, ``box_encode(roi, matched gt, weights)`` (only the foreground
                           enters the loss; zeros for an image without ground truth)
      matched_gt_index   : P int64 in [0, G), 0 for background RoIs (as torchvision's clamp)
    """
    proposals = check_boxes(proposals, "proposals")
    xp = backend.get_array_module(proposals)
    gt_boxes = check_boxes(gt_boxes, "gt_boxes", xp).astype(proposals.dtype, copy=False)
    gt_labels = _int_array(gt_labels, "gt_labels", gt_boxes.shape[0], xp, low=1,
                           what="classes >= 1 (0 is the background)")
    _check_positive_size(proposals, "proposals")   # the targets divide by the RoIs' sizes and take logs
    _check_positive_size(gt_boxes, "gt_boxes")
    _check_thresholds(fg_iou, bg_iou)
    _check_sampler(batch_size_per_image, positive_fraction)
    _check_rng(rng)
    return _box_head_targets(proposals, gt_boxes, gt_labels, rng, batch_size_per_image, positive_fraction, fg_iou,
                             bg_iou, _weights(weights))


def _box_head_targets(proposals, gt_boxes, gt_labels, rng, batch_size_per_image=512, positive_fraction=0.25,
                      fg_iou=0.5, bg_iou=0.5, weights=BOX_HEAD_WEIGHTS):
    """The maths of ``box_head_targets``: proposals P0 x 4 and gt_boxes G x 4 of one float dtype, sizes
    > 0; gt_labels G int64 >= 1; weights 4 floats. Returns a ``BoxHeadTargets``."""
    xp = backend.get_array_module(proposals)
    # 1. the ground truth joins the proposals, so that every object has one perfect RoI
    boxes = xp.concatenate([proposals, gt_boxes], axis=0)
    # 2. match and label: the ground truth's class, 0 for the background, -1 ignored
    matched, labels = _label_proposals(boxes, gt_boxes, gt_labels, fg_iou, bg_iou)
    # 3. the balanced mini-batch, kept in proposal order (as torchvision's torch.where(pos | neg))
    pos, neg = _sample_balanced(labels, rng, batch_size_per_image, positive_fraction)
    sampled = xp.nonzero(pos | neg)[0]
    rois, labels, matched = boxes[sampled], labels[sampled], matched[sampled]
    # 4. the deltas that move each RoI onto its ground truth
    if gt_boxes.shape[0] == 0:
        return BoxHeadTargets(rois, labels, xp.zeros_like(rois), matched)
    return BoxHeadTargets(rois, labels, _box_encode(rois, gt_boxes[matched], weights), matched)


def _label_proposals(boxes, gt_boxes, gt_labels, fg_iou, bg_iou):
    """Clamped matched index (P0 + G int64) and labels (class, 0 background, -1 ignored) of every box."""
    xp = backend.get_array_module(boxes)
    if gt_boxes.shape[0] == 0:
        zeros = xp.zeros((boxes.shape[0],), dtype=xp.int64)
        return zeros, zeros.copy()
    matches = _match_by_iou(_box_iou(gt_boxes, boxes), fg_iou, bg_iou, allow_low_quality=False)
    matched = xp.maximum(matches, 0)
    return matched, _proposal_labels(matches, gt_labels[matched])


def _proposal_labels(matches, matched_labels):
    """The matched ground truth's class, 0 for the background (below ``bg_iou``), -1 ignored (in between)."""
    xp = backend.get_array_module(matches)
    return xp.where(matches == BELOW_LOW_THRESHOLD, 0,
                    xp.where(matches == BETWEEN_THRESHOLDS, -1, matched_labels)).astype(xp.int64)


def _box_head_targets_batch(proposals_per_image, gt_boxes_per_image, gt_labels_per_image, rng,
                            batch_size_per_image=512, positive_fraction=0.25, fg_iou=0.5, bg_iou=0.5,
                            weights=BOX_HEAD_WEIGHTS):
    """``_box_head_targets`` of every image of a batch at once: lists of B arrays (proposals P_i x 4, gt_boxes
    G_i x 4 of one float dtype, gt_labels G_i int64) -> a list of B ``BoxHeadTargets``, each equal to
    ``_box_head_targets`` on that image alone, the sampler's random draws included (``_box_head_targets_each``),
    and each image's number of positive RoIs (B ints: the mask-RoI sampler's, read back with the sizes).

    Each image's boxes (its proposals, then its ground truth) are padded to the longest row, B x L x 4, and its
    ground truth to B x G x 4: a padded ground truth gets IoU -1 (it matches nothing), a padded box the label
    -1 (ignored: never sampled). The sampler's keys are drawn image after image for the real boxes only, the
    numbers the loop draws.
    """
    xp = backend.get_array_module(*proposals_per_image)
    # 1. the ground truth joins each image's proposals; 2. match and label, as _box_head_targets
    boxes_per_image = [xp.concatenate([p, g], axis=0) for p, g in zip(proposals_per_image, gt_boxes_per_image)]
    boxes, real_box = _pad_images(boxes_per_image, 0.0), _real_rows(boxes_per_image)                  # B x L x 4
    gt_boxes, real_gt = _pad_images(gt_boxes_per_image, 0.0), _real_rows(gt_boxes_per_image)          # B x G x 4
    gt_labels = _pad_images(gt_labels_per_image, 0)
    iou = xp.where(real_gt[..., None], _box_iou(gt_boxes, boxes), -1.0)                              # B x G x L
    matches = _match_by_iou(iou, fg_iou, bg_iou, allow_low_quality=False)                           # B x L
    matched = xp.maximum(matches, 0)
    image = xp.arange(len(boxes))[:, None]
    labels = xp.where(real_box, _proposal_labels(matches, gt_labels[image, matched]), -1)
    # 3. the balanced mini-batch, in box order
    keys = xp.full(real_box.shape, 2.0)
    keys[real_box] = xp.asarray(rng.random(sum(len(b) for b in boxes_per_image)))   # image after image
    pos, neg = _sample_by_keys(labels, keys, batch_size_per_image, positive_fraction)
    sampled = pos | neg
    # 4. the deltas onto the ground truth
    target_boxes = xp.where(real_gt.any(axis=1)[:, None, None], gt_boxes[image, matched], boxes)
    rois, labels, matched = boxes[sampled], labels[sampled], matched[sampled]
    deltas = _box_encode(rois, target_boxes[sampled], weights)       # an image without objects: its RoIs, 0
    sizes, num_positive = backend.to_host(xp.stack([sampled.sum(axis=1), pos.sum(axis=1)])).tolist()  # one read
    splits = list(accumulate(sizes))[:-1]
    per_image = zip(*(xp.split(a, splits) for a in (rois, labels, deltas, matched)))
    return [BoxHeadTargets(*parts) for parts in per_image], num_positive


def _box_head_targets_each(proposals_per_image, gt_boxes_per_image, gt_labels_per_image, rng,
                           batch_size_per_image=512, positive_fraction=0.25, fg_iou=0.5, bg_iou=0.5,
                           weights=BOX_HEAD_WEIGHTS):
    """``_box_head_targets_batch`` image by image, through ``_box_head_targets`` (the capstone's stand-in for the
    batched core while a student's per-image function is in place)."""
    targets = [_box_head_targets(p, g, c, rng, batch_size_per_image, positive_fraction, fg_iou, bg_iou, weights)
               for p, g, c in zip(proposals_per_image, gt_boxes_per_image, gt_labels_per_image)]
    return targets, [int((t.labels > 0).sum()) for t in targets]


# ---------------------------------------------------------------------------------------------------------
# The box head's loss (slide "Fast R-CNN multi-task loss: K+1 softmax, class-specific boxes").

def fast_rcnn_loss(class_logits, box_regression, labels, regression_targets, box_loss="smooth_l1", proposals=None,
                   weights=BOX_HEAD_WEIGHTS):
    """Classification and box losses of the box head, with their gradients (torchvision ``fastrcnn_loss``).

    class_logits       : P x K float, K classes including the background 0
    box_regression     : P x 4K float, deltas (dx, dy, dw, dh) for every class, class k in columns 4k..4k+3
    labels             : P int, classes in [0, K)
    regression_targets : P x 4 float, target deltas (used for labels > 0)
    Returns ``(loss_cls, loss_box, dclass_logits, dbox_regression)``:
      loss_cls = mean over the P RoIs of softmax cross-entropy
      loss_box = sum over foreground RoIs of smooth-L1(own class's deltas - targets, beta=1/9) / P
    Only the 4 columns of each foreground RoI's own class receive a box gradient. P == 0 gives zero losses
    (torchvision would return NaN).

    box_loss="giou" (the lecture's question, an IoU-based L_box) replaces smooth-L1 by ``1 - GIoU`` of the
    decoded box against the ground truth (``losses.giou_loss``), summed over the foreground and divided by P
    like smooth-L1. It needs the ``proposals`` (P x 4) the deltas refer to and the box coder ``weights``;
    the ground-truth box is recovered as ``box_decode(regression_targets, proposals)``, and the gradient goes
    back through the decoding (``boxes.box_decode_backward``).
    """
    class_logits = as_float_array(class_logits, "class_logits")
    xp = backend.get_array_module(class_logits)
    box_regression = as_float_array(box_regression, "box_regression", xp)
    regression_targets = as_float_array(regression_targets, "regression_targets", xp)
    check_ndim(class_logits, "class_logits", 2, "P x K logits")
    num_rois, num_classes = class_logits.shape
    if num_classes == 0:
        raise ValueError(f"class_logits: expected at least one class along axis 1, got shape {(num_rois, 0)}")
    check_finite(class_logits, "class_logits")
    if tuple(box_regression.shape) != (num_rois, 4 * num_classes):
        raise ValueError(f"box_regression: expected shape {(num_rois, 4 * num_classes)} (P x 4K), "
                         f"got {tuple(box_regression.shape)}")
    if tuple(regression_targets.shape) != (num_rois, 4):
        raise ValueError(f"regression_targets: expected shape {(num_rois, 4)}, got {tuple(regression_targets.shape)}")
    check_finite(box_regression, "box_regression")
    check_finite(regression_targets, "regression_targets")
    labels = _int_array(labels, "labels", num_rois, xp, low=0, high=num_classes,
                        what=f"class indices in [0, {num_classes - 1}]")
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss: expected one of {BOX_LOSSES}, got {box_loss!r}")
    if box_loss == "giou":
        if proposals is None:
            raise ValueError("proposals: box_loss='giou' needs the P x 4 proposals the deltas refer to")
        proposals = check_boxes(proposals, "proposals", xp)
        if proposals.shape[0] != num_rois:
            raise ValueError(f"proposals: expected {num_rois} boxes (one per RoI), got {proposals.shape[0]}")
        weights = _weights(weights)
    return _fast_rcnn_loss(class_logits, box_regression, labels,
                           regression_targets.astype(box_regression.dtype, copy=False), box_loss, proposals, weights)


def _fast_rcnn_loss(class_logits, box_deltas, labels, regression_targets, box_loss="smooth_l1", proposals=None,
                    weights=BOX_HEAD_WEIGHTS):
    """The maths of ``fast_rcnn_loss`` (torchvision's ``fastrcnn_loss`` plus the gradients): class_logits
    P x K, box_deltas P x 4K, regression_targets P x 4, float; labels P int64 in [0, K)."""
    xp = backend.get_array_module(class_logits)
    num_rois, num_classes = class_logits.shape
    loss_cls, dclass_logits = _softmax_cross_entropy(class_logits, labels)

    # the box loss: foreground RoIs only, each on the 4 deltas of its own class, summed and divided by P
    deltas = box_deltas.reshape(num_rois, num_classes, 4)
    ddeltas = xp.zeros_like(deltas)
    positive = xp.nonzero(labels > 0)[0]
    own = labels[positive]
    loss_box = xp.zeros((), dtype=class_logits.dtype)
    if positive.shape[0]:
        if box_loss == "giou":
            box_sum, grad = _giou_of_deltas(deltas[positive, own], regression_targets[positive],
                                            proposals[positive], weights)
        else:
            box_sum, grad = _smooth_l1_loss(deltas[positive, own], regression_targets[positive], BOX_BETA, "sum")
        loss_box = xp.asarray(box_sum / num_rois, dtype=class_logits.dtype)
        ddeltas[positive, own] = grad / num_rois  # each (RoI, class) pair once: plain assignment is safe
    return loss_cls, loss_box, dclass_logits, ddeltas.reshape(num_rois, 4 * num_classes)


def _giou_of_deltas(pred_deltas, target_deltas, proposals, weights):
    """Summed ``1 - GIoU`` of decoded boxes and its gradient with respect to the deltas (F x 4 each)."""
    pred = _box_decode(pred_deltas, proposals, weights)
    target = _box_decode(target_deltas, proposals, weights).astype(pred.dtype, copy=False)
    loss, dboxes = _giou_loss(pred, target, "sum", 1e-7)
    return loss, _box_decode_backward(dboxes, pred_deltas, proposals, weights)


# ---------------------------------------------------------------------------------------------------------
# Mask targets (slide "mask target: the ground-truth mask cropped to the RoI, m x m").

def mask_targets(gt_masks, proposals, matched_gt_index, m, aligned=False):
    """Each RoI's ground-truth mask cropped and resized to m x m (torchvision ``project_masks_on_boxes``).

    gt_masks         : G x H x W bool or float, the image's instance masks (1 inside the object)
    proposals        : R x 4 float (x1, y1, x2, y2) in image pixels, the positive RoIs
    matched_gt_index : R int, the ground truth of each RoI, in [0, G)
    m                : int, the mask head's output size (28 in the paper)
    aligned          : False as torchvision; True samples mask pixel ``(u, v)`` at the box point
                       ``x1 + (u + 0.5) w / m`` in continuous coordinates (pixel ``i`` centred at ``i + 0.5``),
                       the convention ``heads.paste_masks`` pastes back with. torchvision's False reads the
                       ground truth half a pixel down and to the right of that: a model trained on those
                       targets and pasted with pixel centres draws every mask half a pixel off.
    Returns R x m x m float (dtype of ``proposals``): RoIAlign of the mask, seen as a G x 1 x H x W feature
    map, with RoIs (matched index, box), spatial scale 1, adaptive sampling. Values lie in [0, 1]; the mask
    loss thresholds nothing, it trains on these soft values.
    """
    proposals = check_boxes(proposals, "proposals")
    xp = backend.get_array_module(proposals)
    gt_masks = xp.asarray(gt_masks)
    check_ndim(gt_masks, "gt_masks", 3, "G x H x W masks")
    if gt_masks.dtype.kind not in "biuf":
        raise TypeError(f"gt_masks: expected bool or numeric masks, got dtype {gt_masks.dtype}")
    gt_masks = gt_masks.astype(proposals.dtype, copy=False)
    check_finite(gt_masks, "gt_masks")
    index = _int_array(matched_gt_index, "matched_gt_index", proposals.shape[0], xp, low=0,
                       high=gt_masks.shape[0], what=f"indices in [0, {gt_masks.shape[0]})")
    return _mask_targets(gt_masks, proposals, index, pair(m, "m"), aligned)


def _mask_targets(gt_masks, proposals, matched_gt_index, size, aligned=False):
    """The maths of ``mask_targets``: gt_masks G x H x W (bool or float), proposals R x 4 float,
    matched_gt_index R int64 in [0, G), size ``(m, m)``. The RoIs go a block at a time, each block's copies of
    its masks at most about ``2**24`` pixels (one block in the model: 32 RoIs of 128 x 128)."""
    xp = backend.get_array_module(proposals)
    R = proposals.shape[0]
    if R == 0:
        return xp.zeros((0,) + tuple(size), dtype=proposals.dtype)
    step = max(1, _BLOCK_ELEMENTS // max(math.prod(gt_masks.shape[1:]), 1))
    blocks = [_own_mask_targets(gt_masks[matched_gt_index[r:r + step]], proposals[r:r + step], size, aligned)
              for r in range(0, R, step)]
    targets = blocks[0] if len(blocks) == 1 else xp.concatenate(blocks)
    # bilinear weights sum to 1 only up to rounding: 1 + 1 ulp would fail the mask loss's [0, 1] check
    return xp.clip(targets, 0, 1)


def _own_mask_targets(masks, boxes, size, aligned):
    """RoIAlign of box r on mask r (masks R x H x W, boxes R x 4) -> R x m x m.

    Each RoI gets its own copy of its mask, map r of an R x 1 x H x W feature map: RoIAlign then needs no table
    of the RoIs of each mask, whose width (the most RoIs on one mask) it would have to read back from the
    device. The same numbers as RoIAlign on the G masks with RoIs ``(matched index, box)``."""
    xp = backend.get_array_module(boxes)
    maps = masks.astype(boxes.dtype, copy=False)[:, None]
    rois = xp.concatenate([xp.arange(len(boxes), dtype=boxes.dtype)[:, None], boxes], axis=1)
    plan = _align_plan(rois, maps.shape, tuple(size), 1.0, -1, bool(aligned), maps.dtype, most=1, in_order=True)
    return _roi_align_planned(maps, plan)[:, 0]


# ---------------------------------------------------------------------------------------------------------
# Checks of the public functions (those of thresholds, sampler and rng are matching.py's).

def _int_array(a, name, n, xp, low=0, high=None, what="integers"):
    """``a`` as a 1-D int64 array of ``n`` entries, each in ``[low, high)`` (``high`` None: no upper bound);
    out of range raises ``ValueError("{name}: expected {what}, got values in [min, max]")``."""
    a = xp.asarray(a)
    if a.size == 0 and a.dtype.kind not in "iu":
        a = a.astype(xp.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integers, got dtype {a.dtype}")
    check_ndim(a, name, 1, f"{n} integers (a 1-D array)")
    if a.shape[0] != n:
        raise ValueError(f"{name}: expected {n} entries, got {a.shape[0]}")
    a = a.astype(xp.int64, copy=False)
    out_of_range = a < low if high is None else (a < low) | (a >= high)
    if n and bool(out_of_range.any()):
        raise ValueError(f"{name}: expected {what}, got values in [{int(a.min())}, {int(a.max())}]")
    return a
