"""Lesson 01 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them in ``mrcnn_edu/boxes.py``.
"""
from mrcnn_edu.boxes import BBOX_XFORM_CLIP, box_area, box_decode, box_encode, box_iou, nms  # noqa: F401
