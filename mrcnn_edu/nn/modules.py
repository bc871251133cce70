"""Stage 6 of the lecture: layer objects that hold their parameters and gradients, built on ``functional``.

A ``Module`` is the bookkeeping around one forward/backward pair of ``mrcnn_edu.nn.functional``:

* ``params``: its own parameters by name (``"weight"``, ``"bias"``, the names PyTorch uses), and
  ``grads``: their gradients under the same names, *added up* by every ``backward`` until ``zero_grad()``;
* ``forward(x)`` computes the output and, in training mode, keeps the cache; ``backward(dout)`` takes
  that cache back and returns ``dx``. A module applied k times in one step (an RPN head shared by the FPN
  levels) keeps k caches; call ``backward`` k times in the reverse order of the forwards, as reverse-mode
  differentiation does;
* ``train()`` / ``eval()``: in evaluation mode no cache is kept (inference needs no backward, and the
  memory goes back at once), so ``backward`` there is an error. No layer here computes differently
  between the two modes (GroupNorm has no running statistics);
* ``parameters()`` / ``gradients()``: every parameter / gradient of the module and its children by dotted
  name (``"0.weight"``, ``"backbone.conv1.bias"``): what optimizers update and checkpoints save.

A printout (``print(model)``) lists the layers with their parameter counts. Initialization is He
(Kaiming) normal for the weights, zero for the biases; random numbers come from a generator the caller
passes in (``numpy.random.default_rng(seed)`` or ``backend.rng(seed)``), so a model is reproducible.
Arrays are created on the switched backend (``backend.xp``), float32 unless ``dtype`` says otherwise.
"""
from __future__ import annotations

import math

from .. import backend
from .._validate import pair
from . import functional as F
from .conv import _conv2d, _conv2d_backward, _conv_transpose2d, _conv_transpose2d_backward

__all__ = ["Module", "Sequential", "Conv2d", "ConvTranspose2d", "Linear", "ReLU", "MaxPool2d", "GroupNorm",
           "UpsampleNearest2x", "Flatten", "kaiming_normal", "count_parameters"]


# ----------------------------------------------------------------------------------------------------
# initialization
# ----------------------------------------------------------------------------------------------------

def kaiming_normal(shape, fan_in, rng, gain=math.sqrt(2.0), dtype="float32"):
    """He initialization: normal weights of standard deviation ``gain / sqrt(fan_in)``, on ``backend.xp``.

    shape : the weight's shape; fan_in : how many products are summed into one output (C_in kh kw for a
    convolution, D_in for a linear layer); rng : a NumPy or CuPy random Generator.
    With ReLU (gain sqrt 2) this keeps the variance of the activations the same from layer to layer at
    the start, so a deep stack trained from scratch neither explodes nor dies (He et al., 2015).
    """
    if rng is None or not hasattr(rng, "standard_normal"):
        raise TypeError(f"rng: expected a random Generator such as numpy.random.default_rng(0), got {rng!r}")
    xp = backend.xp
    w = rng.standard_normal(size=tuple(shape), dtype=xp.dtype(dtype).name)
    return xp.asarray(w) * xp.asarray(gain / math.sqrt(fan_in), dtype=dtype)


def count_parameters(module):
    """The number of scalars in every parameter of ``module`` and its children."""
    return sum(int(p.size) for p in module.parameters().values())


# ----------------------------------------------------------------------------------------------------
# Module and Sequential
# ----------------------------------------------------------------------------------------------------

class Module:
    """A layer or a model: parameters, gradients, ``forward``, ``backward``, train/eval mode (see module doc)."""

    def __init__(self):
        object.__setattr__(self, "params", {})
        self.grads = {}
        self.training = True
        self._caches = []

    # -- what a layer implements ---------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def extra_repr(self):
        """The arguments shown in the printout, e.g. ``"3, 32, kernel_size=(3, 3)"``."""
        return ""

    def __call__(self, x):
        return self.forward(x)

    # -- helpers for forward and backward ------------------------------------------------------------
    def keep(self, cache):
        """Store a forward's cache for the matching ``backward`` (training mode only)."""
        if self.training:
            self._caches.append(cache)

    def take(self):
        """The cache of the most recent forward that has no backward yet."""
        if not self._caches:
            mode = "" if self.training else " (the module is in eval mode, which keeps no caches)"
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward to match{mode}")
        return self._caches.pop()

    def accumulate(self, name, grad):
        """Add ``grad`` to the gradient of parameter ``name`` (gradients add up until ``zero_grad``)."""
        self.grads[name] = grad if name not in self.grads else self.grads[name] + grad

    # -- the tree of modules -------------------------------------------------------------------------
    def children(self):
        """``(name, module)`` for each Module attribute, in the order they were set (a list of modules is
        not searched: wrap it in a ``Sequential``)."""
        return [(k, v) for k, v in vars(self).items() if isinstance(v, Module)]

    def modules(self):
        """This module and all its descendants, depth first."""
        out = [self]
        for _, child in self.children():
            out.extend(child.modules())
        return out

    def _named(self, attr, prefix=""):
        items = [(prefix + k, v) for k, v in getattr(self, attr).items()]
        for name, child in self.children():
            items.extend(child._named(attr, f"{prefix}{name}."))
        return items

    def parameters(self):
        """Every parameter by dotted name; the arrays themselves (updated in place by optimizers)."""
        return dict(self._named("params"))

    def flatten_parameters(self):
        """Lay every parameter end to end in one flat array, each layer's parameter a view into it (the same
        values, the ``parameters()`` order); returns that array. An optimizer that updates every parameter at
        once (``Adam``, ``AdamW``) then updates it in place, with no copy of the parameters in and out each
        step. Call it before making the optimizer; the parameters must share one dtype."""
        from ..optim import end_to_end

        owners = [(m, key) for m in self.modules() for key in m.params]   # the parameters() order
        arrays = [m.params[key] for m, key in owners]
        if len({a.dtype for a in arrays}) > 1:
            raise TypeError("flatten_parameters: the parameters have more than one dtype")
        flat, views = end_to_end(arrays)
        for (m, key), view in zip(owners, views):
            m.params[key] = view
        return flat

    def gradients(self):
        """Every gradient computed since the last ``zero_grad``, by the same dotted names as ``parameters``."""
        return dict(self._named("grads"))

    def zero_grad(self):
        """Start a new step: drop the gradients and any cache left by a forward without backward."""
        for m in self.modules():
            m.grads = {}
            m._caches = []

    def train(self, mode=True):
        """Training mode (caches kept for backward) for this module and its children; returns self."""
        for m in self.modules():
            m.training = bool(mode)
            if not mode:
                m._caches = []
        return self

    def eval(self):
        """Evaluation mode: no caches, so no backward; returns self."""
        return self.train(False)

    # -- parameters read as attributes: conv.weight ---------------------------------------------------
    def __getattr__(self, name):
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in self.__dict__.get("params", {}):
            raise AttributeError(f"{name} is a parameter: change it in place ({name}[...] = value), so that "
                                 f"optimizers and checkpoints holding it see the change")
        object.__setattr__(self, name, value)

    # -- printout ------------------------------------------------------------------------------------
    def _lines(self, indent="", label=""):
        """``(text, parameter count or None)`` per printed line: one per leaf layer, nested by indent."""
        own = sum(int(p.size) for p in self.params.values()) or None
        head = f"{indent}{label}{type(self).__name__}({self.extra_repr()}"
        kids = self.children()
        if not kids:
            return [(head + ")", own)]
        lines = [(head, own)]
        for name, child in kids:
            lines.extend(child._lines(indent + "  ", f"({name}): "))
        return lines + [(indent + ")", None)]

    def __repr__(self):
        lines = self._lines()
        width = max(len(text) for text, _ in lines) + 2
        rows = [f"{text:<{width}}{count:>12,}" if count else text for text, count in lines]
        params = self.parameters().values()
        total = sum(int(p.size) for p in params)
        nbytes = sum(int(p.nbytes) for p in params)
        size = f"{nbytes / 2 ** 20:.1f} MiB" if nbytes >= 2 ** 20 else f"{nbytes / 2 ** 10:.1f} KiB"
        return "\n".join(rows + [f"{total:,} parameters ({size})"])


class Sequential(Module):
    """Modules applied one after another; ``backward`` runs them in reverse. Children are named 0, 1, ..."""

    def __init__(self, *layers):
        super().__init__()
        for layer in layers:
            if not isinstance(layer, Module):
                raise TypeError(f"layers: expected Module objects, got {type(layer).__name__}")
        self.layers = list(layers)

    def children(self):
        return [(str(i), m) for i, m in enumerate(self.layers)]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)


# ----------------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------------

def _zeros(n, dtype):
    return backend.xp.zeros(n, dtype=dtype)


class Conv2d(Module):
    """``conv2d`` with a weight ``C_out x C_in x kh x kw`` (He-initialized) and a bias ``C_out`` (zeros).

    ``need_dx=False`` (for the layer that reads the image) makes ``backward`` skip the input gradient,
    about half its work, and return None.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, *, rng,
                 dtype="float32", need_dx=True):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size")
        self.stride, self.padding = pair(stride, "stride"), pair(padding, "padding", minimum=0)
        self.need_dx = bool(need_dx)
        self.params["weight"] = kaiming_normal((out_channels, in_channels, kh, kw), in_channels * kh * kw, rng,
                                               dtype=dtype)
        if bias:
            self.params["bias"] = _zeros(out_channels, dtype)

    def forward(self, x):
        out, cache = _conv2d(x, self.weight, self.params.get("bias"), self.stride, self.padding)
        self.keep(cache)
        return out

    def backward(self, dout):
        dx, dw, db = _conv2d_backward(dout, self.take(), self.need_dx)
        self.accumulate("weight", dw)
        if db is not None:
            self.accumulate("bias", db)
        return dx

    def extra_repr(self):
        c_out, c_in, kh, kw = self.weight.shape
        bias = "" if "bias" in self.params else ", bias=False"
        return f"{c_in}, {c_out}, kernel_size={(kh, kw)}, stride={self.stride}, padding={self.padding}{bias}"


class ConvTranspose2d(Module):
    """``conv_transpose2d`` with a weight ``C_in x C_out x kh x kw`` and a bias ``C_out``.

    He initialization counts the products summed into one output: ``C_in kh kw / (sh sw)`` on average,
    ``C_in`` for the mask head's non-overlapping 2 x 2, stride-2 layer.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, bias=True,
                 *, rng, dtype="float32"):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size")
        self.stride, self.padding = pair(stride, "stride"), pair(padding, "padding", minimum=0)
        self.output_padding = pair(output_padding, "output_padding", minimum=0)
        fan_in = max(1.0, in_channels * kh * kw / (self.stride[0] * self.stride[1]))
        self.params["weight"] = kaiming_normal((in_channels, out_channels, kh, kw), fan_in, rng, dtype=dtype)
        if bias:
            self.params["bias"] = _zeros(out_channels, dtype)

    def forward(self, x):
        out, cache = _conv_transpose2d(x, self.weight, self.params.get("bias"), self.stride, self.padding,
                                       self.output_padding)
        self.keep(cache)
        return out

    def backward(self, dout):
        dx, dw, db = _conv_transpose2d_backward(dout, self.take())
        self.accumulate("weight", dw)
        if db is not None:
            self.accumulate("bias", db)
        return dx

    def extra_repr(self):
        c_in, c_out, kh, kw = self.weight.shape
        extra = "" if self.output_padding == (0, 0) else f", output_padding={self.output_padding}"
        bias = "" if "bias" in self.params else ", bias=False"
        return f"{c_in}, {c_out}, kernel_size={(kh, kw)}, stride={self.stride}, padding={self.padding}{extra}{bias}"


class Linear(Module):
    """``linear`` with a weight ``D_out x D_in`` (He-initialized) and a bias ``D_out`` (zeros)."""

    def __init__(self, in_features, out_features, bias=True, *, rng, dtype="float32"):
        super().__init__()
        self.params["weight"] = kaiming_normal((out_features, in_features), in_features, rng, dtype=dtype)
        if bias:
            self.params["bias"] = _zeros(out_features, dtype)

    def forward(self, x):
        out, cache = F._linear(x, self.weight, self.params.get("bias"))
        self.keep(cache)
        return out

    def backward(self, dout):
        dx, dw, db = F._linear_backward(dout, self.take())
        self.accumulate("weight", dw)
        if db is not None:
            self.accumulate("bias", db)
        return dx

    def extra_repr(self):
        d_out, d_in = self.weight.shape
        return f"{d_in}, {d_out}" + ("" if "bias" in self.params else ", bias=False")


class GroupNorm(Module):
    """``group_norm`` with a scale ``weight`` (ones) and a shift ``bias`` (zeros) per channel.

    GroupNorm rather than BatchNorm: its statistics come from each image alone, so it trains from scratch
    at 1 to 8 images a step and behaves the same at inference (see ``functional.group_norm``).
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, *, dtype="float32"):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_groups: {num_groups} does not divide num_channels {num_channels}")
        self.num_groups, self.eps = num_groups, eps
        self.params["weight"] = backend.xp.ones(num_channels, dtype=dtype)
        self.params["bias"] = _zeros(num_channels, dtype)

    def forward(self, x):
        out, cache = F._group_norm(x, self.weight, self.bias, self.num_groups, self.eps)
        self.keep(cache)
        return out

    def backward(self, dout):
        dx, dgamma, dbeta = F._group_norm_backward(dout, self.take())
        self.accumulate("weight", dgamma)
        self.accumulate("bias", dbeta)
        return dx

    def extra_repr(self):
        return f"{self.num_groups}, {self.weight.shape[0]}"


class _Stateless(Module):
    """A layer without parameters around a ``(forward, backward)`` pair of ``functional``."""

    def _apply(self, fn, x, *args):
        out, cache = fn(x, *args)
        self.keep(cache)
        return out


class ReLU(_Stateless):
    """``relu``. With ``inplace=True`` (PyTorch's option) the forward writes its result into the input array
    and the backward into the incoming gradient, instead of new arrays (arrays still warm in the cache): for
    arrays that nothing else reads afterwards, such as the fresh output of the layer before, and a gradient
    the caller hands on (the models here use it so). Backward needs only the mask of the positive inputs,
    taken before the write."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        return self._apply(F._relu, x, self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""

    def backward(self, dout):
        return F._relu_backward(dout, self.take(), self.inplace)


class MaxPool2d(_Stateless):
    """``max_pool2d`` (stride defaults to the kernel size)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)

    def forward(self, x):
        return self._apply(F._max_pool2d, x, self.kernel_size, self.stride, self.padding)

    def backward(self, dout):
        return F._max_pool2d_backward(dout, self.take())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class UpsampleNearest2x(_Stateless):
    """``upsample_nearest2x``: N x C x H x W -> N x C x 2H x 2W."""

    def forward(self, x):
        return self._apply(F._upsample_nearest2x, x)

    def backward(self, dout):
        return F._upsample_nearest2x_backward(dout, self.take())


class Flatten(_Stateless):
    """N x C x H x W -> N x (C H W), the step from the RoI features to the box head's fc layers."""

    def forward(self, x):
        self.keep(x.shape)
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, dout):
        return dout.reshape(self.take())
