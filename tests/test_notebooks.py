"""The course notebooks: each runs top to bottom, and each is committed clean.

* Every ``notebooks/*.ipynb`` is executed with nbclient in a ``python3`` kernel, with ``MRCNN_EDU_FAST=1``
  (small sizes) and the notebook's folder as working directory, as a reader running "Restart and run all"
  would. Any error fails the test with the failing cell's number, its source and its traceback. These tests
  skip, saying why, where nbclient, nbformat or ipykernel is not installed (they come with the dev extra).
* The result never depends on what the user has trained into ``runs/``: each notebook runs from a copy in a
  temporary ``notebooks/`` folder whose sibling ``runs/shapes/model.npz`` is garbage, so a notebook that reads
  the course model in fast mode fails there (fast mode trains its own tiny model instead; the notebooks still
  named in ``READS_RUNS_IN_FAST_MODE`` get an empty ``runs/`` until they are fixed).
* Every committed notebook has no outputs and no execution counts (a diff then shows only what changed in
  the text and code), its first code cell reads ``MRCNN_EDU_FAST`` through ``mrcnn_edu.fast``, its last code
  cell checks the stage with ``assert``, and no cell redefines a public function of the library. These
  read the JSON directly and always run.
"""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 120  # one cell; each whole notebook takes seconds with MRCNN_EDU_FAST=1
NAME_PATTERN = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # IPython colours its tracebacks
COURSE_MODEL = Path("runs") / "shapes" / "model.npz"  # where `mrcnn-edu train` writes it, beside notebooks/
# Notebooks that still load the course model in fast mode when it exists: they run beside an empty runs/
# (still never the user's) instead of a garbage model. Remove a name once its notebook ignores runs/ there.
READS_RUNS_IN_FAST_MODE = set()


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _python(source: str) -> str:
    """The cell's source without IPython's magics and shell escapes (``%matplotlib inline``, ``!ls``)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _library_names() -> set[str]:
    """Every name a module of ``mrcnn_edu`` exports through ``__all__`` (read with ``ast``, nothing imported)."""
    names = set()
    for module in (ROOT / "mrcnn_edu").rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                names |= {e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant)}
    return names


# ----------------------------------------------------------------------------------------------------------
# committed clean, and shaped as the style guide says (always run: plain JSON)
# ----------------------------------------------------------------------------------------------------------

def test_the_course_notebooks_are_there():
    names = [p.name for p in NOTEBOOKS]
    for stage in ("01_iou", "02_anchors", "03_rpn", "04_roi", "05_losses", "06_layers", "07_heads", "08_train",
                  "09_evaluate"):
        assert f"{stage}.ipynb" in names, f"notebooks/{stage}.ipynb is missing (found {names})"
    bad = [n for n in names if not NAME_PATTERN.match(n)]
    assert not bad, f"notebook names must look like NN_<stage>.ipynb: {bad}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = _load(path)
    dirty = [(i, len(c.get("outputs", [])), c.get("execution_count"))
             for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: clear the outputs before committing (cell index, outputs, execution "
                       f"count): {dirty}; in Jupyter: Edit > Clear Outputs of All Cells, then save")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_course_pattern(path):
    code = [_python(_source(c)) for c in _code_cells(_load(path))]
    assert code, f"{path.name}: no code cells"
    assert "fast_mode()" in code[0] and "mrcnn_edu.fast" in code[0], (
        f"{path.name}: the first code cell must read MRCNN_EDU_FAST through mrcnn_edu.fast.fast_mode():\n{code[0]}")
    later = "\n".join(code[1:])
    assert "MRCNN_EDU_FAST" not in later and "fast_mode(" not in later, (
        f"{path.name}: only the first code cell reads the fast switch")
    assert any(isinstance(n, ast.Assert) for n in ast.parse(code[-1]).body), (
        f"{path.name}: the last code cell must check, with assert, what a wrong implementation gets wrong:\n"
        f"{code[-1]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_does_not_redefine_the_library(path):
    library = _library_names()
    assert {"box_iou", "roi_align", "smooth_l1_loss"} <= library  # the reader of __all__ works
    defined = set()
    for i, cell in enumerate(_code_cells(_load(path))):
        tree = ast.parse(_python(_source(cell)), filename=f"{path.name} code cell {i}")
        defined |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    clash = sorted(defined & library)
    assert not clash, f"{path.name} redefines library functions {clash}: import them from mrcnn_edu instead"


# ----------------------------------------------------------------------------------------------------------
# executed top to bottom
# ----------------------------------------------------------------------------------------------------------

def _failure_report(path, nb, index, err) -> str:
    """Which cell failed, its source and its traceback (from the cell's error output when there is one)."""
    if index is None:
        return f"{path.name}: the kernel failed before any cell ran:\n{err}"
    cell = nb.cells[index]
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    trace = "\n".join(errors[-1]["traceback"]) if errors else str(err)
    why = f"over the {CELL_TIMEOUT_S} s limit of a cell" if isinstance(err, TimeoutError) else type(err).__name__
    return (f"{path.name}: cell {index} failed ({why})\n"
            f"----- source -----\n{cell.source}\n----- traceback -----\n{ANSI.sub('', trace)}")


def _sandbox(path: Path, tmp_path: Path) -> Path:
    """A copy of notebook ``path`` in ``tmp_path/notebooks/``, beside a ``tmp_path/runs/`` that is not the user's:
    it holds a garbage ``runs/shapes/model.npz``, so reading it fails loudly (``CheckpointError``), except for
    the notebooks of ``READS_RUNS_IN_FAST_MODE``, which get an empty ``runs/``. Returns the copy's folder."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / path.name).write_bytes(path.read_bytes())
    model = tmp_path / COURSE_MODEL
    model.parent.mkdir(parents=True)
    if path.name not in READS_RUNS_IN_FAST_MODE:
        model.write_bytes(b"not a checkpoint: a notebook in fast mode must never read runs/\n")
    return folder


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="executing notebooks needs nbformat (pip install nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="executing notebooks needs nbclient (pip install nbclient)")
    pytest.importorskip("ipykernel", reason="executing notebooks needs a python3 kernel (pip install ipykernel)")

    # The kernel inherits this environment: small sizes, and the checkout's mrcnn_edu even when the package
    # is not installed (the kernel's working directory is notebooks/, not the repository root).
    monkeypatch.setenv("MRCNN_EDU_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("MRCNN_EDU_BACKEND", raising=False)

    folder = _sandbox(path, tmp_path)      # never the checkout's runs/, which holds what the user trained
    nb = nbformat.read(path, as_version=4)  # executed in memory: the file on disk keeps no outputs
    started = {"index": None}

    def on_cell_start(cell, cell_index, **_):
        started["index"] = cell_index

    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(folder)}},
                                     on_cell_start=on_cell_start)
    failure = None
    try:
        client.execute()
    except Exception as err:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
        failure = _failure_report(path, nb, started["index"], err)
    if failure:  # raised outside the except block, so the report is not followed by nbclient's own
        pytest.fail(failure, pytrace=False)


# ----------------------------------------------------------------------------------------------------------
# the switch the notebooks read
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("YES", True), (" yes ", True),
                                             ("0", False), ("false", False), ("no", False), ("", False)])
def test_fast_mode_reads_the_environment(monkeypatch, value, expected):
    from mrcnn_edu.fast import fast_mode, pick

    monkeypatch.setenv("MRCNN_EDU_FAST", value)
    assert fast_mode() is expected
    assert pick(full="big", fast="small") == ("small" if expected else "big")


def test_fast_mode_is_off_when_unset_and_rejects_typos(monkeypatch):
    from mrcnn_edu.fast import fast_mode

    monkeypatch.delenv("MRCNN_EDU_FAST", raising=False)
    assert fast_mode() is False
    monkeypatch.setenv("MRCNN_EDU_FAST", "ture")
    with pytest.raises(ValueError, match="MRCNN_EDU_FAST"):
        fast_mode()
