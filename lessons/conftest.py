"""Grading the lessons: the ``--impl`` option and the ``impl`` fixture (see ``_grading.py``).

    pytest lessons                          grade the library (the reference solutions): all pass
    pytest lessons --impl exercise          grade your working copies, lessons/*/exercise_work.py
    pytest lessons/01_iou --impl exercise   one lesson
    pytest lessons --impl stub              grade the committed stubs: all fail (the meta-test checks it)

``mrcnn-edu lessons check`` runs the same tests with ``--impl exercise`` and prints a table per task, then
every failing case of each failed task with its inputs, expected against got, and the known mistake it looks
like (``looks like: ...``; the same lines appear in pytest's own report of a failure).
"""
import sys
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent
if str(LESSONS) not in sys.path:  # the lesson tests import the helpers as ``_grading``
    sys.path.insert(0, str(LESSONS))
try:
    import mrcnn_edu  # noqa: F401
except ImportError:  # a clone without ``pip install -e .``, tested from inside lessons/: the package is beside it
    sys.path.insert(0, str(LESSONS.parent))

import _grading  # noqa: E402

_RESULTS = pytest.StashKey[dict]()


def pytest_addoption(parser):
    _grading.add_options(parser)


def pytest_configure(config):
    config.stash[_RESULTS] = {}


@pytest.fixture(scope="module", autouse=True)
def _numpy_backend():
    """Lessons are graded on NumPy arrays, whatever MRCNN_EDU_BACKEND says (the library follows its inputs,
    but ``generate_anchors`` creates arrays with the switched backend)."""
    from mrcnn_edu import backend

    previous = backend.name
    backend.use("numpy")
    yield
    backend.use(previous)


@pytest.fixture(scope="module")
def impl(request):
    """The module under test for this test file's lesson, chosen by ``--impl``."""
    which = request.config.getoption("--impl", "reference")
    return _grading.load_impl(Path(request.module.__file__).parent, which)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if item.config.getoption("--grading-report", None):
        _grading.record(item.config.stash[_RESULTS], item, call, outcome.get_result())


def pytest_sessionfinish(session):
    path = session.config.getoption("--grading-report", None)
    if path:
        _grading.write_report(session.config.stash[_RESULTS], path)
