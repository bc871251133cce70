"""Grade the grader: plant one small mistake at a time in the reference solutions and count how many the
lesson tests catch.

    .venv/bin/python tools/mutate_lessons.py                  every lesson, every mutant
    .venv/bin/python tools/mutate_lessons.py 04 07            some lessons
    .venv/bin/python tools/mutate_lessons.py --sample 60      at most 60 mutants a lesson, drawn with --seed
    .venv/bin/python tools/mutate_lessons.py --list 01        the mutants of lesson 01, without running them
    .venv/bin/python tools/mutate_lessons.py --show 01:17     mutant 17 of lesson 01: its source and what catches it

A **mutant** is the library with one mistake of the kinds a student makes, planted in the maths of one task
(the core ``_name`` of a public function, or the function itself when it has no core, and the module's own
helpers they call; never the input checks): an operator swapped (``+`` / ``-``, ``*`` / ``/``, ``&`` / ``|``,
``minimum`` / ``maximum``, ``floor`` / ``ceil``, ...), an integer off by one, a comparison loosened or
tightened (``<`` / ``<=``, ``==`` / ``!=``), a keyword argument dropped (``kind="stable"``, ``axis=1``), a
constant nudged (a float by 10%, ``True`` / ``False``, ``"left"`` / ``"right"``), a sign or a ``not``
dropped, or a statement left out (``out += b``).

For each mutant the function is re-compiled from its mutated source into a copy of its module's namespace
(every function of the module rebound to that copy, so the public function calls the mutated core), and a
temporary copy of ``lessons/`` gets an ``exercise_work.py`` that re-exports ``reference.py`` with the
lesson's tasks of that module replaced by the mutant's. The lesson's tests then run on it exactly as a
student's working copy is graded, ``--impl exercise``, in this process (``pytest.main``, ``-x``): a failing
test **catches** the mutant.

A mutant no test catches is run against the library on random inputs of every task it touches (about a
hundred draws each, with ties, exact thresholds, coordinates on .5, empty inputs, both float dtypes): if
some output differs it is a **survivor**, a mistake the grader lets through; if none does it counts apart
as **equivalent** (it changes no result the task defines, e.g. a block size, a dtype passed twice).
Reported per lesson: mutants, mutants that change a result (caught + survivors), caught, and each survivor
with the input that shows it.
"""
from __future__ import annotations

import __future__
import argparse
import ast
import contextlib
import copy
import importlib.util
import inspect
import io
import json
import math
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WORK_FILE = "exercise_work.py"
REGISTRY = "_mutate_lessons_current"        # sys.modules entry the working copies read the mutant from
TEST_TIMEOUT_S = 5                         # per lesson run: an endless loop counts as caught
DIFF_TIMEOUT_S = 30                        # per random-input comparison of one mutant
DRAWS = 100                                # random inputs per task in the comparison

# Calls whose arguments are input checks, not maths: their arguments are never mutated.
VALIDATORS = re.compile(r"^(_?check\w*|_host_\w+|_iou_matrix|number|as_float_array|float_input|pair|_int_array|"
                        r"_int_labels|_float_input|_positive_list|_image_size|_weights|_scores|_deltas)$")
# Helpers never mutated (input checks and conversions, the GIoU option lesson 07 does not grade).
SKIP_FUNCTIONS = re.compile(r"^(_check\w*|_host_\w+|_iou_matrix|_int_array|_int_labels|_float_input|"
                            r"_mask_inputs|_positive_list|_image_size|_weights|_scores|_deltas|_class_indices|"
                            r"\w*giou\w*)$")

BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
               ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
CALL_SWAPS = {"minimum": "maximum", "maximum": "minimum", "floor": "ceil", "ceil": "floor", "min": "max",
              "max": "min", "argmin": "argmax", "argmax": "argmin", "any": "all", "all": "any",
              "nonzero": "flatnonzero", "round": "floor", "zeros": "ones", "zeros_like": "ones_like"}
STRING_SWAPS = {"left": "right", "right": "left", "mean": "sum", "sum": "mean", "caffe": "slides",
                "slides": "caffe", "ij": "xy", "stable": "quicksort"}


# ---------------------------------------------------------------------------------------------------------
# the lessons, their tasks and the functions behind them
# ---------------------------------------------------------------------------------------------------------

def lesson_dirs(wanted=()):
    found = sorted(p for p in LESSONS.iterdir() if p.is_dir() and re.match(r"^\d\d_", p.name))
    if wanted:
        found = [p for p in found if any(p.name.startswith(w.zfill(2)) or p.name == w for w in wanted)]
    return found


def tasks_of(lesson: Path) -> dict:
    tree = ast.parse((lesson / f"test_{lesson.name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TASKS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"{lesson.name}: no TASKS in test_{lesson.name}.py")


def load_reference(lesson: Path):
    name = f"_mutate_reference_{lesson.name}"
    spec = importlib.util.spec_from_file_location(name, lesson / "reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def home_module(fn, reference):
    """The module whose namespace ``fn`` runs in (the library's, or ``reference.py`` itself)."""
    return sys.modules[fn.__module__] if fn.__module__ in sys.modules else reference


def own_functions(module):
    """Module-level functions defined in ``module`` (by name)."""
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, types.FunctionType) and obj.__globals__ is vars(module)}


def targets_of(task_fn, module) -> list[str]:
    """The functions a mistake in task ``task_fn`` may sit in: its core (``_name``, or itself without one) and
    the module's own helpers they call, transitively; input checks excluded."""
    functions = own_functions(module)
    root = "_" + task_fn.__name__ if "_" + task_fn.__name__ in functions else task_fn.__name__
    seen, todo = [], [root]
    while todo:
        name = todo.pop(0)
        if name in seen or name not in functions or SKIP_FUNCTIONS.match(name):
            continue
        seen.append(name)
        tree = ast.parse(_source(functions[name]))
        todo += [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in functions]
    return seen


def _source(fn) -> str:
    return inspect.getsource(fn)


# ---------------------------------------------------------------------------------------------------------
# mutation sites
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Mutant:
    lesson: str
    module: str          # the module's name (a key of sys.modules, or the reference's)
    function: str
    kind: str
    line: int            # in the module's file
    before: str
    after: str
    source: str          # the whole mutated function
    index: int = 0       # within the lesson, for --show
    outcome: str = ""    # caught / survived / equivalent / invalid
    caught_by: str = ""
    evidence: str = ""

    def describe(self):
        before, after = _difference(self.before, self.after)
        return f"{self.module.rsplit('.', 1)[-1]}.{self.function} line {self.line} [{self.kind}]: {before}  ->  {after}"


def _short(text, n=70):
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


def _difference(before, after, context=22):
    """The changed part of two one-statement sources, with a little context on either side."""
    before, after = " ".join(before.split()), " ".join(after.split())
    if len(before) <= 60 and len(after) <= 60:
        return before, after
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while end < min(len(before), len(after)) - start and before[-1 - end] == after[-1 - end]:
        end += 1
    lo = max(0, start - context)

    def window(text):
        hi = min(len(text), len(text) - end + context)
        return ("..." if lo else "") + text[lo:hi] + ("..." if hi < len(text) else "")
    return window(before), window(after)


def _skipped_nodes(tree) -> set:
    """Ids of nodes never mutated: docstrings, raise statements and their guards, arguments of input checks,
    the GIoU branch (not graded)."""
    skip = set()

    def mark(node):
        for sub in ast.walk(node):
            skip.add(id(sub))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.Module)) and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(getattr(node.body[0], "value", None), ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            mark(node.body[0])
        if isinstance(node, ast.Raise):
            mark(node)
        if isinstance(node, ast.If) and all(isinstance(s, ast.Raise) for s in node.body) and not node.orelse:
            mark(node)
        if isinstance(node, ast.If) and "giou" in ast.unparse(node.test):
            mark(node)
        if isinstance(node, ast.Call) and VALIDATORS.match(_call_name(node) or ""):
            mark(node)
        if isinstance(node, (ast.Expr, ast.Assign)) and isinstance(node.value, ast.Call) \
                and VALIDATORS.match(_call_name(node.value) or ""):
            mark(node)   # a check, or a checked copy of an argument, is never left out either
        if isinstance(node, ast.FunctionDef):   # the signature: its defaults are the caller's business
            for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                mark(d)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "__all__":
            mark(node)
    return skip


def _call_name(call):
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def _sites(tree):
    """Every ``(node_number, kind, apply)`` of one function's tree; ``apply(node, parents)`` mutates a copy."""
    skip = _skipped_nodes(tree)
    sites = []
    for number, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
            sites.append((number, "operator swapped", _set_attr("op", BINOP_SWAPS[type(node.op)]())))
        elif isinstance(node, ast.AugAssign) and type(node.op) in BINOP_SWAPS:
            sites.append((number, "operator swapped", _set_attr("op", BINOP_SWAPS[type(node.op)]())))
        if isinstance(node, ast.BoolOp):
            sites.append((number, "operator swapped", _set_attr("op", ast.Or() if isinstance(node.op, ast.And)
                                                                else ast.And())))
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in COMPARE_SWAPS:
                    kind = "comparison loosened" if isinstance(op, (ast.Lt, ast.Gt)) else "comparison changed"
                    sites.append((number, kind, _set_op(k, COMPARE_SWAPS[type(op)]())))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not, ast.Invert)):
            sites.append((number, "sign or not dropped", _replace_with_operand))
        if isinstance(node, ast.Constant) and not isinstance(node.value, str):
            v = node.value
            if isinstance(v, bool):
                sites.append((number, "constant nudged", _set_attr("value", not v)))
            elif isinstance(v, int):
                sites.append((number, "off by one", _set_attr("value", v + 1)))
                sites.append((number, "off by one", _set_attr("value", v - 1)))
            elif isinstance(v, float):
                sites.append((number, "constant nudged", _set_attr("value", 0.1 if v == 0 else v * 1.1)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in STRING_SWAPS:
            sites.append((number, "constant nudged", _set_attr("value", STRING_SWAPS[node.value])))
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name in CALL_SWAPS:
                sites.append((number, "operator swapped", _rename_call(CALL_SWAPS[name])))
            for k, kw in enumerate(node.keywords):
                if kw.arg is not None:
                    sites.append((number, "keyword dropped", _drop_keyword(k)))
        if isinstance(node, (ast.AugAssign, ast.Expr)) or (
                isinstance(node, ast.Assign) and all(isinstance(t, ast.Subscript) for t in node.targets)):
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
                sites.append((number, "statement left out", _delete_statement))
    return sites


def _set_attr(name, value):
    def apply(node, parents):
        setattr(node, name, value)
        return node
    return apply


def _set_op(k, op):
    def apply(node, parents):
        node.ops[k] = op
        return node
    return apply


def _replace_with_operand(node, parents):
    _replace(node, node.operand, parents)
    return node.operand


def _rename_call(new):
    def apply(node, parents):
        if isinstance(node.func, ast.Attribute):
            node.func.attr = new
        else:
            node.func.id = new
        return node
    return apply


def _drop_keyword(k):
    def apply(node, parents):
        del node.keywords[k]
        return node
    return apply


def _delete_statement(node, parents):
    replacement = ast.Pass()
    _replace(node, replacement, parents)
    return replacement


def _replace(old, new, parents):
    parent = parents[id(old)]
    for name, value in ast.iter_fields(parent):
        if isinstance(value, list):
            for i, item in enumerate(value):
                if item is old:
                    value[i] = new
                    return
        elif value is old:
            setattr(parent, name, new)
            return
    raise RuntimeError("node not found in its parent")


def _statement_of(node, parents):
    while not isinstance(node, ast.stmt):
        node = parents[id(node)]
    return node


def mutants_of(lesson: Path, tasks: dict, reference) -> list[Mutant]:
    """Every mutant of one lesson, each (module, function, site) once, in a stable order."""
    out, done = [], set()
    for name in tasks.values():
        fn = getattr(reference, name)
        module = home_module(fn, reference)
        functions = own_functions(module)
        for target in targets_of(fn, module):
            if (module.__name__, target) in done:
                continue
            done.add((module.__name__, target))
            source = _source(functions[target])
            first_line = functions[target].__code__.co_firstlineno
            tree = ast.parse(source)
            for number, kind, apply in _sites(tree):
                mutated = copy.deepcopy(tree)
                nodes = list(ast.walk(mutated))
                parents = {id(c): p for p in nodes for c in ast.iter_child_nodes(p)}
                node = nodes[number]
                statement = _statement_of(node, parents) if not isinstance(node, ast.stmt) else node
                before = ast.unparse(statement) if not isinstance(statement, ast.FunctionDef) else ast.unparse(node)
                line = first_line + getattr(node, "lineno", 1) - 1
                result = apply(node, parents)
                if isinstance(result, ast.stmt):
                    statement = result
                after = ast.unparse(statement) if not isinstance(statement, ast.FunctionDef) else ast.unparse(result)
                ast.fix_missing_locations(mutated)
                try:
                    new_source = ast.unparse(mutated)
                    compile(new_source, "<mutant>", "exec", flags=__future__.annotations.compiler_flag,
                            dont_inherit=True)
                except (SyntaxError, ValueError):
                    continue
                if before == after:
                    continue
                out.append(Mutant(lesson.name, module.__name__, target, kind, line, before, after, new_source))
    for i, m in enumerate(out):
        m.index = i
    return out


# ---------------------------------------------------------------------------------------------------------
# a mutant as an implementation: the module's namespace copied, its functions rebound, one re-compiled
# ---------------------------------------------------------------------------------------------------------

def mutant_namespace(mutant: Mutant, module):
    g = dict(vars(module))
    for name, fn in own_functions(module).items():
        new = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
        new.__kwdefaults__ = fn.__kwdefaults__
        new.__doc__, new.__module__, new.__qualname__ = fn.__doc__, fn.__module__, fn.__qualname__
        g[name] = new
    code = compile(mutant.source, f"<mutant {mutant.module}.{mutant.function}>", "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, g)
    g[mutant.function].__module__ = module.__name__
    return g


def implementation(mutant: Mutant, tasks: dict, reference):
    """``(namespace the working copy exports, names of the tasks the mutant replaces)``."""
    module = sys.modules.get(mutant.module) or reference
    g = mutant_namespace(mutant, module)
    exported = {k: v for k, v in vars(reference).items() if not k.startswith("__")}
    touched = []
    for name in tasks.values():
        fn = getattr(reference, name)
        if home_module(fn, reference) is module:
            exported[name] = g[name]
            touched.append(name)
    return exported, touched


# ---------------------------------------------------------------------------------------------------------
# running a lesson's tests on a working copy, in this process
# ---------------------------------------------------------------------------------------------------------

class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout("timed out")


@contextlib.contextmanager
def time_limit(seconds):
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class _Recorder:
    def __init__(self):
        self.failed, self.passed, self.collected = [], 0, 0

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)
        elif report.passed and report.when == "call":
            self.passed += 1

    def pytest_collection_modifyitems(self, items):
        self.collected = len(items)


WORKING_COPY_SOURCE = '''"""A planted mistake (tools/mutate_lessons.py): the reference, one function mutated."""
import sys

globals().update(sys.modules["{registry}"].exported)
'''


class LessonRunner:
    """A temporary copy of ``lessons/`` whose working copies re-export whatever ``self.exported`` holds."""

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mutate_lessons_"))
        shutil.copytree(LESSONS, self.tmp / "lessons",
                        ignore=shutil.ignore_patterns(WORK_FILE, "__pycache__", ".pytest_cache"))
        (self.tmp / "pytest.ini").write_text("[pytest]\n")
        self.registry = types.ModuleType(REGISTRY)
        sys.modules[REGISTRY] = self.registry

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, lesson: str, exported: dict):
        """``(passed_all, first failing test or "", number of tests)``."""
        folder = self.tmp / "lessons" / lesson
        (folder / WORK_FILE).write_text(WORKING_COPY_SOURCE.format(registry=REGISTRY))
        self.registry.exported = exported
        recorder = _Recorder()
        sink = io.StringIO()
        args = [str(folder), "--impl=exercise", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
                "-p", "no:threadexception", "--tb=no",
                f"--rootdir={self.tmp}", "-W", "ignore"]
        import pytest
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), time_limit(TEST_TIMEOUT_S):
                code = pytest.main(args, plugins=[recorder])
        except _Timeout:
            return False, "(timed out: an endless loop)", recorder.collected
        if recorder.collected == 0:
            raise RuntimeError(f"{lesson}: no test collected\n{sink.getvalue()[-2000:]}")
        if int(code) not in (0, 1):
            return False, f"(pytest exit code {int(code)})", recorder.collected
        first = recorder.failed[0].split("::", 1)[-1] if recorder.failed else ""
        return not recorder.failed, first, recorder.collected


# ---------------------------------------------------------------------------------------------------------
# random inputs of every task, to tell a survivor from an equivalent mutant
# ---------------------------------------------------------------------------------------------------------

def _dtype(rng):
    return np.float64 if rng.random() < 0.7 else np.float32


def _boxes(rng, n, extent=20, grid=None, min_size=0.0):
    """n boxes; on a grid of 0.5 when ``grid`` (exact IoUs, ties, coordinates on .5)."""
    if grid:
        xy = rng.integers(0, extent, size=(n, 2)) * grid
        wh = (rng.integers(0, extent // 2, size=(n, 2)) + (1 if min_size > 0 else 0)) * grid
    else:
        xy = rng.uniform(-2, extent, size=(n, 2))
        wh = rng.uniform(min_size, extent / 2, size=(n, 2))
    return np.hstack([xy, xy + np.maximum(wh, min_size)])


def _positive_boxes(rng, n, extent=20):
    return _boxes(rng, n, extent, grid=0.5 if rng.random() < 0.5 else None, min_size=0.5)


def _ties(rng, n, levels=None):
    levels = levels or int(rng.integers(1, 6))
    return rng.integers(0, levels, size=n) / levels


def g_box_area(rng, impl):
    return (_boxes(rng, int(rng.integers(0, 6)), grid=0.5).astype(_dtype(rng)),), {}


def g_box_iou(rng, impl):
    a = _boxes(rng, int(rng.integers(0, 6)), grid=0.5 if rng.random() < 0.6 else None)
    b = np.vstack([a[: int(rng.integers(0, len(a) + 1))], _boxes(rng, int(rng.integers(0, 4)), grid=0.5)])
    return (a, b), {}


WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 4.0, 0.5)]


def g_box_encode(rng, impl):
    n = int(rng.integers(0, 6))
    return (_positive_boxes(rng, n), _positive_boxes(rng, n), WEIGHTS[int(rng.integers(3))]), {}


def g_box_decode(rng, impl):
    n, k = int(rng.integers(0, 5)), int(rng.integers(1, 4))
    deltas = rng.normal(0, 2, size=(n, 4 * k)) * rng.choice([1, 3], size=(n, 4 * k))
    kwargs = {"clip": float(rng.choice([math.log(1000 / 16), 1.0, 0.5]))} if rng.random() < 0.3 else {}
    return (deltas, _positive_boxes(rng, n), WEIGHTS[int(rng.integers(3))]), kwargs


def g_nms(rng, impl):
    n = int(rng.integers(0, 40))
    boxes = _boxes(rng, n, extent=12, grid=1.0 if rng.random() < 0.5 else None)
    scores = _ties(rng, n) if rng.random() < 0.6 else rng.random(n)
    return (boxes, scores, float(rng.choice([0.0, 0.3, 0.5, 0.7, 1.0, rng.random()]))), {}


def g_grid_size(rng, impl):
    stride = int(rng.choice([4, 8, 16, 32]))
    size = tuple(int(s) for s in rng.integers(1, 8, size=2) * stride + rng.choice([0, 0, 1, stride - 1], size=2))
    return (size, stride), {}


def g_base_anchors(rng, impl):
    sizes = tuple(int(s) for s in rng.choice([8, 16, 32, 45, 64, 100, 128], size=int(rng.integers(1, 4))))
    ratios = tuple(float(r) for r in rng.choice([0.25, 0.5, 1.0, 2.0, 3.0], size=int(rng.integers(1, 4))))
    return (sizes, ratios), {}


def g_generate_anchors(rng, impl):
    (sizes, ratios), _ = g_base_anchors(rng, impl)
    (image_size, stride), _ = g_grid_size(rng, impl)
    dtype = "float64" if rng.random() < 0.5 else "float32"
    return (image_size, stride, sizes, ratios, float(rng.choice([0.0, 0.5, 0.25])), dtype), {}


def g_match_by_iou(rng, impl):
    g, a = int(rng.integers(0, 4)), int(rng.integers(0, 12))
    iou = rng.choice([0.0, 0.1, 0.3, 0.5, 0.65, 0.7, 0.9, 1.0], size=(g, a))
    high, low = [(0.7, 0.3), (0.5, 0.5), (0.6, 0.4), (0.7, 0.0)][int(rng.integers(4))]
    return (iou, high, low, bool(rng.random() < 0.7)), {}


def g_label_anchors(rng, impl):
    anchors = _boxes(rng, int(rng.integers(0, 15)), extent=10, grid=1.0, min_size=1.0)
    gt = _boxes(rng, int(rng.integers(0, 3)), extent=10, grid=1.0, min_size=1.0)
    high, low = [(0.7, 0.3), (0.5, 0.5), (0.6, 0.2)][int(rng.integers(3))]
    return (anchors, gt, high, low), {}


def g_sample_balanced(rng, impl):
    labels = rng.choice([-1.0, 0.0, 1.0, 2.0], size=int(rng.integers(0, 30)))
    return (labels, np.random.default_rng(int(rng.integers(1 << 30))), int(rng.integers(0, 20)),
            float(rng.choice([0.0, 0.25, 0.5, 1.0]))), {}


def g_rpn_targets(rng, impl):
    (anchors, gt, high, low), _ = g_label_anchors(rng, impl)
    return (anchors, gt, np.random.default_rng(int(rng.integers(1 << 30))), int(rng.integers(0, 12)),
            float(rng.choice([0.25, 0.5])), high, low), {}


def g_rpn_loss(rng, impl):
    shape = (int(rng.integers(0, 8)),) if rng.random() < 0.6 else (2, int(rng.integers(0, 5)))
    objectness = rng.normal(0, 3, size=shape)
    labels = rng.choice([-1.0, 0.0, 1.0], size=shape)
    deltas = rng.normal(0, 0.3, size=shape + (4,))
    targets = deltas + rng.choice([0.0, 0.05, -0.3, 1 / 9], size=shape + (4,))
    dt = _dtype(rng)
    return (objectness.astype(dt), deltas.astype(dt), labels, targets), {}


def g_generate_proposals(rng, impl):
    a = int(rng.integers(0, 30))
    anchors = _boxes(rng, a, extent=30, grid=1.0 if rng.random() < 0.5 else None, min_size=1.0)
    objectness = rng.normal(0, 3, size=a) if rng.random() < 0.6 else rng.integers(-3, 3, size=a).astype(float)
    deltas = rng.normal(0, 0.5, size=(a, 4))
    kwargs = dict(pre_nms_top_n=int(rng.integers(1, 40)), post_nms_top_n=int(rng.integers(1, 40)),
                  nms_thresh=float(rng.choice([0.3, 0.5, 0.7, 1.0])), min_size=float(rng.choice([1e-3, 1.0, 3.0])),
                  score_thresh=float(rng.choice([0.0, 0.3, 0.5])))
    return (anchors, objectness, deltas, tuple(int(s) for s in rng.integers(10, 40, size=2))), kwargs


def _features(rng, n=None, c=None):
    n = n or int(rng.integers(1, 3))
    c = c or int(rng.integers(1, 3))
    h, w = (int(s) for s in rng.integers(1, 9, size=2))
    return rng.standard_normal((n, c, h, w)).astype(_dtype(rng))


def _rois(rng, n_images, h, w, scale):
    r = int(rng.integers(0, 6))
    half = rng.random() < 0.5           # corners on .5 (RoIPool's rounding, RoIAlign's aligned)
    corner = (rng.integers(-4, 2 * max(h, w), size=(r, 2)) / 2 if half else rng.uniform(-2, max(h, w), size=(r, 2)))
    side = rng.choice([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.5, 7.0], size=(r, 2)) if rng.random() < 0.5 else \
        rng.uniform(0.2, max(h, w), size=(r, 2))
    return np.column_stack([rng.integers(0, n_images, r), corner / scale, (corner + side) / scale])


def g_bilinear_interpolate(rng, impl):
    plane = rng.standard_normal((int(rng.integers(1, 6)), int(rng.integers(1, 6))))
    h, w = plane.shape
    y = float(rng.choice([rng.uniform(-1.5, h + 0.5), rng.integers(-2, h + 2) / 2, -1.0, h - 1.0, float(h)]))
    x = float(rng.choice([rng.uniform(-1.5, w + 0.5), rng.integers(-2, w + 2) / 2, -1.0, w - 1.0, float(w)]))
    return (plane, y, x), {}


def g_roi_pool(rng, impl):
    f = _features(rng)
    scale = float(rng.choice([1.0, 0.5, 0.25]))
    rois = _rois(rng, f.shape[0], f.shape[2], f.shape[3], scale)
    size = tuple(int(s) for s in rng.integers(1, 4, size=2))
    return (f, rois, size, scale, str(rng.choice(["caffe", "slides"]))), {}


def g_roi_pool_backward(rng, impl):
    from mrcnn_edu import roi
    (f, rois, size, scale, bins), _ = g_roi_pool(rng, impl)
    _, argmax = roi.roi_pool(f, rois, size, scale, bins)
    grad = rng.standard_normal(argmax.shape).astype(f.dtype)
    return (grad, argmax, f.shape, rois if (f.shape[0] > 1 or rng.random() < 0.5) else None), {}


def g_roi_align(rng, impl):
    f = _features(rng)
    scale = float(rng.choice([1.0, 0.5, 0.25]))
    rois = _rois(rng, f.shape[0], f.shape[2], f.shape[3], scale)
    size = tuple(int(s) for s in rng.integers(1, 4, size=2))
    return (f, rois, size, scale, int(rng.choice([-1, 0, 1, 2, 3])), bool(rng.random() < 0.5)), {}


def g_roi_align_backward(rng, impl):
    (f, rois, size, scale, ratio, aligned), _ = g_roi_align(rng, impl)
    grad = rng.standard_normal((len(rois), f.shape[1]) + size).astype(f.dtype)
    return (grad, rois, f.shape, size, scale, ratio, aligned), {}


def g_smooth_l1_loss(rng, impl):
    shape = tuple(int(s) for s in rng.integers(0, 4, size=int(rng.integers(1, 3))))
    beta = float(rng.choice([0.0, 1 / 9, 0.5, 1.0, 2.0]))
    pred = rng.normal(0, 1.5, size=shape)
    target = pred - rng.choice([0.0, beta, -beta, 0.5 * beta, 3.0, -0.01], size=shape) if rng.random() < 0.5 \
        else rng.normal(0, 1.5, size=shape)
    dt = _dtype(rng)
    return (pred.astype(dt), target.astype(dt), beta, str(rng.choice(["mean", "sum", "none"]))), {}


def g_binary_cross_entropy_with_logits(rng, impl):
    shape = tuple(int(s) for s in rng.integers(0, 4, size=int(rng.integers(1, 3))))
    logits = rng.normal(0, 4, size=shape) * rng.choice([1, 1, 50], size=shape)
    targets = rng.choice([0.0, 1.0, 0.5, 0.3], size=shape)
    dt = _dtype(rng)
    return (logits.astype(dt), targets, str(rng.choice(["mean", "sum", "none"]))), {}


def g_softmax_cross_entropy(rng, impl):
    n, k = int(rng.integers(0, 5)), int(rng.integers(1, 5))
    logits = rng.normal(0, 3, size=(n, k)) * rng.choice([1, 1, 100])
    return (logits.astype(_dtype(rng)), rng.integers(0, k, size=n)), {}


def _mask_case(rng):
    r, k, m = int(rng.integers(0, 4)), int(rng.integers(2, 5)), int(rng.integers(1, 4))
    logits = rng.normal(0, 3, size=(r, k, m, m)).astype(_dtype(rng))
    targets = rng.choice([0.0, 1.0, 0.5, 0.49, 0.7], size=(r, m, m))
    return (logits, rng.integers(1, k, size=r), targets), {}


def g_linear(rng, impl):
    lead = tuple(int(s) for s in rng.integers(0, 4, size=int(rng.integers(1, 3))))
    d_in, d_out = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    dt = _dtype(rng)
    b = rng.standard_normal(d_out).astype(dt) if rng.random() < 0.7 else None
    return (rng.standard_normal(lead + (d_in,)).astype(dt), rng.standard_normal((d_out, d_in)).astype(dt), b), {}


class _WithCache:
    """A backward's inputs: the cache comes from the graded implementation's own forward, as in the tests."""

    def __init__(self, forward, args, backward_args):
        self.forward, self.args, self.backward_args = forward, args, backward_args


def g_linear_backward(rng, impl):
    (x, w, b), _ = g_linear(rng, impl)
    dout = rng.standard_normal(x.shape[:-1] + (w.shape[0],)).astype(x.dtype)
    return _WithCache("linear", (x, w, b), lambda cache: (dout, cache)), {}


def _geometry(rng):
    kh, kw = (int(s) for s in rng.integers(1, 4, size=2))
    sh, sw = (int(s) for s in rng.integers(1, 3, size=2))
    ph, pw = (int(s) for s in rng.integers(0, 2, size=2))
    h = int(rng.integers(max(kh - 2 * ph, 1), 7))
    w = int(rng.integers(max(kw - 2 * pw, 1), 7))
    return h, w, (kh, kw), (sh, sw), (ph, pw)


def g_im2col(rng, impl):
    h, w, k, s, p = _geometry(rng)
    x = rng.standard_normal((int(rng.integers(1, 3)), int(rng.integers(1, 3)), h, w)).astype(_dtype(rng))
    return (x, k, s, p), {}


def g_col2im(rng, impl):
    from mrcnn_edu.nn.conv import conv_output_size
    h, w, k, s, p = _geometry(rng)
    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    oh, ow = conv_output_size(h, k[0], s[0], p[0]), conv_output_size(w, k[1], s[1], p[1])
    cols = rng.standard_normal((n, c * k[0] * k[1], oh * ow)).astype(_dtype(rng))
    return (cols, (n, c, h, w), k, s, p), {}


def g_conv2d(rng, impl):
    h, w, k, s, p = _geometry(rng)
    n, c, c_out = int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
    dt = _dtype(rng)
    b = rng.standard_normal(c_out).astype(dt) if rng.random() < 0.7 else None
    stride = s if rng.random() < 0.5 else s[0]
    padding = p if rng.random() < 0.5 else p[0]
    if rng.random() < 0.25:   # a 1 x 1 kernel: the pointwise path
        k, padding = (1, 1), 0
    x = rng.standard_normal((n, c, h, w)).astype(dt)
    return (x, rng.standard_normal((c_out, c) + k).astype(dt), b, stride, padding), {}


def g_conv2d_backward(rng, impl):
    (x, w, b, stride, padding), _ = g_conv2d(rng, impl)
    need_dx = bool(rng.random() < 0.8)

    def backward_args(cache):
        return rng_dout(cache), cache, need_dx

    seed = int(rng.integers(1 << 30))

    def rng_dout(cache):
        return np.random.default_rng(seed).standard_normal(cache.out_shape).astype(x.dtype)

    return _WithCache("conv2d", (x, w, b, stride, padding), backward_args), {}


def g_box_head_targets(rng, impl):
    proposals = _boxes(rng, int(rng.integers(0, 12)), extent=10, grid=1.0, min_size=1.0)
    g = int(rng.integers(0, 3))
    gt = _boxes(rng, g, extent=10, grid=1.0, min_size=1.0)
    labels = rng.integers(1, 4, size=g)
    fg, bg = [(0.5, 0.5), (0.5, 0.2), (0.6, 0.3)][int(rng.integers(3))]
    return (proposals, gt, labels, np.random.default_rng(int(rng.integers(1 << 30))), int(rng.integers(0, 16)),
            float(rng.choice([0.25, 0.5])), fg, bg), {}


def g_fast_rcnn_loss(rng, impl):
    p, k = int(rng.integers(0, 5)), int(rng.integers(1, 4))
    dt = _dtype(rng)
    regression = rng.normal(0, 0.3, size=(p, 4 * k)).astype(dt)
    targets = rng.normal(0, 0.3, size=(p, 4)) * rng.choice([0.0, 0.1, 1.0, 3.0], size=(p, 4))
    return (rng.normal(0, 2, size=(p, k)).astype(dt), regression, rng.integers(0, k, size=p), targets), {}


def g_mask_targets(rng, impl):
    g, h, w = int(rng.integers(1, 3)), int(rng.integers(3, 9)), int(rng.integers(3, 9))
    masks = rng.random((g, h, w)) < 0.5
    r = int(rng.integers(0, 5))
    proposals = _boxes(rng, r, extent=max(h, w), grid=0.5, min_size=0.5)
    return (masks, proposals, rng.integers(0, g, size=r), int(rng.integers(1, 5)), bool(rng.random() < 0.5)), {}


def g_paste_masks(rng, impl):
    d, m = int(rng.integers(0, 3)), int(rng.integers(1, 5))
    dt = _dtype(rng)
    masks = rng.random((d, m, m)).astype(dt) if rng.random() < 0.5 else rng.choice([0.0, 1.0], (d, m, m)).astype(dt)
    size = tuple(int(s) for s in rng.integers(3, 10, size=2))
    boxes = _boxes(rng, d, extent=max(size), grid=0.5 if rng.random() < 0.5 else None, min_size=0.5).astype(dt)
    return (masks, boxes, size), {}


def g_rois_from_boxes(rng, impl):
    per_image = [_boxes(rng, int(rng.integers(0, 4))).astype(_dtype(rng)) for _ in range(int(rng.integers(0, 4)))]
    return (per_image, str(rng.choice(["float32", "float64"]))), {}


def g_sample_mask_rois(rng, impl):
    positive = rng.random(int(rng.integers(0, 20))) < rng.random()
    return (positive, int(rng.integers(-1, 8)), np.random.default_rng(int(rng.integers(1 << 30)))), {}


def g_postprocess_detections(rng, impl):
    p, k = int(rng.integers(0, 6)), int(rng.integers(2, 4))
    logits = rng.normal(0, 2, size=(p, k))
    deltas = rng.normal(0, 0.5, size=(p, 4 * k)) * rng.choice([0.0, 1.0])
    proposals = _boxes(rng, p, extent=30, grid=1.0 if rng.random() < 0.5 else None, min_size=1.0)
    kwargs = dict(score_threshold=float(rng.choice([0.0, 0.05, 0.2])), nms_threshold=float(rng.choice([0.3, 0.5, 0.8])),
                  detections_per_image=int(rng.integers(1, 8)))
    return (logits, deltas, proposals, tuple(int(s) for s in rng.integers(10, 40, size=2))), kwargs


def g_detection_masks(rng, impl):
    d, k, m = int(rng.integers(0, 3)), int(rng.integers(2, 4)), int(rng.integers(1, 5))
    logits = rng.normal(0, 2, size=(d, k, m, m))
    size = tuple(int(s) for s in rng.integers(3, 10, size=2))
    boxes = _boxes(rng, d, extent=max(size), grid=0.5, min_size=0.5)
    return (logits, rng.integers(1, k, size=d), boxes, size, float(rng.choice([0.5, 0.3, 0.8]))), {}


def g_mask_iou(rng, impl):
    h, w = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    a = rng.random((int(rng.integers(0, 4)), h, w)) < rng.random()
    b = rng.random((int(rng.integers(0, 4)), h, w)) < rng.random()
    return (a, b), {}


def _ious(rng, d, g):
    return rng.choice([0.0, 0.3, 0.5, 0.55, 0.6, 0.75, 0.8, 0.9, 1.0], size=(d, g))


def g_match_detections(rng, impl):
    d, g = int(rng.integers(0, 8)), int(rng.integers(0, 4))
    return (_ious(rng, d, g), _ties(rng, d), float(rng.choice([0.5, 0.55, 0.75, 0.9, 1.0, 0.0]))), {}


def g_precision_recall(rng, impl):
    d = int(rng.integers(0, 10))
    tp = rng.random(d) < 0.5
    return (tp, _ties(rng, d), int(tp.sum()) + int(rng.integers(1, 3))), {}


def g_average_precision(rng, impl):
    from mrcnn_edu import ap
    (tp, scores, num_gt), _ = g_precision_recall(rng, impl)
    if rng.random() < 0.3:   # recalls that land exactly on 0.7 and friends
        num_gt = 10
        tp = np.ones(min(len(tp), 10), dtype=bool)
        scores = scores[:len(tp)]
    return ap.precision_recall(tp, scores, num_gt), {}


def g_ap_at_thresholds(rng, impl):
    n = int(rng.integers(0, 4))
    ious, scores = [], []
    for _ in range(n):
        d, g = int(rng.integers(0, 6)), int(rng.integers(0, 3))
        ious.append(_ious(rng, d, g))
        scores.append(_ties(rng, d))
    thresholds = None if rng.random() < 0.5 else np.array(rng.choice([0.5, 0.55, 0.75, 0.9, 1.0], size=3))
    return (ious, scores, thresholds, int(rng.integers(1, 6))), {}


GENERATORS = {name[2:]: fn for name, fn in globals().items() if name.startswith("g_") and callable(fn)}
GENERATORS["sigmoid_mask_loss"] = GENERATORS["softmax_mask_loss"] = lambda rng, impl: _mask_case(rng)


def _call(ns, name, args, kwargs):
    if isinstance(args, _WithCache):
        _, cache = ns[args.forward](*copy.deepcopy(args.args))
        return ns[name](*args.backward_args(cache))
    return ns[name](*copy.deepcopy(args), **copy.deepcopy(kwargs))


def _same(a, b) -> bool:
    if isinstance(a, BaseException) or isinstance(b, BaseException):
        return type(a) is type(b)
    if hasattr(a, "out_shape") or hasattr(b, "out_shape"):   # a layer's cache: private to the layer
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is b
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    if x.dtype.kind in "fc":   # the same numbers up to rounding in the result's precision
        rtol, atol = (1e-5, 1e-6) if x.dtype.itemsize <= 4 else (1e-9, 1e-12)
        return bool(np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True))
    return bool(np.array_equal(x, y))


def _quietly(fn):
    with np.errstate(all="ignore"), contextlib.redirect_stdout(io.StringIO()):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return fn()
            except _Timeout:
                raise
            except Exception as err:  # a mutant that raises where the library does not: a different result
                return err


def differs(exported, touched, reference, draws=DRAWS):
    """The first random input (task, description) on which the mutant's output differs from the library's."""
    library = {k: v for k, v in vars(reference).items()}
    for name in touched:
        generator = GENERATORS[name]
        for seed in range(draws):
            args, kwargs = generator(np.random.default_rng(seed), None)
            want = _quietly(lambda: _call(library, name, args, kwargs))
            if isinstance(want, Exception):
                continue   # an input the library refuses is no evidence
            got = _quietly(lambda: _call(exported, name, args, kwargs))
            if not _same(want, got):
                return f"{name}, random input seed {seed}: " + _short(_show_difference(want, got), 110)
    return ""


def _show_difference(want, got):
    if isinstance(got, Exception):
        return f"raises {type(got).__name__}: {got}"
    return f"library {_flat(want)} vs mutant {_flat(got)}"


def _flat(v):
    if isinstance(v, np.ndarray) and (v.size == 0 or v.dtype.kind not in "f"):
        return np.array2string(v, threshold=6, edgeitems=2).replace("\n", "") + f" ({v.dtype})"
    if isinstance(v, dict):
        v = list(v.values())
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_flat(x) for x in v) + ")"
    try:
        return np.array2string(np.asarray(v), precision=4, threshold=6, edgeitems=2).replace("\n", "")
    except Exception:
        return repr(v)


# ---------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------

def run_lesson(lesson: Path, runner: LessonRunner, sample: int | None, seed: int, verbose: bool, only=None):
    tasks = tasks_of(lesson)
    reference = load_reference(lesson)
    mutants = mutants_of(lesson, tasks, reference)
    chosen = mutants if only is None else [m for m in mutants if m.index in only]
    if sample and len(chosen) > sample:
        chosen = sorted(random.Random(f"{seed}:{lesson.name}").sample(chosen, sample), key=lambda m: m.index)
    ok, first, count = runner.run(lesson.name, {k: v for k, v in vars(reference).items() if not k.startswith("__")})
    if not ok:
        raise SystemExit(f"{lesson.name}: the unmutated reference fails {first} in the temporary copy")
    for m in chosen:
        started = time.time()
        try:
            exported, touched = implementation(m, tasks, reference)
        except Exception as err:   # does not even define the function
            m.outcome, m.caught_by = "caught", f"(does not compile: {type(err).__name__})"
            continue
        passed, first, _ = runner.run(lesson.name, exported)
        if not passed:
            m.outcome, m.caught_by = "caught", first
        else:
            try:
                with time_limit(DIFF_TIMEOUT_S):
                    evidence = differs(exported, touched, reference)
            except _Timeout:
                evidence = "(timed out on random inputs: an endless loop the tests never reach)"
            m.outcome, m.evidence = ("survived", evidence) if evidence else ("equivalent", "")
        if verbose:
            print(f"  {lesson.name} #{m.index:<4d} {time.time() - started:5.1f} s {m.outcome:10s} {m.describe()}",
                  flush=True)
    return {"lesson": lesson.name, "tests": count, "total_mutants": len(mutants), "mutants": chosen}


def summary(results, seconds):
    lines = []
    header = f"{'lesson':12s} {'mutants':>8s} {'change a result':>16s} {'caught':>7s} {'equivalent':>11s} {'score':>7s}"
    lines += [header, "-" * len(header)]
    tot = dict(mutants=0, changing=0, caught=0, equivalent=0)
    for r in results:
        ms = r["mutants"]
        caught = sum(m.outcome == "caught" for m in ms)
        survived = sum(m.outcome == "survived" for m in ms)
        equivalent = sum(m.outcome == "equivalent" for m in ms)
        changing = caught + survived
        shown = f"{len(ms)}" + (f"/{r['total_mutants']}" if len(ms) != r["total_mutants"] else "")
        score = f"{100 * caught / changing:.1f}%" if changing else "-"
        lines.append(f"{r['lesson']:12s} {shown:>8s} {changing:>16d} {caught:>7d} {equivalent:>11d} {score:>7s}")
        for key, value in (("mutants", len(ms)), ("changing", changing), ("caught", caught),
                           ("equivalent", equivalent)):
            tot[key] += value
    lines.append("-" * len(header))
    score = f"{100 * tot['caught'] / tot['changing']:.1f}%" if tot["changing"] else "-"
    lines.append(f"{'all':12s} {tot['mutants']:>8d} {tot['changing']:>16d} {tot['caught']:>7d} "
                 f"{tot['equivalent']:>11d} {score:>7s}")
    lines.append(f"({seconds:.0f} s; 'change a result' = caught + survivors; equivalent mutants change no output on "
                 f"{DRAWS} random inputs of each task they touch)")
    for r in results:
        survivors = [m for m in r["mutants"] if m.outcome == "survived"]
        if survivors:
            lines.append(f"\nsurvivors of {r['lesson']}:")
            for m in survivors:
                lines.append(f"  #{m.index} {m.describe()}")
                lines.append(f"      shown by {m.evidence}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", help="lesson numbers or folder names (default: all)")
    parser.add_argument("--sample", type=int, default=None, help="at most this many mutants a lesson")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    parser.add_argument("--only", metavar="I,J,...", help="run only these mutants (with one lesson)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--show", metavar="NN:I", help="show mutant I of lesson NN and run it")
    parser.add_argument("--equivalent", action="store_true", help="also list the equivalent mutants")
    parser.add_argument("--json", metavar="PATH", help="write every mutant's outcome as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per mutant as it runs")
    args = parser.parse_args(argv)

    from mrcnn_edu import backend
    backend.use("numpy")

    if args.show:
        number, index = args.show.split(":")
        lesson = lesson_dirs([number])[0]
        tasks, reference = tasks_of(lesson), load_reference(lesson)
        m = mutants_of(lesson, tasks, reference)[int(index)]
        print(m.describe())
        print(m.source)
        runner = LessonRunner()
        try:
            exported, touched = implementation(m, tasks, reference)
            passed, first, _ = runner.run(lesson.name, exported)
            print("caught by " + first if not passed else
                  "not caught; random inputs: " + (differs(exported, touched, reference) or "no difference"))
        finally:
            runner.close()
        return 0

    lessons = lesson_dirs(args.lessons)
    if args.list:
        for lesson in lessons:
            tasks, reference = tasks_of(lesson), load_reference(lesson)
            for m in mutants_of(lesson, tasks, reference):
                print(f"{lesson.name} #{m.index:<4d} {m.describe()}")
        return 0

    start = time.time()
    runner = LessonRunner()
    try:
        only = {int(i) for i in args.only.split(",")} if args.only else None
        results = [run_lesson(lesson, runner, args.sample, args.seed, args.verbose, only) for lesson in lessons]
    finally:
        runner.close()
    print(summary(results, time.time() - start))
    if args.equivalent:
        for r in results:
            for m in r["mutants"]:
                if m.outcome == "equivalent":
                    print(f"  equivalent {r['lesson']} #{m.index} {m.describe()}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{k: getattr(m, k) for k in ("lesson", "index", "module", "function", "kind", "line", "before", "after",
                                         "outcome", "caught_by", "evidence")}
             for r in results for m in r["mutants"]], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
