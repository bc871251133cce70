"""The ``mrcnn-edu`` command line (also ``python -m mrcnn_edu``).

    mrcnn-edu [--backend numpy|cupy] COMMAND ...

    demo           print and draw the lecture's stages (runs/demo/)
    train          train the default model on shapes (or --coco-gt/--images data), evaluate it, draw it
    evaluate       COCO AP, AP50, AP75 of a model on the shapes validation split or a COCO data set
    predict        draw instances on your images, and write them as COCO JSON
    export-shapes  write shapes images and their COCO annotations
    lessons        start: copy the exercise stubs into your working copies; check [NN]: grade them
    book           execute the notebooks and render the course as static HTML (build/book/)
    ablate         the paper's Table 2 ablations on shapes: train each setting, print one table

A bad file or argument ends with one line that says what is wrong (exit status 2), not a traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import ablate, backend
from .book import add_book_parser, run_book

DATA = Path(__file__).resolve().parents[1] / "data"


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
    keep = nms(xp.asarray(boxes), xp.asarray(scores), 0.7)
    print(f"  NMS at IoU 0.7 keeps {len(keep)} of {len(boxes)} jittered boxes around 2 objects")
    save(nms_figure((400, 400), boxes, scores, keep), out / "01_nms.png")
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
    fmap = np.loadtxt(DATA / "lecture_roi_8x8.txt")
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
    save(roi_figure(fmap, (0, 3, 6, 7), pooled[0, 0], aligned[0, 0], samples), out / "04_roi_pool_vs_align.png")
    return ok


def _demo_losses(out, xp):
    from .losses import sigmoid_mask_loss, smooth_l1_loss, softmax_cross_entropy
    from .visualize import save, smooth_l1_figure

    print("5. Losses")
    x = xp.linspace(-3, 3, 601)
    loss, grad = smooth_l1_loss(x, xp.zeros_like(x), reduction="none")
    ok = _say(abs(float(loss[0]) - 2.5) < 1e-12 and abs(float(loss[350]) - 0.125) < 1e-12,
              "smooth-L1(-3) = 2.5 (|x| - 0.5), smooth-L1(0.5) = 0.125 (0.5 x^2)")
    save(smooth_l1_figure(x, loss, grad), out / "05_smooth_l1.png")
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


def _coco_data(args, size):
    from .data.coco import load_coco
    if bool(args.coco_gt) != bool(args.images):
        raise ValueError("--coco-gt and --images go together: the annotations JSON and its image folder")
    return load_coco(args.coco_gt, args.images, size=size) if args.coco_gt else None


def cmd_train(args):
    from .model import ModelConfig
    from .train import TrainConfig, train

    tcfg = TrainConfig()
    for name in ("steps", "batch_size", "lr", "seed", "eval_every", "val_images"):
        if getattr(args, name) is not None:
            setattr(tcfg, name, getattr(args, name))
    mcfg = ModelConfig()
    for name in ("roi_op", "mask_loss", "mask_head", "mask_mlp_hidden", "box_loss", "box_loss_weight",
                 "backbone_stride"):
        if getattr(args, name) is not None:
            setattr(mcfg, name, getattr(args, name))
    if args.no_fpn or mcfg.backbone_stride == 32:
        mcfg.fpn = False
    data = _coco_data(args, mcfg.image_size)
    if data is not None:
        mcfg.num_classes = len(data.class_names)
    backend.keep_freed_memory()
    print(f"training on {'shapes' if data is None else args.coco_gt} for {tcfg.steps} steps of {tcfg.batch_size} "
          f"images ({backend.name}); writing to {args.out}/")
    summary = train(args.out, mcfg, tcfg, resume=args.resume, data=data)
    if summary.get("interrupted"):
        return 130
    from .evaluate import format_table
    print(format_table(summary["metrics"]))
    print(f"{summary['step']} steps in {summary['train_seconds']:.0f} s ({summary['seconds_per_step']:.3f} s/step, "
          f"peak memory {summary['peak_memory_mb']} MiB); model: {Path(args.out) / 'model.npz'}")
    return 0


def _detections_of(model, dataset_or_samples, batch_size=16):
    from .train import predict_in_batches
    return predict_in_batches(model, [s[0] for s in dataset_or_samples], batch_size)


def cmd_evaluate(args):
    import json

    from .data.coco import undo_resize_and_pad
    from .data.shapes import validation_set
    from .evaluate import coco_evaluate, detections_to_coco, format_table, shapes_ground_truth, write_results
    from .train import load_model

    model, _ = load_model(args.checkpoint)
    size = model.config.image_size
    data = _coco_data(args, size)
    results = []
    if data is None:
        samples = validation_set(args.val_images, args.seed, size)
        gt = shapes_ground_truth(samples)
        for i, d in enumerate(_detections_of(model, samples)):
            results += detections_to_coco(i + 1, d["boxes"], d["scores"], d["labels"], d["masks"])
        what = f"{len(samples)} shapes validation images (seed {args.seed})"
    else:
        gt = data
        for i, d in enumerate(_detections_of(model, data)):
            info = data.image_info(i)
            boxes, masks = undo_resize_and_pad(d["boxes"], d["masks"], info["scale"], (info["height"], info["width"]))
            results += detections_to_coco(info["id"], boxes, d["scores"], d["labels"], masks, data.category_ids)
        what = f"{len(data)} images of {args.coco_gt}"
    metrics = coco_evaluate(gt, results)
    print(f"COCO metric on {what}:")
    print(format_table(metrics))
    if args.results:
        write_results(args.results, results)
        print(f"wrote {len(results)} detections to {args.results}")
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if not k.endswith("_stats")}))
    return 0


def cmd_predict(args):
    import json

    from .data.coco import read_image, resize_and_pad, undo_resize_and_pad
    from .evaluate import detections_to_coco
    from .train import load_model
    from .visualize import draw_instances, save

    import matplotlib.pyplot as plt
    import numpy as np

    model, class_names = load_model(args.checkpoint)
    size = model.config.image_size
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, path in enumerate(args.images):
        image = read_image(path)
        square, _, scale = resize_and_pad(image, np.zeros((0,) + image.shape[:2], bool), size)
        d = {k: backend.to_host(v) for k, v in model.predict(square[None])[0].items()}
        d["boxes"], d["masks"] = undo_resize_and_pad(d["boxes"], d["masks"], scale, image.shape[:2])
        fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]))
        draw_instances(ax, image, d, class_names, score_min=args.score_threshold)
        png = save(fig, out / (Path(path).stem + "_instances.png"))
        keep = d["scores"] >= args.score_threshold
        for r in detections_to_coco(i + 1, d["boxes"][keep], d["scores"][keep], d["labels"][keep], d["masks"][keep]):
            r["file_name"] = str(path)
            r["class_name"] = class_names[r["category_id"]] if r["category_id"] < len(class_names) else ""
            results.append(r)
        print(f"{path}: {int(keep.sum())} instances -> {png}")
    (out / "detections.json").write_text(json.dumps(results))
    print(f"wrote {len(results)} detections (COCO results format, RLE masks) to {out / 'detections.json'}")
    return 0


def cmd_export_shapes(args):
    from .data.coco import export_shapes
    ann, images = export_shapes(args.out, args.n, args.seed)
    print(f"wrote {args.n} shapes images to {images}/ and their annotations to {ann}")
    return 0


def cmd_lessons(args):
    from . import lessons
    if args.action == "start":
        lessons.start(stage=args.stage)
        return 0
    result = lessons.check(stage=args.stage)
    return 0 if result["passed"] == result["total"] else 1


def build_parser():
    parser = argparse.ArgumentParser(prog="mrcnn-edu", description="Mask R-CNN from first principles.")
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None,
                        help="array backend (default: $MRCNN_EDU_BACKEND or numpy)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="print and draw the lecture's stages")
    p.add_argument("--out", default="runs/demo", help="folder for the figures (default: runs/demo)")

    p = sub.add_parser("train", help="train Mask R-CNN (default: the shapes model), then evaluate it")
    p.add_argument("--out", default="runs/shapes", help="run folder (default: runs/shapes)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--steps", type=int, help="training steps (default 4400)")
    p.add_argument("--batch-size", type=int, help="images a step (default 4)")
    p.add_argument("--lr", type=float, help="peak learning rate of AdamW (default 2e-3)")
    p.add_argument("--seed", type=int, help="seed of the data stream, initialization and sampling (default 0)")
    p.add_argument("--eval-every", type=int, help="steps between validation AP (default 1000)")
    p.add_argument("--val-images", type=int, help="validation images (default 200)")
    p.add_argument("--coco-gt", help="train on a COCO-format data set: its annotations JSON ...")
    p.add_argument("--images", help="... and its image folder")
    g = p.add_argument_group("model variants (the paper's ablations; see `mrcnn-edu ablate`)")
    g.add_argument("--roi-op", choices=["align", "pool"], help="RoIAlign (default) or RoIPool")
    g.add_argument("--mask-loss", choices=["sigmoid", "softmax"], help="per-class sigmoid (default) or per-pixel softmax")
    g.add_argument("--mask-head", choices=["fcn", "mlp"], help="convolutional (default) or fully connected")
    g.add_argument("--mask-mlp-hidden", type=int, help="fc width of the MLP mask head (default 256; the paper's 1024)")
    g.add_argument("--box-loss", choices=["smooth_l1", "giou"], help="smooth-L1 of the deltas (default) or 1 - GIoU")
    g.add_argument("--box-loss-weight", type=float, help="multiplies the box regression loss (default 1)")
    g.add_argument("--backbone-stride", type=int, choices=[16, 32],
                   help="16: heads on C4 (default); 32: one more stage, C5, without FPN")
    g.add_argument("--no-fpn", action="store_true", help="both heads read the backbone's top map, no pyramid")

    p = sub.add_parser("evaluate", help="COCO AP of a model")
    p.add_argument("--checkpoint", required=True, help="model.npz (or checkpoint.npz) from train")
    p.add_argument("--coco-gt", help="a COCO-format annotations JSON (default: the shapes validation split)")
    p.add_argument("--images", help="the image folder of --coco-gt")
    p.add_argument("--results", help="also write the detections here (COCO results JSON, RLE masks)")
    p.add_argument("--val-images", type=int, default=200, help="shapes validation images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shapes validation split (default 0)")
    p.add_argument("--json", action="store_true", help="also print the metrics as one JSON line")

    p = sub.add_parser("predict", help="draw the instances the model finds in your images")
    p.add_argument("--checkpoint", required=True, help="model.npz from train")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--out", default="runs/predict", help="folder for the PNGs and detections.json")
    p.add_argument("--score-threshold", type=float, default=0.5, help="draw and write detections above this")

    p = sub.add_parser("lessons", help="graded exercises: start (make your working copies), check [NN] (grade them)")
    p.add_argument("action", choices=["start", "check"])
    p.add_argument("stage", nargs="?", default=None, help="one lesson, e.g. 01 (default: all)")

    add_book_parser(sub)
    ablate.add_parser(sub)

    p = sub.add_parser("export-shapes", help="write shapes images and COCO annotations")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="seed (the validation split of this seed)")
    p.add_argument("--out", required=True, help="output folder (images/ and annotations.json)")
    return parser


COMMANDS = {"demo": lambda a: 0 if demo(a.out) else 1, "train": cmd_train, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "export-shapes": cmd_export_shapes, "lessons": cmd_lessons,
            "book": lambda a: run_book(a), "ablate": lambda a: (backend.keep_freed_memory(), ablate.cmd_ablate(a))[1]}


def main(argv=None):
    import matplotlib
    matplotlib.use("Agg")  # the command line writes files and never opens a window (headless machines too)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend:
        try:
            backend.use(args.backend)
        except RuntimeError as err:
            parser.exit(2, f"mrcnn-edu: {err}\n")
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, OSError) as err:
        # DatasetError and CheckpointError are ValueErrors: a bad file gives a message, not a traceback
        parser.exit(2, f"mrcnn-edu {args.command}: {err}\n")
    except KeyboardInterrupt as err:  # Ctrl-C: what was interrupted says how to go on, without a traceback
        print(f"mrcnn-edu {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
