"""Input checks shared by the public functions: each raises ``ValueError`` (or ``TypeError``) that names
the argument and says what was expected, so a student sees ``boxes: expected N x 4, got shape (3, 5)``
instead of a broadcasting error three calls deeper.

Checks of shapes and dtypes are free. Checks of *values* (no NaN or inf, ``x2 >= x1``) read every element
and bring a yes/no back to Python, which on a GPU means waiting for every kernel queued so far. The model
validates what its user passes once, then runs its own calls of the library inside ``trusted()``, where
the value checks are skipped: everything it hands on was computed by the library itself. (A training
step makes about 400 such checks; on the GPU they were up to a quarter of the step's time.) A NaN still
cannot pass unnoticed: it reaches the losses, and ``train`` stops on a loss that is not finite. To find the
layer where it first appeared, set ``MRCNN_EDU_STRICT=1``: then ``trusted()`` does nothing and every call
checks.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os

from . import backend

__all__ = ["number", "as_float_array", "check_ndim", "check_finite", "check_boxes", "check_rois", "check_same_length",
           "pair", "trusted", "checks_values"]

_trusted = contextvars.ContextVar("mrcnn_edu_trusted", default=False)
STRICT = os.environ.get("MRCNN_EDU_STRICT", "").strip() not in ("", "0")  # check values everywhere


@contextlib.contextmanager
def trusted():
    """Inside this block ``check_finite`` and the ``x2 >= x1`` test of ``check_boxes`` do nothing (shape
    and dtype checks stay). For library code whose inputs the library made; never around user input.
    With ``MRCNN_EDU_STRICT=1`` in the environment (``STRICT``) it changes nothing."""
    token = _trusted.set(not STRICT)
    try:
        yield
    finally:
        _trusted.reset(token)


def number(value, name, low=-math.inf, high=math.inf, *, low_open=False, high_open=False, allow_inf=False,
           what=None):
    """A scalar setting as a Python float in its range, or a ``ValueError`` like ``lr: expected a finite number
    >= 0, got -1``. Bools, strings, NaN and (unless ``allow_inf``) inf are refused; ``low_open`` and
    ``high_open`` exclude the ends of ``[low, high]``; ``what`` overrides the description of the range."""
    if what is None:
        if (low, low_open, high) == (0, True, math.inf):
            what = "a positive number"
        elif (low, high) == (0, math.inf):
            what = "a finite number >= 0"
        elif (low, high) == (-math.inf, math.inf):
            what = "a number" if allow_inf else "a finite number"
        else:
            what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    try:
        x = math.nan if isinstance(value, (str, bytes, bool)) else float(value)
    except (TypeError, ValueError):
        x = math.nan
    if (math.isnan(x) or (math.isinf(x) and not allow_inf) or x < low or x > high
            or (low_open and x == low) or (high_open and x == high)):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return x


def as_float_array(a, name, xp=None):
    """``a`` as a floating array of the array module ``xp`` (its own module when ``xp`` is None).

    Python lists and integer arrays become float32; float32 and float64 arrays are kept as they are.
    float16 becomes float32 too: its largest value is 65504, so the area of a 300 x 300 box, or a sum of
    squares, would overflow to inf. The public functions therefore compute float16 input in float32 and
    return float32.
    """
    xp = xp or backend.get_array_module(a)
    a = xp.asarray(a)
    if a.dtype.kind == "b" or a.dtype.kind in "OUSV":
        raise TypeError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    if a.dtype.kind != "f" or a.dtype.itemsize < 4:
        a = a.astype(xp.float32)
    return a


def check_ndim(a, name, ndim, what):
    """``a.ndim == ndim`` or a ``ValueError`` like ``rois: expected R x 5, got shape (3,)``."""
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {what}, got shape {tuple(a.shape)}")


def checks_values():
    """False inside ``trusted()``: guard any check that reads array values with it."""
    return not _trusted.get()


def check_finite(a, name):
    """No NaN or inf in ``a`` (not checked inside ``trusted()``)."""
    if not checks_values():
        return
    xp = backend.get_array_module(a)
    if a.size and not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name}: contains NaN or inf")


def check_boxes(boxes, name="boxes", xp=None):
    """``boxes`` as an ``N x 4`` float array of ``(x1, y1, x2, y2)``: finite, with ``x2 >= x1`` and ``y2 >= y1``
    (the values are not checked inside ``trusted()``)."""
    boxes = as_float_array(boxes, name, xp)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}: expected N x 4 boxes (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    check_finite(boxes, name)
    mod = backend.get_array_module(boxes)
    if boxes.shape[0] and checks_values() and bool(mod.any((boxes[:, 2] < boxes[:, 0])
                                                           | (boxes[:, 3] < boxes[:, 1]))):
        raise ValueError(f"{name}: every box needs x2 >= x1 and y2 >= y1")
    return boxes


def check_rois(rois, name="rois", xp=None):
    """``rois`` as an ``R x 5`` float array ``(batch_index, x1, y1, x2, y2)`` with valid boxes."""
    rois = as_float_array(rois, name, xp)
    if rois.ndim == 1 and rois.size == 0:
        rois = rois.reshape(0, 5)
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"{name}: expected R x 5 rois (batch_index, x1, y1, x2, y2), got shape {tuple(rois.shape)}")
    check_boxes(rois[:, 1:], name)
    return rois


def check_same_length(a, a_name, b, b_name):
    """``len(a) == len(b)`` or a ``ValueError`` naming both."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{b_name}: expected {a.shape[0]} rows to match {a_name}, got {b.shape[0]}")


def pair(v, name):
    """An int or a pair of ints as a pair of positive ints (``7 -> (7, 7)``)."""
    if isinstance(v, int):
        v = (v, v)
    try:
        a, b = (int(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {v!r}") from None
    if a <= 0 or b <= 0:
        raise ValueError(f"{name}: expected positive sizes, got {v!r}")
    return a, b
