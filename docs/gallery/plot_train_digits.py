"""
Training a CNN on handwritten digits
====================================

A small convolutional network in :mod:`fastconv.nn`, trained with Adam on scikit-learn's
8x8 handwritten digits (1797 images that ship with scikit-learn: no download). A quarter of
the digits is held out; the network reaches about 98% accuracy on them in a few seconds.

``examples/train_digits.py`` in the repository is the same loop as a command-line program
(progress bar, ``--backend reference`` to run it on pure NumPy, ``--save-model``).
"""

# %%
# The data: images as ``(N, 1, 8, 8)`` float32 arrays (NCHW), standardised with the training
# set's mean and standard deviation.
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fastconv
from fastconv import nn

digits = load_digits()
x = digits.images.astype(np.float32)[:, None] / 16.0
y = digits.target.astype(np.int64)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
mean, std = x_train.mean(), x_train.std()
x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
print(f"{len(x_train)} training and {len(x_test)} held-out digits, backend {fastconv.get_backend()}")

# %%
# The model: convolution, batch norm, ReLU and max pooling twice (8x8 -> 4x4 -> 2x2), then
# dropout and a linear classifier. ``rng`` seeds every layer's initial weights.
rng = np.random.default_rng(0)
model = nn.Sequential(
    nn.Conv2D(1, 16, 3, padding=1, rng=rng), nn.BatchNorm2D(16), nn.ReLU(), nn.MaxPool2D(2),
    nn.Conv2D(16, 32, 3, padding=1, rng=rng), nn.BatchNorm2D(32), nn.ReLU(), nn.MaxPool2D(2),
    nn.Flatten(), nn.Dropout(0.25, rng=rng), nn.Linear(32 * 2 * 2, 10, rng=rng),
)
loss_fn = nn.SoftmaxCrossEntropy()
epochs = 15
optimizer = nn.Adam(model, lr=3e-3)
schedule = nn.CosineAnnealingLR(optimizer, T_max=epochs)


def evaluate(images, labels):
    """Mean loss and accuracy in evaluation mode (batch norm's running statistics, no dropout)."""
    model.eval()
    logits = model.forward(images)
    model.train()
    return loss_fn.forward(logits, labels), float((logits.argmax(axis=1) == labels).mean())


# %%
# The loop: forward, loss, ``zero_grad``, backward, optimizer step, one minibatch at a time;
# the learning rate follows a cosine from 3e-3 down to 0 over the epochs.
history = {"train_loss": [], "train_acc": [], "test_loss": [], "test_acc": []}
start = time.perf_counter()
for epoch in range(epochs):
    order = rng.permutation(len(x_train))
    for i in range(0, len(order), 32):
        batch = order[i:i + 32]
        loss = loss_fn.forward(model.forward(x_train[batch]), y_train[batch])
        model.zero_grad()
        model.backward(loss_fn.backward(), input_grad=False)
        optimizer.step()
    schedule.step()
    for split, (images, labels) in {"train": (x_train, y_train), "test": (x_test, y_test)}.items():
        loss, accuracy = evaluate(images, labels)
        history[f"{split}_loss"].append(loss)
        history[f"{split}_acc"].append(accuracy)
print(f"{epochs} epochs in {time.perf_counter() - start:.1f} s: "
      f"held-out accuracy {history['test_acc'][-1]:.2%}")

# %%
# Learning curves: the cross-entropy (log scale) and the accuracy, measured after every epoch
# on the training set and on the held-out digits.
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
epoch_numbers = np.arange(1, epochs + 1)
for ax, key, label in ((ax_loss, "loss", "cross-entropy"), (ax_acc, "acc", "accuracy")):
    ax.plot(epoch_numbers, history[f"train_{key}"], marker="o", label="train")
    ax.plot(epoch_numbers, history[f"test_{key}"], marker="o", label="held-out")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend()
ax_loss.set_yscale("log")
ax_acc.set_title(f"final held-out accuracy {history['test_acc'][-1]:.2%}")
plt.show()

# %%
# Some of the held-out digits the network gets wrong (true label -> prediction).
model.eval()
predictions = model.forward(x_test).argmax(axis=1)
wrong = np.flatnonzero(predictions != y_test)[:8]
fig, axes = plt.subplots(1, 8, figsize=(10, 1.8), layout="constrained")
for ax, i in zip(axes, list(wrong) + [None] * (8 - len(wrong))):
    ax.axis("off")
    if i is not None:
        ax.imshow(x_test[i, 0], cmap="gray_r")
        ax.set_title(f"{y_test[i]} -> {predictions[i]}", color="tab:red")
fig.suptitle(f"{len(np.flatnonzero(predictions != y_test))} of {len(y_test)} held-out digits misclassified")
plt.show()
