"""Where a training step of the default shapes model spends its time: cProfile over a few steps.

    python benchmarks/profile_step.py [--backend numpy|cupy] [--steps 10] [--warmup 3] [--top 30] [--image-size 128]

Prints the wall time per step (the GPU synchronized at the end of each step), then the functions with
the most time of their own (``tottime``) and the library functions with the most time under them
(``cumtime``). On the GPU most calls return before their kernels have run, so ``tottime`` there is the
host's cost of launching work, and the time spent waiting for the GPU shows up in the calls that
synchronize (``get``, ``item``, ``__bool__``, ``synchronize``). ``--image-size 256`` or ``512`` profiles the
larger shapes images (more and larger shapes) with the model settings scaled to match
(``shapes_model_settings``, as ``mrcnn-edu train --image-size`` sets them).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import choose_backend  # noqa: E402
from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.data.shapes import ShapesDataset, shapes_model_settings  # noqa: E402
from mrcnn_edu.model import MaskRCNN, ModelConfig  # noqa: E402
from mrcnn_edu.optim import AdamW  # noqa: E402
from train_step import train_step  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=128, help="shapes images of this size (default 128)")
    args = parser.parse_args(argv)
    choose_backend(args.backend, None)
    data = ShapesDataset(0, args.image_size, "train")
    model = MaskRCNN(ModelConfig(**shapes_model_settings(args.image_size)), rng=np.random.default_rng(0))
    model.flatten_parameters()
    opt = AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)

    def step(i):
        train_step(model, opt, [data[4 * i + k] for k in range(4)], i)

    for i in range(args.warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(args.warmup, args.warmup + args.steps):
        step(i)
    plain = (time.perf_counter() - t0) / args.steps
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(args.warmup + args.steps, args.warmup + 2 * args.steps):
        step(i)
    profiler.disable()
    total = pstats.Stats(profiler).total_calls / args.steps
    print(f"backend {backend.name}, {args.image_size} px images: {plain * 1e3:.1f} ms a step without the profiler "
          f"(mean over {args.steps} steps); {total:.0f} Python function calls a step\n")
    for key, restrict in (("tottime", ()), ("cumtime", ("mrcnn_edu",))):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats(key)
        stats.print_stats(*restrict, args.top)
        text = out.getvalue()
        print(f"--- by {key}" + (" (library functions)" if restrict else "") + ", per "
              f"{args.steps} steps\n" + text[text.index("ncalls"):])


if __name__ == "__main__":
    main()
