"""SoftmaxCrossEntropy: the mean cross-entropy of softmax(logits), numerically stable."""

import numpy as np

from fastconv.nn._base import BackwardBeforeForwardError


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, averaged over the batch
    (``torch.nn.functional.cross_entropy`` with ``reduction="mean"``).

    ``forward(logits, y)``: ``logits`` is (N, K); ``y`` is either N integer class labels in
    [0, K) or an (N, K) array of target probabilities (one-hot rows, or any distribution).
    Returns the loss as a Python float. ``backward()`` returns ``dlogits`` (N, K), in the
    logits' dtype (float32 stays float32; other inputs compute in float64).
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
        logits = logits.astype(dtype, copy=False)
        target = self._target(y, n, k, dtype)
        # Subtracting the row maximum keeps exp() from overflowing; log-softmax stays exact.
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_z
        loss = -(target * log_probs).sum() / n
        self._cache = (np.exp(log_probs), target)
        return float(loss)

    @staticmethod
    def _target(y, n, k, dtype):
        """Targets as an (N, K) probability matrix."""
        if y.dtype.kind in "iu" and y.ndim == 1:
            if y.shape != (n,):
                raise ValueError(f"SoftmaxCrossEntropy.forward: y has {y.shape[0]} labels for {n} rows of logits")
            if y.size and (y.min() < 0 or y.max() >= k):
                bad = y.min() if y.min() < 0 else y.max()
                raise ValueError(f"SoftmaxCrossEntropy.forward: labels must be in [0, {k}), got {bad}")
            target = np.zeros((n, k), dtype=dtype)
            target[np.arange(n), y] = 1
            return target
        if y.ndim == 2 and y.dtype.kind in "fb":
            if y.shape != (n, k):
                raise ValueError(
                    f"SoftmaxCrossEntropy.forward: target probabilities must have the logits' shape "
                    f"{(n, k)}, got {y.shape}"
                )
            return y.astype(dtype)
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
        probs, target = self._cache
        # d(mean_i -sum_k t_ik log p_ik)/dz = (p * sum_k t_ik - t) / N; sum_k t_ik is 1 for
        # labels and one-hot rows, but is kept so unnormalised targets get the exact gradient.
        return (probs * target.sum(axis=1, keepdims=True) - target) / probs.shape[0]
