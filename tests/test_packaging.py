"""The project's frame: pyproject.toml and environment.yml agree, the console script and extras are there,
and the README, tasks.py and .ci/run tell the same story."""
from __future__ import annotations

import ast
import importlib.util
import re
import signal
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with tomli (the dev extra installs it there)
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent

# conda-forge names that differ from PyPI's (none yet); a PyPI name maps to its conda-forge name.
CONDA_NAME = {}
# conda-only entries of environment.yml that are not Python packages of the project.
CONDA_TOOLING = {"python", "pip"}


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def split_requirement(req: str):
    """``'numpy>=1.24; python_version < "3.11"'`` -> ``('numpy', '>=1.24')``: normalized name, version spec."""
    req = req.split(";")[0].strip()
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)", req)
    assert m, f"cannot read the requirement {req!r}"
    name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
    return CONDA_NAME.get(name, name), m.group(3).replace(" ", "")


def read_environment_yml(text: str) -> dict:
    """The few keys of a conda environment file: ``name``, ``channels`` and ``dependencies`` (with ``pip``).

    A hand-written reader for this one simple layout (PyYAML is not a dependency): top-level ``key: value``
    or ``key:`` followed by ``- item`` lines, and one nested ``- pip:`` list under ``dependencies``.
    """
    out, key, pip, pip_indent = {}, None, None, -1
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if indent == 0:
            key, _, value = item.partition(":")
            out[key] = value.strip() or []
            pip = None
        elif item == "- pip:":
            pip, pip_indent = [], indent
            out[key].append({"pip": pip})
        elif item.startswith("- ") and pip is not None and indent > pip_indent:
            pip.append(item[2:].strip())
        elif item.startswith("- "):
            pip = None
            out[key].append(item[2:].strip())
        else:
            raise AssertionError(f"environment.yml: unexpected line {raw!r}")
    return out


def environment():
    return read_environment_yml((ROOT / "environment.yml").read_text(encoding="utf-8"))


def conda_requirements(env: dict):
    """(conda packages, pip packages) of environment.yml as {name: version spec}, tooling and ``-e .`` left out."""
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for req in dep["pip"]:
                if not req.startswith("-"):
                    pip.update([split_requirement(req)])
            continue
        name, spec = split_requirement(dep)
        if name not in CONDA_TOOLING:
            conda[name] = spec
    return conda, pip


def test_environment_reader_reads_a_pip_section():
    env = read_environment_yml("name: x\nchannels:\n  - conda-forge\ndependencies:\n  - numpy>=1  # why\n"
                               "  - pip\n  - pip:\n      - foo==2\n      - -e .\n  - tqdm\n")
    assert env == {"name": "x", "channels": ["conda-forge"],
                   "dependencies": ["numpy>=1", "pip", {"pip": ["foo==2", "-e ."]}, "tqdm"]}


def test_pyproject_and_environment_yml_list_the_same_dependencies():
    project = pyproject()["project"]
    wanted = dict(split_requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    conda, pip = conda_requirements(environment())
    listed = {**conda, **pip}
    assert sorted(listed) == sorted(wanted), (
        f"runtime + dev dependencies differ: only in pyproject.toml {sorted(set(wanted) - set(listed))}, "
        f"only in environment.yml {sorted(set(listed) - set(wanted))}")
    assert listed == wanted, f"version specs differ: pyproject.toml {wanted} vs environment.yml {listed}"


def test_environment_yml_uses_conda_forge_and_installs_the_project():
    env = environment()
    assert env["channels"] == ["conda-forge"]
    assert "python>=3.10" in env["dependencies"]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert pip_sections and "-e ." in pip_sections[0]


def test_runtime_dependencies_and_python():
    project = pyproject()["project"]
    assert project["name"] == "mrcnn-edu"
    assert project["requires-python"] == ">=3.10"
    names = {split_requirement(r)[0] for r in project["dependencies"]}
    assert {"numpy", "matplotlib", "tqdm", "scikit-image", "pycocotools"} <= names
    assert not {"cupy-cuda12x", "cupy-cuda13x", "torch"} & names  # GPU and oracle stay optional


def test_extras_gpu_and_dev():
    extras = pyproject()["project"]["optional-dependencies"]
    assert set(extras) == {"gpu", "gpu-cuda13", "dev"}
    assert [split_requirement(r) for r in extras["gpu"]] == [("cupy-cuda12x", ">=13")]
    assert [split_requirement(r) for r in extras["gpu-cuda13"]] == [("cupy-cuda13x", ">=13")]
    assert "pytest" in {split_requirement(r)[0] for r in extras["dev"]}


def test_console_script_points_at_a_main_function():
    scripts = pyproject()["project"]["scripts"]
    assert scripts == {"mrcnn-edu": "mrcnn_edu.cli:main"}
    module, func = scripts["mrcnn-edu"].split(":")
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    assert path.exists(), f"the console script mrcnn-edu needs {path.relative_to(ROOT)}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"{path.name} has no {func}()"


def test_the_package_is_found_and_pytest_is_configured():
    config = pyproject()
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["mrcnn_edu*"]
    pytest_opts = config["tool"]["pytest"]["ini_options"]
    assert pytest_opts["testpaths"] == ["tests", "lessons"]
    assert {m.split(":")[0] for m in pytest_opts["markers"]} == {"gpu", "oracle", "slow"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\s*(python3 tasks\.py \w+)\s*$", setup, flags=re.M)
    assert commands == ["python3 tasks.py train", "python3 tasks.py test", "python3 tasks.py notebooks"], commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "set -euo pipefail" in ci
    assert re.search(r"^python3 tasks\.py test$", ci, flags=re.M), "CI must run the README's test command as is"


def test_tasks_py_uses_only_the_standard_library():
    tree = ast.parse((ROOT / "tasks.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_the_lecture_data_ships_inside_the_package():
    """``mrcnn-edu demo`` runs from a plain ``pip install .``: its 8 x 8 map is package data, read through
    ``importlib.resources``, not a file of the clone."""
    from mrcnn_edu.data import lecture_feature_map
    package_data = pyproject()["tool"]["setuptools"]["package-data"]
    assert "*.txt" in package_data["mrcnn_edu.data"]
    assert (ROOT / "mrcnn_edu" / "data" / "lecture_roi_8x8.txt").is_file()
    fmap = lecture_feature_map()
    assert fmap.shape == (8, 8) and fmap[0, 0] == pytest.approx(0.88)


# ----------------------------------------------------------------------------------------------------------
# the course in three commands: train, test, notebooks
# ----------------------------------------------------------------------------------------------------------

def load_tasks():
    """tasks.py as a module (it is a script at the repository root, not part of the package)."""
    spec = importlib.util.spec_from_file_location("tasks_under_test", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_first_screen_shows_train_test_and_notebooks():
    first_screen = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:30])
    for command in ("python3 tasks.py train", "python3 tasks.py test", "python3 tasks.py notebooks"):
        assert command in first_screen, f"the README's first 30 lines should show {command!r}"


def test_jupyterlab_and_ipywidgets_come_with_the_dev_extra():
    """tasks.py installs ``.[dev]``: JupyterLab to open the notebooks, ipywidgets for tqdm's notebook bar."""
    dev = {split_requirement(r)[0] for r in pyproject()["project"]["optional-dependencies"]["dev"]}
    assert {"jupyterlab", "ipywidgets", "ipykernel"} <= dev, dev
    assert load_tasks().PROJECT == ".[dev]"


def test_tasks_notebooks_makes_the_venv_and_opens_jupyterlab_on_notebooks(monkeypatch, tmp_path):
    tasks = load_tasks()
    made, calls = [], []
    python = tmp_path / "bin" / "python"
    monkeypatch.setattr(tasks, "ensure_venv", lambda venv, requirements: made.append((venv, requirements)) or python)
    monkeypatch.setattr(tasks.os, "geteuid", lambda: 1000, raising=False)       # not root

    def fake_call(cmd, cwd=None, **kwargs):
        calls.append((cmd, cwd, signal.getsignal(signal.SIGINT)))
        return 0

    monkeypatch.setattr(tasks.subprocess, "call", fake_call)
    before = signal.getsignal(signal.SIGINT)
    assert tasks.main(["notebooks", "--no-browser", "--port", "8899"]) == 0
    assert made == [(tasks.VENV, ("-e", ".[dev]"))], "the notebooks command makes/updates .venv/ first"
    [(cmd, cwd, handler)] = calls
    assert cmd == [str(python), "-m", "jupyterlab", "--notebook-dir=notebooks", "--no-browser", "--port", "8899"]
    assert cwd == ROOT and (ROOT / "notebooks" / "01_iou.ipynb").is_file()
    # while JupyterLab runs, Ctrl-C is JupyterLab's to answer (it asks, then stops its kernels): tasks.py waits
    assert handler not in (before, signal.SIG_IGN, signal.SIG_DFL), handler
    assert signal.getsignal(signal.SIGINT) is before


def test_tasks_notebooks_as_root_and_stopped_by_ctrl_c(monkeypatch, tmp_path, capsys):
    tasks = load_tasks()
    monkeypatch.setattr(tasks, "ensure_venv", lambda venv, requirements: tmp_path / "python")
    monkeypatch.setattr(tasks.os, "geteuid", lambda: 0, raising=False)         # a container runs as root
    calls = []
    monkeypatch.setattr(tasks.subprocess, "call", lambda cmd, **kwargs: calls.append(cmd) or -signal.SIGINT)
    assert tasks.main(["notebooks"]) == 0, "stopping JupyterLab with Ctrl-C is not a failure"
    assert calls[0][-1] == "--allow-root"
    out = capsys.readouterr().out
    assert "stopped by Ctrl-C" in out and "failed" not in out
    monkeypatch.setattr(tasks.subprocess, "call", lambda cmd, **kwargs: 1)
    assert tasks.main(["notebooks", "--allow-root"]) == 1                       # a real failure still is one


def test_make_notebooks_calls_tasks_py():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^notebooks:\n\t\$\(PYTHON\) tasks\.py notebooks \$\(ARGS\)$", makefile, flags=re.M)
    assert re.search(r"^\.PHONY:.*\bnotebooks\b", makefile, flags=re.M)
