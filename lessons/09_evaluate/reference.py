"""Lesson 09 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them in ``mrcnn_edu/ap.py``; ``tests/test_evaluate_ap.py`` checks them against
pycocotools' ``COCOeval``.
"""
from mrcnn_edu.ap import (COCO_MAX_IOU, IOU_THRESHOLDS, RECALL_THRESHOLDS, ap_at_thresholds,  # noqa: F401
                          average_precision, mask_iou, match_detections, precision_recall)
