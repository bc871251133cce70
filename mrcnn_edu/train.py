"""Stage 8: training Mask R-CNN on shapes (or any COCO data set), with everything a run needs to be trusted.

``train(out_dir, ...)`` runs ``TrainConfig.steps`` steps of AdamW with warmup and cosine decay and writes into
``out_dir``:

* ``model.npz``       final weights and config (what ``evaluate`` and ``predict`` take)
* ``checkpoint.npz``  the resumable state: weights, optimizer, step, config (written atomically every
  ``checkpoint_every`` steps, on Ctrl-C, and at the end)
* ``metrics.jsonl``   one JSON line per logged step (losses, learning rate, images/s) and per evaluation (AP)
* ``curves.png``      loss parts and validation AP against steps
* ``predictions.png`` a grid of validation images with the model's instances

The batch of step ``s`` and the sampler's random numbers are functions of ``(seed, s)`` alone, so a run that
is stopped and resumed ends exactly where an uninterrupted run ends. A loss that turns NaN or inf stops the
run with a message and leaves the last good checkpoint in place.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import backend
from .checkpoint import load_checkpoint, save_checkpoint
from .model import MaskRCNN, ModelConfig
from .optim import AdamW, WarmupCosineLR, clip_grad_norm

__all__ = ["TrainConfig", "train", "predict_in_batches", "TrainingDiverged"]


@dataclass
class TrainConfig:
    """The optimization settings (saved with every checkpoint)."""
    steps: int = 4400
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr: float = 2e-5
    clip_grad_norm: float = 10.0
    eval_every: int = 1000
    val_images: int = 200
    checkpoint_every: int = 250
    log_every: int = 10
    seed: int = 0

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


def _to_targets(masks, class_ids):
    from .data.shapes import boxes_from_masks
    xp = backend.xp
    return [dict(boxes=xp.asarray(boxes_from_masks(m)), labels=xp.asarray(c), masks=xp.asarray(m))
            for m, c in zip(masks, class_ids)]


def predict_in_batches(model, images, batch_size=16):
    """``model.predict`` over a list/array of images, ``batch_size`` at a time, results moved to the host."""
    out = []
    for i in range(0, len(images), batch_size):
        for d in model.predict(np.stack(images[i:i + batch_size])):
            out.append({k: backend.to_host(v) for k, v in d.items()})
    return out


def _evaluate(model, val, coco_gt, batch_size=16):
    """COCO metrics of the model on validation samples whose ground truth has image ids 1..n."""
    from .evaluate import coco_evaluate, detections_to_coco
    detections = predict_in_batches(model, [s[0] for s in val], batch_size)
    results = []
    for i, d in enumerate(detections):
        results += detections_to_coco(i + 1, d["boxes"], d["scores"], d["labels"], d["masks"])
    metrics = coco_evaluate(coco_gt, results)
    return {k: v for k, v in metrics.items() if not k.endswith("_stats")}, detections


class ShapesData:
    """The shapes training stream of a seed (batch of step s = samples s B .. (s + 1) B - 1) and its
    fixed validation split."""

    def __init__(self, seed, size, val_images):
        from .data.shapes import CLASS_NAMES, ShapesDataset, validation_set
        self.stream = ShapesDataset(seed, size, "train")
        self.validation = validation_set(val_images, seed, size)
        self.class_names = CLASS_NAMES

    def batch(self, step, batch_size):
        return [self.stream[i] for i in range(step * batch_size, (step + 1) * batch_size)]


class CocoData:
    """A COCO-format data set (``data.coco.load_coco`` with ``size``): shuffled batches by step, and its
    first ``val_images`` images as the validation set shown during training (``evaluate`` scores any split)."""

    def __init__(self, dataset, seed, val_images):
        self.dataset, self.seed = dataset, seed
        self.validation = [dataset[i][:3] for i in range(min(val_images, len(dataset)))]
        self.class_names = dataset.class_names

    def batch(self, step, batch_size):
        images, masks, class_ids = next(self.dataset.batches(batch_size, self.seed, start=step))
        return list(zip(images, masks, class_ids))


def _log(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _read_log(path):
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def train(out_dir, model_config=None, train_config=None, resume=False, data=None, class_names=None,
          progress=True):
    """Train (or, with ``resume``, continue training) and write the run's files into ``out_dir``.

    data        : None for the shapes data set, or a loaded ``data.coco.CocoDataset`` (resized to the
                  model's ``image_size``)
    Returns a summary dict (final metrics, wall time, seconds per step). Raises ``TrainingDiverged`` on a
    NaN or inf loss; ``KeyboardInterrupt`` (Ctrl-C) is caught: a checkpoint is saved and the summary says
    ``interrupted``.
    """
    from .evaluate import shapes_ground_truth
    from .visualize import predictions_figure, save, training_curves_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / "checkpoint.npz", out / "metrics.jsonl"
    mcfg, tcfg = model_config or ModelConfig(), train_config or TrainConfig()
    step = 0
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"{ckpt_path}: nothing to resume (no checkpoint in {out})")
        saved = load_checkpoint(ckpt_path)["config"]
        mcfg, tcfg = ModelConfig.from_dict(saved["model"]), TrainConfig.from_dict(saved["train"])
    model = MaskRCNN(mcfg, rng=np.random.default_rng(tcfg.seed))
    opt = AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    schedule = WarmupCosineLR(tcfg.lr, tcfg.steps, tcfg.warmup_steps, min_lr=tcfg.min_lr)
    source = (ShapesData(tcfg.seed, mcfg.image_size, tcfg.val_images) if data is None
              else CocoData(data, tcfg.seed, tcfg.val_images))
    val, coco_gt = source.validation, shapes_ground_truth(source.validation)
    config = dict(model=mcfg.to_dict(), train=asdict(tcfg), class_names=list(class_names or source.class_names))
    if resume:
        step = load_checkpoint(ckpt_path, model.parameters(), opt)["step"]
        # drop log lines past the checkpoint: the resumed run writes them again
        kept = [r for r in _read_log(log_path) if r["step"] <= step]
        log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    elif log_path.exists():
        log_path.unlink()

    def checkpoint(at):
        save_checkpoint(ckpt_path, model.parameters(), opt, step=at, config=config)

    start_time, start_step, interrupted = time.perf_counter(), step, False
    bar = tqdm(total=tcfg.steps, initial=step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        while step < tcfg.steps:
            samples = source.batch(step, tcfg.batch_size)
            images = np.stack([s[0] for s in samples])
            targets = _to_targets([s[1] for s in samples], [s[2] for s in samples])
            opt.lr = schedule(step)
            model.zero_grad()
            losses = model.loss_and_backward(images, targets, np.random.default_rng([tcfg.seed, step, 1]))
            if not all(math.isfinite(v) for v in losses.values()):
                raise TrainingDiverged(f"step {step}: the loss is {losses['loss']} ({losses}); stopped. The last "
                                       f"good checkpoint is {ckpt_path}; lower --lr or check the data "
                                       "(MRCNN_EDU_STRICT=1 checks every layer and names the first NaN)")
            grads = model.gradients()
            grad_norm = clip_grad_norm(grads, tcfg.clip_grad_norm)
            opt.step(grads)
            step += 1
            bar.update(1)
            elapsed = time.perf_counter() - start_time
            rate = (step - start_step) * tcfg.batch_size / max(elapsed, 1e-9)
            if step % tcfg.log_every == 0 or step == tcfg.steps:
                bar.set_postfix(loss=f"{losses['loss']:.3f}", mask=f"{losses['loss_mask']:.3f}",
                                cls=f"{losses['loss_classifier']:.3f}", img_s=f"{rate:.1f}")
                _log(log_path, dict(step=step, seconds=round(elapsed, 1), lr=opt.lr, grad_norm=grad_norm,
                                    images_per_s=rate, **{k: round(v, 6) for k, v in losses.items()}))
            if step % tcfg.checkpoint_every == 0:
                checkpoint(step)
            if step % tcfg.eval_every == 0 and step < tcfg.steps:
                metrics, _ = _evaluate(model, val, coco_gt)
                _log(log_path, dict(step=step, seconds=round(time.perf_counter() - start_time, 1), eval=metrics))
                bar.write(f"step {step}: mask AP {metrics['mask_AP']:.3f}, box AP {metrics['box_AP']:.3f}")
    except KeyboardInterrupt:
        interrupted = True
        checkpoint(step)
        bar.write(f"interrupted at step {step}: checkpoint saved to {ckpt_path}; continue with --resume")
    finally:
        bar.close()
    train_seconds = time.perf_counter() - start_time
    if interrupted:
        return dict(interrupted=True, step=step, checkpoint=str(ckpt_path))

    checkpoint(step)
    save_checkpoint(out / "model.npz", model.parameters(), step=step, config=config)
    metrics, detections = _evaluate(model, val, coco_gt)
    _log(log_path, dict(step=step, seconds=round(train_seconds, 1), eval=metrics))
    records = _read_log(log_path)
    save(training_curves_figure(records), out / "curves.png")
    save(predictions_figure([s[0] for s in val[:12]], detections[:12], config["class_names"]),
         out / "predictions.png")
    summary = dict(step=step, train_seconds=round(train_seconds, 1),
                   seconds_per_step=round(train_seconds / max(step - start_step, 1), 4),
                   peak_memory_mb=_peak_memory_mb(), metrics=metrics)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _peak_memory_mb():
    """The process's peak resident memory in MiB (None where the OS does not say)."""
    try:
        import resource
        import sys
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        return None


def load_model(path):
    """A ``MaskRCNN`` and its class names from ``model.npz`` or ``checkpoint.npz``."""
    header = load_checkpoint(path)
    config = header["config"]
    if "model" not in config:
        from .checkpoint import CheckpointError
        raise CheckpointError(f"{path}: not a mrcnn-edu model (no model config inside)")
    model = MaskRCNN(ModelConfig.from_dict(config["model"]), rng=np.random.default_rng(0))
    load_checkpoint(path, model.parameters())
    return model.eval(), config.get("class_names", [])
