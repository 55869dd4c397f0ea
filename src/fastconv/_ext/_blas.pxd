# Row-major GEMM over scipy's BLAS (scipy.linalg.cython_blas: no BLAS of our own to link).

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C(m, n) = alpha * op(A)(m, k) @ op(B)(k, n) + beta * C.

    lda, ldb, ldc are the row strides (in elements) of A, B and C as stored. BLAS is
    column-major and a row-major matrix is its column-major transpose, so this computes
    C^T = op(B)^T @ op(A)^T by swapping the operands: no copy, no transpose pass.
    """
    cdef char trans_first = b'T' if trans_b else b'N'
    cdef char trans_second = b'T' if trans_a else b'N'
    if floating is float:
        sgemm(&trans_first, &trans_second, &n, &m, &k, &alpha, <float*>b, &ldb,
              <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&trans_first, &trans_second, &n, &m, &k, &alpha, <double*>b, &ldb,
              <double*>a, &lda, &beta, c, &ldc)
