"""What the RPN (stage 3) and the box head (stage 7) share: the matcher, the balanced sampler, the smooth-L1 beta.

Both stages ask the same two questions of their boxes (anchors for the RPN, proposals for the box head):

    IoU matrix (G x A)  ->  match_by_iou     ->  matched ground truth per box, or -1 (below low) / -2 (in between)
    labels (A)          ->  sample_balanced  ->  a random mini-batch of at most B boxes, at most a share p positive

The RPN asks with 0.7 / 0.3 and the low-quality rule, 256 anchors, half positive; the box head with 0.5 / 0.5,
512 RoIs, a quarter foreground. torchvision keeps the same two pieces in ``models/detection/_utils.py``
(``Matcher``, ``BalancedPositiveNegativeSampler``); here they are vectorized, with no loop over boxes.
"""
from __future__ import annotations

from . import backend
from ._validate import check_ndim

__all__ = ["BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS", "BOX_BETA", "match_by_iou", "sample_balanced",
           "sample_mask_rois"]

BELOW_LOW_THRESHOLD = -1  # matched index of an anchor whose best IoU is < low ("not object")
BETWEEN_THRESHOLDS = -2   # matched index of an anchor whose best IoU is in [low, high) ("ignored")
BOX_BETA = 1.0 / 9.0      # smooth-L1 beta of both the RPN and the box head, as in torchvision


# ---------------------------------------------------------------------------------------------------------
# The matcher (slide "RPN: which anchors are objects").

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
    check_ndim(iou, "iou", 2, "G x A")
    _check_thresholds(high, low)
    return _match_by_iou(iou, high, low, allow_low_quality)


def _match_by_iou(iou, high=0.7, low=0.3, allow_low_quality=True):
    """The maths of ``match_by_iou``: iou G x A float; 0 <= low <= high <= 1.

    The model's batched cores hand it a batch, B x G x A (B x A matches): images with fewer than G ground
    truths fill their rows with IoU -1, a row that matches nothing and is nobody's best.
    """
    xp = backend.get_array_module(iou)
    num_gt, num_anchors = iou.shape[-2:]
    if num_gt == 0 or num_anchors == 0:
        return xp.full(iou.shape[:-2] + (num_anchors,), BELOW_LOW_THRESHOLD, dtype=xp.int64)
    best_iou = iou.max(axis=-2)
    best_gt = iou.argmax(axis=-2).astype(xp.int64)
    matches = xp.where(best_iou < low, BELOW_LOW_THRESHOLD,
                       xp.where(best_iou < high, BETWEEN_THRESHOLDS, best_gt)).astype(xp.int64)
    if allow_low_quality:
        # exact equality on purpose: ties of the best IoU all count, as in torchvision
        best_of_gt = iou.max(axis=-1, keepdims=True)
        is_best_for_some_gt = ((iou == best_of_gt) & (best_of_gt >= 0)).any(axis=-2)
        matches = xp.where(is_best_for_some_gt, best_gt, matches)
    return matches


# ---------------------------------------------------------------------------------------------------------
# The balanced mini-batch (slide "RPN mini-batch: 256 anchors, up to 1:1").

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
    labels = backend.get_array_module(labels).asarray(labels)
    check_ndim(labels, "labels", 1, "a 1-D array of A labels")
    _check_sampler(batch_size, positive_fraction)
    _check_rng(rng)
    return _sample_balanced(labels, rng, batch_size, positive_fraction)


def _sample_balanced(labels, rng, batch_size=256, positive_fraction=0.5):
    """The maths of ``sample_balanced``: labels A; rng with ``.random(n)``; batch_size an int >= 0.
    The model's batched cores hand it a batch, labels B x A (B x A masks, each image its own counts)."""
    xp = backend.get_array_module(labels)
    return _sample_by_keys(labels, xp.asarray(rng.random(labels.shape)), batch_size, positive_fraction)


def _sample_by_keys(labels, keys, batch_size, positive_fraction):
    """``_sample_balanced`` on keys drawn already (labels and keys A, or B x A)."""
    xp = backend.get_array_module(labels)
    positive, negative = labels >= 1, labels == 0
    num_pos = xp.minimum(int(batch_size * positive_fraction), positive.sum(axis=-1))
    num_neg = xp.minimum(batch_size - num_pos, negative.sum(axis=-1))
    return _first_by_key(positive, keys, num_pos), _first_by_key(negative, keys, num_neg)


def _first_by_key(candidates, keys, count):
    """Mask of the ``count`` candidates with the smallest keys (keys in [0, 1); others pushed to 2): those
    whose rank in key order is below ``count`` (one count per row of a batch)."""
    xp = backend.get_array_module(candidates)
    order = xp.argsort(xp.where(candidates, keys, 2.0), axis=-1)
    rank = xp.argsort(order, axis=-1)                 # the inverse permutation: each element's place in order
    return rank < xp.asarray(count)[..., None]


def sample_mask_rois(positive, cap, rng):
    """Which positive RoIs train the mask head: all of them, or ``cap`` chosen uniformly at random.

    positive : R bool, the image's RoIs matched to an object (label > 0)
    cap      : int, at most this many are kept; ``cap <= 0`` keeps every positive
    rng      : numpy Generator; draws R uniform numbers when (and only when) there are more than ``cap``
    Returns R bool, a subset of ``positive`` with ``min(cap, positive.sum())`` entries set.
    The mask head is most of a step's arithmetic, and the positives of one object are near-duplicates, so a
    few of them teach it almost as much as all.
    """
    if cap <= 0 or int(positive.sum()) <= cap:
        return positive
    return _draw_mask_rois(positive, cap, rng)


def _draw_mask_rois(positive, cap, rng):
    """``cap`` of the positives (more than ``cap`` of them), chosen uniformly: R uniform keys drawn."""
    xp = backend.get_array_module(positive)
    keys = xp.where(positive, xp.asarray(rng.random(positive.shape[0])), 2.0)   # negatives sort last
    keep = xp.zeros_like(positive)
    keep[xp.argsort(keys)[:cap]] = True
    return keep


def _sample_mask_rois_batch(positive_per_image, cap, rng, counts):
    """``sample_mask_rois`` of every image of a batch (a list of R_i bool), with nothing read back: ``counts``,
    each image's number of positives (B ints, read by the box head's sampler), decides whether it draws. The
    same draws, image after image."""
    if cap <= 0:
        return list(positive_per_image)
    return [_draw_mask_rois(p, cap, rng) if count > cap else p for p, count in zip(positive_per_image, counts)]


def _sample_mask_rois_each(positive_per_image, cap, rng, counts):
    """``_sample_mask_rois_batch`` image by image, through ``sample_mask_rois`` (the capstone's stand-in while a
    student's is in place; ``counts`` are not needed)."""
    return [sample_mask_rois(p, cap, rng) for p in positive_per_image]


# ---------------------------------------------------------------------------------------------------------
# Checks of the knobs, shared by the public functions of matching, rpn and roi_heads.

def _check_thresholds(high, low):
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"low, high: expected 0 <= low <= high <= 1, got low={low!r}, high={high!r}")


def _check_sampler(batch_size, positive_fraction):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size_per_image: expected a non-negative int, got {batch_size!r}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction: expected a value in [0, 1], got {positive_fraction!r}")


def _check_rng(rng):
    if not hasattr(rng, "random"):
        raise TypeError(f"rng: expected a random generator of the backend (numpy.random.Generator on NumPy), "
                        f"got {type(rng).__name__}")
