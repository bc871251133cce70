"""The course's exercises, from the student's side: make the working copies, then grade them.

    mrcnn-edu lessons start          copy each lessons/NN_<stage>/exercise.py to exercise_work.py beside it
    mrcnn-edu lessons check [NN]     grade the working copies: a table of tasks and a score, then every
                                     failing case of each failed task, diagnosed

``start`` never overwrites a working copy, and git ignores them (``lessons/*/exercise_work.py`` in
``.gitignore``), so ``git pull`` brings new lessons and fixed tests without ever touching a student's code.
``check`` runs the lesson tests with ``--impl exercise`` in a fresh Python process (so an edit is always
seen, and an endless loop can be stopped) and reads back one record per test from ``--grading-report``
(see ``lessons/conftest.py`` and ``lessons/_grading.py``). A task counts as passed when all its tests pass.
Under the table come the failed tasks, each with every failing case: its inputs, expected against got
(small arrays in full, the wrong entries marked) and, when the wrong answer is one a known mistake gives
(the +1 pixel width, a kernel not flipped, ...), a line ``looks like: ...`` naming it.

The lessons live in the git clone, in ``lessons/`` beside the ``mrcnn_edu`` package (they are not part of
an installed wheel); ``root`` points elsewhere, e.g. at a copy of the tree. Host-only code: it copies files
and runs pytest, and touches no arrays.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

__all__ = ["lessons_dir", "list_lessons", "start", "run_lesson_tests", "check", "format_report",
           "STUB", "WORKING_COPY"]

STUB = "exercise.py"
WORKING_COPY = "exercise_work.py"
_LESSON_DIR = re.compile(r"^(\d\d)_([a-z0-9_]+)$")
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent
STATUSES = ("passed", "failed", "not yet written", "no working copy", "timed out")


# ---------------------------------------------------------------------------------------------------------
# where the lessons are
# ---------------------------------------------------------------------------------------------------------

def lessons_dir(root=None) -> Path:
    """The ``lessons/`` folder: ``root`` itself, or ``root/lessons``; by default the clone's, then ``./lessons``."""
    if root is not None:
        root = Path(root)
        candidates = [root, root / "lessons"]
    else:
        candidates = [_PACKAGE_PARENT / "lessons", Path.cwd() / "lessons"]
    for path in candidates:
        if (path / "conftest.py").is_file() and any(_LESSON_DIR.match(p.name) for p in path.iterdir() if p.is_dir()):
            return path.resolve()
    raise FileNotFoundError("no lessons/ folder found (looked in " + ", ".join(str(p) for p in candidates)
                            + "): the lessons come with the git clone of mrcnn-edu; run this inside one")


def _stage_number(stage) -> int:
    """``1``, ``"1"``, ``"01"`` or ``"01_iou"`` as the stage number 1."""
    text = str(stage).strip()
    match = re.match(r"^(\d{1,2})(_.*)?$", text)
    if isinstance(stage, bool) or not match:
        raise ValueError(f"stage: expected a lesson number such as 1 or '01' (or a folder name such as "
                         f"'01_iou'), got {stage!r}")
    return int(match.group(1))


def list_lessons(root=None, stage=None) -> list[Path]:
    """The lesson folders (``NN_<stage>`` holding an ``exercise.py``), in stage order; one if ``stage`` is given."""
    base = lessons_dir(root)
    found = sorted(p for p in base.iterdir() if p.is_dir() and _LESSON_DIR.match(p.name) and (p / STUB).is_file())
    if stage is None:
        return found
    number = _stage_number(stage)
    chosen = [p for p in found if int(p.name[:2]) == number]
    if not chosen:
        names = ", ".join(p.name for p in found) or "none"
        raise ValueError(f"stage: no lesson {number:02d} in {base} (the lessons are: {names})")
    return chosen


def _shown(path: Path) -> str:
    """``lessons/NN_x/file.py``: short and the same on every machine."""
    return f"{path.parent.parent.name}/{path.parent.name}/{path.name}"


# ---------------------------------------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------------------------------------

def start(stage=None, root=None, quiet=False) -> list[dict]:
    """Copy each lesson's stubs to its working copy, ``exercise_work.py``, unless that copy already exists.

    stage : None for every lesson, or one lesson's number (``1``, ``"01"``)
    root  : the ``lessons/`` folder or the folder holding it (default: the clone's)
    Returns one dict per lesson: ``lesson`` (folder name), ``path`` (the working copy) and ``created``
    (False when a working copy was already there: it is never overwritten). Prints what it did.
    """
    done = []
    for lesson in list_lessons(root, stage):
        target = lesson / WORKING_COPY
        try:
            # "x": create, or fail if it exists; no window in which an existing copy could be replaced
            with open(target, "x", encoding="utf-8") as out:
                out.write((lesson / STUB).read_text(encoding="utf-8"))
            created = True
        except FileExistsError:
            created = False
        done.append({"lesson": lesson.name, "path": str(target), "created": created})
        if not quiet:
            print(f"  created {_shown(target)}" if created else
                  f"  kept    {_shown(target)} (already there; your work is never overwritten)")
    if not quiet:
        print("Write your code in the exercise_work.py files, then run `mrcnn-edu lessons check` "
              "(or `mrcnn-edu lessons check 01` for one lesson).")
    return done


# ---------------------------------------------------------------------------------------------------------
# running the tests
# ---------------------------------------------------------------------------------------------------------

def run_lesson_tests(impl="exercise", stage=None, root=None, timeout=600.0) -> dict:
    """Run the lesson tests of ``stage`` (or all) on ``impl`` in a fresh Python process.

    impl : ``"exercise"`` (the working copies), ``"reference"`` (the library) or ``"stub"``
    Returns ``{"records": [...], "returncode": int, "output": str, "timed_out": bool, "lessons": [names]}``,
    one record per test (see ``lessons/_grading.py``): lesson, test, task, title, outcome ("passed",
    "failed", "error" or "skipped"), not_written (the stub that raised ``NotImplementedError``, or None),
    message (the failure: case, inputs, expected against got), case (its first line) and looks_like (the
    short names of the known mistakes the wrong answer matches).
    """
    lessons = list_lessons(root, stage)
    base = lessons[0].parent if lessons else lessons_dir(root)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_PACKAGE_PARENT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["MRCNN_EDU_BACKEND"] = "numpy"   # lessons are graded on the CPU, with NumPy arrays
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pytest", *[str(p) for p in lessons], f"--impl={impl}",
                   f"--grading-report={report}", "-q", "--tb=no", "-p", "no:cacheprovider",
                   f"--rootdir={base.parent}", "--continue-on-collection-errors"]
        try:
            proc = subprocess.run(command, cwd=base.parent, env=env, capture_output=True, text=True, timeout=timeout)
            returncode, output, timed_out = proc.returncode, proc.stdout + proc.stderr, False
        except subprocess.TimeoutExpired as err:
            out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            returncode, output, timed_out = -1, out, True
        records = json.loads(report.read_text()) if report.exists() else []
    return {"records": records, "returncode": returncode, "output": output, "timed_out": timed_out,
            "lessons": [p.name for p in lessons]}


def _task_status(tests: list[dict]):
    """One task's status and the message to show, from its tests' records."""
    if all(t["outcome"] == "passed" for t in tests):
        return "passed", ""
    if any(t["outcome"] == "skipped" for t in tests):
        return "no working copy", "run `mrcnn-edu lessons start` first"
    failing = [t for t in tests if t["outcome"] != "passed"]
    if not any(t["outcome"] == "passed" for t in tests) and all(t["not_written"] for t in failing):
        raised = sorted({t["not_written"] for t in failing})
        return "not yet written", f"{', '.join(raised)} raises NotImplementedError"
    first = next((t for t in failing if not t["not_written"]), failing[0])
    return "failed", first["message"]


def _failing_cases(tests: list[dict]) -> list[dict]:
    """Every failing test of a task: its case (the first line), its whole message, the mistakes it looks like."""
    return [{"test": t["test"], "case": t.get("case") or t["message"].split("\n", 1)[0],
             "message": t["message"], "looks_like": list(t.get("looks_like") or [])}
            for t in tests if t["outcome"] in ("failed", "error")]


def _looks_like(cases: list[dict]) -> list[str]:
    """The known mistakes a task's failures look like, the most frequent first."""
    counts = {}
    for case in cases:
        for name in case["looks_like"]:
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda name: -counts[name])


def _summarize(run: dict, root) -> dict:
    by_lesson = {name: [] for name in run["lessons"]}
    for record in run["records"]:
        by_lesson.setdefault(record["lesson"], []).append(record)
    base = lessons_dir(root)
    lessons = []
    for name, records in by_lesson.items():
        tasks = {}
        for record in records:
            if record["task"] is not None:
                tasks.setdefault(record["task"], []).append(record)
        rows = []
        for number in sorted(tasks):
            tests = tasks[number]
            status, message = ("timed out", "the tests did not finish: an endless loop?") if run["timed_out"] \
                else _task_status(tests)
            cases = _failing_cases(tests) if status == "failed" else []
            function = next((t["title"] for t in tests if t["title"]), "")   # a second test file may lack TASKS
            rows.append({"task": number, "function": function, "status": status, "message": message,
                         "tests": len(tests), "tests_passed": sum(t["outcome"] == "passed" for t in tests),
                         "cases": cases, "looks_like": _looks_like(cases)})
        problem = ""
        if not rows:
            problem = ("the tests did not finish: an endless loop?" if run["timed_out"]
                       else "the tests could not run:\n" + "\n".join(run["output"].strip().splitlines()[-15:]))
        lessons.append({"lesson": name, "working_copy": _shown(base / name / WORKING_COPY), "tasks": rows,
                        "passed": sum(r["status"] == "passed" for r in rows), "total": len(rows), "problem": problem})
    passed = sum(les["passed"] for les in lessons)
    total = sum(les["total"] for les in lessons)
    return {"lessons": lessons, "passed": passed, "total": total, "score": passed / total if total else 0.0,
            "tests_passed": sum(r["tests_passed"] for les in lessons for r in les["tasks"]),
            "tests": sum(r["tests"] for les in lessons for r in les["tasks"]), "returncode": run["returncode"]}


FULL_CASES = 4   # failing cases of one task shown in full; the others by their first line


def format_report(result: dict) -> str:
    """What ``check`` prints: first a table per lesson (per task, its tests passed and its status) and the
    score, then, task by task, every failing case: its inputs, expected against got, and the known mistake
    it looks like."""
    lines = []
    for les in result["lessons"]:
        lines.append(f"Lesson {les['lesson']}  ({les['working_copy']})")
        if les["problem"]:
            lines.extend("  " + line for line in les["problem"].splitlines())
            lines.append("")
            continue
        lines.append(f"  {'task':<6}{'function':<36}{'tests':>7}  status")
        for row in les["tasks"]:
            status = row["status"]
            if row["looks_like"]:
                status += f"  (looks like: {'; '.join(row['looks_like'])})"
            lines.append(f"  {row['task']:<6}{row['function']:<36}{row['tests_passed']:>3}/{row['tests']:<3}  {status}")
            if row["status"] == "timed out" or (row["status"] == "not yet written"
                                                and not row["message"].startswith(row["function"] + " ")):
                lines.append(" " * 10 + row["message"].splitlines()[0])
        if any(row["status"] == "no working copy" for row in les["tasks"]):
            lines.append("  no working copy yet: run `mrcnn-edu lessons start` first")
        lines.append(f"  {les['passed']} of {les['total']} tasks passed")
        lines.append("")
    percent = 100.0 * result["score"]
    lines.append(f"Score: {result['passed']} / {result['total']} tasks ({percent:.0f}%), "
                 f"{result['tests_passed']} / {result['tests']} tests")
    failed = [(les["lesson"], row) for les in result["lessons"] for row in les["tasks"] if row["cases"]]
    if failed:
        lines += ["", "What went wrong, task by task", "=============================="]
        for lesson, row in failed:
            lines += [""] + _diagnosis(lesson, row)
        lines += ["", "Every failure with its traceback: pytest lessons/NN_<stage> --impl exercise"]
    elif result["passed"] < result["total"]:
        lines.append("Every failure in full: pytest lessons/NN_<stage> --impl exercise")
    return "\n".join(lines)


def _diagnosis(lesson: str, row: dict) -> list[str]:
    """One failing task: each failing case, the first few in full, the rest by their first line.

    An input already shown for an earlier case of the task, and a known mistake already explained, are
    not repeated; the explanation of a mistake is wrapped to the width of the table.
    """
    cases = row["cases"]
    lines = [f"{lesson}, task {row['task']}, {row['function']}: {len(cases)} of {row['tests']} "
             f"test{'s' if row['tests'] != 1 else ''} failed"]
    shown_inputs, explained, errors = {}, set(), {}
    for number, case in enumerate(cases, 1):
        head = f"  {number}. "
        pad = " " * len(head)
        body = case["message"].splitlines() or [case["case"]]
        if not body[0].startswith(case["case"]):   # an error, not an expectation: name the test first
            if case["message"] in errors:
                lines.append(f"{head}{case['case']}: the same error as case {errors[case['message']]}")
                continue
            errors[case["message"]] = number
            body = [f"{case['case']}:"] + ["  " + line for line in body]
        if number > FULL_CASES:
            lines.append(head + case["case"])
            body = [line for line in body if line.strip().startswith("looks like:")]
        else:
            lines.append(head + body[0])
            body = _inputs_once(body[1:], number, shown_inputs)
        shorts = iter(case["looks_like"])
        for line in body:
            text = line.strip()
            if text.startswith("looks like: "):
                short = next(shorts, "")
                if text in explained:
                    text = "looks like: the same mistake as above" + (f" ({short})" if short else "")
                explained.add(line.strip())
                lines.extend(textwrap.wrap(text, width=_WIDTH, initial_indent=pad + "  ",
                                           subsequent_indent=pad + "  " + " " * len("looks like: ")))
            else:
                lines.append(pad + line)
    return lines


_WIDTH = 110


def _inputs_once(body: list[str], number: int, shown: dict) -> list[str]:
    """A case's message lines with each input already shown for an earlier case reduced to one line."""
    out, current = [], None
    for line in body:
        entry = re.match(r"^    (\S.*?) = ", line)
        if entry:
            current = [line]
            out.append(current)
        elif current is not None and line.startswith("     "):
            current.append(line)
        else:
            current = None
            out.append(line)
    result = []
    for item in out:
        if isinstance(item, list):
            key = "\n".join(item)
            name = re.match(r"^    (\S.*?) = ", item[0]).group(0)
            if key in shown and len(item) > 1:
                result.append(f"{name}(as in case {shown[key]})")
            else:
                shown.setdefault(key, number)
                result.extend(item)
        else:
            result.append(item)
    return result


def check(stage=None, root=None, quiet=False, timeout=600.0) -> dict:
    """Grade the working copies (all lessons, or one ``stage``) and print a table of tasks and a score.

    Returns ``{"lessons": [...], "passed": tasks passed, "total": tasks, "score": passed / total,
    "tests_passed", "tests", "returncode"}``; each lesson has ``tasks``, rows with ``task`` (number),
    ``function``, ``status`` (passed / failed / not yet written / no working copy / timed out),
    ``message`` (the first failure, expected against got), ``tests``, ``tests_passed``, ``cases`` (every
    failing test: ``test``, ``case``, ``message`` and ``looks_like``, the short names of the known mistakes
    its answer matches) and ``looks_like`` (those of all its cases, the most frequent first).
    """
    result = _summarize(run_lesson_tests("exercise", stage, root, timeout), root)
    if not quiet:
        print(format_report(result))
    return result
