"""Stage 8's feature extractor: the backbone (a small ResNet-free conv net) and the feature pyramid on it.

    image N x 3 x H x W -> stage1 .. stage4 -> C2 (stride 4), C3 (stride 8), C4 (stride 16) [, C5 (stride 32)]
    C2, C3, C4 -> FPNLite -> P2 (stride 4), P3 (stride 8)

Each block is 3 x 3 conv + GroupNorm + ReLU (GroupNorm, not BatchNorm: batches of 4 images are too small
for batch statistics). The FPN is the top-down half of the paper's pyramid, one or two steps down from C4.
Forward and backward pass the maps as tuples, in the order of the strides.
"""
from __future__ import annotations

from .nn import Conv2d, GroupNorm, Module, ReLU, Sequential, UpsampleNearest2x

__all__ = ["STRIDES", "Backbone", "FPNLite"]

# the stride of each feature map: C2 and P2 at 4, C3 and P3 at 8, C4 at 16, C5 at 32
STRIDES = {"C2": 4, "C3": 8, "C4": 16, "C5": 32, "P2": 4, "P3": 8}


def _conv_block(c_in, c_out, stride, groups, rng):
    return [Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, rng=rng), GroupNorm(groups, c_out),
            ReLU(inplace=True)]


def _plus(own, other):
    """``own + other``, added into ``own`` (an array this module has just made, which nothing else holds; it
    is still in the cache); ``own`` as it is when ``other`` is None."""
    if other is not None:
        own += other
    return own


class Backbone(Module):
    """Four stride-2 stages of 3 x 3 conv + GroupNorm + ReLU (two convs from stage 2 on): C2, C3, C4 out
    (strides 4, 8 and 16). With ``stride=32`` a fifth stage of C4's width follows and C5 replaces C4.

    forward(x) -> (C2, C3, top), top = C4 (stride 16) or C5 (stride 32); backward((dC2, dC3, dtop)) -> dx
    """

    def __init__(self, widths, groups, *, rng, stride=16):
        super().__init__()
        w1, w2, w3, w4 = widths
        g = lambda w: min(groups, w)  # noqa: E731
        self.stage1 = Sequential(*_conv_block(3, w1, 2, g(w1), rng))
        self.stage2 = Sequential(*_conv_block(w1, w2, 2, g(w2), rng), *_conv_block(w2, w2, 1, g(w2), rng))
        self.stage3 = Sequential(*_conv_block(w2, w3, 2, g(w3), rng), *_conv_block(w3, w3, 1, g(w3), rng))
        self.stage4 = Sequential(*_conv_block(w3, w4, 2, g(w4), rng), *_conv_block(w4, w4, 1, g(w4), rng))
        if stride == 32:
            self.stage5 = Sequential(*_conv_block(w4, w4, 2, g(w4), rng), *_conv_block(w4, w4, 1, g(w4), rng))

    def forward(self, x):
        c2 = self.stage2.forward(self.stage1.forward(x))
        c3 = self.stage3.forward(c2)
        top = self.stage4.forward(c3)
        return c2, c3, (self.stage5.forward(top) if hasattr(self, "stage5") else top)

    def backward(self, grads, need_dx=True):
        """The maps' gradients back to the image: N x 3 x H x W, or None with ``need_dx=False`` (training
        needs no gradient of the image, and the first conv then skips it: a GEMM and col2im)."""
        dc2, dc3, dc4 = grads
        if hasattr(self, "stage5"):
            dc4 = self.stage5.backward(dc4)
        dc3 = _plus(self.stage4.backward(dc4), dc3)
        dc2 = _plus(self.stage3.backward(dc3), dc2)
        self.stage1[0].need_dx = need_dx          # the conv that reads the image
        return self.stage1.backward(self.stage2.backward(dc2))


class FPNLite(Module):
    """The top-down pathway of a feature pyramid, one or two steps (slide "Feature Pyramid Network"):

        L4 = lateral4(C4),   L3 = lateral3(C3) + up2x(L4),   P3 = ReLU(conv3x3(L3))            (stride 8)
        L2 = lateral2(C2) + up2x(L3),                        P2 = ReLU(conv3x3(L2))            (stride 4)

    P2 only when ``with_p2``: the mask head reads it, finer than P3 by 2x.
    forward((C2, C3, C4)) -> (P2 or None, P3); backward((dP2 or None, dP3)) -> (dC2 or None, dC3, dC4)
    """

    def __init__(self, width2, width3, width4, out, with_p2, *, rng):
        super().__init__()
        self.with_p2 = with_p2
        self.lateral4 = Conv2d(width4, out, 1, rng=rng)
        self.lateral3 = Conv2d(width3, out, 1, rng=rng)
        self.up4 = UpsampleNearest2x()
        self.smooth3 = Sequential(Conv2d(out, out, 3, padding=1, rng=rng), ReLU(inplace=True))
        if with_p2:
            self.lateral2 = Conv2d(width2, out, 1, rng=rng)
            self.up3 = UpsampleNearest2x()
            self.smooth2 = Sequential(Conv2d(out, out, 3, padding=1, rng=rng), ReLU(inplace=True))

    def forward(self, feats):
        c2, c3, c4 = feats
        l3 = _plus(self.lateral3.forward(c3), self.up4.forward(self.lateral4.forward(c4)))
        p2 = self.smooth2.forward(_plus(self.lateral2.forward(c2), self.up3.forward(l3))) if self.with_p2 else None
        return p2, self.smooth3.forward(l3)

    def backward(self, grads):
        dp2, dp3 = grads
        dl3 = self.smooth3.backward(dp3)
        dc2 = None
        if self.with_p2:
            dl2 = self.smooth2.backward(dp2)
            dc2 = self.lateral2.backward(dl2)
            dl3 = _plus(dl3, self.up3.backward(dl2))
        dc4 = self.lateral4.backward(self.up4.backward(dl3))
        return dc2, self.lateral3.backward(dl3), dc4
