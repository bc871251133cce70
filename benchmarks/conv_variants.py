"""Three ways to build a convolution's forward on GEMM, timed on the mask head's 3 x 3 conv (64 RoIs of
64 x 14 x 14 -> 64 channels), the largest conv of the default model:

    python benchmarks/conv_variants.py [--reps 15] [--backend numpy|cupy]

1. ``im2col``: the library's ``conv2d`` forward, columns ``(C kh kw) x (N OH OW)`` and one GEMM.
2. ``offset loop``: no columns. The input is padded and flattened, so that kernel offset ``(i, j)`` is the
   flat array shifted by ``i (W + 2) + j``: a view. Nine GEMMs of ``C_out x C_in`` weights with those views
   add up the output on the padded grid (the outputs at padding positions are computed and thrown away).
3. ``pixel-major im2col``: columns ``(N OH OW) x (kh kw C)`` from an ``N x H x W x C`` copy of the input, so
   each window row is ``kw C`` neighbouring numbers in memory (the copy moves runs of 192, not 14).

Each row gives the whole forward (NCHW in, NCHW out) and its GEMMs alone. All three give the same output
(checked). benchmarks/RESULTS.md ("Convolution") says what the numbers mean for issue 4's goals.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import choose_backend  # noqa: E402
from mrcnn_edu import backend  # noqa: E402
from mrcnn_edu.nn import functional as F  # noqa: E402

N, C_IN, C_OUT, H, W = 64, 64, 64, 14, 14


def best_ms(fn, reps):
    fn()
    backend.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        backend.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def offset_loop(x, w):
    """The forward as nine GEMMs on shifted views of the flat padded input (3 x 3 kernel, padding 1)."""
    xp = backend.get_array_module(x)
    n, c, h, wd = x.shape
    hp, wp = h + 2, wd + 2
    length = n * hp * wp
    flat = xp.zeros((c, length + 2 * wp + 2), dtype=x.dtype)      # room for the largest shift
    flat[:, :length].reshape(c, n, hp, wp)[:, :, 1:h + 1, 1:wd + 1] = x.transpose(1, 0, 2, 3)
    out = xp.zeros((w.shape[0], length), dtype=x.dtype)
    part = xp.empty_like(out)
    for i in range(3):
        for j in range(3):
            shift = i * wp + j
            xp.matmul(w[:, :, i, j], flat[:, shift:shift + length], out=part)
            out += part
    return xp.ascontiguousarray(out.reshape(-1, n, hp, wp)[:, :, :h, :wd].transpose(1, 0, 2, 3))


def pixel_major_columns(x):
    """``(N OH OW) x (kh kw C)`` columns of a 3 x 3, padding-1, stride-1 conv, from an NHWC padded copy."""
    xp = backend.get_array_module(x)
    n, c, h, wd = x.shape
    padded = xp.zeros((n, h + 2, wd + 2, c), dtype=x.dtype)
    padded[:, 1:h + 1, 1:wd + 1] = x.transpose(0, 2, 3, 1)
    s_n, s_y, s_x, s_c = padded.strides
    view = xp.lib.stride_tricks.as_strided(padded, shape=(n, h, wd, 3, 3 * c), strides=(s_n, s_y, s_x, s_y, s_c))
    return xp.ascontiguousarray(view).reshape(n * h * wd, 9 * c)


def pixel_major(x, w):
    xp = backend.get_array_module(x)
    n, _, h, wd = x.shape
    taps = xp.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)    # C_out x (kh kw C)
    out = pixel_major_columns(x) @ taps.T
    return xp.ascontiguousarray(out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions (the best is kept)")
    parser.add_argument("--backend", choices=backend.BACKENDS, default=None, help="numpy (default) or cupy")
    args = parser.parse_args(argv)
    choose_backend(args.backend, None)
    xp, gen = backend.xp, np.random.default_rng(0)
    x = backend.asarray(gen.standard_normal((N, C_IN, H, W), dtype=np.float32))
    w = backend.asarray(gen.standard_normal((C_OUT, C_IN, 3, 3), dtype=np.float32))
    reference = backend.to_host(F.conv2d(x, w, None, 1, 1)[0])

    length = N * (H + 2) * (W + 2)
    flat = xp.zeros((C_IN, length + 64), dtype=xp.float32)
    tap = xp.ascontiguousarray(w[:, :, 0, 0])
    cols = backend.asarray(gen.standard_normal((C_IN * 9, N * H * W), dtype=np.float32))
    rows = xp.ascontiguousarray(cols.T)
    w_matrix = w.reshape(C_OUT, -1)
    variants = [
        ("im2col (the library)", lambda: F.conv2d(x, w, None, 1, 1)[0], lambda: w_matrix @ cols),
        ("offset loop, no columns", lambda: offset_loop(x, w),
         lambda: [tap @ flat[:, 1:length + 1] for _ in range(9)]),
        ("pixel-major im2col", lambda: pixel_major(x, w), lambda: rows @ w_matrix.T),
    ]
    print(f"mask conv forward: {N} x {C_IN} x {H} x {W} -> {C_OUT}, 3x3, stride 1, padding 1 "
          f"(best of {args.reps}, {backend.name} {xp.__version__})\n")
    print("| variant | forward ms | its GEMMs alone ms |")
    print("| --- | ---: | ---: |")
    for name, forward, gemms in variants:
        np.testing.assert_allclose(backend.to_host(forward()), reference, rtol=1e-4, atol=1e-3)
        print(f"| {name} | {best_ms(forward, args.reps):.2f} | {best_ms(gemms, args.reps):.2f} |")


if __name__ == "__main__":
    main()
