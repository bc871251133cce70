"""Lesson 09 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them in the second half of ``mrcnn_edu/evaluate.py``; ``tests/test_evaluate_ap.py`` checks them against
pycocotools' ``COCOeval``.
"""
from mrcnn_edu.evaluate import (COCO_MAX_IOU, IOU_THRESHOLDS, RECALL_THRESHOLDS, ap_at_thresholds,  # noqa: F401
                                average_precision, mask_iou, match_detections, precision_recall)
