"""Lesson 07 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them in ``mrcnn_edu/roi_heads.py`` (tasks 1-3) and ``mrcnn_edu/heads.py`` (task 4).
"""
from mrcnn_edu.heads import paste_masks  # noqa: F401
from mrcnn_edu.roi_heads import BOX_HEAD_WEIGHTS, box_head_targets, fast_rcnn_loss, mask_targets  # noqa: F401
from mrcnn_edu.rpn import BOX_BETA  # noqa: F401
