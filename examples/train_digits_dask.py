"""Data-parallel training of the digits CNN of examples/train_digits.py on a dask cluster.

Each minibatch is a dask array cut into --chunks chunks along the batch. With
fastconv.dask.DataParallel every chunk's forward and backward pass runs as a task on a worker
process, on a replica of the model made from the current parameters; the chunks' gradients are
summed in a fixed order into the model's own gradients, and Adam steps here, exactly as in the
single-process loop of train_digits.py. Which worker ran which chunk never changes a bit:
--verify repeats the whole training on dask's synchronous scheduler in this process and
checks that the final parameters are bitwise identical.

    python examples/train_digits_dask.py --workers 2 --epochs 15
    python examples/train_digits_dask.py --verify
    python examples/train_digits_dask.py --scheduler tcp://10.0.0.5:8786

Needs ``pip install "fastconv[examples]"`` (scikit-learn, dask, distributed).
"""

import argparse
import contextlib
import os
import sys
import time

import numpy as np

import fastconv
from fastconv import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_digits import build_model, evaluate, load_data  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15, help="passes over the training set (default 15)")
    parser.add_argument("--batch-size", type=int, default=64, help="minibatch size (default 64)")
    parser.add_argument("--chunks", type=int, default=2, help="chunks per minibatch, i.e. parallel tasks (default 2)")
    parser.add_argument("--lr", type=float, default=3e-3, help="initial Adam learning rate, cosine-decayed (default 3e-3)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="train on the dask.distributed scheduler at ADDRESS instead of a LocalCluster")
    parser.add_argument("--verify", action="store_true",
                        help="train again on the synchronous scheduler and compare the parameters bit for bit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.epochs, args.batch_size, args.chunks, args.workers) < 1 or not args.lr > 0:
        parser.error("--epochs, --batch-size, --chunks and --workers must be >= 1 and --lr > 0")
    return args


def train(args, scheduler, data, label):
    """Train from the seed on the given scheduler; returns the model and the time taken."""
    import dask.array as da

    import fastconv.dask as fcd

    x_train, y_train, x_test, y_test = data
    rng = np.random.default_rng(args.seed)
    model = build_model(rng)
    loss_fn = nn.SoftmaxCrossEntropy()
    optimizer = nn.Adam(model, lr=args.lr)
    parallel = fcd.DataParallel(model, loss_fn, scheduler=scheduler)
    chunk = -(-args.batch_size // args.chunks)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        optimizer.lr = args.lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / args.epochs))
        order = rng.permutation(len(x_train))
        total_loss = 0.0
        for i in range(0, len(order), args.batch_size):
            batch = order[i:i + args.batch_size]
            x = da.from_array(x_train[batch], chunks=(chunk, -1, -1, -1))
            model.zero_grad()
            total_loss += parallel.forward_backward(x, y_train[batch]) * len(batch)
            optimizer.step()
        _, test_acc, _ = evaluate(model, loss_fn, x_test, y_test)
        print(f"[{label}] epoch {epoch:2d}  train loss {total_loss / len(x_train):.4f}  "
              f"held-out acc {test_acc:.2%}  ({time.perf_counter() - start:.1f} s)")
    return model, time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    from distributed import Client, LocalCluster

    fastconv.set_num_threads(1)
    data = load_data(args.seed)
    steps = -(-len(data[0]) // args.batch_size) * args.epochs
    with contextlib.ExitStack() as cleanup:
        if args.scheduler:
            client = cleanup.enter_context(Client(args.scheduler))
            where = f"the cluster at {args.scheduler}"
        else:
            cluster = cleanup.enter_context(LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                         processes=True))
            client = cleanup.enter_context(Client(cluster))
            where = f"a LocalCluster of {args.workers} worker processes"
        print(f"fastconv {fastconv.__version__}: {len(data[0])} training / {len(data[2])} held-out digits, "
              f"batches of {args.batch_size} in {args.chunks} chunks, on {where}")
        model, seconds = train(args, client, data, "cluster")
    _, test_acc, _ = evaluate(model, nn.SoftmaxCrossEntropy(), data[2], data[3])
    print(f"held-out accuracy {test_acc:.2%} after {args.epochs} epochs ({steps} steps) in {seconds:.1f} s "
          f"({1000 * seconds / steps:.0f} ms per step)")
    if args.verify:
        reference, _ = train(args, "synchronous", data, "in-process")
        same = all(np.array_equal(a, b) for a, b in zip(model.state_dict().values(),
                                                         reference.state_dict().values()))
        print(f"parameters and buffers bitwise identical to the in-process run: {same}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
