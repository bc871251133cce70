"""Stage 8 of the lecture: the whole Mask R-CNN, its forward, losses and hand-written backward, and inference.

    image -> Backbone -> C2, C3, C4                                         (backbone.py)
          C4 -> RPNHead -> objectness, deltas on the anchors -> proposals    (heads.py, rpn.py; no gradient)
          C2, C3, C4 -> FPN-lite -> P3 (stride 8), P2 (stride 4)             (backbone.py)
          P3, proposals -> RoIAlign 7 x 7 -> BoxHead -> K + 1 softmax, class-specific deltas
          P2, positive proposals -> RoIAlign 14 x 14 -> MaskHead -> K masks of 28 x 28
    L = L_cls + L_box + L_mask + L_rpn_objectness + L_rpn_box     (slide "One net, four losses", + mask)

The backward runs the same graph in reverse: each head hands back the gradient of its RoI features,
``roi_align_backward`` scatters it onto P3 and P2, the FPN splits it between C2, C3 and C4, the RPN head adds
its own gradient to C4, and the backbone takes both. Anchor labels, proposals and sampled RoIs carry no
gradient, as in the paper. ``losses`` runs the forward half alone (the validation losses); inference ends in
``postprocess.py``.

Sizes suit 128 x 128 shapes images (objects of 40 to 64 px): anchors of 40, 56, 72 px on the stride-16 grid,
P3 (stride 8) for boxes and P2 (stride 4) for masks. Every size, and every switch of the paper's ablations
(Table 2: ``roi_op``, ``mask_loss``, ``mask_head``, ``box_loss``, ``backbone_stride``), is a ``ModelConfig`` field.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import accumulate
from typing import Any, NamedTuple

from . import backend
from ._validate import check_boxes
from .anchors import _generate_anchors
from .backbone import STRIDES, Backbone, FPNLite
from .boxes import BOX_HEAD_WEIGHTS
from .heads import BoxHead, MaskHead, MLPMaskHead, RPNHead
from .inputs import check_config, check_images, check_targets
from .losses import _sigmoid_mask_loss, _softmax_mask_loss
from .matching import _sample_mask_rois_batch
from .nn import Module
from .postprocess import detection_masks, postprocess_detections, softmax_as_sigmoid_logits
from .roi import (_align_plan, _roi_align_backward_planned, _roi_align_planned, _roi_pool, _roi_pool_backward,
                  rois_from_boxes)
from .roi_heads import _box_head_targets_batch, _fast_rcnn_loss, _mask_targets
from .rpn import _generate_proposals_batch, _rpn_loss, _rpn_targets_batch

__all__ = ["ModelConfig", "MaskRCNN", "Features", "PoolCache", "HeadGradients"]


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


class Features(NamedTuple):
    """The maps each part reads: the RPN the backbone's top (C4), the box head P3, the mask head P2 (all the
    top map without the FPN; P3 for both heads with ``mask_stride`` 8)."""
    rpn: Any
    box: Any
    mask: Any


class PoolCache(NamedTuple):
    """What ``_pool_backward`` needs: the RoIs (R x 5), RoIPool's argmax (None for RoIAlign), the map's shape,
    the output size, the map's stride and RoIAlign's ``AlignPlan`` (None for RoIPool)."""
    rois: Any
    argmax: Any
    shape: tuple
    size: int
    stride: int
    plan: Any


class HeadGradients(NamedTuple):
    """What the forward half of a training step hands to the backward half: the losses' gradients with
    respect to the heads' outputs (shaped as those outputs) and the RoI pooling caches that lead back to the maps.
    """
    objectness: Any           # dL / d(the RPN's objectness logits)
    deltas: Any               # dL / d(the RPN's box deltas)
    class_logits: Any         # R x K: dL / d(the box head's class logits)
    box_deltas: Any           # R x 4K: dL / d(the box head's box deltas)
    box_cache: PoolCache
    mask_logits: Any          # M x K x m x m: dL / d(the mask logits); None when no RoI trained the mask head
    mask_cache: Any           # the mask RoIs' PoolCache; None with mask_logits
    mask_map_shape: tuple     # the map the mask head reads (its gradient is zero without mask RoIs)


class MaskRCNN(Module):
    """Mask R-CNN with hand-written backward: ``loss_and_backward`` for training, ``losses`` for the validation
    losses (forward only), ``predict`` for inference."""

    def __init__(self, config=None, *, rng):
        super().__init__()
        self.config = cfg = config or ModelConfig()
        check_config(cfg)
        self._anchors = {}                                   # (backend, dtype) -> the anchors, made once
        self._pixel_arrays = {}                              # (backend, dtype) -> the pixel mean and std
        width2, width3, width4 = cfg.channels[1:]
        k = len(cfg.anchor_sizes) * len(cfg.anchor_ratios)
        self.backbone = Backbone(cfg.channels, cfg.groups, rng=rng, stride=cfg.backbone_stride)
        if cfg.fpn:
            self.fpn = FPNLite(width2, width3, width4, cfg.fpn_channels, cfg.mask_stride == STRIDES["P2"], rng=rng)
            self.box_stride, self.mask_stride = STRIDES["P3"], cfg.mask_stride
        else:
            self.box_stride = self.mask_stride = cfg.backbone_stride
        head_channels = cfg.fpn_channels if cfg.fpn else width4
        self.mask_size = 2 * cfg.mask_pool                     # the mask head upsamples its RoIs 2x
        self.rpn = RPNHead(width4, k, rng=rng)
        self.box_head = BoxHead(head_channels, cfg.box_pool, cfg.box_hidden, cfg.num_classes, rng=rng)
        if cfg.mask_head == "mlp":
            self.mask_head = MLPMaskHead(head_channels, cfg.mask_pool, cfg.mask_mlp_hidden, cfg.num_classes,
                                         self.mask_size, rng=rng)
        else:
            self.mask_head = MaskHead(head_channels, cfg.mask_channels, cfg.mask_convs, cfg.num_classes, rng=rng)

    # ---------------------------------------------------------------------------------------------------
    def anchors(self, dtype="float32"):
        """The A x 4 anchors of the RPN's grid. They depend on the config alone, so each backend and dtype's are
        made once and kept (read-only: every step reads the same array)."""
        key = (backend.name, str(dtype))
        if key not in self._anchors:
            cfg = self.config
            anchors = _generate_anchors(
                (cfg.image_size, cfg.image_size), float(cfg.backbone_stride), [float(s) for s in cfg.anchor_sizes],
                [float(r) for r in cfg.anchor_ratios], float(cfg.anchor_offset), dtype)
            if backend.name == "numpy":
                anchors.flags.writeable = False      # shared by every step: a write would be a bug
            self._anchors[key] = anchors
        return self._anchors[key]

    def _pixel_stats(self):
        """The config's pixel mean and std as arrays of the backend and the parameters' dtype, made once each."""
        key = (backend.name, str(self.dtype))
        if key not in self._pixel_arrays:
            xp = backend.xp
            self._pixel_arrays[key] = tuple(xp.asarray(v, dtype=self.dtype)
                                            for v in (self.config.pixel_mean, self.config.pixel_std))
        return self._pixel_arrays[key]

    @property
    def dtype(self):
        """The parameters' float dtype (float32; float64 for gradient checks)."""
        return self.backbone.stage1[0].params["weight"].dtype

    def normalize(self, images):
        """N x H x W x 3 uint8 -> N x 3 x H x W float (the parameters' dtype), centred and scaled."""
        xp = backend.xp
        mean, std = self._pixel_stats()
        # channels first before the arithmetic, in memory too (order="C": astype would keep the pixels' H x W x 3
        # layout), so that a per-channel mean broadcasts over whole image planes
        x = xp.asarray(images).transpose(0, 3, 1, 2).astype(self.dtype, order="C")
        x /= 255.0                                 # in place: the same operations as new arrays
        x -= mean[:, None, None]
        x /= std[:, None, None]
        return x

    def _features(self, x):
        c2, c3, top = self.backbone.forward(x)
        if not self.config.fpn:
            return Features(top, top, top)
        p2, p3 = self.fpn.forward((c2, c3, top))
        return Features(top, p3, p3 if p2 is None else p2)

    def _features_backward(self, dbox_map, dmask_map, dtop, need_dx=True):
        """Send the heads' map gradients (and the RPN's, ``dtop``) back through the FPN and the backbone;
        returns the gradient of the normalized images, N x 3 x H x W (``explain`` reads it), or None with
        ``need_dx=False`` (training)."""
        if not self.config.fpn:
            return self.backbone.backward((None, None, dtop + dbox_map + dmask_map), need_dx)
        if self.fpn.with_p2:
            dp2, dp3 = dmask_map, dbox_map
        else:                                 # both heads read P3
            dp2, dp3 = None, dbox_map + dmask_map
        dc2, dc3, dtop_fpn = self.fpn.backward((dp2, dp3))
        return self.backbone.backward((dc2, dc3, dtop + dtop_fpn), need_dx)

    def _proposals(self, anchors, objectness, deltas, post_nms):
        cfg = self.config
        size = (cfg.image_size, cfg.image_size)
        return _generate_proposals_batch(anchors, objectness, deltas, size, int(cfg.rpn_pre_nms),
                                         int(post_nms), float(cfg.rpn_nms), 1e-3)

    def _pool(self, fmap, stride, boxes_per_image, size):
        """RoIAlign (or RoIPool) of each image's boxes on a map of this stride -> (features, ``PoolCache``)."""
        return self._pool_rois(fmap, stride, rois_from_boxes(boxes_per_image, fmap.dtype), size,
                               max((len(b) for b in boxes_per_image), default=0))

    def _pool_rois(self, fmap, stride, rois, size, most):
        """``_pool`` of R x 5 RoIs, of which no image has more than ``most`` (None: unknown, read back).
        RoIAlign's interpolation matrices are made once, here, and the backward reads them from the cache."""
        if self.config.roi_op == "pool":
            feats, argmax = _roi_pool(fmap, rois, (size, size), 1 / stride, "caffe")
            return feats, PoolCache(rois, argmax, fmap.shape, size, stride, None)
        plan = _align_plan(rois, fmap.shape, (size, size), 1 / stride, self.config.sampling_ratio, True, fmap.dtype,
                           most, in_order=True)
        return _roi_align_planned(fmap, plan), PoolCache(rois, None, fmap.shape, size, stride, plan)

    def _pool_backward(self, dfeats, cache):
        if cache.argmax is not None:
            return _roi_pool_backward(dfeats, cache.argmax, cache.shape, cache.rois)
        return _roi_align_backward_planned(dfeats, cache.plan)

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

        The images, targets (and proposals) are checked here, once; everything after calls the stages' cores,
        which check nothing: the library made every array it passes on (see ``_validate``).
        """
        images, targets, proposals = self._checked(images, targets, proposals)
        return self._loss_and_backward(images, targets, rng, proposals)

    def losses(self, images, targets, rng, proposals=None):
        """The five losses and their sum, forward only: the validation losses.

        Same arguments and result as ``loss_and_backward``, which it equals for the same ``rng`` state (the
        samplers draw the same anchors and RoIs), but nothing is sent backward: no gradient is accumulated, the
        gradients the modules hold are left as they are, and no layer keeps a cache (the model runs in eval
        mode, which also drops the caches of a forward still waiting for its backward, then returns to the
        mode it was in).
        """
        images, targets, proposals = self._checked(images, targets, proposals)
        return self._losses(images, targets, rng, proposals)

    def _checked(self, images, targets, proposals):
        images = check_images(images)
        targets = check_targets(targets, len(images), self.config)
        if proposals is not None:
            proposals = [check_boxes(p, f"proposals[{i}]") for i, p in enumerate(proposals)]
        return images, targets, proposals

    def _loss_and_backward(self, images, targets, rng, proposals):
        losses, head_grads = self._forward_losses(images, targets, rng, proposals)
        self._backward_losses(head_grads)
        return losses

    def _losses(self, images, targets, rng, proposals):
        was_training = self.training
        self.train(False)
        try:
            losses, _ = self._forward_losses(images, targets, rng, proposals)
        finally:
            self.train(was_training)
        return losses

    def _forward_losses(self, images, targets, rng, proposals):
        """The forward half of a training step -> (the losses dict, the ``HeadGradients`` the backward half
        starts from). Each loss comes with its gradient with respect to the head's output (``losses.py``)."""
        cfg = self.config
        xp = backend.xp
        maps = self._features(self.normalize(images))

        # RPN: labels on the anchors, the loss, and the proposals (which carry no gradient)
        objectness, deltas = self.rpn.forward(maps.rpn)
        anchors = self.anchors()
        labels, reg = _rpn_targets_batch(anchors, [t.boxes.astype(anchors.dtype, copy=False) for t in targets], rng,
                                         cfg.rpn_batch, cfg.rpn_positive_fraction)
        l_obj, l_rpn_box, dobj, ddeltas = _rpn_loss(objectness, deltas, labels.astype(objectness.dtype, copy=False),
                                                    reg.astype(deltas.dtype, copy=False))
        if proposals is None:
            proposals = self._proposals(anchors, objectness, deltas, cfg.rpn_post_nms_train)

        # box head on sampled proposals
        gt_boxes = [t.boxes.astype(p.dtype, copy=False) for p, t in zip(proposals, targets)]
        sampled, num_positive = _box_head_targets_batch(proposals, gt_boxes, [t.labels for t in targets], rng,
                                                        cfg.roi_batch, cfg.roi_positive_fraction, 0.5, 0.5,
                                                        BOX_HEAD_WEIGHTS)
        box_feats, box_cache = self._pool(maps.box, self.box_stride, [s.rois for s in sampled], cfg.box_pool)
        class_logits, box_deltas = self.box_head.forward(box_feats)
        roi_labels = xp.concatenate([s.labels for s in sampled])
        l_cls, l_box, dlogits, dbox = _fast_rcnn_loss(
            class_logits, box_deltas, roi_labels, xp.concatenate([s.regression_targets for s in sampled]),
            cfg.box_loss, box_cache.rois[:, 1:], BOX_HEAD_WEIGHTS)
        l_box, dbox = cfg.box_loss_weight * l_box, cfg.box_loss_weight * dbox

        # mask head on the positive RoIs: each learns the mask of its own ground truth, in its own box
        cap = cfg.mask_rois_per_image
        ends = list(accumulate(len(s.labels) for s in sampled))
        positive = xp.split(roi_labels > 0, ends[:-1])         # each image's RoIs matched to an object (views)
        chosen = xp.concatenate(_sample_mask_rois_batch(positive, cap, rng, num_positive))
        mask_rois = box_cache.rois[chosen]                    # R_m x 5, read from the box head's RoIs
        l_mask, dmask, mask_cache = 0.0, None, None
        if mask_rois.shape[0]:                                # its size is known: no read back
            mask_t = self._mask_targets(targets, [s.matched_gt_index for s in sampled], chosen, mask_rois[:, 1:],
                                        (self.mask_size, self.mask_size))
            # at most `cap` RoIs an image (the table's width, so nothing is read back to learn it)
            mask_feats, mask_cache = self._pool_rois(maps.mask, self.mask_stride, mask_rois, cfg.mask_pool,
                                                     cap if cap > 0 else None)
            mask_logits = self.mask_head.forward(mask_feats)
            mask_loss = _softmax_mask_loss if cfg.mask_loss == "softmax" else _sigmoid_mask_loss
            l_mask, dmask = mask_loss(mask_logits, roi_labels[chosen], mask_t.astype(mask_logits.dtype, copy=False))
        # the five losses come back to the host together: one wait for the device instead of five
        parts = backend.to_host(xp.stack([xp.asarray(v) for v in (l_cls, l_box, l_mask, l_obj, l_rpn_box)]))
        losses = dict(zip(("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"),
                          (float(v) for v in parts)))
        losses["loss"] = sum(losses.values())
        return losses, HeadGradients(dobj, ddeltas, dlogits, dbox, box_cache, dmask, mask_cache, maps.mask.shape)

    @staticmethod
    def _mask_targets(targets, matched_per_image, chosen, boxes, size):
        """The m x m mask target of every mask RoI of the batch, in one RoIAlign: the images' ground-truth masks
        stacked (G = sum G_i), each RoI's matched index shifted by the masks of the images before its own.
        matched_per_image: each image's R_i matched indices; chosen: R bool over all of them; boxes: R_m x 4."""
        xp = backend.xp
        counts = [len(t.masks) for t in targets]
        starts = [sum(counts[:i]) for i in range(len(counts))]
        matched = xp.concatenate([m + start for m, start in zip(matched_per_image, starts)])[chosen]
        gt_masks = xp.concatenate([t.masks for t in targets])
        return _mask_targets(gt_masks, boxes, matched, size, True)

    def _backward_losses(self, grads):
        """The backward half: from the ``HeadGradients`` through the heads, RoIAlign, the FPN and the backbone
        (gradients accumulate in the modules). The images' gradient is not needed, so it is not computed."""
        dbox_map = self._pool_backward(self.box_head.backward((grads.class_logits, grads.box_deltas)),
                                       grads.box_cache)
        if grads.mask_logits is None:        # no positive RoI: the mask head's map gets no gradient
            dmask_map = backend.xp.zeros(grads.mask_map_shape, dtype=dbox_map.dtype)
        else:
            dmask_map = self._pool_backward(self.mask_head.backward(grads.mask_logits), grads.mask_cache)
        self._features_backward(dbox_map, dmask_map, self.rpn.backward((grads.objectness, grads.deltas)),
                                need_dx=False)

    # ---------------------------------------------------------------------------------------------------
    def predict(self, images):
        """Detections of each image: a list of dicts with ``boxes`` D x 4, ``scores`` D, ``labels`` D (1..K-1),
        ``masks`` D x H x W bool (pasted back and thresholded at 0.5), all on the backend.
        """
        images = check_images(images)
        return self._predict(images)

    def _mask_logits(self, mask_map, boxes_per_image):
        """The mask head on each image's detection boxes -> D x K x m x m logits (D = all boxes, image 0's
        first), read out as sigmoid logits whichever mask loss trained the model (``softmax_as_sigmoid_logits``)."""
        cfg = self.config
        feats, _ = self._pool(mask_map, self.mask_stride, boxes_per_image, cfg.mask_pool)
        if not feats.shape[0]:
            return backend.xp.zeros((0, cfg.num_classes, self.mask_size, self.mask_size), dtype=mask_map.dtype)
        logits = self.mask_head.forward(feats)
        return softmax_as_sigmoid_logits(logits) if cfg.mask_loss == "softmax" else logits

    def _predict(self, images):
        cfg = self.config
        size = (cfg.image_size, cfg.image_size)
        was_training = self.training
        self.train(False)
        try:
            maps = self._features(self.normalize(images))
            objectness, deltas = self.rpn.forward(maps.rpn)
            proposals = self._proposals(self.anchors(), objectness, deltas, cfg.rpn_post_nms_test)
            box_feats, box_cache = self._pool(maps.box, self.box_stride, proposals, cfg.box_pool)
            class_logits, box_deltas = self.box_head.forward(box_feats)
            image_of = box_cache.rois[:, 0]
            detections = [postprocess_detections(class_logits[image_of == i], box_deltas[image_of == i],
                                                 proposals[i], size, cfg.score_threshold, cfg.detection_nms,
                                                 cfg.detections_per_image, BOX_HEAD_WEIGHTS)
                          for i in range(len(images))]
            mask_logits = self._mask_logits(maps.mask, [d["boxes"] for d in detections])
        finally:
            self.train(was_training)
        start = 0
        for d in detections:
            n = len(d["boxes"])
            d["masks"] = detection_masks(mask_logits[start:start + n], d["labels"], d["boxes"], size)
            start += n
        return detections
