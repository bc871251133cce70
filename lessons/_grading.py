"""The grading machinery of the lessons: which implementation a test grades, and failures that diagnose.

Each lesson is one folder ``lessons/NN_<stage>/`` holding

    README.md           the lesson
    exercise.py         the stubs (committed): the library's signatures and docstrings, bodies raising
                        ``NotImplementedError``
    exercise_work.py    the student's working copy (git-ignored), made by ``mrcnn-edu lessons start``
    reference.py        the reference solutions: the library's own functions, re-exported
    test_NN_<stage>.py  the graded tests; ``TASKS = {1: "function_name", ...}`` and test names
                        ``test_task<N>_<what>`` tie every test to one task (more ``test_*.py`` files of the
                        same folder may add cases to the same tasks)

The pytest option ``--impl reference|exercise|stub`` (registered in ``lessons/conftest.py``) picks the file
the ``impl`` fixture loads: ``reference.py`` (the default, so a plain ``pytest`` grades the library),
``exercise_work.py`` or ``exercise.py``. Adding a lesson is adding one folder; nothing here changes.

The ``expect_*`` helpers fail with a message a student can act on: the case's name, its inputs, expected
against got (arrays up to 10 x 10 in full, the wrong entries marked ``*``), and, when the wrong answer is
the one a known mistake gives, a line ``looks like: ...`` that names it.

    expect_close(got, expected, case, rtol=1e-6, atol=1e-8, *, inputs=None, function=None, pick=None)
    expect_equal(got, expected, case, *, inputs=None, function=None, pick=None)
    expect_true(condition, case, detail="", *, inputs=None)
    expect_gradient(analytic, f, x, case, dout=1.0, eps=1e-6, tol=1e-6, *, inputs=None, function=None, pick=None)

The optional keyword arguments (all may be left out; the positional ones are as before):

    inputs   : dict, the graded call's arguments by parameter name, e.g. ``inputs=dict(boxes=boxes,
               scores=scores, iou_threshold=0.3)``. Shown under the case (small arrays in full), and given
               to the known mistakes of ``function``, which rerun the library with a mistaken convention
               on them. A backward whose input is a private cache takes the forward's arguments instead
               (``conv2d_backward``: ``x, w, b, stride, padding, dout``).
    function : the graded function's name, whose known mistakes to try; by default the task's function,
               ``TASKS[N]`` of the test module for a test named ``test_task<N>_...`` (so a second test file
               of a lesson, ``test_NN_cases.py``, restates ``TASKS`` or passes ``function=``).
    pick     : when ``got`` is a part of the function's return value that is not simply one of its outputs
               (a slice, one row): a callable that takes the function's whole return value and returns the
               part compared, e.g. ``pick=lambda anchors: anchors[1417]``. By default each output of a
               tuple (and that output with its size-1 axes squeezed) is tried.

A known mistake is registered with ``@known_mistake(function, ..., short=..., says=..., of="inputs")`` on a
function that takes the graded call's inputs by name (plus ``expected`` if it asks for it) and returns what
the mistaken version returns (a tuple for several outputs; None where the mistake changes nothing), or a
list of such answers (several variants of the mistake); ``of="expected"`` registers a function of the
expected answer alone (``dx`` rotated by 180 degrees). A failure whose ``got`` equals one of these answers
(at the test's tolerance), and not the expected, prints ``looks like: <says>``; ``short`` goes in the table
of ``lessons check``. Registered below: the +1 pixel width (box_area, box_iou, box_encode, nms), x and y
swapped (box_encode, box_decode, base_anchors, generate_anchors, grid_size, bilinear_interpolate, roi_pool,
roi_align, roi_align_backward), an unstable sort (nms), anchors at cell corners or centres, rounding half
to even (roi_pool), ``aligned`` off by half a pixel (roi_align, roi_align_backward), a softmax over classes
and a loss over all K channels (sigmoid_mask_loss), a kernel not flipped (conv2d_backward) and a dozen
more; and, for any function, a constant factor (a sum for a mean), a flipped sign, NaN from an overflow,
a transpose.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest

IMPLS = ("reference", "exercise", "stub")
IMPL_FILES = {"reference": "reference.py", "exercise": "exercise_work.py", "stub": "exercise.py"}
LESSON_DIR = re.compile(r"^\d\d_[a-z0-9_]+$")
TASK_TEST = re.compile(r"^test_task(\d+)_")
START_HINT = "run `mrcnn-edu lessons start` first"
MESSAGE_LINES = 60          # a failure's message as recorded for `lessons check`
FULL_VALUES = 120           # an array of at most this many values (and at most 12 columns) is printed whole


# ---------------------------------------------------------------------------------------------------------
# which implementation a test grades
# ---------------------------------------------------------------------------------------------------------

def add_options(parser):
    """Register ``--impl`` and ``--grading-report`` (once: a root ``conftest.py`` may call this too).

    pytest reads options only from the conftest files it loads before it parses the command line, and it
    picks those from the paths on the command line (or ``testpaths`` when there are none). ``pytest
    --impl exercise`` with no path fools that pre-parse: not knowing ``--impl`` yet, it takes ``exercise``
    for a path, so ``lessons/conftest.py`` is not loaded in time. A root ``conftest.py``, loaded for every
    path, that calls this makes every spelling work (``--impl=exercise`` always does).
    """
    group = parser.getgroup("mrcnn-edu lessons")
    try:
        group.addoption("--impl", choices=IMPLS, default="reference",
                        help="what the lesson tests grade: reference (the library, default), exercise (your "
                             "working copies lessons/NN_*/exercise_work.py) or stub (the committed exercise.py)")
        group.addoption("--grading-report", metavar="PATH", default=None,
                        help="write each lesson test's outcome as JSON to PATH (used by `mrcnn-edu lessons check`)")
    except ValueError:  # already registered by the other conftest
        pass


def load_impl(lesson_dir: Path, which: str):
    """The module under test for one lesson: ``reference.py``, ``exercise_work.py`` or ``exercise.py``.

    A missing working copy skips the lesson's tests (with how to make one); a working copy that does not
    import (a syntax error, say) fails each test with the error, so the other lessons are still graded.
    """
    if which not in IMPLS:
        raise ValueError(f"--impl: expected one of {IMPLS}, got {which!r}")
    path = Path(lesson_dir) / IMPL_FILES[which]
    shown = f"lessons/{Path(lesson_dir).name}/{path.name}"
    if not path.exists():
        if which == "exercise":
            pytest.skip(f"no working copy {shown}: {START_HINT}")
        pytest.fail(f"{shown} is missing", pytrace=False)
    name = f"lesson_{Path(lesson_dir).name}_{which}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # a fresh copy each session: the student's latest edit is what is graded
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the student's file: any error is reported, not raised
        sys.modules.pop(name, None)
        pytest.fail(f"{shown} does not import: {type(err).__name__}: {err}", pytrace=False)
    return module


def task_of(test_name: str):
    """Task number of a test named ``test_task<N>_...`` (parametrized ids included), or None."""
    match = TASK_TEST.match(test_name)
    return int(match.group(1)) if match else None


def _graded_function():
    """The function the running test grades: ``TASKS[N]`` of the module of the calling ``test_task<N>_``."""
    frame = sys._getframe(1)
    while frame is not None:
        number = task_of(frame.f_code.co_name)
        if number is not None:
            tasks = frame.f_globals.get("TASKS")
            return tasks.get(number) if isinstance(tasks, dict) else None
        frame = frame.f_back
    return None


# ---------------------------------------------------------------------------------------------------------
# values as text: arrays up to 10 x 10 in full, the wrong entries marked
# ---------------------------------------------------------------------------------------------------------

def _number(value, digits=4) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 10.0 ** -digits):
        return f"{value:.{digits}g}"
    text = np.format_float_positional(value, precision=digits, trim="-")
    return "0" if text == "-0" else text


def _digits(expected, got, bad) -> int:
    """Enough decimals (4 to 10) that every marked entry reads differently in expected and got."""
    if bad is None or not bad.any() or expected.shape != got.shape:
        return 4
    pairs = list(zip(expected[bad].ravel()[:50], got[bad].ravel()[:50]))
    for digits in range(4, 11):
        if all(_number(e, digits) != _number(g, digits) for e, g in pairs):
            return digits
    return 10


def _rows(arr, bad=None, digits=4, indent="    "):
    """An array of ndim <= 2 as numpy-like lines, each entry of ``bad`` followed by ``*``."""
    if arr.ndim == 0:
        return [indent + _number(arr[()], digits) + ("*" if bad is not None and bad[()] else "")]
    grid = arr if arr.ndim == 2 else arr.reshape(1, -1)
    marks = None if bad is None else (bad if bad.ndim == 2 else bad.reshape(1, -1))
    text = [[_number(v, digits) for v in row] for row in grid]
    width = max((len(s) for row in text for s in row), default=1)
    lines = []
    for i, row in enumerate(text):
        cells = [s.rjust(width) + ("" if marks is None else ("*" if marks[i, j] else " ")) for j, s in enumerate(row)]
        if arr.ndim == 1:   # one long row, wrapped every 10 values
            chunks = [" ".join(cells[k:k + 10]) for k in range(0, len(cells), 10)] or [""]
            return [indent + ("[" if k == 0 else " ") + c + ("]" if k == len(chunks) - 1 else "")
                    for k, c in enumerate(chunks)]
        first, last = i == 0, i == len(text) - 1
        lines.append(indent + ("[[" if first else " [") + " ".join(cells) + ("]]" if last else "]"))
    return lines or [indent + "[]"]


def _printable(arr) -> bool:
    return arr.dtype != object and arr.size <= FULL_VALUES and (arr.ndim < 2 or arr.shape[-1] <= 12)


def _planes(arr, bad=None, digits=4, indent="    ", only=None):
    """An array printed in full: 2-D planes under ``[i, j, :, :]`` labels for ndim > 2."""
    if arr.ndim <= 2:
        return _rows(arr, bad, digits, indent)
    lines = []
    lead = arr.shape[:-2]
    for index in np.ndindex(*lead):
        if only is not None and index not in only:
            continue
        label = ", ".join(str(i) for i in index) + ", :, :"
        lines.append(f"{indent}[{label}]")
        lines.extend(_rows(arr[index], None if bad is None else bad[index], digits, indent + "  "))
    return lines


def _kind(arr) -> str:
    return f"shape {arr.shape}, {arr.dtype}"


def show(a) -> str:
    """A value as a short string: small arrays in full, big ones summarized, with the shape."""
    if a is None:
        return "None"
    try:
        arr = np.asarray(a)
    except Exception:
        return repr(a)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        return repr(a)
    if arr.ndim == 0:
        return _number(arr[()])
    if _printable(arr):
        lines = _planes(arr, indent="")
        return "\n".join(lines) + f"   ({_kind(arr)})" if len(lines) > 1 else f"{lines[0]}   ({_kind(arr)})"
    return _summary(arr)


def _summary(arr) -> str:
    if arr.size == 0 or arr.dtype.kind not in "biuf":
        return f"an array of {_kind(arr)}"
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    if finite.size == 0:
        return f"an array of {_kind(arr)}, no finite value"
    return f"an array of {_kind(arr)}, values from {_number(finite.min())} to {_number(finite.max())}"


def _show_inputs(inputs: dict):
    lines = ["  inputs:"]
    width = max((len(str(k)) for k in inputs), default=0)
    for name, value in inputs.items():
        head = f"    {str(name).ljust(width)} = "
        try:
            arr = np.asarray(value) if not isinstance(value, (str, dict)) else None
        except Exception:
            arr = None
        if arr is None or arr.dtype == object or arr.dtype.kind not in "biuf":
            lines.append(head + repr(value))
        elif arr.size == 0:
            lines.append(head + f"empty ({_kind(arr)})")
        elif arr.ndim == 0:
            lines.append(head + (repr(bool(value)) if arr.dtype.kind == "b" else _number(arr[()])))
        elif isinstance(value, (tuple, list)) and arr.ndim == 1 and arr.size <= 12:
            lines.append(head + repr(tuple(value) if isinstance(value, tuple) else list(value)))
        elif _printable(arr) and (arr.squeeze().ndim <= 2 or arr.size <= 24):   # inputs: one plane, or tiny
            body = _planes(arr, indent=" " * len(head))
            lines.append(head + body[0].lstrip() + (f"   ({_kind(arr)})" if len(body) == 1 else ""))
            lines.extend(body[1:])
            if len(body) > 1:
                lines[-1] += f"   ({_kind(arr)})"
        else:
            lines.append(head + _summary(arr))
    return lines


def _where(index) -> str:
    return "(" + ", ".join(str(int(i)) for i in index) + ")"


def _compare(expected, got, bad, digits):
    """``expected`` and ``got`` (same shape), in full when small, and where they differ."""
    lines = []
    n_bad = int(bad.sum())
    big = not _printable(expected)
    only = None
    if not big and expected.ndim > 2 and expected.size > 40:   # many planes: those with a wrong entry
        only = {tuple(int(i) for i in idx[:-2]) for idx in np.argwhere(bad)[:200]}
        if len(only) > 3:
            only = set(sorted(only)[:3])
    if big:
        lines.append(f"  expected {_summary(expected)}")
        lines.append(f"  got      {_summary(got)}")
    else:
        if expected.ndim == 0:
            lines.append(f"  expected {_number(expected[()], digits)}")
            lines.append(f"  got      {_number(got[()], digits)}")
        else:
            lines.append(f"  expected ({_kind(expected)})")
            lines.extend(_planes(expected, np.zeros(bad.shape, dtype=bool), digits, only=only))   # aligned with got
            marks = "the wrong value" if n_bad == 1 else "the wrong values"
            lines.append(f"  got      ({_kind(got)}; * marks {marks})")
            lines.extend(_planes(got, bad, digits, only=only))
        if only is not None:
            wrong = len({tuple(int(i) for i in idx[:-2]) for idx in np.argwhere(bad)})
            lines.append(f"  (only planes holding a wrong value are shown: {len(only)} of the {wrong} that do, "
                         f"out of {int(np.prod(expected.shape[:-2]))})")
    if expected.ndim == 0:
        return lines
    positions = [tuple(int(i) for i in idx) for idx in np.argwhere(bad)]
    if n_bad <= 3:
        detail = "; ".join(f"at {_where(p)}: expected {_number(expected[p], digits)}, got {_number(got[p], digits)}"
                           for p in positions)
        lines.append(f"  {n_bad} of {bad.size} values differ, {detail}")
    else:
        shown = ", ".join(_where(p) for p in positions[:6]) + (", ..." if n_bad > 6 else "")
        lines.append(f"  {n_bad} of {bad.size} values differ, at {shown}")
        if expected.dtype.kind == "f" or got.dtype.kind == "f":
            diff = np.where(np.isnan(got), np.inf, np.abs(got.astype(np.float64) - expected.astype(np.float64)))
            worst = np.unravel_index(int(np.argmax(np.where(bad, diff, -1))), got.shape)
            lines.append(f"  the largest difference is {float(diff[worst]):.4g} at {_where(worst)}: expected "
                         f"{_number(expected[worst], digits)}, got {_number(got[worst], digits)}")
    return lines


# ---------------------------------------------------------------------------------------------------------
# the expect_* helpers
# ---------------------------------------------------------------------------------------------------------

class GradingFailure(AssertionError):
    """A failed expectation: the message, the case it names and the known mistakes it looks like."""

    def __init__(self, message, case="", looks_like=()):
        super().__init__(message)
        self.case = case
        self.looks_like = [m.short for m in looks_like]


def _as_array(got, case, inputs=None):
    __tracebackhide__ = True
    head = f"{case}:" + ("\n" + "\n".join(_show_inputs(inputs)) if inputs else "")
    if got is None:
        raise GradingFailure(f"{head}\n  got None; does the function return its result?", case)
    try:
        arr = np.asarray(got)
    except Exception as err:
        raise GradingFailure(f"{head}\n  got {type(got).__name__}, which is not an array ({err})", case) from None
    if arr.dtype == object:
        raise GradingFailure(f"{head}\n  got {show(got)}, which is not an array of numbers", case)
    return arr


def _fail(case, expected, got, bad, same, inputs, function, pick, note=""):
    """Raise the failure: case, inputs, expected against got, and the known mistakes ``got`` looks like."""
    __tracebackhide__ = True
    lines = [f"{case}:"]
    if inputs:
        lines += _show_inputs(inputs)
    if bad is None:   # shapes (or kinds) differ: both in full, nothing to mark
        lines.append(f"  expected {show(expected)}")
        lines.append(f"  got      {show(got)}")
    else:
        lines += _compare(expected, got, bad, _digits(expected, got, bad))
    if note:
        lines.append(f"  {note}")
    found = diagnose(function, inputs, expected, got, pick, same)
    lines += [f"  looks like: {m.says}" for m in found]
    raise GradingFailure("\n".join(lines), case, found)


def _close(rtol, atol):
    def same(a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
            return False
        return bool(np.allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True))
    return same


def _exact(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype.kind in "biuf" and b.dtype.kind in "biuf" and bool(
        np.array_equal(a.astype(np.float64), b.astype(np.float64), equal_nan=True))


def expect_close(got, expected, case, rtol=1e-6, atol=1e-8, *, inputs=None, function=None, pick=None):
    """``got`` equals ``expected`` up to ``atol + rtol * |expected|`` elementwise, same shape.

    ``inputs``, ``function``, ``pick``: see the module docstring (shown inputs, known mistakes).
    """
    __tracebackhide__ = True
    function = function or _graded_function()
    expected = np.asarray(expected, dtype=np.float64)
    arr = _as_array(got, case, inputs)
    # a known mistake matches at the test's tolerance, loosened a little for a float32 answer
    same = _close(max(rtol, 1e-6) * 10, max(atol, 1e-9) * 10)
    if arr.shape != expected.shape:
        _fail(case, expected, arr, None, same, inputs, function, pick,
              f"shape: expected {expected.shape}, got {arr.shape}")
    if arr.dtype.kind not in "biuf":
        _fail(case, expected, arr, None, same, inputs, function, pick, f"dtype: expected numbers, got {arr.dtype}")
    values = arr.astype(np.float64)
    bad = ~np.isclose(values, expected, rtol=rtol, atol=atol)
    if bad.any():
        _fail(case, expected, values, bad, same, inputs, function, pick)


def expect_equal(got, expected, case, *, inputs=None, function=None, pick=None):
    """``got`` equals ``expected`` exactly (integers, booleans, indices), same shape.

    ``inputs``, ``function``, ``pick``: see the module docstring (shown inputs, known mistakes).
    """
    __tracebackhide__ = True
    function = function or _graded_function()
    expected = np.asarray(expected)
    arr = _as_array(got, case, inputs)
    if arr.shape != expected.shape:
        _fail(case, expected, arr, None, _exact, inputs, function, pick,
              f"shape: expected {expected.shape}, got {arr.shape}")
    if not np.array_equal(arr, expected):
        _fail(case, expected, arr, np.asarray(arr != expected), _exact, inputs, function, pick)


def expect_true(condition, case, detail="", *, inputs=None):
    """A property that must hold (a count, a subset), with what was seen (and the inputs, if given)."""
    __tracebackhide__ = True
    if not condition:
        lines = [f"{case}" + (":" if detail or inputs else "")]
        if inputs:
            lines += _show_inputs(inputs)
        if detail:
            lines.append(f"  {detail}")
        raise GradingFailure("\n".join(lines), case)


def expect_gradient(analytic, f, x, case, dout=1.0, eps=1e-6, tol=1e-6, *, inputs=None, function=None, pick=None):
    """A hand-written gradient against central finite differences of ``sum(f(x) * dout)`` (``x`` float64).

    ``rel_error = |a - n| / (|a| + |n|) < tol`` as in ``mrcnn_edu.gradcheck``; the failure shows both,
    the entries off by more than ``tol`` relative to the largest magnitude marked.
    """
    __tracebackhide__ = True
    from mrcnn_edu.gradcheck import numerical_gradient, rel_error

    function = function or _graded_function()
    arr = _as_array(analytic, case, inputs)
    numeric = numerical_gradient(lambda: np.asarray(f(x)), x, dout, eps=eps)
    case_fd = case + " (expected = finite differences)"
    same = _close(1e-5, 1e-7)
    if arr.shape != numeric.shape:
        _fail(case_fd, numeric, arr, None, same, inputs, function, pick,
              f"shape: expected {numeric.shape}, got {arr.shape}")
    err = rel_error(arr, numeric)
    if not err < tol:
        values = arr.astype(np.float64)
        scale = max(float(np.max(np.abs(numeric), initial=0.0)), float(np.max(np.abs(values), initial=0.0)), 1e-12)
        bad = ~(np.abs(values - numeric) <= max(tol, 1e-5) * scale)
        if not bad.any():
            bad = np.ones(values.shape, dtype=bool)
        _fail(case_fd, numeric, values, bad, same, inputs, function, pick,
              f"relative error {err:.2e}, needs < {tol:g}")


# ---------------------------------------------------------------------------------------------------------
# known mistakes: a wrong answer that a known mistake gives is named
# ---------------------------------------------------------------------------------------------------------

class Mistake(NamedTuple):
    short: str                  # a few words, for the table of `lessons check`
    says: str                   # the line after "looks like: "
    answer: Callable            # what the mistake returns (of="inputs") or makes of the expected (of="expected")
    of: str = "inputs"


KNOWN_MISTAKES: dict = {}        # function name -> [Mistake, ...]


def known_mistake(*functions, short, says, of="inputs"):
    """Register the decorated function as a known mistake of each of ``functions`` (see the module docstring)."""
    if of not in ("inputs", "expected"):
        raise ValueError(f"of: expected 'inputs' or 'expected', got {of!r}")

    def register(answer):
        for name in functions:
            KNOWN_MISTAKES.setdefault(name, []).append(Mistake(short, says, answer, of))
        return answer
    return register


def _call(answer, inputs, expected):
    """Call a mistake's function with the inputs it names (None when one it needs is missing)."""
    params = inspect.signature(answer).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = dict(inputs)
    else:
        kwargs = {k: v for k, v in inputs.items() if k in params}
    if "expected" in params:
        kwargs["expected"] = expected
    missing = [n for n, p in params.items() if p.default is p.empty and n not in kwargs
               and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return None if missing else answer(**kwargs)


def _numeric(value):
    """``value`` as an array of numbers, or None (a tuple of unlike outputs, a cache, None)."""
    if value is None:
        return None
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        return None
    return arr if arr.dtype.kind in "biuf" else None


def _outputs(answer, pick):
    """The arrays a mistaken answer offers for comparison: the whole, each output, each squeezed."""
    if pick is not None:
        yield _numeric(pick(answer))
        return
    parts = [answer] + (list(answer) if isinstance(answer, tuple) else [])
    for part in parts:
        arr = _numeric(part)
        if arr is not None:
            yield arr
            if arr.squeeze().shape != arr.shape:
                yield arr.squeeze()


def _candidates(mistake, inputs, expected, pick):
    if mistake.of == "expected":
        made = mistake.answer(expected)
        return made if isinstance(made, list) else [made]
    if inputs is None:
        return []
    made = _call(mistake.answer, inputs, expected)
    if made is None:
        return []
    return [out for answer in (made if isinstance(made, list) else [made]) for out in _outputs(answer, pick)]


def diagnose(function, inputs, expected, got, pick=None, same=_exact) -> list:
    """The known mistakes (of ``function``, then those of any function) whose answer is ``got``."""
    found = []
    expected, got = np.asarray(expected), np.asarray(got)
    specific = KNOWN_MISTAKES.get(function, [])
    for mistake in specific + _anywhere(expected, got):
        if found and mistake not in specific:
            break   # a named mistake says more than a factor or a sign
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                hit = any(c is not None and same(got, c) and not same(expected, c)
                          for c in map(_numeric, _candidates(mistake, inputs, expected, pick)))
        except Exception:   # a mistake that does not apply to these inputs
            hit = False
        if hit and mistake.short not in [m.short for m in found]:   # one line per mistake, the most specific first
            found.append(mistake)
    return found


def _anywhere(expected, got) -> list:
    """Mistakes of any function, read off the values: a constant factor, a sign, NaN, a transpose."""
    found = []
    if expected.dtype.kind != "f" and got.dtype.kind != "f":
        return found
    e, g = expected.astype(np.float64), got.astype(np.float64)
    if e.shape == g.shape and np.isfinite(e).all() and not np.isfinite(g).all():
        found.append(Mistake("overflow", "NaN or inf where the answer is finite: an overflow (exp of a large "
                             "number: subtract the max first, or use log(1 + exp(-|x|))) or a 0 / 0", lambda e: g,
                             "expected"))
    if e.shape != g.shape or not np.isfinite(g).all() or not np.any(e):
        return found
    nonzero = np.abs(e) > 1e-12
    ratio = g[nonzero] / e[nonzero]
    if np.allclose(g[~nonzero], 0) and np.allclose(ratio, ratio[0], rtol=1e-6):
        c = float(ratio[0])
        if abs(c + 1) < 1e-6:
            found.append(Mistake("sign flipped", "the sign is flipped: every value is minus the expected",
                                 lambda e: -e, "expected"))
        else:
            for factor, how in ((c, "times"), (1 / c if c else 0, "divided by")):
                n = round(factor)
                if n >= 2 and abs(factor - n) < 1e-6 * n:
                    found.append(Mistake(f"{how} {n}", f"every value is the expected {how} {n}: a sum where a "
                                         "mean was asked, a mean over the wrong count, or a factor applied twice",
                                         lambda e, c=c: e * c, "expected"))
                    break
    if e.ndim >= 2 and e.shape[-1] == e.shape[-2] > 1 and np.allclose(g, np.swapaxes(e, -1, -2)):
        found.append(Mistake("transposed", "rows and columns swapped (the answer transposed: x and y, or a "
                             "missing .T)", lambda e: np.swapaxes(e, -1, -2), "expected"))
    return found


def _swap_xy_columns(boxes):
    """``(x1, y1, x2, y2)`` read as ``(y1, x1, y2, x2)``: every group of 4 columns permuted."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim < 1 or boxes.shape[-1] % 4:
        return None
    order = np.arange(boxes.shape[-1]).reshape(-1, 4)[:, [1, 0, 3, 2]].ravel()
    return boxes[..., order]


# --- lesson 01: boxes -------------------------------------------------------------------------------------

PLUS_ONE = ("the +1 pixel width: widths and heights computed as x2 - x1 + 1 (the old integer-pixel "
            "convention of Caffe and Detectron); here boxes are continuous, width x2 - x1, no +1, as torchvision")


def _iou_plus_one(boxes1, boxes2):
    b1, b2 = np.asarray(boxes1, np.float64), np.asarray(boxes2, np.float64)
    area1 = (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1)
    area2 = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    wh = np.maximum(np.minimum(b1[:, None, 2:], b2[None, :, 2:]) - np.maximum(b1[:, None, :2], b2[None, :, :2]) + 1, 0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / np.where(union > 0, union, 1)


@known_mistake("box_area", short="+1 pixel width", says=PLUS_ONE)
def _area_plus_one(boxes):
    b = np.asarray(boxes, np.float64)
    return (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)


@known_mistake("box_iou", short="+1 pixel width", says=PLUS_ONE)
def _box_iou_plus_one(boxes1, boxes2):
    return _iou_plus_one(boxes1, boxes2)


@known_mistake("box_iou", short="union counts the intersection twice",
               says="the union counts the intersection twice: union = area1 + area2 - intersection")
def _iou_union_twice(boxes1, boxes2):
    from mrcnn_edu.boxes import box_area, box_iou

    iou = np.asarray(box_iou(boxes1, boxes2), np.float64)
    total = np.asarray(box_area(boxes1), np.float64)[:, None] + np.asarray(box_area(boxes2), np.float64)[None, :]
    inter = iou * total / (1 + iou)          # from iou = inter / (total - inter)
    return inter / np.where(total > 0, total, 1)


@known_mistake("box_encode", "box_decode", "base_anchors", "generate_anchors", short="x and y swapped", of="expected",
               says="x and y swapped: every box (or delta) comes out as (y1, x1, y2, x2) instead of (x1, y1, x2, y2) "
                    "(for anchors: a ratio taken as w / h instead of h / w does the same)")
def _columns_swapped(expected):
    return _swap_xy_columns(expected)


@known_mistake("box_encode", short="+1 pixel width", says=PLUS_ONE)
def _encode_plus_one(reference, targets, weights=(1.0, 1.0, 1.0, 1.0)):
    r, t = np.asarray(reference, np.float64), np.asarray(targets, np.float64)
    wx, wy, ww, wh = weights
    rw, rh, tw, th = r[:, 2] - r[:, 0] + 1, r[:, 3] - r[:, 1] + 1, t[:, 2] - t[:, 0] + 1, t[:, 3] - t[:, 1] + 1
    rx, ry, tx, ty = r[:, 0] + 0.5 * rw, r[:, 1] + 0.5 * rh, t[:, 0] + 0.5 * tw, t[:, 1] + 0.5 * th
    return np.stack([wx * (tx - rx) / rw, wy * (ty - ry) / rh, ww * np.log(tw / rw), wh * np.log(th / rh)], axis=1)


@known_mistake("box_decode", short="dw, dh not clamped",
               says="dw and dh not clamped: clamp them at log(1000 / 16) before exp, so a wild delta cannot make a "
                    "box wider than 1000 of its reference")
def _decode_unclamped(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0)):
    from mrcnn_edu.boxes import box_decode

    return box_decode(deltas, reference, weights, clip=np.inf)


@known_mistake("box_decode", short="deltas read as (dy, dx, dh, dw)",
               says="x and y swapped: the deltas read as (dy, dx, dh, dw) instead of (dx, dy, dw, dh)")
def _decode_swapped_deltas(deltas, reference, weights=(1.0, 1.0, 1.0, 1.0)):
    from mrcnn_edu.boxes import box_decode

    return box_decode(_swap_xy_columns(deltas), reference, weights)


def _greedy_nms(boxes, scores, iou_threshold, order, iou=None, strict=True):
    from mrcnn_edu.boxes import box_iou

    boxes = np.asarray(boxes, np.float64)
    ious = np.asarray((iou or box_iou)(boxes, boxes))
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for i in order:
        if not suppressed[i]:
            keep.append(int(i))
            suppressed |= ious[i] > iou_threshold if strict else ious[i] >= iou_threshold
    return np.array(keep, dtype=np.int64)


@known_mistake("nms", short="unstable sort (ties)",
               says="an unstable sort: boxes with equal scores come out in another order. Sort by decreasing "
                    "score with a stable sort, np.argsort(-scores, kind='stable'), so ties keep their input order "
                    "(np.argsort(scores)[::-1] reverses them)")
def _nms_unstable(boxes, scores, iou_threshold):
    s = np.asarray(scores, np.float64)
    orders = [np.argsort(s, kind="stable")[::-1], np.argsort(-s, kind="quicksort"), np.argsort(-s, kind="heapsort")]
    return [_greedy_nms(boxes, s, iou_threshold, order) for order in orders]


@known_mistake("nms", short="+1 pixel width", says=PLUS_ONE)
def _nms_plus_one(boxes, scores, iou_threshold):
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return _greedy_nms(boxes, scores, iou_threshold, order, iou=_iou_plus_one)


@known_mistake("nms", short="IoU >= threshold suppresses",
               says="a box with IoU exactly at the threshold was suppressed: suppress only IoU > iou_threshold")
def _nms_not_strict(boxes, scores, iou_threshold):
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return _greedy_nms(boxes, scores, iou_threshold, order, strict=False)


@known_mistake("nms", short="kept indices sorted by index", of="expected",
               says="the kept indices come sorted by index: return them by decreasing score")
def _nms_sorted_by_index(expected):
    return np.sort(expected)


# --- lesson 02: anchors -----------------------------------------------------------------------------------

@known_mistake("grid_size", short="(columns, rows)", of="expected",
               says="(columns, rows) instead of (rows, columns): image_size is (height, width), height first")
def _grid_swapped(expected):
    swapped = np.array(expected)
    swapped[[0, 1]] = swapped[[1, 0]]   # (rows, columns[, cells])
    return swapped


@known_mistake("grid_size", short="floor instead of ceil",
               says="floor instead of ceil: a partial cell at the border still gets anchors, ceil(H / stride) rows")
def _grid_floor(image_size, stride=16):
    return image_size[0] // stride, image_size[1] // stride


@known_mistake("base_anchors", short="not rounded",
               says="the corners not rounded: torchvision rounds the base anchors to whole pixels (half to even)")
def _base_unrounded(sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0)):
    h = np.sqrt(np.asarray(ratios, np.float32))[:, None] * np.asarray(sizes, np.float32)[None, :]
    w = (1 / np.sqrt(np.asarray(ratios, np.float32)))[:, None] * np.asarray(sizes, np.float32)[None, :]
    return np.stack([-w, -h, w, h], axis=-1).reshape(-1, 4) / 2


@known_mistake("generate_anchors", short="anchors at cell corners",
               says="anchors centred on the cells' corners: offset was ignored (taken as 0); the centre of cell "
                    "(i, j) is ((j + offset) * stride, (i + offset) * stride), offset=0.5 being the cell's centre")
def _anchors_at_corners(image_size, stride=16, sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0), offset=0.0,
                        dtype="float64"):
    from mrcnn_edu.anchors import generate_anchors

    return None if offset == 0 else generate_anchors(image_size, stride, sizes, ratios, 0.0, "float64")


@known_mistake("generate_anchors", short="anchors at cell centres",
               says="anchors centred in the cells where offset=0 puts them on the cells' corners (16 j, 16 i), as "
                    "torchvision: add offset * stride, not a fixed stride / 2")
def _anchors_at_centres(image_size, stride=16, sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0), offset=0.0,
                        dtype="float64"):
    from mrcnn_edu.anchors import generate_anchors

    return None if offset == 0.5 else generate_anchors(image_size, stride, sizes, ratios, 0.5, "float64")


@known_mistake("generate_anchors", short="image_size read as (width, height)",
               says="x and y swapped: image_size read as (width, height); it is (height, width)")
def _anchors_size_swapped(image_size, stride=16, sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0), offset=0.0,
                          dtype="float64"):
    from mrcnn_edu.anchors import generate_anchors

    return generate_anchors(tuple(image_size)[::-1], stride, sizes, ratios, offset, "float64")


@known_mistake("generate_anchors", short="cells in the wrong order",
               says="the right anchors in another order: location-major, the cells row by row (y outer, x inner), "
                    "and the k anchors of one cell next to each other")
def _anchors_reordered(image_size, stride=16, sizes=(128, 256, 512), ratios=(0.5, 1.0, 2.0), offset=0.0,
                       dtype="float64"):
    from mrcnn_edu.anchors import generate_anchors, grid_size

    gh, gw = grid_size(image_size, stride)
    a = np.asarray(generate_anchors(image_size, stride, sizes, ratios, offset, "float64")).reshape(gh, gw, -1, 4)
    return [a.transpose(1, 0, 2, 3).reshape(-1, 4), a.transpose(2, 0, 1, 3).reshape(-1, 4),
            a.transpose(2, 1, 0, 3).reshape(-1, 4)]


# --- lesson 04: RoIPool and RoIAlign ----------------------------------------------------------------------

def _bilinear(plane, y, x):
    from mrcnn_edu.roi import roi_align

    roi = np.array([[0.0, x - 0.5, y - 0.5, x + 0.5, y + 0.5]])
    return float(roi_align(np.asarray(plane, np.float64)[None, None], roi, 1, sampling_ratio=1)[0, 0, 0, 0])


@known_mistake("bilinear_interpolate", short="x and y swapped",
               says="x and y swapped: the plane read at (y=x, x=y); rows are y, columns are x: plane[y, x]")
def _bilinear_swapped(plane, y, x):
    return _bilinear(plane, x, y)


def _rois_swapped(rois):
    return np.asarray(rois, np.float64)[:, [0, 2, 1, 4, 3]]


@known_mistake("roi_pool", short="rounding half to even",
               says="rounding half to even: np.round (and Python's round) take 2.5 to 2; RoI corners are rounded "
                    "half away from zero, as C's round (2.5 -> 3): np.floor(x + 0.5) for x >= 0")
def _pool_half_even(features, rois, output_size, spatial_scale=1.0, bins="caffe"):
    from mrcnn_edu.roi import roi_pool

    r = np.asarray(rois, np.float64).copy()
    scaled = r[:, 1:] * spatial_scale
    if not np.any(np.abs(scaled - np.floor(scaled)) == 0.5):
        return None
    r[:, 1:] = np.round(scaled) / spatial_scale
    return roi_pool(features, r, output_size, spatial_scale, bins)


@known_mistake("roi_pool", short="the other bin rule",
               says="the other bin rule: bins='caffe' is floor(p s / n) to ceil((p + 1) s / n), bins may overlap; "
                    "bins='slides' is floor(p s / n) to floor((p + 1) s / n), never overlapping")
def _pool_other_bins(features, rois, output_size, spatial_scale=1.0, bins="caffe"):
    from mrcnn_edu.roi import roi_pool

    return roi_pool(features, rois, output_size, spatial_scale, "slides" if bins == "caffe" else "caffe")


SWAPPED_ROIS = "x and y swapped: each RoI read as (batch, y1, x1, y2, x2); it is (batch, x1, y1, x2, y2)"
NO_SCALE = "spatial_scale not applied: RoIs are in image pixels; multiply them by spatial_scale to reach the map"


@known_mistake("roi_pool", short="x and y swapped", says=SWAPPED_ROIS)
def _pool_swapped(features, rois, output_size, spatial_scale=1.0, bins="caffe"):
    from mrcnn_edu.roi import roi_pool

    return roi_pool(features, _rois_swapped(rois), output_size, spatial_scale, bins)


@known_mistake("roi_pool", short="spatial_scale ignored", says=NO_SCALE)
def _pool_no_scale(features, rois, output_size, spatial_scale=1.0, bins="caffe"):
    from mrcnn_edu.roi import roi_pool

    return None if spatial_scale == 1 else roi_pool(features, rois, output_size, 1.0, bins)


@known_mistake("roi_pool_backward", short="+= with repeated indices",
               says="a pixel that wins several bins got the gradient of one only: dx[idx] += g with repeated "
                    "indices adds once; accumulate with np.add.at(dx, idx, g)")
def _pool_backward_assign(grad_output, argmax, input_shape, rois=None):
    g, a = np.asarray(grad_output, np.float64), np.asarray(argmax)
    n, c, h, w = input_shape
    batch = np.zeros(len(a), dtype=np.int64) if rois is None else np.asarray(rois)[:, 0].astype(np.int64)
    dx = np.zeros(n * c * h * w)
    r, ch = np.meshgrid(np.arange(a.shape[0]), np.arange(c), indexing="ij")
    plane = (batch[r] * c + ch)[..., None, None] * (h * w)
    valid = a >= 0
    dx[(plane + a)[valid]] += g[valid]          # the mistake: fancy-index += keeps one of the repeats
    return dx.reshape(input_shape)


ALIGNED = ("`aligned` off by half a pixel: aligned=True shifts the box by -0.5 pixel after spatial_scale (and does "
           "not force it to at least 1 x 1); aligned=False does neither")


@known_mistake("roi_align", short="aligned off by half a pixel", says=ALIGNED)
def _align_flipped(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    from mrcnn_edu.roi import roi_align

    return roi_align(features, rois, output_size, spatial_scale, sampling_ratio, not aligned)


@known_mistake("roi_align", short="aligned shifted the wrong way",
               says="`aligned` shifted the wrong way: aligned=True subtracts 0.5 from the scaled coordinates")
def _align_wrong_way(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    from mrcnn_edu.roi import roi_align

    if not aligned:
        return None
    r = np.asarray(rois, np.float64).copy()
    r[:, 1:] += 1.0 / spatial_scale
    return roi_align(features, r, output_size, spatial_scale, sampling_ratio, True)


@known_mistake("roi_align", short="1 x 1 minimum with aligned=True",
               says="RoIs forced to at least 1 x 1 with aligned=True: only the legacy aligned=False does that")
def _align_min_size(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    from mrcnn_edu.roi import roi_align

    r = np.asarray(rois, np.float64).copy()
    size = (r[:, 3:5] - r[:, 1:3]) * spatial_scale
    if not aligned or np.all(size >= 1):
        return None
    r[:, 3:5] = r[:, 1:3] + np.maximum(size, 1) / spatial_scale
    return roi_align(features, r, output_size, spatial_scale, sampling_ratio, True)


@known_mistake("roi_align", short="x and y swapped", says=SWAPPED_ROIS)
def _align_swapped(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    from mrcnn_edu.roi import roi_align

    return roi_align(features, _rois_swapped(rois), output_size, spatial_scale, sampling_ratio, aligned)


@known_mistake("roi_align", short="spatial_scale ignored", says=NO_SCALE)
def _align_no_scale(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    from mrcnn_edu.roi import roi_align

    return None if spatial_scale == 1 else roi_align(features, rois, output_size, 1.0, sampling_ratio, aligned)


@known_mistake("roi_align_backward", short="aligned off by half a pixel", says=ALIGNED)
def _align_backward_flipped(grad_output, rois, input_shape, output_size, spatial_scale=1.0, sampling_ratio=-1,
                            aligned=False):
    from mrcnn_edu.roi import roi_align_backward

    return roi_align_backward(grad_output, rois, input_shape, output_size, spatial_scale, sampling_ratio, not aligned)


@known_mistake("roi_align_backward", short="x and y swapped", says=SWAPPED_ROIS)
def _align_backward_swapped(grad_output, rois, input_shape, output_size, spatial_scale=1.0, sampling_ratio=-1,
                            aligned=False):
    from mrcnn_edu.roi import roi_align_backward

    return roi_align_backward(grad_output, _rois_swapped(rois), input_shape, output_size, spatial_scale,
                              sampling_ratio, aligned)


# --- lesson 05: losses ------------------------------------------------------------------------------------

@known_mistake("sigmoid_mask_loss", short="softmax over classes",
               says="a softmax over the K classes where Mask R-CNN takes a per-class sigmoid: only the RoI's own "
                    "channel is trained, with binary cross-entropy, so classes do not compete for a pixel")
def _mask_softmax(mask_logits, labels, mask_targets):
    from mrcnn_edu.losses import softmax_mask_loss

    z = np.asarray(mask_logits, np.float64)
    rois = np.arange(len(z))
    # the other spelling: softmax over the channels, then binary cross-entropy on the own channel's probability
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    own = np.clip(p[rois, labels], 1e-300, 1 - 1e-16)
    t = np.asarray(mask_targets, np.float64)
    loss = -np.mean(t * np.log(own) + (1 - t) * np.log(1 - own))
    return [softmax_mask_loss(mask_logits, labels, mask_targets), (loss,)]


@known_mistake("sigmoid_mask_loss", short="loss over all K channels",
               says="the mask loss over all K channels: only the channel of each RoI's class (labels[r]) is "
                    "trained; the other K - 1 channels get no loss and zero gradient")
def _mask_all_channels(mask_logits, labels, mask_targets):
    from mrcnn_edu.losses import binary_cross_entropy_with_logits

    z = np.asarray(mask_logits, np.float64)
    r, k = z.shape[:2]
    t = np.asarray(mask_targets, np.float64)
    same = np.broadcast_to(t[:, None], z.shape)
    onehot = np.zeros(z.shape)
    onehot[np.arange(r), labels] = t
    answers = []
    for target in (same, onehot):
        loss, grad = binary_cross_entropy_with_logits(z, target, "mean")      # mean over R K m m
        answers += [(loss, grad), (loss * k, grad * k)]                          # or summed over the K channels
    return answers


@known_mistake("softmax_mask_loss", short="per-class sigmoid",
               says="a per-class sigmoid where the softmax over the K channels was asked: here every channel "
                    "competes for each pixel (the pixel's class: the RoI's label inside the mask, 0 outside)")
def _mask_sigmoid(mask_logits, labels, mask_targets):
    from mrcnn_edu.losses import sigmoid_mask_loss

    return sigmoid_mask_loss(mask_logits, labels, mask_targets)


@known_mistake("smooth_l1_loss", short="beta ignored",
               says="beta ignored (taken as 1): the quadratic part is 0.5 x^2 / beta for |x| < beta, the linear "
                    "part |x| - beta / 2")
def _smooth_l1_beta_one(pred, target, beta=1.0, reduction="mean"):
    from mrcnn_edu.losses import smooth_l1_loss

    return None if beta == 1 else smooth_l1_loss(pred, target, 1.0, reduction)


# --- lesson 06: layers ------------------------------------------------------------------------------------

@known_mistake("conv2d_backward", short="kernel not flipped", of="expected",
               says="dx rotated by 180 degrees: the kernel was not flipped (dx correlates dout with the kernel "
                    "rotated by 180 degrees, w[:, :, ::-1, ::-1])")
def _dx_rotated(expected):
    return np.asarray(expected)[..., ::-1, ::-1] if np.ndim(expected) == 4 else None


@known_mistake("conv2d_backward", short="kernel not flipped",
               says="the kernel not flipped: dx is dout (padded) correlated with the kernel rotated by 180 "
                    "degrees (w[:, :, ::-1, ::-1], its channel axes swapped); with the kernel as is, dx comes out "
                    "rotated")
def _conv_backward_unflipped(x, w, dout, b=None, stride=1, padding=0):
    from mrcnn_edu.nn.functional import conv2d, conv2d_backward

    flipped = np.ascontiguousarray(np.asarray(w, np.float64)[:, :, ::-1, ::-1])
    _, cache = conv2d(np.asarray(x, np.float64), flipped, None if b is None else np.asarray(b, np.float64),
                      stride, padding)
    return conv2d_backward(np.asarray(dout, np.float64), cache)[0]


@known_mistake("conv2d", short="kernel flipped in the forward",
               says="the kernel flipped in the forward (a convolution in the maths sense): a conv layer computes "
                    "cross-correlation, out[y, x] = sum w[i, j] x[y + i, x + j], no flip")
def _conv_flipped(x, w, b=None, stride=1, padding=0):
    from mrcnn_edu.nn.functional import conv2d

    return conv2d(np.asarray(x, np.float64), np.ascontiguousarray(np.asarray(w, np.float64)[:, :, ::-1, ::-1]),
                  None if b is None else np.asarray(b, np.float64), stride, padding)


# ---------------------------------------------------------------------------------------------------------
# the report that `mrcnn-edu lessons check` reads
# ---------------------------------------------------------------------------------------------------------

def record(results: dict, item, call, report):
    """Fold one test phase (setup, call, teardown) into ``results[nodeid]``."""
    entry = results.setdefault(item.nodeid, {
        "lesson": Path(str(item.fspath)).parent.name,
        "file": Path(str(item.fspath)).name,
        "test": item.name,
        "task": task_of(item.name),
        "title": getattr(getattr(item, "module", None), "TASKS", {}).get(task_of(item.name), ""),
        "outcome": "passed",
        "not_written": None,
        "message": "",
        "case": "",
        "looks_like": [],
    })
    if report.passed or entry["outcome"] != "passed":
        return  # the first problem is the one to show
    if report.skipped:
        entry["outcome"] = "skipped"
        longrepr = report.longrepr
        entry["message"] = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return
    entry["outcome"] = "failed" if report.when == "call" else "error"
    excinfo = call.excinfo
    if excinfo is not None and excinfo.errisinstance(NotImplementedError):
        entry["not_written"] = excinfo.traceback[-1].name   # the stub that raised
    entry["message"] = _short(excinfo)
    if excinfo is not None and isinstance(excinfo.value, GradingFailure):
        entry["case"] = excinfo.value.case
        entry["looks_like"] = list(excinfo.value.looks_like)
    elif excinfo is not None and excinfo.errisinstance(AssertionError):   # a plain assert: its first line
        entry["case"] = entry["message"].splitlines()[0].rstrip(":") if entry["message"] else item.name
    else:   # an error raised by the code under test: the test names the case
        entry["case"] = item.name


def _short(excinfo, lines=MESSAGE_LINES):
    if excinfo is None:
        return ""
    text = str(excinfo.value).strip()
    missing = re.match(r"module 'lesson_(\w+?)_(exercise|stub|reference)' has no attribute '(\w+)'", text)
    if missing:   # the student deleted or renamed a function
        lesson, which, function = missing.groups()
        text = f"lessons/{lesson}/{IMPL_FILES[which]} has no function {function}"
    elif excinfo.typename == "Failed":   # pytest.fail(...) from load_impl: the message says it all
        pass
    elif not excinfo.errisinstance(AssertionError) or not text:
        text = f"{excinfo.typename}: {text}"
        where = _student_line(excinfo)
        if where:
            text += f"\n  raised at {where}"
    body = text.splitlines()
    if len(body) <= lines:
        return "\n".join(body)
    verdict = [line for line in body if line.startswith("  looks like: ")]   # never cut off
    return "\n".join(body[:lines - len(verdict)] + ["  ..."] + verdict)


def _student_line(excinfo):
    """``file:line`` of the deepest frame in a working copy or stub, for an error the student's code raised."""
    for entry in reversed(excinfo.traceback):
        path = str(entry.path)
        if path.endswith(("exercise_work.py", "exercise.py")):
            return f"lessons/{Path(path).parent.name}/{Path(path).name}:{entry.lineno + 1} in {entry.name}"
    return None


def write_report(results: dict, path):
    """Write the per-test results as JSON (a list, in the order the tests ran)."""
    Path(path).write_text(json.dumps(list(results.values()), indent=1))
