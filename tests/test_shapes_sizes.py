"""Shapes images of 256 and 512 px: more and larger shapes (data/shapes.py ``layout_rules``), the model settings
that match them (``shapes_model_settings``), ``train --image-size`` applying them, and one step of a 256-px model.
The 128-px samples (and the 64-px ones the quick tests use) stay exactly what they were."""
import hashlib
from dataclasses import fields

import numpy as np
import pytest

from mrcnn_edu.anchors import generate_anchors
from mrcnn_edu.boxes import box_iou
from mrcnn_edu.cli import UsageError, _new_run, build_parser
from mrcnn_edu.data.shapes import (HALF_SIZE, MARGIN, MAX_IOU, MAX_OBJECTS, MAX_TRIES, Layout, LayoutRules,
                                   ShapesDataset, boxes_from_masks, layout_rules, random_layout, render, shape_boxes,
                                   shapes_model_settings)
from mrcnn_edu.model import MaskRCNN, ModelConfig


# ------------------------------------------------------------------------------------- 128 px unchanged
def digest(samples):
    h = hashlib.sha256()
    for sample in samples:
        for a in sample:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def test_128_and_64_px_samples_are_bit_for_bit_those_of_before():
    # digests of the first 5 samples, computed with the module as it was before larger images got more shapes
    assert digest([ShapesDataset(0, 128, "train")[i] for i in range(5)]) == "31b5130da0566e3c"
    assert digest([ShapesDataset(0, 128, "validation")[i] for i in range(5)]) == "b36a07ed4c35094d"
    assert digest([ShapesDataset(3, 64, "train")[i] for i in range(5)]) == "bc5dbaef07c1f608"


@pytest.mark.parametrize("size", [64, 96, 128])
def test_up_to_128_px_the_rules_are_the_module_constants(size):
    assert layout_rules(size) == LayoutRules(MARGIN, HALF_SIZE, MAX_OBJECTS) == (20, (20, 32), 4)


@pytest.mark.parametrize("size", [96, 128])
def test_up_to_128_px_random_layout_makes_the_same_draws_in_the_same_order(size):
    """The draws of the 128-px rules, spelled out: the count, then every candidate's class, centre, half-size and
    colour (4 objects x MAX_TRIES), then the background. The first object always takes its first candidate,
    and the generator ends in the same state."""
    for seed in range(20):
        rng, mine = np.random.default_rng([7, seed]), np.random.default_rng([7, seed])
        lay = random_layout(rng, size)
        count = int(mine.integers(1, 5))
        classes = mine.integers(1, 4, size=(4, MAX_TRIES))
        centres = mine.integers(20, size - 20 + 1, size=(4, MAX_TRIES, 2))
        halves = mine.integers(20, 33, size=(4, MAX_TRIES))
        mine.integers(0, 256, size=(4, MAX_TRIES, 3), dtype=np.uint8)
        background = mine.integers(0, 256, size=3, dtype=np.uint8)
        assert rng.bit_generator.state == mine.bit_generator.state
        assert 1 <= len(lay.class_ids) <= count
        assert (lay.class_ids[0], *lay.centres[0], lay.half_sizes[0]) == (classes[0, 0], *centres[0, 0], halves[0, 0])
        np.testing.assert_array_equal(lay.background, background)


# ------------------------------------------------------------------------------------ larger images
def test_the_rules_scale_with_the_image():
    assert layout_rules(256) == (28, (28, 45), 8)        # sqrt(2) x 20 and 32 (28.3, 45.3); 2 x 4 objects
    assert layout_rules(512) == (40, (40, 64), 16)       # 2 x 20 and 32; 4 x 4 objects
    assert layout_rules(192) == (24, (24, 39), 6)        # continuous r = 1.5
    with pytest.raises(ValueError, match="size: expected an int >= 64"):
        layout_rules(48)


def tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("size, most", [(256, 8), (512, 16)])
def test_larger_images_hold_more_and_larger_shapes_by_the_rules(size, most):
    margin, (low, high), max_objects = layout_rules(size)
    assert max_objects == most
    counts = []
    for i in range(200):
        lay = random_layout(np.random.default_rng([size, i]), size)
        n = len(lay.class_ids)
        counts.append(n)
        assert 1 <= n <= most
        assert (lay.centres >= margin).all() and (lay.centres <= size - margin).all()
        assert (lay.half_sizes >= low).all() and (lay.half_sizes <= high).all()
        boxes = shape_boxes(lay.centres, lay.half_sizes)
        assert (box_iou(boxes, boxes)[~np.eye(n, dtype=bool)] <= MAX_IOU).all()
    assert max(counts) > most // 2 and np.mean(counts) > 1.5 * most / 4   # more objects than 128 px can hold
    halves = np.concatenate([random_layout(np.random.default_rng([size, i]), size).half_sizes for i in range(50)])
    assert halves.min() == low and halves.max() == high          # the whole scaled range is used


@pytest.mark.parametrize("size", [256, 512])
def test_larger_samples_masks_are_exact_and_disjoint_and_cover_what_128_px_covers(size):
    dataset, covered = ShapesDataset(1, size, "validation"), []
    for i in range(25):
        lay = random_layout(dataset.rng(i), size)
        image, masks, class_ids = dataset[i]
        assert image.shape == (size, size, 3) and masks.shape[1:] == (size, size) and masks.dtype == bool
        # each object alone, then hidden where a later object lies on it: the visible masks, in drawing order
        alone = [render(Layout(lay.class_ids[j:j + 1], lay.centres[j:j + 1], lay.half_sizes[j:j + 1],
                               lay.colours[j:j + 1], lay.background), size)[1][0] for j in range(len(lay.class_ids))]
        visible = [m & ~np.any(alone[j + 1:], axis=0) if j + 1 < len(alone) else m for j, m in enumerate(alone)]
        kept = [j for j, m in enumerate(visible) if m.any()]
        np.testing.assert_array_equal(masks, np.array([visible[j] for j in kept]))
        np.testing.assert_array_equal(class_ids, lay.class_ids[kept])
        assert masks.sum(axis=0).max() <= 1
        for j, m in zip(kept, masks):
            np.testing.assert_array_equal(image[m], np.broadcast_to(lay.colours[j], (m.sum(), 3)))
            (cx, cy), s, c = lay.centres[j], lay.half_sizes[j], lay.class_ids[j]
            if c in (1, 2) and (m == alone[j]).all() and s <= min(cx, cy, size - cx, size - cy):
                assert tight_box(m) == [cx - s, cy - s, cx + s, cy + s]   # whole squares and circles: exact boxes
                if c == 1:
                    assert m.sum() == (2 * s) ** 2
        np.testing.assert_array_equal(boxes_from_masks(masks), np.array([tight_box(m) for m in masks], np.float32))
        covered.append(masks.any(axis=0).mean())
    # about the share of 128 px (0.27 over these seeds); 128-px counts would give < 0.1, r-scaled sides > 0.4
    assert 0.18 < np.mean(covered) < 0.36, np.mean(covered)


# ---------------------------------------------------------------------------------- model settings
def test_the_128_px_settings_are_the_model_defaults():
    defaults = ModelConfig()
    names = {f.name for f in fields(ModelConfig)}
    for size in (64, 128):
        settings = shapes_model_settings(size)
        assert set(settings) <= names
        assert {k: v for k, v in settings.items() if k != "image_size"} == \
            {k: getattr(defaults, k) for k in settings if k != "image_size"}
    assert ModelConfig(**shapes_model_settings(128)) == defaults


def test_the_settings_scale_with_the_image():
    s512, s256 = shapes_model_settings(512), shapes_model_settings(256)
    assert s512["anchor_sizes"] == (80.0, 112.0, 144.0)                      # 2 x (40, 56, 72)
    assert s256["anchor_sizes"] == (56.6, 79.2, 101.8)                       # sqrt(2) x, to 0.1 px
    assert (s512["image_size"], s256["image_size"]) == (512, 256)
    for name in ("rpn_batch", "rpn_post_nms_train", "rpn_post_nms_test", "roi_batch", "mask_rois_per_image",
                 "detections_per_image"):
        assert s256[name] == 2 * getattr(ModelConfig(), name) and s512[name] == 4 * getattr(ModelConfig(), name)


def test_the_scaled_anchors_fit_the_larger_shapes_better_than_the_128_px_anchors():
    boxes = np.concatenate([boxes_from_masks(ShapesDataset(2, 512, "validation")[i][1]) for i in range(8)])
    best = {}
    for name, sizes in (("scaled", shapes_model_settings(512)["anchor_sizes"]), ("128", (40.0, 56.0, 72.0))):
        anchors = generate_anchors((512, 512), 16, sizes, (1.0,), offset=0.5)
        best[name] = np.median(box_iou(boxes, anchors).max(axis=1))
    assert best["scaled"] > 0.7 > best["128"], best


# --------------------------------------------------------------------------------- the command line
def new_run(*argv):
    return _new_run(build_parser().parse_args(["train", *argv]))


def test_train_image_size_on_shapes_scales_the_model_and_says_so(capsys):
    mcfg, _, spec = new_run("--image-size", "256")
    assert spec == {"kind": "shapes"} and mcfg.image_size == 256
    assert mcfg.anchor_sizes == (56.6, 79.2, 101.8)
    assert (mcfg.roi_batch, mcfg.detections_per_image, mcfg.mask_rois_per_image) == (128, 40, 16)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "shapes at 256 px (1 to 8 objects" in out and "(56.6, 79.2, 101.8)" in out


def test_given_anchor_sizes_win_and_the_rest_still_scales(capsys):
    mcfg, _, _ = new_run("--image-size", "512", "--anchor-sizes", "90", "120")
    assert mcfg.anchor_sizes == (90.0, 120.0) and mcfg.rpn_post_nms_test == 128
    assert "anchor_sizes" not in capsys.readouterr().out


@pytest.mark.parametrize("argv", [(), ("--image-size", "128"), ("--image-size", "64")])
def test_128_px_and_less_keep_the_defaults_silently(argv, capsys):
    mcfg, _, _ = new_run(*argv)
    assert {k: v for k, v in vars(mcfg).items() if k != "image_size"} == \
        {k: v for k, v in vars(ModelConfig()).items() if k != "image_size"}
    assert capsys.readouterr().out == ""


def test_own_data_keeps_its_own_anchor_scaling(capsys):
    mcfg, _, _ = new_run("--image-size", "256", "--coco-gt", "a.json", "--images", "d")
    assert mcfg.anchor_sizes == (80.0, 112.0, 144.0) and mcfg.roi_batch == 64      # by r, counts unchanged
    assert "shapes at" not in capsys.readouterr().out


def test_too_small_shapes_images_are_refused_naming_the_flag():
    with pytest.raises(UsageError, match="--image-size: shapes images are at least 64 px, got 48"):
        new_run("--image-size", "48")


def test_the_run_trains_and_validates_on_images_of_its_size():
    from mrcnn_edu.train import TrainConfig, open_data
    mcfg, _, spec = new_run("--image-size", "256")
    data = open_data(spec, mcfg, TrainConfig(val_images=2))
    assert data.batch(0, 2)[0][0].shape == (256, 256, 3)
    assert [s[0].shape for s in data.validation_samples(2)] == [(256, 256, 3)] * 2


# ------------------------------------------------------------------------------------- one 256-px step
def test_a_small_256_px_model_trains_one_step_and_predicts():
    settings = shapes_model_settings(256)
    cfg = ModelConfig(**settings, channels=(4, 4, 8, 8), groups=2, fpn_channels=8, box_hidden=16, mask_channels=4,
                      mask_convs=1, box_pool=3, mask_pool=4)
    model = MaskRCNN(cfg, rng=np.random.default_rng(1))
    samples = [ShapesDataset(0, 256, "train")[i] for i in range(2)]
    images = np.stack([s[0] for s in samples])
    targets = [dict(boxes=boxes_from_masks(m), labels=c, masks=m) for _, m, c in samples]
    losses = model.loss_and_backward(images, targets, np.random.default_rng(5))
    assert all(np.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0
    grads = model.gradients()
    assert set(grads) == set(model.parameters()) and all(np.isfinite(g).all() for g in grads.values())
    detections = model.predict(images)
    assert len(detections) == 2
    for d in detections:
        assert d["masks"].shape[1:] == (256, 256) and len(d["boxes"]) <= settings["detections_per_image"]
