"""Lesson 08 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read ``rois_from_boxes`` in ``mrcnn_edu/roi.py``, ``sample_mask_rois`` in ``mrcnn_edu/matching.py`` and the
other two in ``mrcnn_edu/postprocess.py``, and see them at work in ``MaskRCNN.loss_and_backward`` and ``MaskRCNN.predict``.
"""
from mrcnn_edu.boxes import BOX_HEAD_WEIGHTS as BOX_WEIGHTS  # noqa: F401
from mrcnn_edu.matching import sample_mask_rois  # noqa: F401
from mrcnn_edu.roi import rois_from_boxes  # noqa: F401
from mrcnn_edu.postprocess import detection_masks, postprocess_detections  # noqa: F401
