"""Lecture stage 9 by hand: COCO average precision without pycocotools, and what went wrong with each
detection.

For one class and the IoU matrices of its images (lesson 09 grades it; ``tests/test_evaluate_ap.py`` checks it
against ``COCOeval`` to 1e-12): ``mask_iou`` (the IoU of masks, for mask AP), ``match_detections`` (true and
false positives at one threshold), ``precision_recall`` (the cumulative curve), ``average_precision`` (COCO's
101-point interpolation) and ``ap_at_thresholds`` (all of it, over images and thresholds).
``classify_detections`` runs the same greedy matching per detection, over all classes of an image
(pycocotools keeps only per-class counts), and names what went wrong with each detection that did not match:
the failure figures of ``visualize`` draw it. ``evaluate.py`` is the pycocotools side.

Host-only: arrays may come from either backend and are moved to the host here.
"""
from __future__ import annotations

import numpy as np

from . import backend
from ._validate import as_float_array, check_finite, check_ndim, check_same_length, number

__all__ = ["IOU_THRESHOLDS", "RECALL_THRESHOLDS", "COCO_MAX_IOU", "mask_iou", "match_detections", "greedy_match",
           "precision_recall", "average_precision", "ap_at_thresholds", "OUTCOMES", "LOW_IOU",
           "classify_detections"]


# COCOeval's constants, built with the very expression of pycocotools' ``Params.setDetParams``: recall is
# compared with these floats, and ten of them are not ``i / 100`` (0.7 is 0.7000000000000001 here, so a
# recall of exactly 7/10 does not reach the level "0.70"); only the same floats give the same AP. The ninth
# IoU threshold is 0.8999999999999999, not 0.9.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
IOU_THRESHOLDS.flags.writeable = False
RECALL_THRESHOLDS.flags.writeable = False
COCO_MAX_IOU = 1 - 1e-10   # COCOeval caps a threshold of 1 just below it, so that IoU 1 still matches


def _host_array(a):
    return np.asarray(backend.to_host(a))


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


# ----------------------------------------------------------------------------------------------------
# What happened to a detection (its index in OUTCOMES), after the greedy matching of the COCO metric:
#   true positive  matched a not yet matched object of its class with IoU >= the threshold
#   duplicate      its class's object is there (IoU >= threshold), but a higher-scored detection took it
#   wrong class    it covers an object (IoU >= threshold) of another class
#   mislocalized   it overlaps an object (any class) only with LOW_IOU <= IoU < threshold
#   background     it overlaps no object (IoU < LOW_IOU with all of them)
OUTCOMES = ("true positive", "duplicate", "wrong class", "mislocalized", "background")
LOW_IOU = 0.1   # below it a detection is "on the background" (Hoiem et al., "Diagnosing error in object detectors")


def _int_labels(labels, name):
    labels = np.asarray(backend.to_host(labels))
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    check_ndim(labels, name, 1, "a 1-D array of classes")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer classes, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def classify_detections(iou, gt_labels, labels, scores, iou_threshold=0.5, score_min=0.5):
    """Sort one image's detections into ``OUTCOMES`` and find the objects nobody detected (lecture stage 9).

    iou           : D x G IoU of the detections with the ground-truth objects (``boxes.box_iou`` of the
                    boxes, or ``mask_iou`` of the masks)
    gt_labels     : G int classes of the objects;  labels : D int classes of the detections
    scores        : D float; detections below ``score_min`` are left out (outcome -1), as on a picture
    iou_threshold : IoU a true positive needs (0.5: the AP50 rule)
    Matching is COCO's: by decreasing score, each detection takes the not yet taken object of its class
    with the highest IoU >= ``iou_threshold``.
    returns a dict of host arrays:
      ``outcome``  D int64, an index into ``OUTCOMES`` (0 true positive, ..., 4 background), -1 when left out
      ``gt_index`` D int64, the object a true positive matched, -1 for every other detection
      ``missed``   G bool, True for an object that no true positive matched
    """
    gt_labels = _int_labels(gt_labels, "gt_labels")
    labels = _int_labels(labels, "labels")
    scores = as_float_array(_host_array(scores), "scores").reshape(-1)
    check_finite(scores, "scores")
    check_same_length(labels, "labels", scores, "scores")
    iou = as_float_array(_host_array(iou), "iou")
    shape = (len(labels), len(gt_labels))
    if iou.size == 0 and 0 in shape:
        iou = iou.reshape(shape)
    if iou.shape != shape:
        raise ValueError(f"iou: expected D x G = {shape[0]} x {shape[1]} (detections x objects), got {iou.shape}")
    check_finite(iou, "iou")
    threshold = number(iou_threshold, "iou_threshold", 0, 1, low_open=True)
    score_min = number(score_min, "score_min")
    shown = np.flatnonzero(scores >= score_min)
    order = shown[np.argsort(-scores[shown], kind="stable")]      # equal scores: the earlier detection first
    iou_s, same = iou[order], labels[order][:, None] == gt_labels[None, :]
    match = greedy_match(same & (iou_s >= threshold), iou_s)

    best_same = np.where(same, iou_s, 0.0).max(axis=1, initial=0.0)
    best_other = np.where(same, 0.0, iou_s).max(axis=1, initial=0.0)
    best_any = iou_s.max(axis=1, initial=0.0)
    outcome_s = np.select([match >= 0, best_same >= threshold, best_other >= threshold, best_any >= LOW_IOU],
                          [0, 1, 2, 3], default=4)
    outcome = np.full(len(labels), -1, dtype=np.int64)
    gt_index = np.full(len(labels), -1, dtype=np.int64)
    outcome[order], gt_index[order] = outcome_s, match
    missed = np.ones(len(gt_labels), dtype=bool)
    missed[match[match >= 0]] = False
    return dict(outcome=outcome, gt_index=gt_index, missed=missed)
