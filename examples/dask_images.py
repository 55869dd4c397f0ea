"""Classify an image collection stored on disk as a chunked Zarr array that is larger than the
memory of the dask workers that process it, with fastconv.dask.

1. Makes the collection (on the workers, chunk by chunk): scikit-learn's handwritten digits,
   each image a random digit shifted by up to a pixel, scaled and with Gaussian noise, 8x8
   float32, with its label; 2 GiB by default (8.4 million images), 32 MiB with --small.
2. Trains the CNN of examples/train_digits.py in this process on 20,000 such images (a few
   seconds), with the same preprocessing as step 3.
3. Runs it over the whole collection on a LocalCluster of worker processes whose memory limit
   adds up to far less than the collection: fastconv.dask.conv2d smooths every image with a 3x3
   Gaussian, fastconv.dask.DataParallel(model).forward classifies it, and the predictions go
   back to the Zarr store while the accuracy is reduced on the workers; dask's progress bar
   shows the tasks. Nothing is ever loaded whole: each task reads one chunk.

    python examples/dask_images.py --small                # a quick run (~32 MiB)
    python examples/dask_images.py                        # 2 GiB, 2 workers of 512 MiB each
    python examples/dask_images.py --scheduler tcp://10.0.0.5:8786   # an existing cluster

Needs ``pip install "fastconv[examples]"`` (scikit-learn, dask, distributed, zarr). The data
goes to a temporary directory that is removed at the end unless --keep is given, or to --path
(kept; with --scheduler it must be a directory that every worker can reach).
"""

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import fastconv
from fastconv import nn

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE_BYTES = 8 * 8 * 4
# A 3x3 Gaussian (binomial) smoothing kernel, as a (F, C, KH, KW) convolution weight.
GAUSSIAN = (np.outer([1, 2, 1], [1, 2, 1]) / 16.0).astype(np.float32)[None, None]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="size of the collection (default 2 GiB)")
    parser.add_argument("--small", action="store_true", help="a 32 MiB collection, for a quick run")
    parser.add_argument("--chunk", type=int, default=4096, help="images per chunk (default 4096)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    parser.add_argument("--memory-limit", default="512MiB",
                        help="memory limit of each worker (default 512MiB; an idle worker process "
                             "takes about 100 MiB of it)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="use the dask.distributed scheduler at ADDRESS instead of a LocalCluster")
    parser.add_argument("--path", default=None, help="directory for the Zarr store (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the Zarr store")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.small:
        args.gigabytes = 1 / 32
    if not args.gigabytes > 0 or args.chunk < 1 or args.workers < 1:
        parser.error("--gigabytes must be > 0, --chunk and --workers >= 1")
    return args


# ----------------------------------------------------------------------------------------------
# The collection: noisy, shifted digits
# ----------------------------------------------------------------------------------------------

def load_digits():
    """The 1797 8x8 digits in [0, 1] and their labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int8)


def pick_digits(rng, count, n):
    """The first draw of make_images: which of the `count` digits each image shows."""
    return rng.integers(0, count, n)


def make_images(digits, labels, n, seed):
    """n noisy digits and their labels: a random digit, shifted by up to one pixel, scaled,
    plus noise."""
    rng = np.random.default_rng(seed)
    pick = pick_digits(rng, len(digits), n)
    shifts = rng.integers(-1, 2, (n, 2))
    images = np.zeros((n, 1, 8, 8), dtype=np.float32)
    for (dy, dx) in {tuple(s) for s in shifts}:
        rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
        shifted = np.roll(digits[pick[rows]], (dy, dx), axis=(1, 2))
        if dy:
            shifted[:, 0 if dy > 0 else -1, :] = 0
        if dx:
            shifted[:, :, 0 if dx > 0 else -1] = 0
        images[rows, 0] = shifted
    images *= rng.uniform(0.7, 1.3, (n, 1, 1, 1)).astype(np.float32)
    images += rng.normal(0.0, 0.2, images.shape).astype(np.float32)
    return images, labels[pick]


def _chunk_of_images(digits, labels, seed, block_id=None, block_info=None):
    n = block_info[None]["chunk-shape"][0]
    return make_images(digits, labels, n, (seed, 0, block_id[0]))[0]


def _chunk_of_labels(labels, seed, block_id=None, block_info=None):
    # The labels of _chunk_of_images' chunk: the same seed, the same first draw.
    n = block_info[None]["chunk-shape"][0]
    return labels[pick_digits(np.random.default_rng((seed, 0, block_id[0])), len(labels), n)]


def write_collection(client, path, n, chunk, seed):
    """Generate the images and labels chunk by chunk on the workers, straight into Zarr."""
    import dask
    import dask.array as da
    from distributed import progress

    # As Delayed objects the digits travel to each worker once; as plain NumPy arguments of
    # map_blocks they would travel inside every task (0.5 MB each).
    digits, labels = (dask.delayed(a) for a in load_digits())
    chunks = (tuple([chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])),)
    images = da.map_blocks(_chunk_of_images, digits, labels, seed, chunks=chunks + ((1,), (8,), (8,)),
                           dtype=np.float32, meta=np.empty((0, 0, 0, 0), np.float32))
    targets = da.map_blocks(_chunk_of_labels, labels, seed, chunks=chunks, dtype=np.int8,
                            meta=np.empty((0,), np.int8))
    stores = [da.to_zarr(images, os.path.join(path, "images"), compute=False, overwrite=True),
              da.to_zarr(targets, os.path.join(path, "labels"), compute=False, overwrite=True)]
    futures = client.compute(stores)
    progress(futures)
    client.gather(futures)
    print()


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

def train_model(seed, n=20_000, epochs=5, batch_size=64):
    """The CNN of examples/train_digits.py, trained here on n images like the collection's,
    smoothed and standardised as they will be; returns the model and the mean and std."""
    sys.path.insert(0, HERE)
    from train_digits import build_model

    digits, labels = load_digits()
    images, targets = make_images(digits, labels, n, (seed, 1))  # not a chunk of the collection
    smoothed = fastconv.conv2d(images, GAUSSIAN, padding=1)
    mean, std = float(smoothed.mean()), float(smoothed.std())
    x = (smoothed - mean) / std
    rng = np.random.default_rng(seed)
    model = build_model(rng)
    loss_fn, optimizer = nn.SoftmaxCrossEntropy(), nn.Adam(model, lr=3e-3)
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch_size):
            batch = order[i:i + batch_size]
            loss_fn.forward(model.forward(x[batch]), targets[batch])
            model.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
    return model.eval(), mean, std


# ----------------------------------------------------------------------------------------------
# Inference over the collection
# ----------------------------------------------------------------------------------------------

def classify_collection(client, path, model, mean, std):
    """Smooth, standardise and classify every image; predictions to Zarr, accuracy reduced."""
    import dask.array as da
    from distributed import progress

    import fastconv.dask as fcd

    images = da.from_zarr(os.path.join(path, "images"))
    labels = da.from_zarr(os.path.join(path, "labels"))
    x = (fcd.conv2d(images, GAUSSIAN, padding=1) - mean) / std       # lazy, chunk by chunk
    predictions = fcd.DataParallel(model).forward(x).argmax(axis=1).astype(np.int8)
    store = da.to_zarr(predictions, os.path.join(path, "predictions"), compute=False, overwrite=True)
    accuracy = (predictions == labels).mean()
    start = time.perf_counter()
    futures = client.compute([store, accuracy])
    progress(futures)
    _, accuracy = client.gather(futures)
    print()
    return float(accuracy), time.perf_counter() - start, images


def _resident_memory():
    import psutil

    return psutil.Process().memory_info().rss


def _worker_memory(client):
    rss = client.run(_resident_memory).values()
    return "worker processes now at " + ", ".join(f"{r / 2**20:.0f} MiB" for r in rss)


def main(argv=None):
    args = parse_args(argv)
    from distributed import Client, LocalCluster

    n = max(1, int(args.gigabytes * 2**30 // IMAGE_BYTES))
    path = args.path or tempfile.mkdtemp(prefix="fastconv-dask-images-")
    print(f"fastconv {fastconv.__version__}: {n:,} images of 8x8 float32 "
          f"({n * IMAGE_BYTES / 2**30:.2f} GiB) in chunks of {args.chunk} at {path}")

    start = time.perf_counter()
    fastconv.set_num_threads(1)
    model, mean, std = train_model(args.seed)
    print(f"trained the digits CNN on 20,000 noisy digits in {time.perf_counter() - start:.1f} s")

    with contextlib.ExitStack() as cleanup:
        if not args.keep and not args.path:
            cleanup.callback(shutil.rmtree, path, ignore_errors=True)
        elif args.keep:
            cleanup.callback(print, f"Zarr store kept at {path} (images, labels, predictions)")
        if args.scheduler:
            client = cleanup.enter_context(Client(args.scheduler))
            where = f"the cluster at {args.scheduler}"
        else:
            # One thread per worker process: fastconv's kernels then run on one core each
            # (distributed starts workers with OMP_NUM_THREADS=1).
            cluster = cleanup.enter_context(LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=args.memory_limit))
            client = cleanup.enter_context(Client(cluster))
            where = f"a LocalCluster of {args.workers} worker processes with memory_limit={args.memory_limit} each"
        limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
        print(f"computing on {where} (worker memory in all: {sum(limits) / 2**30:.2f} GiB)")
        start = time.perf_counter()
        write_collection(client, path, n, args.chunk, args.seed)
        print(f"wrote the collection in {time.perf_counter() - start:.1f} s; {_worker_memory(client)}")
        accuracy, seconds, images = classify_collection(client, path, model, mean, std)
        print(f"classified {n:,} images ({images.nbytes / 2**30:.2f} GiB, {images.npartitions} chunks) "
              f"in {seconds:.1f} s: {n / seconds:,.0f} images/s, accuracy {accuracy:.2%}")
        print(_worker_memory(client))
    return 0


if __name__ == "__main__":
    sys.exit(main())
