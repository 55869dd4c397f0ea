"""Scaling of fastconv.dask on this machine: images per second on 1 and 2 worker processes,
and the overhead of a task against a plain in-memory call.

* conv layer: forward and backward of a convolution layer, ``conv2d`` then ``conv2d_backward``
  (dx, dw, db), on N images of 3x32x32 with 16 3x3 filters, padding 1 (CS231n's first layer),
  in chunks of --chunk images.
* DataParallel step: ``DataParallel.forward_backward`` of the digits CNN of
  examples/train_digits.py on a batch of N 8x8 images in chunks of --chunk images.
* overhead per task: chunks of a single tiny image (1x1x5x5, one 3x3 filter, as the t1_tiny
  workload of ``python -m fastconv bench``), so that a task is almost nothing but overhead.

The in-memory rows are the plain fastconv functions (or the model's forward and backward) on
the whole batch, at 1 and 2 fastconv threads. The dask rows run on LocalClusters of 1 and 2
single-threaded worker processes (fastconv runs one thread in each), with the inputs already in
the workers' memory and per-image results left there, so that they time the computation and
the scheduling, not moving the batch into this process. Every figure is the median of --repeat
runs.

    python benchmarks/dask_scaling.py              # about a minute
    python benchmarks/dask_scaling.py --images 8192 --chunk 512 --repeat 5
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

import fastconv
from fastconv import nn

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2048, help="images per batch (default 2048)")
    parser.add_argument("--chunk", type=int, default=256, help="images per chunk (default 256)")
    parser.add_argument("--tiny-tasks", type=int, default=200, help="tasks in the overhead test (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown (default 3)")
    args = parser.parse_args(argv)
    if min(args.images, args.chunk, args.tiny_tasks, args.repeat) < 1:
        parser.error("every count must be >= 1")
    return args


def median_time(run, repeat):
    """Median wall time of run(i) over i = 0 .. repeat-1 (after one warm-up run)."""
    run(-1)
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        run(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def digits_model():
    sys.path.insert(0, EXAMPLES)
    from train_digits import build_model

    return build_model(np.random.default_rng(0))


def conv_data(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3, 32, 32), dtype=np.float32),
            rng.standard_normal((16, 3, 3, 3), dtype=np.float32),
            rng.standard_normal((n, 16, 32, 32), dtype=np.float32))


def in_memory_figures(args):
    """Seconds per batch of the in-memory functions at 1 and 2 threads, and of one tiny call."""
    x, w, dout = conv_data(args.images)
    digits_x = np.random.default_rng(1).standard_normal((args.images, 1, 8, 8), dtype=np.float32)
    digits_y = np.random.default_rng(2).integers(0, 10, args.images)
    model, loss_fn = digits_model(), nn.SoftmaxCrossEntropy()

    def conv_layer(_):
        fastconv.conv2d(x, w, padding=1)
        fastconv.conv2d_backward(dout, x, w, padding=1)

    def training_step(_):
        model.zero_grad()
        loss_fn.forward(model.forward(digits_x), digits_y)
        model.backward(loss_fn.backward())

    figures = {}
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        figures[("conv", f"in memory, {threads} thread{'s' * (threads > 1)}")] = median_time(conv_layer, args.repeat)
        figures[("step", f"in memory, {threads} thread{'s' * (threads > 1)}")] = median_time(training_step, args.repeat)
    fastconv.set_num_threads(1)
    tiny_x, tiny_w = np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32)
    calls = 2000
    figures[("tiny", "in memory, 1 thread")] = median_time(
        lambda _: [fastconv.conv2d(tiny_x, tiny_w) for _ in range(calls)], args.repeat) / calls
    return figures


def threaded_tiny(args):
    """Seconds per tiny task on dask's threaded scheduler (in this process)."""
    import dask.array as da

    import fastconv.dask as fcd

    x = da.ones((args.tiny_tasks, 1, 5, 5), chunks=(1, 1, 5, 5), dtype=np.float32)
    x = x.persist(scheduler="threads")

    def run(i):
        fcd.conv2d(x, np.full((1, 1, 3, 3), 1.0 + i, np.float32)).persist(scheduler="threads", num_workers=2)

    return median_time(run, args.repeat) / args.tiny_tasks


def cluster_figures(args, workers):
    """Seconds per batch (or per tiny task) on a LocalCluster of `workers` worker processes."""
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import fastconv.dask as fcd

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        # Inputs made on the workers (random, like conv_data's), kept in their memory.
        rng = da.random.default_rng(0)
        w = conv_data(1)[1]
        lazy_x = rng.standard_normal((args.images, 3, 32, 32), chunks=(args.chunk, 3, 32, 32), dtype=np.float32)
        lazy_dout = rng.standard_normal((args.images, 16, 32, 32), chunks=(args.chunk, 16, 32, 32), dtype=np.float32)
        lazy_x, lazy_dout = client.persist([lazy_x, lazy_dout])
        wait([lazy_x, lazy_dout])

        def conv_layer(i):
            wi = w * np.float32(1 + 1e-6 * i)  # new weights: new keys, nothing reused from a previous run
            y = fcd.conv2d(lazy_x, wi, padding=1)
            dx, dw, db = fcd.conv2d_backward(lazy_dout, lazy_x, wi, padding=1)
            futures = client.persist([y, dx, dw, db])
            wait(futures)
            client.gather(futures[2:])
            del futures

        lazy_digits = rng.standard_normal((args.images, 1, 8, 8), chunks=(args.chunk, 1, 8, 8), dtype=np.float32)
        lazy_labels = rng.integers(0, 10, args.images, chunks=args.chunk)
        lazy_digits, lazy_labels = client.persist([lazy_digits, lazy_labels])
        wait([lazy_digits, lazy_labels])
        model = digits_model()
        parallel = fcd.DataParallel(model, nn.SoftmaxCrossEntropy(), scheduler=client)

        def training_step(_):
            model.zero_grad()
            parallel.forward_backward(lazy_digits, lazy_labels)

        tiny = client.persist(da.ones((args.tiny_tasks, 1, 5, 5), chunks=(1, 1, 5, 5), dtype=np.float32))
        wait(tiny)

        def tiny_tasks(i):
            futures = client.persist(fcd.conv2d(tiny, np.full((1, 1, 3, 3), 1.0 + i, np.float32)))
            wait(futures)
            del futures

        label = f"dask, {workers} worker process{'es' * (workers > 1)}"
        return {
            ("conv", label): median_time(conv_layer, args.repeat),
            ("step", label): median_time(training_step, args.repeat),
            ("tiny", label): median_time(tiny_tasks, args.repeat) / args.tiny_tasks,
        }


def main(argv=None):
    args = parse_args(argv)
    print(f"fastconv {fastconv.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.images} images per batch in chunks of {args.chunk}, "
          f"median of {args.repeat}")
    figures = in_memory_figures(args)
    figures[("tiny", "dask threaded scheduler, 2 threads")] = threaded_tiny(args)
    for workers in (1, 2):
        figures.update(cluster_figures(args, workers))

    n = args.images
    print()
    print("| | conv layer fwd+bwd, images/s | digits CNN fwd+bwd (DataParallel step), images/s | per task (tiny chunk) |")
    print("|---|---|---|---|")
    rows = dict.fromkeys(label for _, label in figures)
    base = figures[("tiny", "in memory, 1 thread")]
    for label in rows:
        conv, step, tiny = (figures.get((kind, label)) for kind in ("conv", "step", "tiny"))
        cells = [f"{n / conv:,.0f}" if conv else "", f"{n / step:,.0f}" if step else "",
                 f"{tiny * 1e6:,.0f} us" + ("" if label.startswith("in memory") else f" (+{(tiny - base) * 1e6:,.0f} us)")
                 if tiny else ""]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
