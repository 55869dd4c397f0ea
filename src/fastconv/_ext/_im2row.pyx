"""im2row / row2im: the patch matrix in the layout of "Deep Learning from Scratch" (fastconv.dlfs).

``rows`` is (N*OH*OW, C*KH*KW): row ``(n*OH + oh)*OW + ow``, column ``(c*KH + i)*KW + j`` holds
``x[n, c, oh*sh - ph + i, ow*sw - pw + j]`` (0 in the padding). That is the transpose of each
image's im2col matrix (fastconv._ext._im2col); it is written here directly, because
transposing a whole im2col result costs a second pass over memory that is larger than the
input by a factor KH*KW.

Threads: im2row hands out output lines (n, oh), whose rows are disjoint; row2im hands out
(image, channel) planes, each accumulated by one thread in a fixed order (oh, ow, i, j).
Results are the same for every thread count.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastconv._ext._typedefs cimport index_t, Window2D

# Below this many elements per call, starting threads costs more than the copy itself.
cdef index_t SERIAL_ELEMENTS = 1 << 16


cdef inline int _threads_for(index_t tasks, index_t elements, int num_threads) noexcept nogil:
    if elements < SERIAL_ELEMENTS or num_threads < 1:
        return 1
    return <int>tasks if tasks < num_threads else num_threads


cdef inline void _inside_columns(const Window2D* g, index_t* lo, index_t* hi) noexcept nogil:
    """[lo, hi): the output columns ow whose whole window row lies inside the image."""
    cdef index_t first = (g.pad_w + g.stride_w - 1) // g.stride_w
    cdef index_t last = g.width + g.pad_w - g.kernel_w   # largest ow*sw with the window inside
    cdef index_t stop = last // g.stride_w + 1 if last >= 0 else 0
    if stop > g.out_w:
        stop = g.out_w
    if first > stop:
        first = stop
    lo[0] = first
    hi[0] = stop


cdef void _im2row_line(const floating* image, floating* rows, const Window2D* g, index_t oh,
                       index_t lo, index_t hi) noexcept nogil:
    """The OW rows of output line oh of one image (image: (C, H, W); rows: (OW, C*KH*KW))."""
    cdef index_t C = g.channels, H = g.height, W = g.width, KH = g.kernel_h, KW = g.kernel_w
    cdef index_t row_length = C * KH * KW
    cdef index_t ow, c, i, j, ih, iw0, iw
    cdef const floating* src
    cdef floating* dst
    for ow in range(g.out_w):
        iw0 = ow * g.stride_w - g.pad_w
        dst = rows + ow * row_length
        for c in range(C):
            for i in range(KH):
                ih = oh * g.stride_h - g.pad_h + i
                if ih < 0 or ih >= H:
                    memset(dst, 0, KW * sizeof(floating))
                else:
                    src = image + (c * H + ih) * W + iw0
                    if lo <= ow < hi:
                        for j in range(KW):
                            dst[j] = src[j]
                    else:
                        for j in range(KW):
                            iw = iw0 + j
                            dst[j] = src[j] if 0 <= iw < W else 0
                dst += KW


cdef void _row2im_plane(const floating* rows, floating* plane, const Window2D* g, index_t c,
                        index_t lo, index_t hi) noexcept nogil:
    """Add channel c's columns of one image's rows (OH*OW, C*KH*KW) into its plane (H, W)."""
    cdef index_t H = g.height, W = g.width, KH = g.kernel_h, KW = g.kernel_w
    cdef index_t row_length = g.channels * KH * KW
    cdef index_t oh, ow, i, j, ih, iw0, iw
    cdef const floating* src
    cdef floating* dst
    for oh in range(g.out_h):
        for ow in range(g.out_w):
            iw0 = ow * g.stride_w - g.pad_w
            src = rows + (oh * g.out_w + ow) * row_length + c * KH * KW
            for i in range(KH):
                ih = oh * g.stride_h - g.pad_h + i
                if 0 <= ih < H:
                    dst = plane + ih * W + iw0
                    if lo <= ow < hi:
                        for j in range(KW):
                            dst[j] += src[j]
                    else:
                        for j in range(KW):
                            iw = iw0 + j
                            if 0 <= iw < W:
                                dst[j] += src[j]
                src += KW


cdef Window2D _window(index_t channels, index_t height, index_t width, kernel_size, stride, padding):
    """The Window2D of already-checked hyper-parameters ((h, w) tuples), dilation 1."""
    cdef Window2D g
    g.channels, g.height, g.width = channels, height, width
    g.kernel_h, g.kernel_w = kernel_size
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = padding
    g.dilation_h = g.dilation_w = 1
    g.out_h = (height + 2 * g.pad_h - g.kernel_h) // g.stride_h + 1
    g.out_w = (width + 2 * g.pad_w - g.kernel_w) // g.stride_w + 1
    return g


def im2row(const floating[:, :, :, ::1] x, kernel_size, stride, padding, int num_threads):
    """rows (N*OH*OW, C*KH*KW) of x (N, C, H, W); arguments already checked."""
    cdef Window2D g = _window(x.shape[1], x.shape[2], x.shape[3], kernel_size, stride, padding)
    cdef index_t N = x.shape[0], OW = g.out_w, image_size = g.channels * g.height * g.width
    cdef index_t row_length = g.channels * g.kernel_h * g.kernel_w
    cdef index_t lines = N * g.out_h, t, lo, hi
    rows_array = np.empty((lines * OW, row_length), dtype=np.float32 if floating is float else np.float64)
    if rows_array.size == 0:
        return rows_array
    cdef floating[:, ::1] rows = rows_array
    cdef const floating* src = &x[0, 0, 0, 0]
    cdef floating* dst = &rows[0, 0]
    cdef int threads = _threads_for(lines, rows_array.size, num_threads)
    _inside_columns(&g, &lo, &hi)
    with nogil:
        for t in prange(lines, schedule='dynamic', num_threads=threads):
            _im2row_line(src + (t // g.out_h) * image_size, dst + t * OW * row_length, &g,
                         t % g.out_h, lo, hi)
    return rows_array


def row2im(const floating[:, ::1] rows, input_shape, kernel_size, stride, padding, int num_threads):
    """x (N, C, H, W) from rows (N*OH*OW, C*KH*KW): overlapping windows summed, padding dropped."""
    N, C, H, W = input_shape
    cdef Window2D g = _window(C, H, W, kernel_size, stride, padding)
    cdef index_t planes = N * C, plane_size = H * W, t, lo, hi
    cdef index_t image_rows = g.out_h * g.out_w * C * g.kernel_h * g.kernel_w
    x_array = np.zeros((N, C, H, W), dtype=np.float32 if floating is float else np.float64)
    if x_array.size == 0:
        return x_array
    cdef floating[:, :, :, ::1] x = x_array
    cdef const floating* src = &rows[0, 0]
    cdef floating* dst = &x[0, 0, 0, 0]
    cdef int threads = _threads_for(planes, N * image_rows, num_threads)
    _inside_columns(&g, &lo, &hi)
    with nogil:
        for t in prange(planes, schedule='dynamic', num_threads=threads):
            _row2im_plane(src + (t // g.channels) * image_rows, dst + t * plane_size, &g,
                          t % g.channels, lo, hi)
    return x_array
