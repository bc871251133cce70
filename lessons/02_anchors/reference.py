"""Lesson 02 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them in ``mrcnn_edu/anchors.py``.
"""
from mrcnn_edu.anchors import base_anchors, generate_anchors, grid_size  # noqa: F401
