"""explore.py: the anchor-fit report (``mrcnn-edu anchors``) and the data set browser (``mrcnn-edu browse``).

The numbers are checked on hand-made boxes against hand computations; the commands run through an argparse
parser built with ``explore.add_anchors_arguments``/``add_browse_arguments`` on a small ``export_shapes`` data set.
"""
import argparse
import json
from collections import Counter

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mrcnn_edu import backend, explore  # noqa: E402
from mrcnn_edu.anchors import generate_anchors  # noqa: E402
from mrcnn_edu.boxes import box_iou  # noqa: E402
from mrcnn_edu.data.coco import load_coco
from mrcnn_edu.data.shapes import export_shapes  # noqa: E402

GRID = dict(image_size=(128, 128), stride=16, sizes=(40.0, 56.0, 72.0), ratios=(1.0,), offset=0.5)


def model_anchors(sizes=GRID["sizes"], ratios=GRID["ratios"]):
    return backend.to_host(generate_anchors(GRID["image_size"], GRID["stride"], sizes, ratios, GRID["offset"],
                                            dtype="float64"))


# ------------------------------------------------------------------------------------------ best IoU
def test_a_box_equal_to_an_anchor_has_best_iou_one():
    anchors = model_anchors()
    boxes = anchors[[0, 31, 100, 191]]
    np.testing.assert_allclose(explore.best_anchor_iou(boxes, anchors), 1.0)


def test_best_iou_of_a_box_off_centre_matches_the_hand_computation():
    # One anchor size, 40: the cell centres are 8, 24, 40, ... The 40 x 40 box [16, 8, 56, 48] is centred at
    # (36, 28), 4 px from the centre (40, 24) in x and y. That anchor is [20, 4, 60, 44]:
    # intersection 36 x 36 = 1296, union 1600 + 1600 - 1296 = 1904, IoU 1296 / 1904 = 81 / 119.
    anchors = model_anchors(sizes=(40.0,))
    best = explore.best_anchor_iou(np.array([[16.0, 8.0, 56.0, 48.0]]), anchors)
    assert best[0] == pytest.approx(81 / 119), f"expected 81/119 = {81 / 119:.6f}, got {best[0]:.6f}"


def test_best_iou_in_blocks_equals_the_whole_matrix(monkeypatch, rng):
    anchors = model_anchors()
    xy = rng.uniform(0, 100, (57, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (57, 2))], axis=1)
    expected = box_iou(boxes, anchors).max(axis=1)
    monkeypatch.setattr(explore, "_CHUNK", 5 * len(anchors))   # blocks of 5 boxes, the last one of 2
    np.testing.assert_array_equal(explore.best_anchor_iou(boxes, anchors), expected)
    assert explore.best_anchor_iou(boxes[:0], anchors).shape == (0,)


def test_share_below_counts_strictly_below_the_threshold():
    best = np.array([0.1, 0.29, 0.3, 0.5, 0.69, 0.7, 0.9, 1.0])
    assert explore.share_below(best, explore.RPN_LOW) == 2 / 8      # 0.3 itself is reached
    assert explore.share_below(best, explore.RPN_HIGH) == 5 / 8


def test_report_shares_on_constructed_boxes():
    anchors = model_anchors()
    boxes = np.array([anchors[100],                      # an anchor itself: IoU 1
                      [16.0, 8.0, 56.0, 48.0],          # 81/119 = 0.68 with the 40 anchor: reached at 0.3 only
                      [38.0, 38.0, 42.0, 42.0]])        # 4 x 4 at the centre (40, 40): 16 / 1600 = 0.01
    report = explore.anchor_report(boxes, 128, 16, GRID["sizes"], GRID["ratios"], 0.5)
    np.testing.assert_allclose(report["current"]["best_iou"], [1.0, 81 / 119, 16 / 1600], rtol=1e-6)
    assert report["current"]["below_low"] == pytest.approx(1 / 3)
    assert report["current"]["below_high"] == pytest.approx(2 / 3)
    assert report["current"]["median"] == pytest.approx(81 / 119, rel=1e-6)
    assert report["current"]["anchors"] == 8 * 8 * 3 and report["cells"] == (8, 8)


# ------------------------------------------------------------------------------------- the grid limit
def test_grid_limit_hand_cases():
    # centred on a cell: a same-shape anchor fits exactly
    # 8 px off in x (centre x = 32, between the centres 24 and 40): the best anchor is w + 2 * 8 = 56 wide,
    # containing the box, IoU 40 / 56 (a same-size anchor would give only 32 / 48)
    boxes = np.array([[4.0, 4.0, 44.0, 44.0], [12.0, 4.0, 52.0, 44.0]])
    got = explore.grid_limit_iou(boxes, (128, 128), 16, 0.5)
    np.testing.assert_allclose(got, [1.0, 40 / 56])


def test_grid_limit_bounds_every_anchor_set(rng):
    xy = rng.uniform(0, 90, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 38, (200, 2))], axis=1)
    limit = explore.grid_limit_iou(boxes, (128, 128), 16, 0.5)
    dense = (tuple(range(4, 80, 2)), tuple(np.geomspace(0.25, 4, 25)))       # 950 anchor shapes a cell
    for sizes, ratios in (((40.0, 56.0, 72.0), (1.0,)), ((8, 16, 24, 32, 48), (0.5, 0.7, 1.0, 1.4, 2.0)), dense):
        best = explore.best_anchor_iou(boxes, model_anchors(sizes, ratios))
        assert (best <= limit + 1e-9).all(), f"an anchor beat the limit by {np.max(best - limit):.2e}"
    assert np.median(best - limit) > -0.01              # and the dense set comes close to it (typical box)


# ------------------------------------------------------------------------------------------ suggestions
def test_kmeans_1d_finds_the_groups(rng):
    values = np.concatenate([rng.normal(10, 0.5, 50), rng.normal(30, 0.5, 20), rng.normal(70, 0.5, 5)])
    np.testing.assert_allclose(explore.kmeans_1d(values, 3, rng), [10, 30, 70], atol=0.5)
    np.testing.assert_array_equal(explore.kmeans_1d([5.0, 5.0, 5.0], 2, rng), [5.0, 5.0])


def test_suggest_anchors_recovers_sizes_and_ratios(rng):
    sizes = rng.choice([20.0, 45.0, 90.0], 300) * rng.uniform(0.97, 1.03, 300)
    ratios = rng.choice([0.5, 1.0, 2.0], 300)
    w, h = sizes / np.sqrt(ratios), sizes * np.sqrt(ratios)            # sqrt(w * h) = size, h / w = ratio
    x, y = rng.uniform(0, 30, 300), rng.uniform(0, 30, 300)
    boxes = np.stack([x, y, x + w, y + h], axis=1)
    got_sizes, got_ratios = explore.suggest_anchors(boxes, 3, rng, n_ratios=3)
    assert len(got_sizes) == 3 and np.allclose(got_sizes, [20, 45, 90], atol=1), got_sizes
    assert got_ratios == (0.5, 1.0, 2.0), got_ratios
    assert explore.suggest_anchors(boxes, 3, rng)[1] == (1.0,)         # one ratio: the median


def test_suggested_anchors_fit_better_than_far_off_ones(rng):
    xy = rng.uniform(0, 90, (100, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(14, 20, (100, 1))], axis=1)   # small squares
    report = explore.anchor_report(boxes, 128, 16, (64.0, 96.0), (1.0,), 0.5, rng)
    assert len(report["suggested"]["sizes"]) == 2 and max(report["suggested"]["sizes"]) <= 20
    assert report["suggested"]["median"] > report["current"]["median"] + 0.2
    assert report["current"]["below_low"] == 1.0                      # 17 px boxes vs 64 px anchors: < 0.3


# ----------------------------------------------------------------------------------------- the data set
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return export_shapes(tmp_path_factory.mktemp("shapes"), 12, seed=3)


def parse(*argv):
    parser = argparse.ArgumentParser(prog="mrcnn-edu")
    sub = parser.add_subparsers(dest="command", required=True)
    explore.add_anchors_arguments(sub.add_parser("anchors"))
    explore.add_browse_arguments(sub.add_parser("browse"))
    return parser.parse_args([str(a) for a in argv])


def test_dataset_boxes_and_stats_match_the_file(shapes):
    ann_file, image_dir = shapes
    data = json.loads(ann_file.read_text())
    dataset = load_coco(ann_file, image_dir, size=128)
    found = explore.dataset_boxes(dataset)
    gt = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in data["annotations"])])
    np.testing.assert_array_equal(found["boxes"], gt)                     # 128 x 128 images: no resizing
    np.testing.assert_array_equal(found["class_ids"], [a["category_id"] for a in data["annotations"]])
    stats = explore.dataset_stats(dataset)
    per_class = Counter(a["category_id"] for a in data["annotations"])
    assert stats["instances"].tolist() == [0] + [per_class[k] for k in (1, 2, 3)]
    assert stats["per_image"].sum() == len(data["annotations"]) and stats["images"] == 12
    np.testing.assert_allclose(stats["sqrt_area"], [np.sqrt(a["area"]) for a in data["annotations"]])
    images_with = [len({a["image_id"] for a in data["annotations"] if a["category_id"] == k}) for k in (1, 2, 3)]
    assert stats["images_with"][1:].tolist() == images_with


def test_sample_indices():
    assert explore.sample_indices(50, 4, None).tolist() == [0, 1, 2, 3]
    a = explore.sample_indices(50, 12, seed=0)
    assert a.tolist() == sorted(set(a.tolist())) and len(a) == 12 and a.max() < 50
    assert a.tolist() == explore.sample_indices(50, 12, seed=0).tolist()
    assert a.tolist() != explore.sample_indices(50, 12, seed=1).tolist()
    assert explore.sample_indices(5, 12, seed=0).tolist() == [0, 1, 2, 3, 4]


def test_anchors_command_prints_the_report_and_draws(shapes, tmp_path, capsys):
    ann_file, image_dir = shapes
    out = tmp_path / "anchors.png"
    assert explore.cmd_anchors(parse("anchors", "--coco-gt", ann_file, "--images", image_dir, "--out", out)) == 0
    text = capsys.readouterr().out
    dataset = load_coco(ann_file, image_dir, size=128)
    report = explore.anchor_report(explore.dataset_boxes(dataset)["boxes"])
    cur = report["current"]
    assert f"12 images, {report['objects']} objects on the 128 x 128 image" in text
    assert "current    sizes 40 56 72, ratios 1" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("current"))
    assert row.split()[-3:] == [f"{cur['below_low']:.1%}", f"{cur['below_high']:.1%}", f"{cur['median']:.2f}"]
    assert "--anchor-sizes " + " ".join(f"{s:g}" for s in report["suggested"]["sizes"]) in text
    assert out.stat().st_size > 10_000


def test_anchors_command_takes_the_flags(shapes, tmp_path, capsys):
    ann_file, image_dir = shapes
    args = parse("anchors", "--coco-gt", ann_file, "--images", image_dir, "--image-size", 96, "--stride", 32,
                 "--anchor-sizes", 20, 30, "--anchor-ratios", 0.5, 2)
    assert explore.cmd_anchors(args) == 0
    text = capsys.readouterr().out
    assert "on the 96 x 96 image; anchors: 3 x 3 cells (stride 32) x 4 = 36" in text
    assert "sizes 20 30, ratios 0.5 2" in text and "figure" not in text


def test_browse_command_prints_counts_and_draws(shapes, tmp_path, capsys):
    ann_file, image_dir = shapes
    data = json.loads(ann_file.read_text())
    out = tmp_path / "browse.png"
    assert explore.cmd_browse(parse("browse", "--coco-gt", ann_file, "--images", image_dir, "--out", out,
                                    "--n", 6)) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"12 images, {len(data['annotations'])} instances of 3 classes")
    per_class = Counter(a["category_id"] for a in data["annotations"])
    for k, name in ((1, "square"), (2, "circle"), (3, "triangle")):
        assert any(line.split()[:2] == [name, str(per_class[k])] for line in text.splitlines()), name
    assert "(6 images, seed 0, at 128 x 128)" in text
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize("argv, flag", [
    (("anchors", "--anchor-sizes", 40, 0), "--anchor-sizes"),
    (("anchors", "--anchor-ratios", -1), "--anchor-ratios"),
    (("anchors", "--image-size", 100), "--image-size"),
    (("anchors", "--stride", 0), "--stride"),
    (("browse", "--out", "x.png", "--n", 0), "--n"),
    (("browse", "--out", "x.txt"), "--out"),
])
def test_bad_flags_name_the_flag_before_reading_data(argv, flag):
    # the data set paths do not exist: the flag is checked first
    args = parse(*argv, "--coco-gt", "missing.json", "--images", "missing")
    command = explore.cmd_anchors if args.command == "anchors" else explore.cmd_browse
    with pytest.raises(ValueError, match=f"^{flag}: "):
        command(args)


@pytest.mark.parametrize("command", ["anchors", "browse"])
def test_out_that_is_a_folder(command, tmp_path):
    args = parse(command, "--coco-gt", "missing.json", "--images", "missing", "--out", tmp_path)
    with pytest.raises(ValueError, match="^--out: .* is a folder"):
        (explore.cmd_anchors if command == "anchors" else explore.cmd_browse)(args)
