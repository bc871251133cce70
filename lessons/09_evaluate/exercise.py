"""Lesson 09 exercises: COCO average precision from first principles, for one class (lecture stage 9).

Work in your copy, ``lessons/09_evaluate/exercise_work.py``: ``mrcnn-edu lessons start`` makes it from this
file and never overwrites it, and git ignores it. Replace each ``raise NotImplementedError`` in task order,
then grade your copy:

    mrcnn-edu lessons check 09                   a table: passed / failed / not yet written, and a score
    pytest lessons/09_evaluate --impl exercise   the tests themselves, each failure expected against got

The signatures and docstrings are the library's, those of ``mrcnn_edu/ap.py``, whose
functions are the reference solutions (and agree with pycocotools' ``COCOeval`` to 1e-12): try first, read
them after. Loops over detections and images are fine here (the library has one fixed-point iteration
instead), and there is no need to validate the inputs. The hints are in README.md.
"""
import numpy as np  # noqa: F401

from mrcnn_edu.boxes import box_iou  # noqa: F401  (the IoU of boxes, lesson 01: box AP's ious)

# COCOeval's constants, built with the very expression of pycocotools (its Params.setDetParams): the last
# bits of these floats decide which recall levels a curve reaches (0.7 is 0.7000000000000001 here).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
COCO_MAX_IOU = 1 - 1e-10   # COCOeval caps a threshold of 1 just below it, so that IoU 1 still matches


# --- Task 1: mask_iou -----------------------------------------------------------------------------

def mask_iou(masks1, masks2):
    """IoU of every pair of instance masks: what mask AP ("segm") uses where box AP uses ``box_iou``.

    masks1 : N x H x W bool (or 0/1), e.g. the detections' masks
    masks2 : M x H x W bool (or 0/1), e.g. the ground truth's, the same H x W
    returns N x M float64 ``|A and B| / |A or B|`` counted in pixels, 0 where both masks are empty; as
    pycocotools' ``mask.iou`` with ``iscrowd`` 0, which counts the same pixels in run-length code.
    Both counts are one matrix product of the flattened masks: ``|A and B| = a . b`` for 0/1 vectors.
    """
    raise NotImplementedError("mask_iou (task 1) is not written yet")


# --- Task 2: match_detections ---------------------------------------------------------------------

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
    raise NotImplementedError("match_detections (task 2) is not written yet")


# --- Task 3: precision_recall ---------------------------------------------------------------------

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
    raise NotImplementedError("precision_recall (task 3) is not written yet")


# --- Task 4: average_precision --------------------------------------------------------------------

def average_precision(precision, recall):
    """COCO's average precision of one curve: 101-point interpolated, under the monotone envelope.

    precision, recall : D float each, a curve from ``precision_recall`` (recall non-decreasing)
    returns a Python float in [0, 1], 0.0 for an empty curve::

        envelope_i = max_{j >= i} precision_j                  (precision never rises again to the right)
        AP = mean over r in RECALL_THRESHOLDS (0, 0.01, ..., 1) of envelope at the first i with recall_i >= r,
             or 0 where the curve never reaches r

    as the inner loop of pycocotools' ``COCOeval.accumulate`` (``np.searchsorted(recall, r, side="left")``).
    """
    raise NotImplementedError("average_precision (task 4) is not written yet")


# --- Task 5: ap_at_thresholds ---------------------------------------------------------------------

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
    raise NotImplementedError("ap_at_thresholds (task 5) is not written yet")
