"""Stage 8: the whole model. Its hand-written backward against finite differences, and that it learns."""
import numpy as np
import pytest

from mrcnn_edu import backend
from mrcnn_edu.gradcheck import rel_error
from mrcnn_edu.heads import paste_masks
from mrcnn_edu.model import MaskRCNN, ModelConfig
from mrcnn_edu.optim import AdamW

TINY = dict(image_size=64, channels=(4, 4, 8, 8), groups=2, fpn_channels=8, anchor_sizes=(24.0, 32.0),
            box_hidden=16, mask_mlp_hidden=16, mask_channels=4, mask_convs=1, roi_batch=16, rpn_batch=64, box_pool=3,
            mask_pool=4)


def synthetic_sample(rng, size=64, empty=False):
    """A square (class 1) and a disk (class 2) on a plain background; the disk occludes the square."""
    image = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    if empty:
        return image, dict(boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64),
                           masks=np.zeros((0, size, size), bool))
    yy, xx = np.mgrid[:size, :size]
    cx, cy, r = rng.integers(size // 4, 3 * size // 4, 2), rng.integers(size // 4, 3 * size // 4, 2), size // 6
    square = (abs(xx - cx[0]) < r) & (abs(yy - cy[0]) < r)
    disk = (xx - cx[1]) ** 2 + (yy - cy[1]) ** 2 < r * r
    square &= ~disk
    masks = np.stack([m for m in (square, disk) if m.any()])
    labels = np.array([c for c, m in ((1, square), (2, disk)) if m.any()])
    for m, colour in zip(masks, rng.integers(0, 256, (2, 3))):
        image[m] = colour
    boxes = np.array([[np.flatnonzero(m.any(0))[0], np.flatnonzero(m.any(1))[0],
                       np.flatnonzero(m.any(0))[-1] + 1, np.flatnonzero(m.any(1))[-1] + 1] for m in masks],
                     dtype=np.float32)
    return image, dict(boxes=boxes, labels=labels, masks=masks)


def batch(rng, n, size=64, empty=()):
    samples = [synthetic_sample(rng, size, empty=i in empty) for i in range(n)]
    return np.stack([s[0] for s in samples]), [s[1] for s in samples]


def to_float64(model):
    """The model in float64, its zero-initialized biases nudged: an all-zero RoI (RoIPool of a ReLU map) would
    otherwise put a conv's output exactly on ReLU's kink, where finite differences are not the derivative."""
    nudge = np.random.default_rng(7)
    for m in model.modules():
        m.params = {k: v.astype(np.float64) + (nudge.normal(0, 0.01, v.shape) if k == "bias" else 0)
                    for k, v in m.params.items()}
    return model


VARIANTS = {
    "P2 mask head": dict(),
    "P3 mask head": dict(mask_stride=8),
    "C4, no FPN": dict(fpn=False),
    # the ablations of `mrcnn-edu ablate`
    "RoIPool": dict(roi_op="pool"),
    "C5 stride 32, RoIPool": dict(fpn=False, backbone_stride=32, roi_op="pool"),
    "C5 stride 32": dict(fpn=False, backbone_stride=32),
    "C4 RoIPool": dict(fpn=False, roi_op="pool"),
    "softmax mask loss": dict(mask_loss="softmax"),
    "MLP mask head": dict(mask_head="mlp"),
    "GIoU box loss": dict(box_loss="giou"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_model_backward_matches_finite_differences(variant):
    """d(total loss)/d(parameter) for sampled parameters of every part, proposals and samples held fixed
    (the mask head reading P2, stride 4, or P3, stride 8, or, without the FPN, both heads reading C4 or C5;
    and each ablation switch)."""
    rng = np.random.default_rng(0)
    config = ModelConfig(**TINY, **VARIANTS[variant])
    fpn = config.fpn
    model = to_float64(MaskRCNN(config, rng=np.random.default_rng(1)))
    images, targets = batch(rng, 2)
    proposals = [np.concatenate([t["boxes"] + rng.normal(0, 2, t["boxes"].shape), rng.uniform(0, 30, (6, 2))
                                 @ np.array([[1, 0, 1, 0], [0, 1, 0, 1]]) + [0, 0, 20, 20]]).clip(0, 64)
                 for t in targets]

    def loss():
        model.zero_grad()
        return model.loss_and_backward(images, targets, np.random.default_rng(5), proposals=proposals)["loss"]

    loss()
    analytic = {k: v.copy() for k, v in model.gradients().items()}
    params = model.parameters()
    parts = ["backbone.stage1", "backbone.stage2", "backbone.stage4", "rpn", "box_head", "mask_head"]
    parts += ["fpn.lateral", "fpn.smooth"] if fpn else []
    parts += ["backbone.stage5"] if config.backbone_stride == 32 else []
    pick = np.random.default_rng(2)
    for part in parts:
        names = [n for n in params if n.startswith(part)]
        got, want = [], []
        for name in pick.choice(names, size=3):
            p = params[name].reshape(-1)
            for i in pick.choice(p.size, size=2, replace=False):
                old = p[i]
                p[i] = old + 1e-6
                plus = loss()
                p[i] = old - 1e-6
                minus = loss()
                p[i] = old
                want.append((plus - minus) / 2e-6)
                got.append(analytic[name].reshape(-1)[i])
        assert rel_error(np.array(got), np.array(want)) < 1e-6, f"{part}: mine {got} vs numeric {want}"


@pytest.mark.parametrize("variant", ["RoIPool", "C5 stride 32, RoIPool", "softmax mask loss", "MLP mask head"])
def test_ablation_variants_predict(variant):
    rng = np.random.default_rng(3)
    model = MaskRCNN(ModelConfig(**TINY, **VARIANTS[variant]), rng=np.random.default_rng(1))
    images, _ = batch(rng, 2)
    for d in model.predict(images):
        assert d["masks"].shape[1:] == (64, 64) and d["masks"].dtype == bool
        assert len(d["boxes"]) == len(d["scores"]) == len(d["labels"])


def test_normalize_gives_channel_planes_centred_and_scaled():
    """N x H x W x 3 uint8 -> N x 3 x H x W, (pixel / 255 - mean) / std per channel, laid out channel-first in
    memory too (C-contiguous: each channel a whole image plane, as the convolutions read it)."""
    cfg = ModelConfig(**TINY, pixel_mean=(0.2, 0.5, 0.8), pixel_std=(0.5, 0.25, 0.125))
    model = MaskRCNN(cfg, rng=np.random.default_rng(1))
    images = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = backend.to_host(model.normalize(images))
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    want = (images.transpose(0, 3, 1, 2) / 255.0 - np.array(cfg.pixel_mean)[:, None, None]) \
        / np.array(cfg.pixel_std)[:, None, None]
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)


def test_softmax_logits_read_out_as_the_softmax():
    from mrcnn_edu.postprocess import softmax_as_sigmoid_logits as _softmax_as_sigmoid_logits
    z = np.random.default_rng(0).normal(0, 3, (2, 4, 3, 3))
    softmax = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(1 / (1 + np.exp(-_softmax_as_sigmoid_logits(z))), softmax, rtol=1e-12)


@pytest.mark.parametrize("field, value", [("roi_op", "max"), ("mask_loss", "bce"), ("mask_head", "cnn"),
                                          ("box_loss", "l2"), ("backbone_stride", 8)])
def test_bad_ablation_settings_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        MaskRCNN(ModelConfig(**TINY, **{field: value}), rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match="fpn=False"):
        MaskRCNN(ModelConfig(**TINY, backbone_stride=32), rng=np.random.default_rng(1))


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_box_loss_weight_scales_the_box_loss_and_its_gradient_only(box_loss):
    rng = np.random.default_rng(3)
    images, targets = batch(rng, 2)
    runs = []
    for weight in (1.0, 2.5):
        model = MaskRCNN(ModelConfig(**TINY, box_loss=box_loss, box_loss_weight=weight), rng=np.random.default_rng(1))
        losses = model.loss_and_backward(images, targets, np.random.default_rng(5))
        runs.append((losses, model.gradients()))
    (one, g1), (two, g2) = runs
    assert one["loss_box_reg"] > 0
    np.testing.assert_allclose(two["loss_box_reg"], 2.5 * one["loss_box_reg"], rtol=1e-6)
    for name in ("loss_classifier", "loss_mask", "loss_objectness", "loss_rpn_box_reg"):
        assert two[name] == one[name]
    np.testing.assert_allclose(g2["box_head.bbox_pred.weight"], 2.5 * g1["box_head.bbox_pred.weight"], rtol=1e-5,
                               atol=1e-12)
    np.testing.assert_array_equal(g2["box_head.cls_score.weight"], g1["box_head.cls_score.weight"])


def test_the_mlp_mask_head_has_its_own_width():
    model = MaskRCNN(ModelConfig(**dict(TINY, mask_mlp_hidden=24), mask_head="mlp"), rng=np.random.default_rng(1))
    shapes = {name: p.shape for name, p in model.parameters().items() if name.startswith("mask_head")}
    widths = sorted({s[0] for name, s in shapes.items() if name.endswith("weight")})
    assert 24 in widths and TINY["box_hidden"] not in widths
    with pytest.raises(ValueError, match="mask_mlp_hidden"):
        MaskRCNN(ModelConfig(**dict(TINY, mask_mlp_hidden=0), mask_head="mlp"), rng=np.random.default_rng(1))


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_box_loss_weight_is_named(weight):
    with pytest.raises(ValueError, match="box_loss_weight"):
        MaskRCNN(ModelConfig(**TINY, box_loss_weight=weight), rng=np.random.default_rng(1))


def test_images_without_objects_train_and_predict():
    rng = np.random.default_rng(3)
    model = MaskRCNN(ModelConfig(**TINY), rng=np.random.default_rng(1))
    images, targets = batch(rng, 3, empty=(1,))
    losses = model.loss_and_backward(images, targets, rng)
    assert all(np.isfinite(v) for v in losses.values())
    model.zero_grad()
    images, targets = batch(rng, 2, empty=(0, 1))
    losses = model.loss_and_backward(images, targets, rng)
    assert losses["loss_mask"] == 0.0 and losses["loss_box_reg"] == 0.0 and losses["loss"] > 0
    for d in model.predict(images):
        assert d["masks"].shape[1:] == (64, 64) and len(d["boxes"]) == len(d["scores"]) == len(d["labels"])


def test_training_steps_lower_the_loss(xp):
    rng = np.random.default_rng(4)
    model = MaskRCNN(ModelConfig(**dict(TINY, channels=(8, 16, 16, 32), fpn_channels=16, box_hidden=32,
                                        mask_channels=8)), rng=np.random.default_rng(1))
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    images, targets = batch(rng, 4)
    history = []
    for _ in range(40):
        model.zero_grad()
        history.append(model.loss_and_backward(images, targets, rng)["loss"])
        opt.step(model.gradients())
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:5]), history


def test_paste_masks_puts_a_full_mask_exactly_in_its_box(xp):
    boxes = xp.asarray([[8.0, 4.0, 24.0, 20.0], [0.0, 0.0, 32.0, 32.0]])
    pasted = backend.to_host(paste_masks(xp.ones((2, 28, 28)), boxes, (32, 40)) >= 0.5)
    want = np.zeros((32, 40), bool)
    want[4:20, 8:24] = True
    np.testing.assert_array_equal(pasted[0], want)
    assert pasted[1][:, :32].all() and not pasted[1][:, 33:].any()


def test_mask_targets_and_paste_back_share_one_pixel_convention():
    """Ground-truth masks -> 28 x 28 targets -> pasted back: what a perfect mask head would draw. With aligned
    targets the round trip loses only resolution; torchvision's unaligned targets also move it half a pixel."""
    from mrcnn_edu.data.shapes import boxes_from_masks, validation_set
    from mrcnn_edu.roi_heads import mask_targets

    def round_trip_iou(aligned):
        ious = []
        for _, masks, _ in validation_set(10, seed=1):
            boxes = boxes_from_masks(masks).astype(np.float64)
            targets = mask_targets(masks, boxes, np.arange(len(boxes)), 28, aligned=aligned)
            pasted = paste_masks(targets, boxes, masks.shape[1:]) >= 0.5
            ious += [(m & p).sum() / (m | p).sum() for m, p in zip(masks, pasted)]
        return np.mean(ious)

    aligned, unaligned = round_trip_iou(True), round_trip_iou(False)
    assert aligned > 0.95 and aligned > unaligned + 0.02, (aligned, unaligned)


@pytest.mark.parametrize("change, message", [
    (lambda t: t[1].update(boxes=np.array([[10, 10, 10, 20], [0, 0, 5, 5]], np.float32)),
     r"targets\[1\]\['boxes'\]: every box needs x2 > x1 and y2 > y1"),
    (lambda t: t[0].update(boxes=np.array([[0, 0, np.nan, 5]] * len(t[0]["labels"]), np.float32)),
     r"targets\[0\]\['boxes'\]: contains NaN or inf"),
    (lambda t: t[0].update(labels=np.zeros(len(t[0]["labels"]), np.int64)),
     r"targets\[0\]\['labels'\]: expected classes in \[1, 3\]"),
    (lambda t: t[1].update(labels=np.full(len(t[1]["labels"]), 4)), r"targets\[1\]\['labels'\]: expected classes"),
    (lambda t: t[1].update(labels=t[1]["labels"][:1]), r"targets\[1\]\['labels'\]: expected 2 integer classes"),
    (lambda t: t[0].update(masks=t[0]["masks"][0]), r"targets\[0\]\['masks'\]: expected a 2 x H x W array"),
    (lambda t: t[0].pop("masks"), r"targets\[0\]: missing \['masks'\]"),
    (lambda t: t.pop(), r"targets: expected one dict per image \(2\), got 1"),
])
def test_bad_targets_are_named_before_the_step_runs(change, message):
    """The model checks the user's targets once, up front; its own calls then skip the value checks."""
    rng = np.random.default_rng(3)
    model = MaskRCNN(ModelConfig(**TINY), rng=np.random.default_rng(1))
    images, targets = batch(rng, 2)
    assert all(len(t["labels"]) == 2 for t in targets)
    change(targets)
    with pytest.raises(ValueError, match=message):
        model.loss_and_backward(images, targets, rng)


def test_a_nan_inside_the_model_still_reaches_the_loss():
    """The model's own calls check no values, but a NaN made inside reaches the loss (and ``train`` stops)."""
    rng = np.random.default_rng(3)
    model = MaskRCNN(ModelConfig(**TINY), rng=np.random.default_rng(1))
    model.backbone.stage1[0].params["weight"][0, 0, 0, 0] = np.nan
    images, targets = batch(rng, 2)
    losses = model.loss_and_backward(images, targets, rng)
    assert not np.isfinite(losses["loss"])


def test_bad_images_are_named_by_predict_and_by_the_training_step():
    rng = np.random.default_rng(3)
    model = MaskRCNN(ModelConfig(**TINY), rng=np.random.default_rng(1))
    images, targets = batch(rng, 2)
    with pytest.raises(ValueError, match=r"images: expected N x H x W x 3 .* got shape \(2, 3, 64, 64\)"):
        model.predict(images.transpose(0, 3, 1, 2))
    bad = images.astype(np.float32)
    bad[1, 5, 5, 0] = np.nan
    with pytest.raises(ValueError, match="images: contains NaN or inf"):
        model.loss_and_backward(bad, targets, rng)
    with pytest.raises(TypeError, match="images: expected uint8"):
        model.predict(images.astype(bool))


def test_a_training_step_computes_no_image_gradient_but_explain_still_can(monkeypatch):
    """The first conv's input gradient (the images') is a GEMM and a col2im that training throws away:
    loss_and_backward skips it, and the parameters' gradients are the same as with it."""
    from mrcnn_edu.nn import conv
    images, targets = batch(np.random.default_rng(3), 2)
    seen, unwindows = [], conv._unwindows
    monkeypatch.setattr(conv, "_unwindows",
                        lambda cols, x_shape, *args: seen.append(x_shape) or unwindows(cols, x_shape, *args))
    grads = []
    for need_dx in (False, True):
        model = MaskRCNN(ModelConfig(**TINY), rng=np.random.default_rng(1))
        checked_images, checked_targets, _ = model._checked(images, targets, None)
        _, head_grads = model._forward_losses(checked_images, checked_targets, np.random.default_rng(0), None)
        if need_dx:   # the way explain asks for it
            dmask = model._pool_backward(model.mask_head.backward(head_grads.mask_logits), head_grads.mask_cache)
            dbox = model._pool_backward(model.box_head.backward((head_grads.class_logits, head_grads.box_deltas)),
                                        head_grads.box_cache)
            dx = model._features_backward(dbox, dmask, model.rpn.backward((head_grads.objectness, head_grads.deltas)))
            assert dx.shape == (2, 3, 64, 64) and float(abs(dx).max()) > 0
        else:
            model._backward_losses(head_grads)
            assert not [s for s in seen if s[1] == 3], seen          # no col2im onto the 3 image channels
        grads.append(model.gradients())
    assert seen and seen[-1][1] == 3
    for name, g in grads[0].items():
        np.testing.assert_array_equal(grads[1][name], g, err_msg=name)
