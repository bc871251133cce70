"""The one switch between NumPy (CPU) and CuPy (GPU).

Every other module asks this one for its array module; none imports CuPy. Two ways to choose:

* the environment: ``MRCNN_EDU_BACKEND=numpy`` (default) or ``MRCNN_EDU_BACKEND=cupy``;
* in code: ``mrcnn_edu.backend.use("cupy")``.

Importing this module never fails. A variable it cannot follow (``MRCNN_EDU_BACKEND=foo``, or ``cupy`` on a
machine without CuPy) leaves NumPy switched on, warns once (a ``UserWarning``) and is kept as a one-line
problem: ``env_error()`` returns it, ``check_env()`` raises it as a ``ValueError``. The command line calls
``check_env()`` first, so a bad variable is one line, not a traceback in every command; a library user sees
the warning. A successful ``use()`` supersedes the variable and clears the problem.

Device code starts the DeZero way, ``xp = get_array_module(x)``, so a function follows the arrays it
is given; code that *creates* arrays from nothing (anchors, random numbers) uses ``backend.xp``, the
module chosen by the switch. The few things that differ between NumPy and CuPy live here:
moving arrays to the host (``to_host``), scatter-add (``scatter_add``), random numbers (``rng``), waiting
for the GPU (``synchronize``) and keeping freed host memory for reuse (``keep_freed_memory``).
"""
from __future__ import annotations

import os
import warnings

import numpy

__all__ = ["xp", "name", "use", "check_env", "env_error", "get_array_module", "asarray", "address", "to_host",
           "to_device", "scatter_add", "rng", "synchronize", "keep_freed_memory", "gpu_available", "BACKENDS",
           "ENV_VAR"]

BACKENDS = ("numpy", "cupy")
ENV_VAR = "MRCNN_EDU_BACKEND"

xp = numpy      # the array module chosen by the switch; read it as ``backend.xp`` at call time
name = "numpy"  # its name, "numpy" or "cupy"
_env_problem = None  # why MRCNN_EDU_BACKEND could not be followed at import (one line), or None


def _import_cupy():
    try:
        import cupy  # the only import of CuPy in the library
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise RuntimeError("backend 'cupy' needs CuPy and a CUDA GPU: pip install 'mrcnn-edu[gpu]'") from err
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        cupy = _import_cupy()
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def use(backend: str):
    """Switch the library to ``"numpy"`` or ``"cupy"``; returns the array module."""
    global xp, name, _env_problem
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    xp = numpy if backend == "numpy" else _import_cupy()
    name = backend
    _env_problem = None  # a choice made in code supersedes MRCNN_EDU_BACKEND
    return xp


def env_error():
    """Why ``MRCNN_EDU_BACKEND`` could not be followed when this module was imported, as one line, or None.

    E.g. ``"MRCNN_EDU_BACKEND: expected numpy or cupy, got 'foo'"``. NumPy is active then. None once
    ``use()`` has chosen a backend.
    """
    return _env_problem


def check_env():
    """Raise ``ValueError(env_error())`` when ``MRCNN_EDU_BACKEND`` could not be followed; else return None.

    The command line calls it before anything else, and prints the message as its one line of error.
    """
    if _env_problem is not None:
        raise ValueError(_env_problem)


def get_array_module(*arrays):
    """NumPy or CuPy, whichever owns ``arrays`` (NumPy for host arrays and plain Python values)."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            return _import_cupy()
    return numpy


def asarray(a, dtype=None):
    """``a`` as an array of the switched backend (copied to the GPU under CuPy)."""
    return xp.asarray(a, dtype=dtype)


def address(a):
    """The device address of ``a``'s first element (an int), to tell whether arrays sit end to end."""
    if type(a).__module__.startswith("cupy"):
        return a.data.ptr
    return a.__array_interface__["data"][0]


def to_host(a):
    """``a`` as a NumPy array on the host (a no-op for NumPy arrays)."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return numpy.asarray(a)


def to_device(arrays):
    """Host arrays on the switched backend's device in one transfer: flattened end to end (in one dtype, NumPy's
    promotion of theirs), sent, and cut into views of their shapes. Under NumPy, the arrays as they are."""
    if xp is numpy:
        return list(arrays)
    ends = numpy.cumsum([a.size for a in arrays])[:-1].tolist()
    flat = xp.asarray(numpy.concatenate([numpy.asarray(a).ravel() for a in arrays]))
    return [part.reshape(a.shape) for part, a in zip(xp.split(flat, ends), arrays)]


def scatter_add(target, indices, values):
    """``target[indices] += values`` in place, with repeated indices adding up; returns ``target``.

    target  : 1-D array (ravel a view of the array you want to fill)
    indices : 1-D integer array into ``target``
    values  : 1-D array, same length as ``indices``

    Plain ``target[indices] += values`` is wrong here: repeated indices keep only one value. NumPy gets
    ``bincount`` when the indices cover much of the target (one pass, summed in float64) and
    ``numpy.add.at`` otherwise; CuPy gets ``cupy.add.at``, one kernel of atomic adds on the GPU (CuPy >= 13;
    it replaces the deprecated ``cupyx.scatter_add``).
    """
    if type(target).__module__.startswith("cupy"):
        get_array_module(target).add.at(target, indices, values.astype(target.dtype, copy=False))
        return target
    if indices.size * 4 >= target.size:
        target += numpy.bincount(indices, weights=values, minlength=target.size).astype(target.dtype)
    else:
        numpy.add.at(target, indices, values)
    return target


def synchronize():
    """Wait until the GPU has finished the work queued so far (a no-op on NumPy): GPU calls return before
    their kernels have run, so a timer must synchronize before it reads the clock."""
    if name == "cupy":
        xp.cuda.Device().synchronize()


def keep_freed_memory():
    """Ask glibc to keep freed host memory for reuse, as CuPy's memory pool does on the GPU.

    By default glibc maps every block over 128 KiB afresh from the OS and returns it when freed, so each
    large NumPy temporary (a conv's columns: 29 MB in the mask head) costs a page fault per 4 KiB on first
    touch, again every step. Keeping blocks up to 1 GiB in the heap makes the mask head's conv about a
    quarter faster and a training step about 7%. Both thresholds matter: the trim threshold alone turns off
    glibc's sliding mmap threshold and faults more pages, not fewer. Process-wide, for the host only; a no-op
    off glibc. ``train.train`` (so ``mrcnn-edu train``, ``ablate`` and a notebook's run) and the benchmarks call
    it. Returns whether both thresholds were set.
    """
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
        mmap = libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: mmap only blocks over 1 GiB
        trim = libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: keep up to 2 GiB of free heap
    except (OSError, AttributeError):
        return False
    return bool(mmap and trim)


def rng(seed=None):
    """A random generator of the switched backend (``numpy.random.Generator`` or CuPy's)."""
    return xp.random.default_rng(seed)


def _follow_env():
    """Switch to the backend ``MRCNN_EDU_BACKEND`` names; a value that cannot be followed keeps NumPy, and is
    recorded for ``env_error()`` and announced with a warning, never raised: importing must not fail."""
    global _env_problem
    value = os.environ.get(ENV_VAR, "numpy").strip().lower() or "numpy"
    if value == "numpy":
        return
    if value not in BACKENDS:
        problem = f"{ENV_VAR}: expected numpy or cupy, got {os.environ[ENV_VAR].strip()!r}"
    else:
        try:
            use(value)
            return
        except Exception as err:  # noqa: BLE001 - whatever importing CuPy raises, importing this must not
            cause = err.__cause__ or err
            if isinstance(cause, ModuleNotFoundError) and cause.name == "cupy":
                problem = f"{ENV_VAR}={value}: CuPy is not installed (pip install 'mrcnn-edu[gpu]')"
            else:  # installed, but it fails to import (e.g. no CUDA libraries)
                problem = f"{ENV_VAR}={value}: CuPy does not import ({cause}; see pip install 'mrcnn-edu[gpu]')"
    _env_problem = problem
    warnings.warn(f"{problem}; using numpy", stacklevel=2)


_follow_env()
