"""Inference's last steps (slides "Inference", "Paste Back"): from the box head's outputs to detections, and
from the mask head's logits to binary masks in the image.

* ``postprocess_detections``: every proposal gives K - 1 class-specific boxes, each scored by the softmax;
  low scores and tiny boxes go, NMS runs per class, the best few stay (torchvision's
  ``RoIHeads.postprocess_detections``).
* ``detection_masks``: each detection's own class mask, a sigmoid probability, pasted into its box
  (``heads.paste_masks``) and thresholded at 0.5.
* ``softmax_as_sigmoid_logits``: a model trained with the softmax mask loss read out like a sigmoid one.

Shapes: P proposals, K classes with the background as class 0, D detections, m the mask side.
"""
from __future__ import annotations

from . import backend
from .activations import sigmoid, softmax
from .boxes import (BBOX_XFORM_CLIP, BOX_HEAD_WEIGHTS, _batched_nms, _box_decode, _clip_boxes_to_image,
                    _remove_small_boxes)
from .heads import paste_masks

__all__ = ["postprocess_detections", "detection_masks", "softmax_as_sigmoid_logits"]


def postprocess_detections(class_logits, box_deltas, proposals, image_size, score_threshold=0.05,
                           nms_threshold=0.5, detections_per_image=100, weights=BOX_HEAD_WEIGHTS):
    """One image's detections from the box head's outputs (torchvision's ``postprocess_detections``).

    class_logits : P x K float, K classes with the background as class 0
    box_deltas   : P x 4K float, class-specific deltas ``(dx, dy, dw, dh)`` of each proposal
    proposals    : P x 4 float ``(x1, y1, x2, y2)``, the boxes the deltas refer to
    image_size   : ``(H, W)``, boxes are clipped to it
    Returns a dict: ``boxes`` D x 4, ``scores`` D (softmax probability), ``labels`` D int (1..K-1), by
    decreasing score. Every proposal gives K - 1 candidates, one per object class, each with its own box;
    candidates scoring ``<= score_threshold`` or with a side under 0.01 px are dropped, NMS runs per class
    at ``nms_threshold``, and the best ``detections_per_image`` remain.
    """
    boxes, scores, labels = _class_boxes(class_logits, box_deltas, proposals, image_size, weights)
    _, kept = _select(boxes, scores, labels, score_threshold, nms_threshold)
    keep = kept[:detections_per_image]
    return dict(boxes=boxes[keep], scores=scores[keep], labels=labels[keep])


def _class_boxes(class_logits, box_deltas, proposals, image_size, weights=BOX_HEAD_WEIGHTS):
    """Every proposal's K - 1 candidates, one per object class: boxes (P (K-1)) x 4, decoded with the class's
    deltas and clipped to ``image_size``; scores P (K-1), the class's softmax probability; labels P (K-1).
    Candidate ``r (K-1) + k - 1`` is proposal ``r`` as class ``k``."""
    xp = backend.get_array_module(class_logits)
    P, K = class_logits.shape
    weights = tuple(float(w) for w in weights)
    boxes = _box_decode(box_deltas, proposals, weights, BBOX_XFORM_CLIP).reshape(-1, K, 4)[:, 1:].reshape(-1, 4)
    boxes = _clip_boxes_to_image(boxes, tuple(int(s) for s in image_size))
    scores = softmax(class_logits, axis=1)[:, 1:].reshape(-1)
    labels = xp.tile(xp.arange(1, K, dtype=xp.int64), P)
    return boxes, scores, labels


def _select(boxes, scores, labels, score_threshold, nms_threshold):
    """``(candidates, kept)``: the indices of the candidates scoring above ``score_threshold`` with both sides
    at least 0.01 px, and of those that per-class NMS keeps, by decreasing score."""
    xp = backend.get_array_module(scores)
    candidates = xp.nonzero(scores > score_threshold)[0]
    candidates = candidates[_remove_small_boxes(boxes[candidates], 1e-2)]
    kept = candidates[_batched_nms(boxes[candidates], scores[candidates], labels[candidates], float(nms_threshold))]
    return candidates, kept


def detection_masks(mask_logits, labels, boxes, image_size, threshold=0.5):
    """Binary image masks of D detections from the mask head (slides "K (m x m) sigmoid outputs", "Paste Back").

    mask_logits : D x K x m x m float, every class's mask logits for each detection
    labels      : D int, each detection's class: only that class's mask is used
    boxes       : D x 4 float, each detection's box in image pixels
    image_size  : ``(H, W)``
    Returns D x H x W bool: ``sigmoid(logit) >= threshold`` after pasting the probabilities into the box
    (``heads.paste_masks``, bilinear).
    """
    xp = backend.get_array_module(mask_logits)
    D = mask_logits.shape[0]
    logits = mask_logits[xp.arange(D), labels] if D else mask_logits[:, 0]
    probs = sigmoid(logits)
    return paste_masks(probs, boxes, image_size) >= threshold


def softmax_as_sigmoid_logits(z):
    """Logits whose sigmoid is the per-pixel softmax over the K channels: ``z_k - logsumexp_{j != k} z_j``.

    A model trained with the softmax mask loss then reads out like the sigmoid one (z: D x K x m x m).
    """
    xp = backend.get_array_module(z)
    top = z.max(axis=1, keepdims=True)
    e = xp.exp(z - top)
    others = xp.maximum(e.sum(axis=1, keepdims=True) - e, xp.finfo(z.dtype).tiny)
    return z - top - xp.log(others)


