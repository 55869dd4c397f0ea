#!/usr/bin/env python
"""Training-step time of the courses' own networks: their NumPy code vs fastconv's drop-ins vs
the same network in fastconv.nn.

* "Deep Learning from Scratch" ch07 SimpleConvNet (1x28x28, conv 30 5x5, ReLU, pool 2,
  affine 100, ReLU, affine 10, batch 100; the book's float64 parameters and float32 images):
  the book-style NumPy layers (tests/course_code.py) vs fastconv.dlfs, on the same network code;
* CS231n ThreeLayerConvNet (3x32x32, conv 32 7x7 pad 3, ReLU, pool 2, affine 100, ReLU,
  affine 10, batch 50, float32 as cnn.py): the assignment's naive layers, its fast layers (in
  NumPy: as_strided + GEMM, reshape pooling; the assignment's Cython col2im replaced by NumPy),
  and fastconv.cs231n.

A step is the gradient (forward + backward) and a plain SGD update of every parameter (the
book's SGD class, optim.py's sgd, fastconv.nn.SGD). The fastconv.nn network has the same layers,
shapes and dtype. Every implementation runs at the same thread count (fastconv's threads and,
through threadpoolctl, NumPy's BLAS); implementations alternate run by run so that all see the
same machine load; medians and fastest runs of --repeat runs after a warm-up. The naive layers
take about a minute per step and run once (--no-naive leaves them out).

On a shared machine every figure is indicative. Run niced, e.g.:

    nice -n 19 python benchmarks/dropins.py --threads 1,2

Memory: the courses' functional style frees every activation of a step when the step ends
(fastconv.nn's layers keep theirs until the next step replaces them). glibc then returns that
memory to the system and the next step page-faults it back, which shows as a few milliseconds
per step; to see the steps without it (e.g. to compare the layers alone), keep freed memory:

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4000000000 \
        nice -n 19 python benchmarks/dropins.py
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import course_code  # the course-style NumPy code of tests/, written for the comparison


def timings_ms(calls, repeat):
    """{name: (median, fastest, runs)} in milliseconds; calls is {name: (call, runs or None)}.

    Calls with a fixed number of runs (the naive layers) run that many times, without a warm-up."""
    for call, runs in calls.values():
        for _ in range(0 if runs else 2):
            call()
    samples = {name: [] for name in calls}
    for i in range(repeat):
        names = list(calls)
        names = names[i % len(names):] + names[:i % len(names)]   # rotate who goes first
        for name in names:
            call, runs = calls[name]
            if runs is not None and len(samples[name]) >= runs:
                continue
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return {name: (1e3 * float(np.median(t)), 1e3 * min(t), len(t)) for name, t in samples.items()}


# ----------------------------------------------------------------------------------------------
# Deep Learning from Scratch: SimpleConvNet
# ----------------------------------------------------------------------------------------------

def book_steps(dtype, batch):
    from fastconv import dlfs, nn

    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    if dtype != np.float64:
        x = x.astype(dtype)
    t = rng.integers(0, 10, batch)
    dlfs_layers = dict(Convolution=dlfs.Convolution, Pooling=dlfs.Pooling, Relu=dlfs.Relu, Affine=dlfs.Affine,
                       SoftmaxWithLoss=dlfs.SoftmaxWithLoss)
    calls = {}
    for label, layers in (("book's NumPy layers", course_code.BOOK_LAYERS), ("fastconv.dlfs", dlfs_layers)):
        np.random.seed(0)
        net = course_code.SimpleConvNet(layers)
        for key, value in net.params.items():   # in place: the layers hold these arrays
            if value.dtype != dtype:
                net.params[key] = value.astype(dtype)
        _rebind(net)
        optimizer = course_code.BookSGD(lr=0.01)

        def step(net=net, optimizer=optimizer):
            optimizer.update(net.params, net.gradient(x, t))

        calls[label] = (step, None)

    model = nn.Sequential(nn.Conv2D(1, 30, 5, dtype=dtype, rng=0), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
                          nn.Linear(30 * 12 * 12, 100, dtype=dtype, rng=1), nn.ReLU(),
                          nn.Linear(100, 10, dtype=dtype, rng=2))
    calls["fastconv.nn"] = (_nn_step(model, x, t), None)
    return calls


def _rebind(net):
    """Point SimpleConvNet's layers at its (cast) parameter arrays."""
    for layer, w, b in (("Conv1", "W1", "b1"), ("Affine1", "W2", "b2"), ("Affine2", "W3", "b3")):
        net.layers[layer].W, net.layers[layer].b = net.params[w], net.params[b]


def _nn_step(model, x, t):
    from fastconv import nn

    loss_fn, optimizer = nn.SoftmaxCrossEntropy(), nn.SGD(model, lr=0.01)

    def step():
        loss_fn.forward(model.forward(x), t)
        model.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()

    return step


# ----------------------------------------------------------------------------------------------
# CS231n: ThreeLayerConvNet
# ----------------------------------------------------------------------------------------------

def cs231n_steps(dtype, batch, naive):
    from fastconv import cs231n, nn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(dtype)
    y = rng.integers(0, 10, batch)
    sets = [("assignment's naive layers", course_code.CS231N_NAIVE)] if naive else []
    sets += [("assignment's fast layers (NumPy)", course_code.CS231N_FAST),
             ("fastconv.cs231n", course_code.cs231n_layer_set(cs231n))]
    calls = {}
    for label, layers in sets:
        net = course_code.ThreeLayerConvNet(layers, dtype=dtype)

        def step(net=net):
            _, grads = net.loss(x, y)
            for key in net.params:
                net.params[key], _ = course_code.cs231n_sgd(net.params[key], grads[key], {"learning_rate": 1e-3})

        calls[label] = (step, 1 if layers is course_code.CS231N_NAIVE else None)
    model = nn.Sequential(nn.Conv2D(3, 32, 7, padding=3, dtype=dtype, rng=0), nn.ReLU(), nn.MaxPool2D(2),
                          nn.Flatten(), nn.Linear(32 * 16 * 16, 100, dtype=dtype, rng=1), nn.ReLU(),
                          nn.Linear(100, 10, dtype=dtype, rng=2))
    calls["fastconv.nn"] = (_nn_step(model, x, y), None)
    return calls


# ----------------------------------------------------------------------------------------------
# im2col: the book's layout written directly vs fastconv.im2col + a transposing copy
# ----------------------------------------------------------------------------------------------

def im2col_calls(dtype, batch):
    import fastconv
    from fastconv import dlfs

    x = np.random.default_rng(0).random((batch, 1, 28, 28)).astype(dtype)

    def transposed():
        cols = fastconv.im2col(x, 5)
        return np.ascontiguousarray(cols.transpose(0, 2, 1)).reshape(-1, cols.shape[1])

    return {"book's im2col (NumPy)": (lambda: course_code.book_im2col(x, 5, 5), None),
            "fastconv.im2col + transpose copy": (transposed, None),
            "fastconv.dlfs.im2col (direct kernel)": (lambda: dlfs.im2col(x, 5, 5), None)}


def print_table(title, results, baseline, nn_name="fastconv.nn"):
    """A markdown table; the ratios compare fastest runs (the medians move with the machine's
    other load more than with the code)."""
    print(f"\n{title}")
    print(f"| implementation | median ms | fastest ms | runs | speed-up vs {baseline} | time / fastconv.nn |")
    print("|---|---|---|---|---|---|")
    base = results[baseline][1]
    reference = results[nn_name][1] if nn_name in results else None
    for name, (median, fastest, runs) in results.items():
        ratio = f"{fastest / reference:.2f}" if reference else "-"
        print(f"| {name} | {median:.1f} | {fastest:.1f} | {runs} | {base / fastest:.3g}x | {ratio} |")


def ab_ratios(dtype, repeat):
    """The target's measurement: each drop-in network against the same network in fastconv.nn,
    alternating step by step; returns {name: (fastest ratio, median ratio)}."""
    book, cs = book_steps(dtype, 100), cs231n_steps(np.float32, 50, naive=False)
    pairs = {"fastconv.dlfs (SimpleConvNet)": (book["fastconv.dlfs"][0], book["fastconv.nn"][0]),
             "fastconv.cs231n (ThreeLayerConvNet)": (cs["fastconv.cs231n"][0], cs["fastconv.nn"][0])}
    ratios = {}
    for name, (ours, reference) in pairs.items():
        results = timings_ms({"ours": (ours, None), "nn": (reference, None)}, repeat)
        ratios[name] = (results["ours"][1] / results["nn"][1], results["ours"][0] / results["nn"][0])
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--book-dtype", default="float64", choices=("float32", "float64"),
                        help="SimpleConvNet's parameters (the book's are float64)")
    parser.add_argument("--no-naive", action="store_true", help="leave out CS231n's naive layers")
    parser.add_argument("--ab", action="store_true",
                        help="only the target: each drop-in network against fastconv.nn's, 60 steps each")
    opts = parser.parse_args()

    from threadpoolctl import threadpool_limits

    import fastconv

    print(f"fastconv {fastconv.__version__}, backend {fastconv.get_backend()}, numpy {np.__version__}; "
          f"{os.cpu_count()} CPUs; indicative timings")
    for threads in (int(t) for t in opts.threads.split(",")):
        fastconv.set_num_threads(threads)
        with threadpool_limits(threads):
            dtype = np.dtype(opts.book_dtype)
            if opts.ab:
                for name, (fastest, median) in ab_ratios(dtype, 60).items():
                    print(f"{threads} thread(s): {name} / fastconv.nn: fastest {fastest:.2f}, median {median:.2f}")
                continue
            print_table(f"SimpleConvNet step (batch 100, {dtype}), {threads} thread(s)",
                        timings_ms(book_steps(dtype, 100), opts.repeat), "book's NumPy layers")
            print_table(f"ThreeLayerConvNet step (batch 50, float32), {threads} thread(s)",
                        timings_ms(cs231n_steps(np.float32, 50, not opts.no_naive), opts.repeat),
                        "assignment's fast layers (NumPy)")
            print_table(f"im2col of SimpleConvNet's input (100x1x28x28, 5x5, {dtype}), {threads} thread(s)",
                        timings_ms(im2col_calls(dtype, 100), opts.repeat), "book's im2col (NumPy)",
                        nn_name=None)


if __name__ == "__main__":
    main()
