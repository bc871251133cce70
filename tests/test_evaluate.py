"""COCO AP (evaluate.py): perfect detections score 1, a hand-computed precision-recall curve, no detections."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mrcnn_edu.data.coco import load_coco
from mrcnn_edu.data.shapes import export_shapes
from mrcnn_edu.data.shapes import boxes_from_masks, validation_set
from mrcnn_edu.evaluate import (STAT_NAMES, coco_evaluate, detections_to_coco, format_table, shapes_ground_truth,
                                write_results)


@pytest.fixture(scope="module")
def samples():
    return validation_set(n=8, seed=5)


def perfect_detections(samples, shift=0.0):
    """The ground truth itself as detections (score 1), boxes moved right by ``shift`` pixels."""
    results = []
    for i, (_, masks, class_ids) in enumerate(samples):
        boxes = boxes_from_masks(masks) + np.array([shift, 0, shift, 0], np.float32)
        results += detections_to_coco(i + 1, boxes, np.ones(len(masks)), class_ids, masks)
    return results


def test_ground_truth_as_detections_scores_ap_1(samples):
    metrics = coco_evaluate(shapes_ground_truth(samples), perfect_detections(samples))
    for key in ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75"):
        assert metrics[key] == pytest.approx(1.0), (key, metrics[key])
    assert len(metrics["box_stats"]) == len(metrics["mask_stats"]) == len(STAT_NAMES) == 12


def test_shifted_boxes_lower_box_ap_only(samples):
    metrics = coco_evaluate(shapes_ground_truth(samples), perfect_detections(samples, shift=8.0))
    # an 8 px shift of a box 40 to 64 px wide leaves an IoU of 0.6 to 0.78 (these samples' visible boxes
    # keep it above 0.5): every object found at IoU 0.5, none at 0.8 and above
    assert metrics["box_AP50"] == pytest.approx(1.0)
    assert metrics["box_AP"] < 0.6 and metrics["box_AP75"] < 1.0
    assert metrics["mask_AP"] == pytest.approx(1.0)


def test_no_detections_score_0_without_a_crash(samples):
    metrics = coco_evaluate(shapes_ground_truth(samples), [])
    for key in ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75"):
        assert metrics[key] == 0.0, (key, metrics[key])


def test_a_hand_computed_precision_recall_curve():
    # one image, two squares; detections by score: hit, false positive, hit
    masks = np.zeros((2, 100, 100), bool)
    masks[0, 10:40, 10:40] = masks[1, 60:90, 60:90] = True
    gt = shapes_ground_truth([(np.zeros((100, 100, 3), np.uint8), masks, np.array([1, 1]))])
    fp = np.zeros((1, 100, 100), bool)
    fp[0, 10:40, 60:90] = True
    det_masks = np.concatenate([masks[:1], fp, masks[1:]])
    results = detections_to_coco(1, boxes_from_masks(det_masks), [0.9, 0.8, 0.7], [1, 1, 1], det_masks)
    # precision 1 up to recall 0.5 (51 of COCO's 101 recall points), then 2/3 up to recall 1 (50 points)
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    metrics = coco_evaluate(gt, results)
    assert metrics["box_AP"] == pytest.approx(expected) and metrics["mask_AP"] == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on NumPy 2
def test_detections_to_coco_writes_coco_results(xp):
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 10:20, 0:1] = True
    boxes = boxes_from_masks(masks)
    results = detections_to_coco(np.int64(4), xp.asarray(boxes), xp.asarray([0.5, 0.25]), xp.asarray([2, 1]),
                                 xp.asarray(masks), category_ids=(10, 20))
    assert [r["category_id"] for r in results] == [20, 10] and [r["score"] for r in results] == [0.5, 0.25]
    assert results[0]["bbox"] == [3, 2, 6, 3] and results[1]["bbox"] == [0, 10, 1, 10]
    assert all(type(r["image_id"]) is int and r["image_id"] == 4 for r in results)
    json.dumps(results)  # plain JSON: RLE counts are strings
    for r, m in zip(results, masks):
        np.testing.assert_array_equal(mask_utils.decode(r["segmentation"]).astype(bool), m)
    assert detections_to_coco(1, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 20, 30))) == []
    probabilities = detections_to_coco(1, boxes[:1], [1.0], [1], np.where(masks[:1], 0.9, 0.2))
    np.testing.assert_array_equal(mask_utils.decode(probabilities[0]["segmentation"]).astype(bool), masks[0])
    assert "segmentation" not in detections_to_coco(1, boxes, [1.0, 1.0], [1, 1])[0]


def test_bad_detections_raise():
    boxes = np.array([[0.0, 0.0, 5.0, 5.0]])
    with pytest.raises(ValueError, match="labels"):
        detections_to_coco(1, boxes, [1.0], [3], category_ids=(1, 2))
    with pytest.raises(ValueError, match="labels"):
        detections_to_coco(1, boxes, [1.0], [0])
    with pytest.raises(ValueError, match="scores"):
        detections_to_coco(1, boxes, [1.0, 2.0], [1])
    with pytest.raises(ValueError, match="masks"):
        detections_to_coco(1, boxes, [1.0], [1], np.zeros((2, 5, 5), bool))
    with pytest.raises(ValueError, match="boxes"):
        detections_to_coco(1, [[5.0, 0.0, 0.0, 5.0]], [1.0], [1])
    gt = shapes_ground_truth(validation_set(n=1, seed=0))
    with pytest.raises(ValueError, match="image ids"):
        coco_evaluate(gt, detections_to_coco(99, boxes, [1.0], [1], np.ones((1, 128, 128), bool)))
    with pytest.raises(ValueError, match="segmentation"):
        coco_evaluate(gt, detections_to_coco(1, boxes, [1.0], [1]))


def test_export_then_evaluate_from_files(tmp_path):
    ann_file, image_dir = export_shapes(tmp_path, n=4, seed=1)
    data = load_coco(ann_file, image_dir)
    results = []
    for image, masks, class_ids, image_id in data:
        results += detections_to_coco(image_id, boxes_from_masks(masks), np.ones(len(masks)), class_ids, masks,
                                      category_ids=data.category_ids)
    path = write_results(tmp_path / "out" / "results.json", results)
    metrics = coco_evaluate(data, json.loads(path.read_text()))
    assert metrics["box_AP"] == pytest.approx(1.0) and metrics["mask_AP"] == pytest.approx(1.0)
    table = format_table(metrics)
    assert table.splitlines()[0].split() == ["AP", "AP50", "AP75"]
    assert table.splitlines()[2].split() == ["mask", "1.000", "1.000", "1.000"]
