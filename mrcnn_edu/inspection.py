"""A trained model at work on one image, stage by stage (after matterport's ``inspect_model.ipynb`` and
``inspect_weights.ipynb``): what each stage of inference computed, what its layers output, and its weights.

* ``trace(model, image, gt=None)`` runs inference on one image exactly as ``MaskRCNN.predict`` does and keeps
  every intermediate array, grouped by stage:

      RPN         anchors, their objectness and deltas; against the ground truth, their labels (slide "RPN:
                  which anchors are objects")
      proposals   the top anchors decoded and clipped (before NMS), the proposals NMS keeps (after), and
                  the recall of the ground-truth boxes at IoU 0.5 and 0.7 (slide "RPN proposals")
      box head    each proposal's K class probabilities and K - 1 class-specific boxes; the candidates that
                  pass the score threshold, and those per-class NMS keeps (slide "Inference")
      mask head   each detection's K mask probabilities (m x m) and its own class's mask pasted into the
                  image (slides "K (m x m) sigmoid outputs", "Paste Back")
      detections  what ``predict`` returns

* ``proposal_recall(boxes, gt_boxes)``: the share of ground-truth boxes that some box overlaps at IoU >= t.
* ``activation_statistics(model, image)``: mean, std, share of zeros, min and max of every layer's output
  during ``predict``, and one feature map per stage (each layer's ``forward`` is wrapped for the run, then
  restored: the layers themselves are not changed).
* ``weights_report(params, records)``: each layer's weights and, where training logged them, the norms of its
  weight and gradient over the steps.

The figures of all this are in ``inspection_figures.py``; ``mrcnn-edu inspect`` draws them.

Shapes: A anchors, T top anchors, B boxes before NMS, P proposals (RoIs), K classes with the background as
class 0, D detections, G ground-truth boxes, m the mask side, H x W the image.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, NamedTuple

from . import backend
from ._validate import check_boxes
from .activations import sigmoid, softmax
from .boxes import (BOX_HEAD_WEIGHTS, RPN_BOX_WEIGHTS, _box_decode, _box_iou, _clip_boxes_to_image, _nms,
                    _remove_small_boxes)
from .heads import paste_masks
from .inputs import check_images
from .nn import ReLU
from .postprocess import _class_boxes, _select, detection_masks
from .rpn import _label_anchors
from .weights import layer_of, norms_over_training

__all__ = ["GroundTruth", "RPNStage", "ProposalStage", "BoxHeadStage", "MaskHeadStage", "Trace", "trace",
           "proposal_recall", "LayerStatistics", "Activations", "activation_statistics", "WeightsReport",
           "weights_report", "RECALL_IOUS"]

RECALL_IOUS = (0.5, 0.7)
RPN_MIN_SIZE = 1e-3        # MaskRCNN._proposals drops proposals with a side under this (pixels)


class GroundTruth(NamedTuple):
    """One image's objects: ``boxes`` G x 4, ``labels`` G int64 (1..K-1), ``masks`` G x H x W bool or None."""
    boxes: Any
    labels: Any
    masks: Any


class RPNStage(NamedTuple):
    """The RPN on every anchor.

    anchors    : A x 4 ``(x1, y1, x2, y2)``
    objectness : A logits
    deltas     : A x 4 ``(dx, dy, dw, dh)``, weights ``RPN_BOX_WEIGHTS``
    labels     : A float against the ground truth, before sampling: 1 object (IoU >= 0.7 or a box's best
                 anchor), 0 not object (IoU < 0.3), -1 ignored; None without ground truth
    matches    : A int64, the matched ground-truth box (-1 not object, -2 ignored); None without ground truth
    best_iou   : G, each ground-truth box's best IoU with an anchor (why a box gets few anchors); None without
    """
    anchors: Any
    objectness: Any
    deltas: Any
    labels: Any
    matches: Any
    best_iou: Any


class ProposalStage(NamedTuple):
    """From anchors to proposals: top-k by objectness, decode, clip, drop tiny boxes, NMS.

    top_anchors   : T int64, the anchors of highest objectness, best first (T = min(A, rpn_pre_nms))
    from_anchor   : B int64, the anchor each box before NMS came from (the top anchors that stay big enough)
    before_nms    : B x 4 their decoded, clipped boxes
    before_scores : B sigmoid objectness
    kept          : P int64 indices into ``before_nms`` that NMS keeps (at most rpn_post_nms_test), best first
    boxes         : P x 4 ``before_nms[kept]``: the RoIs the box head classifies
    scores        : P
    recall        : ``{"before_nms": {0.5: r, 0.7: r}, "after_nms": {...}}``, the share of ground-truth boxes
                    some proposal overlaps at that IoU or more; None without ground truth
    """
    top_anchors: Any
    from_anchor: Any
    before_nms: Any
    before_scores: Any
    kept: Any
    boxes: Any
    scores: Any
    recall: Any


class BoxHeadStage(NamedTuple):
    """The box head on the P proposals, and the steps of ``postprocess_detections``.

    class_probs : P x K softmax probabilities (class 0 the background)
    class_boxes : P x (K-1) x 4, each proposal's box for each object class: its deltas decoded, clipped
    candidates  : C int64 flat indices into ``class_boxes.reshape(-1, 4)`` (proposal ``i // (K-1)``, class
                  ``i % (K-1) + 1``) scoring above ``score_threshold`` and not tiny, in increasing order
    after_nms   : flat indices (a subset of ``candidates``) that NMS within each class keeps, best first; the
                  first ``detections_per_image`` are the detections
    """
    class_probs: Any
    class_boxes: Any
    candidates: Any
    after_nms: Any

    def candidate(self, index):
        """``(boxes, scores, labels, proposals)`` of the candidates at flat ``index`` (an int array)."""
        k = self.class_boxes.shape[1]
        boxes = self.class_boxes.reshape(-1, 4)[index]
        return boxes, self.class_probs[:, 1:].reshape(-1)[index], index % k + 1, index // k


class MaskHeadStage(NamedTuple):
    """The mask head on the D detections.

    probs  : D x K x m x m sigmoid probabilities, one mask per class (only the detection's own class is used)
    pasted : D x H x W the own class's probabilities pasted into the image (``heads.paste_masks``); the
             detection's mask is ``pasted >= 0.5``
    """
    probs: Any
    pasted: Any


class Trace(NamedTuple):
    """Everything ``trace`` kept: the model's config (its thresholds), the image, its ground truth (or None),
    the stages, and the detections (a dict as ``predict`` returns: ``boxes`` D x 4, ``scores`` D, ``labels`` D,
    ``masks`` D x H x W bool)."""
    config: Any
    image: Any
    gt: Any
    rpn: RPNStage
    proposals: ProposalStage
    box_head: BoxHeadStage
    mask_head: MaskHeadStage
    detections: dict


# ---------------------------------------------------------------------------------------------------------
# the trace

def trace(model, image, gt=None):
    """Run ``model`` on one image as ``MaskRCNN.predict`` does, keeping every stage's arrays (see ``Trace``).

    model : a ``MaskRCNN``
    image : H x W x 3 uint8 with H = W = ``model.config.image_size`` (as ``predict`` takes each image)
    gt    : None, or the image's ground truth: a dict with ``boxes`` G x 4 and ``labels`` G, and optionally
            ``masks`` G x H x W; it adds the anchors' labels and the proposals' recall
    The detections equal ``model.predict(image[None])[0]``. Arrays stay on the backend.
    """
    image = _check_image(model, image)
    return _trace(model, image, None if gt is None else _check_gt(gt, model.config))


def _trace(model, image, gt):
    """The maths of ``trace``: image H x W x 3 checked, gt a ``GroundTruth`` or None."""
    cfg = model.config
    size = (cfg.image_size, cfg.image_size)
    was_training = model.training
    model.train(False)
    try:
        maps = model._features(model.normalize(image[None]))
        objectness, deltas = model.rpn.forward(maps.rpn)
        rpn = _rpn_stage(model.anchors(), objectness[0], deltas[0], gt)
        proposals = _proposal_stage(rpn, cfg, size, gt)
        box_feats, _ = model._pool(maps.box, model.box_stride, [proposals.boxes], cfg.box_pool)
        class_logits, box_deltas = model.box_head.forward(box_feats)
        box_head, detections = _box_head_stage(class_logits, box_deltas, proposals.boxes, cfg, size)
        mask_logits = model._mask_logits(maps.mask, [detections["boxes"]])
    finally:
        model.train(was_training)
    detections["masks"] = detection_masks(mask_logits, detections["labels"], detections["boxes"], size)
    mask_head = _mask_head_stage(mask_logits, detections, size)
    return Trace(cfg, image, gt, rpn, proposals, box_head, mask_head, detections)


def _rpn_stage(anchors, objectness, deltas, gt):
    """Objectness and deltas of one image's anchors, and the anchors' labels against its ground truth."""
    if gt is None:
        return RPNStage(anchors, objectness, deltas, None, None, None)
    gt_boxes = gt.boxes.astype(anchors.dtype, copy=False)
    labels, matches = _label_anchors(anchors, gt_boxes)
    best_iou = _box_iou(gt_boxes, anchors).max(axis=1) if gt_boxes.shape[0] else gt_boxes[:, 0]
    return RPNStage(anchors, objectness, deltas, labels, matches, best_iou)


def _proposal_stage(rpn, cfg, size, gt):
    """The steps of ``rpn._generate_proposals`` one by one, keeping the boxes before NMS."""
    xp = backend.get_array_module(rpn.objectness)
    top = xp.argsort(-rpn.objectness)[:int(cfg.rpn_pre_nms)]
    boxes = _box_decode(rpn.deltas[top], rpn.anchors[top].astype(rpn.deltas.dtype, copy=False), RPN_BOX_WEIGHTS)
    boxes = _clip_boxes_to_image(boxes, size)
    big = _remove_small_boxes(boxes, RPN_MIN_SIZE)
    before, scores = boxes[big], sigmoid(rpn.objectness[top])[big]
    kept = _nms(before, scores, float(cfg.rpn_nms))[:int(cfg.rpn_post_nms_test)]
    recall = None
    if gt is not None and gt.boxes.shape[0]:
        recall = {"before_nms": _recall(before, gt.boxes, RECALL_IOUS),
                  "after_nms": _recall(before[kept], gt.boxes, RECALL_IOUS)}
    return ProposalStage(top, top[big], before, scores, kept, before[kept], scores[kept], recall)


def _box_head_stage(class_logits, box_deltas, proposals, cfg, size):
    """``postprocess_detections`` in its two steps (``_class_boxes``, ``_select``), keeping every candidate;
    returns the ``BoxHeadStage`` and the detections (``boxes``, ``scores``, ``labels``)."""
    P, K = class_logits.shape
    boxes, scores, labels = _class_boxes(class_logits, box_deltas, proposals, size, BOX_HEAD_WEIGHTS)
    candidates, after_nms = _select(boxes, scores, labels, cfg.score_threshold, cfg.detection_nms)
    keep = after_nms[:cfg.detections_per_image]
    detections = dict(boxes=boxes[keep], scores=scores[keep], labels=labels[keep])
    stage = BoxHeadStage(softmax(class_logits, axis=1), boxes.reshape(P, K - 1, 4), candidates, after_nms)
    return stage, detections


def _mask_head_stage(mask_logits, detections, size):
    """Every class's mask probabilities, and each detection's own class's mask pasted into the image."""
    xp = backend.get_array_module(mask_logits)
    probs = sigmoid(mask_logits)
    D = probs.shape[0]
    own = probs[xp.arange(D), detections["labels"]] if D else probs[:, 0]
    return MaskHeadStage(probs, paste_masks(own, detections["boxes"], size))


# ---------------------------------------------------------------------------------------------------------
# recall of the ground truth

def proposal_recall(boxes, gt_boxes, thresholds=RECALL_IOUS):
    """The share of ground-truth boxes that at least one of ``boxes`` overlaps with IoU >= t, for each t.

    boxes      : B x 4 float ``(x1, y1, x2, y2)`` (proposals; B may be 0)
    gt_boxes   : G x 4 float, G >= 1
    thresholds : IoU thresholds in [0, 1]
    Returns ``{t: recall}`` with floats in [0, 1].
    """
    boxes = check_boxes(boxes, "boxes")
    gt_boxes = check_boxes(gt_boxes, "gt_boxes", backend.get_array_module(boxes))
    if gt_boxes.shape[0] == 0:
        raise ValueError("gt_boxes: expected at least one box (the recall of no objects is undefined)")
    thresholds = tuple(float(t) for t in thresholds)
    if not all(0 <= t <= 1 for t in thresholds):
        raise ValueError(f"thresholds: expected IoUs in [0, 1], got {thresholds}")
    return _recall(boxes, gt_boxes.astype(boxes.dtype, copy=False), thresholds)


def _recall(boxes, gt_boxes, thresholds):
    xp = backend.get_array_module(boxes)
    best = _box_iou(gt_boxes, boxes).max(axis=1) if boxes.shape[0] else xp.zeros(gt_boxes.shape[0])
    return {t: float((best >= t).mean()) for t in thresholds}


# ---------------------------------------------------------------------------------------------------------
# activations

class LayerStatistics(NamedTuple):
    """One layer's output during inference: its dotted name, type, shape and statistics (floats);
    ``zeros`` is the share of entries exactly 0 (after a ReLU: the units that did not fire)."""
    name: str
    layer: str
    shape: tuple
    mean: float
    std: float
    zeros: float
    min: float
    max: float


class Activations(NamedTuple):
    """``table``: a ``LayerStatistics`` per layer, in the order the layers ran. ``feature_maps``: per stage
    (the dotted name of the block, e.g. ``backbone.stage2``), the output of its last ReLU, C x h x w on the
    backend: the image's maps, or the first detection's for the mask head."""
    table: list
    feature_maps: dict


def activation_statistics(model, image):
    """Statistics of every layer's output while ``model.predict`` runs on one image (see ``Activations``).

    model : a ``MaskRCNN``
    image : H x W x 3 uint8, H = W = ``model.config.image_size``
    """
    return _activation_statistics(model, _check_image(model, image))


def _activation_statistics(model, image):
    with _recorded_outputs(model) as outputs:
        model._predict(image[None])
    table = [_layer_statistics(name, layer, out) for name, layer, out in outputs]
    maps = {name.rpartition(".")[0]: out[0] for name, layer, out in outputs     # a later ReLU replaces
            if isinstance(layer, ReLU) and out.ndim == 4 and out.shape[0]}          # an earlier one
    return Activations(table, maps)


def _named_modules(module, prefix=""):
    """``(dotted name, module)`` of ``module`` and its descendants, depth first (the model itself is "")."""
    found = [(prefix, module)]
    for name, child in module.children():
        found += _named_modules(child, f"{prefix}.{name}" if prefix else name)
    return found


@contextmanager
def _recorded_outputs(model):
    """While the block runs, every leaf layer's output goes into the yielded list as ``(name, layer, output)``.
    Each leaf's ``forward`` is shadowed by an instance attribute that records, removed again on the way out.
    The outputs are recorded as copies: a ``ReLU(inplace=True)`` after a layer overwrites that layer's output."""
    outputs = []
    leaves = [(name, m) for name, m in _named_modules(model) if not m.children()]

    def recording(name, layer):
        forward = layer.forward

        def forward_and_record(x):
            out = forward(x)
            outputs.append((name, layer, out.copy()))
            return out
        return forward_and_record

    for name, layer in leaves:
        layer.forward = recording(name, layer)
    try:
        yield outputs
    finally:
        for _, layer in leaves:
            vars(layer).pop("forward", None)


def _layer_statistics(name, layer, out):
    kind = type(layer).__name__
    if out.size == 0:
        nan = float("nan")
        return LayerStatistics(name, kind, tuple(out.shape), nan, nan, nan, nan, nan)
    # + 0.0 turns -0.0, which an in-place ReLU leaves where its input was negative, into 0.0 for the table
    return LayerStatistics(name, kind, tuple(out.shape), float(out.mean()), float(out.std()),
                           float((out == 0).mean()), float(out.min()) + 0.0, float(out.max()) + 0.0)


# ---------------------------------------------------------------------------------------------------------
# weights

class WeightsReport(NamedTuple):
    """``weights``: layer name (the parameter's name without ``.weight``, as ``weights.layer_of``) -> its weight
    array, in the model's order. ``steps`` (S int) and ``norms`` (layer -> ``{"weight": S, "grad": S}``): the
    L2 norms training logged (``weights.norms_over_training``); S is 0 for a run that logged none."""
    weights: dict
    steps: Any
    norms: dict


def weights_report(params, records=()):
    """Each layer's weights, and the norms of its parameters and their gradient over training.

    params  : dict parameter name -> array (``model.parameters()``, or ``load_checkpoint(path)["params"]``)
    records : the lines of the run's ``metrics.jsonl`` (dicts); those with ``"norms"`` give the norms
    """
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of parameter name -> array, got {type(params).__name__}")
    weights = {layer_of(name): p for name, p in params.items() if name.endswith(".weight")}
    steps, norms = norms_over_training(list(records))
    return WeightsReport(weights, steps, norms)


# ---------------------------------------------------------------------------------------------------------
# checks

def _check_image(model, image):
    """One image as ``predict`` takes it, of the model's size."""
    size = model.config.image_size
    image = backend.xp.asarray(image)
    if image.shape != (size, size, 3):
        raise ValueError(f"image: expected {size} x {size} x 3 (the model's image_size, RGB), got shape "
                         f"{tuple(image.shape)}")
    return check_images(image[None])[0]


def _check_gt(gt, config):
    if not isinstance(gt, dict) or not {"boxes", "labels"} <= set(gt):
        raise ValueError("gt: expected a dict with 'boxes' (G x 4) and 'labels' (G), and optionally 'masks'")
    xp = backend.xp
    boxes = check_boxes(xp.asarray(gt["boxes"]), "gt['boxes']")
    labels = xp.asarray(gt["labels"])
    if labels.shape != (boxes.shape[0],) or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"gt['labels']: expected {boxes.shape[0]} integer classes, got shape {tuple(labels.shape)}")
    if labels.size and bool(((labels < 1) | (labels >= config.num_classes)).any()):
        raise ValueError(f"gt['labels']: expected classes in [1, {config.num_classes - 1}] (0 is the background)")
    masks = gt.get("masks")
    if masks is not None:
        masks = xp.asarray(masks).astype(bool)
        size = config.image_size
        if masks.shape != (boxes.shape[0], size, size):
            raise ValueError(f"gt['masks']: expected {boxes.shape[0]} x {size} x {size}, got shape "
                             f"{tuple(masks.shape)}")
    return GroundTruth(boxes, labels.astype(xp.int64), masks)
