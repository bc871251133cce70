"""Figures of the lecture's stages (host-only: everything is moved to NumPy with ``backend.to_host``).

Each function draws one stage onto a new matplotlib figure and returns it; ``save`` writes it as PNG.
The stage functions themselves live in the library; nothing here recomputes them (the stage-9 failure
figures take their verdicts from ``ap.classify_detections``).
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

__all__ = ["draw_boxes", "anchors_figure", "iou_figure", "rpn_labels_figure", "nms_figure", "roi_figure",
           "smooth_l1_figure", "draw_instances", "predictions_figure", "training_curves_figure", "save",
           "OUTCOME_COLOURS", "draw_failures", "failures_figure"]

LABEL_COLOURS = {1: "tab:green", 0: "tab:red", -1: "0.7"}


def _host(a):
    return np.asarray(backend.to_host(a))


def draw_boxes(ax, boxes, colour="tab:blue", linewidth=1.0, alpha=1.0, labels=None):
    """Draw ``N x 4`` boxes ``(x1, y1, x2, y2)`` on an axes whose y axis points down (image convention)."""
    for i, (x1, y1, x2, y2) in enumerate(_host(boxes)):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=linewidth,
                               alpha=alpha))
        if labels is not None:
            ax.text(x1, y1, labels[i], color=colour, fontsize=7, va="bottom")


def _image_axes(ax, height, width, title):
    ax.set_xlim(-0.5 * width, 1.5 * width)
    ax.set_ylim(1.5 * height, -0.5 * height)
    ax.add_patch(Rectangle((0, 0), width, height, fill=True, facecolor="0.95", edgecolor="k"))
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)


def anchors_figure(anchors, image_size, stride, k):
    """Left: the k anchors of the centre cell. Right: the grid of anchor positions (one dot per cell)."""
    anchors = _host(anchors)
    height, width = image_size
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    cells = len(anchors) // k
    centres = (anchors[::k, :2] + anchors[::k, 2:]) / 2
    centre_cell = int(np.argmin(((centres - [width / 2, height / 2]) ** 2).sum(axis=1)))  # nearest the middle
    _image_axes(left, height, width, f"the k = {k} anchors of one cell")
    draw_boxes(left, anchors[centre_cell * k:(centre_cell + 1) * k], colour="tab:blue")
    _image_axes(right, height, width, f"{cells} cells x {k} = {len(anchors)} anchors (stride {stride})")
    right.plot(centres[:, 0], centres[:, 1], ".", markersize=2, color="tab:blue")
    outside = ((anchors[:, 0] < 0) | (anchors[:, 1] < 0) | (anchors[:, 2] > width) | (anchors[:, 3] > height)).mean()
    right.set_xlabel(f"{outside:.0%} of the anchors reach outside the image")
    fig.tight_layout()
    return fig


def iou_figure(box_a, box_b, iou):
    """Two boxes, their intersection shaded, and the IoU in the title."""
    a, b = _host(box_a).reshape(4), _host(box_b).reshape(4)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    draw_boxes(ax, [a], "tab:blue", 2)
    draw_boxes(ax, [b], "tab:orange", 2)
    ix1, iy1, ix2, iy2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    if ix2 > ix1 and iy2 > iy1:
        ax.add_patch(Rectangle((ix1, iy1), ix2 - ix1, iy2 - iy1, color="tab:purple", alpha=0.3))
    lo, hi = min(a[0], b[0], a[1], b[1]) - 10, max(a[2], b[2], a[3], b[3]) + 10
    ax.set_xlim(lo, hi)
    ax.set_ylim(hi, lo)
    ax.set_aspect("equal")
    ax.set_title(f"IoU = intersection / union = {float(iou):.3f}", fontsize=10)
    return fig


def rpn_labels_figure(image_size, gt_boxes, anchors, labels):
    """Ground truth (black) and the anchors the RPN sampler picked: object (green) and not object (red)."""
    anchors, labels = _host(anchors), _host(labels)
    height, width = image_size
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    _image_axes(ax, height, width, "RPN labels: object (IoU >= 0.7 or best) / not object (IoU < 0.3)")
    negatives = np.flatnonzero(labels == 0)
    negatives = negatives[np.linspace(0, len(negatives) - 1, min(40, len(negatives))).astype(int)]  # all would hide the picture
    draw_boxes(ax, anchors[negatives], LABEL_COLOURS[0], 0.6, 0.5)
    draw_boxes(ax, anchors[labels == 1], LABEL_COLOURS[1], 1.2)
    draw_boxes(ax, gt_boxes, "k", 2.5)
    ax.set_xlabel(f"sampled: {(labels == 1).sum()} object, {(labels == 0).sum()} not object "
                  f"(40 drawn), {(labels == -1).sum()} ignored")
    return fig


def nms_figure(image_size, boxes, scores, keep):
    """Proposals before NMS (left, darker = higher score) and the ones NMS keeps (right)."""
    boxes, scores, keep = _host(boxes), _host(scores), _host(keep)
    height, width = image_size
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    _image_axes(left, height, width, f"before NMS: {len(boxes)} boxes")
    shade = (scores - scores.min()) / max(np.ptp(scores), 1e-12)
    for box, s in zip(boxes, shade):
        draw_boxes(left, [box], plt.cm.viridis(s), 0.8)
    _image_axes(right, height, width, f"after NMS (IoU > 0.7 suppressed): {len(keep)} boxes")
    draw_boxes(right, boxes[keep], "tab:green", 1.5, labels=[f"{scores[i]:.2f}" for i in keep])
    fig.tight_layout()
    return fig


def roi_figure(feature_map, roi, pool_out, align_out, sample_points):
    """The lecture's 8 x 8 map with one RoI: RoIPool's output next to RoIAlign's and its sample points."""
    fmap = _host(feature_map)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    axes[0].imshow(fmap, cmap="viridis", extent=(0, fmap.shape[1], fmap.shape[0], 0))
    x1, y1, x2, y2 = roi
    axes[0].add_patch(Rectangle((x1, y1), x2 - x1 + 1, y2 - y1 + 1, fill=False, edgecolor="r", linewidth=2))
    pts = _host(sample_points)
    axes[0].plot(pts[:, 0] + 0.5, pts[:, 1] + 0.5, "w.", markersize=4)
    axes[0].set_title("feature map, RoI (red), RoIAlign samples (white)", fontsize=9)
    for ax, out, name in ((axes[1], pool_out, "RoIPool (quantized bins, max)"),
                          (axes[2], align_out, "RoIAlign (bilinear samples, mean)")):
        out = _host(out)
        ax.imshow(out, cmap="viridis", vmin=fmap.min(), vmax=fmap.max())
        for (i, j), v in np.ndenumerate(out):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=11)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def smooth_l1_figure(x, smooth, grad):
    """Smooth-L1 against L2/2 and L1, and its gradient: quadratic near 0, linear (bounded gradient) beyond 1."""
    x, smooth, grad = _host(x), _host(smooth), _host(grad)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(x, smooth, label="smooth-L1", linewidth=2)
    left.plot(x, 0.5 * x ** 2, "--", label="0.5 x^2")
    left.plot(x, np.abs(x), ":", label="|x|")
    left.set_ylim(0, 3)
    left.legend()
    left.set_title("loss", fontsize=10)
    right.plot(x, grad, linewidth=2)
    right.set_title("gradient: bounded by 1, so outliers do not explode", fontsize=10)
    fig.tight_layout()
    return fig


INSTANCE_COLOURS = plt.cm.tab10.colors


def draw_instances(ax, image, detection, class_names, score_min=0.5):
    """An image with its instances: translucent masks, boxes, and ``class score`` labels.

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
        draw_boxes(ax, d["boxes"][i:i + 1], colour, 1.5, labels=[f"{name} {d['scores'][i]:.2f}"])
    ax.set_xticks([])
    ax.set_yticks([])


def predictions_figure(images, detections, class_names, columns=4):
    """A grid of images with their predicted instances (``draw_instances``)."""
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, det in zip(axes.ravel(), images, detections):
        ax.axis("on")
        draw_instances(ax, image, det, class_names)
    fig.tight_layout()
    return fig


def training_curves_figure(records):
    """Loss parts against steps (left, log scale) and validation AP against steps (right).

    records : the lines of ``metrics.jsonl`` (dicts with ``step`` and loss keys, or ``step`` and ``eval``)
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    logs = [r for r in records if "loss" in r]
    if logs:
        steps = [r["step"] for r in logs]
        for key in ("loss", "loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"):
            left.plot(steps, [r[key] for r in logs], label=key, linewidth=2 if key == "loss" else 1)
        left.set_yscale("log")
        left.legend(fontsize=7)
    left.set_xlabel("step")
    left.set_title("training losses", fontsize=10)
    evals = [r for r in records if "eval" in r]
    if evals:
        steps = [r["step"] for r in evals]
        for kind, style in (("mask", "-o"), ("box", "--s")):
            for key in ("AP", "AP50", "AP75"):
                right.plot(steps, [r["eval"][f"{kind}_{key}"] for r in evals], style, markersize=3,
                           label=f"{kind} {key}")
        right.legend(fontsize=7)
        right.set_ylim(0, 1)
    right.set_xlabel("step")
    right.set_title("validation (COCO metric)", fontsize=10)
    fig.tight_layout()
    return fig


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


# labels inside their boxes, on a light patch, never spilling over the panel above
_LABEL_STYLE = dict(fontsize=7, clip_on=True, bbox=dict(facecolor="white", alpha=0.7, pad=0.3, linewidth=0))


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
        ax.text(x1 + 1, y1 + 1, text, color=colour, va="top", **_LABEL_STYLE)
    for g in np.flatnonzero(result["missed"]):
        x1, y1, x2, y2 = gt["boxes"][g]
        if "masks" in gt:
            ax.contour(gt["masks"][g].astype(float), levels=[0.5], colors=[MISSED_COLOUR], linewidths=2,
                       linestyles=":")
        else:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=MISSED_COLOUR, linewidth=2,
                                   linestyle=":"))
        ax.text(x1 + 1, y2 - 1, f"missed {_class_name(int(gt['labels'][g]), class_names)}", color=MISSED_COLOUR,
                va="bottom", **_LABEL_STYLE)
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
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    return fig
