"""Lesson 03 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them in ``mrcnn_edu/rpn.py``.
"""
from mrcnn_edu.rpn import (BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, BOX_BETA, RPN_BOX_WEIGHTS,  # noqa: F401
                           generate_proposals, label_anchors, match_by_iou, rpn_loss, rpn_targets, sample_balanced)
