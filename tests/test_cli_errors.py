"""Every failure of the command line is one line that names the flag or file as the user wrote it: exit
status 2 for a flag the command cannot use, 1 for everything else; never a traceback."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mrcnn_edu import checkpoint
from mrcnn_edu.checkpoint import load_checkpoint, save_checkpoint
from mrcnn_edu.cli import main
from mrcnn_edu.model import MaskRCNN, ModelConfig
from mrcnn_edu.train import TrainConfig, step_memory_mb, train

QUICK = ["--steps", "1", "--batch-size", "1", "--val-images", "2", "--eval-every", "1000"]


@pytest.mark.parametrize("flags, named", [
    (["--steps", "0"], "--steps: expected an int >= 1, got 0"),
    (["--val-images", "-1"], "--val-images: expected an int >= 1, got -1"),
    (["--batch-size", "0"], "--batch-size: expected an int >= 1, got 0"),
    (["--eval-every", "0"], "--eval-every: expected an int >= 1, got 0"),
    (["--checkpoint-every", "0"], "--checkpoint-every: expected an int >= 1"),
    (["--seed", "-2"], "--seed: expected an int >= 0"),
    (["--lr", "nan"], "--lr: expected a finite number > 0, got nan"),
    (["--lr", "-1"], "--lr: expected a finite number > 0"),
    (["--box-loss-weight", "inf"], "--box-loss-weight"),
    (["--val-fraction", "1"], "--val-fraction: expected a number in [0, 1)"),
    (["--image-size", "100"], "--image-size: expected a multiple of the backbone's stride 16"),
    (["--anchor-sizes", "40", "0"], "--anchor-sizes: expected a finite number > 0, got 0.0"),
    (["--anchor-ratios", "nan"], "--anchor-ratios"),
    (["--scale-jitter", "1.2", "0.8"], "--scale-jitter: expected LO HI with 0 < LO <= HI"),
    (["--out", ""], "--out: empty"),
    (["--resume", "--overwrite"], "choose one"),
])
def test_bad_train_flags_are_refused_before_anything_runs(tmp_path, cli_error, capsys, flags, named):
    argv = ["train", "--out", str(tmp_path / "run"), *flags]
    code, err = cli_error(argv)
    assert code == 2 and named in err, err
    assert not (tmp_path / "run").exists()


def test_backend_after_the_subcommand_and_bad_backends(tmp_path, cli_error, capsys):
    code, err = cli_error(["train", "--backend", "numpy", "--out", str(tmp_path / "r"), "--steps", "0"])
    assert code == 2 and "--steps" in err            # --backend was taken, the next flag checked
    for env in ("foo", "cupy"):
        run = subprocess.run([sys.executable, "-m", "mrcnn_edu", "demo", "--out", str(tmp_path / "d")],
                             capture_output=True, text=True, env=dict(os.environ, MRCNN_EDU_BACKEND=env))
        lines = run.stderr.strip().splitlines()
        if env == "cupy" and run.returncode == 0:   # a machine with a GPU
            continue
        assert run.returncode == 2 and "MRCNN_EDU_BACKEND" in lines[-1] and "Traceback" not in run.stderr, run.stderr


def test_a_batch_that_cannot_fit_is_refused_up_front(tmp_path, cli_error, capsys):
    code, err = cli_error(["train", "--out", str(tmp_path / "r"), "--batch-size", "100000"])
    assert code == 1 and err.startswith("mrcnn-edu train: --batch-size 100000: a step of 100000 images"), err
    assert "--batch-size" in err.split("use")[-1] and not (tmp_path / "r").exists()
    # the fit against the peaks measured by benchmarks/own_data.py (RESULTS.md, "Own data"), the shapes
    # model with shapes_model_settings' RoI counts: 16 images of 128 px, 4 of 256 px, 4 of 512 px
    from mrcnn_edu.data.shapes import shapes_model_settings
    for batch, size, measured in ((16, 128, 423), (4, 256, 328), (4, 512, 921)):
        assert step_memory_mb(ModelConfig(**shapes_model_settings(size)), batch) == pytest.approx(measured, rel=0.05)


def test_a_diverged_run_says_which_checkpoint_is_left(tmp_path, cli_error, capsys, monkeypatch):
    code, err = cli_error(["train", "--out", str(tmp_path / "r"), *QUICK[2:], "--steps", "20", "--lr", "1e4"])
    assert code == 1 and "stopped" in err and "No checkpoint was written yet" in err, err
    original = MaskRCNN.loss_and_backward
    calls = {"n": 0}

    def nan_at_step_3(self, *args, **kwargs):
        calls["n"] += 1
        losses = original(self, *args, **kwargs)
        if calls["n"] == 4:
            losses["loss"] = float("nan")
        return losses

    monkeypatch.setattr(MaskRCNN, "loss_and_backward", nan_at_step_3)
    code, err = cli_error(["train", "--out", str(tmp_path / "s"), *QUICK[2:], "--steps", "6", "--checkpoint-every",
                          "2"])
    ckpt = tmp_path / "s" / "checkpoint.npz"
    assert code == 1 and "step 3: the loss is nan" in err and f"{ckpt} (step 2)" in err, err
    assert load_checkpoint(ckpt)["step"] == 2


def test_a_second_ctrl_c_while_saving_says_so_and_the_checkpoint_is_written(tmp_path, capsys, monkeypatch):
    original_loss, original_save = MaskRCNN.loss_and_backward, checkpoint.save_checkpoint

    def ctrl_c(self, *args, **kwargs):
        raise KeyboardInterrupt

    def save_with_a_second_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)     # the user presses Ctrl-C again while it saves
        return original_save(*args, **kwargs)

    monkeypatch.setattr(MaskRCNN, "loss_and_backward", ctrl_c)
    monkeypatch.setattr("mrcnn_edu.train.save_checkpoint", save_with_a_second_ctrl_c)
    assert main(["train", "--out", str(tmp_path / "r"), *QUICK]) == 130
    printed = capsys.readouterr().out
    assert "still saving the checkpoint" in printed and "interrupted at step 0" in printed
    assert load_checkpoint(tmp_path / "r" / "checkpoint.npz")["step"] == 0
    monkeypatch.setattr(MaskRCNN, "loss_and_backward", original_loss)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    train(root / "run", ModelConfig(), TrainConfig(steps=1, batch_size=1, val_images=2, eval_every=1000),
          progress=False)
    return root / "run" / "model.npz"


def test_checkpoint_errors(tmp_path, cli_error, capsys, model_file):
    code, err = cli_error(["evaluate", "--checkpoint", str(tmp_path)])
    assert code == 1 and str(tmp_path) in err and "folder" in err
    saved = load_checkpoint(model_file)
    params = {k: v.copy() for k, v in saved["params"].items()}
    name = sorted(params)[0]
    params[name].flat[0] = np.nan
    save_checkpoint(tmp_path / "nan.npz", params, step=1, config=saved["config"])
    code, err = cli_error(["predict", "--checkpoint", str(tmp_path / "nan.npz"), str(tmp_path / "x.png"),
                          "--out", str(tmp_path / "p")])
    assert code == 1 and "nan.npz" in err and name in err, err


def test_evaluating_on_other_classes_is_refused(tmp_path, cli_error, capsys, model_file):
    from mrcnn_edu.data.shapes import export_shapes
    ann, images = export_shapes(tmp_path / "coco", 2, seed=1)
    data = json.loads(ann.read_text())
    for c in data["categories"]:
        c["name"] = {"square": "cat", "circle": "dog"}.get(c["name"], c["name"])
    (tmp_path / "other.json").write_text(json.dumps(data))
    code, err = cli_error(["evaluate", "--checkpoint", str(model_file), "--coco-gt", str(tmp_path / "other.json"),
                          "--images", str(images)])
    assert code == 1 and "differ from the model's" in err and "cat" in err
    # the same classes under other ids (square <-> circle): detections are mapped by name
    swapped = json.loads(ann.read_text())
    swap = {1: 2, 2: 1, 3: 3}
    for c in swapped["categories"]:
        c["name"] = {"square": "circle", "circle": "square"}.get(c["name"], c["name"])
    for a in swapped["annotations"]:
        a["category_id"] = swap[a["category_id"]]
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    assert main(["evaluate", "--checkpoint", str(model_file), "--coco-gt", str(ann), "--images", str(images),
                 "--results", str(tmp_path / "r1.json"), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", "--checkpoint", str(model_file), "--coco-gt", str(tmp_path / "swapped.json"),
                 "--images", str(images), "--results", str(tmp_path / "r2.json"), "--json"]) == 0
    printed = capsys.readouterr().out
    assert "mapped by class name" in printed
    assert json.loads(printed.strip().splitlines()[-1]) == plain
    r1, r2 = (json.loads((tmp_path / f).read_text()) for f in ("r1.json", "r2.json"))
    assert len(r1) == len(r2) > 0
    assert [swap[r["category_id"]] for r in r1] == [r["category_id"] for r in r2]


def test_predict_skips_what_it_cannot_read_and_never_overwrites_its_outputs(tmp_path, cli_error, capsys, model_file):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    rng = np.random.default_rng(0)
    for folder in (a, b):
        Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(folder / "img.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(model_file), str(a / "img.png"), str(tmp_path / "broken.png"),
            str(b / "img.png"), "--out", str(out), "--score-threshold", "0"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "skipped" in captured.err
    assert sorted(p.name for p in out.glob("*.png")) == ["a_img_instances.png", "b_img_instances.png"]
    written = json.loads((out / "detections.json").read_text())
    assert {r["file_name"] for r in written} <= {str(a / "img.png"), str(b / "img.png")}
    for r in written:      # on the original 60 x 90 image
        assert r["segmentation"]["size"] == [60, 90]
        assert r["bbox"][2] > 0 and r["bbox"][3] > 0
    code, err = cli_error(argv)
    assert code == 2 and "--overwrite" in err
    code, err = cli_error([*argv[:-2], "--score-threshold", "nan", "--overwrite"])
    assert code == 2 and "--score-threshold: expected a number in [0, 1], got nan" in err
