"""The grading machinery of the lessons: which implementation a test grades, and failures a student can read.

Each lesson is one folder ``lessons/NN_<stage>/`` holding

    README.md           the lesson
    exercise.py         the stubs (committed): the library's signatures and docstrings, bodies raising
                        ``NotImplementedError``
    exercise_work.py    the student's working copy (git-ignored), made by ``mrcnn-edu lessons start``
    reference.py        the reference solutions: the library's own functions, re-exported
    test_NN_<stage>.py  the graded tests; ``TASKS = {1: "function_name", ...}`` and test names
                        ``test_task<N>_<what>`` tie every test to one task

The pytest option ``--impl reference|exercise|stub`` (registered in ``lessons/conftest.py``) picks the file
the ``impl`` fixture loads: ``reference.py`` (the default, so a plain ``pytest`` grades the library),
``exercise_work.py`` or ``exercise.py``. Adding a lesson is adding one folder; nothing here changes.

The ``expect_*`` helpers fail with a short message: the case's name, then expected against got, rounded,
and where they differ most, instead of pytest's wall of arrays.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

IMPLS = ("reference", "exercise", "stub")
IMPL_FILES = {"reference": "reference.py", "exercise": "exercise_work.py", "stub": "exercise.py"}
LESSON_DIR = re.compile(r"^\d\d_[a-z0-9_]+$")
TASK_TEST = re.compile(r"^test_task(\d+)_")
START_HINT = "run `mrcnn-edu lessons start` first"


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


# ---------------------------------------------------------------------------------------------------------
# failures that show expected against got
# ---------------------------------------------------------------------------------------------------------

def show(a) -> str:
    """A value as a short string: small arrays in full (4 decimals), big ones summarized, with the shape."""
    if a is None:
        return "None"
    try:
        arr = np.asarray(a)
    except Exception:
        return repr(a)
    if arr.dtype == object:
        return repr(a)
    with np.printoptions(precision=4, suppress=True, threshold=20, edgeitems=2, linewidth=88):
        text = np.array2string(arr, separator=", ")
    text = text.replace("\n", "\n" + " " * 11)
    return text if arr.ndim == 0 else f"{text}   (shape {arr.shape}, {arr.dtype})"


def _as_array(got, case):
    __tracebackhide__ = True
    if got is None:
        raise AssertionError(f"{case}: got None; does the function return its result?")
    try:
        return np.asarray(got)
    except Exception as err:
        raise AssertionError(f"{case}: got {type(got).__name__}, which is not an array ({err})") from None


def _mismatch(case, expected, got, extra=""):
    return f"{case}:\n  expected {show(expected)}\n  got      {show(got)}" + (f"\n  {extra}" if extra else "")


def expect_close(got, expected, case, rtol=1e-6, atol=1e-8):
    """``got`` equals ``expected`` up to ``atol + rtol * |expected|`` elementwise, same shape."""
    __tracebackhide__ = True
    expected = np.asarray(expected, dtype=np.float64)
    arr = _as_array(got, case)
    if arr.shape != expected.shape:
        raise AssertionError(_mismatch(case, expected, arr, f"shape: expected {expected.shape}, got {arr.shape}"))
    if arr.dtype.kind not in "biuf":
        raise AssertionError(_mismatch(case, expected, arr, f"dtype: expected numbers, got {arr.dtype}"))
    arr = arr.astype(np.float64)
    bad = ~np.isclose(arr, expected, rtol=rtol, atol=atol)
    if bad.any():
        diff = np.where(np.isnan(arr), np.inf, np.abs(arr - expected))
        where = np.unravel_index(int(np.argmax(np.where(bad, diff, -1))), arr.shape) if arr.ndim else ()
        raise AssertionError(_mismatch(
            case, expected, arr,
            f"{int(bad.sum())} of {bad.size} values differ; the largest difference is "
            f"{float(diff[where]):.4g} at index {tuple(int(i) for i in where)}"))


def expect_equal(got, expected, case):
    """``got`` equals ``expected`` exactly (integers, booleans, indices), same shape."""
    __tracebackhide__ = True
    expected = np.asarray(expected)
    arr = _as_array(got, case)
    if arr.shape != expected.shape:
        raise AssertionError(_mismatch(case, expected, arr, f"shape: expected {expected.shape}, got {arr.shape}"))
    if not np.array_equal(arr, expected):
        bad = arr != expected
        first = tuple(int(i) for i in np.argwhere(bad)[0]) if arr.ndim else ()
        raise AssertionError(_mismatch(case, expected, arr,
                                       f"{int(np.sum(bad))} of {bad.size} differ, the first at index {first}"))


def expect_true(condition, case, detail=""):
    """A property that must hold (a count, a subset), with what was seen."""
    __tracebackhide__ = True
    if not condition:
        raise AssertionError(f"{case}" + (f":\n  {detail}" if detail else ""))


def expect_gradient(analytic, f, x, case, dout=1.0, eps=1e-6, tol=1e-6):
    """A hand-written gradient against central finite differences of ``sum(f(x) * dout)`` (``x`` float64).

    ``rel_error = |a - n| / (|a| + |n|) < tol`` as in ``mrcnn_edu.gradcheck``; the failure shows both.
    """
    __tracebackhide__ = True
    from mrcnn_edu.gradcheck import numerical_gradient, rel_error

    arr = _as_array(analytic, case)
    numeric = numerical_gradient(lambda: np.asarray(f(x)), x, dout, eps=eps)
    if arr.shape != numeric.shape:
        raise AssertionError(_mismatch(case, numeric, arr, f"shape: expected {numeric.shape}, got {arr.shape}"))
    err = rel_error(arr, numeric)
    if not err < tol:
        raise AssertionError(_mismatch(case + " (expected = finite differences)", numeric, arr,
                                       f"relative error {err:.2e}, needs < {tol:g}"))


# ---------------------------------------------------------------------------------------------------------
# the report that `mrcnn-edu lessons check` reads
# ---------------------------------------------------------------------------------------------------------

def record(results: dict, item, call, report):
    """Fold one test phase (setup, call, teardown) into ``results[nodeid]``."""
    entry = results.setdefault(item.nodeid, {
        "lesson": Path(str(item.fspath)).parent.name,
        "test": item.name,
        "task": task_of(item.name),
        "title": getattr(getattr(item, "module", None), "TASKS", {}).get(task_of(item.name), ""),
        "outcome": "passed",
        "not_written": None,
        "message": "",
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


def _short(excinfo, lines=8):
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
    body = text.splitlines()
    return "\n".join(body[:lines] + (["..."] if len(body) > lines else []))


def write_report(results: dict, path):
    """Write the per-test results as JSON (a list, in the order the tests ran)."""
    Path(path).write_text(json.dumps(list(results.values()), indent=1))
