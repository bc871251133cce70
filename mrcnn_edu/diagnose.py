"""Which stage loses the AP? Replace the model's stages by the ground truth, one at a time and all together.

Inference runs four stages one after another (``MaskRCNN._predict``):

    proposals  the RPN's boxes                      -> RoIAlign -> box head
    class      the box head's K + 1 softmax          \\
    box        the box head's class-specific deltas  /  -> postprocess_detections (threshold, NMS, top 20)
    mask       the mask head's own-class 28 x 28 mask, pasted into the detection's box at 0.5

``oracle_predict`` runs the same stages with a switch per stage; a stage switched on is replaced by what a
perfect stage would hand on, with everything after it left to the model:

* ``proposals``: the image's ground-truth boxes are the proposals (the RPN is skipped); the box head still
  classifies and refines them.
* ``class``: each proposal takes the class of the ground truth it overlaps best at IoU >= 0.5 (the box
  head's own training rule, ``matching._match_by_iou`` at 0.5 / 0.5), or the background if none (then it is
  dropped). Its score is the model's foreground confidence ``f = 1 - p(background)`` lifted into the upper
  half of ``(score_threshold, 1]`` as ``s = t + (1 - t) (1 + f) / 2``, ``t = score_threshold``. The lift
  keeps an object the truth calls foreground from being thrown away by the threshold (with ``f`` itself, a
  ground-truth box the box head calls background is lost, and ``all`` misses its ceiling); the order
  keeps the model's ranking among duplicates (a one-hot score of 1 would tie them all, the duplicates
  would rank with the best boxes, and the row could lose AP instead of gaining it).
  The new scores reach ``postprocess_detections`` as logits ``log(p)``, whose softmax is ``p``.
* ``box``: each proposal matched to a ground truth (IoU >= 0.5, the box head's training rule) gets, for
  every class, the deltas that move it exactly onto that ground truth (``box_encode``), so the perfect
  regression then goes through the same decoding, per-class NMS and top-k; unmatched proposals keep the
  model's deltas.
* ``mask``: each detection whose box overlaps a ground truth at IoU >= 0.5 gets that object's true mask,
  cut into the detection's box as the 28 x 28 training target (``roi_heads._mask_targets``, aligned) and
  pasted back exactly as predictions are (``heads.paste_masks``, threshold 0.5); unmatched detections keep
  the model's mask.

``diagnose`` scores six rows on a validation set with COCO box and mask AP: ``model`` (nothing replaced),
``proposals``, ``class``, ``box``, ``mask`` (one stage each) and ``all`` (the four together: ground-truth
boxes of the true class, not moved, with the true mask's 28 x 28 round trip, the pipeline's ceiling). A
row's cost is its AP minus the model's: the AP that stage loses. The costs need not add up to the
ceiling's: the stages interact (a regressor that moves nothing makes the ``proposals`` row perfect). On
shapes the ceiling is box AP 1 and a mask AP that only the 28 x 28 round trip can keep under 1
(``tests/test_diagnose.py`` measures it).

Shapes: N images of H x W, G ground-truth objects, P proposals, D detections, K classes with the background
as class 0, m the mask side (28). Boxes ``(x1, y1, x2, y2)`` in continuous pixel coordinates. The stages run
on the backend's device; only the COCO metric moves the detections to the host.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from . import backend
from .activations import sigmoid, softmax
from .boxes import BOX_HEAD_WEIGHTS, _box_encode, _box_iou
from .heads import paste_masks
from .inputs import Target, check_images, check_targets
from .matching import _match_by_iou
from .model import MaskRCNN
from .postprocess import detection_masks, postprocess_detections
from .roi_heads import _mask_targets

__all__ = ["STAGES", "ROWS", "oracle_predict", "diagnose", "format_rows"]

STAGES = ("proposals", "class", "box", "mask")
# each row of the table: its name and the stages it replaces by the ground truth
ROWS = (("model", ()), ("proposals", ("proposals",)), ("class", ("class",)), ("box", ("box",)),
        ("mask", ("mask",)), ("all", STAGES))
MATCH_IOU = 0.5        # the box head's foreground rule: a box belongs to a ground truth at IoU >= 0.5
MASK_THRESHOLD = 0.5   # as ``detection_masks``


class BoxHeadOutput(NamedTuple):
    """The box head on a batch's proposals: ``proposals`` a list of N ``P_i x 4``, ``class_logits`` P x K,
    ``box_deltas`` P x 4K, ``image_of`` P (each RoI's image index), P = sum P_i."""
    proposals: list
    class_logits: Any
    box_deltas: Any
    image_of: Any


# ------------------------------------------------------------------------------------------ public
def oracle_predict(model, images, targets, replace=()):
    """``model.predict(images)`` with the stages named in ``replace`` replaced by the ground truth.

    model   : a ``MaskRCNN``
    images  : N x H x W x 3 uint8, as ``MaskRCNN.predict``
    targets : N dicts with ``boxes`` G x 4, ``labels`` G (1..K-1), ``masks`` G x H x W bool (as training)
    replace : any of ``STAGES`` ("proposals", "class", "box", "mask"); () is the model itself
    Returns, as ``predict``, a list of N dicts with ``boxes`` D x 4, ``scores`` D, ``labels`` D and ``masks``
    D x H x W bool, on the backend.
    """
    if not isinstance(model, MaskRCNN):
        raise TypeError(f"model: expected a MaskRCNN, got {type(model).__name__}")
    images = check_images(images)
    targets = check_targets(targets, len(images), model.config)
    replace = _check_stages(replace)
    return _rows_of_batch(model, images, targets, [("oracle", replace)])["oracle"]


def diagnose(model, samples, batch_size=16, progress=False):
    """COCO box and mask AP of each row of ``ROWS`` on ``samples``, and what each stage costs.

    model      : a ``MaskRCNN``
    samples    : N samples ``(image H x W x 3 uint8, masks G x H x W bool, class_ids G)``, e.g.
                 ``data.shapes.validation_set``
    batch_size : images a forward pass
    progress   : show a progress bar over the images
    Returns a list of dicts, one per row in ``ROWS`` order: ``name``, ``replaced`` (the stages), ``box_ap``,
    ``mask_ap``, and ``box_cost``, ``mask_cost``: the row's AP minus the model row's.
    """
    from .data.shapes import boxes_from_masks
    if not isinstance(model, MaskRCNN):
        raise TypeError(f"model: expected a MaskRCNN, got {type(model).__name__}")
    samples = list(samples)
    if not samples:
        raise ValueError("samples: expected at least one (image, masks, class_ids) sample, got none")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    images = check_images(backend.xp.stack([backend.xp.asarray(s[0]) for s in samples]))
    targets = check_targets([dict(boxes=boxes_from_masks(s[1]), labels=s[2], masks=s[1]) for s in samples],
                            len(samples), model.config)
    return _diagnose(model, samples, images, targets, batch_size, progress)


def format_rows(rows):
    """The rows of ``diagnose`` as a text table: AP, and the signed cost of each stage, then the costliest."""
    lines = [f"{'ground truth replaces':24}{'box AP':>8}{'cost':>8}{'mask AP':>9}{'cost':>8}"]
    label = {"model": "nothing (the model)", "all": "all four (the ceiling)"}
    for r in rows:
        costs = (("", "") if r["name"] == "model" else (f"{r['box_cost']:+.3f}", f"{r['mask_cost']:+.3f}"))
        lines.append(f"{label.get(r['name'], r['name']):24}{r['box_ap']:8.3f}{costs[0]:>8}"
                     f"{r['mask_ap']:9.3f}{costs[1]:>8}")
    stages = [r for r in rows if r["name"] in STAGES]
    if stages:
        worst = {kind: max(stages, key=lambda r: r[f"{kind}_cost"]) for kind in ("box", "mask")}
        lines.append("costliest stage: " + "; ".join(f"{kind} AP {w['name']} ({w[f'{kind}_cost']:+.3f})"
                                                      for kind, w in worst.items()))
    return "\n".join(lines)


def _check_stages(replace):
    if isinstance(replace, str):
        replace = (replace,)
    unknown = [s for s in replace if s not in STAGES]
    if unknown:
        raise ValueError(f"replace: expected stages among {STAGES}, got {unknown}")
    return tuple(replace)


# ------------------------------------------------------------------------------------------ the table
def _diagnose(model, samples, images, targets, batch_size, progress):
    """The rows of ``diagnose``: every row's detections, a batch at a time, then COCO AP of each row."""
    from tqdm.auto import tqdm

    from .evaluate import coco_evaluate, detections_to_coco, shapes_ground_truth
    xp = backend.xp
    results = {name: [] for name, _ in ROWS}
    bar = tqdm(total=len(samples), desc="diagnose", unit="image", disable=not progress)
    for start in range(0, len(samples), batch_size):
        batch = [Target(*(xp.asarray(a) for a in t)) for t in targets[start:start + batch_size]]
        for name, detections in _rows_of_batch(model, images[start:start + batch_size], batch, ROWS).items():
            for i, d in enumerate(detections, start=start + 1):
                results[name] += detections_to_coco(i, d["boxes"], d["scores"], d["labels"], d["masks"])
        bar.update(len(batch))
    bar.close()
    coco_gt = shapes_ground_truth(samples)
    rows = []
    for name, replaced in ROWS:
        metrics = coco_evaluate(coco_gt, results[name])
        rows.append(dict(name=name, replaced=list(replaced), box_ap=metrics["box_AP"], mask_ap=metrics["mask_AP"]))
    for r in rows:
        r["box_cost"], r["mask_cost"] = r["box_ap"] - rows[0]["box_ap"], r["mask_ap"] - rows[0]["mask_ap"]
    return rows


# ------------------------------------------------------------------------------------------ the stages
def _rows_of_batch(model, images, targets, rows):
    """``{name: detections}`` of one batch for each row ``(name, replaced stages)``, as ``model._predict``
    does it, stage by stage: the backbone, the RPN and the box head run once for all rows, the mask head
    once for the rows that share their boxes (a row and its twin with the mask replaced)."""
    cfg = model.config
    was_training = model.training
    model.train(False)
    try:
        maps = model._features(model.normalize(images))
        objectness, deltas = model.rpn.forward(maps.rpn)
        heads = {False: _box_head(model, maps.box, model._proposals(model.anchors(), objectness, deltas,
                                                                    cfg.rpn_post_nms_test))}
        if any("proposals" in replaced for _, replaced in rows):
            heads[True] = _box_head(model, maps.box, [t.boxes.astype(maps.box.dtype) for t in targets])
        boxes_of, out = {}, {}
        for name, replaced in rows:
            key = tuple(s for s in replaced if s != "mask")   # the stages that decide the boxes
            if key not in boxes_of:
                head = heads["proposals" in replaced]
                detections = [_detections(model, head, i, t, replaced) for i, t in enumerate(targets)]
                boxes_of[key] = detections, model._mask_logits(maps.mask, [d["boxes"] for d in detections])
            detections, mask_logits = boxes_of[key]
            out[name] = _with_masks(model, detections, mask_logits, targets, "mask" in replaced)
    finally:
        model.train(was_training)
    return out


def _box_head(model, box_map, proposals):
    """RoIAlign of each image's proposals on the box head's map, and the box head on them."""
    feats, cache = model._pool(box_map, model.box_stride, proposals, model.config.box_pool)
    class_logits, box_deltas = model.box_head.forward(feats)
    return BoxHeadOutput(proposals, class_logits, box_deltas, cache.rois[:, 0])


def _detections(model, head, i, target, replaced):
    """Image ``i``'s detections (``boxes``, ``scores``, ``labels``) from the box head's outputs, with the
    class and the box deltas replaced by the truth where ``replaced`` says so."""
    cfg = model.config
    own = head.image_of == i
    proposals, class_logits, box_deltas = head.proposals[i], head.class_logits[own], head.box_deltas[own]
    if "class" in replaced or "box" in replaced:
        matched = _match_by_iou(_box_iou(target.boxes.astype(proposals.dtype), proposals), MATCH_IOU, MATCH_IOU,
                                allow_low_quality=False)
        if "class" in replaced:
            class_logits = _true_class_logits(class_logits, target.labels, matched, cfg.score_threshold)
        if "box" in replaced:
            box_deltas = _true_box_deltas(box_deltas, proposals, target.boxes.astype(proposals.dtype), matched)
    return postprocess_detections(class_logits, box_deltas, proposals, (cfg.image_size, cfg.image_size),
                                  cfg.score_threshold, cfg.detection_nms, cfg.detections_per_image, BOX_HEAD_WEIGHTS)


def _true_class_logits(class_logits, gt_labels, matched, score_threshold):
    """Logits whose softmax gives each matched proposal its ground truth's class, scored by the model's
    foreground confidence lifted above the threshold, and gives the rest the background.

    class_logits : P x K, gt_labels : G int64, matched : P int64 ground-truth index or negative (none)
    Returns P x K float, ``log p`` of the oracle's probabilities ``p`` (so ``softmax`` gives back ``p``).
    """
    xp = backend.get_array_module(class_logits)
    foreground = 1 - softmax(class_logits, axis=1)[:, 0]
    score = score_threshold + (1 - score_threshold) * (1 + foreground) / 2
    rows = xp.nonzero(matched >= 0)[0]
    p = xp.zeros_like(class_logits)
    p[:, 0] = 1
    p[rows, 0] = 1 - score[rows]
    p[rows, gt_labels[matched[rows]]] = score[rows]
    return xp.log(xp.maximum(p, xp.finfo(p.dtype).tiny))


def _true_box_deltas(box_deltas, proposals, gt_boxes, matched):
    """The deltas that move each matched proposal exactly onto its ground truth, for every class.

    box_deltas : P x 4K, proposals : P x 4, gt_boxes : G x 4, matched : P int64 index or negative (none)
    Returns P x 4K: the true deltas on matched rows, the model's on the others.
    """
    xp = backend.get_array_module(box_deltas)
    true = _box_encode(proposals, gt_boxes[xp.maximum(matched, 0)], BOX_HEAD_WEIGHTS) if gt_boxes.shape[0] \
        else xp.zeros_like(proposals)
    true = xp.tile(true.astype(box_deltas.dtype), (1, box_deltas.shape[1] // 4))
    return xp.where((matched >= 0)[:, None], true, box_deltas)


def _with_masks(model, detections, mask_logits, targets, true_masks):
    """Copies of the batch's detections with their binary masks: the model's (``detection_masks``), or,
    with ``true_masks``, the true mask of each detection that overlaps a ground truth at IoU >= 0.5."""
    size = (model.config.image_size,) * 2
    out, start = [], 0
    for d, target in zip(detections, targets):
        n = len(d["boxes"])
        logits, start = mask_logits[start:start + n], start + n
        if true_masks:
            probs = _true_mask_probs(logits, d, target, model.mask_size)
            masks = paste_masks(probs, d["boxes"], size) >= MASK_THRESHOLD
        else:
            masks = detection_masks(logits, d["labels"], d["boxes"], size, MASK_THRESHOLD)
        out.append(dict(d, masks=masks))
    return out


def _true_mask_probs(mask_logits, detection, target, m):
    """D x m x m mask probabilities: the model's own-class sigmoid, and on each detection matched to a
    ground truth that object's mask cut into the detection's box (the 28 x 28 training target)."""
    xp = backend.get_array_module(mask_logits)
    boxes, labels = detection["boxes"], detection["labels"]
    probs = sigmoid(mask_logits[xp.arange(len(labels)), labels])
    matched = _match_by_iou(_box_iou(target.boxes.astype(boxes.dtype), boxes), MATCH_IOU, MATCH_IOU,
                            allow_low_quality=False)
    rows = xp.nonzero(matched >= 0)[0]
    if rows.shape[0]:
        probs[rows] = _mask_targets(target.masks, boxes[rows], matched[rows], (m, m), True).astype(probs.dtype)
    return probs
