"""Lesson 01 exercises: IoU, box encoding and decoding, NMS (lecture stage 1).

Work in your copy, ``lessons/01_iou/exercise_work.py``: ``mrcnn-edu lessons start`` makes it from this file
and never overwrites it, and git ignores it, so ``git pull`` never touches your work. Replace each
``raise NotImplementedError`` in task order, then grade your copy:

    mrcnn-edu lessons check 01                 a table: passed / failed / not yet written, and a score
    pytest lessons/01_iou --impl exercise      the tests themselves, each failure expected against got

The signatures and docstrings are the library's, ``mrcnn_edu/boxes.py``, whose functions are the reference
solutions: try first, read them after. Plain NumPy on NumPy arrays is enough, a Python loop is fine where
it helps you think (the library has none), and there is no need to validate the inputs: the tests grade
the numbers, not the error messages. The hints are in README.md.
"""
import math

import numpy as np  # noqa: F401  (you will need it)

# Largest dw, dh fed to exp() when decoding: a box may grow at most 1000/16 = 62.5 times (torchvision's value).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


# --- Task 1: box_area -----------------------------------------------------------------------------

def box_area(boxes):
    """Area of each box: ``(x2 - x1) * (y2 - y1)``.

    boxes : N x 4 float ``(x1, y1, x2, y2)``
    returns N, same dtype.
    """
    raise NotImplementedError("box_area (task 1) is not written yet")


# --- Task 2: box_iou ------------------------------------------------------------------------------

def box_iou(boxes1, boxes2):
    """Intersection over union of every pair of boxes (lecture stage 1, "IoU").

    boxes1 : N x 4 float ``(x1, y1, x2, y2)``
    boxes2 : M x 4 float ``(x1, y1, x2, y2)``
    returns N x M, ``iou[i, j] = area(b1_i & b2_j) / area(b1_i | b2_j)`` in ``[0, 1]``, the inputs' dtype.

    Equal to ``torchvision.ops.box_iou`` except where the union is 0 (two zero-area boxes, e.g. the same
    point twice): there torchvision returns NaN (0 / 0) and this returns 0, so that a degenerate box never
    matches anything. Empty inputs give an empty ``N x M`` result.
    """
    raise NotImplementedError("box_iou (task 2) is not written yet")


# --- Task 3: box_encode ---------------------------------------------------------------------------

def box_encode(reference, targets, weights=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets that move each reference box onto its target (lecture stage 1, "box encoding").

    reference : N x 4 float, the boxes the deltas are relative to (anchors or proposals)
    targets   : N x 4 float, the ground-truth box matched to each reference box
    weights   : ``(wx, wy, ww, wh)``, positive; ``(10, 10, 5, 5)`` for the box head in torchvision
    returns N x 4 deltas ``(dx, dy, dw, dh)``, the common dtype of the inputs::

        dx = wx * (cx_t - cx_r) / w_r        dw = ww * log(w_t / w_r)
        dy = wy * (cy_t - cy_r) / h_r        dh = wh * log(h_t / h_r)

    The same numbers as torchvision's ``BoxCoder(weights).encode_single(targets, reference)`` (torchvision
    names the ground truth "reference_boxes"; here "reference" is the anchor, as on the slide). Every
    box needs a positive width and height (a ``ValueError`` otherwise: the division or the log would give
    inf or NaN).
    """
    raise NotImplementedError("box_encode (task 3) is not written yet")


# --- Task 4: box_decode ---------------------------------------------------------------------------

def box_decode(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0), clip=BBOX_XFORM_CLIP):
    """Apply regression deltas to reference boxes: the inverse of ``box_encode`` (lecture stage 1, "decoding").

    deltas    : N x 4K float, K sets of ``(dx, dy, dw, dh)`` per box (K = 1 for the RPN, one set per class
                for the box head)
    reference : N x 4 float, the anchors or proposals the deltas are relative to
    weights   : ``(wx, wy, ww, wh)``, positive, the ones ``box_encode`` used
    clip      : upper bound on ``dw / ww`` and ``dh / wh`` before ``exp`` (default ``log(1000 / 16)``, so a
                box grows at most 62.5 times); there is no lower bound, as in torchvision
    returns N x 4K boxes ``(x1, y1, x2, y2)``, columns ``4k:4k+4`` decoded from deltas ``4k:4k+4``::

        cx = dx / wx * w_r + cx_r     w = exp(min(dw / ww, clip)) * w_r     x1, x2 = cx -+ 0.5 * w
        cy = dy / wy * h_r + cy_r     h = exp(min(dh / wh, clip)) * h_r     y1, y2 = cy -+ 0.5 * h

    The same numbers as torchvision's ``BoxCoder(weights, clip).decode_single(deltas, reference)``.
    torchvision computes in the deltas' dtype; this computes in the common dtype of both inputs.
    """
    raise NotImplementedError("box_decode (task 4) is not written yet")


# --- Task 5: nms ----------------------------------------------------------------------------------

def nms(boxes, scores, iou_threshold):
    """Non-maximum suppression (lecture stage 1, "NMS"): indices of the boxes kept, by decreasing score.

    boxes         : N x 4 float ``(x1, y1, x2, y2)``
    scores        : N float, finite
    iou_threshold : in ``[0, 1]``; a box is dropped when its IoU with a higher-scored *kept* box is
                    strictly greater than this
    returns K int64 indices into ``boxes``, sorted by decreasing score, as ``torchvision.ops.nms``.

    Greedy NMS as a loop over boxes ("take the best, drop what it overlaps, repeat") would be a Python
    loop of N steps. Instead the boxes are sorted by score (a stable sort on ``-scores``: ties keep the
    lower index first, as torchvision) and their N x N IoU matrix is computed once; the greedy decisions
    are then the fixed point of ``keep[j] = not any_{i<j}(keep[i] and iou[i, j] > threshold)``, found by
    iterating from all-True (see ``_greedy_keep``: the kept prefix is exact after each iteration, so it
    converges in at most N iterations, in practice in a handful). Time and memory are O(N^2): a few
    N x N temporaries, about 70 MB for 2000 float32 boxes, which is why proposals are cut to the top few
    thousand by score before NMS.
    """
    raise NotImplementedError("nms (task 5) is not written yet")
