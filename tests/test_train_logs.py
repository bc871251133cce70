"""What training writes to metrics.jsonl besides the losses: per-layer weight and gradient norms (``weights.py``)
and the validation losses (``MaskRCNN.losses``, forward only), checked against numbers computed by hand from
the run's checkpoints; a resumed run logs what an uninterrupted one logs; curves.png draws the validation losses."""
import json
import math

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.checkpoint import load_checkpoint
from mrcnn_edu.cli import main
from mrcnn_edu.data.shapes import validation_set
from mrcnn_edu.inference import load_model
from mrcnn_edu.model import MaskRCNN, ModelConfig
from mrcnn_edu.train import VAL_LOSS_KEYS, VAL_LOSS_STREAM, ShapesData, TrainConfig, _to_targets, train
from mrcnn_edu.visualize import training_curves_figure
from mrcnn_edu.weights import layer_norms, layer_of, norms_over_training, norms_record

SMALL = ModelConfig(image_size=64, channels=(8, 8, 16, 16), groups=4, fpn_channels=16, anchor_sizes=(48.0, 64.0),
                    box_hidden=32, mask_channels=8, mask_convs=1, roi_batch=16)
# 6 steps; norms at 3 and 6; validation losses at 5 and at the end (6), on 5 images: a batch of 4 and one of 1
LOGGED = dict(steps=6, batch_size=2, eval_every=1000, val_images=5, checkpoint_every=2, log_every=1, norms_every=3,
              val_loss_every=5, val_loss_images=5)


def records_of(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def by_step(records, kind):
    return {r["step"]: r[kind] for r in records if kind in r}


def norms_by_hand(arrays):
    """{layer: sqrt(sum of squares of its arrays)}, from the parameter names of a checkpoint."""
    sums = {}
    for name, a in arrays.items():
        layer = name.rsplit(".", 1)[0]
        sums[layer] = sums.get(layer, 0.0) + float(np.sum(np.asarray(a, dtype=np.float64) ** 2))
    return {layer: math.sqrt(s) for layer, s in sums.items()}


def small_batch(n=2, seed=0):
    samples = validation_set(n, seed, SMALL.image_size)
    return np.stack([s[0] for s in samples]), _to_targets([s[1] for s in samples], [s[2] for s in samples])


# ---------------------------------------------------------------------------------------------- the model
def test_losses_equal_loss_and_backward_and_touch_no_gradient_or_cache():
    model = MaskRCNN(SMALL, rng=np.random.default_rng(0))
    images, targets = small_batch()
    forward_only = model.losses(images, targets, np.random.default_rng(5))
    assert model.gradients() == {} and not any(m._caches for m in model.modules())
    assert model.training
    trained = model.loss_and_backward(images, targets, np.random.default_rng(5))
    assert forward_only == trained                        # same samplers' draws, same maths
    assert set(trained) == set(VAL_LOSS_KEYS) and trained["loss"] > 0
    held = {k: v.copy() for k, v in model.gradients().items()}
    again = model.losses(images, targets, np.random.default_rng(6))
    assert again != trained                               # another rng samples other anchors and RoIs
    assert model.gradients().keys() == held.keys()
    for name, g in model.gradients().items():
        np.testing.assert_array_equal(backend.to_host(g), backend.to_host(held[name]), err_msg=name)
    model.eval()
    model.losses(images, targets, np.random.default_rng(5))
    assert not model.training                             # the mode it was in is given back


def test_losses_checks_its_inputs_like_loss_and_backward():
    model = MaskRCNN(SMALL, rng=np.random.default_rng(0))
    images, targets = small_batch()
    with pytest.raises(ValueError, match="targets: expected one dict per image"):
        model.losses(images, targets[:1], np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------- weights.py
def test_layer_norms_group_a_layers_parameters(xp):
    arrays = {"head.fc.weight": xp.asarray([[3.0, 4.0]], dtype=xp.float32),
              "head.fc.bias": xp.asarray([12.0], dtype=xp.float32), "scale": xp.asarray([-2.0])}
    assert layer_norms(arrays) == {"head.fc": pytest.approx(13.0), "scale": pytest.approx(2.0)}
    assert [layer_of(n) for n in arrays] == ["head.fc", "head.fc", "scale"]
    with pytest.raises(TypeError, match="arrays: expected a dict"):
        layer_norms([xp.zeros(2)])


def test_norms_record_gives_a_layer_without_gradient_zero():
    assert norms_record({"a": 2.0, "b": 3.0}, {"a": 0.5}) == {"a": {"weight": 2.0, "grad": 0.5},
                                                                "b": {"weight": 3.0, "grad": 0.0}}


def test_norms_over_training_reads_the_norms_records_back():
    records = [{"step": 10, "loss": 1.0},
               {"step": 10, "seconds": 1.0,
                "norms": {"a": {"weight": 1.0, "grad": 0.1}, "b": {"weight": 2.0, "grad": 0.2}}},
               {"step": 20, "seconds": 2.0, "val_losses": {"loss": 1.0}},
               {"step": 20, "seconds": 2.0, "norms": {"a": {"weight": 1.5, "grad": 0.3}}}]
    steps, norms = norms_over_training(records)
    np.testing.assert_array_equal(steps, [10, 20])
    assert list(norms) == ["a", "b"]
    np.testing.assert_array_equal(norms["a"]["weight"], [1.0, 1.5])
    np.testing.assert_array_equal(norms["a"]["grad"], [0.1, 0.3])
    np.testing.assert_array_equal(norms["b"]["grad"], [0.2, np.nan])
    steps, norms = norms_over_training(records[:1])
    assert steps.shape == (0,) and norms == {}
    with pytest.raises(ValueError, match="records: a norms record needs 'step'"):
        norms_over_training([{"norms": {}}])


# ---------------------------------------------------------------------------------------------- the run's log
def test_logged_norms_and_val_losses_equal_the_checkpoints_and_survive_a_resume(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(straight, SMALL, TrainConfig(**LOGGED), progress=False)
    records = records_of(straight)
    norms, val = by_step(records, "norms"), by_step(records, "val_losses")
    assert sorted(norms) == [3, 6] and sorted(val) == [5, 6]
    assert all(list(v) == list(VAL_LOSS_KEYS) for v in val.values())
    for v in val.values():
        assert v["loss"] == pytest.approx(sum(v[k] for k in VAL_LOSS_KEYS[1:]), abs=1e-5)

    # the weights of step 6 are model.npz's
    final = load_checkpoint(straight / "model.npz")["params"]
    assert set(norms[6]) == set(norms_by_hand(final))
    for layer, expected in norms_by_hand(final).items():
        assert norms[6][layer]["weight"] == pytest.approx(expected, rel=1e-9), layer

    # the validation losses of step 6: model.npz on the first 5 validation images, batches of 4 and 1
    model, _ = load_model(straight / "model.npz")
    samples, rng = validation_set(5, 0, SMALL.image_size), np.random.default_rng([0, VAL_LOSS_STREAM])
    parts = [(len(chunk), model.losses(np.stack([s[0] for s in chunk]),
                                       _to_targets([s[1] for s in chunk], [s[2] for s in chunk]), rng))
             for chunk in (samples[:4], samples[4:])]
    for key in VAL_LOSS_KEYS:
        assert val[6][key] == pytest.approx(sum(n * p[key] for n, p in parts) / 5, abs=2e-6), key

    # a run stopped after step 5 (Ctrl-C in step 6) holds the weights that made step 6's gradient
    calls, original = {"n": 0}, MaskRCNN.loss_and_backward

    def ctrl_c_in_step_6(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MaskRCNN, "loss_and_backward", ctrl_c_in_step_6)
    resumed = tmp_path / "resumed"
    assert train(resumed, SMALL, TrainConfig(**LOGGED), progress=False)["interrupted"]
    monkeypatch.setattr(MaskRCNN, "loss_and_backward", original)
    model, _ = load_model(resumed / "checkpoint.npz")
    model.train()
    samples = ShapesData(0, SMALL.image_size, 5).batch(5, 2)
    model.loss_and_backward(np.stack([s[0] for s in samples]), _to_targets([s[1] for s in samples],
                                                                           [s[2] for s in samples]),
                            np.random.default_rng([0, 5, 1]))
    for layer, expected in norms_by_hand({k: backend.to_host(g) for k, g in model.gradients().items()}).items():
        assert norms[6][layer]["grad"] == pytest.approx(expected, rel=1e-6), layer

    # resumed, the run logs each record once, and the same numbers as the uninterrupted run
    train(resumed, resume=True, progress=False)
    again = records_of(resumed)
    for kind in ("norms", "val_losses"):
        steps = [r["step"] for r in again if kind in r]
        assert steps == sorted(set(steps)), (kind, steps)
        assert by_step(again, kind) == by_step(records, kind), kind


def test_the_logs_change_nothing_of_the_training_and_zero_turns_them_off(tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    quick = dict(LOGGED, steps=3, checkpoint_every=1000, norms_every=1, val_loss_every=1)
    train(on, SMALL, TrainConfig(**quick), progress=False)
    train(off, SMALL, TrainConfig(**dict(quick, norms_every=0, val_loss_every=0)), progress=False)
    a, b = load_checkpoint(on / "model.npz")["params"], load_checkpoint(off / "model.npz")["params"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert sorted(by_step(records_of(on), "norms")) == [1, 2, 3]
    assert sorted(by_step(records_of(on), "val_losses")) == [1, 2, 3]
    assert not [r for r in records_of(off) if "norms" in r or "val_losses" in r]
    no_images = tmp_path / "no_images"
    train(no_images, SMALL, TrainConfig(**dict(quick, steps=1, val_loss_images=0)), progress=False)
    assert not by_step(records_of(no_images), "val_losses")


# ---------------------------------------------------------------------------------------------- the figure
def test_curves_draw_the_validation_losses_beside_the_training_losses():
    import matplotlib.pyplot as plt
    records = [dict(step=s, **{k: 2.0 / s for k in VAL_LOSS_KEYS}) for s in (10, 20, 30, 40)]
    records += [dict(step=s, seconds=1.0, val_losses={k: 3.0 / s + i for i, k in enumerate(VAL_LOSS_KEYS)})
                for s in (20, 40)]
    fig = training_curves_figure(records)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    for i, key in enumerate(VAL_LOSS_KEYS):
        line = lines[f"validation {key}"]
        np.testing.assert_array_equal(line.get_xdata(), [20, 40])
        np.testing.assert_allclose(line.get_ydata(), [3.0 / 20 + i, 3.0 / 40 + i])
        assert line.get_color() == lines[key].get_color() and line.get_linestyle() == "--"
    assert "validation" in fig.axes[0].get_title()
    plt.close(fig)
    fig = training_curves_figure(records[:4])
    assert not [line for line in fig.axes[0].get_lines() if line.get_label().startswith("validation")]
    plt.close(fig)


def test_a_run_evaluated_only_at_its_end_shows_its_ap_against_the_whole_run():
    """``--preset 5min`` evaluates once: its AP points sit at the last step of the losses' step axis."""
    import matplotlib.pyplot as plt
    records = [dict(step=s, **{k: 2.0 / s for k in VAL_LOSS_KEYS}) for s in range(10, 3810, 10)]
    ap = {f"{kind}_{key}": 0.8 for kind in ("mask", "box") for key in ("AP", "AP50", "AP75")}
    fig = training_curves_figure(records + [dict(step=3800, seconds=1.0, eval=ap)])
    losses, aps = fig.axes
    assert aps.get_xlim() == losses.get_xlim() and aps.get_xlim()[0] < 100 < 3800 <= aps.get_xlim()[1]
    mask_ap = next(line for line in aps.get_lines() if line.get_label() == "mask AP")
    np.testing.assert_array_equal(mask_ap.get_xdata(), [3800])
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- the flags
@pytest.mark.parametrize("flag", ["--norms-every", "--val-loss-every", "--val-loss-images"])
def test_train_refuses_a_negative_log_interval(tmp_path, cli_error, flag):
    code, line = cli_error(["train", "--out", tmp_path / "run", flag, "-1"])
    assert code == 2 and line == f"mrcnn-edu train: {flag}: expected an int >= 0, got -1"
    assert not (tmp_path / "run").exists()


def test_the_log_flags_set_the_run_and_may_change_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--val-images", "2", "--eval-every", "1000", "--batch-size", "1"]
    assert main(["train", "--out", str(run), "--steps", "2", *common, "--norms-every", "2", "--val-loss-every", "1",
                 "--val-loss-images", "2"]) == 0
    saved = load_checkpoint(run / "checkpoint.npz")["config"]["train"]
    assert (saved["norms_every"], saved["val_loss_every"], saved["val_loss_images"]) == (2, 1, 2)
    assert main(["train", "--out", str(run), "--resume", "--steps", "3", "--norms-every", "1",
                 "--val-loss-every", "0"]) == 0
    saved = load_checkpoint(run / "checkpoint.npz")["config"]["train"]
    assert (saved["norms_every"], saved["val_loss_every"]) == (1, 0)
    records = records_of(run)
    assert sorted(by_step(records, "norms")) == [2, 3]
    assert sorted(by_step(records, "val_losses")) == [1, 2]   # step 2 was the first run's end; off after


def test_a_run_shorter_than_norms_every_logs_its_norms_at_the_end(tmp_path):
    train(tmp_path / "run", SMALL, TrainConfig(**dict(LOGGED, steps=4, norms_every=100, checkpoint_every=1000)),
          progress=False)
    norms = by_step(records_of(tmp_path / "run"), "norms")
    assert list(norms) == [4]
    weights = {layer: v["weight"] for layer, v in norms[4].items()}
    by_hand = norms_by_hand(load_checkpoint(tmp_path / "run" / "model.npz")["params"])
    assert weights.keys() == by_hand.keys()
    assert all(math.isclose(weights[k], by_hand[k], rel_tol=1e-5) for k in by_hand)
