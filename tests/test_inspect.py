"""``mrcnn-edu inspect`` and ``inspection.py``: the trace of one image agrees with ``predict``, its numbers
(anchor matches, recall, candidates, activation statistics) agree with the library's stages and with sums done
by hand, and the command writes its figures, refuses to overwrite them, and fails in one line."""
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from mrcnn_edu import backend
from mrcnn_edu.boxes import box_iou
from mrcnn_edu.cli import main
from mrcnn_edu.data.shapes import ShapesDataset, boxes_from_masks
from mrcnn_edu.inference import load_model
from mrcnn_edu.inspection import activation_statistics, proposal_recall, trace, weights_report
from mrcnn_edu.inspection_figures import EXPLAIN_FILE, STAGE_FILES, WEIGHT_FILES, draw_stages
from mrcnn_edu.model import MaskRCNN, ModelConfig
from mrcnn_edu.rpn import _rpn_targets


def validation_sample(model, index):
    """Image ``index`` of the shapes validation split the ``trained_run`` was trained with (seed 0, 16 images)."""
    image, masks, class_ids = ShapesDataset(0, model.config.image_size, "validation", length=16)[index]
    return image, dict(boxes=boxes_from_masks(masks), labels=class_ids, masks=masks)


@pytest.fixture(scope="module")
def trained(trained_run):
    model, class_names = load_model(trained_run / "model.npz")
    return model, class_names


def host(a):
    return np.asarray(backend.to_host(a))


# ------------------------------------------------------------------------------------------ the trace
@pytest.mark.parametrize("index", [0, 3, 7])
def test_the_trace_finds_what_predict_finds(trained, index):
    model, _ = trained
    image, gt = validation_sample(model, index)
    t = trace(model, image, gt)
    expected = model.predict(image[None])[0]
    assert len(expected["scores"]) > 0, "the trained model should find something on a shapes image"
    for key in ("boxes", "scores", "labels", "masks"):
        np.testing.assert_array_equal(host(t.detections[key]), host(expected[key]), err_msg=key)
    # the stages lead to those detections: the first D candidates per-class NMS kept, masks pasted >= 0.5
    boxes, scores, labels, _ = t.box_head.candidate(t.box_head.after_nms[:len(expected["scores"])])
    np.testing.assert_array_equal(host(boxes), host(expected["boxes"]))
    np.testing.assert_array_equal(host(labels), host(expected["labels"]))
    np.testing.assert_array_equal(host(t.mask_head.pasted) >= 0.5, host(expected["masks"]))
    assert set(host(t.box_head.after_nms)) <= set(host(t.box_head.candidates))
    assert (host(scores) > model.config.score_threshold).all()
    # the proposals are the boxes before NMS that NMS kept, at most rpn_post_nms_test of them
    p = t.proposals
    assert len(host(p.boxes)) <= model.config.rpn_post_nms_test < len(host(p.before_nms))
    np.testing.assert_array_equal(host(p.boxes), host(p.before_nms)[host(p.kept)])


SMALL = dict(image_size=64, channels=(8, 8, 16, 16), groups=4, fpn_channels=16, anchor_sizes=(48.0, 64.0),
             box_hidden=32, mask_channels=8, mask_convs=1, score_threshold=0.0)


@pytest.mark.parametrize("variant", [dict(mask_loss="softmax", roi_op="pool"), dict(fpn=False),
                                     dict(mask_head="mlp", mask_stride=8)])
def test_the_trace_follows_every_model_variant(variant):
    """Untrained small models of the ablations' variants: the trace still finds exactly what predict finds."""
    model = MaskRCNN(ModelConfig(**SMALL, **variant), rng=np.random.default_rng(0))
    image = ShapesDataset(0, 64, "validation", length=1)[0][0]
    t, expected = trace(model, image), model.predict(image[None])[0]
    assert len(expected["scores"]) > 5                                     # score_threshold 0: many
    for key in ("boxes", "scores", "labels", "masks"):
        np.testing.assert_array_equal(host(t.detections[key]), host(expected[key]), err_msg=key)


def test_figures_of_an_image_without_detections(tmp_path):
    model = MaskRCNN(ModelConfig(**dict(SMALL, score_threshold=0.99)), rng=np.random.default_rng(0))
    image, gt = validation_sample(model, 0)
    t = trace(model, image, gt)
    assert len(host(t.detections["scores"])) == 0 and host(t.mask_head.probs).shape == (0, 4, 28, 28)
    files = draw_stages(tmp_path, t, activation_statistics(model, image), ("background", "a", "b", "c"))
    assert sorted(p.name for p in files.values()) == sorted(STAGE_FILES.values())
    assert all(p.stat().st_size > 5_000 for p in files.values())


def test_anchor_matches_are_the_rpn_targets_objects(trained):
    """The anchors the trace calls objects are those ``_rpn_targets`` trains as objects (fewer than the 128
    the sampler may take, so it keeps them all), and its not-objects are never ignored anchors."""
    model, _ = trained
    image, gt = validation_sample(model, 3)
    t = trace(model, image, gt)
    anchors = model.anchors()
    sampled, _ = _rpn_targets(anchors, backend.xp.asarray(gt["boxes"], dtype=anchors.dtype),
                              np.random.default_rng(0), 256, 0.5)
    labels, sampled = host(t.rpn.labels), host(sampled)
    assert 0 < (labels == 1).sum() < 128
    np.testing.assert_array_equal(np.flatnonzero(labels == 1), np.flatnonzero(sampled == 1))
    assert (labels[sampled == 0] == 0).all()
    matched = host(t.rpn.matches)
    assert set(matched[labels == 1]) == set(range(len(gt["labels"])))  # every object has an anchor


def test_recall_by_hand():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], dtype=np.float64)
    boxes = np.array([[0, 0, 10, 10],            # IoU 1 with the first
                      [20, 20, 30, 35],          # IoU 100 / 150 = 0.67 with the second
                      [100, 100, 110, 110]])     # overlaps nothing
    assert proposal_recall(boxes, gt) == {0.5: pytest.approx(2 / 3), 0.7: pytest.approx(1 / 3)}
    assert proposal_recall(np.zeros((0, 4)), gt) == {0.5: 0.0, 0.7: 0.0}
    with pytest.raises(ValueError, match="gt_boxes"):
        proposal_recall(boxes, np.zeros((0, 4)))


def test_the_traces_recall_counts_the_covered_objects(trained):
    model, _ = trained
    image, gt = validation_sample(model, 3)
    t = trace(model, image, gt)
    for key, boxes in (("before_nms", t.proposals.before_nms), ("after_nms", t.proposals.boxes)):
        iou = host(box_iou(host(gt["boxes"]).astype(np.float64), host(boxes).astype(np.float64)))
        for threshold in (0.5, 0.7):
            covered = sum(any(iou[g, j] >= threshold for j in range(iou.shape[1])) for g in range(iou.shape[0]))
            assert t.proposals.recall[key][threshold] == pytest.approx(covered / len(gt["labels"]))
    assert trace(model, image).proposals.recall is None


def test_trace_checks_its_inputs(trained):
    model, _ = trained
    image, gt = validation_sample(model, 0)
    with pytest.raises(ValueError, match="image: expected 128 x 128 x 3"):
        trace(model, image[:64])
    with pytest.raises(ValueError, match=r"gt\['labels'\]: expected classes in \[1, 3\]"):
        trace(model, image, dict(gt, labels=np.zeros_like(gt["labels"])))


# ------------------------------------------------------------------------------------------ activations
def test_activation_statistics_of_a_relu_by_hand(trained):
    model, _ = trained
    image, _ = validation_sample(model, 1)
    acts = activation_statistics(model, image)
    rows = {s.name: s for s in acts.table}
    relu = host(model.backbone.stage1.forward(model.normalize(image[None])))      # stage 1 ends in its ReLU
    row = rows["backbone.stage1.2"]
    assert row.layer == "ReLU" and row.shape == relu.shape
    assert row.zeros == pytest.approx((relu == 0).mean()) and 0 < row.zeros < 1
    assert row.mean == pytest.approx(relu.mean(), rel=1e-5) and row.max == pytest.approx(relu.max())
    assert row.min == 0.0 and math.copysign(1.0, row.min) == 1.0      # 0, not the -0.0 of an in-place ReLU
    # the GroupNorm before it is recorded as it came out, although its ReLU (in place) then overwrote it
    norm = rows["backbone.stage1.1"]
    assert norm.layer == "GroupNorm" and norm.min < 0 and norm.zeros == 0
    np.testing.assert_array_equal(host(acts.feature_maps["backbone.stage1"]), relu[0])
    # every layer of the model ran once and was recorded; afterwards no layer keeps the recording forward
    leaves = [m for m in model.modules() if not m.children()]
    assert len(acts.table) == len(leaves) and len(rows) == len(leaves)
    assert not any("forward" in vars(m) for m in leaves)


# ------------------------------------------------------------------------------------------ weights
def test_weights_report_reads_the_norm_records(trained):
    model, _ = trained
    params = model.parameters()
    records = [{"step": 10, "loss": 1.0}, {"step": 100, "seconds": 1.0, "norms": {"rpn.conv.0": {"weight": 2.0,
                                                                                               "grad": 0.5}}},
               {"step": 200, "seconds": 2.0, "norms": {"rpn.conv.0": {"weight": 3.0, "grad": 0.25}}}]
    report = weights_report(params, records)
    assert list(report.weights)[0] == "backbone.stage1.0"
    assert len(report.weights) == sum(name.endswith(".weight") for name in params)
    assert list(report.steps) == [100, 200]
    np.testing.assert_array_equal(report.norms["rpn.conv.0"]["weight"], [2.0, 3.0])
    np.testing.assert_array_equal(report.norms["rpn.conv.0"]["grad"], [0.5, 0.25])
    assert weights_report(params, records[:1]).norms == {}


# ------------------------------------------------------------------------------------------ the command
def pngs(folder):
    return {p.name: p.stat().st_size for p in folder.glob("*.png")}


def test_inspect_a_validation_image(trained_run, tmp_path, capsys, cli_error):
    out = tmp_path / "inspect"
    args = ["inspect", "--checkpoint", str(trained_run / "model.npz"), "--index", "3", "--out", str(out)]
    assert main(args + ["--explain", "0"]) == 0
    printed = capsys.readouterr().out
    assert "shapes validation image 3 of 16" in printed and "recall at IoU 0.5" in printed
    assert "match the" in printed and "detections" in printed and "explain: detection 0" in printed
    written = pngs(out)
    assert sorted(written) == sorted([*STAGE_FILES.values(), EXPLAIN_FILE])
    assert all(size > 20_000 for size in written.values()), written      # pictures, not empty canvases
    status, line = cli_error(args)                                          # never overwrites silently
    assert status == 2 and "--out" in line and "01_rpn_anchors.png" in line and "--overwrite" in line


def test_inspect_your_own_image(trained_run, tmp_path, capsys, cli_error):
    model, _ = load_model(trained_run / "model.npz")
    image, _ = validation_sample(model, 5)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.repeat(image, 2, axis=0)[:200]).save(photo)       # not square, not the model's size
    out = tmp_path / "inspect"
    out.mkdir()
    (out / STAGE_FILES["box_head"]).write_bytes(b"the user's own file")
    args = ["inspect", "--checkpoint", str(trained_run / "model.npz"), "--image", str(photo), "--out", str(out)]
    status, line = cli_error(args)
    assert status == 2 and STAGE_FILES["box_head"] in line
    assert (out / STAGE_FILES["box_head"]).read_bytes() == b"the user's own file"
    assert main(args + ["--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "photo.png (128 x 200, resized to 128 px" in printed and "no ground truth" in printed
    assert "recall" not in printed
    written = pngs(out)
    assert sorted(written) == sorted(STAGE_FILES.values()) and all(size > 20_000 for size in written.values())


def test_inspect_weights_with_and_without_norms(trained_run, tmp_path, capsys):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert any("norms" in r for r in records), "training logs norms every 100 steps"
    out = tmp_path / "with"
    assert main(["inspect", "--checkpoint", str(trained_run / "model.npz"), "--weights", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(pngs(out)) == sorted(WEIGHT_FILES.values()) and "logged steps" in printed
    old = tmp_path / "old_run"                          # a run from before norms were logged
    old.mkdir()
    shutil.copy(trained_run / "model.npz", old / "model.npz")
    (old / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records if "norms" not in r))
    out = tmp_path / "without"
    assert main(["inspect", "--checkpoint", str(old / "model.npz"), "--weights", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(pngs(out)) == [WEIGHT_FILES["histograms"]]
    assert sum("holds no weight norms" in line for line in printed.splitlines()) == 1


def test_inspect_fails_in_one_line(trained_run, tmp_path, cli_error):
    model = str(trained_run / "model.npz")
    out = str(tmp_path / "out")
    status, line = cli_error(["inspect", "--checkpoint", str(tmp_path / "missing.npz"), "--index", "0",
                              "--out", out])
    assert status == 1 and "missing.npz" in line
    status, line = cli_error(["inspect", "--checkpoint", model, "--index", "16", "--out", out])
    assert status == 2 and "--index 16" in line and "16 images" in line
    status, line = cli_error(["inspect", "--checkpoint", model, "--index", "-1", "--out", out])
    assert status == 2 and "--index" in line
    status, line = cli_error(["inspect", "--checkpoint", model, "--index", "0", "--image", "x.png", "--out", out])
    assert status == 2 and "--image and --index" in line
    status, line = cli_error(["inspect", "--checkpoint", model, "--out", out])
    assert status == 2 and "--image or --index" in line
    status, line = cli_error(["inspect", "--checkpoint", model, "--index", "0", "--explain", "99", "--out", out])
    assert status == 2 and "--explain 99" in line
    status, line = cli_error(["inspect", "--checkpoint", model, "--image", str(tmp_path / "nope.png"), "--out", out])
    assert status == 1 and "nope.png" in line
    assert not (tmp_path / "out").exists()
