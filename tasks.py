#!/usr/bin/env python3
"""The project's commands, in plain Python (standard library only), so they run on any machine with Python 3.10+.

    python3 tasks.py train     [args...]  train the default shapes model and evaluate it -> runs/shapes/
    python3 tasks.py test      [args...]  the whole test suite (args go to pytest, e.g. -k roi)
    python3 tasks.py notebooks [args...]  open the course's notebooks/ in JupyterLab (args go to it, e.g. --no-browser)
    python3 tasks.py demo      [args...]  the demo of the lecture's stages -> runs/demo/
    python3 tasks.py oracle    [args...]  the torchvision parity tests, in their own environment (several GB)
    python3 tasks.py bench     [args...]  every benchmarks/*.py (args go to each script)
    python3 tasks.py book      [args...]  execute the notebooks, render the course as HTML -> build/book/
    python3 tasks.py ablate    [args...]  the paper's Table 2 ablations on shapes -> benchmarks/ablations.md

Each command first makes its virtual environment if it is missing (./.venv, or ./.venv-oracle for the oracle)
and installs the project into it, editable, with its dev extra; it reinstalls only when what it would
install has changed since the last time (a stamp file inside the environment remembers). Every step is
printed before it runs; the exit code is that of the step that failed (pytest's, say), 0 when all passed.
"""

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
ORACLE_VENV = ROOT / ".venv-oracle"
PROJECT = ".[dev]"
# The torchvision release whose ops the parity tests compare with, and the torch it is built for.
ORACLE_PACKAGES = ("torch==2.14.1", "torchvision==0.29.1")
STAMP = "mrcnn-edu-install.stamp"
MIN_PYTHON = (3, 10)


class StepFailed(Exception):
    """A command returned a non-zero exit code (kept in ``code``)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def say(message: str) -> None:
    print(f"[tasks] {message}", flush=True)


def run(cmd: list, stopped_ok: bool = False, **kwargs) -> None:
    """Print ``cmd``, run it in the repository root, and raise ``StepFailed`` when it fails (with ``stopped_ok``,
    a program stopped by Ctrl-C has not failed)."""
    shown = " ".join(str(c) for c in cmd)
    say(f"$ {shown}")
    try:
        code = subprocess.call([str(c) for c in cmd], cwd=ROOT, **kwargs)
    except OSError as err:  # a missing program: say which, like a shell would
        say(f"cannot run {cmd[0]}: {err}")
        raise StepFailed(127) from err
    if stopped_ok and code in (-signal.SIGINT, 128 + signal.SIGINT):
        say("stopped by Ctrl-C")
    elif code != 0:
        say(f"failed with exit code {code}: {shown}")
        raise StepFailed(code)


def run_interactive(cmd: list) -> None:
    """``run`` for a program that answers Ctrl-C itself: JupyterLab asks whether to stop, then shuts its kernels
    down. Ctrl-C reaches every process of the terminal; tasks.py lets the program handle it and waits for it
    to exit, instead of stopping at once and leaving it behind. Stopped by Ctrl-C is not a failure."""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)  # reset to the default in the child
    try:
        run(cmd, stopped_ok=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def bin_dir(venv: Path) -> Path:
    """Where a virtual environment keeps its programs: ``Scripts`` on Windows, ``bin`` elsewhere."""
    return venv / ("Scripts" if os.name == "nt" else "bin")


def venv_python(venv: Path) -> Path:
    return bin_dir(venv) / ("python.exe" if os.name == "nt" else "python")


def venv_script(venv: Path, name: str) -> Path:
    return bin_dir(venv) / (f"{name}.exe" if os.name == "nt" else name)


def install_fingerprint(requirements: tuple) -> str:
    """A hash of what an install depends on: pyproject.toml and the requirement list."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update("\n".join(requirements).encode())
    return digest.hexdigest()


def upgrade_old_pip(python: Path) -> None:
    """pip older than 21.3 (as bundled with early Python 3.10) cannot install a pyproject-only project editable."""
    probe = subprocess.run([str(python), "-c", "import pip; print(pip.__version__)"], capture_output=True, text=True)
    version = tuple(int(p) for p in probe.stdout.strip().split(".")[:2] if p.isdigit())
    if probe.returncode != 0 or version < (21, 3):
        say(f"pip {probe.stdout.strip() or '?'} is too old for editable installs of pyproject.toml projects")
        run([python, "-m", "pip", "install", "--upgrade", "pip"])


def ensure_venv(venv: Path, requirements: tuple) -> Path:
    """Create ``venv`` if needed and ``pip install`` ``requirements`` when they changed; returns its python."""
    python = venv_python(venv)
    if not python.exists():
        say(f"creating the virtual environment {venv.name}/ with {sys.executable}")
        # --clear: a folder without a working python is a broken environment (an interrupted creation,
        # or a Python that has since been removed); start it afresh.
        try:
            run([sys.executable, "-m", "venv", *(["--clear"] if venv.exists() else []), venv])
        except StepFailed:
            say("could not create it; on Debian or Ubuntu the venv module comes in python3-venv "
                "(apt-get install python3-venv)")
            raise
        upgrade_old_pip(python)
    stamp = venv / STAMP
    wanted = install_fingerprint(requirements)
    if stamp.exists() and stamp.read_text().strip() == wanted:
        say(f"{venv.name}/ is up to date with pyproject.toml (delete {venv.name}/{STAMP} to reinstall)")
        return python
    say(f"installing into {venv.name}/: {' '.join(requirements)}")
    run([python, "-m", "pip", "install", *requirements])
    stamp.write_text(wanted + "\n")
    return python


def print_versions(python: Path) -> None:
    """One line with the versions the run uses, so a log tells what it was run with."""
    probe = (
        "import platform, importlib.metadata as md\n"
        "names = ['numpy', 'matplotlib', 'tqdm', 'pytest', 'cupy-cuda12x', 'cupy-cuda13x', 'torch', 'torchvision']\n"
        "found = []\n"
        "for n in names:\n"
        "    try:\n"
        "        found.append(n + ' ' + md.version(n))\n"
        "    except md.PackageNotFoundError:\n"
        "        pass\n"
        "print('[tasks] python ' + platform.python_version() + ' on ' + platform.platform() + '; ' + ', '.join(found))\n"
    )
    subprocess.call([str(python), "-c", probe], cwd=ROOT)


def pytest_env() -> dict:
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")  # tests draw figures; never open a window
    return env


def cmd_train(args: list) -> None:
    ensure_venv(VENV, ("-e", PROJECT))
    run([venv_script(VENV, "mrcnn-edu"), "train", "--out", "runs/shapes", *args])


def jupyterlab_command(python: Path, args: list) -> list:
    """The command line that opens JupyterLab on notebooks/ (``args`` appended: ``--no-browser``, ``--port``)."""
    cmd = [python, "-m", "jupyterlab", "--notebook-dir=notebooks", *args]
    # JupyterLab refuses to start as root, which is how a container (Docker, a cloud notebook box) runs it
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in args:
        say("running as root (a container?): adding --allow-root, which JupyterLab asks for then")
        cmd.append("--allow-root")
    return cmd


def cmd_notebooks(args: list) -> None:
    python = ensure_venv(VENV, ("-e", PROJECT))
    say("JupyterLab opens in your browser (or open the http://localhost address it prints); "
        "run a notebook top to bottom with Run > Run All Cells. Ctrl-C here, twice, stops it")
    run_interactive(jupyterlab_command(python, args))


def cmd_demo(args: list) -> None:
    ensure_venv(VENV, ("-e", PROJECT))
    run([venv_script(VENV, "mrcnn-edu"), "demo", "--out", "runs/demo", *args])


def cmd_book(args: list) -> None:
    ensure_venv(VENV, ("-e", PROJECT))
    run([venv_script(VENV, "mrcnn-edu"), "book", "--out", "build/book", *args])


def cmd_ablate(args: list) -> None:
    ensure_venv(VENV, ("-e", PROJECT))
    run([venv_script(VENV, "mrcnn-edu"), "ablate", "--out", "runs/ablate", *args])


def cmd_test(args: list) -> None:
    python = ensure_venv(VENV, ("-e", PROJECT))
    print_versions(python)
    run([python, "-m", "pytest", "-q", *args], env=pytest_env())


def cmd_oracle(args: list) -> None:
    say("the oracle environment holds torch and torchvision (about 5.5 GB on disk); CI never installs it")
    python = ensure_venv(ORACLE_VENV, (*ORACLE_PACKAGES, "-e", PROJECT))
    print_versions(python)
    run([python, "-m", "pytest", "-q", "tests/", "-k", "oracle", *args], env=pytest_env())


def cmd_bench(args: list) -> None:
    # The benchmarks print torchvision's times beside ours when torch is importable, so prefer the oracle
    # environment when it has been made.
    if venv_python(ORACLE_VENV).exists():
        say(f"using {ORACLE_VENV.name}/ so the benchmarks can compare with torchvision")
        python = ensure_venv(ORACLE_VENV, (*ORACLE_PACKAGES, "-e", PROJECT))
    else:
        say(f"no {ORACLE_VENV.name}/ (python3 tasks.py oracle makes it): benchmarks run without torchvision")
        python = ensure_venv(VENV, ("-e", PROJECT))
    scripts = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        say("no benchmarks/*.py to run")
        return
    print_versions(python)
    failed = None
    for script in scripts:
        try:
            run([python, script.relative_to(ROOT), *args])
        except StepFailed as err:
            failed = err
    if failed is not None:
        raise failed


COMMANDS = {"train": cmd_train, "test": cmd_test, "notebooks": cmd_notebooks, "demo": cmd_demo,
            "oracle": cmd_oracle, "bench": cmd_bench, "book": cmd_book, "ablate": cmd_ablate}


def main(argv: list) -> int:
    if sys.version_info < MIN_PYTHON:
        say(f"mrcnn-edu needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+, this is {sys.version.split()[0]}")
        return 2
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if argv[:1] in (["-h"], ["--help"], ["help"]) else 2
    try:
        COMMANDS[argv[0]](argv[1:])
    except StepFailed as err:
        return err.code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
