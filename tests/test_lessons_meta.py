"""The lessons grade what they claim to grade.

* every lesson folder is complete, and its tests (in ``test_NN_<stage>.py`` and any other ``test_*.py`` of the
  folder) are tied to its declared tasks (``TASKS``, ``test_task<N>_``);
* the stubs carry the library's exact signatures and docstrings;
* every lesson test fails on the committed stubs (with ``NotImplementedError``, so ``check`` says "not yet
  written") and passes on the reference, the library;
* ``start`` copies the stubs without ever overwriting a working copy, and ``check`` scores a solved working
  copy full and the stubs zero.

The graded runs go through ``mrcnn_edu.lessons.run_lesson_tests``: one pytest process per run, all lessons
at once.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import shutil
from pathlib import Path

import pytest

from mrcnn_edu import lessons

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
LESSON_DIRS = lessons.list_lessons(LESSONS)
NAMES = [p.name for p in LESSON_DIRS]


def test_the_nine_graded_lessons_are_there():
    assert NAMES == ["01_iou", "02_anchors", "03_rpn", "04_roi", "05_losses", "06_layers", "07_heads", "08_train",
                     "09_evaluate"]


def declared_in(path: Path):
    """``(TASKS or None, test function names)`` of one test module, read with ``ast`` (nothing is imported)."""
    tree = ast.parse(path.read_text())
    tasks = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TASKS" for t in node.targets):
            tasks = ast.literal_eval(node.value)
    tests = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
    return tasks, tests


def lesson_test_files(lesson: Path) -> list[Path]:
    """The lesson's graded test modules: ``test_NN_<stage>.py`` first, then any other ``test_*.py`` beside it
    (more cases for the same tasks, e.g. ``test_NN_cases.py``)."""
    main = lesson / f"test_{lesson.name}.py"
    return [main] + sorted(p for p in lesson.glob("test_*.py") if p != main)


def declared(lesson: Path):
    """``(TASKS, test function names)`` of a lesson: the tasks of ``test_NN_<stage>.py``, the tests of all its
    test modules."""
    tasks, tests = declared_in(lesson / f"test_{lesson.name}.py")
    for path in lesson_test_files(lesson)[1:]:
        tests += declared_in(path)[1]
    return tasks, tests


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------
# the folders, the tasks, the stubs
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lesson", LESSON_DIRS, ids=NAMES)
def test_a_lesson_is_one_complete_folder(lesson):
    for name in ("README.md", "exercise.py", "reference.py", f"test_{lesson.name}.py"):
        assert (lesson / name).is_file(), f"{lesson.name}: {name} is missing"


@pytest.mark.parametrize("lesson", LESSON_DIRS, ids=NAMES)
def test_every_test_belongs_to_a_declared_task(lesson):
    tasks, _ = declared(lesson)
    assert isinstance(tasks, dict) and len(tasks) >= 3, f"{lesson.name}: TASKS must declare at least 3 tasks"
    assert sorted(tasks) == list(range(1, len(tasks) + 1)), f"{lesson.name}: tasks must be numbered 1..n"
    for path in lesson_test_files(lesson):
        own_tasks, tests = declared_in(path)
        where = f"{lesson.name}/{path.name}"
        if own_tasks is not None:   # a second test module may restate (some of) the tasks, never others
            assert all(tasks.get(n) == f for n, f in own_tasks.items()), f"{where}: TASKS differ from the lesson's"
        numbers = []
        for name in tests:
            match = re.match(r"^test_task(\d+)_", name)
            assert match, f"{where}: {name} is not named test_task<N>_..., so check() cannot place it"
            numbers.append(int(match.group(1)))
        assert set(numbers) <= set(tasks), f"{where}: tests of undeclared tasks"
        assert numbers == sorted(numbers), f"{where}: tests should appear in task order"
        if path.name == f"test_{lesson.name}.py":
            assert set(numbers) == set(tasks), f"{where}: tasks without tests"


@pytest.mark.parametrize("lesson", LESSON_DIRS, ids=NAMES)
def test_stubs_have_the_reference_signatures_and_docstrings(lesson):
    tasks, _ = declared(lesson)
    stub = load(lesson / "exercise.py", f"meta_stub_{lesson.name}")
    reference = load(lesson / "reference.py", f"meta_reference_{lesson.name}")
    for number, name in tasks.items():
        stub_fn, ref_fn = getattr(stub, name, None), getattr(reference, name, None)
        assert callable(stub_fn) and callable(ref_fn), f"{lesson.name} task {number}: {name} missing from a file"
        assert inspect.signature(stub_fn) == inspect.signature(ref_fn), f"{lesson.name}: {name} signature differs"
        assert inspect.getdoc(stub_fn) == inspect.getdoc(ref_fn), f"{lesson.name}: {name} docstring differs"
        source = inspect.getsource(stub_fn)
        assert "raise NotImplementedError" in source, f"{lesson.name}: the stub {name} must raise NotImplementedError"


@pytest.mark.parametrize("lesson", LESSON_DIRS, ids=NAMES)
def test_the_readme_names_the_tasks_and_links_the_library(lesson):
    tasks, _ = declared(lesson)
    text = (lesson / "README.md").read_text()
    for name in tasks.values():
        assert f"`{name}(" in text or f"`{name}`" in text, f"{lesson.name}/README.md does not name {name}"
    links = re.findall(r"\]\((\.\./\.\./mrcnn_edu/[^)]+)\)", text)
    assert links, f"{lesson.name}/README.md links no library module"
    for link in links:
        assert (lesson / link).resolve().is_file(), f"{lesson.name}/README.md: broken link {link}"
    for heading in ("## The idea", "## A worked example", "## Your tasks", "## Hints", "## Where the slides are loose"):
        assert heading in text, f"{lesson.name}/README.md lacks the section {heading!r}"


def test_git_ignores_the_working_copies():
    assert "lessons/*/exercise_work.py" in (ROOT / ".gitignore").read_text().splitlines()


# ---------------------------------------------------------------------------------------------------------
# stubs fail, the reference passes
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stub_run():
    return lessons.run_lesson_tests("stub", root=LESSONS, timeout=300)


@pytest.fixture(scope="module")
def reference_run():
    return lessons.run_lesson_tests("reference", root=LESSONS, timeout=300)


def _records(run, lesson):
    records = [r for r in run["records"] if r["lesson"] == lesson]
    assert records, f"{lesson}: no test ran\n{run['output'][-3000:]}"
    return records


@pytest.mark.parametrize("lesson", NAMES)
def test_every_lesson_test_fails_on_the_stubs(stub_run, lesson):
    records = _records(stub_run, lesson)
    passed = [r["test"] for r in records if r["outcome"] != "failed"]
    assert not passed, f"{lesson}: these tests do not fail on the stubs: {passed}"
    unwritten = [r["test"] for r in records if not r["not_written"]]
    assert not unwritten, f"{lesson}: these tests fail on the stubs without NotImplementedError: {unwritten}"
    _, tests = declared(LESSONS / lesson)
    assert {re.sub(r"\[.*", "", r["test"]) for r in records} == set(tests), f"{lesson}: some tests did not run"


@pytest.mark.parametrize("lesson", NAMES)
def test_every_lesson_test_passes_on_the_reference(reference_run, lesson):
    records = _records(reference_run, lesson)
    failed = {r["test"]: r["message"] for r in records if r["outcome"] != "passed"}
    assert not failed, f"{lesson}: tests that fail on the library:\n" + "\n".join(
        f"{k}: {v}" for k, v in failed.items())


# ---------------------------------------------------------------------------------------------------------
# the student workflow on a copy of the lessons tree
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    """A copy of ``lessons/`` without working copies."""
    copy = tmp_path / "lessons"
    shutil.copytree(LESSONS, copy, ignore=shutil.ignore_patterns("exercise_work.py", "__pycache__"))
    return copy


def test_start_copies_the_stubs_and_never_overwrites(tree, capsys):
    made = lessons.start(root=tree)
    assert [m["lesson"] for m in made] == NAMES and all(m["created"] for m in made)
    for lesson in NAMES:
        assert (tree / lesson / "exercise_work.py").read_text() == (tree / lesson / "exercise.py").read_text()
    assert "created lessons/01_iou/exercise_work.py" in capsys.readouterr().out

    mine = tree / "01_iou" / "exercise_work.py"
    mine.write_text("# my solution\n")
    again = lessons.start(root=tree)
    assert not any(m["created"] for m in again)
    assert mine.read_text() == "# my solution\n"
    assert "kept    lessons/01_iou/exercise_work.py" in capsys.readouterr().out

    (tree / "02_anchors" / "exercise_work.py").unlink()
    one = lessons.start(stage=2, root=tree, quiet=True)
    assert one == [{"lesson": "02_anchors", "path": str(tree / "02_anchors" / "exercise_work.py"), "created": True}]
    assert mine.read_text() == "# my solution\n"


def test_check_scores_the_stubs_zero(tree, capsys):
    lessons.start(root=tree, quiet=True)
    result = lessons.check(root=tree)
    out = capsys.readouterr().out
    expected_total = sum(len(declared(LESSONS / name)[0]) for name in NAMES)
    assert (result["passed"], result["total"], result["tests_passed"]) == (0, expected_total, 0)
    assert all(row["status"] == "not yet written" for les in result["lessons"] for row in les["tasks"])
    assert f"Score: 0 / {expected_total} tasks" in out and "not yet written" in out


def test_check_scores_a_solved_copy_full(tree, capsys):
    for lesson in NAMES:   # "solved" by re-exporting the library's functions, as reference.py does
        shutil.copyfile(tree / lesson / "reference.py", tree / lesson / "exercise_work.py")
    result = lessons.check(root=tree)
    assert result["passed"] == result["total"] > 0 and result["score"] == 1.0
    assert result["tests_passed"] == result["tests"]
    assert [les["lesson"] for les in result["lessons"]] == NAMES
    assert f"Score: {result['total']} / {result['total']} tasks (100%)" in capsys.readouterr().out

    # one lesson, with a wrong function and a missing working copy elsewhere
    work = tree / "01_iou" / "exercise_work.py"
    work.write_text(work.read_text() + "\n\ndef box_area(boxes):\n    return boxes[:, 2] - boxes[:, 0]\n")
    (tree / "02_anchors" / "exercise_work.py").unlink()
    one = lessons.check(stage="01", root=tree, quiet=True)
    rows = {row["function"]: row for row in one["lessons"][0]["tasks"]}
    assert rows["box_area"]["status"] == "failed" and "expected" in rows["box_area"]["message"]
    assert rows["box_iou"]["status"] == "passed" and one["passed"] == one["total"] - 1
    two = lessons.check(stage=2, root=tree, quiet=True)
    assert {row["status"] for row in two["lessons"][0]["tasks"]} == {"no working copy"}


def test_bad_stage_and_missing_tree_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no lesson 42"):
        lessons.list_lessons(LESSONS, 42)
    with pytest.raises(ValueError, match="stage: expected a lesson number"):
        lessons.list_lessons(LESSONS, "iou")
    with pytest.raises(FileNotFoundError, match="no lessons/ folder"):
        lessons.lessons_dir(tmp_path)
