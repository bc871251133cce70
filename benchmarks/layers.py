"""Convolution speed: forward + backward of ``mrcnn_edu.nn.functional.conv2d`` at the shapes of the default
shapes model (batch 4 of 128 x 128 images), against the machine's NumPy float32 GEMM rate and PyTorch's CPU conv.

    python benchmarks/layers.py                 # plain NumPy: the torch columns show "-"
    .venv-oracle/bin/python benchmarks/layers.py   # with PyTorch installed: adds its time and the ratio
    python benchmarks/layers.py --backend cupy  # on the GPU: CuPy's GEMM rate, PyTorch's conv on CUDA

Columns: the layer; our forward + backward time in ms (best of ``--reps``); its rate in GFLOP/s, counting
the three GEMM-sized products (forward, dx, dw: 3 x 2 N C_out C_in kh kw OH OW flops); that rate as a
percentage of the best float32 matrix product NumPy reaches on this machine (the physical limit for a
GEMM-based conv); the time of those three products alone, at these shapes, on ready operands (the floor
of an im2col conv: ours minus it is what the copies cost); the time of the two column copies an im2col
conv cannot skip (im2col of x, and dx's im2col of dout or col2im; 0 for a 1 x 1 conv); PyTorch's time
for the same forward + backward (float32, gradients for x, w and b, its default threads); and our time
over torch's. Thread counts are left as the environment sets them. Below the table, the two floors in
total: the GEMMs alone, and the GEMMs with the column copies.
On the GPU the limit is CuPy's float32 matrix product and torch runs cuDNN in true float32 (TF32 off, as
CuPy's products are), so both sides do the same arithmetic.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from _common import choose_backend, synchronize  # noqa: E402
from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.nn import conv  # noqa: E402
from mrcnn_edu.nn import functional as F  # noqa: E402

try:
    import torch
except ImportError:  # the benchmark runs without the oracle
    torch = None

DEVICE = "cpu"  # where torch's tensors live: "cuda" with --backend cupy


def sync():
    synchronize(torch, DEVICE)

# (label, N, C_in, C_out, H = W, kernel, stride, padding): every conv of the default shapes model
# (mrcnn_edu.model.ModelConfig) at batch 4 on 128 x 128 images, the mask head on 64 RoIs of 14 x 14
SHAPES = [
    ("stage1 s2", 4, 3, 16, 128, 3, 2, 1),
    ("stage2a s2", 4, 16, 32, 64, 3, 2, 1),
    ("stage2b", 4, 32, 32, 32, 3, 1, 1),
    ("stage3a s2", 4, 32, 64, 32, 3, 2, 1),
    ("stage3b", 4, 64, 64, 16, 3, 1, 1),
    ("stage4a s2", 4, 64, 128, 16, 3, 2, 1),
    ("stage4b", 4, 128, 128, 8, 3, 1, 1),
    ("fpn lat2 1x1", 4, 32, 64, 32, 1, 1, 0),
    ("fpn P2 3x3", 4, 64, 64, 32, 3, 1, 1),
    ("fpn P3 3x3", 4, 64, 64, 16, 3, 1, 1),
    ("rpn 3x3", 4, 128, 128, 8, 3, 1, 1),
    ("mask 3x3", 64, 64, 64, 14, 3, 1, 1),
    ("mask 3x3", 64, 64, 64, 14, 3, 1, 1),
]


def best_time(fn, reps):
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_rate(reps):
    """The best float32 GEMM rate of the backend here, in GFLOP/s (square products, the BLAS's best case)."""
    gen = np.random.default_rng(0)
    best = 0.0
    for n in (1024, 2048) if backend.name == "numpy" else (2048, 4096, 8192):
        a, b = (backend.asarray(gen.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
        best = max(best, 2 * n ** 3 / best_time(lambda: a @ b, reps) / 1e9)
    return best


def ours(x, w, b, stride, padding):
    def run():
        out, cache = F.conv2d(x, w, b, stride, padding)
        F.conv2d_backward(dout, cache)
    out, _ = F.conv2d(x, w, b, stride, padding)
    dout = backend.asarray(np.random.default_rng(1).standard_normal(out.shape, dtype=np.float32))
    return run, out.shape


def gemms_alone(x, w, out_shape):
    """The three products of forward + backward on ready operands, with no im2col, col2im or transpose:
    ``W @ cols`` (forward), ``dout @ cols.T`` (dw), ``W.T @ dout`` (dcols). Their time is the floor of any
    convolution built on these GEMMs; ours minus it is what the copies cost."""
    gen = np.random.default_rng(2)
    c_out, k = w.shape[0], w[0].size
    l = x.shape[0] * out_shape[2] * out_shape[3]
    wm, cols, dout = (backend.asarray(gen.standard_normal(shape, dtype=np.float32))
                      for shape in ((c_out, k), (k, l), (c_out, l)))

    def run():
        wm @ cols, dout @ cols.T, wm.T @ dout
    return run


def columns_alone(x, w, stride, padding, out_shape):
    """The two column copies an im2col conv cannot skip: the forward's im2col of x, and dx's gather (the
    im2col of dout, at stride 1) or col2im (its scatter, otherwise). None for a 1 x 1 conv (no columns)."""
    c_out, c_in, kh, kw = w.shape
    if (kh, kw) == (1, 1) and padding == 0:
        return None
    n, _, oh, ow = out_shape
    k, s, p = (kh, kw), (stride, stride), (padding, padding)
    gen = np.random.default_rng(3)
    if stride == 1:
        dout = backend.asarray(gen.standard_normal((c_out, n, oh, ow), dtype=np.float32))

        def dx_copy():
            conv._windows_cm(dout, k, (1, 1), (kh - 1 - padding, kw - 1 - padding))
    else:
        dcols = backend.asarray(gen.standard_normal((c_in * kh * kw, n * oh * ow), dtype=np.float32))

        def dx_copy():
            conv._unwindows(dcols, x.shape, k, s, p)

    def run():
        conv._windows(x, k, s, p)
        dx_copy()
    return run


def theirs(x, w, b, stride, padding, out_shape):
    tx, tw, tb = (torch.tensor(backend.to_host(a), device=DEVICE, requires_grad=True) for a in (x, w, b))
    dout = torch.randn(out_shape, device=DEVICE)

    def run():
        out = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
        torch.autograd.grad(out, (tx, tw, tb), dout)
    return run


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per shape (the best is kept)")
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None, help="numpy (default) or cupy")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = choose_backend(args.backend, torch)
    gemm = gemm_rate(args.reps)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; NumPy {np.__version__}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          + (f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads, on {DEVICE})" if torch
             else "PyTorch absent"))
    if backend.name == "cupy":
        gpu = backend.xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        print(f"GPU: {gpu}; CuPy {backend.xp.__version__} float32 GEMM rate: {gemm:.0f} GFLOP/s "
              "(best square product, 2048 to 8192)\n")
    else:
        print(f"NumPy float32 GEMM rate: {gemm:.0f} GFLOP/s (best square product, 1024 and 2048)\n")
    header = f"| {'layer':<12} | {'N x C_in x H x W -> C_out, k, s':<32} | {'ours ms':>8} | {'GFLOP/s':>7} | " \
             f"{'% GEMM':>6} | {'GEMMs ms':>8} | {'cols ms':>7} | {'torch ms':>8} | {'ours/torch':>10} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    gen = np.random.default_rng(0)
    cases = []
    for label, n, c_in, c_out, size, k, s, p in SHAPES:
        x = gen.standard_normal((n, c_in, size, size), dtype=np.float32)
        w = (gen.standard_normal((c_out, c_in, k, k), dtype=np.float32) * 0.1).astype(np.float32)
        b = np.zeros(c_out, dtype=np.float32)
        cases.append((label, backend.asarray(x), backend.asarray(w), backend.asarray(b), s, p))
    # all of ours first, then all of torch's: torch's OpenMP threads keep spinning for a while after each
    # call, and would steal the cores from NumPy's BLAS threads if the two alternated
    results = []
    for label, x, w, b, s, p in cases:
        run, out_shape = ours(x, w, b, s, p)
        flops = 3 * 2 * x.shape[0] * w.shape[0] * w[0].size * out_shape[2] * out_shape[3]
        copies = columns_alone(x, w, s, p, out_shape)
        results.append([label, x, w, s, out_shape, flops, best_time(run, args.reps), None,
                        best_time(gemms_alone(x, w, out_shape), args.reps),
                        best_time(copies, args.reps) if copies else 0.0])
    if torch is not None:
        time.sleep(1.0)
        for r, (label, x, w, b, s, p) in zip(results, cases):
            r[7] = best_time(theirs(x, w, b, s, p, r[4]), args.reps)
    for label, x, w, s, _, flops, t_ours, t_torch, t_gemms, t_cols in results:
        n, c_in, size = x.shape[0], x.shape[1], x.shape[2]
        shape = f"{n}x{c_in}x{size}x{size} -> {w.shape[0]}, {w.shape[2]}x{w.shape[3]}, s{s}"
        print(row(label, shape, t_ours, flops, gemm, t_torch, t_gemms, t_cols))
    total_flops = sum(r[5] for r in results)
    total_torch = sum(r[7] for r in results) if torch is not None else None
    total_gemms, total_cols = sum(r[8] for r in results), sum(r[9] for r in results)
    print(row("total", "", sum(r[6] for r in results), total_flops, gemm, total_torch, total_gemms, total_cols))
    print()
    for what, t in (("the GEMMs alone", total_gemms), ("the GEMMs and the column copies", total_gemms + total_cols)):
        line = f"Floor, {what}: {t * 1e3:.1f} ms, {100 * total_flops / t / 1e9 / gemm:.0f}% of the GEMM rate"
        print(line + (f", {t / total_torch:.2f}x torch's whole time." if total_torch else "."))


def row(label, shape, t_ours, flops, gemm, t_torch, t_gemms, t_cols):
    rate = flops / t_ours / 1e9
    torch_ms = f"{t_torch * 1e3:8.2f}" if t_torch else f"{'-':>8}"
    ratio = f"{t_ours / t_torch:10.2f}" if t_torch else f"{'-':>10}"
    return (f"| {label:<12} | {shape:<32} | {t_ours * 1e3:8.2f} | {rate:7.0f} | {100 * rate / gemm:5.0f}% | "
            f"{t_gemms * 1e3:8.2f} | {t_cols * 1e3:7.2f} | {torch_ms} | {ratio} |")


if __name__ == "__main__":
    main()
