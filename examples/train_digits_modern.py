"""Train a small ResNet or a MobileNet-style network on scikit-learn's digits with fastconv.nn.

The two architectures modern CNNs are built from, at the scale of 8x8 digits:

* ``--model resnet``: a conv stem, then three basic residual blocks (conv-BN-ReLU-conv-BN plus a
  shortcut: the identity, or a 1x1 stride-2 convolution where the block downsamples), global
  average pooling and a linear classifier (``nn.Residual``, ``nn.AdaptiveAvgPool2D``);
* ``--model mobilenet``: a conv stem, then depthwise-separable blocks (a 3x3 depthwise
  convolution, ``groups`` = channels, then a 1x1 pointwise one, each with BN and ReLU), global
  average pooling and a linear classifier.

Same data, training loop and figure as examples/train_digits.py (held-out quarter, Adam on a
cosine schedule, learning curves and misclassified digits saved as a PNG).

    python examples/train_digits_modern.py --model resnet --out resnet.png
    python examples/train_digits_modern.py --model mobilenet --out mobilenet.png   # 25 epochs

Needs scikit-learn, matplotlib and tqdm (``pip install "fastconv[examples]"``).
"""

import sys

from fastconv import nn

from train_digits import main as train_main


def conv_bn_relu(c_in, c_out, kernel, rng, stride=1, groups=1):
    padding = kernel // 2
    return [nn.Conv2D(c_in, c_out, kernel, stride=stride, padding=padding, bias=False, groups=groups, rng=rng),
            nn.BatchNorm2D(c_out), nn.ReLU()]


def basic_block(c_in, c_out, stride, rng):
    """conv-BN-ReLU-conv-BN + shortcut, then ReLU (He et al.'s basic block)."""
    block = nn.Sequential(*conv_bn_relu(c_in, c_out, 3, rng, stride),
                          nn.Conv2D(c_out, c_out, 3, padding=1, bias=False, rng=rng), nn.BatchNorm2D(c_out))
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = nn.Sequential(nn.Conv2D(c_in, c_out, 1, stride=stride, bias=False, rng=rng), nn.BatchNorm2D(c_out))
    return [nn.Residual(block, shortcut), nn.ReLU()]


def build_resnet(rng):
    """8x8 -> 8x8 (16) -> 4x4 (32) -> 2x2 (64) -> global average -> 10 classes."""
    return nn.Sequential(
        *conv_bn_relu(1, 16, 3, rng),
        *basic_block(16, 16, 1, rng), *basic_block(16, 32, 2, rng), *basic_block(32, 64, 2, rng),
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(64, 10, rng=rng),
    )


def separable(c_in, c_out, stride, rng):
    """Depthwise 3x3 (one filter per channel) then pointwise 1x1, each with BN and ReLU."""
    return conv_bn_relu(c_in, c_in, 3, rng, stride, groups=c_in) + conv_bn_relu(c_in, c_out, 1, rng)


def build_mobilenet(rng):
    """8x8 (16) -> 32 -> 4x4 (64) -> 64 -> 2x2 (128) -> global average -> 10 classes."""
    return nn.Sequential(
        *conv_bn_relu(1, 16, 3, rng),
        *separable(16, 32, 1, rng), *separable(32, 64, 2, rng), *separable(64, 64, 1, rng),
        *separable(64, 128, 2, rng),
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Dropout(0.2, rng=rng), nn.Linear(128, 10, rng=rng),
    )


MODELS = {"resnet": build_resnet, "mobilenet": build_mobilenet}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    name = "resnet"
    if "--model" in argv:
        i = argv.index("--model")
        if i + 1 >= len(argv) or argv[i + 1] not in MODELS:
            print(f"--model must be one of {', '.join(MODELS)}", file=sys.stderr)
            return 2
        name = argv.pop(i + 1)
        argv.pop(i)
    if "--out" not in argv:
        argv += ["--out", f"train_digits_{name}.png"]
    if "--epochs" not in argv and name == "mobilenet":
        argv += ["--epochs", "25"]  # depthwise-separable blocks learn more slowly at this size
    return train_main(argv, build=MODELS[name])


if __name__ == "__main__":
    sys.exit(main())
