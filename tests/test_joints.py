"""The joints of the model: wherever ``model.py`` hands one stage's output to the next (issue 15, item 6).

The stages have their own tests; these check what passes between them. Each test watches what reaches a stage
(its arguments, recorded by wrapping the stage) and recomputes it from the lecture's definition with a few lines
of NumPy of its own, never with the library's code for the same step:

    anchors  <-> RPN output layout      anchor a = cell (a // k) // gw, (a // k) % gw, base anchor a % k
    RPN labels, proposals               each anchor with its own objectness, deltas and its image's ground truth
    RoIs     -> image index, level      RoIs of image i pooled from image i's map: P3 (box head), P2 (mask head)
    proposals -> box targets            IoU >= 0.5 with the image's ground truth, deltas with weights (10, 10, 5, 5)
    class-specific deltas               class k's box from columns 4k..4k+3, in the loss and in the detections
    mask targets <-> paste-back         both with pixel i centred at i + 0.5
    mask read-outs                      sigmoid of the own class, or the softmax over the K channels
    per-class post-processing           softmax scores, threshold, NMS within each class, the best few

A small float64 model (``SMALL``) on two 64 x 64 images: a rectangle, a disk or a triangle each.
"""
import math

import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu import model as model_module
from mrcnn_edu.heads import paste_masks
from mrcnn_edu.model import MaskRCNN, ModelConfig
from mrcnn_edu.postprocess import postprocess_detections

SIZE = 64
SMALL = dict(image_size=SIZE, channels=(8, 8, 16, 16), groups=4, fpn_channels=16, anchor_sizes=(24.0, 40.0),
             box_hidden=32, mask_channels=8, mask_convs=1,
             roi_batch=64,             # room for every RoI: the box head sees all proposals and ground truth
             mask_rois_per_image=0)    # and the mask head every positive one, so nothing here is random
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)   # the box head's (wx, wy, ww, wh) in the lecture and torchvision
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
CLIP = math.log(1000.0 / 16)           # the largest dw, dh before exp


# ------------------------------------------------------------------------------------------------------
# The lecture's definitions, in plain NumPy (boxes are (x1, y1, x2, y2), pixel i spans [i, i + 1)).

def iou(a, b):
    """N x M IoU of boxes a (N x 4) and b (M x 4)."""
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def encode(ref, gt, weights):
    """Deltas (N x 4) that move boxes ``ref`` onto ``gt`` (both N x 4): dx = wx (cx_g - cx_r) / w_r, ..."""
    wx, wy, ww, wh = weights
    rw, rh, gw, gh = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1], gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    return np.stack([wx * ((gt[:, 0] + gw / 2) - (ref[:, 0] + rw / 2)) / rw,
                     wy * ((gt[:, 1] + gh / 2) - (ref[:, 1] + rh / 2)) / rh,
                     ww * np.log(gw / rw), wh * np.log(gh / rh)], axis=1)


def decode(deltas, ref, weights):
    """Boxes (N x 4) from deltas (N x 4) applied to ``ref`` (N x 4), dw and dh clamped at log(1000 / 16)."""
    wx, wy, ww, wh = weights
    w, h = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
    cx, cy = ref[:, 0] + w / 2 + deltas[:, 0] / wx * w, ref[:, 1] + h / 2 + deltas[:, 1] / wy * h
    w, h = w * np.exp(np.minimum(deltas[:, 2] / ww, CLIP)), h * np.exp(np.minimum(deltas[:, 3] / wh, CLIP))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def clip_to_image(boxes):
    return np.clip(boxes, 0, SIZE)


def greedy_nms(boxes, scores, threshold):
    """Indices kept by "take the best, drop every box overlapping it by more than ``threshold``, repeat"."""
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if not keep or iou(boxes[i:i + 1], boxes[keep]).max() <= threshold:
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def bilinear(fmap, y, x):
    """C x H x W ``fmap`` read at array coordinates (y, x) (any shape S): C x S. RoIAlign's border rule: a point
    more than one pixel outside the map reads 0, a point inside that margin the nearest edge."""
    H, W = fmap.shape[1:]
    outside = (y < -1) | (y > H) | (x < -1) | (x > W)
    y, x = np.clip(y, 0, H - 1), np.clip(x, 0, W - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, H - 1), np.minimum(x0 + 1, W - 1)
    ly, lx = y - y0, x - x0
    value = (fmap[:, y0, x0] * (1 - ly) * (1 - lx) + fmap[:, y0, x1] * (1 - ly) * lx
             + fmap[:, y1, x0] * ly * (1 - lx) + fmap[:, y1, x1] * ly * lx)
    return np.where(outside, 0.0, value)


def roi_align_by_hand(maps, rois, size, stride, sampling_ratio):
    """RoIAlign as the lecture draws it: R x C x size x size from maps N x C x H x W and rois R x 5 (image index,
    box in image pixels). Bin (v, u) of a RoI averages n x n bilinear samples of ITS image's map at the box points
    ``x1 + (u + (i + 0.5) / n) w / size`` (``y`` likewise), in map pixels ``x / stride``, map pixel j centred at
    j + 0.5. n = ``sampling_ratio``, or ``ceil(w / stride / size)`` when it is -1 (adaptive)."""
    out = []
    for image, *box in rois:
        x1, y1, x2, y2 = np.asarray(box) / stride
        axes = []
        for start, length in ((y1, y2 - y1), (x1, x2 - x1)):
            n = sampling_ratio if sampling_ratio > 0 else max(math.ceil(length / size), 1)
            steps = np.arange(size)[:, None] + (np.arange(n)[None, :] + 0.5) / n
            axes.append(start + steps * length / size - 0.5)             # size x n, array coordinates
        ys, xs = axes
        samples = bilinear(maps[int(image)], ys[:, :, None, None], xs[None, None, :, :])   # C x size x n x size x n
        out.append(samples.mean(axis=(2, 4)))
    return np.stack(out) if out else np.zeros((0, maps.shape[1], size, size))


def paste_by_hand(mask, box):
    """An m x m mask resampled into its box of the SIZE x SIZE image (slide "Paste Back"): image pixel (y, x) reads
    the mask, extended by zeros, bilinearly at ``u = (x + 0.5 - x1) / w * m - 0.5`` (``v`` likewise)."""
    m = mask.shape[0]
    x1, y1, x2, y2 = box
    u = (np.arange(SIZE) + 0.5 - x1) / (x2 - x1) * m - 0.5
    v = (np.arange(SIZE) + 0.5 - y1) / (y2 - y1) * m - 0.5
    padded = np.pad(mask, 1)[None]                       # the zero border makes RoIAlign's edge rule "zeros outside"
    return bilinear(padded, v[:, None] + 1, u[None, :] + 1)[0]


def lecture_proposals(anchors, objectness, deltas, config):
    """One image's proposals: the top anchors by objectness, each decoded with ITS deltas, clipped, NMS."""
    top = np.argsort(-objectness, kind="stable")[:config.rpn_pre_nms]
    boxes = clip_to_image(decode(deltas[top], anchors[top], RPN_WEIGHTS))
    big = np.all(boxes[:, 2:] - boxes[:, :2] >= 1e-3, axis=1)
    boxes, scores = boxes[big], objectness[top][big]
    return boxes[greedy_nms(boxes, scores, config.rpn_nms)[:config.rpn_post_nms_test]]


def lecture_detections(class_logits, box_deltas, proposals, config):
    """One image's detections (slide "Inference"): every proposal gives one candidate per object class k, scored
    by the softmax and boxed by class k's deltas (columns 4k..4k+3); scores <= threshold and boxes under 0.01 px
    go; NMS within each class; the best ``detections_per_image`` stay. Returns (boxes, scores, labels)."""
    probs = softmax(class_logits, axis=1)
    found = []
    for k in range(1, class_logits.shape[1]):
        boxes = clip_to_image(decode(box_deltas[:, 4 * k:4 * k + 4], proposals, BOX_WEIGHTS))
        ok = (probs[:, k] > config.score_threshold) & np.all(boxes[:, 2:] - boxes[:, :2] >= 1e-2, axis=1)
        boxes, scores = boxes[ok], probs[ok, k]
        found += [(scores[i], k, boxes[i]) for i in greedy_nms(boxes, scores, config.detection_nms)]
    found = sorted(found, key=lambda f: -f[0])[:config.detections_per_image]
    return (np.array([f[2] for f in found]).reshape(-1, 4), np.array([f[0] for f in found]),
            np.array([f[1] for f in found], dtype=np.int64))


# ------------------------------------------------------------------------------------------------------
# Data and model.

def scene(rng, classes):
    """A SIZE x SIZE image with two objects side by side, away from the border: a rectangle (class 1), a disk
    (class 2) or a triangle (class 3), one in each half. Returns the image and its targets (tight boxes)."""
    image = np.full((SIZE, SIZE, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    masks = []
    for half, c in enumerate(classes):
        w, h = rng.integers(14, 24, 2)
        x1, y1 = half * SIZE // 2 + rng.integers(4, SIZE // 2 - 4 - w), rng.integers(4, SIZE - 4 - h)
        if c == 1:
            mask = (xx > x1) & (xx < x1 + w) & (yy > y1) & (yy < y1 + h)
        elif c == 2:
            mask = (xx - x1 - w / 2) ** 2 / (w / 2) ** 2 + (yy - y1 - h / 2) ** 2 / (h / 2) ** 2 < 1
        else:
            mask = (yy > y1) & (yy < y1 + h) & (abs(xx - x1 - w / 2) < (yy - y1) * w / (2 * h))
        image[mask] = rng.integers(0, 256, 3)
        masks.append(mask)
    masks = np.stack(masks)
    cols, rows = masks.any(axis=1), masks.any(axis=2)
    boxes = np.array([[c.argmax(), r.argmax(), SIZE - c[::-1].argmax(), SIZE - r[::-1].argmax()]
                      for c, r in zip(cols, rows)], dtype=np.float64)
    return image, dict(boxes=boxes, labels=np.array(classes, dtype=np.int64), masks=masks)


def two_images(seed=0):
    rng = np.random.default_rng(seed)
    first, second = scene(rng, (1, 2)), scene(rng, (3, 1))
    return np.stack([first[0], second[0]]), [first[1], second[1]]


def proposals_for(targets, seed=0):
    """Per image: three jittered copies of each ground-truth box, then six random boxes (P x 4 float64)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in targets:
        near = np.repeat(t["boxes"], 3, axis=0) + rng.normal(0, 2.5, (3 * len(t["boxes"]), 4))
        corner = rng.uniform(0, SIZE - 24, (6, 2))
        far = np.concatenate([corner, corner + rng.uniform(10, 24, (6, 2))], axis=1)
        boxes = np.concatenate([near, far])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 4)
        out.append(clip_to_image(boxes))
    return out


def host(a):
    return backend.to_host(a)


class Recorder:
    """Wraps stages so that each call's arguments and result are kept: ``calls[name]`` is a list of
    ``(args, result)``."""

    def __init__(self, patch):
        self.patch, self.calls = patch, {}

    def wrap(self, owner, attr, name=None):
        original, name = getattr(owner, attr), name or attr

        def recorded(*args):
            result = original(*args)
            self.calls.setdefault(name, []).append((args, result))
            return result
        self.patch.setattr(owner, attr, recorded)

    def one(self, name):
        assert len(self.calls.get(name, [])) == 1, f"{name}: expected one call, got {len(self.calls.get(name, []))}"
        return self.calls[name][0]


def small_model(seed=1, **changes):
    """SMALL in float64, its last layers livened up: a fresh model's are near-constant (every class would score
    1/K, every box sit on its proposal, every mask be 0.5). The class scores are centred on the test images, so
    that no class wins every RoI."""
    model = MaskRCNN(ModelConfig(**dict(SMALL, **changes)), rng=np.random.default_rng(seed))
    for m in model.modules():
        m.params = {k: v.astype(np.float64) for k, v in m.params.items()}
    last_mask = model.mask_head.fcn.layers[-1] if hasattr(model.mask_head, "fcn") else model.mask_head.mlp.layers[-1]
    for layer, scale in ((model.box_head.cls_score, 40.0), (model.box_head.bbox_pred, 300.0), (last_mask, 3.0)):
        layer.params["weight"] *= scale
    maps, stride = pyramid(model, two_images()[0]), model.box_stride
    anchors = clip_to_image(host(model.anchors("float64")))
    rois = np.concatenate([np.c_[np.full(len(anchors), n), anchors] for n in range(2)])
    model.train(False)
    features = roi_align_by_hand(maps["P3" if model.config.fpn else "C4"], rois, model.config.box_pool, stride,
                                 model.config.sampling_ratio)
    logits = host(model.box_head.forward(features)[0])
    model.train(True)
    model.box_head.cls_score.params["bias"] -= logits.mean(axis=0)
    return model


def pyramid(model, images):
    """The maps the lecture's model has, computed from its parts: C4 (stride 16), P3 (stride 8), P2 (stride 4)."""
    was_training = model.training
    model.train(False)
    c2, c3, c4 = model.backbone.forward(model.normalize(images))
    p2, p3 = model.fpn.forward((c2, c3, c4)) if model.config.fpn else (None, None)
    model.train(was_training)
    return dict(C4=host(c4), P3=None if p3 is None else host(p3), P2=None if p2 is None else host(p2))


def record_training_step(mask_loss):
    images, targets = two_images()
    proposals = proposals_for(targets)
    model = small_model(mask_loss=mask_loss)
    maps = pyramid(model, images)
    with pytest.MonkeyPatch.context() as patch:
        rec = Recorder(patch)
        for part in ("rpn", "box_head", "mask_head"):
            rec.wrap(getattr(model, part), "forward", part)
        for stage in ("_rpn_loss", "_fast_rcnn_loss", "_sigmoid_mask_loss", "_softmax_mask_loss"):
            rec.wrap(model_module, stage)
        losses = model.loss_and_backward(images, targets, np.random.default_rng(5), proposals=proposals)
    return dict(model=model, images=images, targets=targets, proposals=proposals, maps=maps, losses=losses,
                calls=rec.calls)


def record_prediction(**changes):
    images, targets = two_images()
    model = small_model(**changes)
    maps = pyramid(model, images)
    with pytest.MonkeyPatch.context() as patch:
        rec = Recorder(patch)
        for part in ("rpn", "box_head", "mask_head"):
            rec.wrap(getattr(model, part), "forward", part)
        rec.wrap(model, "_proposals")
        detections = model.predict(images)
    detections = [{k: host(v) for k, v in d.items()} for d in detections]
    return dict(model=model, images=images, maps=maps, detections=detections, rec=rec)


@pytest.fixture(scope="module", params=["sigmoid", "softmax"])
def step(request):
    """One training step with given proposals, every stage's inputs recorded (both mask losses)."""
    return record_training_step(request.param)


@pytest.fixture(scope="module", params=["sigmoid", "softmax"])
def prediction(request):
    """``predict`` on two images, every stage's inputs recorded (both mask losses)."""
    return record_prediction(mask_loss=request.param)


def expected_rois(step):
    """Per image, by the lecture: every proposal then every ground-truth box (all fit in the mini-batch), its
    label (the class of the ground truth it overlaps by IoU >= 0.5, else 0) and that ground truth's index."""
    out = []
    for p, t in zip(step["proposals"], step["targets"]):
        rois = np.concatenate([p, t["boxes"]])
        overlaps = iou(rois, t["boxes"])
        matched = overlaps.argmax(axis=1)
        out.append((rois, np.where(overlaps.max(axis=1) >= 0.5, t["labels"][matched], 0), matched))
    return out


# ------------------------------------------------------------------------------------------------------
# Joint 1: the anchors and the RPN's output layout.

def anchor_cells(model):
    """For each anchor, from its geometry alone: the grid cell (i, j) its centre lies in and its base anchor b
    (ratio-major, then size, as the k channels of a cell are ordered). Returns three A int arrays."""
    cfg, stride = model.config, model.config.backbone_stride
    a = host(model.anchors("float64"))
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    i, j = np.floor((a[:, 1] + h / 2) / stride).astype(int), np.floor((a[:, 0] + w / 2) / stride).astype(int)
    ratio = np.abs(np.log(h / w)[:, None] - np.log(cfg.anchor_ratios)[None, :]).argmin(axis=1)
    size = np.abs(np.log(np.sqrt(w * h))[:, None] - np.log(cfg.anchor_sizes)[None, :]).argmin(axis=1)
    return i, j, ratio * len(cfg.anchor_sizes) + size


def test_rpn_outputs_line_up_with_the_anchor_grid():
    """Anchor a's objectness and deltas are the 1 x 1 convs' outputs at the cell its centre lies in, channel b
    (objectness) and channels 4b..4b+3 (deltas) for its base anchor b; the backward sends each anchor's gradient
    back to the same place. Three ratios and two sizes: k = 6 anchors a cell on a 4 x 4 grid."""
    model = small_model(anchor_ratios=(0.5, 1.0, 2.0))
    i, j, b = anchor_cells(model)
    assert len(set(zip(i, j, b))) == len(i) == 4 * 4 * 6          # every (cell, base anchor) exactly once
    c4 = np.random.default_rng(0).normal(0, 1, (2, 16, 4, 4))

    model.train(False)
    t = model.rpn.conv.forward(c4)
    raw_obj = host(model.rpn.cls_logits.forward(t))                     # N x k x 4 x 4
    raw_deltas = host(model.rpn.bbox_pred.forward(t))                   # N x 4k x 4 x 4
    model.train(True)
    obj, deltas = (host(x) for x in model.rpn.forward(c4))
    np.testing.assert_allclose(obj, raw_obj[:, b, i, j], rtol=1e-12, err_msg="objectness of anchor a")
    for c in range(4):
        np.testing.assert_allclose(deltas[:, :, c], raw_deltas[:, 4 * b + c, i, j], rtol=1e-12,
                                   err_msg=f"delta {'xywh'[c]} of anchor a")

    with pytest.MonkeyPatch.context() as patch:
        rec = Recorder(patch)
        rec.wrap(model.rpn.cls_logits, "backward", "obj")
        rec.wrap(model.rpn.bbox_pred, "backward", "deltas")
        rng = np.random.default_rng(1)
        dobj, ddeltas = rng.normal(0, 1, obj.shape), rng.normal(0, 1, deltas.shape)
        model.rpn.backward((dobj, ddeltas))
    got_obj, got_deltas = host(rec.one("obj")[0][0]), host(rec.one("deltas")[0][0])
    np.testing.assert_array_equal(got_obj[:, b, i, j], dobj, err_msg="gradient of anchor a's objectness")
    for c in range(4):
        np.testing.assert_array_equal(got_deltas[:, 4 * b + c, i, j], ddeltas[:, :, c], err_msg="delta gradient")


def test_rpn_labels_belong_to_each_anchor_and_its_own_image(step):
    """What reaches the RPN loss: the head's outputs unchanged, and labels and targets of image i made from
    image i's ground truth: each ground truth's best anchor is an object, an object overlaps some ground truth
    by IoU >= 0.7 or is its best anchor, a not-object overlaps none by 0.3, and an object's target is
    encode(anchor, its best ground truth) with weights 1."""
    (args, _), = step["calls"]["_rpn_loss"]
    objectness, deltas, labels, targets = (host(a) for a in args)
    (_, rpn_out), = step["calls"]["rpn"]
    np.testing.assert_array_equal(objectness, host(rpn_out[0]))
    np.testing.assert_array_equal(deltas, host(rpn_out[1]))
    anchors = host(step["model"].anchors("float64"))
    for n, t in enumerate(step["targets"]):
        overlaps = iou(t["boxes"], anchors)                        # G x A
        best_anchor = overlaps.argmax(axis=1)
        assert (labels[n, best_anchor] == 1).all(), f"image {n}: a ground truth's best anchor is not an object"
        is_best = (overlaps == overlaps.max(axis=1, keepdims=True)).any(axis=0)
        positive, negative = labels[n] == 1, labels[n] == 0
        assert ((overlaps.max(axis=0) >= 0.7) | is_best)[positive].all(), f"image {n}: an object overlaps nothing"
        assert (overlaps.max(axis=0) < 0.3)[negative].all() and negative.any(), f"image {n}: not-object labels"
        want = encode(anchors[positive], t["boxes"][overlaps.argmax(axis=0)[positive]], RPN_WEIGHTS)
        np.testing.assert_allclose(targets[n, positive], want, rtol=1e-5, atol=1e-5, err_msg=f"image {n} targets")


def test_proposals_decode_each_anchor_with_its_own_deltas():
    """predict's proposals: the top anchors of each image by its objectness, decoded with that anchor's deltas
    (weights 1), clipped, tiny boxes dropped, NMS at 0.7, the best ``rpn_post_nms_test``."""
    run = record_prediction()
    (_, (objectness, deltas)), = run["rec"].calls["rpn"]
    (_, proposals), = run["rec"].calls["_proposals"]
    anchors = host(run["model"].anchors("float64"))
    for n in range(len(run["images"])):
        want = lecture_proposals(anchors, host(objectness)[n], host(deltas)[n], run["model"].config)
        np.testing.assert_allclose(host(proposals[n]), want, rtol=1e-10, atol=1e-10, err_msg=f"image {n}")


# ------------------------------------------------------------------------------------------------------
# Joints 2 and 7: each RoI's image, and the level each head reads.

def test_training_rois_are_pooled_from_their_own_image_and_level(step):
    """The box head gets RoIAlign 7 x 7 of P3 (stride 8), the mask head RoIAlign 14 x 14 of P2 (stride 4), each
    RoI on its own image's map: image 0's RoIs first, then image 1's."""
    cfg = step["model"].config
    rois = expected_rois(step)
    box_rois = np.concatenate([np.c_[np.full(len(r), n), r] for n, (r, _, _) in enumerate(rois)])
    mask_rois = np.concatenate([np.c_[np.full((lab > 0).sum(), n), r[lab > 0]]
                                for n, (r, lab, _) in enumerate(rois)])
    (box_in, _), = step["calls"]["box_head"]
    (mask_in, _), = step["calls"]["mask_head"]
    np.testing.assert_allclose(host(box_in[0]), roi_align_by_hand(step["maps"]["P3"], box_rois, cfg.box_pool, 8,
                                                                  cfg.sampling_ratio), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(host(mask_in[0]), roi_align_by_hand(step["maps"]["P2"], mask_rois, cfg.mask_pool, 4,
                                                                   cfg.sampling_ratio), rtol=1e-9, atol=1e-12)


LEVELS = {   # ModelConfig changes -> (box head's map, its stride, mask head's map, its stride): the lecture's design
    "FPN, mask head on P2": (dict(), ("P3", 8, "P2", 4)),
    "FPN, mask head on P3": (dict(mask_stride=8), ("P3", 8, "P3", 8)),
    "no FPN": (dict(fpn=False), ("C4", 16, "C4", 16)),
}


@pytest.mark.parametrize("variant", LEVELS)
def test_each_head_reads_its_pyramid_level_in_predict(variant):
    """The RPN reads C4; the box head RoIAlign of its level at the proposals; the mask head RoIAlign of its level
    at the detections' boxes; each RoI on its own image's map."""
    changes, (box_level, box_stride, mask_level, mask_stride) = LEVELS[variant]
    run = record_prediction(**changes)
    cfg, maps, rec = run["model"].config, run["maps"], run["rec"]
    np.testing.assert_array_equal(host(rec.one("rpn")[0][0]), maps["C4"])
    (_, proposals), = rec.calls["_proposals"]
    rois = np.concatenate([np.c_[np.full(len(p), n), host(p)] for n, p in enumerate(proposals)])
    np.testing.assert_allclose(host(rec.one("box_head")[0][0]),
                               roi_align_by_hand(maps[box_level], rois, cfg.box_pool, box_stride, cfg.sampling_ratio),
                               rtol=1e-9, atol=1e-12)
    detected = [d["boxes"] for d in run["detections"]]
    assert all(len(b) for b in detected)
    rois = np.concatenate([np.c_[np.full(len(b), n), b] for n, b in enumerate(detected)])
    np.testing.assert_allclose(host(rec.one("mask_head")[0][0]),
                               roi_align_by_hand(maps[mask_level], rois, cfg.mask_pool, mask_stride,
                                                 cfg.sampling_ratio), rtol=1e-9, atol=1e-12)


def test_a_batch_predicts_what_each_image_predicts_alone():
    """Images do not talk to each other (GroupNorm is per image): whatever goes wrong with an RoI's image index
    shows as a batch whose second image is not predicted as it is alone."""
    images, _ = two_images()
    model = small_model()
    together = model.predict(images)
    for n in range(len(images)):
        alone = model.predict(images[n:n + 1])[0]
        assert len(alone["boxes"]) > 1
        for key in ("boxes", "scores", "labels", "masks"):
            got, want = host(together[n][key]).astype(np.float64), host(alone[key]).astype(np.float64)
            assert got.shape == want.shape, f"image {n} {key}: {got.shape} in the batch, {want.shape} alone"
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=f"image {n} {key}")


# ------------------------------------------------------------------------------------------------------
# Joints 3 and 4: proposals into box targets, and class-specific deltas.

def test_box_targets_label_and_encode_each_rois_own_ground_truth(step):
    """What reaches the box head's loss: each RoI (proposals then ground truth, image by image) labelled with the
    class of the image's ground truth it overlaps by IoU >= 0.5 (else background), and, when foreground, the
    deltas that move it onto that ground truth with weights (10, 10, 5, 5)."""
    (args, _), = step["calls"]["_fast_rcnn_loss"]
    labels, targets = host(args[2]), host(args[3])
    rois = expected_rois(step)
    want_labels = np.concatenate([lab for _, lab, _ in rois])
    np.testing.assert_array_equal(labels, want_labels)
    assert 0 < (want_labels > 0).sum() < len(want_labels)
    fg = want_labels > 0
    want = np.concatenate([encode(r, t["boxes"][m], BOX_WEIGHTS) for (r, _, m), t in zip(rois, step["targets"])])
    np.testing.assert_allclose(targets[fg], want[fg], rtol=1e-9, atol=1e-12)
    assert np.abs(want[fg]).max() > 0.5        # the jittered proposals need real corrections


def test_box_losses_read_each_rois_own_class_deltas(step):
    """L_cls = mean cross-entropy of the K + 1 softmax; L_box = sum over the foreground of smooth-L1 (beta 1/9)
    of its own class's deltas (columns 4k..4k+3) minus its targets, divided by the number of RoIs."""
    (_, (logits, deltas)), = step["calls"]["box_head"]
    logits, deltas = host(logits), host(deltas)
    rois = expected_rois(step)
    labels = np.concatenate([lab for _, lab, _ in rois])
    targets = np.concatenate([encode(r, t["boxes"][m], BOX_WEIGHTS) for (r, _, m), t in zip(rois, step["targets"])])
    log_p = np.log(softmax(logits, axis=1))
    fg = np.flatnonzero(labels > 0)
    own = np.stack([deltas[fg, 4 * labels[fg] + c] for c in range(4)], axis=1)
    diff, beta = np.abs(own - targets[fg]), 1 / 9
    smooth_l1 = np.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta).sum()
    assert step["losses"]["loss_classifier"] == pytest.approx(-log_p[np.arange(len(labels)), labels].mean(), rel=1e-9)
    assert step["losses"]["loss_box_reg"] == pytest.approx(smooth_l1 / len(labels), rel=1e-9)


def test_each_detection_decodes_its_own_class_deltas():
    """Worked example. Three 20 px proposals far apart, each with the same deltas: the background's moves the box
    left (never used), class 1's right by 0.2 w, class 2's down by 0.2 h, class 3's widens it 1.5x; every object
    class scores 0.3. So each proposal gives three detections, one per class, each in its own class's box."""
    proposals = np.array([[8.0, 4.0, 28.0, 24.0], [36.0, 4.0, 56.0, 24.0], [20.0, 40.0, 40.0, 60.0]])
    deltas = np.tile([-5.0, 0, 0, 0,  2.0, 0, 0, 0,  0, 2.0, 0, 0,  0, 0, 5 * math.log(1.5), 0], (3, 1))
    logits = np.log(np.tile([0.1, 0.3, 0.3, 0.3], (3, 1)))
    found = postprocess_detections(logits, deltas, proposals, (SIZE, SIZE), 0.05, 0.5, 100)
    shift = {1: [4, 0, 4, 0], 2: [0, 4, 0, 4], 3: [-5, 0, 5, 0]}     # class k's box is proposal + shift[k]
    want = sorted((k, tuple(p + shift[k])) for p in proposals for k in (1, 2, 3))
    got = sorted((int(k), tuple(np.round(b, 9))) for k, b in zip(host(found["labels"]), host(found["boxes"])))
    assert got == want
    np.testing.assert_allclose(host(found["scores"]), 0.3, rtol=1e-12)


# ------------------------------------------------------------------------------------------------------
# Joint 5: mask targets made with paste-back's pixel convention.

def test_mask_targets_sample_the_ground_truth_where_paste_back_puts_it(step):
    """Each positive RoI's target is its ground truth's mask RoIAligned into 28 x 28 with pixel i centred at
    i + 0.5, adaptive sampling: the convention paste-back draws with. So the target of a rectangle's own box,
    pasted back into that box and thresholded at 0.5, is the rectangle again, pixel for pixel (torchvision's
    unaligned targets, read half a pixel down and to the right, lose pixels along its bottom or right edge)."""
    name = "_softmax_mask_loss" if step["model"].config.mask_loss == "softmax" else "_sigmoid_mask_loss"
    (args, _), = step["calls"][name]
    mask_targets = host(args[2])
    m, want, first = step["model"].mask_size, [], 0
    for n, ((r, lab, matched), t) in enumerate(zip(expected_rois(step), step["targets"])):
        fg = lab > 0
        gt_maps = t["masks"][:, None].astype(np.float64)                  # G x 1 x H x W, at stride 1
        want.append(roi_align_by_hand(gt_maps, np.c_[matched[fg], r[fg]], m, 1, -1)[:, 0])
        rectangle = list(t["labels"]).index(1)
        own_box = len(r) - len(t["boxes"]) + rectangle                      # its ground-truth box, a RoI too
        target = mask_targets[first + fg[:own_box].sum()]                   # the library's target, pasted back
        pasted = host(paste_masks(target[None], r[own_box:own_box + 1], (SIZE, SIZE)))[0] >= 0.5
        np.testing.assert_array_equal(pasted, t["masks"][rectangle], err_msg=f"image {n}: rectangle round trip")
        first += fg.sum()
    np.testing.assert_allclose(mask_targets, np.concatenate(want), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------------
# Joint 6: the sigmoid and softmax read-outs.

def test_the_mask_loss_is_the_configured_one(step):
    """sigmoid: binary cross-entropy of each RoI's own class channel against its target, the mean over RoIs and
    pixels. softmax: per pixel a K-way softmax whose class is the RoI's class where the target is >= 0.5 and the
    background elsewhere, the mean over RoIs and pixels."""
    kind = step["model"].config.mask_loss
    called = [name for name in ("_sigmoid_mask_loss", "_softmax_mask_loss") if name in step["calls"]]
    assert called == [f"_{kind}_mask_loss"]
    (_, logits), = step["calls"]["mask_head"]
    logits = host(logits)
    (args, _), = step["calls"][called[0]]
    labels = np.concatenate([lab[lab > 0] for _, lab, _ in expected_rois(step)])
    np.testing.assert_array_equal(host(args[1]), labels)
    targets = host(args[2])
    rois = np.arange(len(labels))
    if kind == "sigmoid":
        z = logits[rois, labels]
        want = (np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z)))).mean()
    else:
        pixel_class = np.where(targets >= 0.5, labels[:, None, None], 0)
        log_p = np.log(softmax(logits, axis=1))
        want = -np.take_along_axis(log_p, pixel_class[:, None], axis=1).mean()
    assert step["losses"]["loss_mask"] == pytest.approx(want, rel=1e-9)


def test_predicted_masks_read_out_the_configured_probability(prediction):
    """Each detection's mask is its own class's probability pasted into its box, thresholded at 0.5: the sigmoid
    of that channel, or for a softmax-trained model that channel of the softmax over the K channels."""
    kind = prediction["model"].config.mask_loss
    (_, logits), = prediction["rec"].calls["mask_head"]
    logits = host(logits)
    read_outs = dict(sigmoid=sigmoid(logits), softmax=softmax(logits, axis=1))
    probs, other = read_outs.pop(kind), read_outs.popitem()[1]
    start, disagree_with_other_read_out = 0, 0
    for d in prediction["detections"]:
        n = len(d["boxes"])
        assert n > 1 and len(set(d["labels"])) > 1
        for r, (label, box, got) in enumerate(zip(d["labels"], d["boxes"], d["masks"])):
            p, q = paste_by_hand(probs[start + r, label], box), paste_by_hand(other[start + r, label], box)
            sure = np.abs(p - 0.5) > 1e-9
            np.testing.assert_array_equal(got[sure], (p >= 0.5)[sure], err_msg=f"detection {r} (class {label})")
            disagree_with_other_read_out += int(((p >= 0.5) != (q >= 0.5)).sum())
        start += n
    assert disagree_with_other_read_out > 100       # the two read-outs differ here, so the test can tell them apart


# ------------------------------------------------------------------------------------------------------
# Joint 8: per-class post-processing.

def test_postprocess_runs_nms_within_each_class_worked_example():
    """Worked example. Proposals A and B overlap (IoU 0.77), C lies apart; the deltas are zero.

        P(class)   bg    1     2     3
        A         0.10  0.60  0.28  0.02
        B         0.10  0.50  0.36  0.04
        C         0.86  0.04  0.04  0.06

    Scores above 0.05: A1, A2, B1, B2, C3. NMS within class 1 keeps A1 (drops B1), within class 2 keeps B2
    (drops A2): A1 0.60, B2 0.36, C3 0.06. NMS across classes would have dropped B2 too; the background is never
    a detection. With room for two detections, the best two of those three."""
    proposals = np.array([[10.0, 10.0, 40.0, 40.0], [12.0, 12.0, 42.0, 42.0], [44.0, 44.0, 60.0, 60.0]])
    probs = np.array([[0.10, 0.60, 0.28, 0.02], [0.10, 0.50, 0.36, 0.04], [0.86, 0.04, 0.04, 0.06]])
    for top, want in ((100, [(0, 1, 0.60), (1, 2, 0.36), (2, 3, 0.06)]), (2, [(0, 1, 0.60), (1, 2, 0.36)])):
        found = postprocess_detections(np.log(probs), np.zeros((3, 16)), proposals, (SIZE, SIZE), 0.05, 0.5, top)
        np.testing.assert_allclose(host(found["boxes"]), proposals[[w[0] for w in want]])
        np.testing.assert_array_equal(host(found["labels"]), [w[1] for w in want])
        np.testing.assert_allclose(host(found["scores"]), [w[2] for w in want], rtol=1e-12)


def test_predicted_detections_are_the_lecture_postprocess_of_each_image():
    """predict's detections of image i: the lecture's post-processing of image i's rows of the box head's outputs
    (its proposals come first or second in the batch, in order) with the model's thresholds."""
    run = record_prediction()
    (_, proposals), = run["rec"].calls["_proposals"]
    (_, (logits, deltas)), = run["rec"].calls["box_head"]
    logits, deltas, cfg = host(logits), host(deltas), run["model"].config
    start = 0
    for n, (p, d) in enumerate(zip(proposals, run["detections"])):
        rows = slice(start, start + len(p))
        boxes, scores, labels = lecture_detections(logits[rows], deltas[rows], host(p), cfg)
        start += len(p)
        assert len(labels) > 3 and len(set(labels)) > 1
        assert len(d["labels"]) == len(labels), f"image {n}: {len(d['labels'])} detections, want {len(labels)}"
        np.testing.assert_allclose(d["scores"], scores, rtol=1e-9, err_msg=f"image {n} scores")
        np.testing.assert_array_equal(d["labels"], labels, err_msg=f"image {n} labels")
        np.testing.assert_allclose(d["boxes"], boxes, rtol=1e-9, atol=1e-9, err_msg=f"image {n} boxes")
