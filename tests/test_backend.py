"""The backend switch: MRCNN_EDU_BACKEND, ``use()``, and the helpers that differ between NumPy and CuPy.

The ``xp`` fixture runs the array tests on NumPy and, where a CUDA GPU is present, on CuPy.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrcnn_edu import backend

ROOT = Path(__file__).resolve().parent.parent


def import_backend_with_env(value, code="from mrcnn_edu import backend; print(backend.name, backend.xp.__name__)"):
    """Run ``code`` in a fresh interpreter with ``MRCNN_EDU_BACKEND=value`` (None: unset)."""
    env = dict(os.environ)
    env.pop("MRCNN_EDU_BACKEND", None)
    if value is not None:
        env["MRCNN_EDU_BACKEND"] = value
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def cupy_installed():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def restore_backend():
    previous = backend.name
    yield
    backend.use(previous)


# -- choosing the backend ---------------------------------------------------------------------------------

# What a bad MRCNN_EDU_BACKEND does: importing never fails (every command would die with a traceback), the
# import warns and keeps NumPy, and check_env() -- which the command line calls first -- raises the one line.
CHECK = ("import warnings\n"
         "with warnings.catch_warnings(record=True) as caught:\n"
         "    warnings.simplefilter('always')\n"
         "    from mrcnn_edu import backend, boxes\n"
         "print(backend.name, backend.xp.__name__)\n"
         "print('warned:', ' | '.join(str(w.message) for w in caught))\n"
         "print('env_error:', backend.env_error())\n"
         "try:\n"
         "    backend.check_env()\n"
         "except ValueError as err:\n"
         "    print('check_env:', err)\n"
         "backend.use('numpy')\n"
         "print('after use:', backend.env_error())\n")


def run_check(value):
    done = import_backend_with_env(value, CHECK)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "numpy numpy", done.stdout
    return lines[1:]


def test_env_var_with_an_unknown_backend_keeps_numpy_and_says_so():
    message = "MRCNN_EDU_BACKEND: expected numpy or cupy, got 'tensorflow'"
    warned, env_error, check, after = run_check("tensorflow")
    assert warned == f"warned: {message}; using numpy"
    assert env_error == f"env_error: {message}"
    assert check == f"check_env: {message}"
    assert after == "after use: None"           # choosing a backend in code supersedes the variable


def test_env_var_cupy_without_cupy_keeps_numpy_and_says_how_to_install_it():
    if cupy_installed():
        pytest.skip("CuPy is installed here")
    message = "MRCNN_EDU_BACKEND=cupy: CuPy is not installed (pip install 'mrcnn-edu[gpu]')"
    warned, env_error, check, after = run_check(" CuPy ")
    assert warned == f"warned: {message}; using numpy"
    assert env_error == f"env_error: {message}"
    assert check == f"check_env: {message}"
    assert after == "after use: None"


@pytest.mark.parametrize("value", [None, "numpy", " NumPy ", ""])
def test_env_var_selects_numpy(value):
    # numpy, no warning, no problem; check_env() returns quietly, so it prints no line
    assert run_check(value) == ["warned: ", "env_error: None", "after use: None"]


@pytest.mark.gpu
def test_env_var_selects_cupy_on_a_gpu():
    if not backend.gpu_available():
        pytest.skip("CuPy backend: no CuPy or no CUDA GPU on this machine")
    done = import_backend_with_env("cupy")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cupy", "cupy"]


def test_use_switches_and_returns_the_module(restore_backend):
    assert backend.use("numpy") is np
    assert backend.xp is np and backend.name == "numpy"
    assert isinstance(backend.asarray([1, 2]), np.ndarray)


@pytest.mark.parametrize("bad", ["torch", "NUMPY", "", None])
def test_use_rejects_a_bad_name_and_keeps_the_backend(bad, restore_backend):
    before = (backend.xp, backend.name)
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'cupy'\)"):
        backend.use(bad)
    assert (backend.xp, backend.name) == before


def test_use_cupy_without_cupy_says_how_to_install_it_and_keeps_the_backend(restore_backend):
    if cupy_installed():
        pytest.skip("CuPy is installed here")
    before = (backend.xp, backend.name)
    with pytest.raises(RuntimeError, match=r"pip install 'mrcnn-edu\[gpu\]'"):
        backend.use("cupy")
    assert (backend.xp, backend.name) == before


def test_gpu_available_is_a_bool():
    assert isinstance(backend.gpu_available(), bool)


# -- moving arrays --------------------------------------------------------------------------------------

def test_get_array_module_follows_the_arrays(xp):
    assert backend.get_array_module(xp.zeros(3)) is xp
    assert backend.get_array_module(np.zeros(3)) is np
    assert backend.get_array_module(1.5, [1, 2], None) is np
    assert backend.get_array_module(np.zeros(2), xp.zeros(2)) is xp  # a device array anywhere wins
    assert backend.get_array_module() is np


def test_asarray_follows_the_switch(xp):
    a = backend.asarray([[1, 2], [3, 4]], dtype=xp.float64)
    assert backend.get_array_module(a) is xp and a.dtype == xp.float64 and a.shape == (2, 2)


def test_to_host_gives_numpy_with_the_same_values(xp):
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    host = backend.to_host(xp.asarray(values))
    assert type(host) is np.ndarray and host.dtype == np.float32
    np.testing.assert_array_equal(host, values)
    np.testing.assert_array_equal(backend.to_host([1, 2, 3]), np.array([1, 2, 3]))
    assert backend.to_host(values) is values  # no copy for host arrays


# -- scatter_add ----------------------------------------------------------------------------------------

@pytest.fixture
def bincount_calls(monkeypatch):
    """Counts NumPy's ``bincount`` calls, to tell which of scatter_add's two NumPy paths ran."""
    calls = []
    original = np.bincount

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(np, "bincount", spy)
    return calls


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scatter_add_dense_indices_add_up_repeats(xp, dtype, bincount_calls):
    # 7 indices into 6 slots: dense, NumPy takes the bincount path
    target = xp.asarray([1.0, 0.0, 0.0, 2.0, 0.0, -1.0], dtype=dtype)
    indices = xp.asarray([0, 0, 3, 3, 3, 5, 0])
    values = xp.asarray([0.5, 0.25, 1.0, 2.0, -4.0, 0.125, 1.5], dtype=dtype)
    out = backend.scatter_add(target, indices, values)
    assert out is target and target.dtype == xp.dtype(dtype)
    np.testing.assert_array_equal(backend.to_host(target), [3.25, 0.0, 0.0, 1.0, 0.0, -0.875])
    if xp is np:
        assert len(bincount_calls) == 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scatter_add_sparse_indices_add_up_repeats(xp, dtype, bincount_calls):
    # 5 indices into 100 slots: sparse, NumPy takes the add.at path
    target = xp.zeros(100, dtype=dtype)
    target[50] = 10.0
    indices = xp.asarray([7, 7, 7, 50, 99])
    values = xp.asarray([0.5, 0.25, 0.125, -2.0, 3.0], dtype=dtype)
    backend.scatter_add(target, indices, values)
    expected = np.zeros(100, dtype=dtype)
    expected[[7, 50, 99]] = [0.875, 8.0, 3.0]
    np.testing.assert_array_equal(backend.to_host(target), expected)
    if xp is np:
        assert bincount_calls == []


@pytest.mark.parametrize("n_indices", [4, 400])  # both NumPy paths
def test_scatter_add_fills_a_2d_array_through_a_flat_view(xp, n_indices):
    rng = np.random.default_rng(0)
    grid = xp.zeros((5, 8), dtype=xp.float32)
    flat = rng.integers(0, 40, size=n_indices)
    values = rng.integers(-4, 5, size=n_indices).astype(np.float32) / 4  # exact in float32
    backend.scatter_add(grid.reshape(-1), xp.asarray(flat), xp.asarray(values))
    expected = np.zeros(40, dtype=np.float32)
    for i, v in zip(flat, values):  # the slow obvious reference, on a small case
        expected[i] += v
    np.testing.assert_array_equal(backend.to_host(grid), expected.reshape(5, 8))


def test_scatter_add_casts_values_to_the_target_dtype(xp):
    target = xp.zeros(3, dtype=xp.float32)
    backend.scatter_add(target, xp.asarray([2, 2, 2]), xp.asarray([0.5, 0.5, 0.25], dtype=xp.float64))
    assert target.dtype == xp.float32
    np.testing.assert_array_equal(backend.to_host(target), [0.0, 0.0, 1.25])


def test_scatter_add_with_no_indices_leaves_the_target(xp):
    target = xp.arange(4, dtype=xp.float64)
    backend.scatter_add(target, xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.float64))
    np.testing.assert_array_equal(backend.to_host(target), [0.0, 1.0, 2.0, 3.0])


# -- random numbers -------------------------------------------------------------------------------------

def test_rng_is_deterministic_per_seed(xp):
    a = backend.to_host(backend.rng(7).random(5))
    b = backend.to_host(backend.rng(7).random(5))
    c = backend.to_host(backend.rng(8).random(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert backend.get_array_module(backend.rng(7).random(5)) is xp


def test_rng_on_numpy_is_numpys_default_generator(restore_backend):
    backend.use("numpy")
    np.testing.assert_array_equal(backend.rng(3).standard_normal(4), np.random.default_rng(3).standard_normal(4))
    assert isinstance(backend.rng(), np.random.Generator)


def test_to_device_sends_host_arrays_in_one_piece_and_keeps_their_shapes(xp):
    import numpy as np
    arrays = [np.arange(6, dtype=np.int64).reshape(2, 3), np.zeros((0, 4), np.int64), np.array([7, 8])]
    sent = backend.to_device(arrays)
    if xp is np:
        assert all(a is b for a, b in zip(sent, arrays))          # nothing to send
    for got, want in zip(sent, arrays):
        assert backend.get_array_module(got) is xp and got.shape == want.shape
        np.testing.assert_array_equal(backend.to_host(got), want)
