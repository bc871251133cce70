"""Lecture stage 2: anchors. k = len(sizes) * len(ratios) reference boxes at every cell of the feature grid.

The RPN looks at a feature map of stride 16 (one cell per 16 x 16 image pixels). At every cell it
predicts, for each of k anchors (3 sizes x 3 aspect ratios on the slide), "object or not" and four
deltas. An 800 x 600 image (``image_size = (600, 800)``, height first) gives a 38 x 50 grid: 1900 cells,
17100 anchors.

Anchors are ``(x1, y1, x2, y2)`` in image pixels, width ``x2 - x1``, as in ``boxes.py``. The order is
torchvision's ``AnchorGenerator``: location-major (y outer, x inner), the k anchors of one location
contiguous, and within a location ratio-major then size. So anchor ``a`` sits at cell
``(a // k) // gw, (a // k) % gw`` and is base anchor ``a % k``, and the RPN head's ``k`` channels per cell
line up with it.

The arrays are created with ``backend.xp`` (NumPy or CuPy, as switched), since they come from nothing.
"""
from __future__ import annotations

import math

from . import backend
from ._validate import number

__all__ = ["base_anchors", "grid_size", "generate_anchors"]


def base_anchors(sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0)):
    """The k = len(ratios) * len(sizes) anchors of one cell, centred on (0, 0) (lecture stage 2, "k anchors").

    sizes  : positive numbers, the side of the square anchor of each scale (its area is size**2)
    ratios : positive aspect ratios height / width
    returns k x 4 float32 ``(x1, y1, x2, y2)``, row ``r * len(sizes) + s`` for ratio r and size s.

    With ``h_ratio = sqrt(ratio)`` an anchor is ``w = size / h_ratio`` wide and ``h = size * h_ratio``
    high (area size**2, h / w = ratio), and its corners are ``round([-w, -h, w, h] / 2)``: computed in
    float32 and rounded half to even, exactly as torchvision's ``AnchorGenerator.generate_anchors``.
    """
    return _base_anchors(_positive_list(sizes, "sizes"), _positive_list(ratios, "ratios"))


def _base_anchors(sizes, ratios):
    """The maths of ``base_anchors``: sizes and ratios sequences of positive numbers."""
    xp = backend.xp
    scales = xp.asarray(sizes, dtype=xp.float32)
    ratios = xp.asarray(ratios, dtype=xp.float32)
    h_ratios = xp.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return xp.round(xp.stack([-ws, -hs, ws, hs], axis=1) / 2)


def grid_size(image_size, stride=16):
    """Cells of the feature grid: ``(ceil(height / stride), ceil(width / stride))`` as Python ints.

    image_size : ``(height, width)`` in pixels
    stride     : image pixels per feature cell
    ``grid_size((600, 800))`` is ``(38, 50)``: 1900 cells.
    """
    return _grid_size(_image_size(image_size), number(stride, "stride", 0, low_open=True))


def _grid_size(image_size, stride):
    """The maths of ``grid_size``: image_size ``(height, width)``, stride, positive numbers."""
    height, width = image_size
    return math.ceil(height / stride), math.ceil(width / stride)


def generate_anchors(image_size, stride=16, sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0), offset=0.0,
                     dtype="float32"):
    """Every anchor of one image (lecture stage 2, "anchors on the stride-16 grid").

    image_size : ``(height, width)`` in pixels
    stride     : image pixels per feature cell (16 for the lecture's backbone)
    sizes      : anchor sides in pixels, one per scale
    ratios     : aspect ratios height / width
    offset     : where in its cell an anchor is centred: 0 puts it on the cell's top-left corner
                 (torchvision), 0.5 in the middle of the cell; the anchors of cell (i, j) are centred
                 on ``((j + offset) * stride, (i + offset) * stride)``
    dtype      : float32 (default) or float64
    returns A x 4 ``(x1, y1, x2, y2)`` with ``A = gh * gw * k``, ``(gh, gw) = grid_size(image_size, stride)``,
    ``k = len(sizes) * len(ratios)``; ordered location-major (y outer, x inner), the k anchors of a
    location contiguous, as in ``base_anchors``. ``(600, 800)`` gives 1900 cells, 17100 anchors.

    For one feature map this equals torchvision's ``AnchorGenerator`` with ``sizes=(sizes,)`` and
    ``aspect_ratios=(ratios,)``, with one difference: torchvision derives the stride from the image and
    the grid, ``image_size // grid_size`` (an image 600 high and a 38-cell grid give 600 // 38 = 15),
    while this uses the declared stride. The two agree when the image size is a multiple of the stride.
    """
    xp = backend.xp
    if str(dtype) not in ("float32", "float64") and dtype not in (xp.float32, xp.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dtype!r}")
    offset = number(offset, "offset")
    image_size = _image_size(image_size)
    stride = number(stride, "stride", 0, low_open=True)
    return _generate_anchors(image_size, stride, _positive_list(sizes, "sizes"), _positive_list(ratios, "ratios"),
                             offset, dtype)


def _generate_anchors(image_size, stride=16, sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0), offset=0.0,
                      dtype="float32"):
    """The maths of ``generate_anchors``: image_size ``(height, width)`` and stride positive numbers, sizes
    and ratios sequences of positive numbers, offset a number, dtype float32 or float64."""
    xp = backend.xp
    dtype = xp.dtype(dtype)
    gh, gw = _grid_size(image_size, stride)
    base = _base_anchors(sizes, ratios).astype(dtype)
    shift_x = (xp.arange(gw, dtype=dtype) + offset) * stride
    shift_y = (xp.arange(gh, dtype=dtype) + offset) * stride
    shift_y, shift_x = (s.reshape(-1) for s in xp.meshgrid(shift_y, shift_x, indexing="ij"))
    shifts = xp.stack([shift_x, shift_y, shift_x, shift_y], axis=1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


# ---------------------------------------------------------------------------------------------- checks
# What the public functions check before they call the maths above.

def _positive_list(values, name):
    """A non-empty sequence of positive numbers as a list."""
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"{name}: expected a non-empty sequence of positive numbers, got {values!r}") from None
    if not values:
        raise ValueError(f"{name}: expected a non-empty sequence of positive numbers, got an empty one")
    return [number(v, name, 0, low_open=True) for v in values]


def _image_size(image_size):
    """``(height, width)`` as two positive numbers."""
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise ValueError(f"image_size: expected (height, width), got {image_size!r}") from None
    return number(height, "image_size", 0, low_open=True), number(width, "image_size", 0, low_open=True)
