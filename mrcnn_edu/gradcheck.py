"""Gradient checking: a hand-written backward against central finite differences, in float64.

The check used throughout the tests (and in lesson 06):

    f(x)         -> out                          (any shape)
    L(x)         =  sum(out * dout)              (dout: a fixed random upstream gradient)
    dL/dx[i]     ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

and the analytic gradient passes when ``rel_error(analytic, numeric) < 1e-6``, where

    rel_error(a, n) = ||a - n||_2 / max(||a||_2 + ||n||_2, tiny)

A random ``dout`` (not ones) makes sure every output element, and any mix-up of them, is tested.
The loop over input elements is the point of a finite-difference check, so it runs on small inputs.
"""
from __future__ import annotations

import numpy

from . import backend

__all__ = ["rel_error", "numerical_gradient", "check_gradients"]


def rel_error(a, b) -> float:
    """Norm-relative error between two arrays (0 for two zero arrays)."""
    a = backend.to_host(a).astype(numpy.float64)
    b = backend.to_host(b).astype(numpy.float64)
    den = numpy.linalg.norm(a) + numpy.linalg.norm(b)
    return float(numpy.linalg.norm(a - b) / max(den, 1e-300))


def numerical_gradient(f, x, dout, eps=1e-6):
    """Central-difference gradient of ``sum(f(x) * dout)`` with respect to ``x`` (changed in place, restored).

    f    : callable taking no arguments that reads ``x`` and returns an array (or a scalar)
    x    : float64 array, perturbed element by element
    dout : upstream gradient with the shape of ``f()`` (``1.0`` for a scalar loss)
    """
    xp = backend.get_array_module(x)
    if x.dtype != xp.float64:
        raise TypeError(f"x: finite differences need float64, got {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError("x: must be C-contiguous (it is perturbed through a flat view)")
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i].copy()
        flat[i] = old + eps
        plus = float(xp.sum(xp.asarray(f()) * dout))
        flat[i] = old - eps
        minus = float(xp.sum(xp.asarray(f()) * dout))
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def check_gradients(forward, backward, inputs, wrt=None, seed=0, eps=1e-6, tol=1e-6):
    """Assert that ``backward`` matches central differences of ``forward`` for each input in ``wrt``.

    forward  : ``forward(*inputs) -> out``
    backward : ``backward(dout) -> tuple`` of gradients, one per input in ``wrt`` order
    inputs   : list of float64 arrays (non-array inputs may be passed through ``functools.partial``)
    wrt      : indices of ``inputs`` to check (default: all)
    Returns the list of relative errors; raises ``AssertionError`` naming the input that fails.
    """
    wrt = list(range(len(inputs))) if wrt is None else list(wrt)
    out = forward(*inputs)
    xp = backend.get_array_module(out)
    gen = numpy.random.default_rng(seed)
    dout = xp.asarray(gen.standard_normal(numpy.shape(out)))
    analytic = backward(dout)
    if not isinstance(analytic, (tuple, list)):
        analytic = (analytic,)
    if len(analytic) != len(wrt):
        raise ValueError(f"backward returned {len(analytic)} gradients for {len(wrt)} inputs")
    errors = []
    for k, idx in enumerate(wrt):
        num = numerical_gradient(lambda: forward(*inputs), inputs[idx], dout, eps=eps)
        err = rel_error(analytic[k], num)
        errors.append(err)
        if not err < tol:
            raise AssertionError(f"gradient of input {idx}: relative error {err:.3e} >= {tol:g}\n"
                                 f"analytic:\n{backend.to_host(analytic[k])}\nnumeric:\n{backend.to_host(num)}")
    return errors
