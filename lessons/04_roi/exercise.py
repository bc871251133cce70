"""Lesson 04 exercises: RoIPool and RoIAlign, forward and backward, on the lecture's 8x8 example (stage 4).

Work in your copy, ``lessons/04_roi/exercise_work.py``: ``mrcnn-edu lessons start`` makes it from this file
and never overwrites it, and git ignores it. Replace each ``raise NotImplementedError`` in task order, then
grade your copy:

    mrcnn-edu lessons check 04                 a table: passed / failed / not yet written, and a score
    pytest lessons/04_roi --impl exercise      the tests themselves, each failure expected against got

The signatures and docstrings of tasks 2-5 are the library's, ``mrcnn_edu/roi.py``, whose functions are the
reference solutions: try first, read them after. Task 1 is the building block of RoIAlign. Loops over
RoIs, channels, bins and samples are welcome here (the tests are small): write the definition first, and
only then, if you like, the library's two-GEMM form. There is no need to validate the inputs. The hints and
the full sampling rules are in README.md.
"""
import math  # noqa: F401

import numpy as np  # noqa: F401


# --- Task 1: bilinear_interpolate -----------------------------------------------------------------

def bilinear_interpolate(plane, y, x):
    """The value of one feature-map channel at a point between its pixels (lecture: "RoIAlign", bilinear).

    plane : H x W float, one channel; pixel ``(i, j)`` holds the value at the point ``y = i, x = j``
    y, x  : Python floats, the point to read, in feature-map coordinates
    returns a Python float: with ``y0 = floor(y)``, ``x0 = floor(x)``, ``ly = y - y0``, ``lx = x - x0``::

        (1 - ly) (1 - lx) plane[y0, x0]     + (1 - ly) lx plane[y0, x0 + 1]
      + ly (1 - lx)       plane[y0 + 1, x0] + ly lx       plane[y0 + 1, x0 + 1]

    and torchvision's rules at the border (its ``bilinear_interpolate`` in ``roi_align_kernel.cpp``):
    a point with ``y < -1`` or ``y > H`` (or ``x < -1`` or ``x > W``) reads 0; a coordinate in
    ``[-1, 0)`` is moved to 0; a coordinate at or past the last index ``H - 1`` (``W - 1``) reads that
    last row (column).
    """
    raise NotImplementedError("bilinear_interpolate (task 1) is not written yet")


# --- Task 2: roi_pool -----------------------------------------------------------------------------

def roi_pool(features, rois, output_size, spatial_scale=1.0, bins="caffe"):
    """RoIPool forward (lecture: "RoI Pooling in Fast R-CNN"): quantize the RoI, split it into bins, max.

    features      : N x C x H x W float
    rois          : R x 5 ``(batch_index, x1, y1, x2, y2)`` in image pixels
    output_size   : ``(oh, ow)`` or an int
    spatial_scale : image -> feature-map pixels; the scaled corners are rounded to whole pixels
    bins          : ``"caffe"`` (= ``torchvision.ops.roi_pool``) or ``"slides"`` (the lecture's worked example)
    Returns ``(output, argmax)``: output R x C x oh x ow; argmax R x C x oh x ow int64, the flat index
    ``y * W + x`` of each maximum in its image's channel, -1 (and output 0) for an empty bin.
    """
    raise NotImplementedError("roi_pool (task 2) is not written yet")


# --- Task 3: roi_pool_backward --------------------------------------------------------------------

def roi_pool_backward(grad_output, argmax, input_shape, rois=None):
    """RoIPool backward: each bin's gradient goes to the one pixel that won its max (none for empty bins).

    grad_output : R x C x oh x ow
    argmax      : R x C x oh x ow int64 from ``roi_pool`` (flat ``y * W + x``, -1 for empty bins)
    input_shape : ``(N, C, H, W)``
    rois        : R x 5, needed only to know each RoI's image when N > 1
    Returns N x C x H x W; pixels that win several bins (overlapping RoIs or caffe bins) add up.
    """
    raise NotImplementedError("roi_pool_backward (task 3) is not written yet")


# --- Task 4: roi_align ----------------------------------------------------------------------------

def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign forward, as ``torchvision.ops.roi_align`` (lecture: "RoI Align in Mask R-CNN").

    features       : N x C x H x W float
    rois           : R x 5 ``(batch_index, x1, y1, x2, y2)`` in image pixels
    output_size    : ``(oh, ow)`` or an int
    spatial_scale  : image pixels -> feature-map pixels (1/16 at stride 16)
    sampling_ratio : samples per bin along each axis; ``<= 0`` means ``ceil(bin size)`` (adaptive)
    aligned        : shift the box by -0.5 pixel so that a pixel's centre sits at integer + 0.5
    Returns R x C x oh x ow, the average of the bilinear samples of each bin.
    """
    raise NotImplementedError("roi_align (task 4) is not written yet")


# --- Task 5: roi_align_backward -------------------------------------------------------------------

def roi_align_backward(grad_output, rois, input_shape, output_size, spatial_scale=1.0, sampling_ratio=-1,
                       aligned=False):
    """RoIAlign backward: the gradient with respect to ``features`` (N x C x H x W).

    grad_output : R x C x oh x ow, the gradient of the loss with respect to ``roi_align``'s output
    input_shape : ``(N, C, H, W)`` of the features; the other arguments as in ``roi_align``.
    Every sample hands its share of the bin's gradient back to its four bilinear neighbours; in matrix form
    ``dfeatures[b] = sum_r Ay[r].T @ grad_output[r] @ Ax[r]`` (torchvision does it with atomic adds).
    """
    raise NotImplementedError("roi_align_backward (task 5) is not written yet")
