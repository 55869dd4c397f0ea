/* Transposes with AVX shuffles (8 x 8 floats, 4 x 4 doubles per block; scalar edges), for the
 * AVX2 and AVX-512 kernel files, which include this after enabling their instruction set and
 * defining FC_ISA. */
#include <immintrin.h>
#include <stddef.h>

static void FC_KERNEL_NAME(f32, transpose, 8, 8, FC_ISA)(size_t rows, size_t cols,
                                                       const float *src, ptrdiff_t src_stride,
                                                       float *dst, ptrdiff_t dst_stride)
{
    size_t r0, c0, r, c;
    for (r0 = 0; r0 + 8 <= rows; r0 += 8) {
        const float *s = src + (ptrdiff_t)r0 * src_stride;
        float *d = dst + r0;
        for (c0 = 0; c0 + 8 <= cols; c0 += 8) {
            __m256 a0 = _mm256_loadu_ps(s + 0 * src_stride + c0);
            __m256 a1 = _mm256_loadu_ps(s + 1 * src_stride + c0);
            __m256 a2 = _mm256_loadu_ps(s + 2 * src_stride + c0);
            __m256 a3 = _mm256_loadu_ps(s + 3 * src_stride + c0);
            __m256 a4 = _mm256_loadu_ps(s + 4 * src_stride + c0);
            __m256 a5 = _mm256_loadu_ps(s + 5 * src_stride + c0);
            __m256 a6 = _mm256_loadu_ps(s + 6 * src_stride + c0);
            __m256 a7 = _mm256_loadu_ps(s + 7 * src_stride + c0);
            __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
            __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
            __m256 t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5);
            __m256 t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
            float *o = d + (ptrdiff_t)c0 * dst_stride;
            _mm256_storeu_ps(o + 0 * dst_stride, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(o + 1 * dst_stride, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(o + 2 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(o + 3 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(o + 4 * dst_stride, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(o + 5 * dst_stride, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(o + 6 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(o + 7 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
        for (r = r0; r < r0 + 8; r++)
            for (c = c0; c < cols; c++) dst[(ptrdiff_t)c * dst_stride + r] = src[(ptrdiff_t)r * src_stride + c];
    }
    for (r = r0; r < rows; r++)
        for (c = 0; c < cols; c++) dst[(ptrdiff_t)c * dst_stride + r] = src[(ptrdiff_t)r * src_stride + c];
}

static void FC_KERNEL_NAME(f64, transpose, 4, 4, FC_ISA)(size_t rows, size_t cols,
                                                       const double *src, ptrdiff_t src_stride,
                                                       double *dst, ptrdiff_t dst_stride)
{
    size_t r0, c0, r, c;
    for (r0 = 0; r0 + 4 <= rows; r0 += 4) {
        const double *s = src + (ptrdiff_t)r0 * src_stride;
        double *d = dst + r0;
        for (c0 = 0; c0 + 4 <= cols; c0 += 4) {
            __m256d a0 = _mm256_loadu_pd(s + 0 * src_stride + c0);
            __m256d a1 = _mm256_loadu_pd(s + 1 * src_stride + c0);
            __m256d a2 = _mm256_loadu_pd(s + 2 * src_stride + c0);
            __m256d a3 = _mm256_loadu_pd(s + 3 * src_stride + c0);
            __m256d t0 = _mm256_unpacklo_pd(a0, a1), t1 = _mm256_unpackhi_pd(a0, a1);
            __m256d t2 = _mm256_unpacklo_pd(a2, a3), t3 = _mm256_unpackhi_pd(a2, a3);
            double *o = d + (ptrdiff_t)c0 * dst_stride;
            _mm256_storeu_pd(o + 0 * dst_stride, _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd(o + 1 * dst_stride, _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd(o + 2 * dst_stride, _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd(o + 3 * dst_stride, _mm256_permute2f128_pd(t1, t3, 0x31));
        }
        for (r = r0; r < r0 + 4; r++)
            for (c = c0; c < cols; c++) dst[(ptrdiff_t)c * dst_stride + r] = src[(ptrdiff_t)r * src_stride + c];
    }
    for (r = r0; r < rows; r++)
        for (c = 0; c < cols; c++) dst[(ptrdiff_t)c * dst_stride + r] = src[(ptrdiff_t)r * src_stride + c];
}
