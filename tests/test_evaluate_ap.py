"""COCO AP from first principles (evaluate.py's NumPy half): worked examples by hand, a loop version of the
matching written from its definition, and exact agreement (1e-12) with pycocotools' ``COCOeval`` on boxes,
masks and hand-made IoU matrices full of ties, over one and several images of one category.
"""
import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval, Params

from mrcnn_edu.data.coco import coco_from_dict, encode_masks
from mrcnn_edu.data.shapes import boxes_from_masks, validation_set
from mrcnn_edu.boxes import box_iou
from mrcnn_edu.ap import (IOU_THRESHOLDS, RECALL_THRESHOLDS, ap_at_thresholds, average_precision, mask_iou,
                          match_detections, precision_recall)
from mrcnn_edu.evaluate import coco_evaluate, detections_to_coco, shapes_ground_truth

# The worked example of lessons/09_evaluate/README.md: 5 detections (rows, by decreasing score) and 3 objects.
EXAMPLE_IOUS = np.array([[0.80, 0.10, 0.00],
                         [0.60, 0.00, 0.00],     # object 0 again: a duplicate, a false positive
                         [0.00, 0.00, 0.55],
                         [0.00, 0.00, 0.00],     # nothing there: a false positive
                         [0.00, 0.70, 0.00]])
EXAMPLE_SCORES = np.array([0.95, 0.90, 0.80, 0.60, 0.40])


# ---------------------------------------------------------------------------------------------------------
# the oracle: pycocotools' COCOeval on one category
# ---------------------------------------------------------------------------------------------------------

def xywh(boxes):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


class GivenIoUs(COCOeval):
    """COCOeval with each image's IoU matrix given (rows in the detections' input order) instead of computed."""

    def __init__(self, coco_gt, coco_dt, ious_per_image):
        super().__init__(coco_gt, coco_dt, "bbox")
        self.given = ious_per_image

    def computeIoU(self, imgId, catId):
        dt, gt = self._dts[imgId, catId], self._gts[imgId, catId]
        if not dt or not gt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[:self.params.maxDets[-1]]
        return self.given[imgId - 1][[dt[i]["row"] for i in order]]


def cocoeval(gt_per_image, dets_per_image, scores_per_image, iou_type="bbox", ious_per_image=None, size=(64, 64)):
    """Run COCOeval on one category (id 1), images 1..N. ``gt_per_image`` / ``dets_per_image`` hold boxes
    (``G x 4`` x1 y1 x2 y2) for "bbox", masks (``G x H x W``) for "segm", or just counts with
    ``ious_per_image``. Returns ``(AP at each of the 10 thresholds, the evaluator)``."""
    images, annotations, results = [], [], []
    for i, (gts, dets, scores) in enumerate(zip(gt_per_image, dets_per_image, scores_per_image)):
        images.append({"id": i + 1, "height": size[0], "width": size[1]})
        if iou_type == "segm":
            gt_ann = [{"segmentation": r, "area": float(m.sum()), "bbox": b}
                      for r, m, b in zip(encode_masks(gts), gts, xywh(boxes_from_masks(gts)).tolist())]
            det_ann = [{"segmentation": r} for r in encode_masks(dets)]
        elif ious_per_image is not None:
            gt_ann = [{"bbox": [0.0, 0.0, 1.0, 1.0], "area": 1.0} for _ in range(gts)]
            det_ann = [{"bbox": [0.0, 0.0, 1.0, 1.0]} for _ in range(dets)]
        else:
            gt_ann = [{"bbox": b, "area": b[2] * b[3]} for b in xywh(gts).tolist()]
            det_ann = [{"bbox": b} for b in xywh(dets).tolist()]
        for a in gt_ann:
            annotations.append(dict(a, id=len(annotations) + 1, image_id=i + 1, category_id=1, iscrowd=0))
        for row, (a, s) in enumerate(zip(det_ann, np.asarray(scores).tolist())):
            results.append(dict(a, image_id=i + 1, category_id=1, score=s, row=row))
    gt = coco_from_dict({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]})
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results) if results else coco_from_dict(
            {"images": images, "annotations": [], "categories": [{"id": 1, "name": "x"}]})
        evaluator = (GivenIoUs(gt, dt, ious_per_image) if ious_per_image is not None
                     else COCOeval(gt, dt, iou_type))
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, 0, 0, -1]        # T x R, category 1, area "all", maxDets 100
    ap = np.where((precision > -1).all(axis=1), precision.mean(axis=1), -1.0)
    return ap, evaluator


def coco_flags(evaluator, num_images, counts):
    """COCOeval's true positives (T x D per image, in the detections' input order) from its per-image records."""
    flags = []
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for i in range(num_images):
        record = evaluator.evalImgs[i]                              # category 1, area "all", image i + 1
        tp = np.zeros((len(IOU_THRESHOLDS), counts[i]), dtype=bool)
        if record is not None and counts[i]:
            rows = np.asarray(record["dtIds"]) - 1 - offsets[i]     # result ids are 1.. in input order
            tp[:, rows] = record["dtMatches"] > 0
        flags.append(tp)
    return flags


def random_boxes(rng, n, size=64.0):
    corner = rng.uniform(0, size * 0.7, size=(n, 2))
    side = rng.uniform(4, size * 0.4, size=(n, 2))
    return np.concatenate([corner, np.minimum(corner + side, size)], axis=1)


def jitter(rng, boxes, scale):
    return boxes + rng.normal(0, scale, size=boxes.shape) * (boxes[:, 2:] - boxes[:, :2]).repeat(2, axis=1)


def random_box_case(seed, num_images):
    """Per image: a few objects, detections near some of them (duplicates included) and a few strays."""
    rng = np.random.default_rng(seed)
    gts, dets, scores = [], [], []
    for _ in range(num_images):
        g = random_boxes(rng, int(rng.integers(0, 5)))
        near = jitter(rng, g[rng.integers(0, len(g), size=int(rng.integers(0, 7)))], 0.12) if len(g) else g
        d = np.concatenate([near, random_boxes(rng, int(rng.integers(0, 4)))])
        d = np.sort(d.reshape(-1, 2, 2), axis=1).reshape(-1, 4)     # keep x1 <= x2 after the jitter
        gts.append(g)
        dets.append(d)
        scores.append(np.round(rng.uniform(0, 1, size=len(d)), 1))  # one decimal: many ties across images
    return gts, dets, scores


def pycoco_box_ious(dets, gts):
    """The IoU matrix exactly as COCOeval computes it (pycocotools' mask.iou on x, y, w, h)."""
    if not len(dets) or not len(gts):
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_utils.iou(xywh(dets).tolist(), xywh(gts).tolist(), [0] * len(gts)))


def loop_match(ious, scores, threshold):
    """match_detections written from its definition, as COCOeval's loop (the test's own reference)."""
    ious = np.asarray(ious, dtype=np.float64)
    taken = np.zeros(ious.shape[1], dtype=bool)
    tp = np.zeros(len(scores), dtype=bool)
    for d in np.argsort(-np.asarray(scores), kind="mergesort"):
        best, best_iou = -1, min(threshold, 1 - 1e-10)
        for g in range(ious.shape[1]):
            if taken[g] or ious[d, g] < best_iou:
                continue
            best, best_iou = g, ious[d, g]
        if best >= 0:
            taken[best] = tp[d] = True
    return tp


# ---------------------------------------------------------------------------------------------------------
# constants and worked examples
# ---------------------------------------------------------------------------------------------------------

def test_thresholds_are_cocoevals_floats():
    params = Params(iouType="bbox")
    assert np.array_equal(IOU_THRESHOLDS, params.iouThrs) and np.array_equal(RECALL_THRESHOLDS, params.recThrs)
    assert len(IOU_THRESHOLDS) == 10 and len(RECALL_THRESHOLDS) == 101
    assert IOU_THRESHOLDS[8] == 0.8999999999999999 and not IOU_THRESHOLDS.flags.writeable


def test_the_worked_example_by_hand():
    tp = match_detections(EXAMPLE_IOUS, EXAMPLE_SCORES, 0.5)
    assert tp.tolist() == [True, False, True, False, True]
    precision, recall = precision_recall(tp, EXAMPLE_SCORES, 3)
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 2 / 4, 3 / 5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1], rtol=0, atol=1e-15)
    # envelope 1, 2/3, 2/3, 3/5, 3/5: recall points 0..0.33 (34 of them) read 1, 0.34..0.66 (33) read 2/3,
    # 0.67..1 (34) read 3/5
    assert average_precision(precision, recall) == pytest.approx((34 + 33 * 2 / 3 + 34 * 3 / 5) / 101, abs=1e-15)
    # at 0.6 the third detection (IoU 0.55) misses; at 0.75 only the first one hits
    assert match_detections(EXAMPLE_IOUS, EXAMPLE_SCORES, 0.6).tolist() == [True, False, False, False, True]
    ap = ap_at_thresholds([EXAMPLE_IOUS], [EXAMPLE_SCORES])
    assert ap[0] == pytest.approx((34 + 33 * 2 / 3 + 34 * 3 / 5) / 101, abs=1e-15)
    assert ap[5] == pytest.approx(34 / 101, abs=1e-15)            # AP75: precision 1 up to recall 1/3
    np.testing.assert_allclose(ap, cocoeval([3], [5], [EXAMPLE_SCORES], ious_per_image=[EXAMPLE_IOUS])[0],
                               rtol=0, atol=1e-12)


def test_matching_rules():
    # the scores decide the order, not the rows: the 0.9 detection takes the object first
    assert match_detections([[0.9], [0.6]], [0.2, 0.9], 0.5).tolist() == [False, True]
    # equal scores keep the input order
    assert match_detections([[0.6], [0.9]], [0.5, 0.5], 0.5).tolist() == [True, False]
    # an IoU equal to the threshold matches
    assert match_detections([[0.5]], [1.0], 0.5).tolist() == [True]
    assert match_detections([[0.75]], [1.0], IOU_THRESHOLDS[5]).tolist() == [True]
    # a taken object is skipped: the second detection falls back to its second-best object
    assert match_detections([[0.9, 0.6], [0.95, 0.55]], [0.9, 0.8], 0.5).tolist() == [True, True]
    # of two equally good objects the last is taken (COCOeval), which leaves the first to the next detection
    assert match_detections([[0.7, 0.7], [0.6, 0.0]], [0.9, 0.8], 0.5).tolist() == [True, True]
    # IoU 1 matches at threshold 1 (COCOeval caps it at 1 - 1e-10)
    assert match_detections([[1.0]], [1.0], 1.0).tolist() == [True]


def test_empty_inputs():
    assert match_detections(np.zeros((0, 3)), [], 0.5).shape == (0,)
    assert match_detections(np.zeros((2, 0)), [0.5, 0.4], 0.5).tolist() == [False, False]
    assert match_detections([], [], 0.5).shape == (0,)
    precision, recall = precision_recall(np.zeros(0, bool), np.zeros(0), 2)
    assert precision.shape == recall.shape == (0,)
    assert average_precision(precision, recall) == 0.0
    # no detections but objects: AP 0 everywhere; no objects at all: -1, as COCOeval
    assert np.array_equal(ap_at_thresholds([np.zeros((0, 2))], [[]]), np.zeros(10))
    assert np.array_equal(ap_at_thresholds([np.zeros((3, 0)), []], [[0.5, 0.4, 0.3], []]), -np.ones(10))
    assert np.array_equal(ap_at_thresholds([], []), -np.ones(10))


def test_envelope_and_interpolation():
    # precision dips then recovers: the envelope lifts the dip to the later 0.75
    precision, recall = np.array([1.0, 0.5, 2 / 3, 0.75]), np.array([0.25, 0.25, 0.5, 0.75])
    want = (26 * 1.0 + 50 * 0.75 + 25 * 0.0) / 101          # r <= 0.25: 1; 0.26..0.75: 0.75; beyond 0.75: 0
    assert average_precision(precision, recall) == pytest.approx(want, abs=1e-15)
    # the hand-computed curve of tests/test_evaluate.py: hit, miss, hit on 2 objects
    tp = np.array([True, False, True])
    assert average_precision(*precision_recall(tp, [0.9, 0.8, 0.7], 2)) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_recall_levels_are_cocos_floats():
    # 7 of 10 objects found, no false positive: recall 7/10 = 0.7 does not reach COCO's level
    # 0.7000000000000001, so 70 levels (0 ... 0.69) read 1, not 71
    ious = np.zeros((7, 10))
    ious[np.arange(7), np.arange(7)] = 1.0
    scores = np.linspace(0.9, 0.3, 7)
    assert average_precision(*precision_recall(np.ones(7, bool), scores, 10)) == pytest.approx(70 / 101, abs=1e-15)
    want, _ = cocoeval([10], [7], [scores], ious_per_image=[ious])
    np.testing.assert_allclose(ap_at_thresholds([ious], [scores]), want, rtol=0, atol=1e-12)
    assert want[0] == pytest.approx(70 / 101, abs=1e-12)


def test_match_detections_agrees_with_a_loop(rng):
    values = np.array([0.0, 0.3, 0.5, 0.55, 0.7, 0.75, 0.9, 1.0])
    for _ in range(200):
        d, g = rng.integers(0, 8), rng.integers(0, 6)
        ious = rng.choice(values, size=(d, g))
        scores = rng.choice([0.9, 0.8, 0.5], size=d)
        threshold = float(rng.choice(IOU_THRESHOLDS))
        got = match_detections(ious, scores, threshold)
        assert got.dtype == bool
        assert np.array_equal(got, loop_match(ious, scores, threshold)), (ious, scores, threshold)


def test_precision_recall_sorts_stably():
    tp = np.array([False, True, True, False])
    precision, recall = precision_recall(tp, [0.5, 0.9, 0.5, 0.7], 4)
    # order: 0.9 (hit), 0.7 (miss), then the two 0.5 in input order: miss, hit
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3, 2 / 4], atol=1e-15)
    np.testing.assert_allclose(recall, [1 / 4, 1 / 4, 1 / 4, 2 / 4], atol=1e-15)


# ---------------------------------------------------------------------------------------------------------
# exact agreement with COCOeval
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, num_images", [(0, 1), (1, 1), (2, 3), (3, 5), (4, 8)])
def test_box_ap_equals_cocoeval(seed, num_images):
    gts, dets, scores = random_box_case(seed, num_images)
    ious = [pycoco_box_ious(d, g) for d, g in zip(dets, gts)]
    want, evaluator = cocoeval(gts, dets, scores)
    np.testing.assert_allclose(ap_at_thresholds(ious, scores), want, rtol=0, atol=1e-12)
    for i, flags in enumerate(coco_flags(evaluator, num_images, [len(d) for d in dets])):
        for t, threshold in enumerate(IOU_THRESHOLDS):
            assert np.array_equal(match_detections(ious[i], scores[i], threshold), flags[t]), (i, t)


@pytest.mark.parametrize("seed", range(6))
def test_given_ious_with_ties_equal_cocoeval(seed):
    # IoUs exactly on the thresholds and equal to each other, scores tied within and across images
    rng = np.random.default_rng(100 + seed)
    values = np.concatenate([[0.0, 0.2, 0.9, 1.0], IOU_THRESHOLDS])
    num_images = int(rng.integers(1, 5))
    counts_gt = rng.integers(0, 5, size=num_images)
    counts_dt = rng.integers(0, 7, size=num_images)
    ious = [rng.choice(values, size=(d, g)) for d, g in zip(counts_dt, counts_gt)]
    scores = [rng.choice([0.9, 0.7, 0.7, 0.3], size=d) for d in counts_dt]
    want, _ = cocoeval(counts_gt.tolist(), counts_dt.tolist(), scores, ious_per_image=ious)
    np.testing.assert_allclose(ap_at_thresholds(ious, scores), want, rtol=0, atol=1e-12)


def test_mask_ap_equals_cocoeval():
    rng = np.random.default_rng(7)
    gts, dets, scores, ious = [], [], [], []
    for _ in range(3):
        g = np.zeros((3, 48, 40), bool)
        for m in g:
            y, x = rng.integers(0, 30), rng.integers(0, 24)
            m[y:y + rng.integers(6, 18), x:x + rng.integers(6, 16)] = True
        noisy = g[rng.integers(0, 3, size=4)] ^ (rng.uniform(size=(4, 48, 40)) < 0.04)
        d = np.concatenate([noisy, g[:1] & (rng.uniform(size=(1, 48, 40)) < 0.6)])
        gts.append(g)
        dets.append(d)
        scores.append(rng.uniform(size=len(d)))
        ious.append(mask_iou(d, g))
        assert np.abs(ious[-1] - np.asarray(mask_utils.iou(encode_masks(d), encode_masks(g), [0] * 3))).max() < 1e-15
    want, _ = cocoeval(gts, dets, scores, iou_type="segm", size=(48, 40))
    assert 0 < want.mean() < 1
    np.testing.assert_allclose(ap_at_thresholds(ious, scores), want, rtol=0, atol=1e-12)


def test_only_the_best_100_detections_of_an_image_count():
    rng = np.random.default_rng(8)
    gts = [random_boxes(rng, 6), random_boxes(rng, 2)]
    dets = [np.concatenate([jitter(rng, gts[0], 0.05), random_boxes(rng, 110)]), jitter(rng, gts[1], 0.05)]
    scores = [np.concatenate([rng.uniform(0, 0.1, 6), rng.uniform(0.2, 1, 110)]), rng.uniform(size=2)]
    ious = [pycoco_box_ious(d, g) for d, g in zip(dets, gts)]
    want, _ = cocoeval(gts, dets, scores)
    got = ap_at_thresholds(ious, scores)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert not np.allclose(ap_at_thresholds(ious, scores, max_detections=200), want)   # the cap matters here


def test_equals_coco_evaluate_on_shapes():
    # the full pipeline, several classes: box_iou / mask_iou per class and image, AP averaged over the classes
    samples = validation_set(n=6, seed=3)
    rng = np.random.default_rng(9)
    results, per_class = [], {}
    for i, (_, masks, class_ids) in enumerate(samples):
        boxes = boxes_from_masks(masks).astype(np.float64)
        det_boxes = np.clip(jitter(rng, boxes, 0.1), 0, 128)
        det_boxes = np.sort(det_boxes.reshape(-1, 2, 2), axis=1).reshape(-1, 4)
        det_masks = masks ^ (rng.uniform(size=masks.shape) < 0.02)
        det_labels = np.where(rng.uniform(size=len(masks)) < 0.8, class_ids, 1 + (class_ids % 3))
        scores = rng.uniform(size=len(masks))
        results += detections_to_coco(i + 1, det_boxes, scores, det_labels, det_masks)
        for k in (1, 2, 3):
            d, g = det_labels == k, class_ids == k
            entry = per_class.setdefault(k, ([], [], []))
            entry[0].append(box_iou(det_boxes[d], boxes[g]))
            entry[1].append(mask_iou(det_masks[d], masks[g]))
            entry[2].append(scores[d])
    metrics = coco_evaluate(shapes_ground_truth(samples), results)
    box = np.array([ap_at_thresholds(b, s) for b, _, s in per_class.values()])
    mask = np.array([ap_at_thresholds(m, s) for _, m, s in per_class.values()])
    box, mask = box[box[:, 0] > -1], mask[mask[:, 0] > -1]          # classes without objects are left out
    assert metrics["box_AP"] == pytest.approx(box.mean(), abs=1e-12)
    assert metrics["box_AP50"] == pytest.approx(box[:, 0].mean(), abs=1e-12)
    assert metrics["box_AP75"] == pytest.approx(box[:, 5].mean(), abs=1e-12)
    assert metrics["mask_AP"] == pytest.approx(mask.mean(), abs=1e-12)
    assert 0 < metrics["box_AP"] < 1 and 0 < metrics["mask_AP"] < 1


# ---------------------------------------------------------------------------------------------------------
# backends and bad input
# ---------------------------------------------------------------------------------------------------------

def test_device_arrays_are_accepted(xp):
    tp = match_detections(xp.asarray(EXAMPLE_IOUS), xp.asarray(EXAMPLE_SCORES), 0.5)
    assert isinstance(tp, np.ndarray) and tp.tolist() == [True, False, True, False, True]
    precision, recall = precision_recall(xp.asarray(tp), xp.asarray(EXAMPLE_SCORES), 3)
    assert average_precision(xp.asarray(precision), xp.asarray(recall)) == pytest.approx(
        average_precision(precision, recall))
    masks = np.zeros((2, 4, 5), bool)
    masks[0, :2] = masks[1, 1:3] = True
    np.testing.assert_allclose(mask_iou(xp.asarray(masks), xp.asarray(masks)), [[1, 1 / 3], [1 / 3, 1]])


def test_mask_iou_by_hand():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2, :2] = True                      # 4 pixels
    masks[1, :2, :] = True                       # 8 pixels, contains mask 0
    # mask 2 empty
    np.testing.assert_allclose(mask_iou(masks, masks), [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 0]])
    assert mask_iou(masks[:0], masks).shape == (0, 3)
    assert mask_iou(masks.astype(np.uint8), masks[:2]).shape == (3, 2)


@pytest.mark.parametrize("call, match", [
    (lambda: match_detections(np.ones((2, 2)), [1.0], 0.5), "ious"),
    (lambda: match_detections(np.full((1, 1), 1.5), [1.0], 0.5), "ious"),
    (lambda: match_detections(np.ones((1, 1)), [np.nan], 0.5), "scores"),
    (lambda: match_detections(np.ones((1, 1)), [1.0], 1.5), "iou_threshold"),
    (lambda: match_detections(np.ones((1, 1, 1)), [1.0], 0.5), "ious"),
    (lambda: precision_recall([True, True], [0.5, 0.4], 1), "num_gt"),
    (lambda: precision_recall([True], [0.5], 0), "num_gt"),
    (lambda: precision_recall([True], [0.5, 0.4], 2), "scores"),
    (lambda: precision_recall([0.5], [0.5], 2), "tp"),
    (lambda: average_precision([1.0, 1.0], [0.5, 0.25]), "recall"),
    (lambda: average_precision([1.0], [0.5, 1.0]), "recall"),
    (lambda: ap_at_thresholds([np.ones((1, 1))], []), "scores_per_image"),
    (lambda: ap_at_thresholds([np.ones((2, 1))], [[1.0]]), "ious_per_image"),
    (lambda: ap_at_thresholds([np.ones((1, 1))], [[1.0]], max_detections=0), "max_detections"),
    (lambda: mask_iou(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 5), bool)), "masks2"),
    (lambda: mask_iou(np.full((1, 4, 4), 0.7), np.zeros((1, 4, 4), bool)), "masks1"),
])
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
