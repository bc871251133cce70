"""Lecture stage 9: evaluation. COCO average precision of boxes and masks, through pycocotools.

A detection counts as a true positive at IoU threshold t when it overlaps a not yet matched ground-truth
object of its class with IoU >= t (box IoU for "bbox", mask IoU for "segm"), taking detections by decreasing
score. AP is the area under the precision-recall curve (101 recall points), averaged over the classes; COCO's
AP averages it again over t = 0.50, 0.55, ..., 0.95, AP50 and AP75 take one threshold each. pycocotools'
``COCOeval`` computes all of it; this module only turns the model's arrays into its input and its output
into a dict and a table.

``evaluate_coco`` scores a model on a COCO data set at its images' original sizes (what ``mrcnn-edu
evaluate`` prints, and what ``train`` prints for its validation set). ``ap.py`` computes the same AP
without pycocotools, step by step, as lesson 09 does; ``breakdown.py`` splits it by class and object size
and counts which class the detections take each object for.

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
from ._validate import as_float_array, check_boxes, check_finite, check_ndim, check_same_length
from .data.coco import coco_from_dict, encode_masks, samples_to_coco
from .data.shapes import CLASS_NAMES
from .inference import predict_in_batches

__all__ = ["STAT_NAMES", "IOU_TYPES", "detections_to_coco", "write_results", "shapes_ground_truth",
           "coco_results", "coco_evaluate", "format_table", "evaluate_coco"]

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
    return coco_from_dict(samples_to_coco(samples, CLASS_NAMES))


# -------------------------------------------------------------------------------------------- COCO AP
def coco_results(coco_gt, detections, iou_type):
    """A pycocotools result set of ``detections`` (COCO result dicts) for one IoU type, "bbox" or "segm":
    ``coco_gt.loadRes`` of them, or an empty result set when there are none (``breakdown.py`` uses it too)."""
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
    evaluator = COCOeval(coco_gt, coco_results(coco_gt, detections, iou_type), iou_type)
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


def evaluate_coco(model, dataset, batch_size=16, label_map=None):
    """COCO AP of a model on a COCO data set, at the images' original sizes: what ``mrcnn-edu evaluate``
    prints, and what ``train`` prints for its validation set (one function, so the two agree to the digit).

    dataset   : a ``data.coco.CocoDataset`` loaded with ``size=model.config.image_size``
    label_map : None, or an int array: the data set's class of each of the model's classes
    Returns ``(metrics, results, detections)``: the metrics dict, the COCO results (original sizes, the
    data set's category ids) and each image's detections on its resized, padded image. Detections that
    lie in the padding are dropped (``data.images.detections_to_original``).
    """
    from .data.images import detections_to_original
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
