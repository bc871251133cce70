"""Lesson 05 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them in ``mrcnn_edu/losses.py``.
"""
from mrcnn_edu.losses import (REDUCTIONS, binary_cross_entropy_with_logits, sigmoid_mask_loss,  # noqa: F401
                              smooth_l1_loss, softmax_cross_entropy, softmax_mask_loss)
