"""Repository root: registers the lessons' ``--impl reference|exercise|stub`` option for every pytest
invocation (``pytest --impl exercise`` with no path would otherwise read ``exercise`` as a path before
``lessons/conftest.py`` loads). See lessons/_grading.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lessons"))

from _grading import add_options as pytest_addoption  # noqa: E402,F401
