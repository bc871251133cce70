"""Lesson 03 exercises: the Region Proposal Network's labels, mini-batch, targets, loss and proposals (stage 3).

Work in your copy, ``lessons/03_rpn/exercise_work.py``: ``mrcnn-edu lessons start`` makes it from this file
and never overwrites it, and git ignores it. Replace each ``raise NotImplementedError`` in task order, then
grade your copy:

    mrcnn-edu lessons check 03                 a table: passed / failed / not yet written, and a score
    pytest lessons/03_rpn --impl exercise      the tests themselves, each failure expected against got

The signatures and docstrings are the library's, ``mrcnn_edu/rpn.py``, whose functions are the reference
solutions: try first, read them after. The other stages' library functions are imported below for you to
use (lesson 01 wrote the box functions, lesson 05 writes the losses). A loop over anchors is fine here if
it helps you think (the library has none), and there is no need to validate the inputs. The hints are in
README.md.
"""
import numpy as np  # noqa: F401

from mrcnn_edu.boxes import box_decode, box_encode, box_iou, clip_boxes_to_image, nms, remove_small_boxes  # noqa: F401
from mrcnn_edu.losses import binary_cross_entropy_with_logits, smooth_l1_loss  # noqa: F401

BELOW_LOW_THRESHOLD = -1  # matched index of an anchor whose best IoU is < low ("not object")
BETWEEN_THRESHOLDS = -2   # matched index of an anchor whose best IoU is in [low, high) ("ignored")
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
BOX_BETA = 1.0 / 9.0      # smooth-L1 beta of both the RPN and the box head, as in torchvision


# --- Task 1: match_by_iou -------------------------------------------------------------------------

def match_by_iou(iou, high=0.7, low=0.3, allow_low_quality=True):
    """The matcher on a precomputed IoU matrix: best ground truth per anchor, or a negative code.

    iou               : G x A float, IoU of every ground-truth box (rows) with every anchor (columns)
    high, low         : IoU >= high is a match; [low, high) gives BETWEEN_THRESHOLDS (-2); < low gives
                        BELOW_LOW_THRESHOLD (-1)
    allow_low_quality : for each ground truth, every anchor whose IoU equals that ground truth's best IoU
                        (ties included) gets back its own best match, even below ``high`` -- the paper's
                        "anchor with the highest IoU for a ground-truth box" rule, which makes sure every
                        object has at least one positive anchor. As in torchvision, a ground truth that
                        overlaps no anchor at all (best IoU 0) hands its "best" status to every anchor with
                        IoU 0 to it; such anchors then keep their own argmax, so avoid boxes outside the grid.
    Returns A int64 matched ground-truth index in [0, G) or -1 / -2 (torchvision's ``Matcher``).
    With G == 0 every anchor is -1 (not object).
    """
    raise NotImplementedError("match_by_iou (task 1) is not written yet")


# --- Task 2: label_anchors ------------------------------------------------------------------------

def label_anchors(anchors, gt_boxes, high=0.7, low=0.3):
    """Anchor labels before sampling, as torchvision ``RegionProposalNetwork.assign_targets_to_anchors``.

    anchors  : A x 4 float (x1, y1, x2, y2)
    gt_boxes : G x 4 float (x1, y1, x2, y2); G may be 0 (a background image)
    Returns ``(labels, matches)``:
      labels  : A float (dtype of ``anchors``): 1 object (IoU >= high or a ground truth's best anchor),
                0 not object (best IoU < low), -1 ignored (in between)
      matches : A int64, the matched ground-truth index or -1 / -2 as ``match_anchors``
    An image without ground truth labels every anchor 0 (all "not object") and matches -1.
    """
    raise NotImplementedError("label_anchors (task 2) is not written yet")


# --- Task 3: sample_balanced ----------------------------------------------------------------------

def sample_balanced(labels, rng, batch_size=256, positive_fraction=0.5):
    """Pick a random mini-batch of positives and negatives (torchvision ``BalancedPositiveNegativeSampler``).

    labels            : A float or int array: >= 1 positive (object, or a class id), 0 negative, -1 ignored
    rng               : random generator of the backend (``numpy.random.Generator`` on NumPy)
    batch_size        : mini-batch size B per image (256 in the RPN, 512 in the box head)
    positive_fraction : wanted share of positives (0.5 in the RPN, 0.25 in the box head)
    Returns ``(pos_mask, neg_mask)``, two A bool arrays, with
      num_pos = min(int(B * positive_fraction), #positives)
      num_neg = min(B - num_pos, #negatives)
    chosen uniformly without replacement. Vectorized: each element draws a uniform random key, and the
    positives (negatives) with the smallest keys win -- the first entries of a random permutation.
    The draw is not torchvision's (that one uses ``torch.randperm``); the counts are the same.
    """
    raise NotImplementedError("sample_balanced (task 3) is not written yet")


# --- Task 4: rpn_targets --------------------------------------------------------------------------

def rpn_targets(anchors, gt_boxes, rng, batch_size_per_image=256, positive_fraction=0.5, high=0.7, low=0.3):
    """Labels and regression targets of one image's anchors, after sampling the mini-batch.

    anchors  : A x 4 float (x1, y1, x2, y2)
    gt_boxes : G x 4 float (x1, y1, x2, y2); G may be 0
    rng      : random generator of the backend
    Returns ``(labels, regression_targets)``:
      labels             : A float (dtype of ``anchors``): 1 sampled object, 0 sampled not-object, -1 not
                           in the mini-batch (ignored anchors and anchors the sampler left out)
      regression_targets : A x 4 float, ``box_encode(anchor, matched gt)`` with weights (1, 1, 1, 1), for
                           every anchor as in torchvision (only the sampled objects enter the loss); an
                           anchor that is not an object is encoded against ground truth 0, and an image
                           without ground truth gets zeros.
    """
    raise NotImplementedError("rpn_targets (task 4) is not written yet")


# --- Task 5: rpn_loss -----------------------------------------------------------------------------

def rpn_loss(objectness, deltas, labels, regression_targets):
    """Objectness and box losses of the RPN, with their gradients (torchvision ``RPN.compute_loss``).

    objectness         : (...) float logits, one per anchor (A, or N x A for a batch)
    deltas             : (..., 4) float predicted (dx, dy, dw, dh) per anchor
    labels             : (...) float after sampling: 1 object, 0 not object, -1 not in the mini-batch
    regression_targets : (..., 4) float target deltas
    Returns ``(loss_objectness, loss_box, dobjectness, ddeltas)``:
      loss_objectness = mean over the S sampled anchors of BCE-with-logits(objectness, label)
      loss_box        = sum over the sampled objects of smooth-L1(deltas - targets, beta=1/9) / S
      dobjectness, ddeltas: gradients with the shapes of ``objectness`` and ``deltas`` (zero outside the
      mini-batch). With S == 0 both losses are 0 (torchvision would return NaN).
    """
    raise NotImplementedError("rpn_loss (task 5) is not written yet")


# --- Task 6: generate_proposals -------------------------------------------------------------------

def generate_proposals(anchors, objectness, deltas, image_size, pre_nms_top_n=2000, post_nms_top_n=2000,
                       nms_thresh=0.7, min_size=1e-3, score_thresh=0.0):
    """Proposals of ONE image and one feature level (torchvision ``RPN.filter_proposals``).

    anchors    : A x 4 float (x1, y1, x2, y2)
    objectness : A float logits
    deltas     : A x 4 float (dx, dy, dw, dh), weights (1, 1, 1, 1)
    image_size : (height, width) in pixels
    Steps: keep the ``pre_nms_top_n`` anchors of highest objectness; decode their deltas (dw, dh clamped
    at log(1000/16)); clip to the image; drop boxes with a side < ``min_size``; drop boxes whose sigmoid
    score is < ``score_thresh``; NMS at ``nms_thresh``; keep the ``post_nms_top_n`` best.
    Returns ``(boxes, scores)``: P x 4 float boxes inside the image and P float sigmoid probabilities,
    sorted by decreasing score. Proposals carry no gradient.
    """
    raise NotImplementedError("generate_proposals (task 6) is not written yet")
