"""Weights over training: the size of each layer's weights and of their gradient, step after step.

A layer here is what owns parameters: the dotted parameter name without its last part, so
``backbone.stage1.0.weight`` and ``backbone.stage1.0.bias`` are the layer ``backbone.stage1.0`` (a conv, a
GroupNorm's scale and shift, an fc). Its two numbers are L2 norms over all its parameters together:

    weight = sqrt(sum of w^2 over the layer's parameters)     grad = sqrt(sum of (dL/dw)^2 over them)

What to read in them: a weight norm that keeps growing or shrinks shows what the learning rate and the weight
decay do to a layer; a layer whose gradient falls to about zero has stopped learning; a spike in one layer's
gradient is where a diverging run starts (the ``grad_norm`` of the loss records is all layers together).

``train`` logs ``norms_record(layer_norms(parameters), layer_norms(gradients))`` every ``norms_every`` steps
in ``metrics.jsonl`` as ``{"step": S, "seconds": T, "norms": {layer: {"weight": w, "grad": g}, ...}}``: the
weights after step S's update and the gradient of step S before clipping (``clip_grad_norm`` scales every
layer alike, so the clipped pattern is the same, only smaller). ``norms_over_training`` reads those records
back as arrays for a figure.

Host-only: the norms are computed on the device (``xp``) and come back once a record; the records are read
into NumPy arrays.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend

__all__ = ["layer_of", "layer_norms", "norms_record", "norms_over_training"]


def layer_of(name):
    """The layer a parameter belongs to: its dotted name without the last part
    (``"box_head.cls_score.weight"`` -> ``"box_head.cls_score"``; a name without a dot is its own layer)."""
    return name.rpartition(".")[0] or name


def layer_norms(arrays):
    """``{layer: L2 norm of all its arrays together}`` (Python floats, layers in the order first met).

    arrays : ``{dotted parameter name: array}``, as ``Module.parameters()`` or ``Module.gradients()`` give,
             any shapes, on either backend
    """
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays: expected a dict of name -> array, got {type(arrays).__name__}")
    return _layer_norms(arrays)


def _layer_norms(arrays):
    if not arrays:
        return {}
    xp = backend.get_array_module(*arrays.values())
    # one float64 sum of squares per array, brought to the host together (on a GPU each float() is a wait)
    squares = backend.to_host(xp.stack([xp.sum(xp.square(a.astype(xp.float64))) for a in arrays.values()]))
    totals = {}
    for name, s in zip(arrays, squares.tolist()):
        totals[layer_of(name)] = totals.get(layer_of(name), 0.0) + s
    return {layer: math.sqrt(t) for layer, t in totals.items()}


def norms_record(weight_norms, grad_norms):
    """``{layer: {"weight": w, "grad": g}}`` for every layer of ``weight_norms``: the ``norms`` of a log record.

    weight_norms : ``layer_norms(model.parameters())``
    grad_norms   : ``layer_norms(model.gradients())``; a layer without a gradient this step (the loss did not
                   reach it) gets ``grad`` 0.0
    """
    return {layer: {"weight": w, "grad": grad_norms.get(layer, 0.0)} for layer, w in weight_norms.items()}


def norms_over_training(records):
    """The norms a run logged, as arrays: ``(steps, norms)``.

    records : the dicts of a ``metrics.jsonl`` (one per line, any kinds; those with ``"norms"`` are read)
    Returns ``steps`` (S int64, increasing as logged) and ``norms`` ``{layer: {"weight": S float64,
    "grad": S float64}}``, layers in the order of the first record (the model's order: backbone first), NaN
    where a record lacks a layer. S is 0 (and ``norms`` empty) when the run logged no norms.
    """
    found = [r for r in records if isinstance(r, dict) and "norms" in r]
    for i, r in enumerate(found):
        if "step" not in r or not isinstance(r["norms"], dict):
            raise ValueError(f"records: a norms record needs 'step' and a dict 'norms', got {sorted(r)} "
                             f"(norms record {i})")
    return _norms_over_training(found)


def _norms_over_training(found):
    steps = np.array([r["step"] for r in found], dtype=np.int64)
    layers = list(dict.fromkeys(layer for r in found for layer in r["norms"]))
    norms = {}
    for layer in layers:
        values = [r["norms"].get(layer, {}) for r in found]
        norms[layer] = {kind: np.array([v.get(kind, math.nan) for v in values], dtype=np.float64)
                        for kind in ("weight", "grad")}
    return steps, norms
