"""Neural-network layers, losses and optimizers over fastconv's kernels.

Each layer has ``forward(x)``, ``backward(dout) -> dx``, ``params`` and ``grads`` (same keys;
``backward`` adds into ``grads``), ``zero_grad()``, ``train()`` / ``eval()`` and
``parameters()`` -> ``[(name, param, grad), ...]``. Convolution, pooling, batch normalisation,
ReLU, Dropout and the loss run on the active fastconv backend. Example::

    from fastconv import nn
    model = nn.Sequential(nn.Conv2D(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    loss_fn, opt = nn.SoftmaxCrossEntropy(), nn.Adam(model, lr=1e-2)
    loss = loss_fn.forward(model.forward(x), y)
    model.zero_grad(); model.backward(loss_fn.backward()); opt.step()
"""

from fastconv.nn._base import BackwardBeforeForwardError, Layer
from fastconv.nn.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from fastconv.nn.containers import Identity, Residual, Sequential
from fastconv.nn.gradcheck import gradcheck
from fastconv.nn.conv import Conv1D, Conv2D, ConvTranspose2D
from fastconv.nn.linear import Flatten, Linear
from fastconv.nn.pooling import AdaptiveAvgPool2D, AvgPool1D, AvgPool2D, MaxPool1D, MaxPool2D
from fastconv.nn.losses import SoftmaxCrossEntropy
from fastconv.nn.normalization import BatchNorm1D, BatchNorm2D, Dropout
from fastconv.nn.optim import SGD, Adam, Optimizer
from fastconv.nn.schedules import CosineAnnealingLR, StepLR

__all__ = [
    "Layer", "BackwardBeforeForwardError",
    "Conv2D", "Conv1D", "ConvTranspose2D",
    "MaxPool2D", "AvgPool2D", "ReLU", "Sigmoid", "Tanh", "Flatten",
    "Linear", "BatchNorm1D", "BatchNorm2D", "Dropout", "Sequential",
    "LeakyReLU", "Identity", "Residual", "MaxPool1D", "AvgPool1D", "AdaptiveAvgPool2D",
    "SoftmaxCrossEntropy", "SGD", "Adam", "Optimizer", "StepLR", "CosineAnnealingLR", "gradcheck",
]
