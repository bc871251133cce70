"""Stage 6 of the lecture: optimizers, learning-rate schedules and gradient clipping.

An optimizer holds a dict of parameters by name (``model.parameters()``: the arrays the layers use) and
updates them *in place* from a dict of gradients under the same names (``model.gradients()``):

    opt = SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    for step in range(steps):
        model.zero_grad()
        ...forward, loss, backward...
        clip_grad_norm(model.gradients(), max_norm=10.0)
        opt.lr = schedule(step)
        opt.step(model.gradients())

A parameter without a gradient this step (a branch that was not used) is left alone, moments included,
as in PyTorch. The update rules are PyTorch's (``torch.optim.SGD``, ``Adam``, ``AdamW``), so the oracle
tests compare them step by step. Each optimizer's state (momentum buffers, moments, step count) is a
dict of arrays (``state_dict`` / ``load_state_dict``) that ``mrcnn_edu.checkpoint`` saves.
Arrays follow the array module of the parameters (NumPy or CuPy); hyperparameters are Python floats.
"""
from __future__ import annotations

import math

from . import backend
from ._validate import number

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "WarmupCosineLR", "clip_grad_norm", "lay_end_to_end", "end_to_end",
           "global_grad_norm"]


class Optimizer:
    """The bookkeeping every optimizer shares: parameters, learning rate, step count, per-parameter slots.

    params : dict name -> float array (updated in place; do not rebind a layer's parameter afterwards).
    Subclasses name their per-parameter state arrays in ``slots`` and implement ``update(name, p, g)``.
    """

    slots = ()

    def __init__(self, params, lr):
        if not isinstance(params, dict) or not params:
            raise TypeError("params: expected a non-empty dict name -> array, such as model.parameters()")
        self.params = params
        self.lr = number(lr, "lr", 0)
        self.t = 0                                            # number of steps taken
        self.counts = {}                                      # name -> updates of that parameter so far
        self.state = {slot: {} for slot in self.slots}        # slot -> name -> array like the parameter
        self._flat = {}                                       # slot -> one array holding every parameter's
        self._flat_params = _end_to_end(params)               # the array the parameters are views of, or None

    def hyperparameters(self):
        """The settings saved with the state (floats and bools), e.g. ``{"lr": 0.01, "momentum": 0.9}``."""
        return {"lr": self.lr}

    def step(self, grads):
        """One update of every parameter that has a gradient in ``grads`` (same names as ``params``)."""
        unknown = sorted(set(grads) - set(self.params))
        if unknown:
            raise ValueError(f"grads: no parameter named {unknown[0]!r} (known: {sorted(self.params)[:5]}...)")
        grads = {name: g for name, g in grads.items() if g is not None}
        for name, g in grads.items():
            if g.shape != self.params[name].shape:
                raise ValueError(f"grads[{name!r}]: expected shape {tuple(self.params[name].shape)}, "
                                 f"got {tuple(g.shape)}")
        self.t += 1
        for name in self.params:
            if name in grads:
                self.counts[name] = self.counts.get(name, 0) + 1
        if not self._update_all(grads):
            for name, p in self.params.items():
                if name in grads:
                    self.update(name, p, grads[name].astype(p.dtype, copy=False))

    def update(self, name, p, g):
        raise NotImplementedError

    def _update_all(self, grads):
        """Update every parameter at once, if the optimizer can (``Adam`` can); False: one at a time."""
        return False

    def _slot(self, slot, name, p):
        """The state array ``slot`` of parameter ``name``, zeros at first use."""
        arrays = self.state[slot]
        if name not in arrays:
            arrays[name] = backend.get_array_module(p).zeros_like(p)
            self._flat = {}                                   # a new array outside the flat buffers
        return arrays[name]

    def _flat_slot(self, slot):
        """Slot ``slot`` of every parameter as one flat array (P values, the parameters in ``params`` order);
        ``state[slot][name]`` are views into it, so the per-parameter path and ``state_dict`` see the same
        numbers. Made once, from the arrays there are (zeros where a parameter has none yet)."""
        if slot not in self._flat:
            xp = backend.get_array_module(*self.params.values())
            arrays = self.state[slot]
            flat, views = end_to_end([arrays[n] if n in arrays else xp.zeros_like(p) for n, p in self.params.items()])
            arrays.update(zip(self.params, views))
            self._flat[slot] = flat
        return self._flat[slot]

    # -- saving and restoring --------------------------------------------------------------------------
    def state_dict(self):
        """``{"type", "t", "counts", "hyper", "slots": {slot: {name: array}}}``: everything a resume needs.

        The arrays are copies: the dict is a snapshot that later steps do not change.
        """
        return {"type": type(self).__name__, "t": self.t, "counts": dict(self.counts),
                "hyper": self.hyperparameters(),
                "slots": {slot: {name: v.copy() for name, v in arrays.items()} for slot, arrays in self.state.items()}}

    def check_state_dict(self, state):
        """Raise ``ValueError`` unless ``state`` fits this optimizer and its parameters; changes nothing.

        It must come from the same optimizer type, name only parameters this optimizer has, with their
        shapes. Returns the state's arrays on the parameters' array module and dtype.
        """
        if state.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state: saved by {state.get('type')}, cannot load into {type(self).__name__}")
        hyper = state["hyper"]
        if set(hyper) != set(self.hyperparameters()):
            raise ValueError(f"optimizer state: settings {sorted(hyper)}, expected {sorted(self.hyperparameters())}")
        unknown = sorted(set(state["counts"]) - set(self.params))
        if unknown:
            raise ValueError(f"optimizer state: counts a parameter {unknown[0]!r} the model lacks")
        slots = {}
        for slot in self.slots:
            saved = state["slots"].get(slot, {})
            unknown = sorted(set(saved) - set(self.params))
            if unknown:
                raise ValueError(f"optimizer state: slot {slot!r} has a parameter {unknown[0]!r} the model lacks")
            slots[slot] = {}
            for name, value in saved.items():
                p = self.params[name]
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(f"optimizer state: {slot}[{name!r}] has shape {tuple(value.shape)}, "
                                     f"the parameter has {tuple(p.shape)}")
                slots[slot][name] = backend.get_array_module(p).asarray(value).astype(p.dtype)   # a copy
        return slots

    def load_state_dict(self, state):
        """Restore a ``state_dict`` (arrays copied onto the parameters' array module and dtype).

        Raises ``ValueError`` (and changes nothing) when it belongs to another optimizer type or to
        parameters of other names or shapes.
        """
        slots = self.check_state_dict(state)
        for key, value in state["hyper"].items():
            setattr(self, key, value)
        self.t = int(state["t"])
        self.counts = {name: int(c) for name, c in state["counts"].items()}
        self.state = slots
        self._flat = {}


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay (PyTorch's rule, dampening 0):

        g <- g + weight_decay * p;     v <- momentum * v + g;     p <- p - lr * v
    (``nesterov=True``: ``p <- p - lr * (g + momentum * v)``; momentum 0: plain ``p <- p - lr * g``).
    """

    slots = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum = number(momentum, "momentum", 0, 1, high_open=True)
        self.weight_decay = number(weight_decay, "weight_decay", 0)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: needs momentum > 0")

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": self.nesterov}

    def update(self, name, p, g):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            v = self._slot("momentum_buffer", name, p)
            v *= self.momentum
            v += g
            g = g + self.momentum * v if self.nesterov else v
        p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's rule; ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2):

        m <- b1 m + (1 - b1) g;    v <- b2 v + (1 - b2) g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    The bias corrections undo the zero start of m and v, so the first steps have the right size.
    """

    slots = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.beta1 = number(betas[0], "betas[0]", 0, 1, high_open=True)
        self.beta2 = number(betas[1], "betas[1]", 0, 1, high_open=True)
        self.eps = number(eps, "eps", 0)
        self.weight_decay = number(weight_decay, "weight_decay", 0)

    def hyperparameters(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _update_all(self, grads):
        """The update of ``update`` on every parameter at once, the parameters, gradients and moments laid end
        to end in flat arrays: about fifteen array operations a step instead of about ten per parameter.
        The same arithmetic element by element, so the same numbers to the last bit. Taken when every
        parameter has a gradient, all were updated equally often (one bias correction for all) and share a
        dtype; otherwise ``step`` updates them one at a time, on views of the same moments."""
        params = self.params
        if len(grads) != len(params):
            return False
        counts = {self.counts[name] for name in params}
        if len(counts) != 1 or len({p.dtype for p in params.values()}) != 1:
            return False
        xp = backend.get_array_module(*params.values())
        p = self._flat_params          # the layers' parameters are views into it (Module.flatten_parameters)
        if p is None:
            p = xp.concatenate(list(params.values()), axis=None)
        g = _end_to_end(grads) if list(grads) == list(params) else None     # laid out by lay_end_to_end
        if g is None:
            g = xp.concatenate([grads[name] for name in params], axis=None)
        g = g.astype(p.dtype, copy=False)
        self.update(None, p, g, counts.pop())
        if self._flat_params is None:
            offset = 0
            for q in params.values():                         # the new values back into the layers' arrays
                q[...] = p[offset:offset + q.size].reshape(q.shape)
                offset += q.size
        return True

    def update(self, name, p, g, t=None):
        """One Adam step of parameter ``name`` (``None``: all of them, flat, ``t`` their update count)."""
        xp = backend.get_array_module(p)
        if self.weight_decay and self.decoupled:
            p *= 1 - self.lr * self.weight_decay
        elif self.weight_decay:
            g = g + self.weight_decay * p
        if name is None:
            m, v = self._flat_slot("exp_avg"), self._flat_slot("exp_avg_sq")
        else:
            m, v = self._slot("exp_avg", name, p), self._slot("exp_avg_sq", name, p)
            t = self.counts[name]                             # this parameter's updates, as PyTorch
        correction1, correction2 = 1 - self.beta1 ** t, 1 - self.beta2 ** t
        # m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p -= lr / c1 * m / (sqrt(v) / sqrt(c2) + eps).
        # Written into one scratch array (``out=``): the same operations in the same order as the formula, so
        # the same numbers, without a new array (a page-faulting allocation, on the CPU) for every step of it.
        scratch = xp.multiply(1 - self.beta1, g)
        m *= self.beta1
        m += scratch
        xp.multiply(g, g, out=scratch)
        scratch *= 1 - self.beta2
        v *= self.beta2
        v += scratch
        xp.sqrt(v, out=scratch)
        scratch /= math.sqrt(correction2)
        scratch += self.eps
        xp.divide(m, scratch, out=scratch)
        scratch *= self.lr / correction1
        p -= scratch


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p <- p (1 - lr wd)`` before the Adam step,
    so the decay does not pass through the adaptive scaling (PyTorch's AdamW, default ``weight_decay=0.01``)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


# ----------------------------------------------------------------------------------------------------
# learning-rate schedules: callables step -> lr (step counts from 0)
# ----------------------------------------------------------------------------------------------------

class _Warmup:
    """Linear warmup from ``warmup_factor * base_lr`` to ``base_lr`` over ``warmup_steps`` (Detectron's).

    Training from scratch with a large learning rate diverges in the first steps, while the gradients are
    still large and their directions noisy; a short ramp avoids that.
    """

    def __init__(self, base_lr, warmup_steps=0, warmup_factor=0.001):
        self.base_lr = number(base_lr, "base_lr", 0, low_open=True)
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected an int >= 0, got {warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = number(warmup_factor, "warmup_factor", 0, low_open=True)

    def warmup(self, step):
        if step >= self.warmup_steps:
            return 1.0
        alpha = step / self.warmup_steps
        return self.warmup_factor * (1 - alpha) + alpha


class WarmupCosineLR(_Warmup):
    """Cosine decay from ``base_lr`` at step 0 to ``min_lr`` at ``total_steps``, times the warmup ramp:

        lr(t) = min_lr + (base_lr - min_lr) (1 + cos(pi t / total_steps)) / 2
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0, warmup_factor=0.001, min_lr=0.0):
        super().__init__(base_lr, warmup_steps, warmup_factor)
        self.total_steps = int(number(total_steps, "total_steps", 0, low_open=True))
        self.min_lr = number(min_lr, "min_lr", 0)

    def __call__(self, step):
        t = min(step, self.total_steps) / self.total_steps
        cosine = self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        return cosine * self.warmup(step)


def lay_end_to_end(arrays, names):
    """``arrays`` (name -> array, e.g. ``model.gradients()``) copied end to end into one flat array, in the
    order of ``names`` (an optimizer's ``params``; names missing from ``arrays`` are skipped): returns a dict of
    views into it, by the same names. ``clip_grad_norm`` and the optimizers then work on the one array: a
    handful of array operations a step instead of a few for every parameter (the norm takes one dot product
    a parameter only near ``clip_grad_norm``'s cap)."""
    present = [name for name in names if name in arrays and arrays[name] is not None]
    if not present:
        return {}
    _, views = end_to_end([arrays[name] for name in present])
    return dict(zip(present, views))


def end_to_end(arrays):
    """``arrays`` copied end to end into one flat array -> ``(flat, views)``: each array's place in it as a view
    of its shape, in order (the layout of ``Module.flatten_parameters``, ``lay_end_to_end`` and the flat
    moments)."""
    xp = backend.get_array_module(*arrays)
    flat = xp.concatenate(arrays, axis=None)      # each flattened in C order, strided or not: one copy
    views, offset = [], 0
    for a in arrays:
        views.append(flat[offset:offset + a.size].reshape(a.shape))
        offset += a.size
    return flat, views


def _end_to_end(params):
    """The flat array whose consecutive views the arrays are, in order (``Module.flatten_parameters``,
    ``lay_end_to_end``), or None."""
    if not params:
        return None
    arrays = list(params.values())
    flat = _owner(arrays[0])
    if flat is arrays[0] or flat.ndim != 1 or len({a.dtype for a in arrays}) != 1:
        return None
    at = backend.address(flat)
    for a in arrays:
        if _owner(a) is not flat or backend.address(a) != at or not a.flags.c_contiguous:
            return None
        at += a.nbytes
    return flat if at == backend.address(flat) + flat.nbytes else None


def _owner(a):
    """The array that owns ``a``'s memory (``a`` itself if it owns it): NumPy's ``base`` names it directly,
    another array module may name the view it was taken from."""
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


# ----------------------------------------------------------------------------------------------------
# gradient-norm clipping
# ----------------------------------------------------------------------------------------------------

def global_grad_norm(grads):
    """``sqrt(sum of g^2 over every gradient)``, as a Python float (one number for the whole model).

    The per-gradient sums stay on the device and come back to Python once, summed in float64: on a GPU each
    ``float()`` is a wait for the device.
    """
    if not grads:
        return 0.0
    xp = backend.get_array_module(*grads.values())
    # one dot product a gradient, also when they lie end to end: a single one over all of them would add in
    # another order, and a clipped step would then differ in the last bits (the default run's mask AP by 0.006)
    squares = xp.stack([xp.vdot(g.ravel(), g.ravel()) for g in grads.values()])
    return math.sqrt(float(squares.astype(xp.float64).sum()))


# below this share of max_norm, the norm of the laid-out gradients decides "no clipping" on its own
CLEARLY_BELOW = 0.99


def _flat_norm(flat):
    """The norm of one flat float array: one dot product with itself (BLAS, in the array's dtype), one read
    back. ``inf`` when the sum of squares overflows that dtype: ``clip_grad_norm`` then measures gradient by
    gradient, each sum brought to float64."""
    xp = backend.get_array_module(flat)
    return math.sqrt(float(xp.vdot(flat, flat)))


def clip_grad_norm(grads, max_norm):
    """Scale every gradient in place by ``max_norm / norm`` when the global norm exceeds ``max_norm``.

    Returns the norm before clipping (worth logging: a spike says the step would have blown up), as
    ``torch.nn.utils.clip_grad_norm_``, whose ``1e-6`` in the denominator this keeps. The direction of
    the update is unchanged; only its length is capped.

    Gradients laid end to end (``lay_end_to_end``) are measured first in one pass over the flat array (one
    dot product). Far below ``max_norm`` (under ``CLEARLY_BELOW`` of it, as in all but the first
    few steps of a run) that settles it: nothing is scaled, and the norm returned is that one. Near or above
    ``max_norm`` the scale comes from ``global_grad_norm``, so that a clipped step scales by the same factor
    to the last bit whichever way the gradients lie (the two norms differ only in the order of the sums).
    """
    max_norm = number(max_norm, "max_norm", 0, low_open=True)
    flat = _end_to_end(grads)
    norm = math.inf if flat is None else _flat_norm(flat)
    if not norm < CLEARLY_BELOW * max_norm:
        norm = global_grad_norm(grads)
    if not math.isfinite(norm):
        raise FloatingPointError(f"grads: the gradient norm is {norm}; the step before diverged")
    scale = max_norm / (norm + 1e-6)
    if scale < 1:
        for g in ([flat] if flat is not None else grads.values()):
            g *= scale
    return norm
