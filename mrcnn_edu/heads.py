"""The heads: the RPN's on the feature map (stage 3 of the lecture), and those that run on every RoI, with
pasting masks back into the image (stage 7).

Shapes: N images, A anchors, R RoIs, C channels of the RoI features, K classes counting the background as
class 0, D detections.

* ``RPNHead`` (slide "RPN"): a 3 x 3 conv on the stride-16 map, then 1 x 1 convs to k objectness logits and
  4k box deltas for the k anchors of every cell.
* ``BoxHead`` (slide "Mask Head on Faster R-CNN: fully connected branch"): RoIAlign 7 x 7 features ->
  flatten -> fc -> ReLU -> fc -> ReLU, then two linear layers side by side: ``K`` class logits (the K + 1
  softmax of the slide, background included) and ``4 K`` class-specific deltas ``t^k``.
* ``MaskHead`` (slides "Mask Head: FCN", "K (m x m) sigmoid outputs"): RoIAlign 14 x 14 features -> a few
  3 x 3 convs -> a 2 x 2 stride-2 transposed conv to 28 x 28 -> a 1 x 1 conv to K mask logits per pixel.
  Each class has its own mask; the loss reads only the RoI's own class (``losses.sigmoid_mask_loss``).
* ``MLPMaskHead`` (the paper's ablation, Table 2e): the same masks from fully connected layers, which
  flatten the RoI and so lose its spatial layout; the paper measured 2.1 mask AP less than the FCN.
* ``paste_masks`` (slide "RoI-Align Paste Back"): each detection's m x m mask is resampled into its box in
  the full image. That is RoIAlign once more, with the roles swapped: the mask is the feature map and the
  whole image is the RoI, one bilinear sample per image pixel.
"""
from __future__ import annotations

from . import backend
from .nn import Conv2d, ConvTranspose2d, Flatten, Linear, Module, ReLU, Sequential
from .roi import _roi_align

__all__ = ["RPNHead", "BoxHead", "MaskHead", "MLPMaskHead", "paste_masks"]


class RPNHead(Module):
    """3 x 3 conv + ReLU, then 1 x 1 convs to k objectness logits and 4k deltas per cell (slide "RPN").

    forward(C4 N x C x h x w) -> (objectness N x A, deltas N x A x 4), A = h w k in the anchors' order
    (cell by cell, row-major, the k anchors of a cell together).
    """

    def __init__(self, channels, k, *, rng):
        super().__init__()
        self.k = k
        self.conv = Sequential(Conv2d(channels, channels, 3, padding=1, rng=rng), ReLU(inplace=True))
        self.cls_logits = Conv2d(channels, k, 1, rng=rng)
        self.bbox_pred = Conv2d(channels, 4 * k, 1, rng=rng)
        for layer in (self.cls_logits, self.bbox_pred):
            layer.params["weight"] *= 0.01 / layer.params["weight"].std()

    def forward(self, c4):
        t = self.conv.forward(c4)
        obj, deltas = self.cls_logits.forward(t), self.bbox_pred.forward(t)
        n, _, h, w = obj.shape
        self.keep((n, h, w))
        obj = obj.transpose(0, 2, 3, 1).reshape(n, -1)                                     # N x (h w k)
        deltas = deltas.reshape(n, self.k, 4, h, w).transpose(0, 3, 4, 1, 2).reshape(n, -1, 4)
        return obj, deltas

    def backward(self, grads):
        dobj, ddeltas = grads
        n, h, w = self.take()
        dobj = dobj.reshape(n, h, w, self.k).transpose(0, 3, 1, 2)
        ddeltas = ddeltas.reshape(n, h, w, self.k, 4).transpose(0, 3, 4, 1, 2).reshape(n, 4 * self.k, h, w)
        dt = self.cls_logits.backward(backend.get_array_module(dobj).ascontiguousarray(dobj)) \
            + self.bbox_pred.backward(backend.get_array_module(ddeltas).ascontiguousarray(ddeltas))
        return self.conv.backward(dt)


class BoxHead(Module):
    """Two fc layers on the flattened RoI features, then class logits and class-specific box deltas.

    forward(features R x C x p x p) -> (class_logits R x K, box_deltas R x 4K)
    backward((dclass_logits, dbox_deltas)) -> dfeatures R x C x p x p
    """

    def __init__(self, in_channels, pool_size, hidden, num_classes, *, rng):
        super().__init__()
        self.trunk = Sequential(Flatten(), Linear(in_channels * pool_size * pool_size, hidden, rng=rng),
                                ReLU(inplace=True), Linear(hidden, hidden, rng=rng), ReLU(inplace=True))
        self.cls_score = Linear(hidden, num_classes, rng=rng)
        self.bbox_pred = Linear(hidden, 4 * num_classes, rng=rng)
        # small final layers, as torchvision/Detectron: the first predictions are near "all background, no shift"
        self.cls_score.params["weight"] *= 0.01 / self.cls_score.params["weight"].std()
        self.bbox_pred.params["weight"] *= 0.001 / self.bbox_pred.params["weight"].std()

    def forward(self, features):
        h = self.trunk.forward(features)
        return self.cls_score.forward(h), self.bbox_pred.forward(h)

    def backward(self, grads):
        dlogits, ddeltas = grads
        dh = self.cls_score.backward(dlogits) + self.bbox_pred.backward(ddeltas)
        return self.trunk.backward(dh)


class MaskHead(Module):
    """A small FCN on 14 x 14 RoI features: ``num_convs`` 3 x 3 convs, 2x up-convolution, 1 x 1 to K logits.

    forward(features R x C x 14 x 14) -> mask_logits R x K x 28 x 28
    backward(dmask_logits) -> dfeatures
    """

    def __init__(self, in_channels, channels, num_convs, num_classes, *, rng):
        super().__init__()
        layers, c = [], in_channels
        for _ in range(num_convs):
            layers += [Conv2d(c, channels, 3, padding=1, rng=rng), ReLU(inplace=True)]
            c = channels
        layers += [ConvTranspose2d(c, channels, 2, stride=2, rng=rng), ReLU(inplace=True),
                   Conv2d(channels, num_classes, 1, rng=rng)]
        self.fcn = Sequential(*layers)

    def forward(self, features):
        return self.fcn.forward(features)

    def backward(self, dmask_logits):
        return self.fcn.backward(dmask_logits)


class MLPMaskHead(Module):
    """fc -> ReLU -> fc -> ReLU -> fc to K m x m mask logits: the paper's MLP mask head (Table 2e).

    forward(features R x C x p x p) -> mask_logits R x K x m x m
    backward(dmask_logits) -> dfeatures
    The paper's MLP is fc 1024, fc 1024, fc 80 x 28 x 28 on 14 x 14 RoIs; here ``hidden`` units and K classes.
    """

    def __init__(self, in_channels, pool_size, hidden, num_classes, m, *, rng):
        super().__init__()
        self.shape = (num_classes, m, m)
        self.mlp = Sequential(Flatten(), Linear(in_channels * pool_size * pool_size, hidden, rng=rng),
                              ReLU(inplace=True), Linear(hidden, hidden, rng=rng), ReLU(inplace=True),
                              Linear(hidden, num_classes * m * m, rng=rng))

    def forward(self, features):
        return self.mlp.forward(features).reshape(features.shape[0], *self.shape)

    def backward(self, dmask_logits):
        return self.mlp.backward(dmask_logits.reshape(dmask_logits.shape[0], -1))


def paste_masks(masks, boxes, image_size):
    """Resample each detection's mask into its box in the image (slide "RoI-Align Paste Back").

    masks      : D x m x m float probabilities (the predicted class's channel, after the sigmoid)
    boxes      : D x 4 float ``(x1, y1, x2, y2)`` in image pixels
    image_size : ``(H, W)``
    Returns D x H x W float: image pixel ``(y, x)`` reads the mask bilinearly at
    ``u = (x + 0.5 - x1) / (x2 - x1) * m - 0.5`` (and ``v`` likewise), pixel centres to pixel centres, with
    zeros around the mask: a pixel whose centre is half a mask pixel outside the box reads half the edge
    value, one a whole mask pixel out reads 0 (torchvision pads its masks with a zero border the same way).
    Threshold at 0.5 for binary masks: a full mask then covers exactly the pixels whose centres lie in the box.
    Written as ``roi_align(padded, rois, (H, W), sampling_ratio=1, aligned=True)`` on the masks padded with
    one zero pixel a side, with, per mask, the RoI that the whole image covers in that mask's coordinates:
    one sample per output pixel, at its centre.
    """
    xp = backend.get_array_module(masks)
    H, W = image_size
    D, m = masks.shape[0], masks.shape[-1]
    if D == 0:
        return xp.zeros((0, H, W), dtype=masks.dtype)
    # without the zero border, RoIAlign's border rule would read the edge value at full strength up to a
    # whole mask pixel outside the box, and every pasted mask would grow by about a pixel a side
    padded = xp.pad(masks, ((0, 0), (1, 1), (1, 1)))
    boxes = boxes.astype(masks.dtype)
    sx = m / xp.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)   # mask pixels per image pixel
    sy = m / xp.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
    rois = xp.stack([xp.arange(D, dtype=masks.dtype), 1 - boxes[:, 0] * sx, 1 - boxes[:, 1] * sy,
                     1 + (W - boxes[:, 0]) * sx, 1 + (H - boxes[:, 1]) * sy], axis=1)
    return _roi_align(padded[:, None], rois, (int(H), int(W)), 1.0, 1, True)[:, 0]
