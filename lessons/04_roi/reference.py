"""Lesson 04 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them in ``mrcnn_edu/roi.py``. The library has no one-point ``bilinear_interpolate`` (it builds whole
interpolation matrices at once), so task 1's reference asks ``roi_align`` itself: a RoI one pixel wide and
high, with one bin and one sample, samples exactly its centre.
"""
import numpy as np

from mrcnn_edu.roi import roi_align, roi_align_backward, roi_pool, roi_pool_backward  # noqa: F401


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
    plane = np.asarray(plane, dtype=np.float64)
    # aligned=False, width and height 1, one bin, sampling_ratio=1: the one sample is at (x1 + 0.5, y1 + 0.5)
    roi = np.array([[0.0, x - 0.5, y - 0.5, x + 0.5, y + 0.5]])
    return float(roi_align(plane[None, None], roi, 1, spatial_scale=1.0, sampling_ratio=1)[0, 0, 0, 0])
