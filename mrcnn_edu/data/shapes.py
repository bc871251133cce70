"""The toy shapes data set of lecture stage 8 ("training on shapes"), after matterport's ``samples/shapes``.

A sample is a ``size x size`` RGB image (128 by default) on one random solid background colour with (at 128
px) 1 to 4 objects, each a square (class 1), a circle (class 2) or a triangle with its apex up (class 3) in its own
random colour. Every object has an integer centre at least ``MARGIN`` = 20 px from the image borders and a
half-size ``s`` of 20 to 32 px: its nominal box is ``(cx - s, cy - s, cx + s, cy + s)`` in continuous pixel
coordinates (pixel ``(x, y)`` covers ``[x, x + 1) x [y, y + 1)``), and it may reach past the image border,
where it is cut off. A new object whose nominal box overlaps an earlier one with IoU > 0.3 is redrawn (at
most ``MAX_TRIES`` times, then left out). Later objects are painted over earlier ones: an instance mask holds
the pixels where its object is *visible*, so the masks never overlap, and an object hidden completely is
dropped. Boxes come from the masks (``boxes_from_masks``).

Larger images hold more and larger shapes (``layout_rules``). With ``r = size / 128`` the margin and the
half-sizes grow by ``sqrt(r)`` (rounded to whole pixels) and the most objects by ``r`` (rounded down), so
an object's area and the number of objects both grow by ``r`` and the share of the image the shapes cover
stays about the same: 256 px gives 1 to 8 objects of half-size 28 to 45 px (margin 28), 512 px 1 to 16 of
40 to 64 px (margin 40). ``r`` is continuous, so any size in between gets rules in between (192 px: 1 to 6
objects of 24 to 39 px). Images of 128 px or less keep the 128-px rules (``r`` is taken as 1): the 128-px
samples are exactly those of the lecture, and small images (the quick tests' 64 px) keep the shapes they
always had. ``shapes_model_settings`` gives the model settings that match a size.

The shapes are drawn by scikit-image (``skimage.draw.polygon`` and ``skimage.draw.disk``), whose pixel
indices name pixel centres: continuous ``x`` is index ``x - 0.5``. Every vertex sits on a pixel edge, so no
pixel centre lies on an outline and the masks are exact: a square of half-size ``s`` is ``2s x 2s`` pixels.

Samples are deterministic: sample ``index`` of a split is drawn from ``numpy.random.default_rng([split key,
seed, index])``, so the training stream can restart at any step (resuming a run) and the validation split
never shares a random stream with training, whatever the two seeds are.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from skimage.draw import disk, polygon

from ..boxes import box_iou
from .images import boxes_from_masks, collate  # noqa: F401  (re-exported: the shapes' boxes come from masks)

__all__ = ["CLASS_NAMES", "MARGIN", "HALF_SIZE", "MAX_OBJECTS", "MAX_TRIES", "MAX_IOU", "MIN_CONTRAST",
           "BASE_SIZE", "LayoutRules", "layout_rules", "shapes_model_settings", "Layout", "random_layout",
           "shape_boxes", "render", "make_sample", "boxes_from_masks", "collate", "ShapesDataset", "validation_set",
           "export_shapes"]

CLASS_NAMES = ("background", "square", "circle", "triangle")
# the layout rules of 128-px images (larger images scale them: ``layout_rules``)
MARGIN = 20              # an object's centre is at least this far from every border, in pixels
HALF_SIZE = (20, 32)     # the half-size s of an object, inclusive range
MAX_OBJECTS = 4          # 1 to 4 objects a sample
BASE_SIZE = 128          # the image size the rules above are for
MAX_TRIES = 20           # redraws of an object that overlaps an earlier one before it is left out
MAX_IOU = 0.3            # the largest nominal-box IoU allowed between two objects
MIN_CONTRAST = 64        # an object's colour differs from the background and earlier objects by this much
                         # in at least one channel (0..255), so every object is visible
MIN_SIZE = 2 * MARGIN + 24   # the smallest image (below 128 px the 128-px rules hold, margins included)
SPLITS = {"train": 0, "validation": 1}   # the first entry of each split's seed sequence


class LayoutRules(NamedTuple):
    """Where and how large the objects of one image size are (``layout_rules``)."""
    margin: int          # an object's centre is at least this far from every border, in pixels
    half_size: tuple     # (low, high): the inclusive range of an object's half-size s, in pixels
    max_objects: int     # 1 to max_objects objects a sample


def _scale(size):
    """``r = size / 128``, or 1 for images of 128 px or less (they keep the 128-px rules)."""
    return max(1.0, size / BASE_SIZE)


def layout_rules(size=128):
    """The layout rules of ``size x size`` images: the 128-px ones (``MARGIN``, ``HALF_SIZE``,
    ``MAX_OBJECTS``) scaled by ``r = size / 128`` (1 for 128 px or less): margin and half-sizes by ``sqrt(r)``,
    rounded to whole pixels, the most objects by ``r``, rounded down. 256 px: ``LayoutRules(28, (28, 45), 8)``;
    512 px: ``LayoutRules(40, (40, 64), 16)``.

    size : image height and width in pixels (at least ``MIN_SIZE``)
    """
    size = _check_int(size, "size", MIN_SIZE)
    r = _scale(size)
    k = math.sqrt(r)
    return LayoutRules(round(MARGIN * k), (round(HALF_SIZE[0] * k), round(HALF_SIZE[1] * k)),
                       max(MAX_OBJECTS, MAX_OBJECTS * size // BASE_SIZE))


def shapes_model_settings(size=128):
    """The ``ModelConfig`` fields that suit shapes images of ``size`` px: a dict of ``image_size``,
    ``anchor_sizes`` and the per-image counts; at 128 px (and less) exactly the ``ModelConfig`` defaults.

    With ``r = size / 128`` (1 for 128 px or less, as in ``layout_rules``):

    - ``anchor_sizes``: the defaults (40, 56, 72) times ``sqrt(r)``, rounded to 0.1 px, as the objects' sides grow by
      ``sqrt(r)`` (256 px: 56.6, 79.2, 101.8; 512 px: 80, 112, 144).
    - times ``r``, rounded, as the number of objects grows by ``r``: ``rpn_batch`` (256 anchors an image, half
      of them at most positive; more objects have more positive anchors), ``rpn_post_nms_train`` and
      ``rpn_post_nms_test`` (64 and 32 proposals, 16 and 8 an object at 128 px), ``roi_batch`` (64 RoIs, a
      quarter of them at most positive, for the box head), ``mask_rois_per_image`` (8, two an object) and
      ``detections_per_image`` (20, five an object). Each keeps its share per object, so a 512-px image of 16
      objects trains and is searched as thoroughly as a 128-px one of 4; the heads' work grows by ``r``.
    - ``rpn_pre_nms`` (1000) stays: it is more than the 192 and 768 anchors (3 a cell) of 128 and 256 px, and at
      512 px the best 1000 of 3072 anchors are still 60 an object before NMS.

    size : image height and width in pixels (at least ``MIN_SIZE``)
    """
    from ..model import ModelConfig

    size = _check_int(size, "size", MIN_SIZE)
    base, r = ModelConfig(), _scale(size)
    counts = ("rpn_batch", "rpn_post_nms_train", "rpn_post_nms_test", "roi_batch", "mask_rois_per_image",
              "detections_per_image")
    return dict(image_size=size, anchor_sizes=tuple(round(s * math.sqrt(r), 1) for s in base.anchor_sizes),
                **{name: int(round(getattr(base, name) * r)) for name in counts})


class Layout(NamedTuple):
    """What to draw: ``n`` objects in drawing order (later ones on top).

    class_ids  : n int64, 1 square, 2 circle, 3 triangle
    centres    : n x 2 int64 ``(cx, cy)``, continuous pixel coordinates
    half_sizes : n int64
    colours    : n x 3 uint8 RGB
    background : 3 uint8 RGB
    """
    class_ids: np.ndarray
    centres: np.ndarray
    half_sizes: np.ndarray
    colours: np.ndarray
    background: np.ndarray


# ------------------------------------------------------------------------------------------- checks
def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator (numpy.random.default_rng(seed)), got "
                        f"{type(rng).__name__}")


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------- layout
def shape_boxes(centres, half_sizes):
    """Nominal boxes ``(cx - s, cy - s, cx + s, cy + s)`` of objects, before clipping and occlusion.

    centres    : n x 2 ``(cx, cy)``
    half_sizes : n
    returns n x 4 float32 ``(x1, y1, x2, y2)``, continuous pixel coordinates.
    """
    centres = np.asarray(centres, dtype=np.float32).reshape(-1, 2)
    s = np.asarray(half_sizes, dtype=np.float32).reshape(-1, 1)
    return np.concatenate([centres - s, centres + s], axis=1)


def _first_fit(candidates_ok):
    """Index of the first True in a 1-D mask, or -1 when there is none."""
    return int(np.argmax(candidates_ok)) if candidates_ok.any() else -1


def _pick_colour(candidates, taken):
    """The first of ``T x 3`` candidate colours that differs by ``MIN_CONTRAST`` from every ``taken`` colour
    (``k x 3``) in some channel; the most distinct candidate when none does."""
    diff = np.abs(candidates[:, None, :].astype(np.int64) - taken[None, :, :].astype(np.int64)).max(axis=2)
    nearest = diff.min(axis=1)
    first = _first_fit(nearest >= MIN_CONTRAST)
    return candidates[first if first >= 0 else int(np.argmax(nearest))]


def random_layout(rng, size=128):
    """Draw the objects of one sample: classes, centres, half-sizes and colours (slide "the shapes data").

    rng  : ``numpy.random.Generator``
    size : image height and width in pixels (at least ``MIN_SIZE``)
    returns a ``Layout`` of 1 to ``max_objects`` objects whose nominal boxes overlap pairwise with IoU <=
    ``MAX_IOU``, centres at least ``margin`` from the borders and half-sizes in ``half_size``
    (``layout_rules(size)``: 4 objects, 20 px, 20 to 32 px up to 128 px; more and larger above).

    Every candidate (``max_objects x MAX_TRIES`` of them) is drawn up front, so a sample of one size always
    takes the same amount of randomness; the acceptance loop runs over at most ``max_objects`` objects.
    """
    _check_rng(rng)
    size = _check_int(size, "size", MIN_SIZE)
    margin, (low, high), max_objects = layout_rules(size)
    count = int(rng.integers(1, max_objects + 1))
    shape = (max_objects, MAX_TRIES)
    classes = rng.integers(1, len(CLASS_NAMES), size=shape)
    centres = rng.integers(margin, size - margin + 1, size=shape + (2,))
    halves = rng.integers(low, high + 1, size=shape)
    colours = rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)
    background = rng.integers(0, 256, size=3, dtype=np.uint8)

    chosen, boxes, palette = [], np.zeros((0, 4), np.float32), background[None, :]
    for i in range(count):
        candidate_boxes = shape_boxes(centres[i].reshape(-1, 2), halves[i])
        iou = box_iou(candidate_boxes, boxes).max(axis=1, initial=0.0)
        t = _first_fit(iou <= MAX_IOU)
        if t < 0:
            continue  # no free place in MAX_TRIES draws: the sample gets one object fewer
        chosen.append((i, t))
        boxes = np.concatenate([boxes, candidate_boxes[t:t + 1]])
        palette = np.concatenate([palette, _pick_colour(colours[i], palette)[None, :]])
    rows, tries = (np.array(a, dtype=np.int64) for a in zip(*chosen))
    return Layout(classes[rows, tries].astype(np.int64), centres[rows, tries].astype(np.int64),
                  halves[rows, tries].astype(np.int64), palette[1:], background)


# ------------------------------------------------------------------------------------------ drawing
def _shape_pixels(class_id, cx, cy, s, size):
    """Row and column indices of the pixels an object covers (clipped to the image), by scikit-image."""
    # skimage indexes pixel centres: continuous coordinate c is index c - 0.5
    x, y = cx - 0.5, cy - 0.5
    if class_id == 1:
        return polygon([y - s, y - s, y + s, y + s], [x - s, x + s, x + s, x - s], shape=(size, size))
    if class_id == 2:
        return disk((y, x), s, shape=(size, size))
    # triangle, apex up: apex at the top centre of the nominal box, base along its bottom edge
    return polygon([y - s, y + s, y + s], [x, x + s, x - s], shape=(size, size))


def render(layout, size=128):
    """Paint a ``Layout``: the image and each object's visible mask.

    layout : ``Layout`` of n objects in drawing order
    size   : image height and width
    returns ``(image, masks, class_ids)``: ``size x size x 3`` uint8, ``G x size x size`` bool (disjoint,
    none empty), ``G`` int64, with ``G <= n`` (objects hidden by later ones are dropped).
    """
    size = _check_int(size, "size", 1)
    n = len(layout.class_ids)
    # paint the objects in drawing order, each over those before it: label 0 is the background, i + 1 object i
    label = np.zeros((size, size), dtype=np.intp)
    for i, (c, (cx, cy), s) in enumerate(zip(layout.class_ids, layout.centres, layout.half_sizes)):
        label[_shape_pixels(int(c), int(cx), int(cy), int(s), size)] = i + 1
    masks = label == np.arange(1, n + 1)[:, None, None]   # what is left of each object is its visible mask
    palette = np.concatenate([layout.background[None, :], layout.colours]).astype(np.uint8)
    image = palette[label]
    visible = masks.any(axis=(1, 2))
    return image, masks[visible], layout.class_ids[visible].astype(np.int64)


def make_sample(rng, size=128):
    """One shapes sample (design.md API): a random layout, painted.

    rng  : ``numpy.random.Generator``
    size : image height and width (default 128)
    returns ``(image, masks, class_ids)``: ``size x size x 3`` uint8; ``G x size x size`` bool, each the
    visible pixels of one object (disjoint, non-empty); ``G`` int64 classes in ``1..3``, ``1 <= G <=
    layout_rules(size).max_objects`` (4 up to 128 px, 8 at 256, 16 at 512).
    """
    return render(random_layout(rng, size), size)


# ------------------------------------------------------------------------------------ data set API
class ShapesDataset:
    """The shapes samples of one split, by index: ``dataset[i]`` is always the same sample.

    seed   : non-negative int; the training stream and the validation split of one seed (and of any two
             seeds) are different random streams
    size   : image height and width
    split  : ``"train"`` or ``"validation"``
    length : number of samples, or None for an endless stream (then ``len()`` raises ``TypeError``)
    """

    def __init__(self, seed=0, size=128, split="train", length=None):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {tuple(SPLITS)}, got {split!r}")
        self.seed = _check_int(seed, "seed", 0)
        self.size = _check_int(size, "size", MIN_SIZE)
        self.split = split
        self.length = None if length is None else _check_int(length, "length", 0)

    def rng(self, index):
        """The generator that draws sample ``index``."""
        return np.random.default_rng([SPLITS[self.split], self.seed, index])

    def __getitem__(self, index):
        index = _check_int(index, "index", 0)
        if self.length is not None and index >= self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        return make_sample(self.rng(index), self.size)

    def __len__(self):
        if self.length is None:
            raise TypeError("an endless shapes stream has no length; pass length=n for a fixed split")
        return self.length

    def batches(self, batch_size, start=0):
        """Batches of ``batch_size`` consecutive samples, batch ``b`` holding samples ``b * batch_size`` to
        ``(b + 1) * batch_size - 1``, from batch ``start`` on (resume a run with ``start=step``); endless for
        an endless stream. Each is ``collate``'d: ``(N x H x W x 3 uint8, [G_i x H x W bool], [G_i int64])``.
        """
        batch_size = _check_int(batch_size, "batch_size", 1)
        b = _check_int(start, "start", 0)
        while self.length is None or b * batch_size < self.length:
            stop = (b + 1) * batch_size if self.length is None else min((b + 1) * batch_size, self.length)
            yield collate(self[i] for i in range(b * batch_size, stop))
            b += 1


def validation_set(n=100, seed=0, size=128):
    """The fixed validation split: a list of ``n`` samples ``(image, masks, class_ids)``, the same for a seed."""
    dataset = ShapesDataset(seed, size, "validation", length=n)
    return [dataset[i] for i in range(len(dataset))]


def export_shapes(out_dir, n, seed=0, size=128):
    """Write the shapes validation split of a seed as a COCO data set.

    out_dir : folder; gets ``images/000000.png ...`` and ``annotations.json``
    n, seed : ``mrcnn_edu.data.shapes.validation_set(n, seed, size)``, so evaluating on the export equals
              evaluating on the built-in validation split
    returns ``(annotations path, image folder)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    samples = validation_set(n, seed, size)
    names = [f"{i:06d}.png" for i in range(n)]
    for (image, _, _), name in zip(samples, names):
        Image.fromarray(image).save(image_dir / name)
    ann_file = out_dir / "annotations.json"
    from .coco import samples_to_coco   # pycocotools: only when exporting
    ann_file.write_text(json.dumps(samples_to_coco(samples, CLASS_NAMES, names)), encoding="utf-8")
    return ann_file, image_dir
