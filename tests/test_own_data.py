"""Own data, honestly: a held-out split that training never sees, scored exactly as ``evaluate`` scores it,
on images of any size and shape; a run folder that is never lost; resume that restores the run's data and
settings and says what a changed flag does."""
import json

import numpy as np
import pytest
from PIL import Image

from mrcnn_edu.checkpoint import load_checkpoint
from mrcnn_edu.cli import main
from mrcnn_edu.data.coco import load_coco, samples_to_coco
from mrcnn_edu.data.shapes import CLASS_NAMES, boxes_from_masks, validation_set
from mrcnn_edu.model import MaskRCNN, ModelConfig
from mrcnn_edu.train import TrainConfig, open_data, split_held_out

# (height, width) of the images: wider, taller, smaller and larger than the model's 128 px
SIZES = [(96, 160), (200, 120), (64, 64), (150, 300), (128, 128), (90, 70), (256, 192), (110, 140), (80, 200),
         (160, 100)]


def _resize(array, size, resample):
    return np.asarray(Image.fromarray(array).resize(size[::-1], resample))


@pytest.fixture(scope="module")
def odd_sizes(tmp_path_factory):
    """Ten shapes images stretched to the sizes above, written as a COCO data set (polygon-free: RLE)."""
    root = tmp_path_factory.mktemp("odd")
    (root / "images").mkdir()
    samples, names = [], []
    for i, ((image, masks, class_ids), size) in enumerate(zip(validation_set(len(SIZES), seed=11), SIZES)):
        image = _resize(image, size, Image.BILINEAR)
        masks = np.stack([_resize(m.astype(np.uint8) * 255, size, Image.NEAREST) > 127 for m in masks])
        keep = masks.any(axis=(1, 2))
        samples.append((image, masks[keep], class_ids[keep]))
        names.append(f"{i:03d}.png")
        Image.fromarray(image).save(root / "images" / names[-1])
    (root / "annotations.json").write_text(json.dumps(samples_to_coco(samples, CLASS_NAMES, names)))
    return str(root / "annotations.json"), str(root / "images")


@pytest.fixture
def perfect_model(monkeypatch, odd_sizes):
    """``MaskRCNN.predict`` replaced by the ground truth of each (resized, padded) image it is shown: any AP
    below 1 then comes from mapping detections back to the original images, not from the model."""
    data = load_coco(*odd_sizes, size=128)
    table = {}
    for i in range(len(data)):
        image, masks, labels, _ = data[i]
        table[image.tobytes()] = dict(boxes=boxes_from_masks(masks).astype(np.float32), labels=labels, masks=masks,
                                      scores=np.linspace(0.99, 0.9, len(labels)).astype(np.float32))
    monkeypatch.setattr(MaskRCNN, "predict", lambda self, images: [dict(table[im.tobytes()]) for im in images])


def test_split_held_out_is_seeded_disjoint_and_complete():
    train, held = split_held_out(50, 0.1, seed=3)
    assert len(held) == 5 and len(train) == 45
    assert not set(train) & set(held) and set(train) | set(held) == set(range(50))
    again, _ = split_held_out(50, 0.1, seed=3)
    other, held_other = split_held_out(50, 0.1, seed=4)
    np.testing.assert_array_equal(train, again)
    assert set(held_other) != set(held)
    assert len(split_held_out(3, 0.01, 0)[1]) == 1        # at least one image held out ...
    assert len(split_held_out(2, 0.9, 0)[0]) == 1         # ... and at least one left to train on
    assert len(split_held_out(5, 0.0, 0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_held_out(5, 1.0, 0)


def test_held_out_images_never_train_and_training_ap_equals_evaluate(tmp_path, odd_sizes, perfect_model, capsys):
    ann, images = odd_sizes
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--coco-gt", ann, "--images", images, "--steps", "2",
                 "--batch-size", "2", "--val-fraction", "0.3", "--eval-every", "1000"]) == 0
    assert "7 training images, 3 images held out for validation" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    held = summary["validation"]["held_out_image_ids"]
    config = load_checkpoint(run / "model.npz")["config"]
    assert len(held) == 3 and config["data"]["held_out"] == held
    data = open_data(config["data"], ModelConfig.from_dict(config["model"]), TrainConfig.from_dict(config["train"]))
    train_ids, val_ids = set(data.train_set.dataset.image_ids), set(data.val_set.dataset.image_ids)
    assert val_ids == set(held) and len(train_ids) == 7 and not train_ids & val_ids
    # every image a batch draws over a whole epoch is a training image
    seen = {img.tobytes() for s in range(4) for img, *_ in data.batch(s, 2)}
    train_images = {data.train_set[i][0].tobytes() for i in range(7)}
    assert seen <= train_images and len(seen) == 7

    assert main(["evaluate", "--checkpoint", str(run / "model.npz"), "--coco-gt", str(run / "val.json"),
                 "--images", images, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated == summary["metrics"]                   # to the digit
    assert evaluated["box_AP"] > 0.9 and evaluated["mask_AP"] > 0.8, evaluated


def test_non_square_images_of_several_sizes_are_scored_on_the_originals(odd_sizes, perfect_model):
    """The resized ground truth, mapped back, scores as the originals: a wrong scale or a mask left at 128 px
    would not."""
    from mrcnn_edu.evaluate import evaluate_coco
    data = load_coco(*odd_sizes, size=128)
    metrics, results, _ = evaluate_coco(MaskRCNN.__new__(MaskRCNN), data)
    assert metrics["box_AP50"] == pytest.approx(1.0) and metrics["box_AP"] > 0.9, metrics
    assert metrics["mask_AP50"] == pytest.approx(1.0) and metrics["mask_AP"] > 0.8, metrics
    sizes = {img["id"]: (img["height"], img["width"]) for img in data.images}
    for r in results:   # masks come back at each image's own size, boxes inside it
        assert tuple(r["segmentation"]["size"]) == sizes[r["image_id"]]
        x, y, w, h = r["bbox"]
        assert x >= 0 and y >= 0 and x + w <= sizes[r["image_id"]][1] + 1e-3 and y + h <= sizes[r["image_id"]][0] + 1e-3


def test_a_separate_validation_set(tmp_path, odd_sizes, perfect_model, capsys):
    ann, images = odd_sizes
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--coco-gt", ann, "--images", images, "--val-coco-gt", ann,
                 "--val-images-dir", images, "--steps", "1", "--batch-size", "2", "--eval-every", "1000"]) == 0
    assert "validating on " in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["validation"]["kind"] == "separate" and not (run / "val.json").exists()
    assert main(["evaluate", "--checkpoint", str(run / "model.npz"), "--coco-gt", ann, "--images", images,
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary["metrics"]


def test_a_run_folder_is_never_overwritten_without_being_asked(tmp_path, cli_error, capsys):
    run = str(tmp_path / "run")
    quick = ["--steps", "1", "--batch-size", "1", "--val-images", "2", "--eval-every", "1000"]
    assert main(["train", "--out", run, *quick]) == 0
    before = (tmp_path / "run" / "model.npz").read_bytes()
    code, err = cli_error(["train", "--out", run, *quick, "--seed", "1"])
    assert code == 1 and "holds a run already" in err and "--resume" in err and "--overwrite" in err
    assert (tmp_path / "run" / "model.npz").read_bytes() == before
    (tmp_path / "run" / "checkpoint.npz.abc123.tmp").write_bytes(b"half a checkpoint")
    assert main(["train", "--out", run, *quick, "--seed", "1", "--overwrite"]) == 0
    assert (tmp_path / "run" / "model.npz").read_bytes() != before
    assert not list((tmp_path / "run").glob("*.tmp"))
    code, err = cli_error(["train", "--out", "", *quick])
    assert code == 2 and "--out" in err


def test_resume_keeps_the_runs_settings_extends_steps_and_refuses_what_it_cannot_apply(tmp_path, cli_error, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--out", run, "--steps", "2", "--batch-size", "1", "--val-images", "2", "--lr", "1e-3",
                 "--eval-every", "1000"]) == 0
    for flag, value in (("--lr", "0.01"), ("--batch-size", "2"), ("--seed", "3"), ("--mask-loss", "softmax")):
        code, err = cli_error(["train", "--out", run, "--resume", flag, value])
        assert code == 2 and err.startswith(f"mrcnn-edu train: {flag}: the run in {run} has"), err
    code, err = cli_error(["train", "--out", run, "--resume", "--no-fpn"])
    assert code == 2 and "--no-fpn" in err
    code, err = cli_error(["train", "--out", run, "--resume", "--steps", "1"])
    assert code == 2 and "at step 2 already" in err
    assert main(["train", "--out", run, "--resume", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "--steps 3: the run goes on from step 2 to 3" in out
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert saved["step"] == 3 and saved["config"]["train"]["lr"] == 1e-3 and saved["config"]["train"]["steps"] == 3
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # the wall time of the training steps goes on across the resume (the end-of-run evaluation and validation
    # losses come after the last checkpoint, whose time the resumed run starts from)
    seconds = [r["seconds"] for r in records if "loss" in r]
    assert len(seconds) == 2 and seconds == sorted(seconds)   # steps 2 and 3 (the last step of each run)


def test_resume_remembers_the_data_source(tmp_path, odd_sizes, cli_error, capsys):
    ann, images = odd_sizes
    coco_run, shapes_run = str(tmp_path / "coco"), str(tmp_path / "shapes")
    assert main(["train", "--out", coco_run, "--coco-gt", ann, "--images", images, "--steps", "1",
                 "--batch-size", "1", "--eval-every", "1000", "--checkpoint-every", "1"]) == 0
    names = load_checkpoint(tmp_path / "coco" / "model.npz")["config"]["class_names"]
    assert main(["train", "--out", coco_run, "--resume", "--steps", "2"]) == 0
    assert f"resuming on {ann}" in capsys.readouterr().out
    config = load_checkpoint(tmp_path / "coco" / "model.npz")["config"]
    assert config["class_names"] == names and config["data"]["coco_gt"] == ann and config["train"]["flip"]
    assert main(["train", "--out", shapes_run, "--steps", "1", "--batch-size", "1", "--val-images", "2",
                 "--eval-every", "1000"]) == 0
    code, err = cli_error(["train", "--out", shapes_run, "--resume", "--coco-gt", ann, "--images", images])
    assert code == 2 and "trains on shapes" in err
