"""Checkpoints (mrcnn_edu/checkpoint.py): bit-exact round trip, exact resume, atomic writes, and clear errors
for missing, truncated, corrupt, foreign and mismatched files."""
import os
import zipfile

import numpy as np
import pytest

from mrcnn_edu import backend, checkpoint, nn, optim
from mrcnn_edu.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def host(a):
    return backend.to_host(a)


def make_model(seed=0, classes=3):
    gen = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, rng=gen), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, classes, rng=gen))


def train_step(model, opt, gen, xp):
    """One step on a random batch drawn from ``gen`` (so the generator's state matters for resuming)."""
    x = xp.asarray(gen.standard_normal((2, 2, 4, 4)), dtype=xp.float32)
    model.zero_grad()
    out = model(x)
    model.backward(out / out.size)                            # the gradient of mean(out^2) / 2
    optim.clip_grad_norm(model.gradients(), 1.0)
    opt.step(model.gradients())


@pytest.fixture
def trained(xp, tmp_path):
    """A model and an AdamW optimizer after 3 steps, saved with its generator to ckpt.npz."""
    model, gen = make_model(), np.random.default_rng(5)
    opt = optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(3):
        train_step(model, opt, gen, xp)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model.parameters(), opt, step=3, rng=gen, config={"num_classes": 3, "name": "toy"})
    return model, opt, gen, path


def test_round_trip_is_bit_exact(xp, trained):
    model, opt, gen, path = trained
    fresh, fresh_gen = make_model(seed=9), np.random.default_rng(0)
    fresh_opt = optim.AdamW(fresh.parameters(), lr=1.0)
    info = load_checkpoint(path, fresh.parameters(), fresh_opt, fresh_gen)
    assert info["step"] == 3 and info["config"] == {"num_classes": 3, "name": "toy"}
    for name, p in model.parameters().items():
        got = fresh.parameters()[name]
        assert got.dtype == p.dtype and type(got) is type(p)
        np.testing.assert_array_equal(host(got), host(p), err_msg=name)
    for slot in ("exp_avg", "exp_avg_sq"):
        for name, value in opt.state[slot].items():
            np.testing.assert_array_equal(host(fresh_opt.state[slot][name]), host(value), err_msg=f"{slot} {name}")
    assert (fresh_opt.t, fresh_opt.counts, fresh_opt.lr) == (opt.t, opt.counts, 0.01)
    assert fresh_gen.random() == gen.random()


def test_resume_takes_exactly_the_same_next_step(xp, trained):
    model, opt, gen, path = trained
    resumed, resumed_gen = make_model(seed=9), np.random.default_rng(0)
    resumed_opt = optim.AdamW(resumed.parameters(), lr=0.5)
    load_checkpoint(path, resumed.parameters(), resumed_opt, resumed_gen)
    for _ in range(2):
        train_step(model, opt, gen, xp)
        train_step(resumed, resumed_opt, resumed_gen, xp)
    for name, p in model.parameters().items():
        np.testing.assert_array_equal(host(resumed.parameters()[name]), host(p), err_msg=name)


def test_file_holds_plain_arrays_only(xp, trained):
    *_, path = trained
    with np.load(path, allow_pickle=False) as f:
        expected = {"format", "step", "config", "rng", "param/0.weight", "optim/meta", "optim/exp_avg/4.bias"}
        assert expected <= set(f.files)
        assert all(f[k].dtype != object for k in f.files)


def test_interrupted_save_keeps_the_previous_checkpoint(xp, trained, monkeypatch):
    model, opt, _, path = trained
    before = path.read_bytes()

    def savez_then_die(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.numpy, "savez", savez_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model.parameters(), opt, step=4)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["ckpt.npz"]                               # no temporary file left


def test_save_creates_the_folder_and_overwrites(xp, trained):
    model, opt, _, path = trained
    target = path.parent / "runs" / "a" / "last.npz"
    save_checkpoint(target, model.parameters(), step=1)
    save_checkpoint(target, model.parameters(), step=2)
    assert load_checkpoint(target)["step"] == 2


def test_missing_file(xp, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz: no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.npz")


def test_a_folder_is_not_a_checkpoint_file(xp, tmp_path):
    run = tmp_path / "shapes"
    run.mkdir()
    with pytest.raises(CheckpointError, match=r"shapes: is a folder, not a checkpoint file "
                                              r"\(expected e\.g\. runs/shapes/model\.npz\)$"):
        load_checkpoint(run)
    save_checkpoint(run / "model.npz", make_model().parameters())                 # a run folder: name its file
    with pytest.raises(CheckpointError, match=r"shapes: is a folder, not a checkpoint file "
                                              r"\(expected e\.g\. .*shapes/model\.npz, which it holds\)$"):
        load_checkpoint(run)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_parameters_are_refused_before_anything_changes(xp, tmp_path, bad):
    """A run that diverged can leave NaN or inf weights behind; loading them would only give NaN detections."""
    model = make_model()
    params = {name: host(p).copy() for name, p in model.parameters().items()}
    params["4.weight"][1, 7] = bad
    path = tmp_path / "diverged.npz"
    save_checkpoint(path, params, step=9)
    fresh = make_model(seed=3)
    before = {name: host(p).copy() for name, p in fresh.parameters().items()}
    what = "NaN" if np.isnan(bad) else "inf"
    with pytest.raises(CheckpointError, match=rf"diverged\.npz: parameter '4\.weight' holds {what}; "
                                              rf"the run that wrote it diverged"):
        load_checkpoint(path, fresh.parameters())
    for name, p in fresh.parameters().items():
        np.testing.assert_array_equal(host(p), before[name], err_msg=name)          # nothing half-loaded
    params["0.bias"][0] = np.nan                                                    # the first bad one is named
    save_checkpoint(path, params, step=9)
    with pytest.raises(CheckpointError, match=r"parameter '0\.bias' holds NaN"):
        load_checkpoint(path, fresh.parameters())


def test_truncated_file(xp, trained):
    model, _, _, path = trained
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = host(model.parameters()["0.weight"]).copy()
    with pytest.raises(CheckpointError, match=r"ckpt\.npz: cannot be read as a checkpoint, it is truncated or corrupt"):
        load_checkpoint(path, model.parameters())
    np.testing.assert_array_equal(host(model.parameters()["0.weight"]), before)


def test_corrupt_bytes_inside_a_member(xp, trained):
    model, _, _, path = trained
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("param/4.weight.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 200                   # inside the array's bytes
    data[start:start + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"ckpt\.npz: .*truncated or corrupt.*CRC"):
        load_checkpoint(path, model.parameters())


def test_not_a_checkpoint(xp, tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.npz: cannot be read as a checkpoint"):
        load_checkpoint(text)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.ones(3))
    with pytest.raises(CheckpointError, match="other.npz: not an mrcnn-edu checkpoint \\(no format tag"):
        load_checkpoint(other)
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(CheckpointError, match="single.npy: not a checkpoint"):
        load_checkpoint(single)


def test_pickled_content_is_refused(xp, tmp_path):
    """An object array would need pickle, which can run code: it is an error, not a load."""
    path = tmp_path / "evil.npz"
    np.savez(path, format=np.array(checkpoint.FORMAT), step=np.array(0), config=np.array("{}"), rng=np.array(""),
             **{"param/w": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="evil.npz: .*pickle"):
        load_checkpoint(path)


def test_other_number_of_classes(xp, trained):
    *_, path = trained
    other = make_model(classes=4)
    before = host(other.parameters()["0.weight"]).copy()
    with pytest.raises(CheckpointError, match=r"ckpt\.npz: parameter '4\.weight' has shape \(3, 64\) in the file "
                                              r"but \(4, 64\) in the model .*another number of classes"):
        load_checkpoint(path, other.parameters())
    np.testing.assert_array_equal(host(other.parameters()["0.weight"]), before)   # nothing half-loaded
    with pytest.raises(CheckpointError, match="ckpt.npz: made with num_classes = 3, but this model has 4"):
        load_checkpoint(path, expect_config={"num_classes": 4})


def test_other_parameter_names(xp, trained):
    *_, path = trained
    params = make_model().parameters()
    params["5.weight"] = params.pop("4.weight")
    with pytest.raises(CheckpointError, match=r"ckpt\.npz: made for another model: it lacks 1 parameter\(s\) of "
                                              r"the model, e.g. '5\.weight' and has 1 parameter\(s\) the model "
                                              r"lacks, e.g. '4\.weight'"):
        load_checkpoint(path, params)


def test_other_optimizer_or_missing_state(xp, trained, tmp_path):
    model, _, _, path = trained
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match="ckpt.npz: optimizer state: saved by AdamW, cannot load into SGD"):
        load_checkpoint(path, model.parameters(), sgd)
    bare = tmp_path / "bare.npz"
    save_checkpoint(bare, model.parameters())
    with pytest.raises(CheckpointError, match="bare.npz: holds no optimizer state"):
        load_checkpoint(bare, model.parameters(), sgd)
    with pytest.raises(CheckpointError, match="bare.npz: holds no random-generator state"):
        load_checkpoint(bare, rng=np.random.default_rng())
    with pytest.raises(CheckpointError, match="ckpt.npz: cannot restore the random generator"):
        load_checkpoint(path, rng=np.random.Generator(np.random.MT19937(0)))


def test_save_rejects_what_it_cannot_store(xp, tmp_path):
    params = make_model().parameters()
    with pytest.raises(TypeError, match="config: must be JSON-serializable"):
        save_checkpoint(tmp_path / "c.npz", params, config={"f": object()})
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        save_checkpoint(tmp_path / "c.npz", params, rng=42)
    assert os.listdir(tmp_path) == []
