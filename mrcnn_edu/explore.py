"""Look at a COCO data set before training on it: ``mrcnn-edu anchors`` and ``mrcnn-edu browse``.

``anchors`` asks lecture stages 2 and 3's question of the user's own objects. The RPN calls an anchor
"object" when its IoU with a ground-truth box is >= 0.7, "not object" below 0.3, and also calls each
object's best anchor "object", whatever its IoU. So an object's *best IoU with any anchor* says how the
RPN sees it: >= 0.7, one or more anchors fit it; below 0.7, only its best anchor learns it; below 0.3, that
anchor barely overlaps it. The report gives the share of objects below each threshold for the model's
anchors, for anchors suggested from the data (k-means on the objects' sizes ``sqrt(w * h)``, quantiles of
their aspect ratios ``h / w``), and for the best an anchor of *any* shape could do on the stride-16 grid:
an object between two cell centres cannot reach 0.7 however well its anchor is sized, and only a smaller
stride (or a larger image) helps it.

``browse`` draws a sample of images with their ground truth, the instances per class and the object
sizes, and prints the counts.

Boxes are ``(x1, y1, x2, y2)`` on the resized ``S x S`` image the model sees (``load_coco(size=S)``).
Host-only: everything here is NumPy (the anchors are moved with ``backend.to_host``).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle

from . import backend
from .anchors import base_anchors, generate_anchors, grid_size
from .boxes import box_iou
from .data.shapes import boxes_from_masks
from .model import ModelConfig
from .visualize import INSTANCE_COLOURS, save

__all__ = ["RPN_LOW", "RPN_HIGH", "dataset_boxes", "best_anchor_iou", "share_below", "grid_limit_iou",
           "kmeans_1d", "suggest_anchors", "anchor_report", "format_anchor_report", "anchor_fit_figure",
           "dataset_stats", "format_dataset_summary", "sample_indices", "draw_ground_truth", "browse_figure",
           "ANCHORS_HELP", "BROWSE_HELP", "add_anchors_arguments", "add_browse_arguments", "cmd_anchors", "cmd_browse"]

RPN_LOW, RPN_HIGH = 0.3, 0.7       # the RPN's "not object" and "object" IoU thresholds (lecture stage 3)
_CHUNK = 1 << 22                   # elements of one IoU block: about 16 MB of float32


# ------------------------------------------------------------------------------------------- computing
def dataset_boxes(dataset):
    """Every object's box and class, from the masks of a loaded data set (``load_coco(..., size=S)``).

    returns a dict of host arrays: ``boxes`` G x 4 float32 ``(x1, y1, x2, y2)`` on the S x S image,
    ``class_ids`` G int64 in ``1..K``, ``image_index`` G int64 (the image each object is in).
    Reads every image: the loop is over files, which have to be opened one by one.
    """
    boxes, class_ids, image_index = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for i in range(len(dataset)):
        _, masks, ids, _ = dataset[i]
        boxes.append(boxes_from_masks(masks))
        class_ids.append(ids)
        image_index.append(np.full(len(ids), i, dtype=np.int64))
    return dict(boxes=np.concatenate(boxes), class_ids=np.concatenate(class_ids),
                image_index=np.concatenate(image_index))


def best_anchor_iou(boxes, anchors):
    """Each box's best IoU with any anchor.

    boxes   : G x 4 ``(x1, y1, x2, y2)``
    anchors : A x 4
    returns G float (the inputs' dtype): ``max_a box_iou(boxes, anchors)[g, a]``, 0 where A is 0.
    The G x A IoU matrix is computed in blocks of boxes, so a large data set never holds all of it.
    """
    boxes, anchors = backend.to_host(boxes), backend.to_host(anchors)
    iou0 = box_iou(boxes[:0], anchors[:0])  # checks both arrays, fixes the result dtype
    if len(anchors) == 0:
        return np.zeros(len(boxes), iou0.dtype)
    rows = max(1, _CHUNK // len(anchors))
    best = [box_iou(boxes[s:s + rows], anchors).max(axis=1) for s in range(0, len(boxes), rows)]
    return np.concatenate(best) if best else np.zeros(0, iou0.dtype)


def share_below(best_iou, threshold):
    """The share (0..1) of objects whose best anchor IoU is below ``threshold``: the ones no anchor
    reaches at that IoU. NaN for no objects."""
    best_iou = np.asarray(best_iou)
    return float((best_iou < threshold).mean()) if best_iou.size else math.nan


def grid_limit_iou(boxes, image_size, stride=16, offset=0.5, steps=21):
    """The best IoU an anchor of any shape could reach with each box, centred on the nearest cell centre.

    boxes      : G x 4 ``(x1, y1, x2, y2)`` on an image of ``image_size = (height, width)``
    stride, offset : the anchor grid's (centres at ``((j + offset) * stride, (i + offset) * stride)``)
    returns G float64. A box whose centre is ``dx, dy`` away from the nearest anchor centre is best matched
    by an anchor between ``w -+ 2 dx`` wide and ``h -+ 2 dy`` high (outside that range the intersection
    stops growing, or the union grows): ``steps`` x ``steps`` widths and heights in that range are tried, all
    boxes at once. Equal to 1 for a box centred on a cell; this is the grid's limit, which no choice of
    sizes and ratios can pass.
    """
    boxes = np.asarray(backend.to_host(boxes), dtype=np.float64).reshape(-1, 4)
    gh, gw = grid_size(image_size, stride)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    # the nearest centre: cell index round(c / stride - offset), clamped to the grid
    dx = np.abs(cx - (np.clip(np.rint(cx / stride - offset), 0, gw - 1) + offset) * stride)
    dy = np.abs(cy - (np.clip(np.rint(cy / stride - offset), 0, gh - 1) + offset) * stride)
    t = np.linspace(-1.0, 1.0, steps)
    out = []
    for s in range(0, len(boxes), max(1, _CHUNK // steps ** 2)):
        bw, bh, ox, oy = (v[s:s + _CHUNK // steps ** 2, None] for v in (w, h, dx, dy))
        aw, ah = np.maximum(bw + 2 * ox * t, 0), np.maximum(bh + 2 * oy * t, 0)   # n x steps each
        # overlap of [-bw/2, bw/2] with an anchor [ox - aw/2, ox + aw/2] (1-D, then the same in y)
        ix = np.maximum(np.minimum(bw / 2, ox + aw / 2) - np.maximum(-bw / 2, ox - aw / 2), 0)
        iy = np.maximum(np.minimum(bh / 2, oy + ah / 2) - np.maximum(-bh / 2, oy - ah / 2), 0)
        inter = ix[:, :, None] * iy[:, None, :]
        union = (bw * bh)[:, :, None] + aw[:, :, None] * ah[:, None, :] - inter
        out.append((inter / np.where(union > 0, union, 1)).max(axis=(1, 2)))
    return np.concatenate(out) if out else np.zeros(0)


def _lloyd(values, centres, rng, iterations):
    """Lloyd's k-means iterations from ``centres``; returns ``(sorted centres, sum of squared distances)``."""
    k = len(centres)
    for _ in range(iterations):
        nearest = np.abs(values[:, None] - centres[None, :]).argmin(axis=1)
        counts = np.bincount(nearest, minlength=k)
        means = np.bincount(nearest, weights=values, minlength=k) / np.maximum(counts, 1)
        new = np.where(counts > 0, means, rng.choice(values, k))     # an emptied centre jumps to a value
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres), float((np.abs(values[:, None] - centres[None, :]).min(axis=1) ** 2).sum())


def _plus_plus(values, k, rng):
    """k-means++ seeds: each next centre a value drawn with probability ~ its squared distance to the nearest
    centre so far, so small groups far from the rest get a centre too."""
    centres = [rng.choice(values)]
    for _ in range(k - 1):
        d2 = (np.abs(values[:, None] - np.array(centres)[None, :]).min(axis=1)) ** 2
        centres.append(rng.choice(values, p=d2 / d2.sum()) if d2.sum() > 0 else rng.choice(values))
    return np.array(centres)


def kmeans_1d(values, k, rng, iterations=100, restarts=10):
    """k-means of numbers: k centres in increasing order.

    values   : N numbers, N >= 1
    rng      : ``numpy.random.Generator`` for the seeds
    restarts : Lloyd's algorithm is run from the quantiles ``(i + 0.5) / k`` and from ``restarts``
               k-means++ seeds; the run with the smallest sum of squared distances wins (one start alone
               can settle with two centres in a big group and none in a small one)
    returns k float64 centres (equal ones where the values have fewer than k distinct numbers).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("values: expected at least one number")
    starts = [np.quantile(values, (np.arange(k) + 0.5) / k)] + [_plus_plus(values, k, rng) for _ in range(restarts)]
    return min((_lloyd(values, c, rng, iterations) for c in starts), key=lambda run: run[1])[0]


def suggest_anchors(boxes, k, rng, n_ratios=1):
    """Anchor sizes and ratios that fit the boxes.

    boxes    : G x 4 ``(x1, y1, x2, y2)``, G >= 1
    k        : how many sizes: the k-means centres of the boxes' sizes ``sqrt(w * h)`` (an anchor's size is
               the side of the square of its area), rounded to whole pixels
    rng      : ``numpy.random.Generator`` for ``kmeans_1d``
    n_ratios : how many ratios ``h / w``: the quantiles ``(i + 0.5) / n_ratios`` of the boxes' ratios
               (the median for one), taken on ``log(h / w)`` so that 1/2 and 2 are equally far from 1,
               rounded to 2 decimals
    returns ``(sizes, ratios)``, tuples in increasing order, without repeats (so shorter than k or
    n_ratios when the boxes have fewer distinct sizes or shapes).
    """
    boxes = np.asarray(backend.to_host(boxes), dtype=np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ok = (w > 0) & (h > 0)
    if not ok.any():
        raise ValueError("boxes: expected at least one box with a positive width and height")
    sizes = np.rint(kmeans_1d(np.sqrt(w[ok] * h[ok]), k, rng))
    log_ratios = np.quantile(np.log(h[ok] / w[ok]), (np.arange(n_ratios) + 0.5) / n_ratios)
    ratios = np.round(np.exp(log_ratios), 2)
    return (tuple(int(s) for s in np.unique(np.maximum(sizes, 1))),
            tuple(float(r) for r in np.unique(np.maximum(ratios, 0.01))))


def _anchor_shapes(sizes, ratios):
    """Width and height of each base anchor (as rounded by ``base_anchors``): k x 2."""
    base = np.asarray(backend.to_host(base_anchors(sizes, ratios)), dtype=np.float64)
    return base[:, 2:] - base[:, :2]


def _fit(boxes, image_size, stride, sizes, ratios, offset):
    anchors = backend.to_host(generate_anchors((image_size, image_size), stride, sizes, ratios, offset))
    best = best_anchor_iou(boxes.astype(np.float32), anchors)
    return dict(sizes=tuple(sizes), ratios=tuple(ratios), shapes=_anchor_shapes(sizes, ratios), best_iou=best,
                below_low=share_below(best, RPN_LOW), below_high=share_below(best, RPN_HIGH),
                median=float(np.median(best)), anchors=len(anchors))


def anchor_report(boxes, image_size=128, stride=16, sizes=(40, 56, 72), ratios=(1.0,), offset=0.5, rng=None):
    """How well the anchor grid fits the boxes, and how well anchors suggested from the boxes would.

    boxes      : G x 4 ``(x1, y1, x2, y2)`` on the ``image_size`` x ``image_size`` image, G >= 1
                 (``dataset_boxes(load_coco(..., size=image_size))["boxes"]``)
    image_size, stride, sizes, ratios, offset : the model's anchors (``ModelConfig``)
    rng        : ``numpy.random.Generator`` for the k-means (default: seed 0)
    returns a dict: ``objects`` G, ``image_size``, ``stride``, ``cells`` (gh, gw), ``boxes``, ``widths``,
    ``heights``; ``current`` and ``suggested`` (each: ``sizes``, ``ratios``, ``shapes`` k x 2 anchor widths
    and heights, ``best_iou`` G, ``below_low`` and ``below_high`` (share of objects below 0.3 and 0.7),
    ``median`` best IoU, ``anchors`` A); ``limit`` (the same shares and median for ``grid_limit_iou``).
    """
    boxes = np.asarray(backend.to_host(boxes), dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("boxes: expected at least one object")
    rng = np.random.default_rng(0) if rng is None else rng
    current = _fit(boxes, image_size, stride, sizes, ratios, offset)
    new_sizes, new_ratios = suggest_anchors(boxes, len(sizes), rng, n_ratios=len(ratios))
    suggested = _fit(boxes, image_size, stride, new_sizes, new_ratios, offset)
    limit_iou = grid_limit_iou(boxes, (image_size, image_size), stride, offset)
    limit = dict(best_iou=limit_iou, below_low=share_below(limit_iou, RPN_LOW),
                 below_high=share_below(limit_iou, RPN_HIGH), median=float(np.median(limit_iou)))
    return dict(objects=len(boxes), image_size=image_size, stride=stride,
                cells=grid_size((image_size, image_size), stride), boxes=boxes,
                widths=boxes[:, 2] - boxes[:, 0], heights=boxes[:, 3] - boxes[:, 1],
                current=current, suggested=suggested, limit=limit)


def _numbers(values):
    return " ".join(f"{v:g}" for v in values)


def format_anchor_report(report, images=None):
    """The report as the text ``mrcnn-edu anchors`` prints."""
    r, s = report, report["image_size"]
    gh, gw = r["cells"]
    k = len(r["current"]["shapes"])
    size = np.sqrt(r["widths"] * r["heights"])
    ratio = r["heights"] / np.maximum(r["widths"], 1e-12)
    head = f"{images} images, " if images is not None else ""
    lines = [f"{head}{r['objects']} objects on the {s} x {s} image; anchors: {gh} x {gw} cells (stride "
             f"{r['stride']}) x {k} = {r['current']['anchors']}",
             f"object size sqrt(w * h): {size.min():.0f} to {size.max():.0f} px, median {np.median(size):.0f}; "
             f"aspect h / w: median {np.median(ratio):.2f} (10% below {np.quantile(ratio, 0.1):.2f}, "
             f"10% above {np.quantile(ratio, 0.9):.2f})",
             ""]
    rows = [(f"current    sizes {_numbers(r['current']['sizes'])}, ratios {_numbers(r['current']['ratios'])}",
             r["current"]),
            (f"suggested  sizes {_numbers(r['suggested']['sizes'])}, ratios {_numbers(r['suggested']['ratios'])}",
             r["suggested"]),
            (f"any shape at the nearest cell (stride {r['stride']} limit)", r["limit"])]
    width = max(len(name) for name, _ in rows) + 2
    lines.append(f"{'each object, its best IoU with any anchor:':{width}s}{'< ' + str(RPN_LOW):>8s}"
                 f"{'< ' + str(RPN_HIGH):>8s}{'median':>9s}")
    for name, fit in rows:
        lines.append(f"  {name:{width - 2}s}{fit['below_low']:8.1%}{fit['below_high']:8.1%}{fit['median']:9.2f}")
    lines += ["",
              f"The RPN learns an object from its anchors at IoU >= {RPN_HIGH} and from its best anchor: below "
              f"{RPN_HIGH} from that",
              f"one only, below {RPN_LOW} from one that barely overlaps it. What the stride limit leaves below "
              f"{RPN_HIGH} needs",
              "a smaller stride or a larger image, not other anchors.",
              f"train with the suggestion: --image-size {s} --anchor-sizes {_numbers(r['suggested']['sizes'])}"
              f" --anchor-ratios {_numbers(r['suggested']['ratios'])}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- figures
def anchor_fit_figure(report):
    """Left: histogram of each object's best anchor IoU, current and suggested anchors, with the RPN's
    0.3 and 0.7 lines. Right: object width against height, coloured by best IoU, with the anchor shapes."""
    r, s = report, report["image_size"]
    cur, sug = r["current"], r["suggested"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw=dict(width_ratios=(1, 1.1)))
    bins = np.linspace(0, 1, 21)
    def label(name, fit):
        return (f"{name}: {fit['below_low']:.0%} < {RPN_LOW}, {fit['below_high']:.0%} < {RPN_HIGH}, "
                f"median {fit['median']:.2f}")

    heights, _, _ = left.hist(cur["best_iou"], bins=bins, color="tab:blue", alpha=0.6,
              label=label(f"current {_numbers(cur['sizes'])}", cur))
    left.hist(sug["best_iou"], bins=bins, histtype="step", color="tab:orange", linewidth=2,
              label=label(f"suggested {_numbers(sug['sizes'])}", sug))
    left.hist(r["limit"]["best_iou"], bins=bins, histtype="step", color="0.35", linestyle=":", linewidth=1.5,
              label=label(f"any shape (stride {r['stride']} limit)", r["limit"]))
    for t, colour, word in ((RPN_LOW, "tab:red", "not object"), (RPN_HIGH, "tab:green", "object")):
        left.axvline(t, color=colour, linestyle="--", linewidth=1.5)
        left.text(t, 0.98, f" {word} {'<' if t == RPN_LOW else '>='} {t}", transform=left.get_xaxis_transform(),
                  color=colour, fontsize=9, va="top")
    left.set_xlim(0, 1)
    tallest = max(heights.max(), *(np.histogram(f["best_iou"], bins)[0].max() for f in (sug, r["limit"])))
    left.set_ylim(0, 1.6 * tallest)                                  # room for the legend above the bars
    left.set_xlabel("best IoU of the object with any anchor")
    left.set_ylabel("objects")
    left.set_title(f"each object's best IoU with any anchor ({r['objects']} objects)", fontsize=10)
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, 0.9))

    dots = right.scatter(r["widths"], r["heights"], c=cur["best_iou"], cmap="viridis", vmin=0, vmax=1, s=14,
                         alpha=0.8, edgecolors="none")
    fig.colorbar(dots, ax=right, label="best IoU with the current anchors", fraction=0.05, pad=0.02)
    right.plot(cur["shapes"][:, 0], cur["shapes"][:, 1], "s", markersize=11, markerfacecolor="none",
               markeredgecolor="tab:blue", markeredgewidth=2, label="current anchors")
    right.plot(sug["shapes"][:, 0], sug["shapes"][:, 1], "D", markersize=9, markerfacecolor="none",
               markeredgecolor="tab:orange", markeredgewidth=2, label="suggested anchors")
    top = 1.1 * max(r["widths"].max(), r["heights"].max(), cur["shapes"].max(), sug["shapes"].max())
    right.plot([0, top], [0, top], color="0.8", linewidth=1, zorder=0, label="h = w")
    right.set_xlim(0, top)
    right.set_ylim(0, top)
    right.set_aspect("equal")
    right.set_xlabel(f"width (px, on the {s} x {s} image)")
    right.set_ylabel(f"height (px, on the {s} x {s} image)")
    right.set_title(f"object shapes and anchor shapes (stride {r['stride']})", fontsize=10)
    right.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def dataset_stats(dataset):
    """Counts from the annotations, without reading an image.

    returns a dict: ``images``, ``class_names`` (K + 1, background first), ``instances`` K + 1 int64
    (non-crowd annotations per class, index 0 unused), ``images_with`` K + 1 (images holding the class),
    ``per_image`` N int64 (instances in each image), ``crowd`` (crowd regions), ``sqrt_area`` and
    ``class_ids`` (one per instance: ``sqrt`` of the annotation's area in original pixels, its class 1..K).
    """
    label = {cid: k for k, cid in enumerate(dataset.category_ids, start=1)}
    anns = [a for a in dataset.coco.dataset["annotations"] if not a["iscrowd"]]
    position = {info["id"]: i for i, info in enumerate(dataset.images)}
    class_ids = np.array([label[a["category_id"]] for a in anns], dtype=np.int64)
    image_pos = np.array([position[a["image_id"]] for a in anns], dtype=np.int64)
    k1 = len(dataset.class_names)
    pairs = np.unique(image_pos * k1 + class_ids) if len(anns) else np.zeros(0, np.int64)
    return dict(images=len(dataset), class_names=tuple(dataset.class_names),
                instances=np.bincount(class_ids, minlength=k1), images_with=np.bincount(pairs % k1, minlength=k1),
                per_image=np.bincount(image_pos, minlength=len(dataset)),
                crowd=len(dataset.coco.dataset["annotations"]) - len(anns), class_ids=class_ids,
                sqrt_area=np.sqrt(np.array([float(a["area"]) for a in anns])))


def format_dataset_summary(stats):
    """The counts as the text ``mrcnn-edu browse`` prints."""
    st, names = stats, stats["class_names"]
    per = st["per_image"]
    width = max(len("class"), *(len(n) for n in names[1:]))
    lines = [f"{st['images']} images, {per.sum()} instances of {len(names) - 1} classes ({per.min()} to "
             f"{per.max()} per image, mean {per.mean():.1f}); {st['crowd']} crowd regions",
             f"  {'class':{width}s}  instances  in images"]
    for k in range(1, len(names)):
        lines.append(f"  {names[k]:{width}s}  {st['instances'][k]:9d}  {st['images_with'][k]:9d}")
    a = st["sqrt_area"]
    if a.size:
        lines.append(f"object size sqrt(area), original pixels: {a.min():.0f} to {a.max():.0f}, median "
                     f"{np.median(a):.0f}; COCO small (< 32) {(a < 32).mean():.0%}, medium "
                     f"{((a >= 32) & (a < 96)).mean():.0%}, large (>= 96) {(a >= 96).mean():.0%}")
    return "\n".join(lines)


def sample_indices(n_images, n, seed=None):
    """Which images to show: the first ``n`` (``seed`` None) or ``n`` drawn without repeats by a generator
    seeded with ``seed``, in increasing order; all of them when ``n >= n_images``."""
    if n >= n_images:
        return np.arange(n_images)
    if seed is None:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n_images, n, replace=False))


def _class_colour(class_id):
    return INSTANCE_COLOURS[(int(class_id) - 1) % len(INSTANCE_COLOURS)]


_LABEL_STYLE = dict(fontsize=8, clip_on=True, bbox=dict(facecolor="white", alpha=0.7, pad=0.3, linewidth=0))


def draw_ground_truth(ax, image, masks, class_ids, class_names):
    """An image with its objects: masks tinted and boxes drawn in their class's colour, class names.

    image : H x W x 3 uint8;  masks : G x H x W bool;  class_ids : G ints in 1..K
    """
    shown = np.asarray(image).astype(np.float32) / 255.0
    for m, c in zip(masks, class_ids):
        shown[m] = 0.45 * shown[m] + 0.55 * np.array(to_rgb(_class_colour(c)))
    ax.imshow(shown)
    for (x1, y1, x2, y2), c in zip(boxes_from_masks(masks), class_ids):
        colour = _class_colour(c)
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
        ax.text(x1 + 1, y1 + 1, class_names[int(c)], color=colour, va="top", **_LABEL_STYLE)
    ax.set_xticks([])
    ax.set_yticks([])


def browse_figure(dataset, indices, stats, columns=4):
    """A grid of the images ``indices`` with their ground truth (at the data set's size), then a row with
    the instances per class (bars) and the object sizes ``sqrt(area)`` per class (stacked histogram)."""
    names = stats["class_names"]
    rows = max(1, math.ceil(len(indices) / columns))
    fig = plt.figure(figsize=(3.2 * columns, 3.3 * rows + 3.6))
    grid = fig.add_gridspec(rows + 1, columns, height_ratios=[3.3] * rows + [3.3])
    for n, i in enumerate(indices):
        ax = fig.add_subplot(grid[n // columns, n % columns])
        image, masks, class_ids, _ = dataset[int(i)]
        draw_ground_truth(ax, image, masks, class_ids, names)
        info = dataset.image_info(int(i))
        ax.set_title(f"{info['file_name']} ({info['width']} x {info['height']}), {len(class_ids)} objects",
                     fontsize=8)
    half = columns // 2
    bars = fig.add_subplot(grid[rows, :half])
    ks = np.arange(1, len(names))
    counts = stats["instances"][1:]
    bars.bar(ks, counts, color=[_class_colour(k) for k in ks])
    for k, c in zip(ks, counts):
        bars.text(k, c, str(c), ha="center", va="bottom", fontsize=9)
    bars.set_xticks(ks, names[1:], rotation=30 if len(ks) > 6 else 0, ha="right" if len(ks) > 6 else "center")
    bars.set_ylabel("instances")
    bars.set_ylim(0, 1.15 * max(counts.max(), 1))
    bars.set_title(f"instances per class ({counts.sum()} in {stats['images']} images)", fontsize=10)
    sizes = fig.add_subplot(grid[rows, half:])
    a, ids = stats["sqrt_area"], stats["class_ids"]
    present = [k for k in ks if (ids == k).any()]
    sizes.hist([a[ids == k] for k in present], bins=30, stacked=True, color=[_class_colour(k) for k in present],
               label=[names[k] for k in present])
    for edge, word in ((32, "small | medium"), (96, "medium | large")):
        if a.size and edge <= 1.05 * a.max():
            sizes.axvline(edge, color="0.3", linestyle="--", linewidth=1)
            sizes.text(edge, 0.98, f" {word}", transform=sizes.get_xaxis_transform(), fontsize=8, va="top",
                       color="0.3")
    sizes.set_xlabel("object size sqrt(area), original pixels")
    sizes.set_ylabel("instances")
    sizes.set_title("object sizes (COCO's small / medium / large at 32 and 96)", fontsize=10)
    sizes.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------- command line
def _out_path(out):
    """``--out`` checked before any work: not a folder, and a file type matplotlib writes."""
    if out is None:
        return None
    if Path(out).is_dir():
        raise ValueError(f"--out: {out} is a folder; expected the path of a PNG file, e.g. {Path(out) / 'fig.png'}")
    kind = Path(out).suffix.lower().lstrip(".")
    if kind and kind not in FigureCanvasBase.get_supported_filetypes():
        raise ValueError(f"--out: cannot write a .{kind} figure; use .png (or .pdf, .svg, .jpg)")
    return out


def _positive(values, flag, what):
    bad = [v for v in values if not v > 0 or not math.isfinite(v)]
    if bad:
        raise ValueError(f"{flag}: expected positive {what}, got {_numbers(bad)}")


def _image_size_flag(size):
    if size < 1:
        raise ValueError(f"--image-size: expected a positive number of pixels, got {size}")


ANCHORS_HELP = "how well the anchors fit a COCO data set's objects, and better sizes"
BROWSE_HELP = "draw a sample of a COCO data set with its ground truth, and count it"


def add_anchors_arguments(a):
    """The flags of ``mrcnn-edu anchors`` (``cli.py`` registers it with ``ANCHORS_HELP`` and ``cmd_anchors``)."""
    cfg = ModelConfig()
    a.add_argument("--coco-gt", required=True, help="the annotations JSON")
    a.add_argument("--images", required=True, help="its image folder")
    a.add_argument("--image-size", type=int, default=cfg.image_size,
                   help=f"the model's image side: images are resized and padded to it (default {cfg.image_size})")
    a.add_argument("--anchor-sizes", type=float, nargs="+", default=list(cfg.anchor_sizes),
                   help=f"anchor sides in pixels (default {_numbers(cfg.anchor_sizes)})")
    a.add_argument("--anchor-ratios", type=float, nargs="+", default=list(cfg.anchor_ratios),
                   help=f"anchor aspect ratios h / w (default {_numbers(cfg.anchor_ratios)})")
    a.add_argument("--stride", type=int, default=cfg.backbone_stride,
                   help=f"pixels per RPN feature cell (default {cfg.backbone_stride})")
    a.add_argument("--seed", type=int, default=0, help="seed of the k-means of the suggested sizes (default 0)")
    a.add_argument("--out", help="also draw the figure into this PNG file")


def add_browse_arguments(b):
    """The flags of ``mrcnn-edu browse`` (``cli.py`` registers it with ``BROWSE_HELP`` and ``cmd_browse``)."""
    cfg = ModelConfig()
    b.add_argument("--coco-gt", required=True, help="the annotations JSON")
    b.add_argument("--images", required=True, help="its image folder")
    b.add_argument("--out", required=True, help="the PNG file to write")
    b.add_argument("--n", type=int, default=12, help="images to draw (default 12)")
    b.add_argument("--image-size", type=int, default=cfg.image_size,
                   help=f"draw the images resized and padded to this side, as the model sees them "
                        f"(default {cfg.image_size})")
    b.add_argument("--seed", type=int, default=0, help="seed of the sample of images (default 0)")
    b.add_argument("--first", action="store_true", help="draw the first --n images instead of a sample")


def cmd_anchors(args):
    """``mrcnn-edu anchors``: print the report (and draw the figure with ``--out``); returns 0."""
    from .data.coco import load_coco

    _image_size_flag(args.image_size)
    if args.stride < 1:
        raise ValueError(f"--stride: expected a positive number of pixels, got {args.stride}")
    if args.image_size % args.stride:
        raise ValueError(f"--image-size: expected a multiple of --stride {args.stride}, got {args.image_size}")
    _positive(args.anchor_sizes, "--anchor-sizes", "sizes in pixels")
    _positive(args.anchor_ratios, "--anchor-ratios", "ratios h / w")
    out = _out_path(args.out)
    dataset = load_coco(args.coco_gt, args.images, size=args.image_size)
    found = dataset_boxes(dataset)
    if len(found["boxes"]) == 0:
        raise ValueError(f"--image-size: no object of {args.coco_gt} is left after resizing to {args.image_size}")
    report = anchor_report(found["boxes"], args.image_size, args.stride, tuple(args.anchor_sizes),
                           tuple(args.anchor_ratios), ModelConfig().anchor_offset, np.random.default_rng(args.seed))
    print(format_anchor_report(report, images=len(dataset)))
    if out is not None:
        print(f"figure: {save(anchor_fit_figure(report), out)}")
    return 0


def cmd_browse(args):
    """``mrcnn-edu browse``: print the counts and draw the sample into ``--out``; returns 0."""
    from .data.coco import load_coco

    if args.n < 1:
        raise ValueError(f"--n: expected 1 or more images to draw, got {args.n}")
    _image_size_flag(args.image_size)
    out = _out_path(args.out)
    dataset = load_coco(args.coco_gt, args.images, size=args.image_size)
    stats = dataset_stats(dataset)
    indices = sample_indices(len(dataset), args.n, None if args.first else args.seed)
    print(format_dataset_summary(stats))
    how = "first" if args.first or len(indices) == len(dataset) else f"seed {args.seed}"
    print(f"figure: {save(browse_figure(dataset, indices, stats), out)} ({len(indices)} images, {how}, "
          f"at {args.image_size} x {args.image_size})")
    return 0
