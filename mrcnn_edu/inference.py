"""A trained model at work: load it from its file, and run it over many images.

``load_model`` reads ``model.npz`` (or ``checkpoint.npz``) as ``train`` writes it: the configuration and the
class names are inside, so the model is rebuilt exactly as it was trained. ``predict_in_batches`` runs
``MaskRCNN.predict`` a batch at a time and brings the detections to the host.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .checkpoint import CheckpointError, load_checkpoint
from .model import MaskRCNN, ModelConfig

__all__ = ["load_model", "predict_in_batches"]


def load_model(path):
    """A ``MaskRCNN`` and its class names from ``model.npz`` or ``checkpoint.npz``."""
    header = load_checkpoint(path)
    config = header["config"]
    if "model" not in config:
        raise CheckpointError(f"{path}: not a mrcnn-edu model (no model config inside)")
    model = MaskRCNN(ModelConfig.from_dict(config["model"]), rng=np.random.default_rng(0))
    load_checkpoint(path, model.parameters())
    return model.eval(), config.get("class_names", [])


def predict_in_batches(model, images, batch_size=16):
    """``model.predict`` over a list/array of images, ``batch_size`` at a time, results moved to the host."""
    out = []
    for i in range(0, len(images), batch_size):
        for d in model.predict(np.stack(images[i:i + batch_size])):
            out.append({k: backend.to_host(v) for k, v in d.items()})
    return out
