"""Lesson 07 exercises: the second stage's training targets, its loss, and pasting masks back (lecture stage 7).

Work in your copy, ``lessons/07_heads/exercise_work.py``: ``mrcnn-edu lessons start`` makes it from this file
and never overwrites it, and git ignores it. Replace each ``raise NotImplementedError`` in task order, then
grade your copy:

    mrcnn-edu lessons check 07                 a table: passed / failed / not yet written, and a score
    pytest lessons/07_heads --impl exercise    the tests themselves, each failure expected against got

The signatures and docstrings are the library's, ``mrcnn_edu/roi_heads.py`` (tasks 1-3) and
``mrcnn_edu/heads.py`` (task 4), whose functions are the reference solutions: try first, read them after.
The other stages' library functions are imported below for you to use: lesson 01 wrote the box functions,
lesson 03 the matcher and the balanced sampler, lesson 04 RoIAlign, lesson 05 the losses. Task 2's
``box_loss="giou"`` is not graded (the tests use the default smooth-L1); to try it, import ``giou_loss``
from ``mrcnn_edu.losses`` and ``box_decode_backward`` from ``mrcnn_edu.boxes``. A loop over RoIs is fine
here if it helps you think (the library has none), and there is no need to validate the inputs. The hints
are in README.md.
"""
import numpy as np  # noqa: F401

from mrcnn_edu.boxes import box_decode, box_encode, box_iou  # noqa: F401
from mrcnn_edu.losses import smooth_l1_loss, softmax_cross_entropy  # noqa: F401
from mrcnn_edu.roi import roi_align  # noqa: F401
from mrcnn_edu.rpn import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, match_by_iou, sample_balanced  # noqa: F401

BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision's box-head BoxCoder weights
BOX_BETA = 1.0 / 9.0                       # smooth-L1 beta of the box head, as in torchvision


# --- Task 1: box_head_targets -------------------------------------------------------------------------

def box_head_targets(proposals, gt_boxes, gt_labels, rng, batch_size_per_image=512, positive_fraction=0.25,
                     fg_iou=0.5, bg_iou=0.5, weights=BOX_HEAD_WEIGHTS):
    """The box head's mini-batch of ONE image, as torchvision ``RoIHeads.select_training_samples``.

    proposals : P0 x 4 float (x1, y1, x2, y2), the RPN's proposals (no gradient)
    gt_boxes  : G x 4 float (x1, y1, x2, y2); G may be 0 (a background image)
    gt_labels : G int, classes in [1, K) (0 is the background)
    rng       : random generator of the backend (``numpy.random.Generator`` on NumPy)
    Steps: append the ground-truth boxes to the proposals (so that every object has a perfect RoI);
    match by IoU (>= fg_iou foreground, < bg_iou background, in between ignored; no low-quality rule);
    label each foreground RoI with its ground truth's class and the background 0; sample at most
    ``batch_size_per_image`` RoIs with at most ``positive_fraction`` of them foreground; encode the
    matched ground truth relative to each sampled RoI with ``weights``.
    Returns ``(rois, labels, regression_targets, matched_gt_index)``, kept in proposal order
    (proposals first, then the appended ground truth):
      rois               : P x 4 float (dtype of ``proposals``)
      labels             : P int64, class of the matched ground truth or 0
      regression_targets : P x 4 float, ``box_encode(roi, matched gt, weights)`` (only the foreground
                           enters the loss; zeros for an image without ground truth)
      matched_gt_index   : P int64 in [0, G), 0 for background RoIs (as torchvision's clamp)
    """
    raise NotImplementedError("box_head_targets (task 1) is not written yet")


# --- Task 2: fast_rcnn_loss ---------------------------------------------------------------------------

def fast_rcnn_loss(class_logits, box_regression, labels, regression_targets, box_loss="smooth_l1", proposals=None,
                   weights=BOX_HEAD_WEIGHTS):
    """Classification and box losses of the box head, with their gradients (torchvision ``fastrcnn_loss``).

    class_logits       : P x K float, K classes including the background 0
    box_regression     : P x 4K float, deltas (dx, dy, dw, dh) for every class, class k in columns 4k..4k+3
    labels             : P int, classes in [0, K)
    regression_targets : P x 4 float, target deltas (used for labels > 0)
    Returns ``(loss_cls, loss_box, dclass_logits, dbox_regression)``:
      loss_cls = mean over the P RoIs of softmax cross-entropy
      loss_box = sum over foreground RoIs of smooth-L1(own class's deltas - targets, beta=1/9) / P
    Only the 4 columns of each foreground RoI's own class receive a box gradient. P == 0 gives zero losses
    (torchvision would return NaN).

    box_loss="giou" (the lecture's question, an IoU-based L_box) replaces smooth-L1 by ``1 - GIoU`` of the
    decoded box against the ground truth (``losses.giou_loss``), summed over the foreground and divided by P
    like smooth-L1. It needs the ``proposals`` (P x 4) the deltas refer to and the box coder ``weights``;
    the ground-truth box is recovered as ``box_decode(regression_targets, proposals)``, and the gradient goes
    back through the decoding (``boxes.box_decode_backward``).
    """
    raise NotImplementedError("fast_rcnn_loss (task 2) is not written yet")


# --- Task 3: mask_targets -----------------------------------------------------------------------------

def mask_targets(gt_masks, proposals, matched_gt_index, m, aligned=False):
    """Each RoI's ground-truth mask cropped and resized to m x m (torchvision ``project_masks_on_boxes``).

    gt_masks         : G x H x W bool or float, the image's instance masks (1 inside the object)
    proposals        : R x 4 float (x1, y1, x2, y2) in image pixels, the positive RoIs
    matched_gt_index : R int, the ground truth of each RoI, in [0, G)
    m                : int, the mask head's output size (28 in the paper)
    aligned          : False as torchvision; True samples mask pixel ``(u, v)`` at the box point
                       ``x1 + (u + 0.5) w / m`` in continuous coordinates (pixel ``i`` centred at ``i + 0.5``),
                       the convention ``heads.paste_masks`` pastes back with. torchvision's False reads the
                       ground truth half a pixel down and to the right of that: a model trained on those
                       targets and pasted with pixel centres draws every mask half a pixel off.
    Returns R x m x m float (dtype of ``proposals``): RoIAlign of the mask, seen as a G x 1 x H x W feature
    map, with RoIs (matched index, box), spatial scale 1, adaptive sampling. Values lie in [0, 1]; the mask
    loss thresholds nothing, it trains on these soft values.
    """
    raise NotImplementedError("mask_targets (task 3) is not written yet")


# --- Task 4: paste_masks ------------------------------------------------------------------------------

def paste_masks(masks, boxes, image_size):
    """Resample each detection's mask into its box in the image (slide "RoI-Align Paste Back").

    masks      : D x m x m float probabilities (the predicted class's channel, after the sigmoid)
    boxes      : D x 4 float ``(x1, y1, x2, y2)`` in image pixels
    image_size : ``(H, W)``
    Returns D x H x W float: image pixel ``(y, x)`` reads the mask bilinearly at
    ``u = (x + 0.5 - x1) / (x2 - x1) * m - 0.5`` (and ``v`` likewise), pixel centres to pixel centres, with
    zeros around the mask: a pixel whose centre is half a mask pixel outside the box reads half the edge
    value, one a whole mask pixel out reads 0 (torchvision pads its masks with a zero border the same way).
    Threshold at 0.5 for binary masks: a full mask then covers exactly the pixels whose centres lie in the box.
    Written as ``roi_align(padded, rois, (H, W), sampling_ratio=1, aligned=True)`` on the masks padded with
    one zero pixel a side, with, per mask, the RoI that the whole image covers in that mask's coordinates:
    one sample per output pixel, at its centre.
    """
    raise NotImplementedError("paste_masks (task 4) is not written yet")
