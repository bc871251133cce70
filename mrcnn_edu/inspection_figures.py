"""Figures of ``inspection.py``: a trained model on one image, stage by stage, its activations and its weights
(host-only: every array is moved to NumPy with ``backend.to_host``; nothing here recomputes a stage).

One function per figure, each returning a matplotlib figure; ``draw_stages`` and ``draw_weights`` write them
as numbered PNGs and ``stage_report`` says in a few lines what they show. The house rules of
``visualize.py`` hold: titles state the thresholds a stage used, heat maps have a colour bar, labels sit on a
patch of their box's colour.

    01_rpn_anchors      anchors that match the ground truth; the RPN's best anchors and their boxes after deltas
    02_proposals        the boxes before NMS and the proposals after it, with the recall of the ground truth
    03_box_head         the RoIs coloured by their most probable class, and every RoI's class probabilities
    04_refined_boxes    RoIs moved by their class-specific deltas; one RoI's box for each class
    05_class_nms        candidates above the score threshold, those per-class NMS keeps, the detections
    06_masks            each detection's K class masks, its own class's mask pasted back, the binary mask
    07_activations      a table of every layer's output statistics
    08_feature_maps     the most active channels of one layer per stage
    09_weight_histograms, 10_weight_norms   (``--weights``) each layer's weights; norms over training
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from . import backend
from .visualize import INSTANCE_COLOURS, draw_boxes, label_box, save, write_values

__all__ = ["STAGE_FILES", "WEIGHT_FILES", "EXPLAIN_FILE", "rpn_figure", "proposals_figure", "box_head_figure",
           "refinement_figure", "class_nms_figure", "masks_figure", "activations_figure", "feature_maps_figure",
           "weight_histograms_figure", "weight_norms_figure", "draw_stages", "draw_weights", "stage_report"]

STAGE_FILES = {"rpn": "01_rpn_anchors.png", "proposals": "02_proposals.png", "box_head": "03_box_head.png",
               "refinement": "04_refined_boxes.png", "class_nms": "05_class_nms.png", "masks": "06_masks.png",
               "activations": "07_activations.png", "feature_maps": "08_feature_maps.png"}
WEIGHT_FILES = {"histograms": "09_weight_histograms.png", "norms": "10_weight_norms.png"}
EXPLAIN_FILE = "11_explanation.png"      # --explain K: explain.explanation_figure
NO_GT = "no ground truth for this image (--image):\n{}"
LABEL_GREEN, IGNORED_GREY = "tab:green", "0.6"


def _h(a):
    return np.asarray(backend.to_host(a))


def _class_colour(label):
    """One colour per class, the same in every figure: tab10 by class number (1 orange, 2 green, 3 red)."""
    return INSTANCE_COLOURS[int(label) % len(INSTANCE_COLOURS)]


def _name(label, class_names):
    label = int(label)
    return class_names[label] if 0 <= label < len(class_names) else str(label)


def _show(ax, image, title, margin=0.0):
    """The image in its pixel coordinates (boxes drawn on it line up), with ``margin`` times its size around
    it in light grey (anchors reach outside the image)."""
    height, width = image.shape[:2]
    ax.imshow(_h(image), extent=(0, width, height, 0))
    ax.set_xlim(-margin * width, (1 + margin) * width)
    ax.set_ylim((1 + margin) * height, -margin * height)
    ax.set_facecolor("0.93")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _outlined(ax, boxes, colour, linewidth=1.5, linestyle="-", alpha=1.0, labels=None):
    """``draw_boxes`` over a thin black stroke, so a box reads on any background (shapes' colours are random)."""
    draw_boxes(ax, boxes, "k", linewidth + 1.2, alpha)
    first = len(ax.patches)
    draw_boxes(ax, boxes, colour, linewidth, alpha, labels)
    for patch in ax.patches[first:]:            # dashes over the solid black: black and colour alternate
        patch.set_linestyle(linestyle)


def _draw_gt(ax, gt, class_names, notes=None):
    """Ground-truth boxes dashed white on black (readable on any background, and boxes drawn exactly on them
    still show), each named at its lower-left corner."""
    boxes, labels = _h(gt.boxes), _h(gt.labels)
    _outlined(ax, boxes, "w", 1.3, "--")
    for i, (x1, _, _, y2) in enumerate(boxes):
        text = _name(labels[i], class_names) + (f"\n{notes[i]}" if notes is not None else "")
        label_box(ax, x1, y2, text, "w", fontsize=7, va="bottom")


def _no_gt(ax, image, why, margin=0.3):
    _show(ax, image, "", margin)
    ax.text(0.5, 0.5, NO_GT.format(why), transform=ax.transAxes, ha="center", va="center", wrap=True,
            fontsize=9, bbox=dict(facecolor="w", alpha=0.9))


def _legend(ax, entries, title=None):
    """A legend of ``(text, colour, linestyle)`` lines under the axes, in as many columns as fit."""
    if not entries:
        return
    handles = [Line2D([], [], color=c, linestyle=s, linewidth=2, label=t) for t, c, s in entries]
    columns = max(1, min(4, len(handles), 90 // (max(len(t) for t, _, _ in entries) + 6)))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=columns, fontsize=7,
              title=title, title_fontsize=7, frameon=False)


def _two_panels():
    """Two square image panels with room above for two-line titles and below for a legend (fixed margins:
    constrained layout misplaces titles of fixed-aspect axes that hang legends below them)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 7.0))
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.12, wspace=0.06)
    return fig, axes


def _by_score(ax, boxes, scores, norm, many):
    """Boxes coloured by score on viridis, the weak ones thin and faint, the best drawn last (on top)."""
    for i in np.argsort(scores):
        strength = norm(scores[i])
        draw_boxes(ax, boxes[i:i + 1], plt.cm.viridis(strength), (0.4 if many else 0.8) + 1.6 * strength,
                   0.25 + 0.75 * strength)


# ----------------------------------------------------------------------------------------------- 01 RPN
def rpn_figure(t, class_names, top=8):
    """Left: the anchors labelled against the ground truth (objects green, ignored grey). Right: the ``top``
    anchors of highest objectness (dashed) and their boxes after the RPN's deltas (solid)."""
    fig, (left, right) = _two_panels()
    anchors = _h(t.rpn.anchors)
    if t.gt is None:
        _no_gt(left, t.image, "the anchors' labels need the objects' boxes")
    else:
        labels, matches, best = _h(t.rpn.labels), _h(t.rpn.matches), _h(t.rpn.best_iou)
        n_obj, n_ign = int((labels == 1).sum()), int((labels == -1).sum())
        n_not = len(anchors) - n_obj - n_ign
        _show(left, t.image, f"the {len(anchors)} anchors labelled against the ground truth (dashed white):\n"
                             f"{n_not} not objects (IoU < 0.3) are not drawn", margin=0.3)
        draw_boxes(left, anchors[labels == -1], IGNORED_GREY, 0.5, 0.4)
        _outlined(left, anchors[labels == 1], LABEL_GREEN, 1.6)
        _legend(left, [(f"{n_obj} objects: IoU >= 0.7, or a box's best anchor", LABEL_GREEN, "-"),
                       (f"{n_ign} ignored: 0.3 <= IoU < 0.7", IGNORED_GREY, "-")])
        counts = np.bincount(matches[matches >= 0], minlength=len(best))
        _draw_gt(left, t.gt, class_names, [f"{c} anchor{'' if c == 1 else 's'}\nbest IoU {b:.2f}"
                                           for c, b in zip(counts, best)])
    p = t.proposals
    n = min(top, len(_h(p.before_nms)))
    _show(right, t.image, f"the RPN's {n} best anchors of {len(anchors)} by objectness (dashed)\nand their boxes "
                          "after the deltas (solid): weights (1, 1, 1, 1), clipped", margin=0.3)
    entries = []
    for i, (anchor, box, score) in enumerate(zip(anchors[_h(p.from_anchor)[:n]], _h(p.before_nms)[:n],
                                                 _h(p.before_scores)[:n])):
        colour = INSTANCE_COLOURS[i % len(INSTANCE_COLOURS)]
        _outlined(right, [anchor], colour, 1.0, "--")
        _outlined(right, [box], colour, 2.0)
        entries.append((f"#{i + 1}: {score:.3f}", colour, "-"))
    _legend(right, entries, title="objectness (sigmoid) of the anchor")
    return fig


# ----------------------------------------------------------------------------------------------- 02 proposals
def _recall_text(recall, key):
    if recall is None:
        return "recall: not computed, there is no ground truth for this image (--image)"
    return "recall of the ground truth: " + ", ".join(f"{r:.0%} at IoU {iou:g}" for iou, r in recall[key].items())


def proposals_figure(t, class_names):
    """Left: the boxes before NMS, coloured by objectness (the weak ones faint). Right: the proposals NMS keeps."""
    p, cfg = t.proposals, t.config
    before, scores = _h(p.before_nms), _h(p.before_scores)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.8), layout="constrained")
    norm = plt.Normalize(0.0, 1.0)
    titles = (f"before NMS: the {len(before)} boxes of the {len(_h(p.top_anchors))} best anchors (decoded, "
              f"clipped, none tiny)\n{_recall_text(p.recall, 'before_nms')}",
              f"after NMS at IoU > {cfg.rpn_nms:g}, the best {cfg.rpn_post_nms_test} kept: {len(_h(p.boxes))} "
              f"proposals\n{_recall_text(p.recall, 'after_nms')}")
    for ax, keep, title in zip(axes, (np.arange(len(before)), _h(p.kept)), titles):
        _show(ax, t.image, title, margin=0.05)
        _by_score(ax, before[keep], scores[keep], norm, many=len(keep) > 50)
        if t.gt is not None:
            _draw_gt(ax, t.gt, class_names)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes, shrink=0.8,
                 label="objectness (sigmoid)")
    return fig


# ----------------------------------------------------------------------------------------------- 03 box head
def box_head_figure(t, class_names):
    """Left: the RoIs, each in the colour of its most probable class (background: thin grey), numbered as the
    rows on the right. Right: every RoI's K class probabilities, RoIs in the proposals' order."""
    probs, rois = _h(t.box_head.class_probs), _h(t.proposals.boxes)
    best = probs.argmax(axis=1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 6.5), gridspec_kw={"width_ratios": [1.5, 1]},
                                      layout="constrained")
    _show(left, t.image, f"the {len(rois)} RoIs (the proposals), coloured by their most probable class:\n"
                         f"{int((best > 0).sum())} objects, {int((best == 0).sum())} background (thin grey); "
                         "numbered as the rows on the right", margin=0.05)
    draw_boxes(left, rois[best == 0], IGNORED_GREY, 0.6, 0.7)
    for i in np.flatnonzero(best > 0)[::-1]:
        _outlined(left, rois[i:i + 1], _class_colour(best[i]), 1.5, labels=[f"#{i}"])
    _legend(left, [(_name(k, class_names), _class_colour(k), "-") for k in range(1, probs.shape[1])])
    image = right.imshow(probs, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    if len(probs) <= 40:
        write_values(right, probs, image, fontsize=6)
    right.set_xticks(range(probs.shape[1]), [_name(k, class_names) for k in range(probs.shape[1])], fontsize=8)
    right.set_yticks(range(len(probs)), [f"#{i}" for i in range(len(probs))], fontsize=6)
    right.set_title(f"class probabilities of each RoI\n(softmax over K = {probs.shape[1]}, background included)",
                    fontsize=9)
    fig.colorbar(image, ax=right, shrink=0.8, label="probability")
    return fig


# ----------------------------------------------------------------------------------------------- 04 refinement
def refinement_figure(t, class_names, most=6):
    """Left: where the detections come from: each one's RoI (dashed) and that RoI's box for the detection's
    class (solid). Right: the best detection's RoI and its K - 1 class-specific boxes, one per object class."""
    probs, rois, class_boxes = _h(t.box_head.class_probs), _h(t.proposals.boxes), _h(t.box_head.class_boxes)
    found = t.box_head.after_nms[:len(_h(t.detections["scores"]))][:most]
    boxes, scores, labels, roi = (_h(a) for a in t.box_head.candidate(found))
    fig, (left, right) = _two_panels()
    if not len(roi):
        for ax in (left, right):
            _show(ax, t.image, f"no detections: no candidate scored above {t.config.score_threshold:g}")
        return fig
    _show(left, t.image, f"where the best {len(roi)} detections come from: each one's RoI (dashed) and that\n"
                         "RoI's box for the detection's class (solid): the class's deltas, weights (10, 10, 5, 5)",
          margin=0.05)
    entries = []
    for n, (i, box, label, score) in enumerate(zip(roi, boxes, labels, scores)):
        colour = INSTANCE_COLOURS[n % len(INSTANCE_COLOURS)]
        _outlined(left, rois[i:i + 1], colour, 1.5, "--")
        _outlined(left, box[None], colour, 2.0)
        entries.append((f"{n}: {_name(label, class_names)} {score:.2f}, RoI #{i}", colour, "-"))
    _legend(left, entries)
    i = roi[0]
    _show(right, t.image, f"each class has its own box: RoI #{i} (dashed white)\nand its {class_boxes.shape[1]} "
                          "class-specific boxes (solid), clipped", margin=0.05)
    _outlined(right, rois[i:i + 1], "w", 1.2, "--")
    for k in range(class_boxes.shape[1]):
        _outlined(right, class_boxes[i, k][None], _class_colour(k + 1), 2.0)
    _legend(right, [(f"{_name(k + 1, class_names)}, p {probs[i, k + 1]:.2f}", _class_colour(k + 1), "-")
                    for k in range(class_boxes.shape[1])])
    return fig


# ----------------------------------------------------------------------------------------------- 05 class NMS
def _draw_detections(ax, image, detections, class_names, score_min):
    """The detections with score >= ``score_min``: masks tinted and boxes in their class's colour."""
    d = {k: _h(v) for k, v in detections.items()}
    shown = _h(image).astype(np.float32) / 255.0
    keep = np.flatnonzero(d["scores"] >= score_min)
    for i in keep:
        m = d["masks"][i]
        shown[m] = 0.45 * shown[m] + 0.55 * np.array(_class_colour(d["labels"][i]))
    _show(ax, shown, "")
    for i in keep:
        _outlined(ax, d["boxes"][i:i + 1], _class_colour(d["labels"][i]), 1.5,
                  labels=[f"{_name(d['labels'][i], class_names)} {d['scores'][i]:.2f}"])
    return len(keep)


def class_nms_figure(t, class_names, score_min=0.5):
    """Left: the candidates (a box for each RoI and object class scoring above the threshold), by class.
    Middle: those NMS keeps within each class. Right: the detections with their masks."""
    cfg, b = t.config, t.box_head
    fig, axes = plt.subplots(1, 3, figsize=(16, 6.4), layout="constrained")
    stages = ((b.candidates, False, f"{len(_h(b.candidates))} candidates: a box per RoI and object class with "
                                    f"score > {cfg.score_threshold:g}\n(colour: class; line width: score)"),
              (b.after_nms, True, f"after NMS within each class at IoU > {cfg.detection_nms:g}: "
                                  f"{len(_h(b.after_nms))} kept\n(labelled where the score is >= {score_min:g})"))
    for ax, (index, labelled, title) in zip(axes, stages):
        _show(ax, t.image, title, margin=0.02)
        boxes, scores, labels, _ = (_h(a) for a in b.candidate(index))
        for i in np.argsort(scores):
            text = f"{_name(labels[i], class_names)} {scores[i]:.2f}"
            _outlined(ax, boxes[i:i + 1], _class_colour(labels[i]), 0.8 + 2.2 * scores[i],
                      labels=[text] if labelled and scores[i] >= score_min else None)
    found = len(_h(t.detections["scores"]))
    shown = _draw_detections(axes[2], t.image, t.detections, class_names, score_min)
    axes[2].set_title(f"the {found} detections (the best {cfg.detections_per_image} at most); the {shown} with "
                      f"score\n>= {score_min:g} drawn, with their masks (mask probability >= 0.5)", fontsize=9)
    for ax in axes:
        _legend(ax, [(_name(k, class_names), _class_colour(k), "-") for k in range(1, cfg.num_classes)])
    return fig


# ----------------------------------------------------------------------------------------------- 06 masks
def _class_masks(axes, probs, own, class_names):
    """One detection's K - 1 object-class masks (``probs`` K x m x m), its own class ``own`` framed in red;
    returns the last image drawn (for the colour bar)."""
    for k, ax in enumerate(axes, start=1):
        image = ax.imshow(probs[k], cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{_name(k, class_names)} mask" + (" (its class)" if k == own else ""), fontsize=8,
                     fontweight="bold" if k == own else "normal")
        if k == own:
            for side in ax.spines.values():
                side.set(edgecolor="r", linewidth=3)
    return image


def masks_figure(t, class_names, most=5):
    """One row per detection (the ``most`` best): its K - 1 class masks (m x m sigmoid probabilities; its
    own class framed), its own class's mask pasted into the image, and the binary mask (>= 0.5)."""
    probs, pasted = _h(t.mask_head.probs), _h(t.mask_head.pasted)
    d = {k: _h(v) for k, v in t.detections.items()}
    rows, K = min(most, len(probs)), t.config.num_classes
    if rows == 0:
        fig, ax = plt.subplots(figsize=(6, 4))
        _show(ax, t.image, "no detections: the mask head had nothing to run on")
        return fig
    cols = K - 1 + 2
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows + 0.7), squeeze=False,
                             layout="constrained")
    for r in range(rows):
        own = int(d["labels"][r])
        image = _class_masks(axes[r, :K - 1], probs[r], own, class_names)
        axes[r, 0].set_ylabel(f"detection {r}:\n{_name(own, class_names)} {d['scores'][r]:.2f}", fontsize=9)
        paste = axes[r, K - 1]
        _show(paste, t.image, "its class's mask pasted", margin=0.0)
        paste.imshow(pasted[r], cmap="viridis", vmin=0, vmax=1, alpha=0.75, extent=(0, pasted.shape[2],
                                                                                     pasted.shape[1], 0))
        draw_boxes(paste, d["boxes"][r:r + 1], "w", 1.0)
        _draw_detections(axes[r, K], t.image, {k: v[r:r + 1] for k, v in d.items()}, class_names, 0.0)
        axes[r, K].set_title("mask = pasted >= 0.5", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="mask probability (sigmoid)")
    fig.suptitle(f"each detection's {K - 1} class masks of {probs.shape[-1]} x {probs.shape[-1]} (only its own "
                 "class's is used), pasted back into its box in the image (bilinear)", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------- 07 table
def activations_figure(activations):
    """A table of every layer's output statistics; the share of zeros shaded (a ReLU that never fires is
    dark)."""
    table = activations.table
    cells = [[s.name, s.layer, " x ".join(map(str, s.shape)), f"{s.mean:.3g}", f"{s.std:.3g}", f"{s.zeros:.0%}",
              f"{s.min:.3g}", f"{s.max:.3g}"] for s in table]
    fig, ax = plt.subplots(figsize=(11, 0.22 * len(cells) + 1.0))
    ax.axis("off")
    shown = ax.table(cellText=cells, colLabels=["layer", "type", "output shape", "mean", "std", "zeros",
                                                "min", "max"], loc="upper center", cellLoc="right",
                     colWidths=[0.22, 0.12, 0.16, 0.1, 0.1, 0.08, 0.1, 0.1])
    shown.auto_set_font_size(False)
    shown.set_fontsize(7)
    for row, s in enumerate(table, start=1):
        shown[row, 0].set_text_props(ha="left")
        if s.zeros == s.zeros:                                       # not NaN
            shown[row, 5].set_facecolor(plt.cm.Reds(0.8 * s.zeros))
            shown[row, 5].set_text_props(color="w" if s.zeros > 0.6 else "k")
    ax.set_title("activations of every layer while the model predicts this image (zeros: the share of outputs "
                 "exactly 0; after a ReLU, the units that did not fire)", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- 08 maps
STAGE_NAMES = {"backbone.stage1": "stage 1 (stride 2)", "backbone.stage2": "C2 (stride 4)",
               "backbone.stage3": "C3 (stride 8)", "backbone.stage4": "C4 (stride 16)",
               "backbone.stage5": "C5 (stride 32)", "fpn.smooth2": "P2 (stride 4)", "fpn.smooth3": "P3 (stride 8)",
               "rpn.conv": "RPN 3 x 3 conv", "mask_head.fcn": "mask head\n(detection 0)"}


def feature_maps_figure(activations, channels=8):
    """One row per stage: its last ReLU's ``channels`` most active channels (largest mean), each on its own
    colour scale from 0."""
    maps = {k: _h(v) for k, v in activations.feature_maps.items()}
    fig, axes = plt.subplots(len(maps), channels, figsize=(1.5 * channels + 1.5, 1.6 * len(maps) + 0.6),
                             squeeze=False)
    for row, (stage, fmap) in zip(axes, maps.items()):
        means = fmap.mean(axis=(1, 2))
        best = np.argsort(-means, kind="stable")[:channels]
        for ax in row:
            ax.axis("off")
        for ax, c in zip(row, best):
            ax.axis("on")
            ax.imshow(fmap[c], cmap="magma", vmin=0, vmax=max(float(fmap[c].max()), 1e-12))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"ch {c}, mean {means[c]:.2f}", fontsize=7)
        row[0].set_ylabel(f"{STAGE_NAMES.get(stage, stage)}\n{fmap.shape[0]} x {fmap.shape[1]} x {fmap.shape[2]}",
                          fontsize=8)
    fig.suptitle(f"feature maps: each stage's {channels} most active channels after its last ReLU "
                 "(bright = strong; each map on its own scale from 0)", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- 09, 10 weights
def _grid(n, columns):
    rows = max(1, math.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.0 * rows + 0.6), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def weight_histograms_figure(report, columns=6):
    """A histogram of each layer's weights (log counts), with their shape and standard deviation."""
    fig, axes = _grid(len(report.weights), columns)
    for ax, (name, w) in zip(axes, report.weights.items()):
        w = _h(w)
        ax.hist(w.ravel(), bins=40, color="tab:blue" if w.ndim > 1 else "tab:purple")
        if w.size >= 1000:                       # a few dozen values read better on a linear axis
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{name}\n{' x '.join(map(str, w.shape))}, std {w.std():.3g}", fontsize=7)
        ax.tick_params(which="both", labelsize=6)
    fig.suptitle("each layer's weights in the checkpoint: conv and fc weights (blue; log counts from 1000 "
                 "values), GroupNorm scales (purple)", fontsize=10)
    fig.tight_layout()
    return fig


def weight_norms_figure(report, columns=6):
    """Each layer's weight norm and gradient norm against the step (log scale), as training logged them."""
    fig, axes = _grid(len(report.norms), columns)
    for ax, (name, series) in zip(axes, report.norms.items()):
        ax.plot(report.steps, series["weight"], color="tab:blue", label="weight")
        ax.plot(report.steps, series["grad"], color="tab:orange", label="gradient")
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())          # the 2 x 10^0 labels crowd a small panel
        ax.set_title(name, fontsize=7)
        ax.tick_params(which="both", labelsize=6)
    if report.norms:
        axes[0].legend(fontsize=6)
    fig.suptitle("L2 norms of each layer's parameters (weight and bias together; blue) and of their gradient "
                 "(orange) over training, log scale", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- files and report
def draw_stages(out, t, activations, class_names):
    """Write the stage figures (``STAGE_FILES``) into the folder ``out``; returns their paths by stage."""
    figures = {"rpn": lambda: rpn_figure(t, class_names), "proposals": lambda: proposals_figure(t, class_names),
               "box_head": lambda: box_head_figure(t, class_names),
               "refinement": lambda: refinement_figure(t, class_names),
               "class_nms": lambda: class_nms_figure(t, class_names), "masks": lambda: masks_figure(t, class_names),
               "activations": lambda: activations_figure(activations),
               "feature_maps": lambda: feature_maps_figure(activations)}
    return {key: save(draw(), Path(out) / STAGE_FILES[key]) for key, draw in figures.items()}


def draw_weights(out, report):
    """Write the weight histograms and, when the run logged norms, the norms figure; returns the paths."""
    files = {"histograms": save(weight_histograms_figure(report), Path(out) / WEIGHT_FILES["histograms"])}
    if report.norms:
        files["norms"] = save(weight_norms_figure(report), Path(out) / WEIGHT_FILES["norms"])
    return files


def stage_report(t, activations, class_names, files):
    """A few lines: what each stage computed on this image, and the file that shows it."""
    p, b, cfg = t.proposals, t.box_head, t.config
    d = {k: _h(v) for k, v in t.detections.items()}
    labels = _h(t.rpn.labels) if t.gt is not None else None
    anchors = (f"{len(_h(t.rpn.anchors))} anchors; " +
               ("no ground truth, so no labels" if labels is None else
                f"{int((labels == 1).sum())} match the {len(_h(t.gt.boxes))} ground-truth boxes (objects), "
                f"{int((labels == -1).sum())} ignored"))
    recall = "" if p.recall is None else "; recall " + ", ".join(
        f"at IoU {iou:g} {p.recall['before_nms'][iou]:.0%} -> {p.recall['after_nms'][iou]:.0%}"
        for iou in p.recall["before_nms"])
    best = _h(b.class_probs).argmax(axis=1)
    found = ", ".join(f"{_name(label, class_names)} {score:.2f}" for label, score in zip(d["labels"][:5], d["scores"]))
    found += ", ..." if len(d["scores"]) > 5 else ""
    busiest = max(activations.table, key=lambda s: s.zeros if s.layer == "ReLU" else -1.0)
    lines = [f"RPN: {anchors} -> {files['rpn'].name}",
             f"proposals: {len(_h(p.before_nms))} before NMS, {len(_h(p.boxes))} after NMS at IoU "
             f"{cfg.rpn_nms:g}{recall} -> {files['proposals'].name}",
             f"box head: {len(best)} RoIs, {int((best > 0).sum())} most likely an object -> {files['box_head'].name}, "
             f"{files['refinement'].name}",
             f"candidates: {len(_h(b.candidates))} above score {cfg.score_threshold:g}, {len(_h(b.after_nms))} after "
             f"NMS per class at IoU {cfg.detection_nms:g}; {len(d['scores'])} detections"
             f"{': ' + found if found else ''} -> {files['class_nms'].name}",
             f"masks: {len(d['scores'])} detections x {cfg.num_classes - 1} class masks of "
             f"{_h(t.mask_head.probs).shape[-1]} px, pasted into the image -> {files['masks'].name}",
             f"activations: {len(activations.table)} layers; most zeros after a ReLU: {busiest.name} "
             f"{busiest.zeros:.0%} -> {files['activations'].name}, {files['feature_maps'].name}"]
    return lines
