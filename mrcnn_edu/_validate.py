"""Input checks shared by the public functions: each raises ``ValueError`` (or ``TypeError``) that names
the argument and says what was expected, so a student sees ``boxes: expected N x 4, got shape (3, 5)``
instead of a broadcasting error three calls deeper.

Every public function checks its input once, here, and then calls a private core that holds only the
maths; the library's own code (the model, the heads, the layers) calls the cores, since it made every
array it hands on. Checks of *values* (no NaN or inf, ``x2 >= x1``) read every element and bring a yes/no
back to Python, which on a GPU means waiting for every kernel queued so far, so they belong at the door
only (``benchmarks/RESULTS.md`` has their cost). A NaN made inside the model still cannot pass unnoticed:
it reaches the losses, and ``train`` stops on a loss that is not finite.

The layers' checks (``float_input``, ``check_param``, ``check_dout``) are here too, beside the one ``pair``
that turns an int or a pair into a pair of sizes for the layers and the RoI ops alike.
"""
from __future__ import annotations

import math
import numbers

from . import backend

__all__ = ["number", "as_float_array", "check_ndim", "check_finite", "box_array", "check_boxes", "check_rois",
           "check_same_length", "pair", "float_input", "check_param", "check_dout"]


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


def check_finite(a, name):
    """No NaN or inf in ``a``."""
    xp = backend.get_array_module(a)
    if a.size and not bool(xp.isfinite(a).all()):
        raise ValueError(f"{name}: contains NaN or inf")


def box_array(boxes, name="boxes", xp=None):
    """``boxes`` as an ``N x 4`` float array (an empty 1-D array as ``0 x 4``); its values are not read."""
    boxes = as_float_array(boxes, name, xp)
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name}: expected N x 4 boxes (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    return boxes


def check_boxes(boxes, name="boxes", xp=None):
    """``boxes`` as an ``N x 4`` float array of ``(x1, y1, x2, y2)``: finite, with ``x2 >= x1`` and ``y2 >= y1``."""
    boxes = box_array(boxes, name, xp)
    check_finite(boxes, name)
    mod = backend.get_array_module(boxes)
    if boxes.shape[0] and bool(mod.any((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))):
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


def pair(v, name, minimum=1):
    """An int or a pair of ints as a pair ``(vertical, horizontal)`` of Python ints >= ``minimum`` (``7 -> (7, 7)``).

    Sizes (``output_size``, ``image_size``, ``kernel_size``, ``stride``) take the default 1; paddings take
    ``minimum=0``. Whole numbers of any type count (``numpy.int64(7)``, ``7.0``, a row of an array of image
    sizes); ``7.5`` or ``"7"`` is an error rather than a silent truncation.
    """
    given = v
    if isinstance(v, numbers.Integral):
        v = (v, v)
    try:
        first, second = v
        a, b = int(first), int(second)
        if a != first or b != second:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {given!r}") from None
    if a < minimum or b < minimum:
        raise ValueError(f"{name}: expected sizes >= {minimum}, got {given!r}")
    return a, b


# ----------------------------------------------------------------------------------------------------
# the layers' checks (mrcnn_edu.nn): an input, a parameter of that input, an upstream gradient
# ----------------------------------------------------------------------------------------------------

def nchw_shape(shape, name, minimum=0):
    """``shape`` as a tuple ``(N, C, H, W)`` of Python ints >= ``minimum``."""
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (N, C, H, W), got {shape!r}") from None
    if len(out) != 4 or min(out) < minimum:
        sizes = "non-negative" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"{name}: expected (N, C, H, W) of {sizes} sizes, got {shape!r}")
    return out


def float_input(x, name, what, ndim=None, min_ndim=0, params=()):
    """``x`` as a finite float array with ``ndim`` (or >= ``min_ndim``) axes, of the array module of ``x``
    and of the layer's ``params`` (a Python list ``x`` with CuPy weights becomes a CuPy array).

    ``what`` names the axes for the error message, e.g. ``"N x C x H x W"``.
    """
    xp = backend.get_array_module(x) if hasattr(x, "dtype") else backend.get_array_module(x, *params)
    x = as_float_array(x, name, xp)
    if ndim is not None:
        check_ndim(x, name, ndim, what)
    elif x.ndim < min_ndim:
        raise ValueError(f"{name}: expected {what}, got shape {tuple(x.shape)}")
    check_finite(x, name)
    return x


def check_param(p, name, x, shape, what):
    """A parameter (weight, bias, scale) of ``x``'s array module and dtype, of the exact ``shape``.

    ``shape`` may hold None for a free axis. A float64 weight with a float32 input is a ``TypeError``
    rather than a silent float64 computation (slower, and a sign of a mixed-up model).
    """
    xp = backend.get_array_module(x)
    if hasattr(p, "dtype") and backend.get_array_module(p) is not xp:
        raise TypeError(f"{name}: a {backend.get_array_module(p).__name__} array, but the input is a "
                        f"{xp.__name__} array; put both on one backend (backend.asarray / backend.to_host)")
    p = as_float_array(p, name, xp)
    if p.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, p.shape)):
        want = " x ".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{name}: expected {what} of shape {want}, got shape {tuple(p.shape)}")
    if p.dtype != x.dtype:
        raise TypeError(f"{name}: dtype {p.dtype} differs from the input's {x.dtype}; cast one of them")
    check_finite(p, name)
    return p


def check_dout(dout, shape, dtype):
    """The upstream gradient: a finite array of the forward output's exact ``shape``, cast to ``dtype``."""
    dout = as_float_array(dout, "dout")
    if tuple(dout.shape) != tuple(shape):
        raise ValueError(f"dout: expected the forward output's shape {tuple(shape)}, got {tuple(dout.shape)}")
    check_finite(dout, "dout")
    return dout.astype(dtype, copy=False)
