"""Stage 8: training runs that can be trusted (resume, Ctrl-C, NaN guard), overfitting one image, and the
command line around them (train, evaluate, predict, export-shapes)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.checkpoint import load_checkpoint
from mrcnn_edu.cli import main
from mrcnn_edu.data.shapes import validation_set
from mrcnn_edu.model import MaskRCNN, ModelConfig
from mrcnn_edu.optim import AdamW
from mrcnn_edu.train import TrainConfig, TrainingDiverged, _to_targets, train

SMALL = ModelConfig(image_size=64, channels=(8, 8, 16, 16), groups=4, fpn_channels=16, anchor_sizes=(48.0, 64.0),
                    box_hidden=32, mask_channels=8, mask_convs=1, roi_batch=16)
QUICK = dict(steps=6, batch_size=2, eval_every=1000, val_images=3, checkpoint_every=2, log_every=1)


def params_of(path):
    return {k: v for k, v in load_checkpoint(path)["params"].items()}


def test_resumed_run_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    straight = train(tmp_path / "straight", SMALL, TrainConfig(**QUICK), progress=False)
    assert straight["step"] == 6

    calls = {"n": 0}
    original = MaskRCNN.loss_and_backward

    def ctrl_c_at_step_4(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MaskRCNN, "loss_and_backward", ctrl_c_at_step_4)
    stopped = train(tmp_path / "resumed", SMALL, TrainConfig(**QUICK), progress=False)
    assert stopped == dict(interrupted=True, step=4, checkpoint=str(tmp_path / "resumed" / "checkpoint.npz"))
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.npz")["step"] == 4
    monkeypatch.setattr(MaskRCNN, "loss_and_backward", original)
    train(tmp_path / "resumed", resume=True, progress=False)

    a, b = params_of(tmp_path / "straight" / "model.npz"), params_of(tmp_path / "resumed" / "model.npz")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    logged = [json.loads(x)["step"] for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert logged[:6] == [1, 2, 3, 4, 5, 6]  # no step logged twice after the resume
    for name in ("model.npz", "checkpoint.npz", "metrics.jsonl", "curves.png", "predictions.png", "summary.json"):
        assert (tmp_path / "straight" / name).stat().st_size > 0, name


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = MaskRCNN.loss_and_backward
    calls = {"n": 0}

    def nan_at_step_5(self, *args, **kwargs):
        calls["n"] += 1
        losses = original(self, *args, **kwargs)
        if calls["n"] == 5:
            losses["loss"] = float("nan")
        return losses

    monkeypatch.setattr(MaskRCNN, "loss_and_backward", nan_at_step_5)
    with pytest.raises(TrainingDiverged, match="step 4: the loss is nan"):
        train(tmp_path, SMALL, TrainConfig(**QUICK), progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.npz")["step"] == 4
    assert not (tmp_path / "model.npz").exists()


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tmp_path, resume=True, progress=False)


def test_overfitting_one_image_finds_its_objects():
    """One shapes image, trained on alone: every object is found, with mask IoU > 0.8."""
    image, masks, class_ids = validation_set(1, seed=3)[0]
    model = MaskRCNN(ModelConfig(), rng=np.random.default_rng(0))
    opt = AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    targets = _to_targets([masks], [class_ids])
    for step in range(120):
        model.zero_grad()
        model.loss_and_backward(image[None], targets, np.random.default_rng(step))
        opt.step(model.gradients())
    found = model.predict(image[None])[0]
    pred = backend.to_host(found["masks"])[backend.to_host(found["scores"]) > 0.5]
    labels = backend.to_host(found["labels"])[backend.to_host(found["scores"]) > 0.5]
    for m, c in zip(masks, class_ids):
        ious = [(m & p).sum() / (m | p).sum() for p in pred]
        best = int(np.argmax(ious)) if ious else None
        assert ious and ious[best] > 0.8, f"class {c}: best mask IoU {max(ious, default=0):.2f}"
        assert labels[best] == c


def test_cli_round_trip_export_then_evaluate_equals_the_builtin_split(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "1", "--val-images", "2",
                 "--eval-every", "1000"]) == 0
    model = str(tmp_path / "run" / "model.npz")
    assert main(["export-shapes", "--n", "3", "--seed", "5", "--out", str(tmp_path / "coco")]) == 0
    assert main(["evaluate", "--checkpoint", model, "--val-images", "3", "--seed", "5", "--json"]) == 0
    builtin = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", "--checkpoint", model, "--coco-gt", str(tmp_path / "coco" / "annotations.json"),
                 "--images", str(tmp_path / "coco" / "images"), "--results", str(tmp_path / "r.json"), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exported == pytest.approx(builtin)
    assert isinstance(json.loads((tmp_path / "r.json").read_text()), list)
    image = str(tmp_path / "coco" / "images" / "000000.png")
    assert main(["predict", "--checkpoint", model, image, "--out", str(tmp_path / "pred"),
                 "--score-threshold", "0"]) == 0
    assert (tmp_path / "pred" / "000000_instances.png").exists()
    assert isinstance(json.loads((tmp_path / "pred" / "detections.json").read_text()), list)


def test_cli_bad_files_give_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    (tmp_path / "images").mkdir()
    for argv, code, message in [
        (["evaluate", "--checkpoint", str(tmp_path / "missing.npz")], 1, "no such checkpoint file"),
        (["train", "--out", str(tmp_path / "r"), "--coco-gt", str(bad)], 2, "--coco-gt and --images go together"),
        (["train", "--out", str(tmp_path / "r"), "--coco-gt", str(bad), "--images", str(tmp_path / "images")],
         1, str(bad)),
    ]:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == code, err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_cli_trains_on_a_coco_data_set(tmp_path, capsys):
    """Bring your own data: a COCO export trains, evaluates and keeps its class names."""
    assert main(["export-shapes", "--n", "4", "--seed", "2", "--out", str(tmp_path / "coco")]) == 0
    ann, images = str(tmp_path / "coco" / "annotations.json"), str(tmp_path / "coco" / "images")
    assert main(["train", "--out", str(tmp_path / "run"), "--coco-gt", ann, "--images", images, "--steps", "2",
                 "--batch-size", "2", "--val-fraction", "0.25", "--eval-every", "1000"]) == 0
    assert "training on " + ann in capsys.readouterr().out
    config = load_checkpoint(tmp_path / "run" / "model.npz")["config"]
    assert config["class_names"] == ["background", "square", "circle", "triangle"]
    assert config["model"]["num_classes"] == 4


FREED_MEMORY_STEPS = """
import resource, sys
import numpy as np
from mrcnn_edu import backend
if sys.argv[1] == "keep":
    assert backend.keep_freed_memory()
def faults_a_step(n=10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):   # a step's worth of temporaries, allocated, then freed together
        kept = [np.ones(int(mib * 2 ** 18), np.float32) for mib in (6, 2, 9, 3, 12, 1, 5)]
        del kept
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n
faults_a_step(2)
print(faults_a_step())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_kept_freed_memory_is_reused_without_page_faults():
    """backend.keep_freed_memory: the 38 MiB that each "step" allocates and frees are not faulted in again."""
    def faults(mode):
        run = subprocess.run([sys.executable, "-c", FREED_MEMORY_STEPS, mode], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[1])
        return float(run.stdout.split()[-1])
    default, kept = faults("default"), faults("keep")
    assert kept <= 10 + default / 10, (default, kept)     # glibc 2.36: about 2,500 a step by default, 0 kept
