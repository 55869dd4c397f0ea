"""im2col / col2im: per-image nogil kernels and their batch entry points.

Layout is torch.nn.functional.unfold / fold's: row ``c*KH*KW + i*KW + j``, column
``oh*OW + ow`` holds ``x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]`` (0 in the padding).
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.string cimport memcpy, memset

from fastconv._ext._typedefs cimport index_t, Window2D

# Below this many elements per call, starting threads costs more than the copy itself.
cdef index_t SERIAL_ELEMENTS = 1 << 16


cdef inline void valid_columns(const Window2D* g, index_t j, index_t* lo, index_t* hi) noexcept nogil:
    """[lo, hi): the output columns ow whose input column ow*sw - pw + j*dw is inside the image."""
    valid_range(g.width, g.out_w, g.stride_w, j * g.dilation_w - g.pad_w, lo, hi)


cdef void im2col_image(const floating* x, floating* cols, const Window2D* g,
                       index_t col_start, index_t col_stop) noexcept nogil:
    """Columns [col_start, col_stop) of one image's im2col matrix.

    x: the image, (g.channels, H, W). cols: (g.channels*KH*KW, col_stop - col_start), written
    entirely (zeros where a window overlaps the padding).
    """
    cdef index_t ncols = col_stop - col_start
    cdef index_t OW = g.out_w, SW = g.stride_w
    cdef index_t oh_first = col_start // OW, oh_last = (col_stop - 1) // OW
    cdef index_t c, i, j, oh, ow, ow_begin, ow_end, lo, hi, a, z, ih, offset
    cdef const floating* plane
    cdef const floating* src
    cdef floating* dst
    for c in range(g.channels):
        plane = x + c * g.height * g.width
        for i in range(g.kernel_h):
            for j in range(g.kernel_w):
                dst = cols + ((c * g.kernel_h + i) * g.kernel_w + j) * ncols
                valid_columns(g, j, &lo, &hi)
                offset = j * g.dilation_w - g.pad_w
                for oh in range(oh_first, oh_last + 1):
                    ow_begin = col_start - oh * OW if oh == oh_first else 0
                    ow_end = col_stop - oh * OW if oh == oh_last else OW
                    ih = oh * g.stride_h - g.pad_h + i * g.dilation_h
                    if ih < 0 or ih >= g.height:
                        memset(dst, 0, (ow_end - ow_begin) * sizeof(floating))
                        dst += ow_end - ow_begin
                        continue
                    # [ow_begin, a): left padding, [a, z): inside, [z, ow_end): right padding
                    a = lo if lo > ow_begin else ow_begin
                    z = hi if hi < ow_end else ow_end
                    if z < a:
                        z = a = ow_end if a > ow_end else a
                    if a > ow_begin:
                        memset(dst, 0, (a - ow_begin) * sizeof(floating))
                    src = plane + ih * g.width + offset
                    dst += a - ow_begin
                    if SW == 1:
                        memcpy(dst, src + a, (z - a) * sizeof(floating))
                    else:
                        for ow in range(a, z):
                            dst[ow - a] = src[ow * SW]
                    dst += z - a
                    if ow_end > z:
                        memset(dst, 0, (ow_end - z) * sizeof(floating))
                    dst += ow_end - z


cdef void col2im_image(const floating* cols, floating* x, const Window2D* g,
                       index_t col_start, index_t col_stop) noexcept nogil:
    """Add columns [col_start, col_stop) of one image's im2col matrix back into the image.

    cols: (g.channels*KH*KW, col_stop - col_start). x: (g.channels, H, W), accumulated into
    (the caller zeroes it first). Contributions are added in a fixed order (column block,
    kernel row, kernel column, output position), so results never depend on how images,
    channels or blocks are spread over threads.
    """
    cdef index_t ncols = col_stop - col_start
    cdef index_t OW = g.out_w, SW = g.stride_w
    cdef index_t oh_first = col_start // OW, oh_last = (col_stop - 1) // OW
    cdef index_t c, i, j, oh, ow, lo, hi, a, z, ih, offset
    cdef floating* plane
    cdef floating* dst
    cdef const floating* row
    cdef const floating* src
    for c in range(g.channels):
        plane = x + c * g.height * g.width
        for i in range(g.kernel_h):
            for j in range(g.kernel_w):
                row = cols + ((c * g.kernel_h + i) * g.kernel_w + j) * ncols
                valid_columns(g, j, &lo, &hi)
                offset = j * g.dilation_w - g.pad_w
                for oh in range(oh_first, oh_last + 1):
                    ih = oh * g.stride_h - g.pad_h + i * g.dilation_h
                    if ih < 0 or ih >= g.height:
                        continue
                    a = col_start - oh * OW if oh == oh_first else 0
                    z = col_stop - oh * OW if oh == oh_last else OW
                    if a < lo:
                        a = lo
                    if z > hi:
                        z = hi
                    dst = plane + ih * g.width + offset
                    src = row + oh * OW - col_start   # src[ow] is column oh*OW + ow
                    if SW == 1:
                        for ow in range(a, z):
                            dst[ow] += src[ow]
                    else:
                        for ow in range(a, z):
                            dst[ow * SW] += src[ow]


cdef Window2D make_window(index_t channels, index_t height, index_t width, kernel_size, stride,
                          padding, dilation):
    """The Window2D of already-checked hyper-parameters ((h, w) tuples)."""
    cdef Window2D g
    g.channels, g.height, g.width = channels, height, width
    g.kernel_h, g.kernel_w = kernel_size
    g.stride_h, g.stride_w = stride
    g.pad_h, g.pad_w = padding
    g.dilation_h, g.dilation_w = dilation
    g.out_h = (height + 2 * g.pad_h - g.dilation_h * (g.kernel_h - 1) - 1) // g.stride_h + 1
    g.out_w = (width + 2 * g.pad_w - g.dilation_w * (g.kernel_w - 1) - 1) // g.stride_w + 1
    return g


def im2col(const floating[:, :, :, ::1] x, kernel_size, stride, padding, dilation, int num_threads):
    """cols (N, C*KH*KW, OH*OW) of x (N, C, H, W), as torch.nn.functional.unfold.

    Arguments are already checked. Work is split by (image, channel) pairs, whose rows of the
    result are disjoint, so any thread count gives the same result.
    """
    cdef index_t n_images = x.shape[0], C = x.shape[1]
    cdef Window2D g = make_window(1, x.shape[2], x.shape[3], kernel_size, stride, padding, dilation)
    cdef index_t KK = g.kernel_h * g.kernel_w, OHW = g.out_h * g.out_w
    cdef index_t HW = g.height * g.width
    cdef index_t tasks = n_images * C, t
    cols_array = np.empty((n_images, C * KK, OHW), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, ::1] cols = cols_array
    cdef const floating* src = &x[0, 0, 0, 0]
    cdef floating* dst = &cols[0, 0, 0]
    cdef int threads = num_threads
    if tasks * KK * OHW < SERIAL_ELEMENTS or threads < 1:
        threads = 1
    if threads > tasks:
        threads = <int>tasks
    if threads == 1:
        with nogil:
            for t in range(tasks):
                im2col_image(src + t * HW, dst + t * KK * OHW, &g, 0, OHW)
    else:
        with nogil:
            for t in prange(tasks, schedule='static', num_threads=threads):
                im2col_image(src + t * HW, dst + t * KK * OHW, &g, 0, OHW)
    return cols_array


def col2im(const floating[:, :, ::1] cols, input_shape, kernel_size, stride, padding, dilation,
           int num_threads):
    """x (N, C, H, W) from cols (N, C*KH*KW, OH*OW), as torch.nn.functional.fold.

    Overlapping windows are summed and padding contributions dropped. Each (image, channel)
    plane is written by one thread only (no races, no atomics).
    """
    n_images, C, H, W = input_shape
    cdef Window2D g = make_window(1, H, W, kernel_size, stride, padding, dilation)
    cdef index_t KK = g.kernel_h * g.kernel_w, OHW = g.out_h * g.out_w
    cdef index_t HW = g.height * g.width
    cdef index_t tasks = n_images * C, t
    # Zeroed memory from calloc: col2im_image accumulates.
    x_array = np.zeros((n_images, C, H, W), dtype=np.float32 if floating is float else np.float64)
    cdef floating[:, :, :, ::1] x = x_array
    cdef const floating* src = &cols[0, 0, 0]
    cdef floating* dst = &x[0, 0, 0, 0]
    cdef int threads = num_threads
    if tasks * KK * OHW < SERIAL_ELEMENTS or threads < 1:
        threads = 1
    if threads > tasks:
        threads = <int>tasks
    if threads == 1:
        with nogil:
            for t in range(tasks):
                col2im_image(src + t * KK * OHW, dst + t * HW, &g, 0, OHW)
    else:
        with nogil:
            for t in prange(tasks, schedule='static', num_threads=threads):
                col2im_image(src + t * KK * OHW, dst + t * HW, &g, 0, OHW)
    return x_array
