"""``mrcnn-edu train --preset 5min``: the settings it stands for, flags beside it winning, and a run made with it.
(Whether it reaches its mask AP in five minutes is measured in benchmarks/RESULTS.md, never in a test.)"""
import json

import pytest

from mrcnn_edu.checkpoint import load_checkpoint
from mrcnn_edu.cli import _new_run, build_parser, main
from mrcnn_edu.model import ModelConfig
from mrcnn_edu.train import PRESETS, TrainConfig


def new_run(*argv):
    return _new_run(build_parser().parse_args(["train", *argv]))


def test_the_command_line_offers_every_preset_and_only_those():
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "preset")
    assert sorted(train.choices) == sorted(PRESETS)


def test_5min_sets_its_model_and_schedule_evaluates_once_and_says_so(capsys):
    mcfg, tcfg, _ = new_run("--preset", "5min")
    preset = PRESETS["5min"]
    assert (mcfg.fpn_channels, mcfg.mask_channels) == (32, 32) != (ModelConfig().fpn_channels,
                                                                  ModelConfig().mask_channels)
    assert {f: getattr(mcfg, f) for f in preset["model"]} == preset["model"]
    assert {f: getattr(tcfg, f) for f in preset["train"]} == preset["train"]
    assert tcfg.steps < TrainConfig().steps and tcfg.eval_every == tcfg.steps and tcfg.val_loss_every == 0
    # everything the preset does not name stays the default
    untouched = set(vars(ModelConfig())) - set(preset["model"])
    assert {f: getattr(mcfg, f) for f in untouched} == {f: getattr(ModelConfig(), f) for f in untouched}
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("--preset 5min: ") and f"steps={tcfg.steps}" in out


def test_a_flag_beside_the_preset_wins_and_the_line_says_which(capsys):
    mcfg, tcfg, _ = new_run("--preset", "5min", "--steps", "500", "--lr", "1e-3")
    assert (tcfg.steps, tcfg.eval_every, tcfg.lr, mcfg.mask_channels) == (500, 500, 1e-3, 32)
    assert "(--steps given wins)" in capsys.readouterr().out
    _, tcfg, _ = new_run("--preset", "5min", "--eval-every", "100")
    assert tcfg.eval_every == 100


def test_without_the_preset_nothing_changes(capsys):
    mcfg, tcfg, _ = new_run()
    assert vars(mcfg) == vars(ModelConfig()) and vars(tcfg) == vars(TrainConfig())
    assert capsys.readouterr().out == ""


def test_a_preset_on_resume_is_refused_in_one_line(tmp_path, cli_error):
    code, err = cli_error(["train", "--out", str(tmp_path / "run"), "--preset", "5min", "--resume"])
    assert code == 2 and "--preset: a resumed run keeps the settings it started with" in err, err
    assert not (tmp_path / "run").exists()


def test_an_unknown_preset_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--out", str(tmp_path / "run"), "--preset", "1min"])
    assert stop.value.code == 2 and "argument --preset: invalid choice: '1min'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_made_with_the_preset_keeps_its_model_in_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "5min", "--steps", "2", "--batch-size", "1", "--val-images", "2",
                 "--out", str(out)]) == 0
    saved = load_checkpoint(out / "model.npz")["config"]["model"]
    assert (saved["fpn_channels"], saved["mask_channels"]) == (32, 32)
    # the validation AP once, at the end
    assert [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "eval" in r] == [2]
