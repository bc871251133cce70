"""Lesson 02 exercises: anchors, k = 3 scales x 3 ratios at every cell of the stride-16 grid (lecture stage 2).

Work in your copy, ``lessons/02_anchors/exercise_work.py``: ``mrcnn-edu lessons start`` makes it from this
file and never overwrites it, and git ignores it. Replace each ``raise NotImplementedError`` in task order,
then grade your copy:

    mrcnn-edu lessons check 02                   a table: passed / failed / not yet written, and a score
    pytest lessons/02_anchors --impl exercise    the tests themselves, each failure expected against got

The signatures and docstrings are the library's, ``mrcnn_edu/anchors.py``, whose functions are the
reference solutions: try first, read them after. Plain NumPy is enough, and there is no need to validate
the inputs. The hints are in README.md.
"""
import math  # noqa: F401

import numpy as np  # noqa: F401


# --- Task 1: grid_size ----------------------------------------------------------------------------

def grid_size(image_size, stride=16):
    """Cells of the feature grid: ``(ceil(height / stride), ceil(width / stride))`` as Python ints.

    image_size : ``(height, width)`` in pixels
    stride     : image pixels per feature cell
    ``grid_size((600, 800))`` is ``(38, 50)``: 1900 cells.
    """
    raise NotImplementedError("grid_size (task 1) is not written yet")


# --- Task 2: base_anchors -------------------------------------------------------------------------

def base_anchors(sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0)):
    """The k = len(ratios) * len(sizes) anchors of one cell, centred on (0, 0) (lecture stage 2, "k anchors").

    sizes  : positive numbers, the side of the square anchor of each scale (its area is size**2)
    ratios : positive aspect ratios height / width
    returns k x 4 float32 ``(x1, y1, x2, y2)``, row ``r * len(sizes) + s`` for ratio r and size s.

    With ``h_ratio = sqrt(ratio)`` an anchor is ``w = size / h_ratio`` wide and ``h = size * h_ratio``
    high (area size**2, h / w = ratio), and its corners are ``round([-w, -h, w, h] / 2)``: computed in
    float32 and rounded half to even, exactly as torchvision's ``AnchorGenerator.generate_anchors``.
    """
    raise NotImplementedError("base_anchors (task 2) is not written yet")


# --- Task 3: generate_anchors ---------------------------------------------------------------------

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
    raise NotImplementedError("generate_anchors (task 3) is not written yet")
