"""SoftmaxCrossEntropy: the mean cross-entropy of softmax(logits), numerically stable."""

import numpy as np

import fastconv
from fastconv.nn._base import BackwardBeforeForwardError


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, averaged over the batch
    (``torch.nn.functional.cross_entropy`` with ``reduction="mean"``).

    ``forward(logits, y)``: ``logits`` is (N, K); ``y`` is either N integer class labels in
    [0, K) or an (N, K) array of target probabilities (one-hot rows, or any distribution).
    Returns the loss as a Python float. ``backward()`` returns ``dlogits`` (N, K), in the
    logits' dtype (float32 stays float32; other inputs compute in float64). The work is
    :func:`fastconv.softmax_cross_entropy`'s, which computes the gradient with the loss.
    """

    def __init__(self):
        self._cache = None

    def __call__(self, logits, y):
        return self.forward(logits, y)

    def forward(self, logits, y):
        try:
            logits = np.asarray(logits)
            y = np.asarray(y)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"SoftmaxCrossEntropy.forward: logits and y must be array-like ({exc})") from None
        if logits.dtype.kind not in "fiub":
            raise TypeError(f"SoftmaxCrossEntropy.forward: logits must be real numbers, got dtype {logits.dtype}")
        if logits.ndim != 2:
            raise ValueError(f"SoftmaxCrossEntropy.forward: logits must be 2-D (N, K), got shape {logits.shape}")
        n, k = logits.shape
        if n == 0 or k == 0:
            raise ValueError(f"SoftmaxCrossEntropy.forward: logits must be non-empty, got shape {logits.shape}")
        dtype = np.float32 if logits.dtype == np.float32 else np.float64
        loss, dlogits = fastconv.softmax_cross_entropy(logits.astype(dtype, copy=False),
                                                      self._target(y, n, k, dtype))
        self._cache = dlogits
        return loss

    @staticmethod
    def _target(y, n, k, dtype):
        """Targets as N labels or an (N, K) probability matrix of the logits' dtype."""
        if y.dtype.kind in "iu" and y.ndim == 1:
            if y.shape != (n,):
                raise ValueError(f"SoftmaxCrossEntropy.forward: y has {y.shape[0]} labels for {n} rows of logits")
            if y.size and (y.min() < 0 or y.max() >= k):
                bad = y.min() if y.min() < 0 else y.max()
                raise ValueError(f"SoftmaxCrossEntropy.forward: labels must be in [0, {k}), got {bad}")
            return y
        if y.ndim == 2 and y.dtype.kind in "fb":
            if y.shape != (n, k):
                raise ValueError(
                    f"SoftmaxCrossEntropy.forward: target probabilities must have the logits' shape "
                    f"{(n, k)}, got {y.shape}"
                )
            return y.astype(dtype, copy=False)
        if y.ndim == 1:
            raise TypeError(
                f"SoftmaxCrossEntropy.forward: class labels must be integers, got dtype {y.dtype}"
            )
        raise ValueError(
            "SoftmaxCrossEntropy.forward: y must be N integer labels or an (N, K) float array of "
            f"target probabilities, got dtype {y.dtype} and shape {y.shape}"
        )

    def backward(self):
        if self._cache is None:
            raise BackwardBeforeForwardError("SoftmaxCrossEntropy.backward called before forward")
        return self._cache.copy()  # a new array per call, as every backward
