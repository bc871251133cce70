"""``mrcnn-edu diagnose``: each stage replaced by the ground truth, and the AP it costs.

The trained model (``trained_run``, 300 steps) is diagnosed as it is and with one stage broken on purpose; a
broken stage must show in its own row and nowhere else."""
import json

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.activations import softmax
from mrcnn_edu.boxes import BOX_HEAD_WEIGHTS, box_decode, box_iou
from mrcnn_edu.data.shapes import boxes_from_masks, validation_set
from mrcnn_edu.diagnose import ROWS, STAGES, _true_box_deltas, _true_class_logits, diagnose, oracle_predict
from mrcnn_edu.heads import MaskHead, paste_masks
from mrcnn_edu.inference import load_model
from mrcnn_edu.roi_heads import mask_targets

VAL_IMAGES = 16
ROW_NAMES = [name for name, _ in ROWS]


def _targets(samples):
    return [dict(boxes=boxes_from_masks(m), labels=c, masks=m) for _, m, c in samples]


def _by_name(rows):
    return {r["name"]: r for r in rows}


@pytest.fixture(scope="module")
def samples():
    return validation_set(VAL_IMAGES, 0, 128)


@pytest.fixture(scope="module")
def intact(trained_run, samples):
    """The trained model's rows."""
    model, _ = load_model(trained_run / "model.npz")
    return _by_name(diagnose(model, samples, batch_size=8))


# ------------------------------------------------------------------------------------------ the stages
def test_no_stage_replaced_is_the_models_own_prediction(trained_run, samples):
    model, _ = load_model(trained_run / "model.npz")
    images = np.stack([s[0] for s in samples[:6]])
    expected = model.predict(images)
    for replace in ((), ("mask",)):
        got = oracle_predict(model, images, _targets(samples[:6]), replace)
        assert sum(len(d["boxes"]) for d in got) > 0
        for e, g in zip(expected, got):
            for key in ("boxes", "scores", "labels") + (("masks",) if not replace else ()):
                np.testing.assert_array_equal(backend.to_host(g[key]), backend.to_host(e[key]), err_msg=key)


def test_class_oracle_gives_the_true_class_and_keeps_the_ranking():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([3, 1])
    matched = np.array([0, -1, 1, 0, -2])          # proposals 0, 2, 3 belong to ground truths 0, 1, 0
    p = softmax(_true_class_logits(logits, labels, matched, 0.05), axis=1)
    foreground = 1 - softmax(logits, axis=1)[:, 0]
    np.testing.assert_array_equal(p.argmax(axis=1)[[0, 2, 3]], [3, 1, 3])
    np.testing.assert_allclose(p[[1, 4]], [[1, 0, 0, 0]] * 2, atol=1e-6)   # unmatched: background
    scores = p[[0, 2, 3], [3, 1, 3]]
    assert scores.min() > 0.05 + 0.95 / 2 - 1e-6                            # never below the threshold
    np.testing.assert_array_equal(np.argsort(scores), np.argsort(foreground[[0, 2, 3]]))


def test_box_oracle_moves_matched_proposals_onto_their_ground_truth():
    proposals = np.array([[10, 10, 50, 50], [12, 8, 48, 56], [80, 80, 100, 100]], np.float32)
    gt = np.array([[11, 9, 49, 52]], np.float32)
    model_deltas = np.full((3, 16), 0.3, np.float32)
    deltas = _true_box_deltas(model_deltas, proposals, gt, np.array([0, 0, -1]))
    for k in range(4):   # every class's deltas of a matched proposal decode to the ground truth
        np.testing.assert_allclose(box_decode(deltas[:2, 4 * k:4 * k + 4], proposals[:2], BOX_HEAD_WEIGHTS),
                                   np.repeat(gt, 2, axis=0), atol=1e-4)
    np.testing.assert_array_equal(deltas[2], model_deltas[2])


def test_replace_names_the_unknown_stage(trained_run, samples):
    model, _ = load_model(trained_run / "model.npz")
    with pytest.raises(ValueError, match="replace: .*'rpn'"):
        oracle_predict(model, samples[0][0][None], _targets(samples[:1]), ("rpn",))


# ------------------------------------------------------------------------------------------ the table
def test_all_reaches_the_ceiling_the_mask_round_trip_allows(intact, samples):
    # the ceiling: a true mask cut into its box as a 28 x 28 target and pasted back, as the mask oracle does
    ious = []
    for _, masks, _ in samples:
        boxes = boxes_from_masks(masks)
        back = paste_masks(mask_targets(masks, boxes, np.arange(len(boxes)), 28, aligned=True), boxes,
                           masks.shape[1:]) >= 0.5
        ious += list((back & masks).sum(axis=(1, 2)) / (back | masks).sum(axis=(1, 2)))
    assert np.mean(ious) > 0.99 and min(ious) > 0.95, (np.mean(ious), min(ious))
    # every object is found once, at its own box, with a mask above the highest COCO threshold (0.95)
    assert intact["all"]["box_ap"] == pytest.approx(1.0, abs=1e-9)
    assert intact["all"]["mask_ap"] == pytest.approx(1.0, abs=1e-9)
    for name in ROW_NAMES:
        assert intact[name]["box_ap"] <= intact["all"]["box_ap"] and intact[name]["mask_ap"] <= 1.0
    assert intact["model"]["box_ap"] > 0.2 and intact["model"]["mask_ap"] > 0.2, intact["model"]


def test_costs_are_each_rows_ap_above_the_models(intact):
    assert ROW_NAMES == ["model", "proposals", "class", "box", "mask", "all"]
    for r in intact.values():
        assert r["box_cost"] == pytest.approx(r["box_ap"] - intact["model"]["box_ap"])
        assert r["mask_cost"] == pytest.approx(r["mask_ap"] - intact["model"]["mask_ap"])
    # the true mask changes masks only; the true box moves boxes, and the masks follow them
    assert intact["mask"]["box_ap"] == intact["model"]["box_ap"]
    assert intact["mask"]["mask_ap"] > intact["model"]["mask_ap"]
    assert intact["box"]["box_ap"] > intact["model"]["box_ap"]


def test_a_broken_mask_head_shows_in_the_mask_row_only(trained_run, samples, intact):
    model, _ = load_model(trained_run / "model.npz")
    cfg = model.config
    model.mask_head = MaskHead(cfg.fpn_channels, cfg.mask_channels, cfg.mask_convs, cfg.num_classes,
                               rng=np.random.default_rng(7))
    broken = _by_name(diagnose(model, samples, batch_size=8))
    for name in ROW_NAMES:   # the boxes never see the mask head
        assert broken[name]["box_ap"] == intact[name]["box_ap"], name
    assert broken["all"]["mask_ap"] == intact["all"]["mask_ap"]
    assert broken["model"]["mask_ap"] < intact["model"]["mask_ap"] - 0.2, (broken["model"], intact["model"])
    # the true mask gives back what the mask head lost; no other stage does
    assert broken["mask"]["mask_ap"] == pytest.approx(intact["mask"]["mask_ap"], abs=0.02)
    assert broken["mask"]["mask_cost"] > 0.3, broken["mask"]
    for name in ("proposals", "class", "box"):
        assert broken[name]["mask_ap"] < intact[name]["mask_ap"] - 0.2, (name, broken[name], intact[name])
        assert broken[name]["mask_cost"] < broken["mask"]["mask_cost"] - 0.2, (name, broken[name])


def test_a_scrambled_box_regressor_shows_in_the_box_row(trained_run, samples, intact):
    model, _ = load_model(trained_run / "model.npz")
    weight = model.box_head.bbox_pred.params["weight"]
    weight[...] = np.random.default_rng(7).permutation(weight.ravel()).reshape(weight.shape) * 3
    broken = _by_name(diagnose(model, samples, batch_size=8))
    assert broken["model"]["box_ap"] < intact["model"]["box_ap"] - 0.3, (broken["model"], intact["model"])
    # the true deltas give back what the regressor lost (all but the refinement of proposals under IoU 0.5,
    # which the oracle leaves to the model), and the box row is where the diagnosis points
    assert broken["box"]["box_ap"] > intact["box"]["box_ap"] - 0.1, (broken["box"], intact["box"])
    assert max(STAGES, key=lambda s: broken[s]["box_cost"]) == "box", broken
    # the true class or mask does not
    for name in ("class", "mask"):
        assert broken[name]["box_ap"] < intact[name]["box_ap"] - 0.2, (name, broken[name], intact[name])
    # with every stage true, the regressor's deltas are never used
    assert (broken["all"]["box_ap"], broken["all"]["mask_ap"]) == (intact["all"]["box_ap"], intact["all"]["mask_ap"])


# ------------------------------------------------------------------------------------------ the command
def test_cli_prints_the_table_and_writes_the_rows(trained_run, tmp_path, capsys):
    from mrcnn_edu.cli import main
    out = tmp_path / "rows.json"
    out.write_text("an earlier file: replaced")
    assert main(["diagnose", "--checkpoint", str(trained_run / "model.npz"), "--val-images", "4",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ROW_NAMES
    for r in rows:
        assert {"name", "box_ap", "mask_ap"} <= set(r) and 0 <= r["box_ap"] <= 1 and 0 <= r["mask_ap"] <= 1
        assert f"{r['box_ap']:.3f}" in printed and f"{r['mask_ap']:.3f}" in printed
    assert rows[-1]["replaced"] == list(STAGES) and rows[-1]["box_ap"] == pytest.approx(1.0)
    assert "4 shapes validation images (seed 0" in printed and "costliest stage" in printed


def test_cli_errors_are_one_line(cli_error, trained_run, tmp_path):
    code, line = cli_error(["diagnose", "--checkpoint", tmp_path / "missing.npz"])
    assert code == 1 and "missing.npz" in line
    code, line = cli_error(["diagnose", "--checkpoint", trained_run / "model.npz", "--val-images", "0"])
    assert code == 2 and "--val-images" in line
    code, line = cli_error(["diagnose", "--checkpoint", trained_run / "model.npz", "--json", tmp_path])
    assert code == 2 and "--json" in line
