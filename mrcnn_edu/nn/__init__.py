"""Stage 6 of the lecture: layers with hand-written backward passes.

* ``mrcnn_edu.nn.functional``: the layers as ``out, cache = f(x, ...)`` / ``grads = f_backward(dout, cache)``
  pairs (convolution in ``mrcnn_edu.nn.conv``: im2col + GEMM);
* ``mrcnn_edu.nn.modules``: layer objects that hold their parameters and gradients, ``Sequential``, He
  initialization, parameter counts and a readable printout.

Optimizers are in ``mrcnn_edu.optim``, checkpoints in ``mrcnn_edu.checkpoint``.
"""
from . import functional
from .modules import (Conv2d, ConvTranspose2d, Flatten, GroupNorm, Linear, MaxPool2d, Module, ReLU, Sequential,
                      UpsampleNearest2x, count_parameters, kaiming_normal)

__all__ = ["functional", "Module", "Sequential", "Conv2d", "ConvTranspose2d", "Linear", "ReLU", "MaxPool2d",
           "GroupNorm", "UpsampleNearest2x", "Flatten", "kaiming_normal", "count_parameters"]
