"""`mrcnn-edu ablate`: every setting of the paper's Table 2 trains (a smoke run under MRCNN_EDU_FAST=1), one
table comes out, finished runs are reused, and the table lands between its markers without eating the prose."""
import json
import os

import pytest

from mrcnn_edu import ablate
from mrcnn_edu.cli import main
from mrcnn_edu.model import ModelConfig


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke ablation for the whole module (3 steps a setting, 4 validation images)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MRCNN_EDU_FAST", "1")
    root = tmp_path_factory.mktemp("ablate")
    table = root / "ablations.md"
    table.write_text("# Ablations\n\nprose before\n\n" + ablate.BEGIN + "\nold\n" + ablate.END + "\n\nprose after\n")
    assert main(["ablate", "--out", str(root / "runs"), "--table", str(table)]) == 0
    yield root, table
    mp.undo()


def test_every_setting_is_one_ordinary_training_run(smoke):
    root, _ = smoke
    runs = sorted(p.name for p in (root / "runs").iterdir())
    # the default model stands for the baseline of (b), (e) and the box loss: trained once
    assert runs == sorted({s.name for s in ablate.SETTINGS} - ablate.SAME_AS_DEFAULT)
    for s in ablate.SETTINGS:
        run = ablate._run_dir(root / "runs", s)
        saved = json.loads((run / "ablation.json").read_text())
        assert ModelConfig.from_dict(saved["model"]) == ModelConfig(**s.changes)
        assert saved["train"]["steps"] == 3
        summary = json.loads((run / "summary.json").read_text())
        assert 0.0 <= summary["metrics"]["mask_AP"] <= 1.0
        assert (run / "model.npz").exists() and (run / "curves.png").exists()


def test_the_table_has_every_setting_and_keeps_the_prose_around_it(smoke):
    _, table = smoke
    text = table.read_text()
    assert text.startswith("# Ablations\n\nprose before\n\n") and text.rstrip().endswith("prose after")
    assert "\nold\n" not in text and text.count(ablate.BEGIN) == 1
    rows = [line for line in text.splitlines() if line.startswith("| (") or line.startswith("| lecture")]
    assert [r.split(" | ")[1] for r in rows] == [s.name for s in ablate.SETTINGS]
    assert "| 24.8 |" in text and "| 23.6 | 28.2 |" in text   # the paper's numbers beside ours
    assert "3 steps x 2 images" in text


def test_finished_runs_are_reused_and_a_changed_budget_trains_again(smoke, capsys, monkeypatch):
    root, _ = smoke
    monkeypatch.setenv("MRCNN_EDU_FAST", "1")
    assert main(["ablate", "--out", str(root / "runs"), "--table", ""]) == 0
    out = capsys.readouterr().out
    assert "training" not in out and out.count("reusing the finished run") == len(ablate.SETTINGS)
    assert main(["ablate", "--out", str(root / "runs"), "--table-only", "--steps", "2", "--table", ""]) == 0
    assert "not run" in capsys.readouterr().out   # no run has a 2-step budget


def test_an_unknown_setting_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["ablate", "--out", str(tmp_path), "--only", "default,roi-warp"])
    assert "roi-warp" in capsys.readouterr().err


def test_the_verdict_compares_directions_with_the_paper():
    first, second = ablate.SETTINGS[4], ablate.SETTINGS[5]    # C5 RoIAlign, C5 RoIPool
    results = {first.name: dict(metrics=dict(mask_AP=0.5, box_AP=0.6)),
               second.name: dict(metrics=dict(mask_AP=0.4, box_AP=0.7))}
    verdict = ablate._verdict(results, first, second)
    assert verdict.startswith("yes: mask AP +10.0 (paper +7.3)") and "box AP -10.0 (no, paper +5.8)" in verdict


def test_train_takes_the_ablation_switches(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--batch-size", "1", "--val-images", "2",
                 "--roi-op", "pool", "--mask-loss", "softmax", "--box-loss", "giou", "--box-loss-weight", "3",
                 "--backbone-stride", "32"]) == 0
    from mrcnn_edu.checkpoint import load_checkpoint
    model = load_checkpoint(out / "model.npz")["config"]["model"]
    assert (model["roi_op"], model["mask_loss"], model["box_loss"], model["box_loss_weight"], model["backbone_stride"],
            model["fpn"]) == ("pool", "softmax", "giou", 3.0, 32, False)


def test_jobs_train_settings_in_parallel_processes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MRCNN_EDU_FAST", "1")
    out = tmp_path / "runs"
    # fcn-mask-head is the default run: three settings, two trainings, one process each
    assert main(["ablate", "--out", str(out), "--only", "default,softmax-mask-loss,fcn-mask-head", "--jobs", "2",
                 "--table", ""]) == 0
    printed = capsys.readouterr().out
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert printed.count(f"in its own process ({threads} BLAS thread(s))") == 2
    assert sorted(p.name for p in out.iterdir()) == ["default", "softmax-mask-loss"]
    for name, changes in (("default", {}), ("softmax-mask-loss", {"mask_loss": "softmax"})):
        saved = json.loads((out / name / "ablation.json").read_text())
        assert ModelConfig.from_dict(saved["model"]) == ModelConfig(**changes)
        assert 0.0 <= json.loads((out / name / "summary.json").read_text())["metrics"]["mask_AP"] <= 1.0
        assert "ablate: " in (out / name / "ablate.log").read_text()      # the process's own output
    rows = [line.split(" | ")[1] for line in printed.splitlines() if line.startswith("| (")]
    assert rows[:2] == ["default", "softmax-mask-loss"] and "not run" not in printed.split("| (b)")[1].split("\n")[0]
    # a second call finds both runs finished and starts no process
    assert main(["ablate", "--out", str(out), "--only", "default,softmax-mask-loss", "--jobs", "2", "--table", ""]) == 0
    assert "own process" not in capsys.readouterr().out


def test_jobs_below_one_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["ablate", "--out", str(tmp_path), "--jobs", "0"])
    assert "--jobs: expected 1 or more" in capsys.readouterr().err


def test_an_interrupted_ablation_says_how_to_go_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MRCNN_EDU_FAST", "1")
    monkeypatch.setattr(ablate, "train", lambda *args, **kwargs: {"interrupted": True})   # Ctrl-C in a run
    assert main(["ablate", "--out", str(tmp_path), "--only", "default", "--table", ""]) == 130
    assert "interrupted in default; run it again to continue" in capsys.readouterr().err
