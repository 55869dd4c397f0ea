#!/usr/bin/env python
"""Time fastconv's channels-last (NHWC) kernels against its NCHW ones, side by side.

Each workload of ../shared/BENCH.md runs forward + backward (dx, dw, db for convolution; dx
for pooling) in both layouts on the same data (the NHWC operands are transposed copies, made
once), alternating NCHW and NHWC calls in one process; the figure is the ratio of the medians,
NHWC time / NCHW time (below 1: channels-last is faster). Machines are shared and noisy: the
ratios are indicative, and a run should be repeated before a conclusion is drawn from it.

    python tools/time_channels_last.py                       # c1 c3 c8 p2, 1 and 2 threads, both dtypes
    python tools/time_channels_last.py --workloads c12,p4 --threads 2 --dtypes float32 --repeats 9
"""

import argparse
import statistics
import time

import numpy as np

import fastconv as fc

# name: (kind, N, C, H, W, F or kernel, K or stride, stride or pad, pad, groups) as BENCH.md
WORKLOADS = {
    "c1": ("conv", 50, 3, 32, 32, 32, 3, 1, 1, 1),
    "c2": ("conv", 100, 3, 31, 31, 25, 3, 2, 1, 1),
    "c3": ("conv", 32, 64, 56, 56, 64, 3, 1, 1, 1),
    "c4": ("conv", 8, 128, 28, 28, 256, 3, 1, 1, 1),
    "c6": ("conv", 16, 256, 28, 28, 128, 1, 1, 0, 1),
    "c8": ("conv", 128, 32, 32, 32, 32, 3, 1, 1, 1),
    "c9": ("conv", 128, 64, 16, 16, 64, 3, 1, 1, 1),
    "c10": ("conv", 128, 128, 8, 8, 128, 3, 1, 1, 1),
    "c11": ("conv", 128, 32, 32, 32, 64, 3, 2, 1, 1),
    "c12": ("conv", 64, 128, 28, 28, 128, 3, 1, 1, 128),
    "p1": ("max", 100, 3, 32, 32, 2, 2, 0),
    "p2": ("max", 32, 64, 112, 112, 2, 2, 0),
    "p3": ("max", 32, 64, 112, 112, 3, 2, 1),
    "p4": ("avg", 32, 64, 112, 112, 2, 2, 0),
}


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def make_calls(name, dtype, rng):
    """(nchw_call, nhwc_call): forward + backward of workload `name` in each layout."""
    spec = WORKLOADS[name]
    if spec[0] == "conv":
        _, n, c, h, w, f, k, s, p, groups = spec
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        wt = rng.standard_normal((f, c // groups, k, k)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype)
        dout = rng.standard_normal(fc.conv2d(x[:1], wt, b, s, p, groups=groups).shape[1:]).astype(dtype)
        dout = np.ascontiguousarray(np.broadcast_to(dout, (n,) + dout.shape))
        xl, wl, dl = _nhwc(x), np.ascontiguousarray(wt.transpose(2, 3, 1, 0)), _nhwc(dout)

        def nchw():
            fc.conv2d(x, wt, b, s, p, groups=groups)
            fc.conv2d_backward(dout, x, wt, s, p, groups=groups)

        def nhwc():
            fc.conv2d(xl, wl, b, s, p, groups=groups, data_format="NHWC")
            fc.conv2d_backward(dl, xl, wl, s, p, groups=groups, data_format="NHWC")

        return nchw, nhwc
    kind, n, c, h, w, k, s, p = spec
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    xl = _nhwc(x)
    if kind == "max":
        y = fc.max_pool2d(x, k, s, p)[0]
        yl = fc.max_pool2d(xl, k, s, p, data_format="NHWC")[0]

        def nchw():
            _, i = fc.max_pool2d(x, k, s, p)
            fc.max_pool2d_backward(y, i, x.shape)

        def nhwc():
            _, i = fc.max_pool2d(xl, k, s, p, data_format="NHWC")
            fc.max_pool2d_backward(yl, i, xl.shape, data_format="NHWC")

        return nchw, nhwc
    y = fc.avg_pool2d(x, k, s, p)
    yl = _nhwc(y)

    def nchw():
        fc.avg_pool2d(x, k, s, p)
        fc.avg_pool2d_backward(y, x.shape, k, s, p)

    def nhwc():
        fc.avg_pool2d(xl, k, s, p, data_format="NHWC")
        fc.avg_pool2d_backward(yl, xl.shape, k, s, p, data_format="NHWC")

    return nchw, nhwc


def ratio(nchw, nhwc, repeats):
    """(median NCHW seconds, median NHWC seconds) of alternating calls after a warm-up."""
    nchw(), nhwc()
    times = {nchw: [], nhwc: []}
    for i in range(repeats):
        for call in ((nchw, nhwc) if i % 2 == 0 else (nhwc, nchw)):
            start = time.perf_counter()
            call()
            times[call].append(time.perf_counter() - start)
    return statistics.median(times[nchw]), statistics.median(times[nhwc])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="c1,c3,c8,p2")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=7)
    opts = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"fastconv {fc.__version__} ({fc.get_backend()}), NHWC / NCHW, forward + backward, "
          f"medians of {opts.repeats} alternating calls (indicative: shared machine)")
    print(f"{'workload':<10}{'dtype':<9}{'threads':>8}{'NCHW ms':>10}{'NHWC ms':>10}{'ratio':>8}")
    for name in opts.workloads.split(","):
        for dtype in opts.dtypes.split(","):
            nchw, nhwc = make_calls(name, np.dtype(dtype), rng)
            for threads in (int(t) for t in opts.threads.split(",")):
                fc.set_num_threads(threads)
                a, b = ratio(nchw, nhwc, opts.repeats)
                print(f"{name:<10}{dtype:<9}{threads:>8}{a * 1e3:>10.2f}{b * 1e3:>10.2f}{b / a:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
