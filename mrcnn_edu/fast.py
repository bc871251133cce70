"""The one switch for small sizes: ``MRCNN_EDU_FAST=1`` (or ``true``, ``yes``) asks for a quick run.

The test suite executes every notebook with ``MRCNN_EDU_FAST=1``, so that each runs in seconds; a reader
who opens a notebook in Jupyter gets the full sizes. A notebook reads the switch once, in its first code
cell, and chooses every size with ``pick``::

    from mrcnn_edu.fast import fast_mode, pick
    FAST = fast_mode()
    N_SHIFTS = pick(full=41, fast=9)

Host-only configuration: no arrays here.
"""
from __future__ import annotations

import os

__all__ = ["ENV_VAR", "fast_mode", "pick"]

ENV_VAR = "MRCNN_EDU_FAST"
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"", "0", "false", "no"})


def fast_mode() -> bool:
    """True when ``MRCNN_EDU_FAST`` is ``1``, ``true`` or ``yes`` (any case); False when unset or ``0/false/no``.

    Any other value is a ``ValueError`` naming the variable: a typo such as ``MRCNN_EDU_FAST=ture`` would
    otherwise silently give a full-size run where a quick one was wanted.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{ENV_VAR}: expected 1/true/yes or 0/false/no, got {os.environ[ENV_VAR]!r}")


def pick(full, fast):
    """``fast`` under ``MRCNN_EDU_FAST=1``, else ``full``: one size for the reader, one for the test suite."""
    return fast if fast_mode() else full
