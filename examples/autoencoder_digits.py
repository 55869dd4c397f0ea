"""A convolutional autoencoder on scikit-learn's digits: strided convolutions down, transposed
convolutions (``nn.ConvTranspose2D``) back up, trained with fastconv.nn.

The encoder squeezes each 8x8 digit (64 values) into a 2x2x8 code (32 values, two stride-2
convolutions); the decoder
upsamples it again with two stride-2 transposed convolutions (U-Net's upsampling layer). Trained
with Adam on the mean squared error between input and reconstruction; the script prints the
held-out error per epoch and saves a picture: held-out digits on top, their reconstructions below.

    python examples/autoencoder_digits.py --epochs 30 --out autoencoder.png

Needs scikit-learn, matplotlib and tqdm (``pip install "fastconv[examples]"``).
"""

import argparse
import sys
import time

import numpy as np

import fastconv
from fastconv import nn

from train_digits import load_data


def build_autoencoder(rng):
    """8x8x1 -> 4x4x16 -> 2x2x8 (the code: 32 numbers per digit) -> 4x4x16 -> 8x8x1."""
    return nn.Sequential(
        nn.Conv2D(1, 16, 3, stride=2, padding=1, rng=rng), nn.ReLU(),
        nn.Conv2D(16, 8, 3, stride=2, padding=1, rng=rng), nn.ReLU(),
        nn.ConvTranspose2D(8, 16, 2, stride=2, rng=rng), nn.ReLU(),
        nn.ConvTranspose2D(16, 1, 2, stride=2, rng=rng),
    )


def mse(reconstruction, target):
    """Mean squared error and its gradient with respect to the reconstruction."""
    diff = reconstruction - target
    return float(np.mean(diff * diff)), (2.0 / diff.size) * diff


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training set (default 30)")
    parser.add_argument("--batch-size", type=int, default=32, help="minibatch size (default 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, the weights and the batches")
    parser.add_argument("--out", default="autoencoder_digits.png", help="where to save the picture (PNG)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        parser.error("--epochs and --batch-size must be >= 1 and --lr > 0")
    return args


def train(args):
    """Train the autoencoder; returns (model, held-out test images, final held-out error)."""
    from tqdm import tqdm

    rng = np.random.default_rng(args.seed)
    x_train, _, x_test, _ = load_data(args.seed)
    model = build_autoencoder(rng)
    optimizer = nn.Adam(model, lr=args.lr)
    schedule = nn.CosineAnnealingLR(optimizer, T_max=args.epochs)
    print(f"fastconv {fastconv.__version__}, backend {fastconv.get_backend()}, "
          f"{len(x_train)} training / {len(x_test)} test digits")
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train))
        for i in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch:2d}/{args.epochs}",
                      leave=False, disable=args.no_progress, unit="batch"):
            batch = x_train[order[i:i + args.batch_size]]
            _, dout = mse(model.forward(batch), batch)
            model.zero_grad()
            model.backward(dout, input_grad=False)
            optimizer.step()
        schedule.step()
        model.eval()
        test_error, _ = mse(model.forward(x_test), x_test)
        model.train()
        tqdm.write(f"epoch {epoch:2d}  held-out mean squared error {test_error:.4f}  "
                   f"({time.perf_counter() - start:.1f} s)")
    return model, x_test, test_error


def plot(model, x_test, path, shown=10):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    reconstructions = model.forward(x_test[:shown])
    fig, axes = plt.subplots(2, shown, figsize=(shown * 1.0, 2.4), layout="constrained")
    for k in range(shown):
        for row, images in enumerate((x_test, reconstructions)):
            axes[row, k].imshow(images[k, 0], cmap="gray_r")
            axes[row, k].axis("off")
    axes[0, 0].set_title("input", loc="left", fontsize=9)
    axes[1, 0].set_title("reconstruction", loc="left", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    fastconv.set_num_threads(1)  # 8x8 images: starting threads costs more than it saves
    model, x_test, error = train(args)
    plot(model, x_test, args.out)
    print(f"held-out mean squared error {error:.4f}; picture saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
