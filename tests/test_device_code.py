"""Device code must never call NumPy: the static check that lets CPU-only CI catch code that breaks on a GPU.

Under the CuPy backend the arrays live on the GPU. A device function that writes ``np.exp(x)`` still runs
on CPU-only CI (NumPy arrays go in, NumPy comes out) and then fails, or silently copies to the host, on the
GPU. So every module under ``mrcnn_edu/`` is read with ``ast`` and, unless it is host-only, it may not
mention ``np`` or ``numpy`` at all (calls, attributes, imports, dtype constants alike): it asks
``backend.get_array_module(x)`` or ``backend.xp`` instead. And no module but ``backend.py`` imports CuPy.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mrcnn_edu"

# Host-only modules, which may use NumPy by name: each works on host arrays on purpose.
#   backend.py     the switch itself: NumPy is one of the two backends
#   gradcheck.py   finite differences run a loop on host copies in float64
#   checkpoint.py  file I/O (.npz)
#   cli.py         the command line: reads images and files, prints tables
#   visualize.py   matplotlib draws host arrays
#   train.py       the training loop: host batches in, model.normalize moves them to the device
#   evaluate.py    the COCO metric (pycocotools) runs on host arrays
#   lessons.py     copies files and runs pytest for the student workflow
#   ap.py          COCO AP by hand, on host arrays (as pycocotools)
#   inference.py   loads a model file and stacks host images into batches
#   demo.py        prints and draws the lecture's worked examples
#   capstone.py    trains on the student's lesson functions, on NumPy only, comparing them with the library's
#   explore.py     looks at a data set (anchor fit, a browsing grid): statistics and figures on host arrays
#   breakdown.py   evaluate's per-class, per-size AP and confusion matrix: pycocotools and ap.py on host arrays
#   inspection_figures.py  matplotlib draws the stages that inspection.py traced on the device
#   weights.py     reads the weight norms of metrics.jsonl into host arrays for figures (the norms use xp)
#   data/          the shapes data set and COCO I/O build host images and masks
#   *_host*        any module whose name says it runs on the host
HOST_ONLY_FILES = frozenset({"backend.py", "gradcheck.py", "checkpoint.py", "cli.py", "visualize.py", "train.py",
                             "evaluate.py", "lessons.py", "explore.py", "ap.py", "inference.py",
                             "demo.py", "capstone.py", "breakdown.py", "inspection_figures.py",
                             "weights.py"})
HOST_ONLY_DIRS = frozenset({"data"})
HOST_ONLY_NAME_PART = "_host"

# Only backend.py may import CuPy (design.md: one switch owns the GPU).
CUPY_OWNER = "backend.py"
NUMPY_NAMES = frozenset({"np", "numpy"})
CUPY_MODULES = frozenset({"cupy", "cupyx"})


def is_host_only(relpath: Path) -> bool:
    """``relpath`` (relative to ``mrcnn_edu/``) is allowed to use NumPy."""
    return (
        (len(relpath.parts) == 1 and relpath.name in HOST_ONLY_FILES)
        or relpath.parts[0] in HOST_ONLY_DIRS
        or HOST_ONLY_NAME_PART in relpath.stem
    )


def _top(module_name: str | None) -> str:
    return (module_name or "").split(".")[0]


def _imported_modules(node: ast.AST) -> list[str]:
    """Top-level package names an import statement (or ``__import__``/``import_module("...")``) brings in."""
    if isinstance(node, ast.Import):
        return [_top(a.name) for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [_top(node.module)] if node.level == 0 else []
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if fname in ("__import__", "import_module") and isinstance(node.args[0].value, str):
            return [_top(node.args[0].value)]
    return []


def find_violations(source: str, relpath: Path) -> list[str]:
    """Every forbidden NumPy or CuPy use in ``source`` (the module at ``mrcnn_edu/relpath``), as ``file:line: why``."""
    where = f"mrcnn_edu/{relpath.as_posix()}"
    tree = ast.parse(source, filename=where)
    host = is_host_only(relpath)
    problems = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        for mod in _imported_modules(node):
            if mod in CUPY_MODULES and relpath.as_posix() != CUPY_OWNER:
                problems.append(f"{where}:{line}: imports {mod}; only mrcnn_edu/{CUPY_OWNER} may import CuPy")
            elif mod == "numpy" and not host:
                problems.append(f"{where}:{line}: imports numpy in device code; use backend.get_array_module(x)")
        if host:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name in NUMPY_NAMES or alias.asname in NUMPY_NAMES:
                    if not (isinstance(node, ast.Import) and _top(alias.name) == "numpy"):  # reported above
                        problems.append(f"{where}:{line}: imports a name '{alias.asname or alias.name}' "
                                        "in device code")
        elif isinstance(node, ast.Name) and node.id in NUMPY_NAMES:
            problems.append(f"{where}:{line}: uses '{node.id}' in device code; "
                            "use xp = backend.get_array_module(x) (or backend.xp)")
        elif isinstance(node, ast.Attribute) and node.attr in NUMPY_NAMES:
            problems.append(f"{where}:{line}: uses '.{node.attr}' in device code (NumPy through another name)")
    return sorted(set(problems), key=lambda p: (int(p.split(":")[1]), p))


def package_modules() -> list[Path]:
    return sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py"))


def test_the_package_has_modules_to_check():
    names = {p.as_posix() for p in package_modules()}
    assert {"backend.py", "_validate.py"} <= names, names


@pytest.mark.parametrize("relpath", package_modules(), ids=lambda p: p.as_posix())
def test_module_keeps_numpy_off_the_device(relpath):
    source = (PACKAGE / relpath).read_text(encoding="utf-8")
    problems = find_violations(source, relpath)
    assert not problems, "NumPy/CuPy use that breaks under the CuPy backend:\n" + "\n".join(problems)


# The checker itself, on small made-up modules: it must catch each way of reaching NumPy and pass clean code.

BAD_DEVICE_MODULE = '''\
import numpy as np
from numpy import float32
import cupy

def f(x):
    y = np.exp(x)
    z = numpy.zeros(3)
    return backend.numpy.ones(2), y.astype(float32)

def g():
    from cupyx import scatter_add
    return importlib.import_module("cupy")
'''

CLEAN_DEVICE_MODULE = '''\
from . import backend

def f(x):
    """x: N x 4 float32 boxes."""
    xp = backend.get_array_module(x)
    return xp.exp(x).astype(xp.float32), backend.name == "numpy"
'''


def test_checker_reports_every_numpy_and_cupy_use_with_its_line():
    problems = find_violations(BAD_DEVICE_MODULE, Path("roi.py"))
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == [1, 2, 3, 6, 7, 8, 11, 12], problems
    assert all(p.startswith("mrcnn_edu/roi.py:") for p in problems)
    assert any("only mrcnn_edu/backend.py may import CuPy" in p for p in problems if ":3:" in p)


def test_checker_passes_clean_device_code():
    assert find_violations(CLEAN_DEVICE_MODULE, Path("boxes.py")) == []


def test_host_only_modules_may_use_numpy_but_not_cupy():
    for relpath in (Path("visualize.py"), Path("data/shapes.py"), Path("coco_host.py"), Path("gradcheck.py")):
        assert is_host_only(relpath), relpath
        problems = find_violations(BAD_DEVICE_MODULE, relpath)
        assert [int(p.split(":")[1]) for p in problems] == [3, 11, 12], problems
    assert find_violations(BAD_DEVICE_MODULE, Path(CUPY_OWNER)) == []


def test_device_modules_are_not_host_only():
    for name in ("boxes.py", "roi.py", "_validate.py", "nn/functional.py", "visualize_tools/x.py"):
        assert not is_host_only(Path(name)), name
