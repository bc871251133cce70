"""Figures of the lecture's stages (host-only: everything is moved to NumPy with ``backend.to_host``).

Each function draws one stage onto a new matplotlib figure and returns it; ``save`` writes it as PNG.
The stage functions themselves live in the library; nothing here recomputes them (the stage-9 failure
figures take their verdicts from ``ap.classify_detections``).

House rules for a figure a student reads: each stage figure's title states the convention it was drawn with
(``bins='slides'``, ``aligned=True``, the NMS threshold, the anchors' centring); a heat map has a colour bar;
text on a coloured cell or patch is black or white, whichever reads on that colour (``text_colour``,
``write_values``, ``label_box``); labels of boxes sit inside their box on a patch of the box's colour, so they
stay readable on any image and never spill out of the picture.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from . import backend
from .boxes import box_iou
from .ap import OUTCOMES, classify_detections, mask_iou

__all__ = ["text_colour", "label_box", "write_values", "draw_boxes", "anchors_figure", "iou_figure",
           "rpn_labels_figure", "nms_figure", "roi_figure", "smooth_l1_figure", "draw_instances",
           "predictions_figure", "training_curves_figure", "save", "OUTCOME_COLOURS", "draw_failures",
           "failures_figure"]

LABEL_COLOURS = {1: "tab:green", 0: "tab:red", -1: "0.7"}


def _host(a):
    return np.asarray(backend.to_host(a))


def text_colour(colour):
    """``"k"`` or ``"w"``: the text colour that reads on a background of ``colour`` (any matplotlib colour)."""
    r, g, b = to_rgb(colour)
    return "k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w"


def label_box(ax, x, y, text, colour, fontsize=8, **kwargs):
    """``text`` with its top-left corner at ``(x, y)``, black or white on a small patch of ``colour``: readable
    on any image, and clipped to the axes. ``kwargs`` go to ``ax.text`` (``va``, ``ha``, ``zorder``, ...)."""
    style = dict(va="top", ha="left", clip_on=True, zorder=5)
    style.update(kwargs)
    return ax.text(x, y, text, color=text_colour(colour), fontsize=fontsize,
                   bbox=dict(facecolor=colour, alpha=0.85, pad=1.5, linewidth=0), **style)


def write_values(ax, values, image, fmt="{:.2f}", fontsize=8, skip_zeros=False, offset=0.0):
    """Write each entry of the 2-D array ``values`` on its cell (column ``x``, row ``y``, at ``(x + offset,
    y + offset)``), in black or white, whichever reads on the colour ``image`` (what ``ax.imshow`` returned)
    gives that cell."""
    values = _host(values)
    for (y, x), v in np.ndenumerate(values):
        if skip_zeros and v == 0:
            continue
        ax.text(x + offset, y + offset, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                color=text_colour(image.cmap(image.norm(v))))


def draw_boxes(ax, boxes, colour="tab:blue", linewidth=1.0, alpha=1.0, labels=None):
    """Draw ``N x 4`` boxes ``(x1, y1, x2, y2)`` on an axes whose y axis points down (image convention).

    labels : None, or one string per box, written inside the box's top-left corner (``label_box``)
    """
    for i, (x1, y1, x2, y2) in enumerate(_host(boxes)):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=linewidth,
                               alpha=alpha))
        if labels is not None:
            label_box(ax, x1, y1, labels[i], colour)


def _image_axes(ax, height, width, title, margin=0.5):
    """An axes showing the image's rectangle (light grey) with ``margin`` times its size around it."""
    ax.set_xlim(-margin * width, (1 + margin) * width)
    ax.set_ylim((1 + margin) * height, -margin * height)
    ax.add_patch(Rectangle((0, 0), width, height, fill=True, facecolor="0.95", edgecolor="k"))
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)


def _centring(centres, stride):
    """How the anchors of cell (i, j) are centred, from the first cell's centre: at its corner or its middle."""
    o = float(centres[0, 0])
    if o == 0:
        return f"centred on the cell corners ({stride} j, {stride} i): offset 0"
    return f"centred at ({stride} j + {o:g}, {stride} i + {o:g}): offset {o / stride:g}"


def anchors_figure(anchors, image_size, stride, k):
    """Left: the k anchors of the centre cell. Right: the grid of anchor positions (one dot per cell)."""
    anchors = _host(anchors)
    height, width = image_size
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    cells = len(anchors) // k
    centres = (anchors[::k, :2] + anchors[::k, 2:]) / 2
    centre_cell = int(np.argmin(((centres - [width / 2, height / 2]) ** 2).sum(axis=1)))  # nearest the middle
    cx, cy = centres[centre_cell]
    _image_axes(left, height, width, f"the k = {k} anchors of the cell at ({cx:g}, {cy:g})")
    draw_boxes(left, anchors[centre_cell * k:(centre_cell + 1) * k], colour="tab:blue", linewidth=1.5)
    left.plot(cx, cy, "r+", markersize=12)
    _image_axes(right, height, width, f"{cells} cells x {k} = {len(anchors)} anchors (stride {stride})")
    right.plot(centres[:, 0], centres[:, 1], ".", markersize=2, color="tab:blue")
    outside = ((anchors[:, 0] < 0) | (anchors[:, 1] < 0) | (anchors[:, 2] > width) | (anchors[:, 3] > height)).mean()
    right.set_xlabel(f"{outside:.0%} of the anchors reach outside the image")
    fig.suptitle(f"anchors of a {width} x {height} image, {_centring(centres, stride)}; "
                 "boxes (x1, y1, x2, y2) in image pixels", fontsize=10)
    fig.tight_layout()
    return fig


def iou_figure(box_a, box_b, iou):
    """Two boxes, their intersection shaded, and the IoU in the title."""
    a, b = _host(box_a).reshape(4), _host(box_b).reshape(4)
    fig, ax = plt.subplots(figsize=(5, 5))
    draw_boxes(ax, [a], "tab:blue", 2, labels=[f"A {tuple(float(v) for v in a)}"])
    draw_boxes(ax, [b], "tab:orange", 2, labels=[f"B {tuple(float(v) for v in b)}"])
    ix1, iy1, ix2, iy2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    if ix2 > ix1 and iy2 > iy1:
        ax.add_patch(Rectangle((ix1, iy1), ix2 - ix1, iy2 - iy1, color="tab:purple", alpha=0.3))
    lo, hi = min(a[0], b[0], a[1], b[1]) - 10, max(a[2], b[2], a[3], b[3]) + 10
    ax.set_xlim(lo, hi)
    ax.set_ylim(hi, lo)
    ax.set_aspect("equal")
    ax.set_title(f"IoU = intersection (shaded) / union = {float(iou):.3f}\n"
                 "boxes (x1, y1, x2, y2), width x2 - x1 (no +1)", fontsize=10)
    fig.tight_layout()
    return fig


def rpn_labels_figure(image_size, gt_boxes, anchors, labels):
    """Ground truth (black) and the anchors the RPN sampler picked: object (green) and not object (red)."""
    anchors, labels = _host(anchors), _host(labels)
    height, width = image_size
    fig, ax = plt.subplots(figsize=(7, 6))
    _image_axes(ax, height, width, "RPN labels: object = IoU >= 0.7 or an object's best anchor,\n"
                                   "not object = IoU < 0.3, in between ignored; 256 sampled", margin=0.4)
    negatives = np.flatnonzero(labels == 0)
    drawn = min(40, len(negatives))   # all of them would hide the picture
    negatives = negatives[np.linspace(0, len(negatives) - 1, drawn).astype(int)]
    draw_boxes(ax, anchors[negatives], LABEL_COLOURS[0], 0.6, 0.5)
    draw_boxes(ax, anchors[labels == 1], LABEL_COLOURS[1], 1.2)
    draw_boxes(ax, gt_boxes, "k", 2.5)
    ax.legend(handles=[Line2D([], [], color="k", linewidth=2.5, label="ground truth"),
                       Line2D([], [], color=LABEL_COLOURS[1], label=f"object: {(labels == 1).sum()} sampled"),
                       Line2D([], [], color=LABEL_COLOURS[0], alpha=0.6,
                              label=f"not object: {(labels == 0).sum()} sampled, {drawn} drawn")],
              loc="upper left", fontsize=8, framealpha=0.9)
    ax.set_xlabel(f"{(labels == -1).sum()} anchors left out (ignored, or not drawn into the 256)")
    fig.tight_layout()
    return fig


def nms_figure(image_size, boxes, scores, keep, iou_threshold=0.7):
    """Boxes before NMS coloured by score (left, with a colour bar) and the ones NMS keeps (right), each in its
    own colour with its score in the legend (labels on the boxes would pile up where the boxes do)."""
    boxes, scores, keep = _host(boxes), _host(scores), _host(keep)
    height, width = image_size
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    _image_axes(left, height, width, f"before NMS: {len(boxes)} boxes, coloured by score", margin=0.1)
    norm = plt.Normalize(float(scores.min()), float(scores.max()))
    for i in np.argsort(scores):                    # the best drawn last, on top
        draw_boxes(left, [boxes[i]], plt.cm.viridis(norm(scores[i])), 1.0)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=left, shrink=0.8, label="score")
    _image_axes(right, height, width, f"after NMS at IoU > {iou_threshold:g}: {len(keep)} boxes, best first",
                margin=0.1)
    for n, i in enumerate(keep):
        colour = INSTANCE_COLOURS[n % len(INSTANCE_COLOURS)]
        draw_boxes(right, [boxes[i]], colour, 2)
        right.plot([], [], color=colour, linewidth=2, label=f"score {scores[i]:.2f}")
    right.legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return fig


def roi_figure(feature_map, roi, pool_out, align_out, sample_points, bins="slides", aligned=True, sampling_ratio=2):
    """The lecture's 8 x 8 map with one RoI: RoIPool's output next to RoIAlign's and its sample points.

    roi           : ``(x1, y1, x2, y2)`` in whole pixels, both ends included (the lecture's convention)
    sample_points : S x 2 ``(x, y)`` of RoIAlign's samples, in pixel-centre coordinates (pixel x is centred on x)
    bins, aligned, sampling_ratio : what ``pool_out`` and ``align_out`` were computed with (for the titles)
    """
    fmap = _host(feature_map)
    vmin, vmax = float(fmap.min()), float(fmap.max())
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1.3, 1, 1]}, layout="constrained")
    shown = axes[0].imshow(fmap, cmap="viridis", vmin=vmin, vmax=vmax,
                           extent=(-0.5, fmap.shape[1] - 0.5, fmap.shape[0] - 0.5, -0.5))
    write_values(axes[0], fmap, shown, fontsize=7)
    x1, y1, x2, y2 = roi
    axes[0].add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False, edgecolor="r",
                                linewidth=2.5))
    pts = _host(sample_points)
    # hollow rings, so that the values under them stay readable
    axes[0].plot(pts[:, 0], pts[:, 1], "o", markerfacecolor="none", markeredgecolor="m", markeredgewidth=1.5,
                 markersize=9)
    axes[0].set_title(f"the map, RoI {tuple(roi)} in whole pixels (red),\nRoIAlign's sample points (magenta rings)",
                      fontsize=9)
    n = _host(pool_out).shape[0]
    for ax, out, name in ((axes[1], pool_out, f"RoIPool {n}x{n}, bins={bins!r}:\nthe max of each quantized bin"),
                          (axes[2], align_out, f"RoIAlign {n}x{n}, aligned={aligned}, sampling_ratio="
                                               f"{sampling_ratio}:\nthe mean of each bin's bilinear samples")):
        out = _host(out)
        image = ax.imshow(out, cmap="viridis", vmin=vmin, vmax=vmax)
        write_values(ax, out, image, fontsize=13)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes, shrink=0.85, label="feature value")
    return fig


def smooth_l1_figure(x, smooth, grad, beta=1.0):
    """Smooth-L1 against L2/2 and L1, and its gradient: quadratic near 0, linear (bounded gradient) beyond beta."""
    x, smooth, grad = _host(x), _host(smooth), _host(grad)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(x, smooth, label=f"smooth-L1, beta = {beta:g}", linewidth=2)
    left.plot(x, 0.5 * x ** 2, "--", label="L2: 0.5 x^2")
    left.plot(x, np.abs(x), ":", label="L1: |x|")
    left.set_ylim(0, 3)
    left.legend()
    left.set_title(f"smooth-L1 (beta = {beta:g}): 0.5 x^2 / beta where |x| < beta,\n|x| - 0.5 beta beyond",
                   fontsize=10)
    right.plot(x, grad, linewidth=2, label="d smooth-L1 / dx")
    right.axhline(1, color="0.7", linestyle=":", linewidth=1)
    right.axhline(-1, color="0.7", linestyle=":", linewidth=1)
    right.set_title("its gradient: x / beta near 0, then +-1: bounded,\nso an outlier cannot blow up a step",
                    fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("x = prediction - target")
        ax.axvspan(-beta, beta, color="0.93", zorder=0)
    fig.tight_layout()
    return fig


INSTANCE_COLOURS = plt.cm.tab10.colors


def draw_instances(ax, image, detection, class_names, score_min=0.5, show_scores=True):
    """An image with its instances: translucent masks, boxes, and ``class score`` labels (``class`` alone
    without ``show_scores``, for ground truth).

    detection : dict with ``boxes`` D x 4, ``scores`` D, ``labels`` D, ``masks`` D x H x W bool (host or device)
    """
    image = _host(image)
    d = {k: _host(v) for k, v in detection.items()}
    shown = image.astype(np.float32) / 255.0
    keep = np.flatnonzero(d["scores"] >= score_min)
    for n, i in enumerate(keep):
        colour = np.array(INSTANCE_COLOURS[n % len(INSTANCE_COLOURS)])
        m = d["masks"][i]
        shown[m] = 0.45 * shown[m] + 0.55 * colour
    ax.imshow(shown)
    for n, i in enumerate(keep):
        colour = INSTANCE_COLOURS[n % len(INSTANCE_COLOURS)]
        label = int(d["labels"][i])
        name = class_names[label] if label < len(class_names) else str(label)
        draw_boxes(ax, d["boxes"][i:i + 1], colour, 1.5,
                   labels=[f"{name} {d['scores'][i]:.2f}" if show_scores else name])
    ax.set_xticks([])
    ax.set_yticks([])


def predictions_figure(images, detections, class_names, columns=4, score_min=0.5, title=None):
    """A grid of images with their predicted instances (``draw_instances``) under one title."""
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, det in zip(axes.ravel(), images, detections):
        ax.axis("on")
        draw_instances(ax, image, det, class_names, score_min)
    fig.suptitle(title or f"predicted instances with score >= {score_min:g}: mask, box, class and score",
                 fontsize=10)
    fig.tight_layout()
    return fig


LOSS_KEYS = ("loss", "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


def training_curves_figure(records):
    """Losses against steps (left, log scale) and validation AP against steps (right).

    records : the lines of ``metrics.jsonl``: dicts with ``step`` and the loss keys (a training step's losses),
              ``step`` and ``val_losses`` (the same keys on validation images), or ``step`` and ``eval`` (AP)
    On the left each loss part has one colour: a line for training, dashes and dots for validation, so a gap
    that opens between the two is seen at once (the model learns the training images, not the task).
    """
    # one step axis for both: a run evaluated only at its end (``--preset 5min``) shows its AP at the right edge
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    _draw_losses(left, records)
    evals = [r for r in records if "eval" in r]
    if evals:
        steps = [r["step"] for r in evals]
        for kind, style in (("mask", "-o"), ("box", "--s")):
            for key in ("AP", "AP50", "AP75"):
                right.plot(steps, [r["eval"][f"{kind}_{key}"] for r in evals], style,
                           markersize=3 if len(evals) > 1 else 6, label=f"{kind} {key}")
        right.legend(fontsize=8)
        right.set_ylim(0, 1)
    right.set_xlabel("step")
    right.set_title("validation AP (COCO metric, pycocotools)", fontsize=10)
    fig.tight_layout()
    return fig


def _draw_losses(ax, records):
    """Training losses (lines, labelled by key) and validation losses (dashes and dots, labelled
    ``"validation <key>"``) of ``records`` on ``ax``, one colour per loss part."""
    logs = [r for r in records if "loss" in r]
    vals = [r for r in records if "val_losses" in r]
    for i, key in enumerate(LOSS_KEYS):
        width = 2 if key == "loss" else 1
        if logs:   # a step's losses are noisy: faint under the validation losses, which average many images
            ax.plot([r["step"] for r in logs], [r[key] for r in logs], color=f"C{i}", linewidth=width,
                    alpha=0.4 if vals else 1.0, label=key)
        if vals:
            ax.plot([r["step"] for r in vals], [r["val_losses"][key] for r in vals], "--o", color=f"C{i}",
                    linewidth=width + 0.5, markersize=4, zorder=3, label=f"validation {key}")
    if logs or vals:
        ax.set_yscale("log")
        parts = [Line2D([], [], color=f"C{i}", linewidth=2 if k == "loss" else 1, label=k)
                 for i, k in enumerate(LOSS_KEYS)]
        styles = [Line2D([], [], color="0.4", alpha=0.4, label="training (a step)"),
                  Line2D([], [], color="0.4", linestyle="--", marker="o", markersize=4, label="validation")]
        ax.legend(handles=parts + (styles if vals else []), fontsize=7, ncol=2 if vals else 1)
    ax.set_xlabel("step")
    ax.set_title(f"training {'and validation ' if vals else ''}losses (log scale)", fontsize=10)


def save(fig, path):
    """Write ``fig`` as a PNG (folders created) and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------
# stage 9: which detections are right, and how the others fail
# ----------------------------------------------------------------------------------------------------------

OUTCOME_COLOURS = ("tab:green", "tab:purple", "tab:orange", "tab:red", "tab:brown")   # by OUTCOMES
MISSED_COLOUR = "tab:cyan"


def _pair_iou(ground_truth, detection, iou_type):
    if iou_type == "mask":
        return mask_iou(detection["masks"], ground_truth["masks"])
    if iou_type == "box":
        return _host(box_iou(np.asarray(detection["boxes"], np.float64).reshape(-1, 4),
                             np.asarray(ground_truth["boxes"], np.float64).reshape(-1, 4)))
    raise ValueError(f"iou_type: expected 'mask' or 'box', got {iou_type!r}")


def _class_name(label, class_names):
    return class_names[label] if 0 <= label < len(class_names) else str(label)


def draw_failures(ax, image, ground_truth, detection, class_names, iou_threshold=0.5, score_min=0.5,
                  iou_type="mask"):
    """One image with every detection coloured by its outcome, and the objects nobody found outlined.

    image        : H x W x 3 uint8
    ground_truth : dict with ``boxes`` G x 4, ``labels`` G, ``masks`` G x H x W bool
    detection    : dict with ``boxes`` D x 4, ``scores`` D, ``labels`` D, ``masks`` D x H x W bool (as
                   ``MaskRCNN.predict`` returns, host or device)
    iou_type     : "mask" (mask IoU, as mask AP) or "box"
    Detections get a tinted mask and a box in ``OUTCOME_COLOURS`` (solid for true positives, dashed for the
    rest) with ``class score`` and, for a wrong class, the object's true class; missed objects get a dotted
    outline in ``MISSED_COLOUR``. Returns ``classify_detections``' dict.
    """
    gt = {k: _host(v) for k, v in ground_truth.items()}
    det = {k: _host(v) for k, v in detection.items()}
    iou = _pair_iou(gt, det, iou_type)
    result = classify_detections(iou, gt["labels"], det["labels"], det["scores"], iou_threshold, score_min)
    outcome, shown = result["outcome"], np.flatnonzero(result["outcome"] >= 0)
    # the object a wrong-class detection covers: its best overlap among the other classes' objects
    other = det["labels"].reshape(-1, 1) != gt["labels"].reshape(1, -1)
    truth = np.where(other, iou, -1.0).argmax(axis=1) if iou.size else np.zeros(len(iou), dtype=np.int64)
    tinted = _host(image).astype(np.float32) / 255.0
    for i in shown:
        m = det["masks"][i]
        tinted[m] = 0.5 * tinted[m] + 0.5 * np.array(to_rgb(OUTCOME_COLOURS[outcome[i]]))
    ax.imshow(tinted)
    for i in shown:
        x1, y1, x2, y2 = det["boxes"][i]
        colour = OUTCOME_COLOURS[outcome[i]]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5,
                               linestyle="-" if outcome[i] == 0 else "--"))
        text = f"{_class_name(int(det['labels'][i]), class_names)} {det['scores'][i]:.2f}"
        if outcome[i] == 2:
            text += f" (is {_class_name(int(gt['labels'][truth[i]]), class_names)})"
        label_box(ax, x1 + 1, y1 + 1, text, colour, fontsize=7)
    for g in np.flatnonzero(result["missed"]):
        x1, y1, x2, y2 = gt["boxes"][g]
        if "masks" in gt:
            ax.contour(gt["masks"][g].astype(float), levels=[0.5], colors=[MISSED_COLOUR], linewidths=2,
                       linestyles=":")
        else:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=MISSED_COLOUR, linewidth=2,
                                   linestyle=":"))
        label_box(ax, x1 + 1, y2 - 1, f"missed {_class_name(int(gt['labels'][g]), class_names)}", MISSED_COLOUR,
                  fontsize=7, va="bottom")
    counts = np.bincount(outcome[shown], minlength=len(OUTCOMES))
    ax.set_title(f"{counts[0]} right, {counts[1:].sum()} wrong, {int(result['missed'].sum())} missed", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return result


def failures_figure(images, ground_truths, detections, class_names, iou_threshold=0.5, score_min=0.5,
                    iou_type="mask", columns=4):
    """A grid of ``draw_failures`` panels with a legend of the outcomes; returns the figure.

    images : N images H x W x 3 uint8;  ground_truths, detections : N dicts (see ``draw_failures``)
    """
    if not len(images) == len(ground_truths) == len(detections):
        raise ValueError(f"ground_truths, detections: expected {len(images)} of each (one per image), got "
                         f"{len(ground_truths)} and {len(detections)}")
    rows = max(1, math.ceil(len(images) / columns))
    height = 3.5 * rows + 0.6                                    # room for each panel's title, and the legend
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, height), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, gt, det in zip(axes.ravel(), images, ground_truths, detections):
        ax.axis("on")
        draw_failures(ax, image, gt, det, class_names, iou_threshold, score_min, iou_type)
    handles = [Line2D([], [], color=c, linestyle="-" if i == 0 else "--", linewidth=2, label=name)
               for i, (name, c) in enumerate(zip(OUTCOMES, OUTCOME_COLOURS))]
    handles.append(Line2D([], [], color=MISSED_COLOUR, linestyle=":", linewidth=2, label="missed object"))
    ncol = len(handles) if columns >= 3 else 3                   # a narrow grid: the legend in two rows
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(f"detections with score >= {score_min:g}, sorted by COCO's greedy matching at {iou_type} IoU >= "
                 f"{iou_threshold:g}", fontsize=10)
    fig.tight_layout(rect=(0, (0.45 if ncol == len(handles) else 0.75) / height, 1, 1), h_pad=1.2)
    return fig
