"""Lecture stage 9, looked at closer: where a model's AP comes from. ``mrcnn-edu evaluate`` prints all three.

* **Per class.** COCO's AP is a mean over the K classes. pycocotools keeps the precision of every class
  (``COCOeval.eval["precision"]``, ``T x R x K x A x M``: IoU thresholds x 101 recall levels x classes x
  object-size ranges x detection limits); a class's AP is the mean of its ``T x R`` slice, as the AP of the
  data set is the mean of all ``T x R x K`` (entries of -1, a class without objects, left out).
* **By object size.** COCO's split (small below 32² px², large from 96² px²) is made for 640 px photos: on
  the 128 px shapes images every object (40 to 64 px across) is "medium". Here the split is relative to the
  image: an object is *small* when its area is below ``(0.3 L)²``, *large* from ``(0.375 L)²``, L the longer
  side of its image (the side the model resizes to S), *medium* between. On the shapes validation split
  (S = 128: below 38.4² = 1475 px², from 48² = 2304 px²) that cuts the objects roughly in thirds (164 / 164
  / 134 of 462 at seed 0). The area is the ground truth's ``area`` (mask pixels), as in COCO; the bins are
  half-open, ``[0, a²) [a², b²) [b², inf)`` in units of L², so an object sits in exactly one.
  pycocotools does the split (``Params.areaRng``) on areas divided by L² of their image.
* **Confusion matrix.** Which class the detections take each object for, at box IoU >= 0.5 and score >= 0.5
  (what the figures draw). Two greedy passes of ``ap.greedy_match``, detections by decreasing score:
  first COCO's own matching, each detection to an object of its class (``ap.classify_detections``' true
  positives: the diagonal); then the detections left over, to the objects still free, of any class (a
  detection of the wrong class on a found object stays a false positive, as in the AP). Rows: the true
  class, then *background* for detections that took no object (duplicates, mislocalized, on nothing);
  columns: the predicted class, then *missed* for objects no detection took. Row k sums to the objects of
  class k; column j to the detections of class j.

Crowd annotations (``iscrowd: 1``) are left out of the confusion matrix (COCO ignores them). Host-only:
pycocotools and ``ap.py`` work on host arrays.
"""
from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict

import matplotlib.pyplot as plt
import numpy as np
from pycocotools.cocoeval import COCOeval

from . import backend
from ._validate import number
from .ap import classify_detections, greedy_match
from .boxes import box_iou
from .data.coco import coco_from_dict
from .evaluate import IOU_TYPES, coco_results
from .visualize import text_colour

__all__ = ["SIZE_NAMES", "SIZE_SPLIT", "size_bins", "image_confusion", "confusion_matrix", "class_and_size_ap",
           "coco_breakdown", "format_breakdown", "confusion_figure"]

SIZE_NAMES = ("small", "medium", "large")
SIZE_SPLIT = (0.3, 0.375)   # small: side below 0.3 L; large: side from 0.375 L (L: the image's longer side)


# --------------------------------------------------------------------------------------------- sizes
def _check_split(split):
    small, large = (number(v, "split", 0, 1, low_open=True) for v in split)
    if small >= large:
        raise ValueError(f"split: expected (small, large) with small < large, got {tuple(split)}")
    return small, large


def size_bins(areas, sides, split=SIZE_SPLIT):
    """Each object's size bin: 0 small, 1 medium, 2 large (``SIZE_NAMES``).

    areas : N float, the objects' areas in px² (the ground truth's ``area``: mask pixels)
    sides : N float (or one number), the longer side L of each object's image, px
    split : ``(a, b)``: small below ``(a L)²``, large from ``(b L)²``
    returns N int64.
    """
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    sides = np.broadcast_to(np.asarray(sides, dtype=np.float64), areas.shape)
    if not (np.isfinite(areas).all() and (areas >= 0).all()):
        raise ValueError("areas: expected finite areas >= 0")
    if not (np.isfinite(sides).all() and (sides > 0).all()):
        raise ValueError("sides: expected finite image sides > 0")
    return _size_bins(areas / sides ** 2, _check_split(split))


def _size_bins(relative_areas, split):
    """The bins of areas given in units of L²."""
    small, large = split
    return (relative_areas >= small ** 2).astype(np.int64) + (relative_areas >= large ** 2)


def _area_ranges(split):
    """pycocotools' ``areaRng`` (closed intervals) for "all" and the three half-open bins, in units of L²."""
    a2, b2 = split[0] ** 2, split[1] ** 2
    # COCOeval keeps areas in [lo, hi], ends included: each bin ends on the float just below the next one
    return [[0.0, 1e10], [0.0, float(np.nextafter(a2, 0))], [a2, float(np.nextafter(b2, 0))], [b2, 1e10]]


# --------------------------------------------------------------------------------- confusion matrix
def _int_classes(a, name, num_classes):
    a = np.asarray(backend.to_host(a))
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.ndim != 1 or a.dtype.kind not in "iu" or a.min() < 1 or a.max() > num_classes:
        raise ValueError(f"{name}: expected a 1-D array of classes in 1..{num_classes}")
    return a.astype(np.int64)


def image_confusion(iou, gt_labels, labels, scores, num_classes, iou_threshold=0.5, score_threshold=0.5):
    """One image's confusion matrix (module docstring): ``(K + 1) x (K + 1)`` int64 counts.

    iou           : D x G box IoU of the detections with the objects (``boxes.box_iou``)
    gt_labels     : G int, the objects' classes in ``1..K``;  labels : D int, the detections' classes
    scores        : D float; detections below ``score_threshold`` are left out
    num_classes   : K
    returns ``counts[k - 1, j - 1]``: objects of class k taken by a detection of class j; row K (background):
    detections that took no object; column K (missed): objects no detection took; ``counts[K, K] = 0``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
    gt_labels = _int_classes(gt_labels, "gt_labels", num_classes)
    labels = _int_classes(labels, "labels", num_classes)
    iou, scores = (np.asarray(backend.to_host(a), dtype=np.float64) for a in (iou, scores))
    verdict = classify_detections(iou, gt_labels, labels, scores, iou_threshold, score_threshold)
    return _image_confusion(iou.reshape(len(labels), len(gt_labels)), gt_labels, labels, scores.reshape(-1),
                            verdict, int(num_classes), float(iou_threshold))


def _image_confusion(iou, gt_labels, labels, scores, verdict, K, iou_threshold):
    """The counts, given ``classify_detections``' verdict (its true positives are the first pass)."""
    # class K + 1 stands for the background row and the missed column
    # first pass, COCO's matching within each class: the true positives, on the diagonal
    hit = verdict["outcome"] == 0
    true_classes, predicted = [gt_labels[verdict["gt_index"][hit]]], [labels[hit]]
    # second pass: the other shown detections, by decreasing score, on the objects still free, of any class
    others = np.flatnonzero(verdict["outcome"] > 0)
    others = others[np.argsort(-scores[others], kind="stable")]
    match = greedy_match((iou[others] >= iou_threshold) & verdict["missed"][None, :], iou[others])
    took = match >= 0
    true_classes += [gt_labels[match[took]], np.full(int((~took).sum()), K + 1)]
    predicted += [labels[others[took]], labels[others[~took]]]
    # the objects nobody took
    missed = verdict["missed"].copy()
    missed[match[took]] = False
    true_classes.append(gt_labels[missed])
    predicted.append(np.full(int(missed.sum()), K + 1))
    cell = (np.concatenate(true_classes) - 1) * (K + 1) + np.concatenate(predicted) - 1
    return np.bincount(cell, minlength=(K + 1) ** 2).reshape(K + 1, K + 1)


def _xyxy(xywh):
    boxes = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _check_detections(coco_gt, detections, keys):
    known_images, known_categories = set(coco_gt.getImgIds()), set(coco_gt.getCatIds())
    for d in detections:
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"detections: a detection lacks {missing} (COCO result dicts: detections_to_coco)")
        if d["image_id"] not in known_images:
            raise ValueError(f"detections: image id {d['image_id']!r} is not in the ground truth")
        if d["category_id"] not in known_categories:
            raise ValueError(f"detections: category id {d['category_id']!r} is not in the ground truth")


def confusion_matrix(coco_gt, detections, iou_threshold=0.5, score_threshold=0.5):
    """The confusion matrix of COCO result dicts over a whole data set (the sum of ``image_confusion``).

    coco_gt    : a ``pycocotools.coco.COCO`` (or a ``CocoDataset``); its sorted category ids are classes 1..K
    detections : COCO result dicts (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``, ``score``)
    returns ``(K + 1) x (K + 1)`` int64.
    """
    coco_gt = getattr(coco_gt, "coco", coco_gt)
    detections = list(detections)
    _check_detections(coco_gt, detections, ("image_id", "category_id", "bbox", "score"))
    iou_threshold = number(iou_threshold, "iou_threshold", 0, 1, low_open=True)
    score_threshold = number(score_threshold, "score_threshold")
    return _confusion_matrix(coco_gt, detections, iou_threshold, score_threshold)


def _confusion_matrix(coco_gt, detections, iou_threshold, score_threshold):
    class_of = {c: k for k, c in enumerate(sorted(coco_gt.getCatIds()), start=1)}
    K = len(class_of)
    by_image = defaultdict(list)
    for d in detections:
        by_image[d["image_id"]].append(d)
    counts = np.zeros((K + 1, K + 1), dtype=np.int64)
    for image_id in coco_gt.getImgIds():
        objects = [a for a in coco_gt.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        found = by_image[image_id]
        gt_labels = np.array([class_of[a["category_id"]] for a in objects], dtype=np.int64)
        labels = np.array([class_of[d["category_id"]] for d in found], dtype=np.int64)
        scores = np.array([d["score"] for d in found], dtype=np.float64)
        iou = box_iou(_xyxy([d["bbox"] for d in found]), _xyxy([a["bbox"] for a in objects]))
        verdict = classify_detections(iou, gt_labels, labels, scores, iou_threshold, score_threshold)
        counts += _image_confusion(iou, gt_labels, labels, scores, verdict, K, iou_threshold)
    return counts


# ------------------------------------------------------------------------------- AP per class and size
def _relative(coco, sides):
    """Divide every annotation's ``area`` by L² of its image, in place (``sides``: image id -> L)."""
    for ann in coco.dataset["annotations"]:
        ann["area"] = ann["area"] / sides[ann["image_id"]] ** 2


def _precision(coco_gt, detections, iou_type, split, sides):
    """pycocotools' precision array ``T x R x K x 4 x M`` (areas: all, small, medium, large; relative to L²)."""
    gt = coco_from_dict(copy.deepcopy(coco_gt.dataset))
    _relative(gt, sides)
    with contextlib.redirect_stdout(io.StringIO()):     # pycocotools prints its progress
        results = coco_results(gt, detections, iou_type)   # loadRes computes the detections' areas in px²
        _relative(results, sides)
        evaluator = COCOeval(gt, results, iou_type)
        evaluator.params.areaRng = _area_ranges(split)
        evaluator.params.areaRngLbl = ["all", *SIZE_NAMES]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"]


def _mean_ap(precision):
    """COCO's mean of a slice of the precision array: -1 entries (no objects) left out, -1 when all are."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0


def class_and_size_ap(coco_gt, detections, split=SIZE_SPLIT, iou_types=("bbox", "segm")):
    """COCO AP of each class and of each object size, for box ("bbox") and mask ("segm") IoU.

    coco_gt    : a ``pycocotools.coco.COCO`` (or a ``CocoDataset``); its sorted category ids are classes 1..K
    detections : COCO result dicts (``detections_to_coco``), with masks for "segm"
    split      : the size split ``(a, b)`` relative to each image's longer side L (module docstring)
    returns ``{"box": {"AP": mean, "class_AP": K, "class_AP50": K, "size_AP": 3}, "mask": {...}}``, floats in
    [0, 1], -1 where there is no object to score (a class or size bin without objects). ``AP`` equals
    ``coco_evaluate``'s.
    """
    coco_gt = getattr(coco_gt, "coco", coco_gt)
    detections = list(detections)
    _check_detections(coco_gt, detections, ("image_id", "category_id", "score"))
    split = _check_split(split)
    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown:
        raise ValueError(f"iou_types: expected 'bbox' and/or 'segm', got {unknown}")
    return _class_and_size_ap(coco_gt, detections, split, iou_types)


def _class_and_size_ap(coco_gt, detections, split, iou_types):
    sides = {i["id"]: max(i["height"], i["width"]) for i in coco_gt.dataset["images"]}
    out = {}
    for iou_type in iou_types:
        p = _precision(coco_gt, detections, iou_type, split, sides)[..., -1]   # T x R x K x 4, 100 detections
        out[IOU_TYPES[iou_type]] = {
            "AP": _mean_ap(p[..., 0]),
            "class_AP": [_mean_ap(p[:, :, k, 0]) for k in range(p.shape[2])],
            "class_AP50": [_mean_ap(p[0, :, k, 0]) for k in range(p.shape[2])],
            "size_AP": [_mean_ap(p[..., a]) for a in (1, 2, 3)]}
    return out


# ---------------------------------------------------------------------------------------- all of it
def coco_breakdown(coco_gt, detections, side=None, split=SIZE_SPLIT, iou_threshold=0.5, score_threshold=0.5):
    """Per-class AP, AP by object size and the confusion matrix of a model's detections (what ``mrcnn-edu
    evaluate`` prints, and writes with ``--json F``).

    coco_gt    : a ``pycocotools.coco.COCO`` (or a ``CocoDataset``);  detections : COCO result dicts, masks in
    side       : the image side at which to state the size thresholds in pixels (the model's S); None: the
                 longest image side of the data set
    returns a JSON-ready dict::

        {"per_class": [{"class", "objects", "box_AP", "box_AP50", "mask_AP", "mask_AP50"}, ... K],
         "sizes": {"relative_to", "small_below", "large_from", "side", "small_below_px2", "large_from_px2"},
         "per_size": [{"size", "area_px2": [lo, hi or None], "side_px": [lo, hi or None], "objects",
                       "box_AP", "mask_AP"}, ... 3],
         "confusion": {"iou_type": "bbox", "iou_threshold", "score_threshold", "rows": K names + "background",
                       "columns": K names + "missed", "counts": (K + 1) x (K + 1) ints}}
    """
    coco_gt = getattr(coco_gt, "coco", coco_gt)
    detections = list(detections)
    _check_detections(coco_gt, detections, ("image_id", "category_id", "bbox", "score", "segmentation"))
    split = _check_split(split)
    iou_threshold = number(iou_threshold, "iou_threshold", 0, 1, low_open=True)
    score_threshold = number(score_threshold, "score_threshold")
    sides = {i["id"]: max(i["height"], i["width"]) for i in coco_gt.dataset["images"]}
    side = number(side, "side", 0, low_open=True) if side is not None else float(max(sides.values(), default=1))

    ap = _class_and_size_ap(coco_gt, detections, split, ("bbox", "segm"))
    objects = [a for a in coco_gt.dataset["annotations"] if not a.get("iscrowd", 0)]
    names = [str(c["name"]) for c in coco_gt.loadCats(sorted(coco_gt.getCatIds()))]
    counts = _confusion_matrix(coco_gt, detections, iou_threshold, score_threshold)
    return {"per_class": _class_rows(ap, objects, coco_gt),
            "sizes": {"relative_to": "the longer side L of each image", "small_below": split[0],
                      "large_from": split[1], "side": side, "small_below_px2": (split[0] * side) ** 2,
                      "large_from_px2": (split[1] * side) ** 2},
            "per_size": _size_rows(ap, objects, sides, split, side),
            "confusion": {"iou_type": "bbox", "iou_threshold": iou_threshold, "score_threshold": score_threshold,
                          "rows": names + ["background"], "columns": names + ["missed"], "counts": counts.tolist()}}


def _class_rows(ap, objects, coco_gt):
    """One dict per class: its name, its number of objects, its box and mask AP and AP50."""
    rows = []
    for k, category in enumerate(coco_gt.loadCats(sorted(coco_gt.getCatIds()))):
        row = {"class": str(category["name"]), "objects": sum(a["category_id"] == category["id"] for a in objects)}
        for kind in ap:
            row.update({f"{kind}_AP": ap[kind]["class_AP"][k], f"{kind}_AP50": ap[kind]["class_AP50"][k]})
        rows.append(row)
    return rows


def _size_rows(ap, objects, sides, split, side):
    """One dict per size bin: its area and side range in pixels at ``side``, its objects, its box and mask AP."""
    bins = _size_bins(np.array([a["area"] / sides[a["image_id"]] ** 2 for a in objects]), split)
    edges = [0.0, split[0] * side, split[1] * side, None]   # sides of the bins' bounds, px
    rows = []
    for s, name in enumerate(SIZE_NAMES):
        low, high = edges[s], edges[s + 1]
        rows.append({"size": name, "area_px2": [low ** 2, None if high is None else high ** 2],
                     "side_px": [low, high], "objects": int((bins == s).sum()),
                     **{f"{kind}_AP": ap[kind]["size_AP"][s] for kind in ap}})
    return rows


def _table(header, rows, first):
    """Text rows: the first column left-aligned to ``first`` characters, the others right-aligned to their
    widest cell (at least 7)."""
    widths = [max(7, *(len(cells[i]) for cells in [header, *rows])) for i in range(1, len(header))]
    return ["  ".join([f"{cells[0]:{first}}"] + [f"{c:>{w}}" for c, w in zip(cells[1:], widths)])
            for cells in [header, *rows]]


def _ap_text(value):
    return "-" if value < 0 else f"{value:.3f}"


def _range_text(low, high, digits):
    return f"< {high:.{digits}f}" if low == 0 else f">= {low:.{digits}f}" if high is None else \
        f"{low:.{digits}f} .. {high:.{digits}f}"


def format_breakdown(breakdown):
    """``coco_breakdown``'s dict as three text tables: per class, by size, the confusion matrix."""
    b, c, s = breakdown, breakdown["confusion"], breakdown["sizes"]
    first = max(len(n) for n in c["rows"] + ["true \\ predicted"])
    lines = ["per class (AP: IoU 0.50:0.95, AP50: IoU 0.50; '-': no object to score):"]
    lines += _table(["class", "objects", "box AP", "box AP50", "mask AP", "mask AP50"],
                    [[r["class"], str(r["objects"])] + [_ap_text(r[k]) for k in ("box_AP", "box_AP50", "mask_AP",
                                                                                  "mask_AP50")]
                     for r in b["per_class"]], first)
    lines += ["", f"by object size (small: area below ({s['small_below']:g} L)², large: from "
                  f"({s['large_from']:g} L)², L the longer side of the image;", f"in pixels at L = {s['side']:g}):"]
    lines += _table(["size", "area (px²)", "side (px)", "objects", "box AP", "mask AP"],
                    [[r["size"], _range_text(*r["area_px2"], 0), _range_text(*r["side_px"], 1), str(r["objects"]),
                      _ap_text(r["box_AP"]), _ap_text(r["mask_AP"])] for r in b["per_size"]], first)
    lines += ["", f"confusion matrix (box IoU >= {c['iou_threshold']:g}, score >= {c['score_threshold']:g}; rows: the "
                  "true class, columns: the predicted class):"]
    rows = [[name] + [str(v) for v in counts] for name, counts in zip(c["rows"], c["counts"])]
    rows[-1][-1] = "-"    # background taken for "missed": no such thing
    lines += _table(["true \\ predicted"] + c["columns"], rows, first)
    return "\n".join(lines)


def confusion_figure(breakdown):
    """The confusion matrix as a heat map: the colour is a cell's share of its row (where each true class's
    objects went; the background row: which classes the false positives had), the number its count."""
    c = breakdown["confusion"]
    counts = np.array(c["counts"], dtype=np.float64)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    share[-1, -1] = np.nan    # background taken for "missed": no such thing
    n = len(counts)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2.2, 0.9 * n + 1.4))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (y, x), v in np.ndenumerate(counts):
        if not (y == n - 1 and x == n - 1):
            ax.text(x, y, f"{v:.0f}", ha="center", va="center", fontsize=10,
                    color=text_colour(image.cmap(image.norm(share[y, x]))))
    ax.set_xticks(range(n), c["columns"])
    ax.set_yticks(range(n), c["rows"])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix: box IoU >= {c['iou_threshold']:g}, score >= {c['score_threshold']:g}\n"
                 "(greedy matching by score, own class first)", fontsize=10)
    for edge in (ax.axhline, ax.axvline):   # background and missed are no classes: set them apart
        edge(n - 1.5, color="0.3", linewidth=1.5)
    fig.colorbar(image, ax=ax, label="share of the row")
    fig.tight_layout()
    return fig
