"""Stage ops at training sizes, next to torchvision's CPU kernels when the oracle is installed.

    python benchmarks/ops.py [--repeat 5] [--backend numpy|cupy]

With ``--backend cupy`` ours runs on the GPU and torchvision's kernels run on the same GPU (CUDA).

Prints a Markdown table: median wall time in ms of ours, of torchvision (same inputs, float32, the same
number of threads: both use all cores), and the ratio ours / torchvision (below 1 = we are faster).
The sizes are those of a Faster R-CNN training step on an 800 x 600 image: a 256 x 50 x 50 stride-16 feature
map, 512 sampled RoIs, 2000 proposals into NMS, 20000 anchors against 20 ground-truth boxes.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import choose_backend, synchronize  # noqa: E402
from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.anchors import generate_anchors  # noqa: E402
from mrcnn_edu.boxes import box_iou, nms  # noqa: E402
from mrcnn_edu.roi import roi_align, roi_align_backward, roi_pool, roi_pool_backward  # noqa: E402
from mrcnn_edu.rpn import rpn_targets  # noqa: E402

try:
    import torch
    import torchvision
except ImportError:  # the oracle is optional
    torch = torchvision = None

DEVICE = "cpu"  # where torchvision's tensors live: "cuda" when ours runs on CuPy


def tensor(a, **kwargs):
    """A torch tensor of the host array ``a`` on ``DEVICE``."""
    return torch.tensor(a, device=DEVICE, **kwargs)


def timeit(fn, repeat):
    """Median wall time of ``fn()`` in ms, after one warm-up call (synchronizing the GPU if there is one)."""
    def run():
        fn()
        synchronize(torch, DEVICE)
    run()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def random_boxes(rng, n, width=800, height=600, smallest=16, largest=400):
    centre = rng.uniform((0, 0), (width, height), size=(n, 2))
    size = rng.uniform(smallest, largest, size=(n, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1).clip(0, (width, height, width, height))


def cases(rng):
    """(name, ours, torchvision or None) triples; each callable runs the op once."""
    xp = backend.xp
    feats = rng.standard_normal((1, 256, 50, 50)).astype(np.float32)
    rois = np.column_stack([np.zeros(512), random_boxes(rng, 512)]).astype(np.float32)
    f, r = xp.asarray(feats), xp.asarray(rois)
    tf = tensor(feats) if torch else None
    tr = tensor(rois) if torch else None
    out = []
    for size, ratio in ((7, 2), (7, -1), (14, 2)):
        grad = xp.asarray(rng.standard_normal((512, 256, size, size)).astype(np.float32))
        args = (size, 1 / 16, ratio, False)
        label = f"roi_align 512 RoIs, 256x50x50 -> {size}x{size}, sampling_ratio {ratio}"
        out.append((f"{label}: forward", lambda a=args: roi_align(f, r, *a),
                    (lambda a=args: torchvision.ops.roi_align(tf, tr, *a)) if torch else None))
        out.append((f"{label}: forward + backward",
                    lambda a=args, g=grad: (roi_align(f, r, *a), roi_align_backward(g, r, f.shape, *a)),
                    _torch_fwd_bwd(torchvision.ops.roi_align, feats, tr, backend.to_host(grad), *args) if torch else None))
    grad7 = xp.asarray(rng.standard_normal((512, 256, 7, 7)).astype(np.float32))

    def pool_fwd_bwd():
        o, am = roi_pool(f, r, 7, 1 / 16)
        roi_pool_backward(grad7, am, f.shape, rois=r)
    out.append(("roi_pool 512 RoIs, 256x50x50 -> 7x7: forward + backward", pool_fwd_bwd,
                _torch_fwd_bwd(torchvision.ops.roi_pool, feats, tr, backend.to_host(grad7), 7, 1 / 16) if torch else None))

    boxes = random_boxes(rng, 2000, smallest=20, largest=300).astype(np.float32)
    scores = rng.random(2000).astype(np.float32)
    b, s = xp.asarray(boxes), xp.asarray(scores)
    tb, ts = (tensor(boxes), tensor(scores)) if torch else (None, None)
    out.append(("nms 2000 boxes, IoU 0.7", lambda: nms(b, s, 0.7),
                (lambda: torchvision.ops.nms(tb, ts, 0.7)) if torch else None))
    anchors = generate_anchors((600, 800))
    gt = xp.asarray(random_boxes(rng, 20).astype(np.float32))
    a20k = xp.asarray(random_boxes(rng, 20000).astype(np.float32))
    out.append(("box_iou 20000 x 20", lambda: box_iou(a20k, gt),
                (lambda t=(tensor(backend.to_host(a20k)), tensor(backend.to_host(gt))) if torch else None:
                 torchvision.ops.box_iou(*t)) if torch else None))
    out.append(("generate_anchors 800 x 600 (17100)", lambda: generate_anchors((600, 800)), None))
    gen = backend.rng(0)
    out.append(("rpn_targets 17100 anchors, 20 gt", lambda: rpn_targets(anchors, gt, gen), None))
    return out


def _torch_fwd_bwd(op, feats, rois, grad, *args):
    tg = tensor(grad)

    def run():
        tf = tensor(feats, requires_grad=True)
        op(tf, rois, *args).backward(tg)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None)
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = choose_backend(args.backend, torch)
    rng = np.random.default_rng(0)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {backend.xp.cuda.runtime.getDeviceProperties(0)['name'].decode()}" if backend.name == "cupy" else ""
    print(f"backend {backend.name}, NumPy {np.__version__}, {os.cpu_count()} cores ({cpu}){gpu}, "
          f"torchvision on {DEVICE}"
          + (f", torch {torch.__version__} / torchvision {torchvision.__version__} "
             f"({torch.get_num_threads()} threads)" if torch else ", torchvision not installed"))
    print()
    print("| op | ours ms | torchvision ms | ours / torchvision |")
    print("| --- | ---: | ---: | ---: |")
    for name, ours, theirs in cases(rng):
        t_ours = timeit(ours, args.repeat)
        t_theirs = timeit(theirs, args.repeat) if theirs else None
        cell = f"{t_theirs:.1f}" if t_theirs else "-"
        ratio = f"{t_ours / t_theirs:.2f}" if t_theirs else "-"
        print(f"| {name} | {t_ours:.1f} | {cell} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
