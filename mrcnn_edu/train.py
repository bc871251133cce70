"""Stage 8: training Mask R-CNN on shapes (or any COCO data set), with everything a run needs to be trusted.

``train(out_dir, ...)`` runs ``TrainConfig.steps`` steps of AdamW with warmup and cosine decay and writes into
``out_dir``:

* ``model.npz``       final weights and config (what ``evaluate`` and ``predict`` take)
* ``checkpoint.npz``  the resumable state: weights, optimizer, step, config, the data source and the wall time
  so far (written atomically every ``checkpoint_every`` steps, on Ctrl-C, and at the end)
* ``metrics.jsonl``   one JSON line per logged step (losses, learning rate, images/s), per evaluation (AP), per
  validation-loss evaluation (``val_losses``: the five losses and their sum on ``val_loss_images`` validation
  images, forward only) and per norms record (``norms``: each layer's weight and gradient norm, ``weights.py``)
* ``curves.png``      training and validation losses, and validation AP, against steps
* ``predictions.png`` a grid of validation images with the model's instances
* ``summary.json``    the final metrics, the times, and which images were held out for validation
* ``val.json``        (own data split by ``val_fraction``) the held-out images' annotations, so that
  ``mrcnn-edu evaluate --coco-gt <run>/val.json --images DIR`` prints the same AP as training did

The batch of step ``s``, its augmentation and the samplers' random numbers are functions of ``(seed, s)``
alone, so a run that is stopped (Ctrl-C, or killed outright) and resumed ends exactly where an uninterrupted
run ends (the validation losses' samplers draw from a generator of their own, and they change nothing the
training reads). A loss or gradient that turns NaN or inf stops the run with a message and leaves the last good
checkpoint in place. A folder that holds a run is never trained into again unless ``resume`` (continue it)
or ``overwrite`` (replace it) says so.
"""
from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import backend
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate_coco
from .inference import predict_in_batches
from .model import MaskRCNN, ModelConfig
from .optim import AdamW, WarmupCosineLR, clip_grad_norm, lay_end_to_end
from .weights import layer_norms, norms_record

__all__ = ["TrainConfig", "PRESETS", "train", "TrainingDiverged", "RunExistsError", "open_data", "ShapesData",
           "CocoData", "split_held_out", "check_run_folder", "step_memory_mb", "check_memory", "validation_losses",
           "RUN_FILES", "VAL_LOSS_KEYS"]

# what a run writes into its folder: ``overwrite`` removes these and nothing else
RUN_FILES = ("model.npz", "checkpoint.npz", "metrics.jsonl", "summary.json", "curves.png", "predictions.png",
             "val.json")


@dataclass
class TrainConfig:
    """The optimization and data settings (saved with every checkpoint)."""
    steps: int = 4400
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr: float = 2e-5
    clip_grad_norm: float = 10.0
    eval_every: int = 1000
    val_images: int = 200                     # shapes: the size of the validation split
    val_fraction: float = 0.1                 # own data without a validation set: the share held out
    flip: bool = False                        # augmentation: random horizontal flips
    scale_jitter: tuple = ()                  # augmentation: () or (lo, hi), the content scaled by U(lo, hi)
    checkpoint_every: int = 250
    log_every: int = 10
    norms_every: int = 100                    # steps between per-layer weight and gradient norms (0: off)
    val_loss_every: int = 250                 # steps between validation losses, also logged at the end (0: off)
    val_loss_images: int = 64                 # validation images those losses average over (0: off)
    seed: int = 0

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()
                      if k in cls.__dataclass_fields__})


# ``mrcnn-edu train --preset NAME``: model and training settings chosen together for one purpose, measured in
# benchmarks/RESULTS.md ("Five minutes of training"). A flag given beside the preset wins over it.
PRESETS = {
    "5min": dict(
        what="mask AP 0.85 on the shapes in about five minutes on 2 CPU cores: a slimmer FPN and mask head, a "
             "shorter schedule at a higher learning rate, the validation AP at the end only",
        model=dict(fpn_channels=32, mask_channels=32),       # the default's are 64
        train=dict(steps=3800, lr=3e-3, val_loss_every=0),   # and eval_every = steps: the AP at the end only
    ),
}


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or inf; the last good checkpoint is kept."""


class RunExistsError(ValueError):
    """The output folder holds a run, and neither ``resume`` nor ``overwrite`` was asked for."""


def _to_targets(masks, class_ids):
    """The batch's targets, as the model takes them: host arrays, which it checks on the host (no wait for the
    device) before it sends each field of the batch to the device in one transfer (``inputs.check_targets``)."""
    from .data.shapes import boxes_from_masks
    return [dict(boxes=boxes_from_masks(m), labels=c, masks=m) for m, c in zip(masks, class_ids)]


# ------------------------------------------------------------------------------------------ the data
class ShapesData:
    """The shapes training stream of a seed (batch of step s = samples s B .. (s + 1) B - 1) and its
    fixed validation split."""

    def __init__(self, seed, size, val_images):
        from .data.shapes import CLASS_NAMES, ShapesDataset, validation_set
        from .evaluate import shapes_ground_truth
        self.stream = ShapesDataset(seed, size, "train")
        self.validation = validation_set(val_images, seed, size)
        self.coco_gt = shapes_ground_truth(self.validation)
        self.class_names = CLASS_NAMES
        self.spec = {"kind": "shapes"}

    def batch(self, step, batch_size):
        return [self.stream[i] for i in range(step * batch_size, (step + 1) * batch_size)]

    def validation_samples(self, count):
        """The first ``count`` validation samples ``(image, masks, class_ids)`` (the validation losses')."""
        return self.validation[:count]

    def evaluate(self, model, batch_size=16):
        """``(metrics, detections, images)`` of the model on the validation split."""
        from .evaluate import coco_evaluate, detections_to_coco
        images = [s[0] for s in self.validation]
        detections = predict_in_batches(model, images, batch_size)
        results = []
        for i, d in enumerate(detections):
            results += detections_to_coco(i + 1, d["boxes"], d["scores"], d["labels"], d["masks"])
        metrics = coco_evaluate(self.coco_gt, results)
        return {k: v for k, v in metrics.items() if not k.endswith("_stats")}, detections, images


class _Cached:
    """A ``CocoDataset`` whose samples are read (and resized) once, then kept in memory (S x S images are
    small: 48 KiB at 128 px), so an epoch over a few hundred large photos decodes each only once."""

    def __init__(self, dataset):
        self.dataset, self._samples = dataset, {}
        self.coco, self.category_ids, self.class_names = dataset.coco, dataset.category_ids, dataset.class_names

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        if index not in self._samples:
            self._samples[index] = self.dataset[index]
        return self._samples[index]

    def image_info(self, index):
        return self.dataset.image_info(index)


def split_held_out(num_images, fraction, seed):
    """Which images of a data set train and which are held out for validation.

    Returns ``(train, held_out)``: sorted int arrays of positions in ``0..num_images - 1``, disjoint, together
    all of them. ``round(fraction * num_images)`` images are held out (at least one when ``fraction > 0``,
    and at least one image is left to train on), drawn by a generator of ``(seed, "held out")`` alone.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {fraction!r}")
    count = 0 if fraction == 0 else min(max(1, round(fraction * num_images)), num_images - 1)
    order = np.random.default_rng([seed, 0x5EED]).permutation(num_images)
    return np.sort(order[count:]), np.sort(order[:count])


class CocoData:
    """Own data: a training set (shuffled batches by step, a new permutation every epoch from ``(seed,
    epoch)``) and a validation set scored exactly as ``mrcnn-edu evaluate`` scores it (``evaluate_coco``:
    at the original image sizes, through pycocotools)."""

    def __init__(self, train_set, val_set, seed, spec):
        self.train_set, self.val_set = _Cached(train_set), (None if val_set is None else _Cached(val_set))
        self.seed, self.spec, self.class_names = seed, spec, train_set.class_names

    def batch(self, step, batch_size):
        indices = self.train_set.dataset.batch_indices(step, batch_size, self.seed)
        return [self.train_set[i][:3] for i in indices]

    def validation_samples(self, count):
        """The first ``count`` validation samples ``(image, masks, class_ids)`` (none without a validation set)."""
        if self.val_set is None:
            return []
        return [self.val_set[i][:3] for i in range(min(count, len(self.val_set)))]

    def evaluate(self, model, batch_size=16):
        if self.val_set is None:
            return None, [], []
        metrics, _, detections = evaluate_coco(model, self.val_set, batch_size)
        return metrics, detections, [self.val_set[i][0] for i in range(len(self.val_set))]


def open_data(spec, model_config, train_config):
    """The data source a run trains on, from its description ``spec`` (saved in every checkpoint):

    ``{"kind": "shapes"}``, or ``{"kind": "coco", "coco_gt": G, "images": D}`` plus either
    ``"val_coco_gt": G2, "val_images_dir": D2`` (a separate validation set) or ``"held_out"``: the ids of
    G's images kept for validation (None: draw ``train_config.val_fraction`` of them now, and fill them in).
    """
    from .data.coco import DatasetError, load_coco
    if spec["kind"] == "shapes":
        return ShapesData(train_config.seed, model_config.image_size, train_config.val_images)
    size = model_config.image_size
    full = load_coco(spec["coco_gt"], spec["images"], size=size)
    if spec.get("val_coco_gt"):
        val = load_coco(spec["val_coco_gt"], spec["val_images_dir"], size=size)
        if val.class_names != full.class_names:
            raise DatasetError(f"{spec['val_coco_gt']}: its categories {list(val.class_names[1:])} differ from "
                               f"{spec['coco_gt']}'s {list(full.class_names[1:])}")
        return CocoData(full, val, train_config.seed, spec)
    ids = list(full.image_ids)
    if spec.get("held_out") is None:
        train_pos, val_pos = split_held_out(len(ids), train_config.val_fraction, train_config.seed)
        spec = dict(spec, held_out=[ids[i] for i in val_pos])
    else:
        position = {image_id: i for i, image_id in enumerate(ids)}
        missing = [i for i in spec["held_out"] if i not in position]
        if missing:
            raise DatasetError(f"{spec['coco_gt']}: the run held out images {missing[:3]} that the file no "
                               "longer has")
        val_pos = np.array(sorted(position[i] for i in spec["held_out"]), dtype=np.int64)
        train_pos = np.setdiff1d(np.arange(len(ids)), val_pos)
    val = full.subset(val_pos.tolist()) if len(val_pos) else None
    return CocoData(full.subset(train_pos.tolist()), val, train_config.seed, spec)


def _write_val_json(data, path):
    """The held-out images' annotations as a COCO file (``evaluate --coco-gt`` on it = training's AP)."""
    gt = data.val_set.coco.dataset
    path.write_text(json.dumps({k: gt[k] for k in ("images", "annotations", "categories")}))


# ------------------------------------------------------------------------------------------ memory
STEP_MEMORY_FIXED_MB = 60      # the part of ``step_memory_mb`` that does not grow with the batch


def step_memory_mb(model_config, batch_size):
    """About how much memory one training step needs, in MiB (host memory on NumPy).

    A fit of the measured peaks of the shapes model at 128, 256 and 512 px, with the RoI counts that
    ``shapes_model_settings`` scales with the image (``benchmarks/own_data.py``; the numbers are in
    ``benchmarks/RESULTS.md``, "Own data"): a fixed cost, and per image a part for the heads, which grows with
    their RoIs (``roi_batch``, 64 by default; ``mask_rois_per_image`` grows alike), and a part that grows with
    the image's pixels.
    """
    heads = model_config.roi_batch / 64
    pixels = (model_config.image_size / 128) ** 2
    return STEP_MEMORY_FIXED_MB + batch_size * (12 * heads + 10.5 * pixels)


def _free_memory_mb():
    """Memory the machine can still give, in MiB (None where it cannot be read)."""
    if backend.name == "cupy":
        return backend.xp.cuda.Device().mem_info[0] / 2 ** 20
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


# the share of the free memory a step may plan on: the estimate is a fit, and the rest of the machine moves
MEMORY_MARGIN = 0.75


def check_memory(model_config, batch_size):
    """Refuse, before the first step, a batch that cannot fit in the memory there is (with a margin)."""
    need, free = step_memory_mb(model_config, batch_size), _free_memory_mb()
    if free is not None and need > MEMORY_MARGIN * free:
        fits = max(0, int((MEMORY_MARGIN * free - STEP_MEMORY_FIXED_MB) / (need - STEP_MEMORY_FIXED_MB)
                          * batch_size))
        raise MemoryError(f"--batch-size {batch_size}: a step of {batch_size} images of {model_config.image_size} "
                          f"px needs about {need / 1024:.1f} GiB, and {free / 1024:.1f} GiB is free; use "
                          f"--batch-size {fits} or less")


# ------------------------------------------------------------------------------------------ the log
def _log(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# the keys of a ``val_losses`` record, in the order of the training records' parts
VAL_LOSS_KEYS = ("loss", "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
# the validation losses' samplers draw from a generator of ``(seed, VAL_LOSS_STREAM)``, the same at every
# evaluation (the curve then moves with the model alone) and apart from every training step's ``(seed, step, 1)``
VAL_LOSS_STREAM = 0x7A1


def validation_losses(model, samples, rng, batch_size=4):
    """The training losses on validation samples, forward only (``MaskRCNN.losses``): no gradient, no cache.

    samples    : ``(image H x W x 3 uint8, masks G x H x W bool, class_ids G)`` tuples, H = W = image_size
    rng        : the samplers' generator (a run gives one of its own, never the training steps')
    batch_size : images a forward pass (small, so that the peak memory stays that of a training step)
    Returns ``{key: mean over the images}`` for ``VAL_LOSS_KEYS`` (each batch's losses weighted by its size).
    """
    totals = dict.fromkeys(VAL_LOSS_KEYS, 0.0)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = np.stack([s[0] for s in chunk])
        losses = model.losses(images, _to_targets([s[1] for s in chunk], [s[2] for s in chunk]), rng)
        for key in VAL_LOSS_KEYS:
            totals[key] += losses[key] * len(chunk)
    return {key: total / len(samples) for key, total in totals.items()}


def _read_log(path):
    """The records of ``metrics.jsonl``; a last line cut off by a killed process is skipped."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# ------------------------------------------------------------------------------------------ the run folder
def check_run_folder(out, resume=False, overwrite=False):
    """Refuse a folder that holds a run (``checkpoint.npz`` or ``model.npz``) unless the run is resumed or
    overwritten, a file where a folder should be, and an empty name. Changes nothing."""
    if str(out) == "":
        raise ValueError("--out: empty; give the run a folder of its own, e.g. runs/mine")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    held = [f for f in ("checkpoint.npz", "model.npz") if (out / f).exists()]
    if held and not resume and not overwrite:
        raise RunExistsError(f"--out {out}: holds a run already ({', '.join(held)}); continue it with --resume, "
                             "replace it with --overwrite, or train into another --out")
    return out


def _prepare_folder(out, resume, overwrite):
    """``check_run_folder``, then remove what killed runs left behind (``*.npz.*.tmp``) and, with
    ``overwrite``, the old run's files."""
    out = check_run_folder(out, resume, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.npz.*.tmp"):
        stale.unlink()
    if overwrite and not resume:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)


def _saved_run(ckpt_path):
    """The config of the checkpoint to resume from (its settings, data source and wall time so far)."""
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path}: nothing to resume (no checkpoint in {ckpt_path.parent})")
    return load_checkpoint(ckpt_path)["config"]


class _SaveGuard:
    """While the checkpoint of an interrupted run is written, a second Ctrl-C says so instead of breaking
    the write off (which would leave the run without the steps since the last checkpoint)."""

    def __enter__(self):
        def still_saving(signum, frame):
            print("\nstill saving the checkpoint; it takes a moment", flush=True)
        try:
            self.previous = signal.signal(signal.SIGINT, still_saving)
        except ValueError:   # not the main thread: signals cannot be caught here
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# ------------------------------------------------------------------------------------------ training
def train(out_dir, model_config=None, train_config=None, resume=False, data=None, class_names=None,
          progress=True, overwrite=False):
    """Train (or, with ``resume``, continue training) and write the run's files into ``out_dir``.

    data        : None for the shapes data set (or, resumed, whatever the run trained on), a loaded
                  ``data.coco.CocoDataset`` (resized to the model's ``image_size``; ``val_fraction`` of it is
                  held out), or an ``open_data`` source
    resume      : continue the run in ``out_dir``; its model, data and settings come from the checkpoint.
                  A ``train_config`` passed too replaces the saved one (``mrcnn-edu train --resume`` lets
                  only the safe settings differ: more ``steps``, ``eval_every``, ``checkpoint_every``, ...)
    overwrite   : replace a run that ``out_dir`` holds (refused otherwise)
    Returns a summary dict (final metrics, wall time, seconds per step, held-out images). Raises
    ``TrainingDiverged`` on a NaN or inf loss or gradient; ``KeyboardInterrupt`` (Ctrl-C) is caught: a
    checkpoint is saved and the summary says ``interrupted``.
    """
    from .visualize import predictions_figure, save, training_curves_figure

    out = Path(out_dir)
    ckpt_path, log_path = out / "checkpoint.npz", out / "metrics.jsonl"
    mcfg, tcfg, spec, seconds_before = model_config or ModelConfig(), train_config or TrainConfig(), None, 0.0
    if resume:
        saved = _saved_run(ckpt_path)
        mcfg = ModelConfig.from_dict(saved["model"])
        tcfg = train_config or TrainConfig.from_dict(saved["train"])
        spec = saved.get("data", {"kind": "shapes"})
        seconds_before = saved.get("run", {}).get("seconds", 0.0)
    check_memory(mcfg, tcfg.batch_size)
    _prepare_folder(out_dir, resume, overwrite)
    if data is None:
        source = open_data(spec or {"kind": "shapes"}, mcfg, tcfg)
    elif hasattr(data, "batch"):
        source = data
    else:   # a CocoDataset: hold out val_fraction of it
        source = CocoData(*_split_dataset(data, tcfg), tcfg.seed, {"kind": "coco", "coco_gt": str(data.ann_file),
                                                                 "images": str(data.image_dir)})
    model = MaskRCNN(mcfg, rng=np.random.default_rng(tcfg.seed))
    model.flatten_parameters()        # AdamW then updates one array in place
    opt = AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    schedule = WarmupCosineLR(tcfg.lr, tcfg.steps, tcfg.warmup_steps, min_lr=tcfg.min_lr)
    config = dict(model=mcfg.to_dict(), train=asdict(tcfg), class_names=list(class_names or source.class_names),
                  data=source.spec, run=dict(seconds=seconds_before))
    step, saved_step = 0, None
    if resume:
        step = saved_step = load_checkpoint(ckpt_path, model.parameters(), opt)["step"]
        # drop log lines past the checkpoint: the resumed run writes them again
        kept = [r for r in _read_log(log_path) if r["step"] <= step]
        log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    elif log_path.exists():
        log_path.unlink()
    if getattr(source, "val_set", None) is not None and "held_out" in source.spec:
        _write_val_json(source, out / "val.json")
    val_samples = source.validation_samples(tcfg.val_loss_images) if tcfg.val_loss_every else []

    backend.keep_freed_memory()      # the step's temporaries reused, not faulted in afresh each step
    start_time, start_step, interrupted = time.perf_counter(), step, False

    def seconds():
        return round(seconds_before + time.perf_counter() - start_time, 1)

    def checkpoint(at):
        nonlocal saved_step
        config["run"]["seconds"] = seconds()
        save_checkpoint(ckpt_path, model.parameters(), opt, step=at, config=config)
        saved_step = at

    def log_val_losses():
        if val_samples:
            losses = validation_losses(model, val_samples, np.random.default_rng([tcfg.seed, VAL_LOSS_STREAM]))
            _log(log_path, dict(step=step, seconds=seconds(), val_losses={k: round(v, 6) for k, v in losses.items()}))

    def diverged(what):
        kept = (f"The last good checkpoint is {ckpt_path} (step {saved_step})" if saved_step is not None else
                f"No checkpoint was written yet (the first comes at step {tcfg.checkpoint_every})")
        return TrainingDiverged(f"step {step}: {what}; stopped. {kept}. Lower --lr or check the data")

    bar = tqdm(total=tcfg.steps, initial=step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        while step < tcfg.steps:
            samples = _augment(source.batch(step, tcfg.batch_size), tcfg, step)
            images = np.stack([s[0] for s in samples])
            targets = _to_targets([s[1] for s in samples], [s[2] for s in samples])
            opt.lr = schedule(step)
            model.zero_grad()
            with np.errstate(over="ignore", invalid="ignore"):   # a diverging step is caught just below
                losses = model.loss_and_backward(images, targets, np.random.default_rng([tcfg.seed, step, 1]))
            if not all(math.isfinite(v) for v in losses.values()):
                raise diverged(f"the loss is {losses['loss']} ({losses})")
            grads = lay_end_to_end(model.gradients(), opt.params)   # one array: clipping and AdamW take it whole
            # this step's per-layer gradient norms, taken before clipping scales every layer alike
            # (and at the last step, so that a run shorter than norms_every has its norms too)
            last = step + 1 == tcfg.steps and tcfg.norms_every > 0
            grad_norms = layer_norms(grads) if _due(step + 1, tcfg.norms_every) or last else None
            try:
                grad_norm = clip_grad_norm(grads, tcfg.clip_grad_norm)
            except FloatingPointError:
                raise diverged("the gradient norm is not finite (the learning rate is far too high?)") from None
            opt.step(grads)
            step += 1
            bar.update(1)
            elapsed = time.perf_counter() - start_time
            rate = (step - start_step) * tcfg.batch_size / max(elapsed, 1e-9)
            if step % tcfg.log_every == 0 or step == tcfg.steps:
                bar.set_postfix(loss=f"{losses['loss']:.3f}", mask=f"{losses['loss_mask']:.3f}",
                                cls=f"{losses['loss_classifier']:.3f}", img_s=f"{rate:.1f}")
                _log(log_path, dict(step=step, seconds=seconds(), lr=opt.lr, grad_norm=grad_norm,
                                    images_per_s=rate, **{k: round(v, 6) for k, v in losses.items()}))
            if grad_norms is not None:   # the weights after this step's update, the gradient that made it
                _log(log_path, dict(step=step, seconds=seconds(),
                                    norms=norms_record(layer_norms(model.parameters()), grad_norms)))
            if step % tcfg.checkpoint_every == 0:
                checkpoint(step)
            if _due(step, tcfg.val_loss_every) and step < tcfg.steps:
                log_val_losses()
            if step % tcfg.eval_every == 0 and step < tcfg.steps:
                metrics, _, _ = source.evaluate(model)
                if metrics is not None:
                    _log(log_path, dict(step=step, seconds=seconds(), eval=metrics))
                    bar.write(f"step {step}: mask AP {metrics['mask_AP']:.3f}, box AP {metrics['box_AP']:.3f}")
    except KeyboardInterrupt:
        interrupted = True
        with _SaveGuard():
            checkpoint(step)
        bar.write(f"interrupted at step {step}: checkpoint saved to {ckpt_path}; continue with --resume")
    finally:
        bar.close()
    train_seconds = time.perf_counter() - start_time
    if interrupted:
        return dict(interrupted=True, step=step, checkpoint=str(ckpt_path))

    checkpoint(step)
    save_checkpoint(out / "model.npz", model.parameters(), step=step, config=config)
    log_val_losses()
    metrics, detections, images = source.evaluate(model)
    if metrics is not None:
        _log(log_path, dict(step=step, seconds=seconds(), eval=metrics))
    save(training_curves_figure(_read_log(log_path)), out / "curves.png")
    if images:
        save(predictions_figure(images[:12], detections[:12], config["class_names"]), out / "predictions.png")
    summary = dict(step=step, train_seconds=round(seconds_before + train_seconds, 1),
                   seconds_per_step=round(train_seconds / max(step - start_step, 1), 4),
                   peak_memory_mb=_peak_memory_mb(), metrics=metrics, validation=_validation_of(source))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _due(step, every):
    """Whether a record taken every ``every`` steps (0: never) falls on ``step``."""
    return every > 0 and step % every == 0


def _split_dataset(dataset, tcfg):
    train_pos, val_pos = split_held_out(len(dataset), tcfg.val_fraction, tcfg.seed)
    return dataset.subset(train_pos.tolist()), (dataset.subset(val_pos.tolist()) if len(val_pos) else None)


def _augment(samples, tcfg, step):
    """The batch's samples flipped and scaled as ``tcfg`` asks, by a generator of ``(seed, step)`` alone."""
    if not tcfg.flip and not tcfg.scale_jitter:
        return samples
    from .data.augment import augment
    rng = np.random.default_rng([tcfg.seed, step, 2])
    return [augment(image, masks, class_ids, rng, flip=tcfg.flip, scale_range=tcfg.scale_jitter or None)
            for image, masks, class_ids in samples]


def _validation_of(source):
    """What the run was scored on, for ``summary.json``."""
    spec = source.spec
    if spec["kind"] == "shapes":
        return dict(kind="shapes", images=len(source.validation))
    if spec.get("val_coco_gt"):
        return dict(kind="separate", coco_gt=spec["val_coco_gt"], images=spec["val_images_dir"])
    return dict(kind="held out", coco_gt=spec["coco_gt"], held_out_image_ids=spec.get("held_out", []),
                file="val.json" if spec.get("held_out") else None)


def _peak_memory_mb():
    """The process's peak resident memory in MiB (None where the OS does not say)."""
    try:
        import resource
        import sys
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        return None
