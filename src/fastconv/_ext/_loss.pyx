"""Softmax cross-entropy with mean reduction and its gradient, for float32 and float64.

Rows are independent: each finds its maximum m, sums exp(z - m) in float64, and writes its
loss (float64) and its row of dlogits. Row losses are kept and added up serially in row
order, so the loss is bitwise identical for every thread count. Subtracting the maximum keeps
exp() from overflowing; log-softmax is (z - m) - log(sum exp(z - m)), exact for any logits.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, log
from libc.stdint cimport int64_t

import numpy as np

# Below this many logits a call runs on one thread.
cdef Py_ssize_t SERIAL_ELEMENTS = 1 << 14


cdef inline double _exp_row(const floating* z, floating* g, Py_ssize_t K, double* row_max) noexcept nogil:
    """g[k] = exp(z[k] - max z); returns the sum of those (float64) and sets row_max."""
    cdef Py_ssize_t k
    cdef double m = z[0], e, total = 0
    for k in range(1, K):
        if z[k] > m:
            m = z[k]
    for k in range(K):
        e = exp(z[k] - m)
        g[k] = <floating>e
        total += e
    row_max[0] = m
    return total


cdef double _label_row(const floating* z, floating* g, Py_ssize_t K, Py_ssize_t label,
                       double inv_n) noexcept nogil:
    """Loss -log softmax(z)[label]; g = (softmax(z) - onehot(label)) / N."""
    cdef Py_ssize_t k
    cdef double m
    cdef double total = _exp_row(z, g, K, &m)
    cdef double e_label = exp(z[label] - m)
    for k in range(K):
        g[k] = <floating>(g[k] / total * inv_n)
    g[label] = <floating>((e_label / total - 1.0) * inv_n)
    return log(total) - (z[label] - m)


cdef double _probability_row(const floating* z, const floating* t, floating* g, Py_ssize_t K,
                             double inv_n) noexcept nogil:
    """Loss -sum_k t[k] log softmax(z)[k]; g = (softmax(z) * sum(t) - t) / N (torch's gradient,
    also for targets that do not sum to 1)."""
    cdef Py_ssize_t k
    cdef double m, t_sum = 0, dot = 0
    cdef double total = _exp_row(z, g, K, &m)
    for k in range(K):
        t_sum += t[k]
        dot += t[k] * (z[k] - m)
    for k in range(K):
        g[k] = <floating>((g[k] / total * t_sum - t[k]) * inv_n)
    return t_sum * log(total) - dot


def softmax_cross_entropy(const floating[:, ::1] logits, target, int num_threads):
    """(loss, dlogits) for logits (N, K), N >= 1, and target int64 labels (N,) in [0, K) or
    probabilities (N, K) of the logits' dtype. loss is a Python float (the batch mean)."""
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], n
    dtype = np.float32 if floating is float else np.float64
    dlogits_arr = np.empty((N, K), dtype=dtype)
    cdef floating[:, ::1] g = dlogits_arr
    cdef double[::1] losses = np.empty(N, dtype=np.float64)
    cdef double inv_n = 1.0 / N if N else 0.0
    cdef double total = 0
    cdef const int64_t[::1] labels
    cdef const floating[:, ::1] probabilities
    cdef int nt = 1 if N * K < SERIAL_ELEMENTS or num_threads < 1 else (
        num_threads if num_threads < N else <int>N)
    cdef Py_ssize_t rows_per_chunk = 4096 // K if 4096 // K > 1 else 1  # handed out dynamically
    if N == 0:
        return float("nan"), dlogits_arr
    if target.ndim == 1:
        labels = target
        with nogil:
            for n in prange(N, schedule='dynamic', chunksize=rows_per_chunk, num_threads=nt):
                losses[n] = _label_row(&logits[n, 0], &g[n, 0], K, labels[n], inv_n)
    else:
        probabilities = target
        with nogil:
            for n in prange(N, schedule='dynamic', chunksize=rows_per_chunk, num_threads=nt):
                losses[n] = _probability_row(&logits[n, 0], &probabilities[n, 0], &g[n, 0], K, inv_n)
    for n in range(N):
        total += losses[n]
    return total / N, dlogits_arr


# ----------------------------------------------------------------------------------------------
# Multiclass hinge loss (CS231n's svm_loss): mean over rows of sum_{k != y} max(0, x_k - x_y + 1)
# ----------------------------------------------------------------------------------------------

cdef double _hinge_row(const floating* x, floating* g, Py_ssize_t K, Py_ssize_t label,
                       double n) noexcept nogil:
    """The row's loss; g = 1/n where the margin is positive, -(their count)/n at the label.

    Margins are computed in the data's dtype in the assignment's order, (x_k - x_y) + 1, so
    that exactly the same margins count as positive; a NaN margin adds NaN to the loss (as
    np.maximum) but no gradient (as `margins > 0`).
    """
    cdef Py_ssize_t k
    cdef floating correct = x[label], margin
    cdef double total = 0
    cdef Py_ssize_t positive = 0
    cdef floating inv_n = <floating>(1.0 / n)
    for k in range(K):
        margin = (x[k] - correct) + 1
        if k == label:
            g[k] = 0
        elif margin > 0:
            total += margin
            positive += 1
            g[k] = inv_n
        else:
            if margin != margin:
                total += margin
            g[k] = 0
    g[label] = <floating>(-positive / n)
    return total


def svm_loss(const floating[:, ::1] x, const int64_t[::1] labels, int num_threads):
    """(loss, dx) of the mean multiclass hinge loss, x (N, K) with N >= 1, int64 labels in
    [0, K). loss is a Python float; row losses are float64, added in row order."""
    cdef Py_ssize_t N = x.shape[0], K = x.shape[1], n
    dtype = np.float32 if floating is float else np.float64
    dx_arr = np.empty((N, K), dtype=dtype)
    cdef floating[:, ::1] g = dx_arr
    cdef double[::1] losses = np.empty(N, dtype=np.float64)
    cdef double total = 0
    cdef int nt = 1 if N * K < SERIAL_ELEMENTS or num_threads < 1 else (
        num_threads if num_threads < N else <int>N)
    cdef Py_ssize_t rows_per_chunk = 4096 // K if 4096 // K > 1 else 1
    with nogil:
        for n in prange(N, schedule='dynamic', chunksize=rows_per_chunk, num_threads=nt):
            losses[n] = _hinge_row(&x[n, 0], &g[n, 0], K, labels[n], <double>N)
    for n in range(N):
        total += losses[n]
    return total / N, dx_arr
