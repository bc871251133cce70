"""Lesson 06 reference solutions: the library's own functions (what ``--impl reference`` grades).

Read them in ``mrcnn_edu/nn/functional.py`` (``linear``) and ``mrcnn_edu/nn/conv.py`` (im2col, col2im, conv2d).
"""
from mrcnn_edu.nn.conv import conv_output_size, size_pair  # noqa: F401
from mrcnn_edu.nn.functional import col2im, conv2d, conv2d_backward, im2col, linear, linear_backward  # noqa: F401
