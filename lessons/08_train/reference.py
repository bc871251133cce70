"""Lesson 08 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them at the end of ``mrcnn_edu/model.py``, and see them at work in ``MaskRCNN.loss_and_backward`` and
``MaskRCNN.predict`` above them.
"""
from mrcnn_edu.model import (BOX_WEIGHTS, detection_masks, postprocess_detections, rois_from_boxes,  # noqa: F401
                             sample_mask_rois)
