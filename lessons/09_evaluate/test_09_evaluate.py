"""Lesson 09, graded: COCO average precision of one class, from the IoU matrices up (lecture stage 9).

``impl`` is the module under test (``--impl reference|exercise|stub``, see ``lessons/conftest.py``); the
library, ``mrcnn_edu.ap`` (checked against pycocotools' ``COCOeval`` in ``tests/test_evaluate_ap.py``),
gives the expected values. Each test belongs to the task in its name.
"""
import numpy as np
import pytest
from _grading import expect_close, expect_equal

from mrcnn_edu import ap as lib

TASKS = {1: "mask_iou", 2: "match_detections", 3: "precision_recall", 4: "average_precision",
         5: "ap_at_thresholds"}

# README's worked example: 5 detections (rows, already by decreasing score) and 3 objects (columns).
IOUS = np.array([[0.80, 0.10, 0.00],
                 [0.60, 0.00, 0.00],
                 [0.00, 0.00, 0.55],
                 [0.00, 0.00, 0.00],
                 [0.00, 0.70, 0.00]])
SCORES = np.array([0.95, 0.90, 0.80, 0.60, 0.40])
AP50 = (34 * 1 + 33 * 2 / 3 + 34 * 3 / 5) / 101


def random_ious(seed, num_detections, num_objects):
    """IoUs with ties and values right on the thresholds, and tied scores."""
    rng = np.random.default_rng(seed)
    values = np.array([0.0, 0.0, 0.2, 0.45, 0.5, 0.55, 0.62, 0.75, 0.9, 1.0])
    return rng.choice(values, size=(num_detections, num_objects)), rng.choice([0.9, 0.7, 0.7, 0.4], num_detections)


# ------------------------------------------------------------------------------------------ task 1: mask_iou

def test_task1_by_hand(impl):
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2, :2] = True                  # 4 pixels
    masks[1, :2, :] = True                   # 8 pixels, mask 0 inside it
    masks[2, 3, 3] = True                    # 1 pixel, apart
    expect_close(impl.mask_iou(masks, masks), [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]],
                 "mask_iou of 3 masks of 4, 8 and 1 pixels with themselves (mask 0 lies inside mask 1: 4 / 8)")


def test_task1_empty_masks(impl):
    masks = np.zeros((2, 3, 5), bool)
    masks[0, 1, 1:4] = True
    expect_close(impl.mask_iou(masks, masks), [[1, 0], [0, 0]],
                 "mask_iou of a 3-pixel mask and an empty one: 0 where both are empty (no 0 / 0)")
    expect_equal(np.asarray(impl.mask_iou(masks[:0], masks)).shape, (0, 2), "mask_iou of 0 masks with 2: 0 x 2")


def test_task1_random(impl):
    rng = np.random.default_rng(9)
    masks1, masks2 = rng.uniform(size=(4, 9, 7)) < 0.4, rng.uniform(size=(3, 9, 7)) < 0.6
    expect_close(impl.mask_iou(masks1, masks2), lib.mask_iou(masks1, masks2),
                 "mask_iou of 4 random 9 x 7 masks with 3 others")


# ---------------------------------------------------------------------------------- task 2: match_detections

@pytest.mark.parametrize("threshold, want, why", [
    (0.5, [True, False, True, False, True], "object 0 is found twice: the second (0.90) is a duplicate"),
    (0.6, [True, False, False, False, True], "IoU 0.55 no longer counts"),
    (0.75, [True, False, False, False, False], "only the 0.80 overlap counts"),
])
def test_task2_the_worked_example(impl, threshold, want, why):
    expect_equal(impl.match_detections(IOUS, SCORES, threshold), want,
                 f"match_detections of README's 5 detections and 3 objects at IoU {threshold}: {why}")


@pytest.mark.parametrize("ious, scores, want, why", [
    ([[0.9], [0.6]], [0.2, 0.9], [False, True], "the higher score goes first, whatever the row order"),
    ([[0.6], [0.9]], [0.5, 0.5], [True, False], "equal scores: the earlier row goes first"),
    ([[0.5]], [1.0], [True], "an IoU equal to the threshold matches"),
    ([[0.9, 0.6], [0.95, 0.55]], [0.9, 0.8], [True, True], "object 0 is taken: the second falls back to object 1"),
    ([[0.7, 0.7], [0.6, 0.0]], [0.9, 0.8], [True, True], "equal IoUs: COCO takes the last object"),
    ([[0.3, 0.2]], [1.0], [False], "no object overlaps enough"),
])
def test_task2_the_rules(impl, ious, scores, want, why):
    expect_equal(impl.match_detections(np.array(ious), np.array(scores), 0.5), want,
                 f"match_detections of IoUs {ious}, scores {scores} at 0.5: {why}")


def test_task2_random(impl):
    for seed in range(30):
        ious, scores = random_ious(seed, 1 + seed % 7, 1 + seed % 4)
        for threshold in (0.5, 0.55, 0.75):
            expect_equal(impl.match_detections(ious, scores, threshold),
                         lib.match_detections(ious, scores, threshold),
                         f"match_detections of random IoUs with ties (seed {seed}, {len(scores)} detections, "
                         f"{ious.shape[1]} objects) at {threshold}")


def test_task2_no_objects_or_no_detections(impl):
    expect_equal(impl.match_detections(np.zeros((3, 0)), np.array([0.9, 0.5, 0.1]), 0.5), [False] * 3,
                 "match_detections of 3 detections in an image without objects: all false positives")
    expect_equal(np.asarray(impl.match_detections(np.zeros((0, 2)), np.zeros(0), 0.5)).shape, (0,),
                 "match_detections of no detections: an empty array")


# ---------------------------------------------------------------------------------- task 3: precision_recall

def test_task3_the_worked_example(impl):
    precision, recall = impl.precision_recall(np.array([True, False, True, False, True]), SCORES, 3)
    expect_close(precision, [1, 1 / 2, 2 / 3, 2 / 4, 3 / 5], "precision_recall of README's example at IoU 0.5: "
                                                             "precision = hits so far / detections so far")
    expect_close(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1], "the same: recall = hits so far / 3 objects")


def test_task3_sorts_by_score_stably(impl):
    tp, scores = np.array([False, True, True, False]), np.array([0.5, 0.9, 0.5, 0.7])
    precision, recall = impl.precision_recall(tp, scores, 4)
    case = "precision_recall of tp (F, T, T, F), scores (0.5, 0.9, 0.5, 0.7): order 0.9, 0.7, then the 0.5s by row"
    expect_close(precision, [1, 1 / 2, 1 / 3, 2 / 4], case + ": precision")
    expect_close(recall, [1 / 4, 1 / 4, 1 / 4, 2 / 4], case + ": recall (4 objects)")


def test_task3_random(impl):
    rng = np.random.default_rng(3)
    tp, scores = rng.uniform(size=20) < 0.6, rng.choice([0.9, 0.8, 0.5, 0.3, 0.1], 20)
    got, want = impl.precision_recall(tp, scores, 15), lib.precision_recall(tp, scores, 15)
    expect_close(got[0], want[0], "precision_recall of 20 random detections with tied scores, 15 objects: precision")
    expect_close(got[1], want[1], "the same: recall")


# --------------------------------------------------------------------------------- task 4: average_precision

def test_task4_the_worked_example(impl):
    precision, recall = np.array([1, 1 / 2, 2 / 3, 2 / 4, 3 / 5]), np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    expect_close(impl.average_precision(precision, recall), AP50,
                 "average_precision of README's curve: envelope 1, 2/3, 2/3, 3/5, 3/5 read at 101 recall points: "
                 "34 points of 1, 33 of 2/3, 34 of 3/5, / 101")


@pytest.mark.parametrize("precision, recall, want, why", [
    ([1.0, 0.5, 2 / 3, 0.75], [0.25, 0.25, 0.5, 0.75], (26 + 50 * 0.75) / 101,
     "the dip to 0.5 is lifted by the envelope; recall points past 0.75 read 0"),
    ([1.0, 1.0], [0.5, 1.0], 1.0, "a perfect curve"),
    ([0.0, 0.5], [0.0, 0.5], 51 * 0.5 / 101, "a miss first: the envelope lifts it to 0.5"),
    ([], [], 0.0, "no detections at all"),
    ([1.0] * 7, np.arange(1, 8) / 10, 70 / 101, "7 of 10 objects found: the levels 0 ... 0.69, not 0.70, which is "
                                                "0.7000000000000001 in COCO's RECALL_THRESHOLDS"),
])
def test_task4_by_hand(impl, precision, recall, want, why):
    expect_close(impl.average_precision(np.array(precision), np.array(recall)), want,
                 f"average_precision of precision {np.round(precision, 3).tolist()}, recall "
                 f"{np.round(recall, 3).tolist()}: {why}", rtol=1e-12)


def test_task4_random(impl):
    rng = np.random.default_rng(4)
    for seed in range(5):
        tp = rng.uniform(size=25) < 0.5
        precision, recall = lib.precision_recall(tp, rng.uniform(size=25), 20)
        expect_close(impl.average_precision(precision, recall), lib.average_precision(precision, recall),
                     f"average_precision of a random 25-detection curve, 20 objects (draw {seed})")


# ---------------------------------------------------------------------------------- task 5: ap_at_thresholds

def test_task5_the_worked_example(impl):
    got = impl.ap_at_thresholds([IOUS], [SCORES])
    expect_close(np.asarray(got)[[0, 5]], [AP50, 34 / 101],
                 "ap_at_thresholds of README's example: (AP50, AP75)")
    expect_close(got, lib.ap_at_thresholds([IOUS], [SCORES]), "ap_at_thresholds of README's example: all ten")


def test_task5_several_images(impl):
    ious, scores = [], []
    for seed, (d, g) in enumerate([(5, 3), (0, 2), (4, 0), (6, 4)]):
        i, s = random_ious(20 + seed, d, g)
        ious.append(i)
        scores.append(s)
    expect_close(impl.ap_at_thresholds(ious, scores), lib.ap_at_thresholds(ious, scores),
                 "ap_at_thresholds of 4 images: (5 detections, 3 objects), (0, 2: both missed), (4, 0: all false "
                 "positives), (6, 4); scores tied across images")


def test_task5_options(impl):
    ious, scores = random_ious(30, 8, 4)
    expect_close(impl.ap_at_thresholds([ious], [scores], iou_thresholds=np.array([0.5, 0.7])),
                 lib.ap_at_thresholds([ious], [scores], iou_thresholds=np.array([0.5, 0.7])),
                 "ap_at_thresholds with iou_thresholds (0.5, 0.7)")
    expect_close(impl.ap_at_thresholds([ious], [scores], max_detections=3),
                 lib.ap_at_thresholds([ious], [scores], max_detections=3),
                 "ap_at_thresholds with max_detections 3: only the image's 3 best detections count")


def test_task5_no_objects_and_no_detections(impl):
    expect_close(impl.ap_at_thresholds([np.zeros((2, 0))], [np.array([0.9, 0.8])]), np.full(10, -1.0),
                 "ap_at_thresholds without any object: -1 at every threshold (COCO leaves the class out)")
    expect_close(impl.ap_at_thresholds([np.zeros((0, 3))], [np.zeros(0)]), np.zeros(10),
                 "ap_at_thresholds of 3 objects and no detection: 0 at every threshold")
