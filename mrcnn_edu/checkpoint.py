"""Checkpoints: parameters, optimizer state, step, random-generator state and config in one ``.npz`` file.

Host-only file I/O (arrays go through ``backend.to_host`` on the way out and onto each parameter's array
module on the way in). Three properties matter more than the format:

* **Atomic.** The file is written under a temporary name in the same folder, flushed to disk, then
  renamed over the target (``os.replace``, atomic on POSIX and Windows). An interrupt (Ctrl-C, a full
  disk, a killed job) leaves the previous checkpoint intact, never a half-written one.
* **Safe to load.** ``numpy.load(..., allow_pickle=False)``: the file holds only plain arrays and JSON
  text, so opening a checkpoint from elsewhere cannot run code.
* **Loud when wrong.** A truncated or corrupt file, a folder or a file that is not a checkpoint, one made
  for another model (other parameter names or shapes, e.g. another number of classes, another optimizer),
  or one whose parameters hold NaN or inf (written by a run that diverged) raises ``CheckpointError``
  naming the file and what is wrong, and changes nothing in the model.

Layout of the ``.npz``: ``format`` (a version tag), ``step`` (int64), ``config`` (JSON text),
``rng`` (JSON text of a ``numpy.random.Generator``'s state, or empty), ``param/<name>`` per parameter,
``optim/meta`` (JSON: optimizer type, settings, step counts) and ``optim/<slot>/<name>`` per state array.
Resuming restores all of it, so the next step is bit-for-bit the step the interrupted run would have taken.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
import zlib

import numpy

from . import backend

__all__ = ["FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint"]

FORMAT = "mrcnn-edu checkpoint 1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, not a checkpoint, or made for another model."""


# ----------------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------------

def save_checkpoint(path, params, optimizer=None, step=0, rng=None, config=None):
    """Write a checkpoint to ``path`` atomically; returns ``path``.

    params : dict name -> array (``model.parameters()``), NumPy or CuPy;
    optimizer : an ``mrcnn_edu.optim`` optimizer or None; step : the number of steps done (int);
    rng : a ``numpy.random.Generator`` whose state to save, or None; config : a JSON-serializable dict
    (model and training settings, class names) or None.
    """
    arrays = {"format": numpy.array(FORMAT), "step": numpy.array(int(step), dtype=numpy.int64),
              "config": numpy.array(_to_json(config or {}, "config")), "rng": numpy.array(_rng_state(rng))}
    for name, p in params.items():
        arrays["param/" + name] = backend.to_host(p)
    if optimizer is not None:
        state = optimizer.state_dict()
        meta = {"type": state["type"], "t": state["t"], "counts": state["counts"], "hyper": state["hyper"]}
        arrays["optim/meta"] = numpy.array(_to_json(meta, "optimizer settings"))
        for slot, values in state["slots"].items():
            for name, value in values.items():
                arrays[f"optim/{slot}/{name}"] = backend.to_host(value)
    _write_atomically(path, arrays)
    return path


def _to_json(value, what):
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what}: must be JSON-serializable to go into a checkpoint ({err})") from None


def _rng_state(rng):
    if rng is None:
        return ""
    state = getattr(getattr(rng, "bit_generator", None), "state", None)
    if not isinstance(state, dict):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return _to_json(state, "rng")


def _write_atomically(path, arrays):
    """``numpy.savez`` to a temporary file beside ``path``, fsync, then rename it over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            numpy.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)                                  # mkstemp's 0600 would hide it from others
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):                       # make the rename itself durable (POSIX)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ----------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------

def load_checkpoint(path, params=None, optimizer=None, rng=None, expect_config=None):
    """Read the checkpoint at ``path`` and restore what is passed in; returns ``{"step", "config", "params"}``.

    params : dict name -> array to overwrite in place (``model.parameters()``); every name must be in the
    file with the same shape, and the file may hold no others. optimizer : restored with its state and
    settings. rng : a ``numpy.random.Generator`` whose state is restored. expect_config : a dict whose
    keys, where the file's config has them too, must hold equal values (e.g. ``{"num_classes": 4}``).
    All checks run before anything is changed. The returned ``params`` are the file's host arrays; a file
    whose parameters hold NaN or inf is refused whether or not ``params`` is given.
    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` for any other problem.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(_folder_message(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    data = _read_arrays(path)
    step, config, rng_state = _read_header(path, data)
    saved = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
    _check_finite(path, saved)
    if expect_config:
        _check_config(path, config, expect_config)
    if params is not None:
        _check_params(path, saved, params)
    optim_state = _optimizer_state(path, data, optimizer) if optimizer is not None else None
    if rng is not None:
        _check_rng_state(path, rng, rng_state)
    # everything checked: now change the model, the optimizer and the generator
    if params is not None:
        for name, p in params.items():
            p[...] = backend.get_array_module(p).asarray(saved[name], dtype=p.dtype)
    if optimizer is not None:
        optimizer.load_state_dict(optim_state)
    if rng is not None:
        rng.bit_generator.state = rng_state
    return {"step": step, "config": config, "params": saved}


def _folder_message(path):
    """What to say when a folder is passed (a run folder such as ``runs/shapes`` instead of its file)."""
    for name in ("model.npz", "checkpoint.npz"):                 # what ``train`` writes into a run folder
        inside = os.path.join(path, name)
        if os.path.isfile(inside):
            return f"{path}: is a folder, not a checkpoint file (expected e.g. {inside}, which it holds)"
    return f"{path}: is a folder, not a checkpoint file (expected e.g. runs/shapes/model.npz)"


def _read_arrays(path):
    """Every array in the file, read now (``NpzFile`` is lazy, and a corrupt member fails only when read)."""
    try:
        f = numpy.load(path, allow_pickle=False)
        if not isinstance(f, numpy.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not a checkpoint (a single .npy array, not an .npz archive)")
        with f:
            return {k: f[k] for k in f.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint, it is truncated or corrupt "
                              f"({type(err).__name__}: {err})") from None


def _read_header(path, data):
    tag = data.get("format")
    if tag is None or tag.ndim != 0 or str(tag) != FORMAT:
        found = "no format tag" if tag is None else f"format {str(tag)!r}"
        raise CheckpointError(f"{path}: not an mrcnn-edu checkpoint ({found}, expected {FORMAT!r})")
    try:
        step = int(data["step"])
        config = json.loads(str(data["config"]))
        rng_text = str(data["rng"])
        rng_state = json.loads(rng_text) if rng_text else None
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged header ({type(err).__name__}: {err})") from None
    return step, config, rng_state


def _check_finite(path, saved):
    """Refuse NaN or inf in the file's parameters (in the file's order, so the first bad one is named)."""
    for name, value in saved.items():
        if value.dtype.kind in "fc" and not numpy.isfinite(value).all():
            what = "NaN" if numpy.isnan(value).any() else "inf"
            raise CheckpointError(f"{path}: parameter {name!r} holds {what}; the run that wrote it diverged")


def _check_config(path, config, expected):
    for key, value in expected.items():
        if key in config and config[key] != value:
            raise CheckpointError(f"{path}: made with {key} = {config[key]!r}, but this model has {value!r}")


def _check_params(path, saved, params):
    missing = sorted(set(params) - set(saved))
    extra = sorted(set(saved) - set(params))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} parameter(s) of the model, e.g. {missing[0]!r}")
        if extra:
            parts.append(f"has {len(extra)} parameter(s) the model lacks, e.g. {extra[0]!r}")
        raise CheckpointError(f"{path}: made for another model: it {' and '.join(parts)}")
    for name, p in params.items():
        if tuple(saved[name].shape) != tuple(p.shape):
            raise CheckpointError(f"{path}: parameter {name!r} has shape {tuple(saved[name].shape)} in the file "
                                  f"but {tuple(p.shape)} in the model (a model built with other settings, "
                                  f"e.g. another number of classes?)")


def _check_rng_state(path, rng, state):
    if not state:
        raise CheckpointError(f"{path}: holds no random-generator state to restore")
    try:
        type(rng.bit_generator)().state = state              # a scratch generator: rng itself unchanged
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: cannot restore the random generator ({err})") from None


def _optimizer_state(path, data, optimizer):
    """The optimizer's ``state_dict`` as saved, checked against ``optimizer`` (which is not changed)."""
    if "optim/meta" not in data:
        raise CheckpointError(f"{path}: holds no optimizer state to restore")
    try:
        state = json.loads(str(data["optim/meta"]))
        state["slots"] = {}
        for key, value in data.items():
            if key.startswith("optim/") and key != "optim/meta":
                _, slot, name = key.split("/", 2)
                state["slots"].setdefault(slot, {})[name] = value
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged optimizer state ({type(err).__name__}: {err})") from None
    try:
        optimizer.check_state_dict(state)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}") from None
    return state
