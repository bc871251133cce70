"""Lesson 08 exercises: the plain-function steps of training and inference of the whole model (stage 8).

Work in your copy, ``lessons/08_train/exercise_work.py``: ``mrcnn-edu lessons start`` makes it from this file
and never overwrites it, and git ignores it. Replace each ``raise NotImplementedError`` in task order, then
grade your copy:

    mrcnn-edu lessons check 08                 a table: passed / failed / not yet written, and a score
    pytest lessons/08_train --impl exercise    the tests themselves, each failure expected against got

The signatures and docstrings are the library's (``rois_from_boxes`` in ``mrcnn_edu/roi.py``, ``sample_mask_rois``
in ``mrcnn_edu/matching.py``, the other two in ``mrcnn_edu/postprocess.py``), which are the reference solutions:
try first, read them after. ``MaskRCNN.loss_and_backward`` and
``MaskRCNN.predict`` call exactly these four. The other stages' library functions are imported below for you
to use (lesson 01 wrote the box functions, lesson 07 ``paste_masks``). There is no need to validate the
inputs. The hints are in README.md.
"""
import numpy as np  # noqa: F401

from mrcnn_edu.boxes import batched_nms, box_decode, clip_boxes_to_image, remove_small_boxes  # noqa: F401
from mrcnn_edu.heads import paste_masks  # noqa: F401

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)   # the box head's (wx, wy, ww, wh), as torchvision's


# --- Task 1: rois_from_boxes ----------------------------------------------------------------------

def rois_from_boxes(boxes_per_image, dtype="float32"):
    """The RoI ops' ``R x 5`` format from each image's boxes: batch index, then ``(x1, y1, x2, y2)``.

    boxes_per_image : a list of N arrays, image i's ``R_i x 4`` boxes (any float dtype)
    dtype           : the dtype of the result
    Returns ``R x 5`` with R = sum R_i, image 0's boxes first; ``0 x 5`` for no images or no boxes.
    """
    raise NotImplementedError("rois_from_boxes (task 1) is not written yet")


# --- Task 2: sample_mask_rois ---------------------------------------------------------------------

def sample_mask_rois(positive, cap, rng):
    """Which positive RoIs train the mask head: all of them, or ``cap`` chosen uniformly at random.

    positive : R bool, the image's RoIs matched to an object (label > 0)
    cap      : int, at most this many are kept; ``cap <= 0`` keeps every positive
    rng      : numpy Generator; draws R uniform numbers when (and only when) there are more than ``cap``
    Returns R bool, a subset of ``positive`` with ``min(cap, positive.sum())`` entries set.
    The mask head is most of a step's arithmetic, and the positives of one object are near-duplicates, so a
    few of them teach it almost as much as all.
    """
    raise NotImplementedError("sample_mask_rois (task 2) is not written yet")


# --- Task 3: postprocess_detections ---------------------------------------------------------------

def postprocess_detections(class_logits, box_deltas, proposals, image_size, score_threshold=0.05,
                           nms_threshold=0.5, detections_per_image=100, weights=BOX_WEIGHTS):
    """One image's detections from the box head's outputs (torchvision's ``postprocess_detections``).

    class_logits : P x K float, K classes with the background as class 0
    box_deltas   : P x 4K float, class-specific deltas ``(dx, dy, dw, dh)`` of each proposal
    proposals    : P x 4 float ``(x1, y1, x2, y2)``, the boxes the deltas refer to
    image_size   : ``(H, W)``, boxes are clipped to it
    Returns a dict: ``boxes`` D x 4, ``scores`` D (softmax probability), ``labels`` D int (1..K-1), by
    decreasing score. Every proposal gives K - 1 candidates, one per object class, each with its own box;
    candidates scoring ``<= score_threshold`` or with a side under 0.01 px are dropped, NMS runs per class
    at ``nms_threshold``, and the best ``detections_per_image`` remain.
    """
    raise NotImplementedError("postprocess_detections (task 3) is not written yet")


# --- Task 4: detection_masks ----------------------------------------------------------------------

def detection_masks(mask_logits, labels, boxes, image_size, threshold=0.5):
    """Binary image masks of D detections from the mask head (slides "K (m x m) sigmoid outputs", "Paste Back").

    mask_logits : D x K x m x m float, every class's mask logits for each detection
    labels      : D int, each detection's class: only that class's mask is used
    boxes       : D x 4 float, each detection's box in image pixels
    image_size  : ``(H, W)``
    Returns D x H x W bool: ``sigmoid(logit) >= threshold`` after pasting the probabilities into the box
    (``heads.paste_masks``, bilinear).
    """
    raise NotImplementedError("detection_masks (task 4) is not written yet")
