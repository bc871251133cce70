"""Stage 8 of the lecture: the whole Mask R-CNN, forward, loss and hand-written backward, and inference.

    image -> Backbone -> C3 (stride 8), C4 (stride 16)
          C4 -> RPNHead -> objectness, deltas on the anchors -> proposals (no gradient)
          C2, C3, C4 -> FPN-lite -> P3 (stride 8), P2 (stride 4)
          P3, proposals -> RoIAlign 7 x 7 -> BoxHead -> K + 1 softmax, class-specific deltas
          P2, positive proposals -> RoIAlign 14 x 14 -> MaskHead -> K masks of 28 x 28
    L = L_cls + L_box + L_mask + L_rpn_objectness + L_rpn_box     (slide "One net, four losses", + mask)

The backward runs the same graph in reverse: each head hands back the gradient of its RoI features,
``roi_align_backward`` scatters it onto P3 and P2, the FPN splits it between C2, C3 and C4, the RPN head adds its
own gradient to C4, and the backbone takes both. Anchor labels, proposals and sampled RoIs carry no
gradient, as in the paper.

Sizes are chosen for 128 x 128 shapes images (objects 40 to 64 px): an 8 x 8 anchor grid at stride 16 with
anchors of 40, 56 and 72 px centred in their cells, P3 at stride 8 for the box head and P2 at stride 4 for
the mask head, so boxes see 16 x 16 features and masks 32 x 32 rather than 8 x 8. Everything is a field of ``ModelConfig``.

The paper's ablations (Table 2) are fields too, so ``mrcnn-edu ablate`` trains the same model with one
thing changed: ``roi_op`` (RoIAlign or RoIPool), ``mask_loss`` (per-class sigmoid or per-pixel softmax),
``mask_head`` (FCN, or MLP of ``mask_mlp_hidden`` units), ``box_loss`` (smooth-L1 or GIoU, scaled by
``box_loss_weight``) and ``backbone_stride`` (16, C4, or 32, C5: one more stride-2 stage, without FPN, as
the paper's "ResNet-50-C5").
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field

from . import backend
from ._validate import check_boxes, check_finite, trusted
from .anchors import generate_anchors
from .boxes import batched_nms, box_decode, clip_boxes_to_image, remove_small_boxes
from .heads import BoxHead, MaskHead, MLPMaskHead, paste_masks
from .losses import sigmoid_mask_loss, softmax_mask_loss
from .nn import Conv2d, GroupNorm, Module, ReLU, Sequential, UpsampleNearest2x
from .roi import roi_align, roi_align_backward, roi_pool, roi_pool_backward
from .roi_heads import box_head_targets, fast_rcnn_loss, mask_targets
from .rpn import generate_proposals, rpn_loss, rpn_targets

__all__ = ["ModelConfig", "MaskRCNN", "check_images", "check_targets", "rois_from_boxes", "sample_mask_rois",
           "postprocess_detections", "detection_masks"]

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


@dataclass
class ModelConfig:
    """Every size and threshold of the model (saved in checkpoints as JSON)."""
    num_classes: int = 4                      # K, background included
    image_size: int = 128                     # images are resized and padded to this square
    channels: tuple = (16, 32, 64, 128)       # backbone widths at strides 2, 4, 8, 16
    groups: int = 8                           # GroupNorm groups
    backbone_stride: int = 16                 # 16: C4 on top; 32: one more stage, C5 (needs fpn=False)
    fpn: bool = True                          # False: both heads read the top map (C4 or C5), no pyramid
    fpn_channels: int = 64                    # P2 and P3
    anchor_sizes: tuple = (40.0, 56.0, 72.0)
    anchor_ratios: tuple = (1.0,)
    anchor_offset: float = 0.5                # centre anchors in their cells
    rpn_batch: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms: int = 1000
    rpn_post_nms_train: int = 64
    rpn_post_nms_test: int = 32
    rpn_nms: float = 0.7
    roi_batch: int = 64                       # RoIs sampled per image for the box head
    roi_positive_fraction: float = 0.25
    box_pool: int = 7
    box_hidden: int = 256
    mask_pool: int = 14
    mask_stride: int = 4                      # 4: the mask head reads P2; 8: it reads P3
    mask_rois_per_image: int = 8              # positive RoIs that train the mask head (0: all)
    mask_channels: int = 64
    mask_convs: int = 2
    sampling_ratio: int = 2
    roi_op: str = "align"                     # "align": RoIAlign; "pool": RoIPool (quantized, the ablation)
    mask_loss: str = "sigmoid"                # "sigmoid": per-class (Mask R-CNN); "softmax": per pixel
    mask_head: str = "fcn"                    # "fcn": convs; "mlp": fc layers (mask_mlp_hidden units)
    mask_mlp_hidden: int = 256                # the MLP mask head's fc width (the paper's is 1024)
    box_loss: str = "smooth_l1"               # "smooth_l1" or "giou" (1 - GIoU of the decoded box)
    box_loss_weight: float = 1.0              # multiplies the box head's regression loss, either kind
    score_threshold: float = 0.05
    detection_nms: float = 0.5
    detections_per_image: int = 20
    pixel_mean: tuple = field(default=(0.5, 0.5, 0.5))
    pixel_std: tuple = field(default=(0.25, 0.25, 0.25))

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _conv_block(c_in, c_out, stride, groups, rng):
    return [Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, rng=rng), GroupNorm(groups, c_out),
            ReLU()]


class Backbone(Module):
    """Four stride-2 stages of 3 x 3 conv + GroupNorm + ReLU (two convs from stage 2 on): C2, C3, C4 out
    (strides 4, 8 and 16). With ``stride=32`` a fifth stage of C4's width follows and C5 replaces C4.

    forward(x) -> (C2, C3, top), top = C4 (stride 16) or C5 (stride 32); backward((dC2, dC3, dtop)) -> dx
    """

    def __init__(self, channels, groups, *, rng, stride=16):
        super().__init__()
        c1, c2, c3, c4 = channels
        g = lambda c: min(groups, c)  # noqa: E731
        self.stage1 = Sequential(*_conv_block(3, c1, 2, g(c1), rng))
        self.stage2 = Sequential(*_conv_block(c1, c2, 2, g(c2), rng), *_conv_block(c2, c2, 1, g(c2), rng))
        self.stage3 = Sequential(*_conv_block(c2, c3, 2, g(c3), rng), *_conv_block(c3, c3, 1, g(c3), rng))
        self.stage4 = Sequential(*_conv_block(c3, c4, 2, g(c4), rng), *_conv_block(c4, c4, 1, g(c4), rng))
        if stride == 32:
            self.stage5 = Sequential(*_conv_block(c4, c4, 2, g(c4), rng), *_conv_block(c4, c4, 1, g(c4), rng))

    def forward(self, x):
        c2 = self.stage2.forward(self.stage1.forward(x))
        c3 = self.stage3.forward(c2)
        top = self.stage4.forward(c3)
        return c2, c3, (self.stage5.forward(top) if hasattr(self, "stage5") else top)

    def backward(self, grads):
        dc2, dc3, dc4 = grads
        if hasattr(self, "stage5"):
            dc4 = self.stage5.backward(dc4)
        dc3 = self.stage4.backward(dc4) if dc3 is None else dc3 + self.stage4.backward(dc4)
        dc2 = self.stage3.backward(dc3) if dc2 is None else dc2 + self.stage3.backward(dc3)
        return self.stage1.backward(self.stage2.backward(dc2))


class FPNLite(Module):
    """The top-down pathway of a feature pyramid, one or two steps (slide "Feature Pyramid Network"):

        L4 = lateral4(C4),   L3 = lateral3(C3) + up2x(L4),   P3 = ReLU(conv3x3(L3))            (stride 8)
        L2 = lateral2(C2) + up2x(L3),                        P2 = ReLU(conv3x3(L2))            (stride 4)

    P2 only when ``with_p2``: the mask head reads it, finer than P3 by 2x.
    forward((C2, C3, C4)) -> (P2 or None, P3); backward((dP2 or None, dP3)) -> (dC2 or None, dC3, dC4)
    """

    def __init__(self, c2, c3, c4, out, with_p2, *, rng):
        super().__init__()
        self.with_p2 = with_p2
        self.lateral4 = Conv2d(c4, out, 1, rng=rng)
        self.lateral3 = Conv2d(c3, out, 1, rng=rng)
        self.up4 = UpsampleNearest2x()
        self.smooth3 = Sequential(Conv2d(out, out, 3, padding=1, rng=rng), ReLU())
        if with_p2:
            self.lateral2 = Conv2d(c2, out, 1, rng=rng)
            self.up3 = UpsampleNearest2x()
            self.smooth2 = Sequential(Conv2d(out, out, 3, padding=1, rng=rng), ReLU())

    def forward(self, feats):
        c2, c3, c4 = feats
        l3 = self.lateral3.forward(c3) + self.up4.forward(self.lateral4.forward(c4))
        p2 = self.smooth2.forward(self.lateral2.forward(c2) + self.up3.forward(l3)) if self.with_p2 else None
        return p2, self.smooth3.forward(l3)

    def backward(self, grads):
        dp2, dp3 = grads
        dl3 = self.smooth3.backward(dp3)
        dc2 = None
        if self.with_p2:
            dl2 = self.smooth2.backward(dp2)
            dc2 = self.lateral2.backward(dl2)
            dl3 = dl3 + self.up3.backward(dl2)
        dc4 = self.lateral4.backward(self.up4.backward(dl3))
        return dc2, self.lateral3.backward(dl3), dc4


class RPNHead(Module):
    """3 x 3 conv + ReLU, then 1 x 1 convs to k objectness logits and 4k deltas per cell (slide "RPN").

    forward(C4 N x C x h x w) -> (objectness N x A, deltas N x A x 4), A = h w k in the anchors' order
    (cell by cell, row-major, the k anchors of a cell together).
    """

    def __init__(self, channels, k, *, rng):
        super().__init__()
        self.k = k
        self.conv = Sequential(Conv2d(channels, channels, 3, padding=1, rng=rng), ReLU())
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


class MaskRCNN(Module):
    """Mask R-CNN with hand-written backward: ``loss_and_backward`` for training, ``predict`` for inference."""

    def __init__(self, config=None, *, rng):
        super().__init__()
        self.config = cfg = config or ModelConfig()
        c2, c3, c4 = cfg.channels[1:]
        _check_config(cfg)
        k = len(cfg.anchor_sizes) * len(cfg.anchor_ratios)
        self.backbone = Backbone(cfg.channels, cfg.groups, rng=rng, stride=cfg.backbone_stride)
        if cfg.fpn:
            self.fpn = FPNLite(c2, c3, c4, cfg.fpn_channels, cfg.mask_stride == 4, rng=rng)
        # the strides of the maps the box head and the mask head read
        self.strides = (8, cfg.mask_stride) if cfg.fpn else (cfg.backbone_stride, cfg.backbone_stride)
        head_channels = cfg.fpn_channels if cfg.fpn else c4
        self.rpn = RPNHead(c4, k, rng=rng)
        self.box_head = BoxHead(head_channels, cfg.box_pool, cfg.box_hidden, cfg.num_classes, rng=rng)
        if cfg.mask_head == "mlp":
            self.mask_head = MLPMaskHead(head_channels, cfg.mask_pool, cfg.mask_mlp_hidden, cfg.num_classes,
                                         2 * cfg.mask_pool, rng=rng)
        else:
            self.mask_head = MaskHead(head_channels, cfg.mask_channels, cfg.mask_convs, cfg.num_classes, rng=rng)

    # ---------------------------------------------------------------------------------------------------
    def anchors(self, dtype="float32"):
        cfg = self.config
        return generate_anchors((cfg.image_size, cfg.image_size), cfg.backbone_stride, cfg.anchor_sizes, cfg.anchor_ratios,
                                cfg.anchor_offset, dtype=dtype)

    @property
    def dtype(self):
        """The parameters' float dtype (float32; float64 for gradient checks)."""
        return self.backbone.stage1[0].params["weight"].dtype

    def normalize(self, images):
        """N x H x W x 3 uint8 -> N x 3 x H x W float (the parameters' dtype), centred and scaled."""
        xp = backend.xp
        x = xp.asarray(images).astype(self.dtype) / 255.0
        x = (x - xp.asarray(self.config.pixel_mean, dtype=self.dtype)) / xp.asarray(self.config.pixel_std,
                                                                                     dtype=self.dtype)
        return xp.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _features(self, x):
        """C4 for the RPN, the box head's map (P3, or C4 without FPN) and the mask head's (P2, P3 or C4)."""
        c2, c3, c4 = self.backbone.forward(x)
        if not self.config.fpn:
            return c4, c4, c4
        p2, p3 = self.fpn.forward((c2, c3, c4))
        return c4, p3, (p3 if p2 is None else p2)

    def _features_backward(self, dbox_map, dmask_map, dc4):
        """Send the heads' map gradients (and the RPN's, ``dc4``) back through the FPN and the backbone."""
        cfg = self.config
        if not cfg.fpn:
            self.backbone.backward((None, None, dc4 + dbox_map + dmask_map))
            return
        if cfg.mask_stride == 8:  # both heads read P3
            dp2, dp3 = None, dbox_map + dmask_map
        else:
            dp2, dp3 = dmask_map, dbox_map
        dc2, dc3, dc4_fpn = self.fpn.backward((dp2, dp3))
        self.backbone.backward((dc2, dc3, dc4 + dc4_fpn))

    def _proposals(self, anchors, objectness, deltas, post_nms):
        cfg = self.config
        size = (cfg.image_size, cfg.image_size)
        return [generate_proposals(anchors, objectness[i], deltas[i], size, cfg.rpn_pre_nms, post_nms,
                                   cfg.rpn_nms)[0] for i in range(objectness.shape[0])]

    def _pool(self, fmap, stride, boxes_per_image, size):
        """RoIAlign (or RoIPool) of each image's boxes on a feature map of the given stride.

        Returns ``(features R x C x size x size, cache)``; ``cache[0]`` is the RoIs, R x 5.
        """
        rois = rois_from_boxes(boxes_per_image, fmap.dtype)
        if self.config.roi_op == "pool":
            feats, argmax = roi_pool(fmap, rois, size, 1 / stride)
        else:
            feats, argmax = roi_align(fmap, rois, size, 1 / stride, self.config.sampling_ratio, aligned=True), None
        return feats, (rois, argmax, fmap.shape, size, stride)

    def _pool_backward(self, dfeats, cache):
        """The gradient of ``_pool`` on its feature map."""
        rois, argmax, shape, size, stride = cache
        if argmax is not None:
            return roi_pool_backward(dfeats, argmax, shape, rois)
        return roi_align_backward(dfeats, rois, shape, size, 1 / stride, self.config.sampling_ratio, aligned=True)

    # ---------------------------------------------------------------------------------------------------
    def loss_and_backward(self, images, targets, rng, proposals=None):
        """One training step's forward, losses and backward (gradients accumulate in the modules).

        images    : N x H x W x 3 uint8 (H = W = config.image_size)
        targets   : N dicts with ``boxes`` G x 4 float, ``labels`` G int (1..K-1), ``masks`` G x H x W bool
        rng       : the generator of the samplers
        proposals : optional list of N P x 4 arrays used instead of the RPN's (the gradient check holds
                    them fixed: proposals carry no gradient, so moving them would change the loss behind
                    the backward's back)
        Returns a dict of the five losses (floats) and their sum under ``"loss"``.

        The targets (and proposals) are checked here, once; everything after runs inside
        ``_validate.trusted()``, since the library made every array it passes on (see ``_validate``).
        """
        images = check_images(images)
        check_targets(targets, len(images), self.config)
        if proposals is not None:
            proposals = [check_boxes(p, f"proposals[{i}]") for i, p in enumerate(proposals)]
        with trusted():
            return self._loss_and_backward(images, targets, rng, proposals)

    def _loss_and_backward(self, images, targets, rng, proposals):
        cfg = self.config
        xp = backend.xp
        x = self.normalize(images)
        c4, p3, pm = self._features(x)
        anchors = self.anchors()

        # RPN: labels on the anchors, the loss, and the proposals (which carry no gradient)
        objectness, deltas = self.rpn.forward(c4)
        labels, reg = zip(*(rpn_targets(anchors, t["boxes"], rng, cfg.rpn_batch, cfg.rpn_positive_fraction)
                            for t in targets))
        l_obj, l_rpn_box, dobj, ddeltas = rpn_loss(objectness, deltas, xp.stack(labels), xp.stack(reg))
        if proposals is None:
            proposals = self._proposals(anchors, objectness, deltas, cfg.rpn_post_nms_train)

        # box head on sampled proposals
        sampled = [box_head_targets(p, t["boxes"], t["labels"], rng, cfg.roi_batch, cfg.roi_positive_fraction,
                                    weights=BOX_WEIGHTS) for p, t in zip(proposals, targets)]
        box_stride, mask_stride = self.strides
        box_feats, box_cache = self._pool(p3, box_stride, [s[0] for s in sampled], cfg.box_pool)
        class_logits, box_deltas = self.box_head.forward(box_feats)
        roi_labels = xp.concatenate([s[1] for s in sampled])
        l_cls, l_box, dlogits, dbox = fast_rcnn_loss(class_logits, box_deltas, roi_labels,
                                                     xp.concatenate([s[2] for s in sampled]), cfg.box_loss,
                                                     box_cache[0][:, 1:], BOX_WEIGHTS)
        l_box, dbox = cfg.box_loss_weight * l_box, cfg.box_loss_weight * dbox
        dp3 = self._pool_backward(self.box_head.backward((dlogits, dbox)), box_cache)

        # mask head on the positive RoIs: each learns the mask of its own ground truth, in its own box
        m = 2 * cfg.mask_pool
        pos = [sample_mask_rois(s[1] > 0, cfg.mask_rois_per_image, rng) for s in sampled]
        pos_boxes = [s[0][p] for s, p in zip(sampled, pos)]
        l_mask = 0.0
        if sum(int(p.sum()) for p in pos):
            mask_t = xp.concatenate([mask_targets(t["masks"], b, s[3][p], m, aligned=True)
                                     for t, s, p, b in zip(targets, sampled, pos, pos_boxes)])
            mask_feats, mask_cache = self._pool(pm, mask_stride, pos_boxes, cfg.mask_pool)
            mask_logits = self.mask_head.forward(mask_feats)
            mask_loss = softmax_mask_loss if cfg.mask_loss == "softmax" else sigmoid_mask_loss
            l_mask, dmask = mask_loss(mask_logits, roi_labels[xp.concatenate(pos)], mask_t)
            dpm = self._pool_backward(self.mask_head.backward(dmask), mask_cache)
        else:
            dpm = xp.zeros_like(pm)
        self._features_backward(dp3, dpm, self.rpn.backward((dobj, ddeltas)))
        losses = dict(loss_classifier=float(l_cls), loss_box_reg=float(l_box), loss_mask=float(l_mask),
                      loss_objectness=float(l_obj), loss_rpn_box_reg=float(l_rpn_box))
        losses["loss"] = sum(losses.values())
        return losses

    # ---------------------------------------------------------------------------------------------------
    def predict(self, images):
        """Detections of each image: a list of dicts with ``boxes`` D x 4, ``scores`` D, ``labels`` D (1..K-1),
        ``masks`` D x H x W bool (pasted back and thresholded at 0.5), all on the backend.
        """
        images = check_images(images)
        with trusted():
            return self._predict(images)

    def _predict(self, images):
        cfg = self.config
        xp = backend.xp
        was_training = self.training
        self.train(False)
        try:
            x = self.normalize(images)
            c4, p3, pm = self._features(x)
            objectness, deltas = self.rpn.forward(c4)
            proposals = self._proposals(self.anchors(), objectness, deltas, cfg.rpn_post_nms_test)
            box_feats, (rois, *_) = self._pool(p3, self.strides[0], proposals, cfg.box_pool)
            class_logits, box_deltas = self.box_head.forward(box_feats)
            size = (cfg.image_size, cfg.image_size)
            detections = [postprocess_detections(class_logits[rois[:, 0] == i], box_deltas[rois[:, 0] == i],
                                                 proposals[i], size, cfg.score_threshold, cfg.detection_nms,
                                                 cfg.detections_per_image, BOX_WEIGHTS)
                          for i in range(x.shape[0])]
            mask_feats, _ = self._pool(pm, self.strides[1], [d["boxes"] for d in detections], cfg.mask_pool)
            m = 2 * cfg.mask_pool
            mask_logits = (self.mask_head.forward(mask_feats) if mask_feats.shape[0]
                           else xp.zeros((0, cfg.num_classes, m, m), dtype=p3.dtype))
            if cfg.mask_loss == "softmax":
                mask_logits = _softmax_as_sigmoid_logits(mask_logits)
        finally:
            self.train(was_training)
        start = 0
        for d in detections:
            n = len(d["boxes"])
            d["masks"] = detection_masks(mask_logits[start:start + n], d["labels"], d["boxes"], size)
            start += n
        return detections


def check_images(images):
    """``images`` as an N x H x W x 3 array (uint8, or floats on the same 0..255 scale), finite."""
    xp = backend.get_array_module(images)
    images = xp.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images: expected N x H x W x 3 (RGB, channels last), got shape {tuple(images.shape)}")
    if images.dtype.kind == "f":
        check_finite(images, "images")
    elif images.dtype.kind not in "iu":
        raise TypeError(f"images: expected uint8 (or float) pixels, got dtype {images.dtype}")
    return images


def check_targets(targets, num_images, config):
    """The training targets as the model needs them, or a ``ValueError`` that names the image and the field.

    targets : ``num_images`` dicts with ``boxes`` G x 4 ``(x1, y1, x2, y2)``, finite with x2 > x1 and y2 > y1
              (as torchvision asks: a box of no width has no regression target), ``labels`` G ints in
              [1, K - 1] and ``masks`` G x H x W (any H x W: they are cropped per RoI).
    """
    if len(targets) != num_images:
        raise ValueError(f"targets: expected one dict per image ({num_images}), got {len(targets)}")
    for i, t in enumerate(targets):
        missing = {"boxes", "labels", "masks"} - set(t)
        if missing:
            raise ValueError(f"targets[{i}]: missing {sorted(missing)}")
        boxes = check_boxes(t["boxes"], f"targets[{i}]['boxes']")
        xp = backend.get_array_module(boxes)
        if boxes.shape[0] and not bool(xp.all((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))):
            raise ValueError(f"targets[{i}]['boxes']: every box needs x2 > x1 and y2 > y1")
        labels, mask_shape = xp.asarray(t["labels"]), tuple(getattr(t["masks"], "shape", ()))
        if labels.shape != (boxes.shape[0],) or (labels.size and labels.dtype.kind not in "iu"):
            raise ValueError(f"targets[{i}]['labels']: expected {boxes.shape[0]} integer classes, got "
                             f"shape {tuple(labels.shape)}, dtype {labels.dtype}")
        if labels.size and bool(xp.any((labels < 1) | (labels >= config.num_classes))):
            raise ValueError(f"targets[{i}]['labels']: expected classes in [1, {config.num_classes - 1}] "
                             "(0 is the background)")
        if len(mask_shape) != 3 or mask_shape[0] != boxes.shape[0]:
            raise ValueError(f"targets[{i}]['masks']: expected a {boxes.shape[0]} x H x W array, got shape "
                             f"{mask_shape}")


def _check_config(cfg):
    """Clear errors for the choices ``ModelConfig`` offers."""
    choices = dict(roi_op=("align", "pool"), mask_loss=("sigmoid", "softmax"), mask_head=("fcn", "mlp"),
                   box_loss=("smooth_l1", "giou"), backbone_stride=(16, 32), mask_stride=(4, 8))
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name}: expected one of {allowed}, got {getattr(cfg, name)!r}")
    if cfg.backbone_stride == 32 and cfg.fpn:
        raise ValueError("backbone_stride: 32 (C5) is built without the FPN; set fpn=False")
    hidden = cfg.mask_mlp_hidden
    if isinstance(hidden, bool) or not isinstance(hidden, numbers.Integral) or hidden < 1:
        raise ValueError(f"mask_mlp_hidden: expected a positive int, got {hidden!r}")
    weight = cfg.box_loss_weight
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 < weight < math.inf:
        raise ValueError(f"box_loss_weight: expected a positive finite number, got {weight!r}")


def _softmax_as_sigmoid_logits(z):
    """Logits whose sigmoid is the per-pixel softmax over the K channels: ``z_k - logsumexp_{j != k} z_j``.

    A model trained with the softmax mask loss then reads out like the sigmoid one (z: D x K x m x m).
    """
    xp = backend.get_array_module(z)
    top = z.max(axis=1, keepdims=True)
    e = xp.exp(z - top)
    others = xp.maximum(e.sum(axis=1, keepdims=True) - e, xp.finfo(z.dtype).tiny)
    return z - top - xp.log(others)


# -------------------------------------------------------------------------------------------------------
# the pieces of a step that are plain functions (lesson 08 grades them)
# -------------------------------------------------------------------------------------------------------

def rois_from_boxes(boxes_per_image, dtype="float32"):
    """The RoI ops' ``R x 5`` format from each image's boxes: batch index, then ``(x1, y1, x2, y2)``.

    boxes_per_image : a list of N arrays, image i's ``R_i x 4`` boxes (any float dtype)
    dtype           : the dtype of the result
    Returns ``R x 5`` with R = sum R_i, image 0's boxes first; ``0 x 5`` for no images or no boxes.
    """
    xp = backend.get_array_module(*boxes_per_image) if boxes_per_image else backend.xp
    if not boxes_per_image:
        return xp.zeros((0, 5), dtype=dtype)
    index = xp.concatenate([xp.full(len(b), i, dtype=dtype) for i, b in enumerate(boxes_per_image)])
    boxes = xp.concatenate([xp.asarray(b, dtype=dtype).reshape(-1, 4) for b in boxes_per_image])
    return xp.concatenate([index[:, None], boxes], axis=1)


def sample_mask_rois(positive, cap, rng):
    """Which positive RoIs train the mask head: all of them, or ``cap`` chosen uniformly at random.

    positive : R bool, the image's RoIs matched to an object (label > 0)
    cap      : int, at most this many are kept; ``cap <= 0`` keeps every positive
    rng      : numpy Generator; draws R uniform numbers when (and only when) there are more than ``cap``
    Returns R bool, a subset of ``positive`` with ``min(cap, positive.sum())`` entries set.
    The mask head is most of a step's arithmetic, and the positives of one object are near-duplicates, so a
    few of them teach it almost as much as all.
    """
    if cap <= 0 or int(positive.sum()) <= cap:
        return positive
    xp = backend.get_array_module(positive)
    keys = xp.where(positive, xp.asarray(rng.random(positive.shape[0])), 2.0)   # negatives sort last
    keep = xp.zeros_like(positive)
    keep[xp.argsort(keys)[:cap]] = True
    return keep


def postprocess_detections(class_logits, box_deltas, proposals, image_size, score_threshold=0.05,
                           nms_threshold=0.5, detections_per_image=100, weights=BOX_WEIGHTS):
    """One image's detections from the box head's outputs (torchvision's ``postprocess_detections``).

    class_logits : P x K float, K classes with the background as class 0
    box_deltas   : P x 4K float, class-specific deltas ``(dx, dy, dw, dh)`` of each proposal
    proposals    : P x 4 float ``(x1, y1, x2, y2)``, the boxes the deltas refer to
    image_size   : ``(H, W)``, boxes are clipped to it
    Returns a dict: ``boxes`` D x 4, ``scores`` D (softmax probability), ``labels`` D int (1..K-1), by
    decreasing score. Every proposal gives K - 1 candidates, one per object class, each with its own box;
    candidates scoring ``<= score_threshold`` or with a side under 0.01 px are dropped, NMS runs per class
    at ``nms_threshold``, and the best ``detections_per_image`` remain.
    """
    xp = backend.get_array_module(class_logits)
    P, K = class_logits.shape
    z = class_logits - class_logits.max(axis=1, keepdims=True)
    scores = xp.exp(z) / xp.exp(z).sum(axis=1, keepdims=True)
    boxes = box_decode(box_deltas, proposals, weights).reshape(-1, K, 4)[:, 1:].reshape(-1, 4)
    boxes = clip_boxes_to_image(boxes, image_size)
    labels = xp.tile(xp.arange(1, K), P)
    scores = scores[:, 1:].reshape(-1)
    keep = xp.nonzero(scores > score_threshold)[0]
    keep = keep[remove_small_boxes(boxes[keep], 1e-2)]
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_threshold)[:detections_per_image]
    return dict(boxes=boxes[keep], scores=scores[keep], labels=labels[keep])


def detection_masks(mask_logits, labels, boxes, image_size, threshold=0.5):
    """Binary image masks of D detections from the mask head (slides "K (m x m) sigmoid outputs", "Paste Back").

    mask_logits : D x K x m x m float, every class's mask logits for each detection
    labels      : D int, each detection's class: only that class's mask is used
    boxes       : D x 4 float, each detection's box in image pixels
    image_size  : ``(H, W)``
    Returns D x H x W bool: ``sigmoid(logit) >= threshold`` after pasting the probabilities into the box
    (``heads.paste_masks``, bilinear).
    """
    xp = backend.get_array_module(mask_logits)
    D = mask_logits.shape[0]
    logits = mask_logits[xp.arange(D), labels] if D else mask_logits[:, 0]
    probs = 1.0 / (1.0 + xp.exp(-logits))
    return paste_masks(probs, boxes, image_size) >= threshold
