"""Lesson 05 exercises: the losses of Mask R-CNN, each with its gradient (lecture stage 5).

Work in your copy, ``lessons/05_losses/exercise_work.py``: ``mrcnn-edu lessons start`` makes it from this
file and never overwrites it, and git ignores it. Replace each ``raise NotImplementedError`` in task order,
then grade your copy:

    mrcnn-edu lessons check 05                   a table: passed / failed / not yet written, and a score
    pytest lessons/05_losses --impl exercise     the tests themselves, each failure expected against got

The signatures and docstrings are the library's, ``mrcnn_edu/losses.py``, whose functions are the reference
solutions: try first, read them after. Each function returns the loss *and* its gradient: write the
forward, then the backward right under it. Plain NumPy is enough, and there is no need to validate the
inputs. The hints are in README.md.
"""
import numpy as np  # noqa: F401

REDUCTIONS = ("mean", "sum", "none")


# --- Task 1: smooth_l1_loss -----------------------------------------------------------------------

def smooth_l1_loss(pred, target, beta=1.0, reduction="mean"):
    """Smooth-L1 (Huber-like) loss of box-regression deltas, as ``torch.nn.functional.smooth_l1_loss``.

    Lecture slide "smooth-L1" (beta = 1): ``0.5 x^2 if |x| < 1 else |x| - 0.5``, quadratic near 0 so
    small errors get small gradients, linear far out so one bad box cannot dominate.

    pred      : any shape, float32 or float64 (e.g. N x 4 deltas (dx, dy, dw, dh))
    target    : pred's shape; cast to pred's dtype
    beta      : float >= 0, where the quadratic part meets the linear one; ``beta == 0`` is the L1 loss
    reduction : "mean" (over all elements; 0 for an empty input, where PyTorch gives NaN), "sum" or "none"

    Maths, with x = pred - target:

        forward   l(x)     = 0.5 x^2 / beta     if |x| < beta
                           = |x| - 0.5 beta     otherwise
        backward  dl/dx    = x / beta           if |x| < beta
                           = sign(x)            otherwise (sign(0) = 0, as PyTorch)

    "mean" divides both by the number of elements; the gradient for ``target`` is ``-grad``.

    Returns ``(loss, grad)``: ``loss`` 0-d (pred's shape for "none"), ``grad`` pred's shape, pred's dtype.
    """
    raise NotImplementedError("smooth_l1_loss (task 1) is not written yet")


# --- Task 2: binary_cross_entropy_with_logits -----------------------------------------------------

def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    """Binary cross-entropy on raw scores, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Lecture slide "object / not object": the RPN objectness loss, one logit per sampled anchor.

    logits    : any shape, float32 or float64 (e.g. A sampled anchors)
    targets   : logits' shape, values in [0, 1] (1 object, 0 not object); cast to the logits' dtype
    reduction : "mean" (0 for an empty input, where PyTorch gives NaN), "sum" or "none"

    Maths, with x a logit, t its target and s = sigmoid(x):

        forward   l = -t log s - (1 - t) log(1 - s)
                    = max(x, 0) - x t + log(1 + exp(-|x|))        (the stable form: exp never overflows)
        backward  dl/dx = s - t

    "mean" divides both by the number of elements.

    Returns ``(loss, dlogits)``: ``loss`` 0-d (logits' shape for "none"), ``dlogits`` logits' shape.
    """
    raise NotImplementedError("binary_cross_entropy_with_logits (task 2) is not written yet")


# --- Task 3: softmax_cross_entropy ----------------------------------------------------------------

def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy of classification logits, as ``torch.nn.functional.cross_entropy``.

    Lecture slide "softmax cross-entropy": the box head scores K classes (background = 0 included) and
    pays ``-log p[label]``, with ``p = softmax(logits)``.

    logits : N x K float32 or float64 (N RoIs or anchors, K classes)
    labels : N integers in [0, K)

    Maths, per row, with z the logits:

        forward   loss = log(sum_k exp(z_k)) - z[label]          (computed after subtracting max_k z_k)
        backward  dloss/dz = softmax(z) - onehot(label)

    both divided by N (the mean). N == 0 gives loss 0 (PyTorch gives NaN) and an N x K zero gradient.

    Returns ``(loss, dlogits)``: ``loss`` 0-d, ``dlogits`` N x K, the logits' dtype.
    """
    raise NotImplementedError("softmax_cross_entropy (task 3) is not written yet")


# --- Task 4: sigmoid_mask_loss --------------------------------------------------------------------

def sigmoid_mask_loss(mask_logits, labels, mask_targets):
    """Mask R-CNN's mask loss: per-pixel sigmoid on each RoI's own class channel, as torchvision.

    Lecture slide "per-class sigmoid masks": the mask head predicts K masks per RoI and only the one of
    the RoI's class is trained, so classes do not compete for a pixel (the classification branch already
    chose the class). torchvision's ``maskrcnn_loss`` computes
    ``F.binary_cross_entropy_with_logits(mask_logits[arange(R), labels], mask_targets)``.

    mask_logits  : R x K x m x m float32 or float64 (R positive RoIs, K classes, background = channel 0)
    labels       : R integers in [1, K), the class of each RoI
    mask_targets : R x m x m floats in [0, 1], the ground-truth mask cropped to each RoI

    Maths, with x = mask_logits[r, labels[r], i, j], t = mask_targets[r, i, j] and s = sigmoid(x):

        forward   loss = 1 / (R m m) * sum_{r, i, j} max(x, 0) - x t + log(1 + exp(-|x|))
        backward  dloss/dx = (s - t) / (R m m)     on channel labels[r] of RoI r
                           = 0                      on the other K - 1 channels

    R == 0 gives loss 0 and a zero gradient (torchvision returns ``mask_logits.sum() * 0``).

    Returns ``(loss, dmask_logits)``: ``loss`` 0-d, ``dmask_logits`` R x K x m x m, mask_logits' dtype.
    """
    raise NotImplementedError("sigmoid_mask_loss (task 4) is not written yet")


# --- Task 5: softmax_mask_loss --------------------------------------------------------------------

def softmax_mask_loss(mask_logits, labels, mask_targets):
    """The mask loss Mask R-CNN replaced: a per-pixel softmax over all K channels (the paper's ablation).

    Lecture slide "softmax vs sigmoid masks": here the K masks of a RoI compete for each pixel, as in an
    FCN for semantic segmentation. A pixel inside the object (``mask_targets >= 0.5``) is of the RoI's
    class, any other pixel of class 0 (background). The paper measured 5.5 mask AP less than the sigmoid.

    mask_logits  : R x K x m x m float32 or float64 (background = channel 0)
    labels       : R integers in [1, K), the class of each RoI
    mask_targets : R x m x m floats in [0, 1]

    Maths, with z = mask_logits[r, :, i, j] and c = labels[r] if mask_targets[r, i, j] >= 0.5 else 0:

        forward   loss = 1 / (R m m) * sum_{r, i, j} log(sum_k exp(z_k)) - z_c
        backward  dloss/dz = (softmax(z) - onehot(c)) / (R m m)     on every channel

    R == 0 gives loss 0 and a zero gradient.

    Returns ``(loss, dmask_logits)``: ``loss`` 0-d, ``dmask_logits`` R x K x m x m, mask_logits' dtype.
    """
    raise NotImplementedError("softmax_mask_loss (task 5) is not written yet")
