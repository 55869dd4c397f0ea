from cython cimport floating

# Float64 sums over one contiguous run of float32 or float64 elements, in a fixed order: eight
# lanes (lane j adds the elements i with i % 8 == j), then the lanes are added in a fixed tree.
# The order depends on the length only, so a reduction built from these is bitwise
# reproducible. GCC does not vectorise such loops on its own (it may not reorder additions),
# so on x86 they are written with SSE2: lanes (0, 1), (2, 3), ... are one register each, which
# is exactly the portable loop's order, so both paths give the same bits.

cdef extern from *:
    """
    #define FASTCONV_LANES_TOTAL(acc) \
        (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])))

    #if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
    #include <emmintrin.h>
    #define FASTCONV_LANE_SUMS_SIMD 1

    /* Elements i..i+7 as four registers of two doubles. */
    static inline void fastconv_load8_f32(const float *p, __m128d *v) {
        __m128 lo = _mm_loadu_ps(p), hi = _mm_loadu_ps(p + 4);
        v[0] = _mm_cvtps_pd(lo);
        v[1] = _mm_cvtps_pd(_mm_movehl_ps(lo, lo));
        v[2] = _mm_cvtps_pd(hi);
        v[3] = _mm_cvtps_pd(_mm_movehl_ps(hi, hi));
    }
    static inline void fastconv_load8_f64(const double *p, __m128d *v) {
        v[0] = _mm_loadu_pd(p);
        v[1] = _mm_loadu_pd(p + 2);
        v[2] = _mm_loadu_pd(p + 4);
        v[3] = _mm_loadu_pd(p + 6);
    }
    static inline void fastconv_store8(const __m128d *v, double *acc) {
        int k;
        for (k = 0; k < 4; k++) _mm_storeu_pd(acc + 2 * k, v[k]);
    }

    #define FASTCONV_DEFINE_REDUCTIONS(T, SUFFIX)                                              \
    static double fastconv_sum_##SUFFIX(const T *p, Py_ssize_t n) {                           \
        __m128d a[4], v[4];                                                                  \
        double acc[8];                                                                       \
        Py_ssize_t i, end = n - n % 8;                                                       \
        int k;                                                                               \
        for (k = 0; k < 4; k++) a[k] = _mm_setzero_pd();                                     \
        for (i = 0; i < end; i += 8) {                                                       \
            fastconv_load8_##SUFFIX(p + i, v);                                               \
            for (k = 0; k < 4; k++) a[k] = _mm_add_pd(a[k], v[k]);                           \
        }                                                                                    \
        fastconv_store8(a, acc);                                                             \
        for (i = end; i < n; i++) acc[i - end] += p[i];                                      \
        return FASTCONV_LANES_TOTAL(acc);                                                    \
    }                                                                                        \
    static double fastconv_squared_deviations_##SUFFIX(const T *p, Py_ssize_t n, double m) {  \
        __m128d a[4], v[4], mm = _mm_set1_pd(m);                                             \
        double acc[8], d;                                                                    \
        Py_ssize_t i, end = n - n % 8;                                                       \
        int k;                                                                               \
        for (k = 0; k < 4; k++) a[k] = _mm_setzero_pd();                                     \
        for (i = 0; i < end; i += 8) {                                                       \
            fastconv_load8_##SUFFIX(p + i, v);                                               \
            for (k = 0; k < 4; k++) {                                                        \
                __m128d dv = _mm_sub_pd(v[k], mm);                                           \
                a[k] = _mm_add_pd(a[k], _mm_mul_pd(dv, dv));                                 \
            }                                                                                \
        }                                                                                    \
        fastconv_store8(a, acc);                                                             \
        for (i = end; i < n; i++) { d = p[i] - m; acc[i - end] += d * d; }                   \
        return FASTCONV_LANES_TOTAL(acc);                                                    \
    }                                                                                        \
    static void fastconv_gradient_sums_##SUFFIX(const T *dy, const T *x, Py_ssize_t n,       \
                                                double m, double *sum_dy, double *sum_dy_xmu) { \
        __m128d a[4], b[4], g[4], v[4], mm = _mm_set1_pd(m);                                 \
        double acc_a[8], acc_b[8];                                                           \
        Py_ssize_t i, end = n - n % 8;                                                       \
        int k;                                                                               \
        for (k = 0; k < 4; k++) a[k] = b[k] = _mm_setzero_pd();                              \
        for (i = 0; i < end; i += 8) {                                                       \
            fastconv_load8_##SUFFIX(dy + i, g);                                              \
            fastconv_load8_##SUFFIX(x + i, v);                                               \
            for (k = 0; k < 4; k++) {                                                        \
                a[k] = _mm_add_pd(a[k], g[k]);                                               \
                b[k] = _mm_add_pd(b[k], _mm_mul_pd(g[k], _mm_sub_pd(v[k], mm)));             \
            }                                                                                \
        }                                                                                    \
        fastconv_store8(a, acc_a);                                                           \
        fastconv_store8(b, acc_b);                                                           \
        for (i = end; i < n; i++) {                                                          \
            acc_a[i - end] += dy[i];                                                         \
            acc_b[i - end] += dy[i] * ((double)x[i] - m);                                    \
        }                                                                                    \
        *sum_dy += FASTCONV_LANES_TOTAL(acc_a);                                              \
        *sum_dy_xmu += FASTCONV_LANES_TOTAL(acc_b);                                          \
    }
    #else
    #define FASTCONV_LANE_SUMS_SIMD 0

    #define FASTCONV_DEFINE_REDUCTIONS(T, SUFFIX)                                              \
    static double fastconv_sum_##SUFFIX(const T *p, Py_ssize_t n) {                           \
        double acc[8] = {0};                                                                 \
        Py_ssize_t i;                                                                        \
        for (i = 0; i < n; i++) acc[i % 8] += p[i];                                          \
        return FASTCONV_LANES_TOTAL(acc);                                                    \
    }                                                                                        \
    static double fastconv_squared_deviations_##SUFFIX(const T *p, Py_ssize_t n, double m) {  \
        double acc[8] = {0}, d;                                                              \
        Py_ssize_t i;                                                                        \
        for (i = 0; i < n; i++) { d = p[i] - m; acc[i % 8] += d * d; }                       \
        return FASTCONV_LANES_TOTAL(acc);                                                    \
    }                                                                                        \
    static void fastconv_gradient_sums_##SUFFIX(const T *dy, const T *x, Py_ssize_t n,       \
                                                double m, double *sum_dy, double *sum_dy_xmu) { \
        double acc_a[8] = {0}, acc_b[8] = {0};                                               \
        Py_ssize_t i;                                                                        \
        for (i = 0; i < n; i++) {                                                            \
            acc_a[i % 8] += dy[i];                                                           \
            acc_b[i % 8] += dy[i] * ((double)x[i] - m);                                      \
        }                                                                                    \
        *sum_dy += FASTCONV_LANES_TOTAL(acc_a);                                              \
        *sum_dy_xmu += FASTCONV_LANES_TOTAL(acc_b);                                          \
    }
    #endif
    FASTCONV_DEFINE_REDUCTIONS(float, f32)
    FASTCONV_DEFINE_REDUCTIONS(double, f64)
    """
    bint FASTCONV_LANE_SUMS_SIMD
    double fastconv_sum_f32(const float* p, Py_ssize_t n) noexcept nogil
    double fastconv_sum_f64(const double* p, Py_ssize_t n) noexcept nogil
    double fastconv_squared_deviations_f32(const float* p, Py_ssize_t n, double m) noexcept nogil
    double fastconv_squared_deviations_f64(const double* p, Py_ssize_t n, double m) noexcept nogil
    void fastconv_gradient_sums_f32(const float* dy, const float* x, Py_ssize_t n, double m,
                                    double* sum_dy, double* sum_dy_xmu) noexcept nogil
    void fastconv_gradient_sums_f64(const double* dy, const double* x, Py_ssize_t n, double m,
                                    double* sum_dy, double* sum_dy_xmu) noexcept nogil


cdef inline double lane_sum(const floating* p, Py_ssize_t n) noexcept nogil:
    """sum(p[:n])."""
    if floating is float:
        return fastconv_sum_f32(p, n)
    else:
        return fastconv_sum_f64(p, n)


cdef inline double squared_deviations(const floating* p, Py_ssize_t n, double m) noexcept nogil:
    """sum((p[:n] - m)**2)."""
    if floating is float:
        return fastconv_squared_deviations_f32(p, n, m)
    else:
        return fastconv_squared_deviations_f64(p, n, m)


cdef inline void gradient_sums(const floating* dy, const floating* x, Py_ssize_t n, double m,
                               double* sum_dy, double* sum_dy_xmu) noexcept nogil:
    """sum_dy += sum(dy), sum_dy_xmu += sum(dy * (x - m)) over n elements."""
    if floating is float:
        fastconv_gradient_sums_f32(dy, x, n, m, sum_dy, sum_dy_xmu)
    else:
        fastconv_gradient_sums_f64(dy, x, n, m, sum_dy, sum_dy_xmu)
