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
* A notebook that trains is never silent: it says how long training will take before it starts, shows
  tqdm's progress bar (nothing switches it off, and executed here it does not break nbclient), and names
  ``python3 tasks.py train``, the command that makes the course model; 07, 09 and 10 print the model they use
  and its AP. Their checks hold for any model they load: they run here beside a ``runs/`` holding a barely
  trained model that the test makes itself (never the user's).
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
# Notebooks that train a model (in fast mode a handful of steps), and those that load the course model when it
# is there and otherwise train one; both print the model and its AP in that case.
TRAINS = {"07_heads.ipynb", "08_train.ipynb", "09_evaluate.ipynb", "10_inspect.ipynb"}
LOADS_THE_COURSE_MODEL = {"07_heads.ipynb", "09_evaluate.ipynb", "10_inspect.ipynb"}
MODEL_AND_AP = re.compile(r"mask AP \d\.\d{3}, box AP \d\.\d{3}")


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
                  "09_evaluate", "10_inspect"):
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


def _code(path: Path) -> str:
    return "\n".join(_python(_source(c)) for c in _code_cells(_load(path)))


def test_the_notebooks_that_train_are_known():
    training = {p.name for p in NOTEBOOKS if re.search(r"\btrain\(|loss_and_backward\(", _code(p))}
    assert training == TRAINS, f"notebooks that train: {sorted(training)}; TRAINS says {sorted(TRAINS)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_switches_the_progress_bar_off(path):
    """ipywidgets is a dev dependency, so tqdm's notebook bar works: no warning filter, no ``progress=False``."""
    code = _code(path)
    assert "IProgress" not in code and "filterwarnings" not in code, f"{path.name} silences tqdm's warnings"
    silent = [n.lineno for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) for k in n.keywords
              if k.arg == "progress" and isinstance(k.value, ast.Constant) and k.value.value is False]
    assert not silent, f"{path.name} trains without a progress bar (progress=False at its lines {silent})"


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR / n for n in TRAINS), ids=lambda p: p.name)
def test_a_notebook_that_trains_says_how_long_and_names_the_course_command(path):
    nb = _load(path)
    text = "\n".join(_source(c) for c in nb["cells"])
    code = _code(path)
    assert "python3 tasks.py train" in text and "SECONDS_PER_STEP" in code, (
        f"{path.name}: say how long training takes (SECONDS_PER_STEP) and name `python3 tasks.py train`")
    assert "tqdm" in code or re.search(r"\btrain\(", code), f"{path.name}: train with a progress bar"


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


def _execute(path, folder, monkeypatch, fast=True):
    """Run notebook ``path`` top to bottom from ``folder`` in a python3 kernel; returns the executed notebook
    (in memory: the file on disk keeps no outputs), or fails the test with the failing cell's report."""
    nbformat = pytest.importorskip("nbformat", reason="executing notebooks needs nbformat (pip install nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="executing notebooks needs nbclient (pip install nbclient)")
    pytest.importorskip("ipykernel", reason="executing notebooks needs a python3 kernel (pip install ipykernel)")

    # The kernel inherits this environment: small sizes, and the checkout's mrcnn_edu even when the package
    # is not installed (the kernel's working directory is notebooks/, not the repository root).
    monkeypatch.setenv("MRCNN_EDU_FAST", "1" if fast else "0")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("MRCNN_EDU_BACKEND", raising=False)

    nb = nbformat.read(path, as_version=4)
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
    return nb


def _printed(nb) -> str:
    """Everything the executed notebook printed (streams and the text of displays), ANSI colours removed."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else out.get("data", {}).get("text/plain", "")
            parts.append("".join(text) if isinstance(text, list) else text)
    return ANSI.sub("", "\n".join(parts))


def _has_a_progress_bar(nb) -> bool:
    """tqdm's notebook bar (an ipywidgets display), or its text bar on stderr where ipywidgets is missing."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                return True
            if out.get("name") == "stderr" and re.search(r"\d+/\d+ \[", "".join(out.get("text", ""))):
                return True
    return False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, monkeypatch, tmp_path):
    folder = _sandbox(path, tmp_path)      # never the checkout's runs/, which holds what the user trained
    nb = _execute(path, folder, monkeypatch)
    if path.name in TRAINS:
        printed = _printed(nb)
        assert "python3 tasks.py train" in printed, f"{path.name} should name the command that makes the course model"
        assert re.search(r"about \d+ s", printed), f"{path.name} should say how long training takes before it starts"
        assert _has_a_progress_bar(nb), f"{path.name} trains without a progress bar"
    if path.name in LOADS_THE_COURSE_MODEL:
        assert MODEL_AND_AP.search(_printed(nb)), f"{path.name} should print the model it uses and its AP"


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


# ----------------------------------------------------------------------------------------------------------
# whichever model 07, 09 and 10 load, their checks hold
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOADS_THE_COURSE_MODEL))
def test_checks_hold_for_whatever_course_model_is_there(name, monkeypatch, tmp_path):
    """07, 09 and 10 beside a ``runs/shapes/model.npz`` that this test trains for 2 steps (AP about 0, a model a
    reader may well have there after a short run): they load it, print what it is and its AP, and every check passes.
    The copy run here reads the model in fast mode too (its ``RUN =`` line is the full mode's), so it runs at
    the small sizes; never the user's runs/, a temporary folder's."""
    from mrcnn_edu.train import TrainConfig, train

    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = _load(NOTEBOOK_DIR / name)
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    fast_run, full_run = 'RUN = pick(full=Path("../runs/shapes/model.npz"), fast=None)', 'RUN = Path("../runs/shapes/model.npz")'
    assert fast_run in _source(first), f"{name}: its first cell no longer sets RUN as this test expects"
    first["source"] = _source(first).replace(fast_run, full_run)
    (folder / name).write_text(json.dumps(nb), encoding="utf-8")
    train(tmp_path / COURSE_MODEL.parent, train_config=TrainConfig(steps=2, warmup_steps=1, val_images=2),
          progress=False)
    printed = _printed(_execute(folder / name, folder, monkeypatch))
    assert f"the course model {(tmp_path / COURSE_MODEL).resolve()}" in printed, printed[:2000]
    assert MODEL_AND_AP.search(printed), f"{name} should print the model it loaded and its AP"
    assert "training" not in printed.split("the course model", 1)[0], f"{name} trained although a model was there"
