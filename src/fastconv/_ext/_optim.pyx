"""Optimizer updates in place, one pass over each parameter and no temporaries.

The formulas are fastconv.nn's (see fastconv.nn.optim), evaluated per element in the parameter's
dtype with every constant rounded to that dtype once, in the same order as the NumPy twins in
fastconv.reference._vectorised, so both backends give the same bits. Elementwise work splits
into chunks in any way without changing a result.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

from fastconv._ext._typedefs cimport index_t

# Elements per parallel chunk; below two chunks an update runs on one thread.
cdef index_t CHUNK = 1 << 15


cdef inline int threads_for(index_t size, int num_threads) noexcept nogil:
    cdef index_t chunks = (size + CHUNK - 1) // CHUNK
    if chunks < 2 or num_threads < 1:
        return 1
    return <int>(chunks if chunks < num_threads else num_threads)


def sgd_update(floating[::1] param, const floating[::1] grad, floating[::1] momentum_buffer,
               double lr, double momentum, double weight_decay, bint nesterov, bint first,
               int num_threads):
    """p -= lr * g with g = grad + weight_decay * p, through the momentum buffer when one is
    given (buf = g on the first step, else buf = momentum * buf + g; Nesterov: g + momentum *
    buf). All arrays flat views of the same size; param and the buffer are updated in place."""
    cdef index_t size = param.shape[0], chunk, chunks = (size + CHUNK - 1) // CHUNK
    cdef floating* p = &param[0] if size else NULL
    cdef const floating* g = &grad[0] if size else NULL
    cdef floating* buf = NULL
    if momentum_buffer is not None and size:
        buf = &momentum_buffer[0]
    cdef floating c_lr = <floating>lr, c_mom = <floating>momentum, c_wd = <floating>weight_decay
    cdef bint decay = weight_decay != 0
    with nogil:
        for chunk in prange(chunks, num_threads=threads_for(size, num_threads), schedule='static'):
            sgd_chunk(p, g, buf, chunk * CHUNK, min(chunk * CHUNK + CHUNK, size), c_lr, c_mom,
                      c_wd, decay, nesterov, first)


cdef void sgd_chunk(floating* p, const floating* grad, floating* buf, index_t start, index_t stop,
                    floating lr, floating momentum, floating weight_decay, bint decay,
                    bint nesterov, bint first) noexcept nogil:
    cdef index_t i
    cdef floating g
    for i in range(start, stop):
        g = grad[i]
        if decay:
            g = g + weight_decay * p[i]
        if buf != NULL:
            buf[i] = g if first else buf[i] * momentum + g
            g = g + momentum * buf[i] if nesterov else buf[i]
        p[i] = p[i] - lr * g


def adam_update(floating[::1] param, const floating[::1] grad, floating[::1] exp_avg,
                floating[::1] exp_avg_sq, double step_size, double beta1, double beta2,
                double bias_correction2_sqrt, double eps, double weight_decay, int num_threads):
    """Adam in place: g = grad + weight_decay * p; m = beta1 * m + (1 - beta1) * g;
    v = beta2 * v + (1 - beta2) * g * g; p -= step_size * m / (sqrt(v) / bias_correction2_sqrt
    + eps). step_size = lr / (1 - beta1**t) and bias_correction2_sqrt = sqrt(1 - beta2**t) come
    from the caller (computed in double, rounded to the dtype here)."""
    cdef index_t size = param.shape[0], chunk, chunks = (size + CHUNK - 1) // CHUNK
    if size == 0:
        return
    cdef floating* p = &param[0]
    cdef const floating* g = &grad[0]
    cdef floating* m = &exp_avg[0]
    cdef floating* v = &exp_avg_sq[0]
    cdef floating c[7]
    c[0] = <floating>step_size
    c[1] = <floating>beta1
    c[2] = <floating>(1.0 - beta1)
    c[3] = <floating>beta2
    c[4] = <floating>(1.0 - beta2)
    c[5] = <floating>bias_correction2_sqrt
    c[6] = <floating>eps
    cdef floating c_wd = <floating>weight_decay
    cdef bint decay = weight_decay != 0
    with nogil:
        for chunk in prange(chunks, num_threads=threads_for(size, num_threads), schedule='static'):
            adam_chunk(p, g, m, v, chunk * CHUNK, min(chunk * CHUNK + CHUNK, size), c, c_wd, decay)


cdef void adam_chunk(floating* p, const floating* grad, floating* m, floating* v, index_t start,
                     index_t stop, const floating* c, floating weight_decay,
                     bint decay) noexcept nogil:
    cdef index_t i
    cdef floating g, denom
    for i in range(start, stop):
        g = grad[i]
        if decay:
            g = g + weight_decay * p[i]
        m[i] = m[i] * c[1] + c[2] * g
        v[i] = v[i] * c[3] + (c[4] * g) * g
        if floating is float:
            denom = sqrtf(v[i]) / c[5] + c[6]
        else:
            denom = sqrt(v[i]) / c[5] + c[6]
        p[i] = p[i] - c[0] * (m[i] / denom)
