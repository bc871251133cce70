"""The library's one sigmoid and one softmax, written so that ``exp`` never overflows.

* ``sigmoid``: RPN objectness scores, the binary cross-entropy's gradient, the sigmoid mask read-out;
* ``softmax`` and ``log_softmax``: the box head's K + 1 class scores, the softmax cross-entropy.

Each works on any float array of the backend (NumPy or CuPy) and keeps its shape and dtype.
"""
from __future__ import annotations

from . import backend

__all__ = ["sigmoid", "softmax", "log_softmax"]


def sigmoid(x):
    """The logistic function ``1 / (1 + exp(-x))``, elementwise.

    x : any shape, float. Returns x's shape and dtype, values in [0, 1].
    ``exp`` only ever sees ``-|x|``: for x >= 0 it is ``1 / (1 + e)``, for x < 0 ``e / (1 + e)``, ``e = exp(-|x|)``.
    """
    xp = backend.get_array_module(x)
    return _sigmoid_from(x, xp.exp(-xp.abs(x)))


def _sigmoid_from(x, e):
    """``sigmoid(x)`` given ``e = exp(-|x|)``, which the binary cross-entropy has already."""
    d = 1 + e
    return backend.get_array_module(x).where(x >= 0, 1 / d, e / d)


def log_softmax(x, axis=-1):
    """``log softmax(x)`` along ``axis``: ``z - log(sum_k exp(z_k))`` with ``z = x - max_k x_k``.

    x : any shape, float (e.g. N x K logits, or R x K x m x m mask logits with axis=1).
    Returns x's shape and dtype. Subtracting the max first keeps every ``exp`` in (0, 1].
    """
    xp = backend.get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


def softmax(x, axis=-1):
    """``exp(x_k) / sum_j exp(x_j)`` along ``axis``, computed on ``x - max_j x_j`` (the same value).

    x : any shape, float (e.g. N x K class logits). Returns x's shape and dtype; sums to 1 along ``axis``.
    """
    xp = backend.get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
