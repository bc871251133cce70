"""Lecture stage 9: evaluation. COCO average precision of boxes and masks, through pycocotools.

A detection counts as a true positive at IoU threshold t when it overlaps a not yet matched ground-truth
object of its class with IoU >= t (box IoU for "bbox", mask IoU for "segm"), taking detections by decreasing
score. AP is the area under the precision-recall curve (101 recall points), averaged over the classes; COCO's
AP averages it again over t = 0.50, 0.55, ..., 0.95, AP50 and AP75 take one threshold each. pycocotools'
``COCOeval`` computes all of it; this module only turns the model's arrays into its input and its output
into a dict and a table.

The second half of the module computes the same AP without pycocotools, in a few lines of NumPy, for one
class and the IoU matrices of its images (lesson 09 grades it; ``tests/test_evaluate_ap.py`` checks it
against ``COCOeval`` to 1e-12): ``mask_iou`` (the IoU of masks, for mask AP), ``match_detections`` (true
and false positives at one threshold), ``precision_recall`` (the cumulative curve), ``average_precision``
(COCO's 101-point interpolation) and ``ap_at_thresholds`` (all of it, over images and thresholds).

Host-only: detections may come from either backend and are moved to the host here.

Conventions: boxes ``(x1, y1, x2, y2)`` in continuous pixel coordinates, written to COCO as
``[x1, y1, x2 - x1, y2 - y1]``; masks ``H x W`` bool of the image the ground truth describes, written as
compressed RLE; labels ``1..K`` contiguous, written back as the data set's own category ids.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.cocoeval import COCOeval

from . import backend
from ._validate import as_float_array, check_boxes, check_finite, check_ndim, check_same_length, number
from .data.coco import coco_from_dict, encode_masks, samples_to_coco

__all__ = ["STAT_NAMES", "IOU_TYPES", "detections_to_coco", "write_results", "shapes_ground_truth",
           "coco_evaluate", "format_table", "predict_in_batches", "evaluate_coco", "IOU_THRESHOLDS",
           "RECALL_THRESHOLDS", "COCO_MAX_IOU", "mask_iou",
           "match_detections", "greedy_match", "precision_recall", "average_precision", "ap_at_thresholds"]

# The 12 numbers of COCOeval.stats, in order (s/m/l: small, medium, large objects; ARn: recall at n dets).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = {"bbox": "box", "segm": "mask"}   # pycocotools' name -> the prefix of our metric names


# ------------------------------------------------------------------------------------- detections
def _labels(labels, count, category_ids):
    labels = np.asarray(backend.to_host(labels))
    check_ndim(labels, "labels", 1, "R labels (1-D)")
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 1
                        or (category_ids is not None and labels.max() > len(category_ids))):
        top = "K" if category_ids is None else len(category_ids)
        raise ValueError(f"labels: expected integer classes in 1..{top}, got {labels[:8].tolist()}")
    if len(labels) != count:
        raise ValueError(f"labels: expected {count} rows to match boxes, got {len(labels)}")
    return labels


def _masks(masks, count):
    masks = np.asarray(backend.to_host(masks))
    check_ndim(masks, "masks", 3, "R x H x W masks")
    if len(masks) != count:
        raise ValueError(f"masks: expected {count} rows to match boxes, got {len(masks)}")
    return masks if masks.dtype == bool else masks > 0.5


def detections_to_coco(image_id, boxes, scores, labels, masks=None, category_ids=None):
    """One image's detections as COCO result dicts (what ``coco_evaluate`` and ``write_results`` take).

    image_id     : the image's id in the ground truth
    boxes        : R x 4 float ``(x1, y1, x2, y2)``, continuous pixel coordinates
    scores       : R float
    labels       : R int, classes ``1..K``
    masks        : R x H x W bool (or probabilities, thresholded at 0.5), or None for boxes only
    category_ids : K category ids, ``category_ids[k - 1]`` for class ``k`` (``CocoDataset.category_ids``);
                   None writes the class itself
    returns a list of R dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score",
    "segmentation": RLE}``.
    """
    boxes = check_boxes(backend.to_host(boxes), "boxes")
    scores = as_float_array(backend.to_host(scores), "scores")
    check_ndim(scores, "scores", 1, "R scores (1-D)")
    check_same_length(boxes, "boxes", scores, "scores")
    check_finite(scores, "scores")
    labels = _labels(labels, len(boxes), category_ids)
    categories = labels if category_ids is None else np.asarray(category_ids, dtype=object)[labels - 1]
    image_id = image_id.item() if isinstance(image_id, np.generic) else image_id
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()
    results = [{"image_id": image_id, "category_id": int(c) if isinstance(c, (int, np.integer)) else c,
                "bbox": b, "score": float(s)} for c, b, s in zip(categories.tolist(), xywh, scores.tolist())]
    if masks is not None:
        for result, rle in zip(results, encode_masks(_masks(masks, len(boxes)))):
            result["segmentation"] = rle
    return results


def write_results(path, results):
    """Write COCO result dicts as a JSON list (the ``--results`` file); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(results)), encoding="utf-8")
    return path


def shapes_ground_truth(samples):
    """An in-memory pycocotools ground truth of shapes samples (no files needed).

    samples : N samples ``(image, masks, class_ids)`` (e.g. ``shapes.validation_set()``)
    returns a ``pycocotools.coco.COCO`` whose image ids are ``1..N`` in order: detections on ``samples[i]``
    go in with ``image_id = i + 1``; category ids are the shapes classes 1, 2, 3.
    """
    return coco_from_dict(samples_to_coco(samples))


# -------------------------------------------------------------------------------------------- COCO AP
def _results_for(coco_gt, detections, iou_type):
    """A pycocotools result set of ``detections`` for one IoU type (an empty one when there are none)."""
    key = "bbox" if iou_type == "bbox" else "segmentation"
    missing = sum(key not in d for d in detections)
    if missing:
        raise ValueError(f"detections: {missing} of {len(detections)} lack '{key}', needed for {iou_type} AP")
    if not detections:
        # loadRes fails on an empty list: an empty result set scores AP 0 wherever there is ground truth
        return coco_from_dict({"images": coco_gt.dataset["images"], "annotations": [],
                               "categories": copy.deepcopy(coco_gt.dataset["categories"])})
    results = [dict(d) for d in detections]  # loadRes writes ids and areas into the dicts
    if iou_type == "segm":
        # with a bbox present pycocotools takes the box area as the object's area (small/medium/large)
        for r in results:
            r.pop("bbox", None)
    return coco_gt.loadRes(results)


def _stats(coco_gt, detections, iou_type):
    """The 12 COCOeval numbers for one IoU type."""
    evaluator = COCOeval(coco_gt, _results_for(coco_gt, detections, iou_type), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def coco_evaluate(coco_gt, detections, verbose=False, iou_types=("bbox", "segm")):
    """COCO AP of detections against a ground truth (lecture stage 9, "COCO AP").

    coco_gt    : a ``pycocotools.coco.COCO`` (``shapes_ground_truth``, ``CocoDataset.coco``) or anything
                 with such a ``.coco`` attribute (a ``CocoDataset``)
    detections : COCO result dicts (``detections_to_coco`` of every image, concatenated); may be empty
    verbose    : print pycocotools' own report too
    iou_types  : any of "bbox" (box AP) and "segm" (mask AP)
    returns ``{"box_AP", "box_AP50", "box_AP75", "box_stats", "mask_AP", ...}``: floats in [0, 1] (-1
    where the ground truth has no object to score, as pycocotools), ``*_stats`` the 12 numbers of
    ``STAT_NAMES``. No detections give 0 wherever there is ground truth.
    """
    coco_gt = getattr(coco_gt, "coco", coco_gt)
    detections = list(detections)
    unknown_types = [t for t in iou_types if t not in IOU_TYPES]
    if unknown_types:
        raise ValueError(f"iou_types: expected 'bbox' and/or 'segm', got {unknown_types}")
    known = set(coco_gt.getImgIds())
    unknown = sorted({d.get("image_id") for d in detections} - known, key=str)
    if unknown:
        raise ValueError(f"detections: image ids {unknown[:5]} are not in the ground truth")
    metrics = {}
    printed = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with printed:
        for iou_type in iou_types:
            prefix, stats = IOU_TYPES[iou_type], _stats(coco_gt, detections, iou_type)
            metrics.update({f"{prefix}_{name}": stats[i] for i, name in enumerate(STAT_NAMES[:3])})
            metrics[f"{prefix}_stats"] = stats
    return metrics


def predict_in_batches(model, images, batch_size=16):
    """``model.predict`` over a list/array of images, ``batch_size`` at a time, results moved to the host."""
    out = []
    for i in range(0, len(images), batch_size):
        for d in model.predict(np.stack(images[i:i + batch_size])):
            out.append({k: backend.to_host(v) for k, v in d.items()})
    return out


def evaluate_coco(model, dataset, batch_size=16, label_map=None):
    """COCO AP of a model on a COCO data set, at the images' original sizes: what ``mrcnn-edu evaluate``
    prints, and what ``train`` prints for its validation set (one function, so the two agree to the digit).

    dataset   : a ``data.coco.CocoDataset`` loaded with ``size=model.config.image_size``
    label_map : None, or an int array: the data set's class of each of the model's classes
    Returns ``(metrics, results, detections)``: the metrics dict, the COCO results (original sizes, the
    data set's category ids) and each image's detections on its resized, padded image. Detections that
    lie in the padding are dropped (``data.coco.detections_to_original``).
    """
    from .data.coco import detections_to_original
    images = [dataset[i][0] for i in range(len(dataset))]
    detections = predict_in_batches(model, images, batch_size)
    results = []
    for i, d in enumerate(detections):
        info = dataset.image_info(i)
        d = detections_to_original(d, info["scale"], (info["height"], info["width"]))
        labels = d["labels"] if label_map is None else np.asarray(label_map)[d["labels"]]
        results += detections_to_coco(info["id"], d["boxes"], d["scores"], labels, d["masks"],
                                      dataset.category_ids)
    metrics = coco_evaluate(dataset.coco, results)
    return {k: v for k, v in metrics.items() if not k.endswith("_stats")}, results, detections


def format_table(metrics):
    """The AP, AP50 and AP75 rows of ``coco_evaluate``'s metrics as a small text table."""
    lines = [f"{'':6}{'AP':>8}{'AP50':>8}{'AP75':>8}"]
    for prefix in IOU_TYPES.values():
        if f"{prefix}_AP" in metrics:
            lines.append(f"{prefix:6}" + "".join(f"{metrics[f'{prefix}_{n}']:8.3f}" for n in STAT_NAMES[:3]))
    return "\n".join(lines)


# ------------------------------------------------------------------- COCO AP from first principles
# COCOeval's constants, built with the very expression of pycocotools' ``Params.setDetParams``: recall is
# compared with these floats, and ten of them are not ``i / 100`` (0.7 is 0.7000000000000001 here, so a
# recall of exactly 7/10 does not reach the level "0.70"); only the same floats give the same AP. The ninth
# IoU threshold is 0.8999999999999999, not 0.9.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
IOU_THRESHOLDS.flags.writeable = False
RECALL_THRESHOLDS.flags.writeable = False
COCO_MAX_IOU = 1 - 1e-10   # COCOeval caps a threshold of 1 just below it, so that IoU 1 still matches


def _host_floats(a, name, ndim, what):
    """``a`` (NumPy, CuPy or a list) on the host as a finite float64 array of ``ndim`` dimensions."""
    a = as_float_array(np.asarray(backend.to_host(a)), name).astype(np.float64)
    check_ndim(a, name, ndim, what)
    check_finite(a, name)
    return a


def _iou_matrix(ious, num_detections, name):
    """``ious`` on the host as a ``D x G`` float64 matrix in [0, 1] with ``D = num_detections`` (an empty 1-D
    input means no ground truth)."""
    ious = np.asarray(backend.to_host(ious))
    if ious.ndim == 1 and ious.size == 0:
        ious = ious.reshape(num_detections, 0)
    ious = _host_floats(ious, name, 2, "D x G IoUs (detections x ground-truth objects)")
    if ious.shape[0] != num_detections:
        raise ValueError(f"{name}: expected {num_detections} rows, one per score, got {ious.shape[0]}")
    if ious.size and (ious.min() < 0 or ious.max() > 1):
        raise ValueError(f"{name}: expected IoUs in [0, 1]")
    return ious


def _host_masks(masks, name):
    """``masks`` on the host as an N x H x W bool array (0/1 numbers are accepted, probabilities are not)."""
    masks = np.asarray(backend.to_host(masks))
    check_ndim(masks, name, 3, "N x H x W masks")
    if masks.dtype != bool:
        if masks.dtype.kind not in "biuf" or not np.isin(masks, (0, 1)).all():
            raise ValueError(f"{name}: expected bool masks (or 0/1); threshold probabilities first")
        masks = masks != 0
    return masks


def mask_iou(masks1, masks2):
    """IoU of every pair of instance masks: what mask AP ("segm") uses where box AP uses ``box_iou``.

    masks1 : N x H x W bool (or 0/1), e.g. the detections' masks
    masks2 : M x H x W bool (or 0/1), e.g. the ground truth's, the same H x W
    returns N x M float64 ``|A and B| / |A or B|`` counted in pixels, 0 where both masks are empty; as
    pycocotools' ``mask.iou`` with ``iscrowd`` 0, which counts the same pixels in run-length code.
    Both counts are one matrix product of the flattened masks: ``|A and B| = a . b`` for 0/1 vectors.
    """
    m1, m2 = _host_masks(masks1, "masks1"), _host_masks(masks2, "masks2")
    if m1.shape[1:] != m2.shape[1:]:
        raise ValueError(f"masks2: expected masks of masks1's size {m1.shape[1:]}, got {m2.shape[1:]}")
    pixels = m1.shape[1] * m1.shape[2]
    a = m1.reshape(len(m1), pixels).astype(np.float64)   # float64 counts are exact up to 2**53 pixels
    b = m2.reshape(len(m2), pixels).astype(np.float64)
    inter = a @ b.T
    union = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_detections(ious, scores, iou_threshold):
    """Which detections of one class in one image are true positives at one IoU threshold (COCO's matching).

    ious          : D x G float in [0, 1], IoU of every detection (rows) with every ground-truth object of
                    the class (columns, in the ground truth's order): ``box_iou`` for box AP, ``mask_iou``
                    for mask AP; ``D x 0`` when the image has no such object
    scores        : D float, the detections' confidences
    iou_threshold : in [0, 1], e.g. 0.5 for AP50
    returns D bool in the input order, True for a true positive.

    The rule of pycocotools' ``COCOeval.evaluateImg``: the detections go by decreasing score (a stable sort
    of ``-scores``: equal scores keep their input order); each takes, among the objects that no earlier
    detection took, the one it overlaps most, provided that IoU is ``>= iou_threshold``; of several equal
    best IoUs it takes the *last* column (COCOeval replaces its best unless the IoU is strictly smaller).
    A detection left without an object is a false positive, and so is a second detection of an object
    already found. As a loop over the detections::

        taken = zeros(G, bool)
        for d in argsort(-scores, kind="stable"):
            free = ~taken & (ious[d] >= iou_threshold)
            if free.any():
                g = last index of max(ious[d][free]) among the free;  taken[g] = tp[d] = True

    Each decision depends only on the earlier ones, so, as NMS in ``boxes._greedy_keep``, the decisions are
    the fixed point of "match d given the matches of the detections before d", found by iterating on all D
    at once from "nothing matched": after iteration t the first t detections are settled, so it stops after
    at most D + 1 iterations of O(D G) each, in practice after a few.
    """
    scores = _host_floats(scores, "scores", 1, "D scores (1-D)")
    ious = _iou_matrix(ious, len(scores), "ious")
    threshold = min(number(iou_threshold, "iou_threshold", 0.0, 1.0), COCO_MAX_IOU)
    D, G = ious.shape
    if D == 0 or G == 0:
        return np.zeros(D, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(D, dtype=bool)
    tp[order] = greedy_match(ious[order] >= threshold, ious[order]) >= 0
    return tp


def greedy_match(eligible, iou):
    """COCO's greedy matching, on detections already sorted by decreasing score: ``match[d]``, the object
    detection ``d`` takes, or -1 (the fixed-point iteration of ``match_detections``).

    eligible : D x G bool, the pairs that may match (IoU >= the threshold; for a picture, also the same class)
    iou      : D x G float, which eligible object a detection prefers (the last of equal maxima, as COCOeval)
    returns D int64.
    """
    D, G = eligible.shape
    match = np.full(D, -1, dtype=np.int64)
    if D == 0 or G == 0:
        return match
    columns = np.arange(G)
    while True:
        onehot = (match[:, None] == columns).astype(np.int64)
        taken = np.cumsum(onehot, axis=0) - onehot      # taken[d, g]: an earlier detection holds object g
        free = eligible & (taken == 0)
        best = G - 1 - np.argmax(np.where(free, iou, -1.0)[:, ::-1], axis=1)   # reversed: the last of ties
        new = np.where(free.any(axis=1), best, -1)
        if np.array_equal(new, match):
            return match
        match = new


def precision_recall(tp, scores, num_gt):
    """The precision-recall curve of one class: detections by decreasing score, counted cumulatively.

    tp     : D bool (or 0/1), true positive flags (``match_detections``; several images concatenated)
    scores : D float, their scores
    num_gt : int >= 1, the number of ground-truth objects of the class over the same images
    returns ``(precision, recall)``, each D float64, the detections sorted by decreasing score (stable, as
    COCOeval's mergesort: equal scores keep their order): with ``TP_i`` the true positives among the first
    ``i + 1``::

        precision_i = TP_i / (i + 1)          recall_i = TP_i / num_gt

    COCOeval divides by ``TP_i + FP_i + np.spacing(1)``, which differs in the last bit at most.
    """
    scores = _host_floats(scores, "scores", 1, "D scores (1-D)")
    tp = np.asarray(backend.to_host(tp))
    check_ndim(tp, "tp", 1, "D true-positive flags (1-D)")
    if tp.size and (tp.dtype.kind not in "biuf" or not np.isin(tp, (0, 1)).all()):
        raise ValueError("tp: expected booleans (or 0/1)")
    check_same_length(tp, "tp", scores, "scores")
    if isinstance(num_gt, bool) or int(num_gt) != num_gt or num_gt < 1:
        raise ValueError(f"num_gt: expected an int >= 1, got {num_gt!r} (COCO leaves a class without ground "
                         "truth out of its mean)")
    hits = np.cumsum(tp[np.argsort(-scores, kind="stable")].astype(np.float64))
    if hits.size and hits[-1] > num_gt:
        raise ValueError(f"num_gt: {int(hits[-1])} true positives cannot come from {num_gt} objects")
    return hits / np.arange(1, len(hits) + 1), hits / float(num_gt)


def average_precision(precision, recall):
    """COCO's average precision of one curve: 101-point interpolated, under the monotone envelope.

    precision, recall : D float each, a curve from ``precision_recall`` (recall non-decreasing)
    returns a Python float in [0, 1], 0.0 for an empty curve::

        envelope_i = max_{j >= i} precision_j                  (precision never rises again to the right)
        AP = mean over r in RECALL_THRESHOLDS (0, 0.01, ..., 1) of envelope at the first i with recall_i >= r,
             or 0 where the curve never reaches r

    as the inner loop of pycocotools' ``COCOeval.accumulate`` (``np.searchsorted(recall, r, side="left")``).
    """
    precision = _host_floats(precision, "precision", 1, "D precisions (1-D)")
    recall = _host_floats(recall, "recall", 1, "D recalls (1-D)")
    check_same_length(precision, "precision", recall, "recall")
    if not len(recall):
        return 0.0
    if np.any(np.diff(recall) < 0) or recall[0] < 0 or recall[-1] > 1:
        raise ValueError("recall: expected non-decreasing values in [0, 1] (detections by decreasing score)")
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    reached = first < len(recall)
    q = np.where(reached, envelope[np.minimum(first, len(recall) - 1)], 0.0)
    return float(q.mean())


def ap_at_thresholds(ious_per_image, scores_per_image, iou_thresholds=None, max_detections=100):
    """COCO AP of one class at each IoU threshold, from the IoU matrices of its images (COCOeval, area "all").

    ious_per_image   : a list of N arrays, image i's ``D_i x G_i`` IoUs (detections x objects of the class);
                       an image without detections still needs its ``0 x G_i``: the objects it missed count
    scores_per_image : a list of N arrays, image i's ``D_i`` scores
    iou_thresholds   : T thresholds; None for COCO's ten, ``IOU_THRESHOLDS`` (0.50, 0.55, ..., 0.95)
    max_detections   : only each image's best this many count (COCO's ``maxDets``, 100)
    returns T float64: the AP at each threshold, or -1 at every one when there is no object at all (COCO
    leaves such a class out of its means). With the default thresholds ``AP = result.mean()``,
    ``AP50 = result[0]``, ``AP75 = result[5]``; COCO's AP of a data set averages that over the classes.

    Per image: keep the top ``max_detections`` by score, ``match_detections``; then pool the images in
    their order and ``precision_recall`` of all, ``average_precision`` of that. Detections are matched
    within their own image, but ranked against every image's.
    """
    if len(ious_per_image) != len(scores_per_image):
        raise ValueError(f"scores_per_image: expected {len(ious_per_image)} arrays to match ious_per_image, "
                         f"got {len(scores_per_image)}")
    if isinstance(max_detections, bool) or int(max_detections) != max_detections or max_detections < 1:
        raise ValueError(f"max_detections: expected an int >= 1, got {max_detections!r}")
    thresholds = IOU_THRESHOLDS if iou_thresholds is None else _host_floats(iou_thresholds, "iou_thresholds", 1,
                                                                           "T thresholds (1-D)")
    images = []
    for ious, scores in zip(ious_per_image, scores_per_image):
        scores = _host_floats(scores, "scores_per_image", 1, "D scores (1-D)")
        ious = _iou_matrix(ious, len(scores), "ious_per_image")
        top = np.argsort(-scores, kind="stable")[:int(max_detections)]
        images.append((ious[top], scores[top]))
    num_gt = sum(ious.shape[1] for ious, _ in images)
    if num_gt == 0:
        return np.full(len(thresholds), -1.0)
    scores = np.concatenate([s for _, s in images])
    result = np.empty(len(thresholds))
    for t, threshold in enumerate(thresholds):
        tp = np.concatenate([match_detections(ious, s, threshold) for ious, s in images])
        result[t] = average_precision(*precision_recall(tp, scores, num_gt))
    return result
