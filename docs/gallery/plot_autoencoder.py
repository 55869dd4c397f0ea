"""
A convolutional autoencoder
===========================

An encoder of two strided convolutions squeezes each 8x8 handwritten digit (64 pixels) into
32 numbers, 8 channels of 2x2; a decoder of two transposed convolutions
(:class:`fastconv.nn.ConvTranspose2D`, the gradient of a strided convolution run forward)
grows them back to 8x8. Trained with Adam to reproduce its input under a mean squared error;
the figure compares held-out digits with their reconstructions.

(This page is built only when the installed fastconv has ``nn.ConvTranspose2D``.)
"""

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fastconv import nn

digits = load_digits()
x = digits.images.astype(np.float32)[:, None] / 16.0           # (N, 1, 8, 8) in [0, 1]
x_train, x_test = train_test_split(x, test_size=0.25, random_state=0)

# %%
# Shapes: 1x8x8 -> 16x4x4 -> 8x2x2 (the code) -> 16x4x4 -> 1x8x8. With stride 2, kernel 3
# and padding 1, ``output_padding=1`` makes each transposed convolution double its input,
# undoing the matching strided convolution's shape.
rng = np.random.default_rng(0)
model = nn.Sequential(
    nn.Conv2D(1, 16, 3, stride=2, padding=1, rng=rng), nn.ReLU(),
    nn.Conv2D(16, 8, 3, stride=2, padding=1, rng=rng), nn.ReLU(),
    nn.ConvTranspose2D(8, 16, 3, stride=2, padding=1, output_padding=1, rng=rng), nn.ReLU(),
    nn.ConvTranspose2D(16, 1, 3, stride=2, padding=1, output_padding=1, rng=rng), nn.Sigmoid(),
)
assert model.forward(x_test[:2]).shape == (2, 1, 8, 8)
epochs = 40
optimizer = nn.Adam(model, lr=1e-2)
schedule = nn.CosineAnnealingLR(optimizer, T_max=epochs)


def mse(output, target):
    """Mean squared error and its gradient with respect to ``output``."""
    diff = output - target
    return float(np.mean(diff ** 2)), 2 * diff / diff.size


# %%
# Training: the loss is computed in NumPy; its gradient goes into ``model.backward``.
history = []
start = time.perf_counter()
for epoch in range(epochs):
    order = rng.permutation(len(x_train))
    for i in range(0, len(order), 64):
        batch = x_train[order[i:i + 64]]
        loss, dout = mse(model.forward(batch), batch)
        model.zero_grad()
        model.backward(dout, input_grad=False)
        optimizer.step()
    schedule.step()
    history.append(mse(model.forward(x_test), x_test)[0])
print(f"{epochs} epochs in {time.perf_counter() - start:.1f} s: held-out MSE {history[-1]:.4f} "
      f"(predicting the mean image: {np.mean((x_test - x_train.mean(axis=0)) ** 2):.4f})")

# %%
# Held-out digits (top) and their reconstructions (bottom), and the held-out error by epoch.
shown = x_test[:10]
reconstructed = model.forward(shown)
fig = plt.figure(figsize=(10, 3), layout="constrained")
left, right = fig.subfigures(1, 2, width_ratios=[2.3, 1])
axes = left.subplots(2, 10)
for k in range(10):
    for row, images in enumerate((shown, reconstructed)):
        axes[row, k].imshow(images[k, 0], cmap="gray_r", vmin=0, vmax=1)
        axes[row, k].axis("off")
left.suptitle("held-out digits (top) and reconstructions (bottom)")
ax = right.subplots()
ax.plot(np.arange(1, epochs + 1), history, marker=".")
ax.set_yscale("log")
ax.set_xlabel("epoch")
ax.set_ylabel("held-out MSE")
ax.grid(alpha=0.3)
plt.show()
