"""Why did the model find this? One detection explained by its gradient with respect to the input pixels.

A detection ``k`` came from one row ``r`` of the box head, the RoI of proposal ``b_r``, as class ``c`` with

    p_c = softmax(z)_c,        z = BoxHead(RoIAlign(P3, b_r))            (K logits, background included)

Its saliency at a pixel is ``|d p_c / d pixel|``, the largest of the pixel's three colour channels (a
saliency map, Simonyan et al. 2014). The backward is the model's own, read from the top:

    d p_c / d z_j  = p_c (delta_cj - p_j)           the softmax Jacobian's row c
    BoxHead.backward((d p_c / d z, 0))              the box deltas add nothing to the score
    RoIAlign's backward onto P3, then the FPN and the backbone back to the normalized image x
    x = (pixel / 255 - mean) / std                  so  d/d pixel = (d/dx) / (255 std), NCHW back to H x W x 3

The mask is explained the same way by the mean of its own class's m x m logits: RoIAlign of the detection's
box on P2, the mask head, the mean (each logit's gradient is 1 / m^2), and back through the same stages
(a model trained with the softmax mask loss: the raw logits its softmax reads).

The proposal and the detection's box are held fixed, as in training (proposals carry no gradient): the
saliency says which pixels move the score *of this box*, not where the box would go. ``postprocess``
keeps no record of a detection's proposal, so ``_source_row`` finds it again: the proposal whose decoded
class-c box is the detection's box.

``share_inside_box`` is the share of the score gradient's L1 mass on pixels whose centre lies in the
detection's box; next to ``box_area_share`` (the box's share of the image) it tells whether the model looks
at the object (well above) or around it.

Shapes: H x W images, P proposals, K classes counting the background as class 0, m the mask side.
"""
from __future__ import annotations

import numbers
from contextlib import contextmanager

import matplotlib.pyplot as plt

from . import backend
from .activations import softmax
from .inputs import check_images
from .postprocess import _class_boxes
from .visualize import draw_boxes, label_box

__all__ = ["explain_detection", "explanation_figure"]

# a detection's box recomputed from its proposal by the same operations differs from it by rounding only
SAME_BOX_PX = 1e-3


def explain_detection(model, image, k):
    """Explain detection ``k`` of ``model.predict`` on ``image`` by its gradients with respect to the pixels.

    model : a ``MaskRCNN``; it is left as found (training flag, gradients, caches)
    image : H x W x 3 uint8 (or floats on the 0..255 scale), as ``predict`` takes it
    k     : int, the detection's index in ``predict``'s output (by decreasing score)
    Returns a dict of host arrays and numbers:
      ``detection``         {``box`` 4, ``label`` int, ``score`` float, ``mask`` H x W bool}, as ``predict`` gives it
      ``proposal``          4, the RoI of the box head row the detection came from
      ``score``             its class probability, recomputed from that RoI
      ``mask_mean_logit``   the mean of the mask head's own-class logits in the detection's box
      ``score_grad``, ``mask_grad``             H x W x 3: d score (d mean mask logit) / d pixel value
      ``score_saliency``, ``mask_saliency``     H x W: the largest ``|gradient|`` of the three channels
      ``share_inside_box``, ``mask_share_inside_box``: each gradient's share of L1 mass inside the box
      ``box_area_share``    the box's share of the image's pixels
    """
    images = _check_image(image)
    with _scratch_state(model, training=False):
        found = model._predict(images)[0]
        proposals, class_logits, box_deltas = _box_head_outputs(model, images)
    k = _check_index(k, len(found["boxes"]))
    box, label = found["boxes"][k], int(found["labels"][k])
    row = _source_row(class_logits, box_deltas, proposals, box, label, model.config.image_size)
    pixels = backend.xp.asarray(images[0]).astype(model.dtype)
    with _scratch_state(model, training=True):
        score, score_grad = _score_and_gradient(model, pixels, proposals[row], label)
        mask_mean, mask_grad = _mask_mean_and_gradient(model, pixels, box, label)
    inside = _pixels_inside(box, pixels.shape[:2])
    return dict(detection=dict(box=backend.to_host(box), label=label, score=float(found["scores"][k]),
                               mask=backend.to_host(found["masks"][k])),
                proposal=backend.to_host(proposals[row]), score=float(score), mask_mean_logit=float(mask_mean),
                score_grad=backend.to_host(score_grad), mask_grad=backend.to_host(mask_grad),
                score_saliency=backend.to_host(abs(score_grad).max(axis=2)),
                mask_saliency=backend.to_host(abs(mask_grad).max(axis=2)),
                share_inside_box=_share_inside(score_grad, inside),
                mask_share_inside_box=_share_inside(mask_grad, inside),
                box_area_share=float(inside.mean()))


def _check_image(image):
    """``image`` H x W x 3 as a batch of one, checked as ``predict`` checks its images."""
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"image: expected one H x W x 3 image (RGB, channels last), got shape {shape}")
    return check_images(backend.get_array_module(image).asarray(image)[None])


def _check_index(k, count):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k < count:
        if count == 0:
            raise ValueError(f"k: the model finds no detection in this image, so there is none to explain "
                             f"(got k={k!r})")
        raise ValueError(f"k: expected a detection index in [0, {count - 1}] ({count} detections), got {k!r}")
    return int(k)


@contextmanager
def _scratch_state(model, training):
    """Run in ``training`` mode with no gradients and no caches, then give every module back its own."""
    saved = [(m, m.training, m.grads, m._caches) for m in model.modules()]
    model.zero_grad()
    model.train(training)
    try:
        yield
    finally:
        for m, was_training, grads, caches in saved:
            m.training, m.grads, m._caches = was_training, grads, caches


# -------------------------------------------------------------------------------------------------------
# finding the detection's proposal
# -------------------------------------------------------------------------------------------------------

def _box_head_outputs(model, images):
    """The first half of ``MaskRCNN._predict`` for one image: its proposals P x 4, class logits P x K and box
    deltas P x 4K."""
    cfg = model.config
    maps = model._features(model.normalize(images))
    objectness, deltas = model.rpn.forward(maps.rpn)
    proposals = model._proposals(model.anchors(), objectness, deltas, cfg.rpn_post_nms_test)
    box_feats, _ = model._pool(maps.box, model.box_stride, proposals, cfg.box_pool)
    class_logits, box_deltas = model.box_head.forward(box_feats)
    return proposals[0], class_logits, box_deltas


def _source_row(class_logits, box_deltas, proposals, box, label, image_size):
    """The proposal whose class-``label`` candidate box (``postprocess._class_boxes``, the boxes
    ``postprocess_detections`` chooses from) is ``box`` (4). Raises ``RuntimeError`` if none is."""
    xp = backend.get_array_module(box_deltas)
    P, K = class_logits.shape
    boxes, _, _ = _class_boxes(class_logits, box_deltas, proposals, (image_size, image_size))
    distance = abs(boxes.reshape(P, K - 1, 4)[:, label - 1] - box).max(axis=1)
    row = int(xp.argmin(distance))
    if not float(distance[row]) < SAME_BOX_PX:
        raise RuntimeError(f"no proposal decodes to the detection's box (nearest off by {float(distance[row]):g} "
                           "px): postprocess_detections and explain._source_row disagree")
    return row


# -------------------------------------------------------------------------------------------------------
# the two backwards, proposal and box held fixed
# -------------------------------------------------------------------------------------------------------

def _score_and_gradient(model, pixels, proposal, label):
    """The box head's probability of class ``label`` for the RoI ``proposal`` (4), and its gradient.

    pixels : H x W x 3 float on the 0..255 scale (the parameters' dtype), a float so that it can be perturbed
    Returns ``(p, dp/dpixels H x W x 3)``. The model must be in training mode with no caches.
    """
    maps = model._features(model.normalize(pixels[None]))
    xp = backend.get_array_module(maps.box)
    feats, cache = model._pool(maps.box, model.box_stride, [xp.asarray(proposal, dtype=maps.box.dtype)[None]],
                               model.config.box_pool)
    class_logits, box_deltas = model.box_head.forward(feats)
    p = softmax(class_logits, axis=1)[0]
    # the softmax Jacobian's row: d p_c / d z_j = p_c (delta_cj - p_j)
    dlogits = -p[label] * p
    dlogits[label] += p[label]
    dfeats = model.box_head.backward((dlogits[None], xp.zeros_like(box_deltas)))
    dbox_map = model._pool_backward(dfeats, cache)
    return p[label], _pixels_backward(model, maps, dbox_map, xp.zeros_like(maps.mask))


def _mask_mean_and_gradient(model, pixels, box, label):
    """The mean of the mask head's class-``label`` logits (m x m) in ``box`` (4), and its gradient.

    pixels : H x W x 3 float on the 0..255 scale (the parameters' dtype)
    Returns ``(mean, dmean/dpixels H x W x 3)``. The model must be in training mode with no caches.
    """
    maps = model._features(model.normalize(pixels[None]))
    xp = backend.get_array_module(maps.mask)
    feats, cache = model._pool(maps.mask, model.mask_stride, [xp.asarray(box, dtype=maps.mask.dtype)[None]],
                               model.config.mask_pool)
    mask_logits = model.mask_head.forward(feats)
    own = mask_logits[0, label]
    dmask_logits = xp.zeros_like(mask_logits)
    dmask_logits[0, label] = 1.0 / own.size
    dmask_map = model._pool_backward(model.mask_head.backward(dmask_logits), cache)
    return own.mean(), _pixels_backward(model, maps, xp.zeros_like(maps.box), dmask_map)


def _pixels_backward(model, maps, dbox_map, dmask_map):
    """The heads' map gradients back to the pixels: FPN and backbone to x (1 x 3 x H x W), then normalize's
    chain rule, d/d pixel = (d/dx) / (255 std). Returns H x W x 3."""
    xp = backend.get_array_module(dbox_map)
    dx = model._features_backward(dbox_map, dmask_map, xp.zeros_like(maps.rpn))
    std = xp.asarray(model.config.pixel_std, dtype=dx.dtype)
    return dx[0].transpose(1, 2, 0) / (255.0 * std)


# -------------------------------------------------------------------------------------------------------
# where the gradient lies
# -------------------------------------------------------------------------------------------------------

def _pixels_inside(box, image_size):
    """H x W bool: the pixels whose centre ``(x + 0.5, y + 0.5)`` lies in ``box`` ``(x1, y1, x2, y2)``."""
    xp = backend.get_array_module(box)
    H, W = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    ys, xs = xp.arange(H) + 0.5, xp.arange(W) + 0.5
    return ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]


def _share_inside(grad, inside):
    """The share of ``grad``'s (H x W x 3) L1 mass on the pixels ``inside`` (H x W bool); 0 for a zero grad."""
    mass = abs(grad).sum(axis=2)
    total = float(mass.sum())
    return float(mass[inside].sum()) / total if total > 0 else 0.0


# -------------------------------------------------------------------------------------------------------
# the figure
# -------------------------------------------------------------------------------------------------------

def explanation_figure(image, explanation, class_names):
    """The image with the detection (box, mask outline, proposal dashed), then its two saliency maps.

    image       : H x W x 3 uint8, the image explained
    explanation : what ``explain_detection`` returned for it
    class_names : names by class id, the background first
    """
    image = backend.to_host(image)
    d = explanation["detection"]
    label = d["label"]
    name = class_names[label] if label < len(class_names) else str(label)
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 4.4))
    ax = axes[0]
    ax.imshow(image)
    ax.contour(d["mask"], levels=[0.5], colors="white", linewidths=1.0)
    draw_boxes(ax, explanation["proposal"][None], "tab:orange", 1.0)
    ax.patches[-1].set_linestyle("--")
    draw_boxes(ax, d["box"][None], "tab:cyan", 1.5, labels=[f"{name} {d['score']:.2f}"])
    ax.set_title("detection (cyan), its mask (white)\nand the proposal it came from (orange, dashed)", fontsize=9)
    panels = [(axes[1], explanation["score_saliency"],
               f"|d score / d pixel|, max over RGB\n{explanation['share_inside_box']:.0%} of the L1 mass in the box"),
              (axes[2], explanation["mask_saliency"],
               f"|d mean mask logit / d pixel|, max over RGB\n"
               f"{explanation['mask_share_inside_box']:.0%} of the L1 mass in the box")]
    for ax, saliency, title in panels:
        shown = ax.imshow(saliency, cmap="magma")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        draw_boxes(ax, d["box"][None], "tab:cyan", 1.0)
        ax.set_title(title, fontsize=9)
    H, W = image.shape[:2]
    for ax in axes:
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    label_box(axes[1], 1, 1, f"box covers {explanation['box_area_share']:.0%} of the image", "white", fontsize=7)
    fig.suptitle(f"why '{name}' ({d['score']:.2f})? gradients of its class score and of its mask's mean logit "
                 "with respect to the pixels (proposal and box held fixed)", fontsize=10)
    fig.tight_layout()
    return fig
