"""``mrcnn-edu demo``: the lecture's worked examples as the library computes them, one stage at a time,
each printed beside the lecture's own numbers and drawn into a figure (``runs/demo/`` by default).

    1. IoU, NMS            2. anchors on the stride-16 grid (1900 cells, 17100 anchors for 800 x 600)
    3. RPN labels          4. RoIPool vs RoIAlign on the lecture's 8 x 8 map     5. the losses
"""
from __future__ import annotations

import time
from pathlib import Path

from . import backend

__all__ = ["demo"]


def _say(ok, text):
    print(f"  [{'ok' if ok else 'MISMATCH'}] {text}")
    return ok


def _demo_iou_and_nms(out, xp, rng):
    from .boxes import box_iou, nms
    from .visualize import iou_figure, nms_figure, save

    print("1. IoU, NMS")
    a, b = xp.asarray([[0.0, 0.0, 100.0, 100.0]]), xp.asarray([[50.0, 50.0, 150.0, 150.0]])
    iou = float(box_iou(a, b)[0, 0])
    ok = _say(abs(iou - 2500 / 17500) < 1e-6, f"IoU of two 100x100 boxes overlapping 50x50: {iou:.4f} "
                                                f"(= 2500 / 17500)")
    save(iou_figure(a, b, iou), out / "01_iou.png")
    # candidate boxes jittered around two objects, scored by how well they fit: NMS keeps one per object
    objects = rng.uniform([50, 50, 250, 250], [150, 150, 350, 350], size=(2, 4))
    jitter = rng.normal(0, 12, size=(2, 15, 4))
    boxes = (objects[:, None, :] + jitter).reshape(-1, 4)
    boxes[:, 2:] = boxes[:, 2:].clip(boxes[:, :2] + 10)  # keep x2 > x1, y2 > y1
    scores = backend.to_host(box_iou(xp.asarray(boxes), xp.asarray(objects)).max(axis=1))
    threshold = 0.7
    keep = nms(xp.asarray(boxes), xp.asarray(scores), threshold)
    print(f"  NMS at IoU {threshold} keeps {len(keep)} of {len(boxes)} jittered boxes around 2 objects")
    save(nms_figure((400, 400), boxes, scores, keep, iou_threshold=threshold), out / "01_nms.png")
    return ok


def _demo_anchors(out, xp):
    from .anchors import base_anchors, generate_anchors
    from .visualize import anchors_figure, save

    print("2. Anchors on the stride-16 grid")
    anchors = generate_anchors((600, 800))
    cells = len(anchors) // 9
    ok = _say(cells == 1900 and len(anchors) == 17100,
              f"800 x 600 image, stride 16: {cells} cells x 9 = {len(anchors)} anchors (lecture: 1900, 17100)")
    for row in backend.to_host(base_anchors()):
        print(f"     base anchor {row.tolist()}  ({row[2] - row[0]:.0f} x {row[3] - row[1]:.0f})")
    save(anchors_figure(anchors, (600, 800), 16, 9), out / "02_anchors.png")
    return ok, anchors


def _demo_rpn(out, xp, anchors):
    from .rpn import rpn_targets
    from .visualize import rpn_labels_figure, save

    print("3. RPN labels and the 256-anchor mini-batch")
    gt = xp.asarray([[100.0, 120.0, 330.0, 400.0], [480.0, 200.0, 700.0, 330.0]])
    labels, _ = rpn_targets(anchors, gt, backend.rng(0))
    pos, neg = int((labels == 1).sum()), int((labels == 0).sum())
    ok = _say(pos + neg == 256 and 0 < pos <= 128, f"sampled {pos} object + {neg} not-object anchors = 256, "
                                                   f"at most half objects")
    save(rpn_labels_figure((600, 800), gt, anchors, labels), out / "03_rpn_labels.png")
    return ok


def _demo_roi(out, xp):
    import numpy as np

    from .roi import roi_align, roi_pool
    from .visualize import roi_figure, save

    print("4. RoIPool vs RoIAlign on the lecture's 8 x 8 feature map")
    from .data import lecture_feature_map
    fmap = lecture_feature_map()
    features = xp.asarray(fmap[None, None])
    ok = True
    for roi, size, lecture in (((0, 3, 6, 7), 2, [[0.85, 0.84], [0.97, 0.96]]),
                               ((0, 4, 5, 7), 3, [[0.74, 0.39, 0.34], [0.20, 0.16, 0.73], [0.83, 0.97, 0.88]])):
        pooled, _ = roi_pool(features, xp.asarray([(0,) + roi], dtype=xp.float64), size, bins="slides")
        got = np.round(backend.to_host(pooled)[0, 0], 2)
        ok &= _say(bool((got == np.array(lecture)).all()), f"RoIPool {size}x{size} of RoI {roi}: {got.tolist()}")
    # RoIAlign of the same 2x2 RoI: the inclusive pixel box (0, 3)-(6, 7) is the continuous box (0, 3, 7, 8)
    box, size, ratio = (0.0, 3.0, 7.0, 8.0), 2, 2
    aligned = roi_align(features, xp.asarray([(0,) + box]), size, sampling_ratio=ratio, aligned=True)
    pooled, _ = roi_pool(features, xp.asarray([(0, 0, 3, 6, 7)], dtype=xp.float64), size, bins="slides")
    print(f"  RoIAlign 2x2 (4 bilinear samples a bin, averaged): "
          f"{np.round(backend.to_host(aligned)[0, 0], 3).tolist()}")
    bin_w, bin_h = (box[2] - box[0]) / size, (box[3] - box[1]) / size
    steps = (np.arange(size * ratio) + 0.5) / ratio
    xs, ys = np.meshgrid(box[0] - 0.5 + steps * bin_w, box[1] - 0.5 + steps * bin_h)
    samples = np.column_stack([xs.ravel(), ys.ravel()])
    save(roi_figure(fmap, (0, 3, 6, 7), pooled[0, 0], aligned[0, 0], samples, bins="slides", aligned=True,
                    sampling_ratio=ratio), out / "04_roi_pool_vs_align.png")
    return ok


def _demo_losses(out, xp):
    from .losses import sigmoid_mask_loss, smooth_l1_loss, softmax_cross_entropy
    from .visualize import save, smooth_l1_figure

    print("5. Losses")
    x = xp.linspace(-3, 3, 601)
    loss, grad = smooth_l1_loss(x, xp.zeros_like(x), beta=1.0, reduction="none")
    ok = _say(abs(float(loss[0]) - 2.5) < 1e-12 and abs(float(loss[350]) - 0.125) < 1e-12,
              "smooth-L1(-3) = 2.5 (|x| - 0.5), smooth-L1(0.5) = 0.125 (0.5 x^2)")
    save(smooth_l1_figure(x, loss, grad, beta=1.0), out / "05_smooth_l1.png")
    ce, _ = softmax_cross_entropy(xp.zeros((1, 4)), xp.asarray([2]))
    ok &= _say(abs(float(ce) - 1.3862944) < 1e-6, f"cross-entropy of 4 equal logits = log 4 = {float(ce):.4f}")
    logits = xp.zeros((1, 4, 2, 2))
    logits[0, 2] = 3.0
    mask_loss, dlogits = sigmoid_mask_loss(logits, xp.asarray([2]), xp.ones((1, 2, 2)))
    ok &= _say(float(abs(dlogits[0, [0, 1, 3]]).sum()) == 0.0,
               f"per-class sigmoid mask loss {float(mask_loss):.4f}: only the RoI's class channel gets a gradient")
    return ok


def demo(out="runs/demo"):
    """Run every stage of the lecture built so far, print its numbers, draw it; returns True when all agree."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    xp = backend.xp
    rng = __import__("numpy").random.default_rng(0)
    start = time.perf_counter()
    print(f"mrcnn-edu demo on {backend.name}; figures go to {out}/")
    ok = _demo_iou_and_nms(out, xp, rng)
    anchors_ok, anchors = _demo_anchors(out, xp)
    ok &= anchors_ok
    ok &= _demo_rpn(out, xp, anchors)
    ok &= _demo_roi(out, xp)
    ok &= _demo_losses(out, xp)
    figures = sorted(p.name for p in out.glob("*.png"))
    print(f"wrote {len(figures)} figures: {', '.join(figures)}")
    print(f"{'all stages agree with the lecture' if ok else 'SOME STAGES DISAGREE'} "
          f"({time.perf_counter() - start:.1f} s)")
    return ok
