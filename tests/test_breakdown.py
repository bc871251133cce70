"""evaluate's breakdown (breakdown.py): AP per class and per object size, the confusion matrix, its figure, and
``mrcnn-edu evaluate --json F``: on hand-built detections whose every number is known by construction."""
import json

import numpy as np
import pytest

from mrcnn_edu.breakdown import (SIZE_NAMES, class_and_size_ap, coco_breakdown, confusion_figure, confusion_matrix,
                                 format_breakdown, image_confusion, size_bins)
from mrcnn_edu.cli import main
from mrcnn_edu.evaluate import coco_evaluate, detections_to_coco, shapes_ground_truth


def rectangles(shape, boxes):
    """Bool masks of ``shape`` (H, W), one filled rectangle ``(x1, y1, x2, y2)`` each (integer pixel edges)."""
    masks = np.zeros((len(boxes), *shape), bool)
    for m, (x1, y1, x2, y2) in zip(masks, boxes):
        m[y1:y2, x1:x2] = True
    return masks


def image(shape, boxes, classes):
    return np.zeros((*shape, 3), np.uint8), rectangles(shape, boxes), np.array(classes)


def detect(image_id, shape, boxes, scores, labels):
    masks = rectangles(shape, boxes)
    return detections_to_coco(image_id, np.array(boxes, float).reshape(-1, 4), scores, labels, masks)


# Two 100 x 100 images: squares (1) found exactly; circles (2) found exactly but called triangles (3); the
# triangle found only by a circle detection of score 0.3; one square detection on nothing (score 0.7).
CLASS_CASE = [image((100, 100), [(10, 10, 40, 40), (60, 60, 90, 90), (10, 60, 40, 90)], [1, 1, 2]),
              image((100, 100), [(10, 10, 40, 40), (60, 10, 90, 40), (30, 60, 60, 90)], [1, 2, 3])]


@pytest.fixture(scope="module")
def class_case():
    gt = shapes_ground_truth(CLASS_CASE)
    found = (detect(1, (100, 100), [(10, 10, 40, 40), (60, 60, 90, 90), (10, 60, 40, 90)], [0.9, 0.9, 0.8], [1, 1, 3])
             + detect(2, (100, 100), [(10, 10, 40, 40), (60, 10, 90, 40), (30, 60, 60, 90), (65, 65, 95, 95)],
                      [0.9, 0.8, 0.3, 0.7], [1, 3, 2, 1]))
    return gt, found


def test_per_class_ap_perfect_and_swapped(class_case):
    gt, found = class_case
    ap = class_and_size_ap(gt, found)
    for kind in ("box", "mask"):
        # squares: 3 hits above the one false positive -> 1; circles and the triangle: never found with their class
        assert ap[kind]["class_AP"] == pytest.approx([1.0, 0.0, 0.0]), kind
        assert ap[kind]["class_AP50"] == pytest.approx([1.0, 0.0, 0.0]), kind
        assert ap[kind]["AP"] == pytest.approx(1 / 3)
    metrics = coco_evaluate(gt, found)
    assert ap["box"]["AP"] == pytest.approx(metrics["box_AP"]) and ap["mask"]["AP"] == pytest.approx(metrics["mask_AP"])


def test_confusion_counts_of_the_hand_built_case(class_case):
    gt, found = class_case
    counts = confusion_matrix(gt, found)
    #                       square circle triangle missed
    np.testing.assert_array_equal(counts, [[3, 0, 0, 0],     # square
                                           [0, 0, 2, 0],     # circle: called a triangle twice
                                           [0, 0, 0, 1],     # triangle: its only detection scores 0.3
                                           [1, 0, 0, 0]])    # background: the square on nothing
    low = confusion_matrix(gt, found, score_threshold=0.2)
    np.testing.assert_array_equal(low[2], [0, 1, 0, 0])      # now the circle detection takes the triangle
    objects = np.bincount([c for *_, cs in CLASS_CASE for c in cs], minlength=4)[1:]
    np.testing.assert_array_equal(low[:3].sum(axis=1), objects)               # every object once in its row
    shown = np.bincount([d["category_id"] for d in found if d["score"] >= 0.2], minlength=4)[1:]
    np.testing.assert_array_equal(low[:, :3].sum(axis=0), shown)             # every detection once in its column


def test_own_class_first_then_any_class():
    """Greedy by score, but the detection of the right class keeps its object: a class-blind matcher would
    give the object to the higher-scored wrong class."""
    gt_labels = np.array([1])
    # a circle detection exactly on the square (score 0.9), a square detection with IoU 0.8 (score 0.6)
    counts = image_confusion(np.array([[1.0], [0.8]]), gt_labels, np.array([2, 1]), np.array([0.9, 0.6]), 2)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 0, 0], [0, 1, 0]])
    # the square detection only at IoU 0.3: the circle detection takes the object, the square one is background
    counts = image_confusion(np.array([[1.0], [0.3]]), gt_labels, np.array([2, 1]), np.array([0.9, 0.8]), 2)
    np.testing.assert_array_equal(counts, [[0, 1, 0], [0, 0, 0], [1, 0, 0]])
    # two square detections on one square: one hit, one duplicate (background); no detection: missed
    counts = image_confusion(np.array([[0.9], [0.95]]), gt_labels, np.array([1, 1]), np.array([0.9, 0.8]), 2)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [0, 0, 0], [1, 0, 0]])
    counts = image_confusion(np.zeros((0, 1)), gt_labels, np.zeros(0, np.int64), np.zeros(0), 2)
    np.testing.assert_array_equal(counts, [[0, 0, 1], [0, 0, 0], [0, 0, 0]])


def test_size_bins_are_relative_to_the_longer_side_and_half_open():
    # L = 100: small below 30² = 900, large from 37.5² = 1406.25;  L = 120: below 36² = 1296, from 45² = 2025
    areas = [400, 899, 900, 1406, 1406.25, 841, 1295, 1296, 2024, 2025]
    sides = [100] * 5 + [120] * 5
    np.testing.assert_array_equal(size_bins(areas, sides), [0, 0, 1, 1, 2, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(size_bins([1600], 128, split=(0.25, 0.5)), [1])   # 32² .. 64²
    with pytest.raises(ValueError, match="split"):
        size_bins([1.0], 100, split=(0.5, 0.3))


def test_ap_by_size_known_by_construction():
    """Small objects found, medium ones missed, large ones called the wrong class; the second image is 60 x 120,
    so its thresholds come from L = 120 (a split on the shorter side would put its 29 px square in 'medium')."""
    samples = [image((100, 100), [(5, 5, 25, 25), (30, 5, 60, 35), (5, 50, 43, 88)], [1, 1, 1]),
               image((60, 120), [(0, 0, 29, 29), (30, 0, 70, 40), (72, 5, 117, 50)], [1, 1, 1])]
    gt = shapes_ground_truth(samples)
    found = (detect(1, (100, 100), [(5, 5, 25, 25), (5, 50, 43, 88)], [0.9, 0.9], [1, 2])
             + detect(2, (60, 120), [(0, 0, 29, 29), (72, 5, 117, 50)], [0.9, 0.9], [1, 2]))
    b = coco_breakdown(gt, found, side=100)
    assert [r["size"] for r in b["per_size"]] == list(SIZE_NAMES)
    assert [r["objects"] for r in b["per_size"]] == [2, 2, 2]
    for kind in ("box", "mask"):
        assert [r[f"{kind}_AP"] for r in b["per_size"]] == pytest.approx([1.0, 0.0, 0.0]), kind
    assert (b["sizes"]["small_below_px2"], b["sizes"]["large_from_px2"]) == pytest.approx((900, 1406.25))
    assert b["per_size"][0]["side_px"] == pytest.approx([0, 30]) and b["per_size"][2]["side_px"][1] is None
    assert coco_breakdown(gt, found)["sizes"]["side"] == 120            # default: the longest image side
    # squares: 2 of 6 found at precision 1 (recall levels 0 .. 0.33); the classes without objects: -1, not 0
    assert [r["box_AP"] for r in b["per_class"]] == pytest.approx([34 / 101, -1.0, -1.0])


def test_breakdown_text_and_figure(class_case, tmp_path):
    gt, found = class_case
    b = coco_breakdown(gt, found, side=128)
    text = format_breakdown(b)
    assert "square" in text and "missed" in text and "background" in text
    assert "< 1475" in text and ">= 2304" in text and "< 38.4" in text and ">= 48.0" in text
    circle_row = next(line for line in text.splitlines() if line.startswith("circle") and "0.000" not in line)
    assert circle_row.split()[1:] == ["0", "0", "2", "0"]
    json.dumps(b)   # JSON-ready
    fig = confusion_figure(b)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 4 * 4 - 1 and texts.count("2") == 1 and texts.count("3") == 1
    from mrcnn_edu.visualize import save
    assert save(fig, tmp_path / "c.png").stat().st_size > 1000


def test_bad_detections_are_refused(class_case):
    gt, found = class_case
    with pytest.raises(ValueError, match="image id 99"):
        confusion_matrix(gt, [dict(found[0], image_id=99)])
    with pytest.raises(ValueError, match="category id 7"):
        class_and_size_ap(gt, [dict(found[0], category_id=7)])
    with pytest.raises(ValueError, match="iou_threshold"):
        confusion_matrix(gt, found, iou_threshold=0)
    with pytest.raises(ValueError, match="labels"):
        image_confusion(np.zeros((1, 1)), [1], [3], [0.9], 2)


# ------------------------------------------------------------------------------------------------ the CLI
def test_evaluate_json_file_holds_all_of_it(trained_run, tmp_path, capsys):
    model, out = str(trained_run / "model.npz"), tmp_path / "eval" / "breakdown.json"
    assert main(["evaluate", "--checkpoint", model, "--val-images", "6", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "per class" in printed and "by object size" in printed and "confusion matrix" in printed
    b = json.loads(out.read_text())
    assert set(b) >= {"data", "metrics", "per_class", "sizes", "per_size", "confusion", "figure"}
    assert [r["class"] for r in b["per_class"]] == ["square", "circle", "triangle"]
    assert b["sizes"]["side"] == 128 and b["sizes"]["small_below_px2"] == pytest.approx(0.3 ** 2 * 128 ** 2)
    counts = np.array(b["confusion"]["counts"])
    assert counts.shape == (4, 4) and counts[3, 3] == 0
    objects = [r["objects"] for r in b["per_class"]]
    assert counts[:3].sum(axis=1).tolist() == objects and sum(r["objects"] for r in b["per_size"]) == sum(objects)
    assert np.trace(counts[:3, :3]) > 0          # the trained model finds shapes
    assert b["figure"] == str(out.with_name("breakdown_confusion.png")) and (tmp_path / "eval" /
                                                                         "breakdown_confusion.png").exists()
    # a bare --json still prints the means as the last line, the same as the file's
    assert main(["evaluate", "--checkpoint", model, "--val-images", "6", "--json",
                 "--confusion", str(tmp_path / "elsewhere.png")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx(b["metrics"])
    assert (tmp_path / "elsewhere.png").exists()


def test_evaluate_output_flags_fail_in_one_line_before_anything_is_read(tmp_path, cli_error):
    model = tmp_path / "not-read.npz"     # the flags are checked first: no model is loaded
    code, err = cli_error(["evaluate", "--checkpoint", model, "--confusion", tmp_path / "c.jpg"])
    assert code == 2 and "--confusion" in err and ".png" in err
    code, err = cli_error(["evaluate", "--checkpoint", model, "--json", tmp_path])
    assert code == 2 and "--json" in err and "folder" in err
    (tmp_path / "file").write_text("")
    code, err = cli_error(["evaluate", "--checkpoint", model, "--json", tmp_path / "file" / "b.json"])
    assert code == 2 and "--json" in err and "not a folder" in err
    code, err = cli_error(["evaluate", "--checkpoint", model, "--confusion", tmp_path / "file" / "c.png"])
    assert code == 2 and "--confusion" in err and "not a folder" in err
