"""Convolution engine timing: fastconv / torch on BENCH.md's convolutions c1..c11.

Forward + backward (dx, dw, db), round-robin in one process with torch at the same thread
count, medians of --repeat samples after a warm-up (each sample at least 20 ms). Prints per
workload the ratio fastconv / torch, both medians, fastconv's GFLOP/s and its fraction of the
FMA peak measured beside it (the best of several probes: `fastconv._config.fma_peak_gflops`),
and what fastconv's plan chose; then the geometric mean and the largest ratio.

    python tools/engine_bench.py --threads 1,2 --dtype float32 [--only c3,c4] [--algorithm direct]

The machine is shared: compare ratios, not absolute times, and rerun a row that looks odd.
"""

import argparse
import statistics
import time

import numpy as np
import torch

import fastconv
from fastconv._config import conv_algorithm, fma_peak_gflops
from fastconv._ext import _engine

WORKLOADS = {  # name: (N, C, H, W, F, K, stride, pad); H = 0 means conv1d of length W
    "c1": (50, 3, 32, 32, 32, 3, 1, 1),
    "c2": (100, 3, 31, 31, 25, 3, 2, 1),
    "c3": (32, 64, 56, 56, 64, 3, 1, 1),
    "c4": (8, 128, 28, 28, 256, 3, 1, 1),
    "c5": (4, 3, 224, 224, 64, 7, 2, 3),
    "c6": (16, 256, 28, 28, 128, 1, 1, 0),
    "c7": (32, 64, 0, 1000, 64, 5, 1, 2),
    "c8": (128, 32, 32, 32, 32, 3, 1, 1),
    "c9": (128, 64, 16, 16, 64, 3, 1, 1),
    "c10": (128, 128, 8, 8, 128, 3, 1, 1),
    "c11": (128, 32, 32, 32, 64, 3, 2, 1),
}


def make(name, dtype):
    """(fastconv step, torch step, FLOPs of forward + backward, plan) of a workload."""
    n, c, h, w, f, k, s, p = WORKLOADS[name]
    rng = np.random.default_rng(0)
    one_d = h == 0
    x = rng.standard_normal((n, c, w) if one_d else (n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c, k) if one_d else (f, c, k, k)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    conv = fastconv.conv1d if one_d else fastconv.conv2d
    conv_backward = fastconv.conv1d_backward if one_d else fastconv.conv2d_backward
    y = conv(x, wt, b, s, p)
    dout = rng.standard_normal(y.shape).astype(dtype)
    flops = 3 * 2.0 * y.size * c * (k if one_d else k * k)

    def fastconv_step():
        conv(x, wt, b, s, p)
        conv_backward(dout, x, wt, s, p)

    tx, tw, tb = (torch.from_numpy(a).requires_grad_(True) for a in (x, wt, b))
    td = torch.from_numpy(dout)
    tconv = torch.nn.functional.conv1d if one_d else torch.nn.functional.conv2d

    def torch_step():
        tx.grad = tw.grad = tb.grad = None
        tconv(tx, tw, tb, s, p).backward(td)

    return fastconv_step, torch_step, flops, conv_algorithm(x.shape, wt.shape, s, p, dtype=dtype)


def calls_per_sample(fn, seconds=0.02):
    fn()
    t0 = time.perf_counter()
    fn()
    return max(1, int(seconds / max(time.perf_counter() - t0, 1e-9)))


def sample(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def short(plan):
    """'winograd F(4x4)' / 'direct' / 'im2col' for the forward and the backward."""
    def one(text):
        if "winograd F(" in text:
            return "winograd F(" + text.split("F(")[1].split(",")[0] + ")"
        return "im2col" if text.startswith(("im2col", "by im2col")) else "direct"
    back = plan["backward"]
    dx = back.split("dx ")[1] if "dx " in back else back
    dw = "im2col" if back.startswith("im2col") else "direct"
    return f"fwd {one(plan['forward'])}, dx {one(dx)}, dw {dw}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--only", default="")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--algorithm", default="auto", choices=_engine.ALGORITHMS)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(WORKLOADS)
    dtype = np.dtype(args.dtype)
    _engine.set_algorithm(args.algorithm)
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        fastconv.set_num_threads(threads)
        peak = max(fma_peak_gflops(dtype=dtype, threads=threads, seconds=0.05) for _ in range(5))
        print(f"--- {dtype.name}, {threads} thread(s), {_engine.isa()}, FMA peak {peak:.1f} GFLOP/s, "
              f"algorithm {args.algorithm} ---")
        ratios = []
        for name in names:
            fastconv_step, torch_step, flops, plan = make(name, dtype)
            steps = (fastconv_step, torch_step)
            number = [calls_per_sample(fn) for fn in steps]
            samples = ([], [])
            for r in range(args.repeat):
                for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                    samples[i].append(sample(steps[i], number[i]))
                    time.sleep(min(0.05, samples[i][-1]))  # let the other's threads go idle
            ours, theirs = (statistics.median(s) for s in samples)
            ratios.append(ours / theirs)
            rate = flops / ours / 1e9
            print(f"{name:4s} ratio {ours / theirs:5.2f}  fastconv {1e3 * ours:8.2f} ms  "
                  f"torch {1e3 * theirs:8.2f} ms  {rate:6.1f} GFLOP/s = {100 * rate / peak:4.0f}% "
                  f"of peak  ({short(plan)})")
        print(f"geomean {np.exp(np.mean(np.log(ratios))):.3f}  max {max(ratios):.2f}")


if __name__ == "__main__":
    main()
