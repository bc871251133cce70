"""The ``mrcnn-edu`` command line (also ``python -m mrcnn_edu``).

    mrcnn-edu [--backend numpy|cupy] COMMAND ...

    demo           print and draw the lecture's stages (runs/demo/)
    train          train the default model on shapes (or --coco-gt/--images data), evaluate it, draw it
    evaluate       COCO AP, AP50, AP75 of a model on the shapes validation split or a COCO data set
    predict        draw instances on your images, and write them as COCO JSON
    export-shapes  write shapes images and their COCO annotations
    lessons        start: copy the exercise stubs into your working copies; check [NN]: grade them;
                   capstone [--steps N]: train Mask R-CNN on your own functions
    book           execute the notebooks and render the course as static HTML (build/book/)
    ablate         the paper's Table 2 ablations on shapes: train each setting, print one table
    anchors        how well the model's anchors fit a COCO data set's objects, and better sizes
    browse         draw a COCO data set's images with their masks, boxes and classes
    diagnose       which stage loses the AP: box and mask AP with each stage replaced by the ground truth
    inspect        the model on one image, stage by stage: anchors, proposals, boxes, masks, activations

``--backend`` goes before or after the command. Every failure ends with one line that names the flag or
file and says what is wrong, not a traceback: exit status 2 for a flag the command cannot use, 1 for
anything else (a bad file, a run that diverged, a batch that does not fit in memory).
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

# a bad MRCNN_EDU_BACKEND warns when the library is imported; the command line says it in its one line instead
warnings.filterwarnings("ignore", message="MRCNN_EDU_BACKEND")
from . import ablate, backend, book, demo, explore  # noqa: E402

class UsageError(ValueError):
    """A flag with a value the command cannot use (exit status 2, as argparse's own errors)."""


def _positive_int(args, name, low=1):
    value = getattr(args, name, None)
    if value is not None and value < low:
        raise UsageError(f"--{name.replace('_', '-')}: expected an int >= {low}, got {value}")


def _positive_float(value, flag, upper=math.inf):
    if value is not None and not (0 < value < upper and math.isfinite(value)):
        bound = "a finite number > 0" if upper == math.inf else f"a number in (0, {upper})"
        raise UsageError(f"{flag}: expected {bound}, got {value}")


def _check_train_flags(args):
    """Every value flag of ``train`` checked before anything is read or written (one line naming the flag)."""
    for name in ("steps", "batch_size", "eval_every", "val_images", "checkpoint_every", "mask_mlp_hidden"):
        _positive_int(args, name)
    for name in ("seed", "norms_every", "val_loss_every", "val_loss_images"):   # 0 turns the logs off
        _positive_int(args, name, 0)
    _positive_float(args.lr, "--lr")
    _positive_float(args.box_loss_weight, "--box-loss-weight")
    if args.val_fraction is not None and not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction: expected a number in [0, 1), got {args.val_fraction}")
    for flag, values in (("--anchor-sizes", args.anchor_sizes), ("--anchor-ratios", args.anchor_ratios)):
        for v in values or ():
            _positive_float(v, flag)
    if args.scale_jitter is not None:
        lo, hi = args.scale_jitter
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise UsageError(f"--scale-jitter: expected LO HI with 0 < LO <= HI, got {lo} {hi}")
    if args.image_size is not None:
        stride = args.backbone_stride or 16
        if args.image_size < 2 * stride or args.image_size % stride:
            raise UsageError(f"--image-size: expected a multiple of the backbone's stride {stride} of at least "
                             f"{2 * stride}, got {args.image_size}")
    if args.out == "":
        raise UsageError("--out: empty; give the run a folder of its own, e.g. runs/mine")
    if bool(args.coco_gt) != bool(args.images):
        raise UsageError("--coco-gt and --images go together: the annotations JSON and its image folder")
    if bool(args.val_coco_gt) != bool(args.val_images_dir):
        raise UsageError("--val-coco-gt and --val-images-dir go together: the validation set's JSON and folder")
    if args.val_coco_gt and not args.coco_gt:
        raise UsageError("--val-coco-gt: a separate validation set goes with own data (--coco-gt, --images)")
    if args.val_coco_gt and args.val_fraction is not None:
        raise UsageError("--val-fraction: not with --val-coco-gt (the validation set is given, nothing is held out)")
    if args.coco_gt and args.val_images is not None:
        raise UsageError("--val-images: sizes the shapes validation split; with --coco-gt the validation set is "
                         "--val-coco-gt or the --val-fraction held out")
    if args.resume and args.preset:
        raise UsageError("--preset: a resumed run keeps the settings it started with; resume without --preset")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite: choose one (continue the run, or replace it)")


# flags of ``train`` and the config fields they set: (flag, "train" or "model", field)
TRAIN_FLAGS = [(f"--{n.replace('_', '-')}", "train", n) for n in
               ("steps", "batch_size", "lr", "seed", "eval_every", "val_images", "val_fraction", "scale_jitter",
                "checkpoint_every", "norms_every", "val_loss_every", "val_loss_images")] + [("--flip", "train", "flip")]
MODEL_FLAGS = [(f"--{n.replace('_', '-')}", "model", n) for n in
               ("roi_op", "mask_loss", "mask_head", "mask_mlp_hidden", "box_loss", "box_loss_weight",
                "backbone_stride", "image_size", "anchor_sizes", "anchor_ratios")]
SAFE_ON_RESUME = {"steps", "eval_every", "checkpoint_every", "val_images", "norms_every", "val_loss_every",
                  "val_loss_images"}


def _given(args):
    """``{(kind, field): value}`` of the settings the command line states."""
    given = {(kind, field): getattr(args, field) for _, kind, field in TRAIN_FLAGS + MODEL_FLAGS
             if getattr(args, field) is not None}
    for key in (("train", "scale_jitter"), ("model", "anchor_sizes"), ("model", "anchor_ratios")):
        if key in given:
            given[key] = tuple(given[key])
    if args.no_fpn:
        given[("model", "fpn")] = False
    return given


def _data_spec(args):
    """The data source the command line names (paths made absolute, so a resumed run finds them again)."""
    if not args.coco_gt:
        return {"kind": "shapes"}
    spec = {"kind": "coco", "coco_gt": str(Path(args.coco_gt).resolve()), "images": str(Path(args.images).resolve())}
    if args.val_coco_gt:
        spec.update(val_coco_gt=str(Path(args.val_coco_gt).resolve()),
                    val_images_dir=str(Path(args.val_images_dir).resolve()))
    else:
        spec["held_out"] = None
    return spec


def _new_run(args):
    """Model and training settings of a new run: the defaults, the command line's flags over them; shapes at
    an ``--image-size`` above 128 also get the anchors and per-image counts that match (``shapes_model_settings``)."""
    from .model import ModelConfig
    from .train import TrainConfig

    mcfg, tcfg, spec = ModelConfig(), TrainConfig(), _data_spec(args)
    own_data = spec["kind"] == "coco"
    tcfg.flip = own_data  # own photos gain from mirrored copies; shapes are symmetric, so flips add nothing
    if args.preset:
        _apply_preset(args, mcfg, tcfg)
    for (kind, field), value in _given(args).items():
        setattr(tcfg if kind == "train" else mcfg, field, value)
    if args.preset and args.eval_every is None:
        tcfg.eval_every = tcfg.steps          # a preset's validation AP comes once, at the end
    if mcfg.backbone_stride == 32:
        mcfg.fpn = False
    if not own_data and args.image_size:
        # larger shapes images hold more and larger shapes: anchors and per-image counts follow them
        from .data.shapes import MIN_SIZE, layout_rules, shapes_model_settings
        if mcfg.image_size < MIN_SIZE:
            raise UsageError(f"--image-size: shapes images are at least {MIN_SIZE} px, got {mcfg.image_size}")
        given = {field for kind, field in _given(args) if kind == "model"}
        scaled = {f: v for f, v in shapes_model_settings(mcfg.image_size).items()
                  if f not in given and getattr(mcfg, f) != v}
        for field, value in scaled.items():
            setattr(mcfg, field, value)
        if scaled:
            rules = layout_rules(mcfg.image_size)
            print(f"shapes at {mcfg.image_size} px (1 to {rules.max_objects} objects, half-size {rules.half_size[0]} "
                  f"to {rules.half_size[1]} px): the 128-px model settings scaled to "
                  + ", ".join(f"{field}={value}" for field, value in scaled.items()))
    if own_data and args.image_size and not args.anchor_sizes:
        # objects of own data grow with the image they are resized to; the shapes' do not
        mcfg.anchor_sizes = tuple(round(s * mcfg.image_size / 128, 1) for s in mcfg.anchor_sizes)
        print(f"anchors: {', '.join(f'{s:g}' for s in mcfg.anchor_sizes)} px (the default 40, 56, 72 scaled to "
              f"--image-size {mcfg.image_size}; `mrcnn-edu anchors` checks them against your objects)")
    return mcfg, tcfg, spec


def _apply_preset(args, mcfg, tcfg):
    """``--preset``'s settings into the configs, and one line saying them (the flags given beside it win)."""
    from .train import PRESETS
    preset = PRESETS[args.preset]
    given = {field for _, field in _given(args)}
    kept = []
    for cfg, settings in ((mcfg, preset["model"]), (tcfg, preset["train"])):
        for field, value in settings.items():
            setattr(cfg, field, value)
            flag = f"--{field.replace('_', '-')}"
            kept.append(f"{field}={value}" + (f" ({flag} given wins)" if field in given else ""))
    print(f"--preset {args.preset}: {preset['what']} ({', '.join(kept)})")


def _resumed_run(args, out):
    """The saved run's settings, with the command line's flags applied where that is safe; a flag that
    would change what the run is (its model, data, learning rate, batch, seed, augmentation) is refused."""
    from .model import ModelConfig
    from .train import TrainConfig, _saved_run

    saved = _saved_run(Path(out) / "checkpoint.npz")
    mcfg, tcfg = ModelConfig.from_dict(saved["model"]), TrainConfig.from_dict(saved["train"])
    spec = saved.get("data", {"kind": "shapes"})
    new = _data_spec(args)
    if args.coco_gt and (spec["kind"] != "coco" or new["coco_gt"] != spec["coco_gt"] or
                         new["images"] != spec["images"]):
        trained_on = "shapes" if spec["kind"] == "shapes" else f"{spec['coco_gt']} ({spec['images']})"
        raise UsageError(f"--coco-gt: the run in {out} trains on {trained_on}; resume it without --coco-gt, or "
                         "start a new run (another --out, or --overwrite)")
    if args.val_coco_gt and new.get("val_coco_gt") != spec.get("val_coco_gt"):
        raise UsageError(f"--val-coco-gt: the run in {out} validates on "
                         f"{spec.get('val_coco_gt') or 'its held-out images'}; it cannot change on resume")
    changed = {}
    for (kind, field), value in _given(args).items():
        cfg = tcfg if kind == "train" else mcfg
        if getattr(cfg, field) == value:
            continue
        flag = "--no-fpn" if field == "fpn" else f"--{field.replace('_', '-')}"
        if field not in SAFE_ON_RESUME:
            raise UsageError(f"{flag}: the run in {out} has {getattr(cfg, field)!r}, and a resumed run keeps its "
                             f"{'model' if kind == 'model' else 'settings'}; resume without {flag}, or start a "
                             "new run (another --out, or --overwrite)")
        changed[field] = value
    if "steps" in changed:
        _say_new_schedule(tcfg, changed["steps"], out)
    for field, value in changed.items():
        setattr(tcfg, field, value)
    return mcfg, tcfg, spec


def _say_new_schedule(tcfg, steps, out):
    from .checkpoint import load_checkpoint
    from .optim import WarmupCosineLR
    at = load_checkpoint(Path(out) / "checkpoint.npz")["step"]
    if steps < at:
        raise UsageError(f"--steps: the run in {out} is at step {at} already; give --steps {at} or more")
    old = WarmupCosineLR(tcfg.lr, tcfg.steps, tcfg.warmup_steps, min_lr=tcfg.min_lr)(at)
    new = WarmupCosineLR(tcfg.lr, steps, tcfg.warmup_steps, min_lr=tcfg.min_lr)(at)
    print(f"--steps {steps}: the run goes on from step {at} to {steps} (it was to end at {tcfg.steps}); the "
          f"learning rate follows the cosine of a {steps}-step run from here, {old:.2e} -> {new:.2e} at step {at}")


def cmd_train(args):
    from .train import check_memory, check_run_folder, open_data, train

    _check_train_flags(args)
    out = check_run_folder(args.out, args.resume, args.overwrite)
    mcfg, tcfg, spec = _resumed_run(args, out) if args.resume else _new_run(args)
    check_memory(mcfg, tcfg.batch_size)
    data = open_data(spec, mcfg, tcfg)
    if not args.resume:
        mcfg.num_classes = len(data.class_names)
    what = "shapes" if spec["kind"] == "shapes" else spec["coco_gt"]
    if spec["kind"] == "coco":
        val = (f"validating on {spec['val_coco_gt']}" if spec.get("val_coco_gt") else
               f"{len(data.spec['held_out'])} images held out for validation" if data.spec["held_out"] else
               "no validation set (--val-fraction 0)")
        what += f" ({len(data.train_set)} training images, {val})"
    augment = ", ".join(filter(None, ["flips" if tcfg.flip else "",
                                      f"scale jitter {tcfg.scale_jitter}" if tcfg.scale_jitter else ""]))
    print(f"{'resuming' if args.resume else 'training'} on {what} for {tcfg.steps} steps of {tcfg.batch_size} "
          f"images of {mcfg.image_size} px{' with ' + augment if augment else ''} ({backend.name}); writing to "
          f"{out}/")
    summary = train(out, mcfg, tcfg, resume=args.resume, data=data, overwrite=args.overwrite)
    if summary.get("interrupted"):
        return 130
    from .evaluate import format_table
    if summary["metrics"] is not None:
        print(format_table(summary["metrics"]))
    print(f"{summary['step']} steps in {summary['train_seconds']:.0f} s ({summary['seconds_per_step']:.3f} s/step, "
          f"peak memory {summary['peak_memory_mb']} MiB); model: {out / 'model.npz'}")
    if (out / "val.json").exists():
        print(f"the held-out images are in {out / 'val.json'}: `mrcnn-edu evaluate --checkpoint "
              f"{out / 'model.npz'} --coco-gt {out / 'val.json'} --images {args.images or spec['images']}` "
              "scores them again")
    return 0


def _label_map(model_names, data_names, where):
    """The data set's class of each of the model's classes, when the two name the same classes (perhaps in
    another order); refused when they differ."""
    import numpy as np
    model_names, data_names = list(model_names), list(data_names)
    if model_names[1:] == data_names[1:]:
        return None
    if sorted(model_names[1:]) != sorted(data_names[1:]):
        raise ValueError(f"{where}: its classes {data_names[1:]} differ from the model's {model_names[1:]}; "
                         "evaluate a model on data of the classes it was trained on")
    print(f"note: {where} lists the model's classes in another order; detections are mapped by class name")
    return np.array([0] + [data_names.index(n) for n in model_names[1:]])


def cmd_evaluate(args):
    import json

    from .breakdown import coco_breakdown, confusion_figure, format_breakdown
    from .data.coco import load_coco
    from .data.shapes import CLASS_NAMES
    from .evaluate import evaluate_coco, format_table, write_results
    from .inference import load_model
    from .train import ShapesData
    from .visualize import save

    _positive_int(args, "val_images")
    _positive_int(args, "seed", 0)
    if bool(args.coco_gt) != bool(args.images):
        raise UsageError("--coco-gt and --images go together: the annotations JSON and its image folder")
    # --json F writes the breakdown to F and draws the confusion matrix beside it, unless --confusion says where
    json_file = None if args.json in (None, "-") else Path(args.json)
    figure = Path(args.confusion) if args.confusion else None
    if figure is None and json_file is not None:
        figure = json_file.with_name(json_file.stem + "_confusion.png")
    if args.confusion and figure.suffix.lower() != ".png":
        raise UsageError(f"--confusion {args.confusion}: expected a .png file name")
    for flag, path in (("--json", json_file), ("--confusion", Path(args.confusion) if args.confusion else None)):
        if path is not None and path.is_dir():
            raise UsageError(f"{flag} {path}: is a folder; give a file name")
        file_above = next((f for f in path.parents if f.exists() and not f.is_dir()), None) if path else None
        if file_above is not None:
            raise UsageError(f"{flag} {path}: {file_above} is a file, not a folder")
    model, class_names = load_model(args.checkpoint)
    size = model.config.image_size
    if args.coco_gt:
        data = load_coco(args.coco_gt, args.images, size=size)
        label_map = _label_map(class_names, data.class_names, args.coco_gt)
        metrics, results, _ = evaluate_coco(model, data, label_map=label_map)
        what, ground_truth = f"{len(data)} images of {args.coco_gt}", data.coco
    else:
        if list(class_names)[1:] != list(CLASS_NAMES)[1:]:
            raise ValueError(f"--checkpoint {args.checkpoint}: the model knows {list(class_names)[1:]}, not the "
                             "shapes; give the data set it was trained for with --coco-gt and --images")
        from .evaluate import coco_evaluate, detections_to_coco
        from .inference import predict_in_batches
        shapes = ShapesData(args.seed, size, args.val_images)
        results = []
        for i, d in enumerate(predict_in_batches(model, [s[0] for s in shapes.validation])):
            results += detections_to_coco(i + 1, d["boxes"], d["scores"], d["labels"], d["masks"])
        metrics = {k: v for k, v in coco_evaluate(shapes.coco_gt, results).items() if not k.endswith("_stats")}
        what, ground_truth = f"{args.val_images} shapes validation images (seed {args.seed})", shapes.coco_gt
    print(f"COCO metric on {what}:")
    print(format_table(metrics))
    breakdown = coco_breakdown(ground_truth, results, side=size)
    print("\n" + format_breakdown(breakdown))
    if figure is not None:
        save(confusion_figure(breakdown), figure)
        print(f"drew the confusion matrix in {figure}")
    if json_file is not None:
        report = {"data": what, "checkpoint": str(args.checkpoint), "metrics": metrics, **breakdown,
                  "figure": None if figure is None else str(figure)}
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote the metrics and the breakdown to {json_file}")
    if args.results:
        write_results(args.results, results)
        print(f"wrote {len(results)} detections to {args.results}")
    if args.json == "-":
        print(json.dumps(metrics))
    return 0


def _output_names(paths):
    """A PNG name for each input, never the same twice: the file's stem, and its folder's name where two
    inputs share a stem (``a/img.png``, ``b/img.png`` -> ``a_img``, ``b_img``), numbered if still equal."""
    stems = [Path(p).stem for p in paths]
    names, used = [], set()
    for path, stem in zip(paths, stems):
        name = stem if stems.count(stem) == 1 else f"{Path(path).resolve().parent.name}_{stem}"
        base, k = name, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names.append(name + "_instances.png")
    return names


def _instances_figure(path, on_square, scale, original, class_names, score_min, most=1024):
    """The detections drawn on the image, shown at most ``most`` pixels on its longer side (a 12 MP photo's
    full-size masks would take matplotlib long to draw and make a PNG nobody views at that size)."""
    import matplotlib.pyplot as plt

    from .data.images import detections_to_original, read_image_resized
    from .visualize import draw_instances

    side = min(max(original), most)
    shown, shown_scale, _ = read_image_resized(path, side)
    height, width = (max(1, round(v * shown_scale)) for v in original)
    d = detections_to_original(dict(on_square), scale / shown_scale, (height, width))
    fig, ax = plt.subplots(figsize=(6, 6 * height / width))
    draw_instances(ax, shown[:height, :width], d, class_names, score_min=score_min)
    return fig


def cmd_predict(args):
    import json

    from .data import DatasetError
    from .data.images import detections_to_original, read_image_resized
    from .evaluate import detections_to_coco
    from .inference import load_model
    from .visualize import save

    if not 0 <= args.score_threshold <= 1:  # NaN fails too
        raise UsageError(f"--score-threshold: expected a number in [0, 1], got {args.score_threshold}")
    out = Path(args.out)
    if (out / "detections.json").exists() and not args.overwrite:
        raise UsageError(f"--out {out}: holds the detections of an earlier predict; give another --out, or "
                         "--overwrite to replace them")
    model, class_names = load_model(args.checkpoint)
    size = model.config.image_size
    out.mkdir(parents=True, exist_ok=True)
    results, failed = [], []
    for i, (path, name) in enumerate(zip(args.images, _output_names(args.images))):
        try:
            square, scale, original = read_image_resized(path, size)
        except DatasetError as err:
            print(f"{err}: skipped", file=sys.stderr)
            failed.append(path)
            continue
        on_square = {k: backend.to_host(v) for k, v in model.predict(square[None])[0].items()}
        d = detections_to_original(dict(on_square), scale, original)
        fig = _instances_figure(path, on_square, scale, original, class_names, args.score_threshold)
        png = save(fig, out / name)
        keep = d["scores"] >= args.score_threshold
        for r in detections_to_coco(i + 1, d["boxes"][keep], d["scores"][keep], d["labels"][keep], d["masks"][keep]):
            r["file_name"] = str(path)
            r["class_name"] = class_names[r["category_id"]] if r["category_id"] < len(class_names) else ""
            results.append(r)
        found = int(keep.sum())
        print(f"{path}: {found} instance{'' if found == 1 else 's'} -> {png}")
    (out / "detections.json").write_text(json.dumps(results))
    print(f"wrote {len(results)} detections of {len(args.images) - len(failed)} images (COCO results format, RLE "
          f"masks) to {out / 'detections.json'}")
    if failed:
        print(f"mrcnn-edu predict: {len(failed)} of {len(args.images)} files could not be read: "
              f"{', '.join(map(str, failed[:3]))}{' ...' if len(failed) > 3 else ''}", file=sys.stderr)
        return 1
    return 0


def cmd_export_shapes(args):
    from .data.shapes import export_shapes
    _positive_int(args, "n")
    _positive_int(args, "seed", 0)
    if args.out == "":
        raise UsageError("--out: empty; name a folder for images/ and annotations.json")
    ann, images = export_shapes(args.out, args.n, args.seed)
    print(f"wrote {args.n} shapes images to {images}/ and their annotations to {ann}")
    return 0


def cmd_diagnose(args):
    import json

    from .checkpoint import load_checkpoint
    from .data.shapes import CLASS_NAMES, validation_set
    from .diagnose import diagnose, format_rows
    from .inference import load_model

    _positive_int(args, "val_images")
    if args.json is not None and (args.json == "" or Path(args.json).is_dir()):
        raise UsageError(f"--json {args.json!r}: expected a file name for the rows, got "
                         f"{'an empty name' if args.json == '' else 'a folder'}")
    model, class_names = load_model(args.checkpoint)
    if list(class_names)[1:] != list(CLASS_NAMES)[1:]:
        raise ValueError(f"--checkpoint {args.checkpoint}: the model knows {list(class_names)[1:]}, not the shapes; "
                         "diagnose runs on the shapes validation split")
    seed = load_checkpoint(args.checkpoint)["config"].get("train", {}).get("seed", 0)
    print(f"replacing the stages by the ground truth on {args.val_images} shapes validation images (seed {seed}, "
          "the model's own split)")
    rows = diagnose(model, validation_set(args.val_images, seed, model.config.image_size), progress=True)
    print(format_rows(rows))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": rows}, indent=1), encoding="utf-8")
        print(f"wrote the rows to {path}")
    return 0


def cmd_lessons(args):
    from . import lessons
    if args.action == "capstone":
        if args.stage is not None:
            raise UsageError(f"capstone: takes no lesson ({args.stage!r}); it trains on every lesson's working copy")
        _positive_int(args, "steps")
        from .capstone import cmd_capstone
        return cmd_capstone(args.steps, args.seed)
    if args.action == "start":
        lessons.start(stage=args.stage)
        return 0
    result = lessons.check(stage=args.stage)
    return 0 if result["passed"] == result["total"] else 1


def _backend_flag():
    """``--backend``, accepted before the subcommand and after it (``mrcnn-edu train --backend cupy``)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--backend", choices=backend.BACKENDS, default=argparse.SUPPRESS,
                        help="array backend (default: $MRCNN_EDU_BACKEND or numpy)")
    return parent


def _train_arguments(p):
    p.add_argument("--out", default="runs/shapes", help="run folder (default: runs/shapes)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    p.add_argument("--steps", type=int, help="training steps (default 4400; on --resume, more extends the run)")
    p.add_argument("--preset", choices=["5min"],
                   help="5min: mask AP 0.85 on the shapes in about five minutes on 2 CPU cores (a slimmer FPN and "
                        "mask head, 3800 steps at lr 3e-3, the validation AP at the end only); flags given beside "
                        "it win")
    p.add_argument("--batch-size", type=int, help="images a step (default 4)")
    p.add_argument("--lr", type=float, help="peak learning rate of AdamW (default 2e-3)")
    p.add_argument("--seed", type=int, help="seed of the data stream, initialization and sampling (default 0)")
    p.add_argument("--eval-every", type=int, help="steps between validation AP (default 1000)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 250)")
    p.add_argument("--val-images", type=int, help="shapes validation images (default 200)")
    p.add_argument("--norms-every", type=int,
                   help="steps between each layer's weight and gradient norms in metrics.jsonl (default 100; 0: off)")
    p.add_argument("--val-loss-every", type=int,
                   help="steps between the losses on validation images, logged and drawn in curves.png beside the "
                        "training losses (default 250; 0: off)")
    p.add_argument("--val-loss-images", type=int,
                   help="validation images those losses average over (default 64; 0: off)")
    g = p.add_argument_group("your own data (COCO format: polygon or RLE masks)")
    g.add_argument("--coco-gt", help="train on a COCO-format data set: its annotations JSON ...")
    g.add_argument("--images", help="... and its image folder")
    g.add_argument("--val-coco-gt", help="a separate validation set: its annotations JSON ...")
    g.add_argument("--val-images-dir", help="... and its image folder")
    g.add_argument("--val-fraction", type=float,
                   help="without --val-coco-gt: the share of --coco-gt's images held out for validation, drawn "
                        "by --seed (default 0.1; 0: none)")
    g.add_argument("--image-size", type=int,
                   help="the longer side images are resized to, then padded square (default 128; a multiple of "
                        "16); own data's default anchors scale with it")
    g.add_argument("--anchor-sizes", type=float, nargs="+", metavar="PX",
                   help="anchor sides in pixels of the resized image (default 40 56 72; see `mrcnn-edu anchors`)")
    g.add_argument("--anchor-ratios", type=float, nargs="+", metavar="H/W", help="anchor aspect ratios (default 1)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default: on for own data, off for shapes)")
    g.add_argument("--scale-jitter", type=float, nargs=2, metavar=("LO", "HI"),
                   help="scale each training image's content by a random factor in [LO, HI] (default: off)")
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


def _demo_arguments(p):
    p.add_argument("--out", default="runs/demo", help="folder for the figures (default: runs/demo)")


def _evaluate_arguments(p):
    p.add_argument("--checkpoint", required=True, help="model.npz (or checkpoint.npz) from train")
    p.add_argument("--coco-gt", help="a COCO-format annotations JSON (default: the shapes validation split)")
    p.add_argument("--images", help="the image folder of --coco-gt")
    p.add_argument("--results", help="also write the detections here (COCO results JSON, RLE masks)")
    p.add_argument("--val-images", type=int, default=200, help="shapes validation images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shapes validation split (default 0)")
    p.add_argument("--json", nargs="?", const="-", metavar="F",
                   help="write the means, AP per class and per object size and the confusion matrix to the JSON "
                        "file F, and draw the matrix beside it (F's name + _confusion.png); --json alone: print "
                        "the means as one JSON line, the last")
    p.add_argument("--confusion", metavar="F.png", help="draw the confusion matrix (a heat map) here")


def _predict_arguments(p):
    p.add_argument("--checkpoint", required=True, help="model.npz from train")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--out", default="runs/predict", help="folder for the PNGs and detections.json")
    p.add_argument("--overwrite", action="store_true", help="replace the detections an earlier predict wrote to --out")
    p.add_argument("--score-threshold", type=float, default=0.5, help="draw and write detections above this")


def _lessons_arguments(p):
    p.add_argument("action", choices=["start", "check", "capstone"])
    p.add_argument("stage", nargs="?", default=None, help="one lesson, e.g. 01 (default: all; start and check only)")
    p.add_argument("--steps", type=int, default=None,
                   help="capstone: training steps of your run and of the reference (default 300)")
    p.add_argument("--seed", type=int, default=0, help="capstone: seed of data, initialization and sampling (default 0)")


def _export_shapes_arguments(p):
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="seed (the validation split of this seed)")
    p.add_argument("--out", required=True, help="output folder (images/ and annotations.json)")


def _diagnose_arguments(p):
    p.add_argument("--checkpoint", required=True, help="model.npz (or checkpoint.npz) from train on shapes")
    p.add_argument("--val-images", type=int, default=200,
                   help="shapes validation images, of the split the model was trained with (default 200)")
    p.add_argument("--json", metavar="F", help="also write the rows here: {\"rows\": [{\"name\", \"box_ap\", "
                                               "\"mask_ap\", ...}, ...]} (replaced if it exists)")


def _flags_first(command):
    """``explore``'s commands check their flags before they read anything, and name the flag first: those
    errors are usage errors (exit 2)."""
    def run(args):
        try:
            return command(args)
        except ValueError as err:
            if str(err).startswith("--"):
                raise UsageError(str(err)) from None
            raise
    return run


def _ablate(args):
    return ablate.cmd_ablate(args)


def _inspect_image(args, model, header):
    """The image ``inspect`` looks at (the model's square input), its ground truth (None for a file), and
    a few words saying which image it is."""
    size = model.config.image_size
    if args.image:
        from .data.images import read_image_resized
        image, _, (height, width) = read_image_resized(args.image, size)
        return image, None, f"{args.image} ({width} x {height}, resized to {size} px and padded square)"
    config = header["config"]
    data = config.get("data", {"kind": "shapes"})
    if data["kind"] != "shapes":
        raise UsageError(f"--index: the model was trained on {data.get('coco_gt')}, not on shapes; give an image "
                         "file with --image")
    from .data.shapes import ShapesDataset, boxes_from_masks
    seed, count = config.get("train", {}).get("seed", 0), config.get("train", {}).get("val_images", 200)
    if args.index >= count:
        raise UsageError(f"--index {args.index}: the model's shapes validation split has {count} images "
                         f"(0 to {count - 1})")
    image, masks, class_ids = ShapesDataset(seed, size, "validation", length=count)[args.index]
    gt = dict(boxes=boxes_from_masks(masks), labels=class_ids, masks=masks)
    return image, gt, f"shapes validation image {args.index} of {count} (seed {seed}), {len(class_ids)} objects"


def _inspect_files(args, has_image):
    """The figures ``inspect`` will write with these flags."""
    from .inspection_figures import EXPLAIN_FILE, STAGE_FILES, WEIGHT_FILES
    return ((list(STAGE_FILES.values()) if has_image else [])
            + (list(WEIGHT_FILES.values()) if args.weights else [])
            + ([EXPLAIN_FILE] if args.explain is not None else []))


def _check_inspect_flags(args, has_image):
    """Every flag of ``inspect`` checked before anything is read or written; returns the ``--out`` folder."""
    if args.image and args.index is not None:
        raise UsageError("--image and --index: choose one (an image file, or a shapes validation image by index)")
    if not has_image and not args.weights:
        raise UsageError("--image or --index: say which image to inspect (a file, or the index of a shapes "
                         "validation image); or give --weights alone for the weights")
    if args.explain is not None and not has_image:
        raise UsageError("--explain: explains a detection in an image; give --image or --index too")
    _positive_int(args, "index", 0)
    _positive_int(args, "explain", 0)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    clash = [name for name in _inspect_files(args, has_image) if (out / name).exists()]
    if clash and not args.overwrite:
        more = f" and {len(clash) - 1} more" if len(clash) > 1 else ""
        raise UsageError(f"--out {out}: holds {clash[0]}{more} of an earlier inspect; give another --out, or "
                         "--overwrite to replace them")
    return out


def cmd_inspect(args):
    from .checkpoint import load_checkpoint
    from .inference import load_model

    has_image = bool(args.image) or args.index is not None
    out = _check_inspect_flags(args, has_image)
    model, class_names = load_model(args.checkpoint)
    header = load_checkpoint(args.checkpoint)
    written = _inspect_stages(args, model, header, out, class_names) if has_image else 0
    if args.weights:
        written += _inspect_weights(args, header, out)
    print(f"wrote {written} figures to {out}/")
    return 0


def _inspect_stages(args, model, header, out, class_names):
    """The image's trace and activations drawn stage by stage (and ``--explain``); returns the figure count."""
    from .inspection import activation_statistics, trace
    from .inspection_figures import draw_stages, stage_report

    image, gt, what = _inspect_image(args, model, header)
    t = trace(model, image, gt)
    found = len(t.detections["scores"])
    if args.explain is not None and args.explain >= found:
        raise UsageError(f"--explain {args.explain}: the model found {found} detections in this image "
                         f"({'none to explain' if not found else f'0 to {found - 1}'})")
    print(f"inspecting {args.checkpoint} on {what}:")
    activations = activation_statistics(model, image)
    files = draw_stages(out, t, activations, class_names)
    for line in stage_report(t, activations, class_names, files):
        print(f"  {line}")
    if args.explain is not None:
        return len(files) + _inspect_explain(args, model, image, out, class_names)
    return len(files)


def _inspect_weights(args, header, out):
    """``--weights``: the checkpoint's weight histograms, and the norms the run logged; returns the count."""
    from .inspection import weights_report
    from .inspection_figures import draw_weights
    from .train import _read_log

    log = Path(args.checkpoint).parent / "metrics.jsonl"
    report = weights_report(header["params"], _read_log(log))
    files = draw_weights(out, report)
    print(f"weights: {len(report.weights)} layers' histograms -> {files['histograms'].name}")
    if "norms" in files:
        print(f"norms: weight and gradient of {len(report.norms)} layers at {len(report.steps)} logged steps -> "
              f"{files['norms'].name}")
    else:
        where = f"{log} holds no weight norms" if log.exists() else f"there is no {log}"
        print(f"norms: {where} (training logs them every --norms-every steps and at the end; this run was "
              "trained with them off, or before they were logged); histograms only")
    return len(files)


def _inspect_explain(args, model, image, out, class_names):
    """``--explain K``: detection K explained by its gradients (``explain.py``), one more figure; returns 1."""
    from .explain import explain_detection, explanation_figure
    from .inspection_figures import EXPLAIN_FILE
    from .visualize import save
    explanation = explain_detection(model, image, args.explain)
    path = save(explanation_figure(image, explanation, class_names), out / EXPLAIN_FILE)
    print(f"  explain: detection {args.explain}, {explanation['share_inside_box']:.0%} of its score's gradient "
          f"on the pixels of its box (the box is {explanation['box_area_share']:.0%} of the image) -> {path.name}")
    return 1


def _inspect_arguments(p):
    p.add_argument("--checkpoint", required=True, help="model.npz (or checkpoint.npz) from train")
    p.add_argument("--image", help="an image file to inspect (no ground truth: recall and anchor labels skipped)")
    p.add_argument("--index", type=int, help="or the index of an image of the shapes validation split the model "
                                             "was trained with (its ground truth known)")
    p.add_argument("--out", required=True, help="folder for the numbered figures")
    p.add_argument("--weights", action="store_true",
                   help="also draw each layer's weight histogram, and its norms over training from the run's "
                        "metrics.jsonl (beside the checkpoint)")
    p.add_argument("--explain", type=int, metavar="K", help="also explain detection K (0 = the best)")
    p.add_argument("--overwrite", action="store_true", help="replace the figures an earlier inspect wrote to --out")


# Every subcommand, registered the same way: its name, its one-line help, the function that adds its flags,
# and the function that runs it (returning the exit status).
SUBCOMMANDS = [
    ("demo", "print and draw the lecture's stages", _demo_arguments, lambda a: 0 if demo.demo(a.out) else 1),
    ("train", "train Mask R-CNN (default: the shapes model), then evaluate it", _train_arguments, cmd_train),
    ("evaluate", "COCO AP of a model", _evaluate_arguments, cmd_evaluate),
    ("predict", "draw the instances the model finds in your images", _predict_arguments, cmd_predict),
    ("export-shapes", "write shapes images and COCO annotations", _export_shapes_arguments, cmd_export_shapes),
    ("anchors", explore.ANCHORS_HELP, explore.add_anchors_arguments, _flags_first(explore.cmd_anchors)),
    ("browse", explore.BROWSE_HELP, explore.add_browse_arguments, _flags_first(explore.cmd_browse)),
    ("lessons", "graded exercises: start (make your working copies), check [NN] (grade them), capstone (train "
                "Mask R-CNN on your functions)", _lessons_arguments,
     cmd_lessons),
    ("book", book.HELP, book.add_arguments, book.run_book),
    ("ablate", ablate.HELP, ablate.add_arguments, _ablate),
    ("diagnose", "which stage loses the AP: each stage replaced by the ground truth", _diagnose_arguments,
     cmd_diagnose),
    ("inspect", "the model on one image, stage by stage, as figures (and its weights)", _inspect_arguments,
     cmd_inspect),
]
COMMANDS = {name: run for name, _, _, run in SUBCOMMANDS}


def build_parser():
    parser = argparse.ArgumentParser(prog="mrcnn-edu", description="Mask R-CNN from first principles.",
                                     parents=[_backend_flag()])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_arguments, _ in SUBCOMMANDS:
        add_arguments(sub.add_parser(name, parents=[_backend_flag()], help=help_text))
    return parser


def main(argv=None):
    import matplotlib
    matplotlib.use("Agg")  # the command line writes files and never opens a window (headless machines too)
    from .checkpoint import CheckpointError
    from .train import TrainingDiverged

    parser = build_parser()
    args = parser.parse_args(argv)
    name = f"mrcnn-edu {args.command}"
    try:
        if getattr(args, "backend", None):
            backend.use(args.backend)    # a valid --backend wins over a bad MRCNN_EDU_BACKEND
        backend.check_env()
    except (ValueError, RuntimeError) as err:
        parser.exit(2, f"{name}: {err}\n")
    try:
        return COMMANDS[args.command](args)
    except UsageError as err:
        parser.exit(2, f"{name}: {err}\n")
    except (ValueError, OSError, MemoryError, TrainingDiverged, CheckpointError) as err:
        # DatasetError, CheckpointError, RunExistsError are ValueErrors: a bad file gives a message, not a traceback
        parser.exit(1, f"{name}: {err}\n")
    except KeyboardInterrupt as err:  # Ctrl-C: what was interrupted says how to go on, without a traceback
        print(f"{name}: {str(err) or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
