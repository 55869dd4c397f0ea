#!/usr/bin/env python
"""Indicative timing of the layer functions and their fastconv.nn layers against PyTorch.

Forward + backward on BENCH.md's tr3 BatchNorm2D shape (batch 128, 32 channels of 32x32,
float32 unless --dtype float64), fastconv and torch at the same thread count, medians and
fastest of --repeat runs after a warm-up. The two alternate run by run, so that both see the
same load on a shared machine; on a busy one the fastest run shows the cost better than the
median does. Until `python -m fastconv bench` has layer workloads,
this is the measurement behind the numbers quoted for the layer functions:

    nice -n 19 python tools/time_layer_functions.py --threads 2
"""

import argparse
import time

import numpy as np


def timings_ms(calls, repeat):
    """[(median, fastest)] in milliseconds of each call, run in turn `repeat` times after a
    warm-up."""
    for call in calls:
        for _ in range(3):
            call()
    times = [[] for _ in calls]
    for _ in range(repeat):
        for call, samples in zip(calls, times):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
    return [(1e3 * float(np.median(t)), 1e3 * min(t)) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeat", type=int, default=21)
    opts = parser.parse_args()

    import torch
    import fastconv as fc
    from fastconv import nn

    fc.set_num_threads(opts.threads)
    torch.set_num_threads(opts.threads)
    F = torch.nn.functional
    dtype = np.dtype(opts.dtype)
    rng = np.random.default_rng(0)
    shape = (128, 32, 32, 32)
    x, dout = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    x_last, dout_last = (np.ascontiguousarray(a.transpose(0, 2, 3, 1)) for a in (x, dout))
    weight, bias = np.ones(32, dtype), np.zeros(32, dtype)
    running_mean, running_var = np.zeros(32, dtype), np.ones(32, dtype)
    logits, labels = rng.standard_normal((128, 10)).astype(dtype), rng.integers(0, 10, 128)

    def batch_norm(data_format, xs, ds):
        def call():
            _, mean, invstd = fc.batch_norm(xs, weight, bias, running_mean, running_var, data_format=data_format)
            fc.batch_norm_backward(ds, xs, weight, mean, invstd, data_format=data_format)
        return call

    def relu():
        fc.relu_backward(dout, fc.relu(x))

    def layer(module):
        def call():
            module.forward(x)
            module.backward(dout)
        return call

    xt = torch.from_numpy(x).requires_grad_()
    dt = torch.from_numpy(dout)
    wt = torch.ones(32, dtype=xt.dtype, requires_grad=True)
    bt = torch.zeros(32, dtype=xt.dtype, requires_grad=True)
    rmt, rvt = torch.zeros(32, dtype=xt.dtype), torch.ones(32, dtype=xt.dtype)
    lt = torch.from_numpy(logits).requires_grad_()

    def torch_batch_norm():
        xt.grad = wt.grad = bt.grad = None
        F.batch_norm(xt, rmt, rvt, wt, bt, training=True).backward(dt)

    def torch_relu():
        xt.grad = None
        torch.relu(xt).backward(dt)

    def torch_loss():
        lt.grad = None
        F.cross_entropy(lt, torch.from_numpy(labels)).backward()

    rows = [
        ("batch_norm + backward, NCHW", batch_norm("NCHW", x, dout), torch_batch_norm),
        ("batch_norm + backward, NHWC", batch_norm("NHWC", x_last, dout_last), None),
        ("nn.BatchNorm2D forward + backward", layer(nn.BatchNorm2D(32, dtype=dtype)), None),
        ("relu + relu_backward", relu, torch_relu),
        ("nn.ReLU forward + backward", layer(nn.ReLU(dtype=dtype)), None),
        ("softmax_cross_entropy (128, 10)", lambda: fc.softmax_cross_entropy(logits, labels), torch_loss),
    ]
    print(f"fastconv {fc.__version__} ({fc.get_backend()}), torch {torch.__version__}, {opts.threads} threads, "
          f"{opts.dtype}, shape {shape}; medians of {opts.repeat} (indicative: a shared machine)")
    print(f"{'ms (median / fastest)':36s}{'fastconv':>16s}{'torch':>16s}{'ratio':>12s}")
    for name, ours, theirs in rows:
        (ours_ms, *theirs_ms) = timings_ms([ours] + ([theirs] if theirs else []), opts.repeat)
        line = f"{name:36s}{ours_ms[0]:8.2f} /{ours_ms[1]:6.2f}"
        if theirs_ms:
            (theirs_ms,) = theirs_ms
            line += (f"{theirs_ms[0]:9.2f} /{theirs_ms[1]:6.2f}"
                     f"{ours_ms[0] / theirs_ms[0]:6.2f} /{ours_ms[1] / theirs_ms[1]:5.2f}")
        print(line)


if __name__ == "__main__":
    main()
