"""The Mask R-CNN paper's ablations (He et al. 2017, Table 2), reproduced on shapes: ``mrcnn-edu ablate``.

Each setting trains the default shapes model with one thing changed, under the same budget (steps, batch,
learning-rate schedule) and the same seed, and is scored on the same validation images:

    (b) mask loss     per-class sigmoid (Mask R-CNN)  vs  per-pixel softmax over the classes
    (c) RoI op, C4    RoIAlign vs RoIPool, both heads on C4 (stride 16, no FPN)
    (d) RoI op, C5    the same at stride 32 (one more backbone stage), where the paper's gap is largest
    (e) mask head     FCN vs MLP (fc layers on the flattened RoI)
    lecture           smooth-L1 vs GIoU as the box-head loss ("could IoU itself be L_box?")

(b), (e) and the box loss change the default model (FPN, P3 for boxes, P2 for masks); (c) and (d) drop the
FPN, as the paper's C4 and C5 rows do. Every run is an ordinary ``train`` run in ``<out>/<setting>/`` (its
curves, predictions and summary included); a setting whose run finished with the same configuration is
not trained again, so an interrupted ablation continues where it stopped, and two processes may share the
settings (``--only``) and a third print the table; ``--jobs N`` does that itself (``run_in_processes``).
``MRCNN_EDU_FAST=1`` makes a smoke run of a few steps.

The table goes to stdout and, between two marker lines, into a Markdown file (``--table``): text written
around the markers by hand is kept.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import backend
from .fast import fast_mode
from .model import ModelConfig
from .train import TrainConfig, train

__all__ = ["Setting", "SETTINGS", "run_ablations", "format_ablation_table", "write_table"]

BEGIN, END = "<!-- ablate:begin -->", "<!-- ablate:end -->"


@dataclass(frozen=True)
class Setting:
    """One row of the table: a name, the paper's sub-table, the model fields it changes, the paper's numbers."""
    name: str
    group: str
    changes: dict = field(default_factory=dict)
    paper_mask_ap: float | None = None
    paper_box_ap: float | None = None


# Paper numbers: COCO minival, ResNet-50 backbones (C4, C5 or FPN as the group says), Table 2 of the paper.
SETTINGS = (
    Setting("default", "(b) mask loss", {}, 30.3),
    Setting("softmax-mask-loss", "(b) mask loss", {"mask_loss": "softmax"}, 24.8),
    Setting("c4-roialign", "(c) RoI op, C4 stride 16", {"fpn": False}, 30.3),
    Setting("c4-roipool", "(c) RoI op, C4 stride 16", {"fpn": False, "roi_op": "pool"}, 26.9),
    Setting("c5-roialign", "(d) RoI op, C5 stride 32", {"fpn": False, "backbone_stride": 32}, 30.9, 34.0),
    Setting("c5-roipool", "(d) RoI op, C5 stride 32", {"fpn": False, "backbone_stride": 32, "roi_op": "pool"},
            23.6, 28.2),
    Setting("fcn-mask-head", "(e) mask head", {}, 33.6),
    Setting("mlp-mask-head", "(e) mask head", {"mask_head": "mlp"}, 31.5),
    Setting("smooth-l1-box-loss", "lecture: box loss", {}),
    Setting("giou-box-loss", "lecture: box loss", {"box_loss": "giou"}),
)
# the settings above that are the default model itself share its run
SAME_AS_DEFAULT = {"fcn-mask-head", "smooth-l1-box-loss"}


def budget(steps=None, val_images=None, seed=0):
    """The training budget every setting gets: the default run's, or a few steps under ``MRCNN_EDU_FAST=1``."""
    tcfg = TrainConfig(seed=seed)
    if fast_mode():
        tcfg.steps, tcfg.val_images, tcfg.batch_size, tcfg.warmup_steps = 3, 4, 2, 1
    tcfg.steps = steps or tcfg.steps
    tcfg.val_images = val_images or tcfg.val_images
    tcfg.eval_every = tcfg.steps          # only the final evaluation: the table compares end points
    tcfg.checkpoint_every = max(tcfg.steps // 4, 1)
    return tcfg


def _run_dir(out, setting):
    return Path(out) / ("default" if setting.name in SAME_AS_DEFAULT else setting.name)


def _finished(run_dir, mcfg, tcfg):
    """The summary of a finished run in ``run_dir`` with this configuration, else None (fields added to the
    configs since the run count as their defaults)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        return summary if _same_config(run_dir, _config(mcfg, tcfg)) else None
    except (OSError, ValueError):
        return None


def _config(mcfg, tcfg):
    return dict(model=mcfg.to_dict(), train=asdict(tcfg))


def run_ablations(out="runs/ablate", only=None, steps=None, val_images=None, seed=0, progress=True, log=print,
                  jobs=1):
    """Train (or reuse) every setting in ``only`` (default: all) and return ``{name: summary}``.

    A finished run with the same configuration is reused; an interrupted one resumes from its checkpoint.
    ``jobs`` > 1 trains that many settings at once, each in its own process (``run_in_processes``).
    """
    names = [s.name for s in SETTINGS]
    only = list(only or names)
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ValueError(f"--only: unknown setting(s) {unknown}; choose from {names}")
    if jobs > 1:
        run_in_processes(out, only, steps, val_images, seed, jobs, progress=progress, log=log)
        found = collect(out, steps, val_images, seed)
        return {name: found[name] for name in names if name in only}
    tcfg = budget(steps, val_images, seed)
    results = {}
    for setting in SETTINGS:
        if setting.name not in only:
            continue
        run_dir = _run_dir(out, setting)
        mcfg = ModelConfig(**setting.changes)
        summary = _finished(run_dir, mcfg, tcfg)
        if summary is None:
            log(f"ablate: {setting.name} ({setting.group}): training {tcfg.steps} steps into {run_dir}/")
            config = _config(mcfg, tcfg)
            resume = (run_dir / "checkpoint.npz").exists() and _same_config(run_dir, config)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "ablation.json").write_text(json.dumps(config, indent=1))
            summary = train(run_dir, mcfg, tcfg, resume=resume, progress=progress, overwrite=not resume)
            if summary.get("interrupted"):
                raise KeyboardInterrupt(f"ablate: interrupted in {setting.name}; run it again to continue")
        else:
            log(f"ablate: {setting.name}: reusing the finished run in {run_dir}/")
        results[setting.name] = summary
    return results


def run_in_processes(out, only, steps, val_images, seed, jobs, progress=True, log=print):
    """Train the unfinished settings in ``only`` ``jobs`` at a time, each as ``mrcnn-edu ablate --only NAME``
    in a process of its own, whose output goes to ``<run folder>/ablate.log``.

    Each process gets ``cpu_count // jobs`` BLAS threads (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS``): on 2 cores, two one-thread runs make 1.5 times the steps a second of one
    two-thread run (0.147 s a step in each against 0.113 s), because most of a step is single-threaded
    NumPy work between the matrix products, which leaves the second core idle. The numbers differ from a
    one-process run in the float32 rounding of the products (another thread count adds in another order).
    Ctrl-C stops every run with a checkpoint; run the command again to continue.
    """
    tcfg = budget(steps, val_images, seed)
    todo, seen = [], set()
    for setting in SETTINGS:
        run_dir = _run_dir(out, setting)
        if setting.name in only and run_dir not in seen:
            seen.add(run_dir)
            if _finished(run_dir, ModelConfig(**setting.changes), tcfg) is None:
                todo.append((setting.name, run_dir))
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               TQDM_MININTERVAL="10")         # a progress line every 10 s in the log, not every 0.1 s
    base = [sys.executable, "-m", "mrcnn_edu", "--backend", backend.name, "ablate", "--out", str(out),
            "--seed", str(seed), "--table", ""]
    base += ["--steps", str(steps)] if steps else []
    base += ["--val-images", str(val_images)] if val_images else []
    from tqdm.auto import tqdm

    running, failed = {}, []
    bar = tqdm(total=len(todo), desc=f"ablate, {jobs} at a time", unit="run", disable=not progress)
    try:
        while todo or running:
            while todo and len(running) < jobs:
                name, run_dir = todo.pop(0)
                run_dir.mkdir(parents=True, exist_ok=True)
                log_file = open(run_dir / "ablate.log", "w")
                running[name] = (subprocess.Popen(base + ["--only", name], stdout=log_file,
                                                  stderr=subprocess.STDOUT, env=env), log_file, run_dir)
                log(f"ablate: {name}: training in its own process ({threads} BLAS thread(s)), "
                    f"output in {run_dir / 'ablate.log'}")
            time.sleep(0.2)
            for name, (proc, log_file, run_dir) in list(running.items()):
                if proc.poll() is not None:
                    log_file.close()
                    del running[name]
                    bar.update()
                    if proc.returncode:
                        failed.append(f"{name} (exit status {proc.returncode}, see {run_dir / 'ablate.log'})")
    except KeyboardInterrupt:
        for proc, log_file, _ in running.values():
            proc.send_signal(signal.SIGINT)    # each run saves its checkpoint and stops
        for proc, log_file, _ in running.values():
            proc.wait()
            log_file.close()
        raise KeyboardInterrupt("ablate: interrupted; run it again to continue") from None
    finally:
        bar.close()
    if failed:
        raise RuntimeError("ablate: these settings failed: " + "; ".join(failed))


def _same_config(run_dir, config):
    """Whether the run in ``run_dir`` was made with ``config`` (its ``ablation.json``)."""
    try:
        saved = json.loads((run_dir / "ablation.json").read_text())
        return (ModelConfig.from_dict(saved["model"]) == ModelConfig.from_dict(config["model"])
                and TrainConfig.from_dict(saved["train"]) == TrainConfig.from_dict(config["train"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def collect(out="runs/ablate", steps=None, val_images=None, seed=0):
    """``{name: summary}`` of every setting whose run has finished in ``out`` with this budget."""
    tcfg = budget(steps, val_images, seed)
    found = {}
    for s in SETTINGS:
        summary = _finished(_run_dir(out, s), ModelConfig(**s.changes), tcfg)
        if summary is not None:
            found[s.name] = summary
    return found


def _pct(v):
    return "" if v is None else f"{100 * v:.1f}"


def format_ablation_table(results):
    """A Markdown table: each setting's mask AP, AP50, AP75 and box AP (in %), the paper's, and whether the
    pair of settings in a group is ordered as in the paper (by mask AP; by box AP too where the paper gives it)."""
    lines = ["| ablation | setting | mask AP | mask AP50 | mask AP75 | box AP | paper mask AP | paper box AP "
             "| same order as the paper? |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    groups = {}
    for s in SETTINGS:
        groups.setdefault(s.group, []).append(s)
    for group, (first, second) in groups.items():
        verdict = _verdict(results, first, second)
        for s in (first, second):
            m = results.get(s.name, {}).get("metrics")
            cells = [_pct(m.get(k)) for k in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP")] if m else ["not run"] + [""] * 3
            lines.append(f"| {group} | {s.name} | " + " | ".join(cells) +
                         f" | {'' if s.paper_mask_ap is None else s.paper_mask_ap} | "
                         f"{'' if s.paper_box_ap is None else s.paper_box_ap} | {verdict if s is first else ''} |")
    return "\n".join(lines)


def _verdict(results, first, second):
    a, b = (results.get(s.name, {}).get("metrics") for s in (first, second))
    if not (a and b):
        return ""
    gap = 100 * (a["mask_AP"] - b["mask_AP"])
    if first.paper_mask_ap is None:
        return f"(no paper number) mask AP {gap:+.1f}, box AP {100 * (a['box_AP'] - b['box_AP']):+.1f}"
    paper_gap = first.paper_mask_ap - second.paper_mask_ap
    text = f"{_same(gap, paper_gap)}: mask AP {gap:+.1f} (paper {paper_gap:+.1f})"
    if first.paper_box_ap is not None:
        box_gap, paper_box = 100 * (a["box_AP"] - b["box_AP"]), first.paper_box_ap - second.paper_box_ap
        text += f"; box AP {box_gap:+.1f} ({_same(box_gap, paper_box)}, paper {paper_box:+.1f})"
    return text


def _same(gap, paper_gap):
    return "tie" if round(gap, 1) == 0 else ("yes" if gap * paper_gap > 0 else "no")


def table_block(results, tcfg, command):
    """The generated part of the Markdown file: how it was made, then the table."""
    runs = ", ".join(f"{n} {results[n]['train_seconds']:.0f} s" for n in results if n not in SAME_AS_DEFAULT)
    return "\n".join([
        BEGIN,
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, {os.cpu_count()} cores): "
        f"each setting {tcfg.steps} steps x {tcfg.batch_size} images, seed {tcfg.seed}, "
        f"scored on {tcfg.val_images} validation images. Training wall times: {runs} (longer where runs shared "
        f"the machine).",
        "",
        format_ablation_table(results),
        END])


def write_table(path, block):
    """Put ``block`` between the markers of the Markdown file at ``path`` (made if missing), keeping the rest."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Ablations on shapes\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


HELP = "the paper's Table 2 ablations on shapes: train each setting, print one table"


def add_arguments(p):
    """The flags of ``mrcnn-edu ablate`` (``cli.py`` registers it with ``HELP`` and ``cmd_ablate``)."""
    p.add_argument("--out", default="runs/ablate", help="folder of the runs, one sub-folder a setting (default: runs/ablate)")
    p.add_argument("--only", help=f"comma-separated settings (default: all): {', '.join(s.name for s in SETTINGS)}")
    p.add_argument("--steps", type=int, help="training steps of each setting (default: the train default, 4400)")
    p.add_argument("--val-images", type=int, help="validation images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialization and sampling (default 0)")
    p.add_argument("--table", default="benchmarks/ablations.md",
                   help="Markdown file to write the table into (default: benchmarks/ablations.md; '' for none)")
    p.add_argument("--table-only", action="store_true", help="train nothing: tabulate the finished runs in --out")
    p.add_argument("--jobs", type=int, default=1,
                   help="settings trained at once, each in its own process with cpu_count / jobs BLAS threads "
                        "(default 1; 2 is about 1.5x faster on 2 cores)")


def cmd_ablate(args):
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    command = "mrcnn-edu ablate" + "".join(f" --{k.replace('_', '-')} {v}" for k, v in
                                            (("steps", args.steps), ("val_images", args.val_images)) if v)
    command += f" --seed {args.seed}" if args.seed else ""
    if args.jobs < 1:
        raise ValueError(f"--jobs: expected 1 or more settings at once, got {args.jobs}")
    command += f" --jobs {args.jobs}" if args.jobs > 1 and not args.table_only else ""
    if args.table_only:
        results = collect(args.out, args.steps, args.val_images, args.seed)
    else:
        results = run_ablations(args.out, only, args.steps, args.val_images, args.seed, jobs=args.jobs)
    print(format_ablation_table(results))
    if args.table and not only:
        write_table(args.table, table_block(results, budget(args.steps, args.val_images, args.seed), command))
        print(f"table written to {args.table}")
    return 0
