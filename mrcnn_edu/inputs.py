"""What the model accepts, checked once at its door: its configuration (``MaskRCNN(config)``), the images and
the training targets (``MaskRCNN.loss_and_backward`` and ``predict``). Inside, the model trusts what the
library computed from them.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

from . import backend
from ._validate import box_array, check_boxes, check_finite

__all__ = ["Target", "check_config", "check_images", "check_targets"]


class Target(NamedTuple):
    """One image's ground truth, checked: ``boxes`` G x 4 float, ``labels`` G int64 in 1..K-1, ``masks``
    G x H x W (bool or 0/1)."""
    boxes: Any
    labels: Any
    masks: Any


def check_images(images):
    """``images`` as an N x H x W x 3 array (uint8, or floats on the same 0..255 scale), finite."""
    xp = backend.get_array_module(images)
    images = xp.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images: expected N x H x W x 3 (RGB, channels last), got shape {tuple(images.shape)}")
    if images.dtype.kind == "f":
        check_finite(images, "images")
    elif images.dtype.kind not in "iu":
        raise TypeError(f"images: expected uint8 (or float) pixels, got dtype {images.dtype}")
    return images


def check_targets(targets, num_images, config):
    """The training targets as the model needs them, or a ``ValueError`` that names the image and the field.

    targets : ``num_images`` dicts with ``boxes`` G x 4 ``(x1, y1, x2, y2)``, finite with x2 > x1 and y2 > y1
              (as torchvision asks: a box of no width has no regression target), ``labels`` G ints in
              [1, K - 1] and ``masks`` G x H x W (any H x W: they are cropped per RoI).
    Returns a list of ``Target``: the boxes as a float array, the labels as int64, the masks as an array, on the
    backend's device.

    Shapes and dtypes are checked image by image; the values of the whole batch at once, with one read back
    (on a GPU a read back waits for the device), and image by image only when something is wrong, to name it.
    Targets given as host (NumPy) arrays are checked on the host, where reading a value costs no wait, and then
    sent to the device (``_sent``): the training loop gives them so.
    """
    if len(targets) != num_images:
        raise ValueError(f"targets: expected one dict per image ({num_images}), got {len(targets)}")
    checked = [_target(i, t) for i, t in enumerate(targets)]
    if checked and not _values_fine(checked, config):
        for i, target in enumerate(checked):
            _check_values(i, target, config)
    return _sent(checked)


def _sent(checked):
    """Checked targets of host arrays on the backend's device: each field of the batch (every image's boxes, then
    labels, then masks, which may differ in size) in one transfer, ``backend.to_device``. Targets with any array
    on the device already, or a NumPy backend, are left as they are."""
    if not checked or any(backend.get_array_module(*t) is backend.xp for t in checked):
        return checked
    fields = [backend.to_device(parts) for parts in zip(*checked)]
    return [Target(*parts) for parts in zip(*fields)]


def _target(i, t):
    """Image ``i``'s target with the shapes and dtypes checked (its values are not read)."""
    missing = {"boxes", "labels", "masks"} - set(t)
    if missing:
        raise ValueError(f"targets[{i}]: missing {sorted(missing)}")
    boxes = box_array(t["boxes"], f"targets[{i}]['boxes']")
    xp = backend.get_array_module(boxes)
    labels, mask_shape = xp.asarray(t["labels"]), tuple(getattr(t["masks"], "shape", ()))
    if labels.shape != (boxes.shape[0],) or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"targets[{i}]['labels']: expected {boxes.shape[0]} integer classes, got "
                         f"shape {tuple(labels.shape)}, dtype {labels.dtype}")
    if len(mask_shape) != 3 or mask_shape[0] != boxes.shape[0]:
        raise ValueError(f"targets[{i}]['masks']: expected a {boxes.shape[0]} x H x W array, got shape "
                         f"{mask_shape}")
    return Target(boxes, labels.astype(xp.int64, copy=False), xp.asarray(t["masks"]))


def _values_fine(checked, config):
    """Every box of the batch finite with x2 > x1 and y2 > y1, every label in [1, K - 1]: one read back."""
    xp = backend.get_array_module(checked[0].boxes)
    boxes = xp.concatenate([t.boxes for t in checked])
    labels = xp.concatenate([t.labels for t in checked])
    fine = (xp.isfinite(boxes).all() & (boxes[:, 2:] > boxes[:, :2]).all()       # x2 > x1 and y2 > y1
            & ((labels >= 1) & (labels < config.num_classes)).all())
    return bool(fine)


def _check_values(i, target, config):
    """Image ``i``'s values, with the message that names what is wrong."""
    boxes, labels = check_boxes(target.boxes, f"targets[{i}]['boxes']"), target.labels
    xp = backend.get_array_module(boxes)
    if boxes.shape[0] and not bool(xp.all((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))):
        raise ValueError(f"targets[{i}]['boxes']: every box needs x2 > x1 and y2 > y1")
    if labels.size and bool(xp.any((labels < 1) | (labels >= config.num_classes))):
        raise ValueError(f"targets[{i}]['labels']: expected classes in [1, {config.num_classes - 1}] "
                         "(0 is the background)")


def check_config(cfg):
    """Clear errors for the choices ``ModelConfig`` offers."""
    choices = dict(roi_op=("align", "pool"), mask_loss=("sigmoid", "softmax"), mask_head=("fcn", "mlp"),
                   box_loss=("smooth_l1", "giou"), backbone_stride=(16, 32), mask_stride=(4, 8))
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name}: expected one of {allowed}, got {getattr(cfg, name)!r}")
    if cfg.backbone_stride == 32 and cfg.fpn:
        raise ValueError("backbone_stride: 32 (C5) is built without the FPN; set fpn=False")
    hidden = cfg.mask_mlp_hidden
    if isinstance(hidden, bool) or not isinstance(hidden, numbers.Integral) or hidden < 1:
        raise ValueError(f"mask_mlp_hidden: expected a positive int, got {hidden!r}")
    weight = cfg.box_loss_weight
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 < weight < math.inf:
        raise ValueError(f"box_loss_weight: expected a positive finite number, got {weight!r}")
