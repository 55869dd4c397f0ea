#!/usr/bin/env bash
# Memory-safety checks of the compiled kernels. Each check builds the extension in a throwaway
# copy of the source tree (never touching the checkout or any installed fastconv) and imports
# it through PYTHONPATH:
#
#   debug     FASTCONV_DEBUG_CYTHON=1 (bounds checks, initialisation checks, assertions);
#             runs the kernel-facing part of the test suite.
#   asan      AddressSanitizer build (-fsanitize=address); the Python interpreter is not
#             instrumented, libasan is preloaded. Runs the odd-shape driver below, an in-process
#             fuzz run and the kernel-facing tests (fuzz workers inherit the sanitizer).
#   valgrind  valgrind memcheck on the odd-shape driver (release build, --quick sizes); only
#             errors whose stack passes through fastconv's own code count.
#
# Usage:  PYTHON=/path/to/python tools/memcheck.sh [debug] [asan] [valgrind]   (default: all)
# Needs:  that python with numpy, scipy, Cython, setuptools, pytest, hypothesis and torch (the
#         test extras); gcc with libasan; valgrind for the last check.
# Exit status 0 only when every requested check is clean. Takes ~10 min on 2 busy cores.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
checks=("$@")
[ ${#checks[@]} -eq 0 ] && checks=(debug asan valgrind)
work=$(mktemp -d "${TMPDIR:-/tmp}/fastconv-memcheck.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Tests that drive the compiled kernels (the rest of the suite exercises Python layers above).
KERNEL_TESTS="tests/test_cython_conv.py tests/test_conv_groups_transpose.py tests/test_cython_pool.py
  tests/test_pool_options.py tests/test_layouts.py tests/test_validation.py tests/test_fuzz.py
  tests/test_size_limits.py tests/test_numerics.py tests/test_concurrency.py tests/test_dense_optim.py
  tests/test_layer_functions.py tests/test_dlfs.py tests/test_cs231n.py tests/test_engine.py
  tests/test_channels_last.py"


log() { printf '\n=== memcheck: %s ===\n' "$*"; }

# copy_and_build NAME [ENV=VALUE ...]: a fresh copy of the tree in $work/NAME, built in place.
copy_and_build() {
    local name=$1; shift
    local dest="$work/$name"
    mkdir -p "$dest"
    # Tracked and new (not ignored) files: generated C and built modules stay behind.
    (cd "$repo" && git ls-files -co --exclude-standard -z -- src setup.py pyproject.toml tests tools \
        | xargs -0 tar -cf - ) | tar -xf - -C "$dest"
    log "building $name ($*)"
    local start=$SECONDS
    (cd "$dest" && env "$@" "$PYTHON" setup.py -q build_ext --inplace >"$dest/build.log" 2>&1) || {
        tail -30 "$dest/build.log"; echo "memcheck: $name build failed"; return 1; }
    echo "built in $((SECONDS - start)) s"
    # Make sure the copy, not an installed fastconv, is what gets imported (an ASan build
    # only loads with the sanitizer runtime preloaded).
    LD_PRELOAD="${PRELOAD:-}" PYTHONPATH="$dest/src" "$PYTHON" -c "import fastconv, sys; \
        sys.exit(0 if fastconv.__file__.startswith('$dest') and fastconv.get_backend() == 'cython' \
        else 'memcheck: imported ' + fastconv.__file__ + ' on ' + fastconv.get_backend())"
}

write_driver() {
    cat >"$work/driver.py" <<'EOF'
"""Every compiled kernel at odd shapes, both dtypes, 1 and 2 threads, checked against the
reference backend; the convolutions once per instruction set of the engine (valgrind runs no
AVX-512: under it the CPU reports AVX2 at most) and once on im2col + BLAS. --quick: fewer and
smaller shapes (for valgrind)."""
import itertools
import sys

import numpy as np

import fastconv as fc
from fastconv import _dropin_api as dropin
from fastconv._ext import _engine

quick = "--quick" in sys.argv
rng = np.random.default_rng(0)
count = 0


def check(got, want, exact=False):
    got, want = ([np.asarray(v) for v in (r if isinstance(r, tuple) else (r,))] for r in (got, want))
    # softmax_cross_entropy's loss is a float: it gets the tolerance of the arrays beside it.
    tol = 1e-4 if any(g.dtype == np.float32 for g in got) else 1e-10
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        if exact or g.dtype.kind in "iub":
            assert np.array_equal(g, w, equal_nan=g.dtype.kind == "f")
        else:
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol * (1 + np.nanmax(np.abs(w), initial=0)))


def run(name, *args, exact=False, **kwargs):
    global count
    got = getattr(fc, name)(*args, **kwargs, backend="cython")
    want = getattr(fc, name)(*args, **kwargs, backend="reference")
    check(got, want, exact)
    count += 1


# (N, C, H, W, F, KH, KW, stride, padding, dilation): pointwise, 1-row, tall, wide, batch mode
# (N >= 8), strides larger than the kernel, dilation, padding larger than the kernel.
conv_shapes = [
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1), (2, 3, 5, 7, 4, 1, 1, 1, 0, 1), (1, 2, 1, 9, 3, 1, 3, 1, 1, 1),
    (3, 2, 9, 1, 2, 3, 1, (2, 1), (1, 0), 1), (2, 3, 7, 6, 5, 3, 2, (2, 3), (1, 2), (2, 1)),
    (1, 1, 4, 4, 1, 4, 4, 5, 3, 1), (9, 2, 6, 5, 3, 3, 3, 1, 1, 1), (8, 3, 5, 5, 2, 2, 2, 3, 0, 2),
    (1, 4, 17, 19, 3, 3, 3, 1, 1, 1), (2, 16, 23, 21, 8, 3, 3, 1, 1, 1),
]
if not quick:
    conv_shapes += [(3, 8, 45, 37, 16, 5, 3, (1, 2), (2, 1), 1), (16, 4, 20, 20, 6, 3, 3, 2, 1, 1),
                    (1, 32, 64, 64, 8, 1, 1, 1, 0, 1), (10, 3, 32, 31, 4, 3, 3, 1, 1, 2)]
pool_shapes = [  # (N, C, H, W, kernel, stride, padding)
    (1, 1, 1, 1, 1, None, 0), (2, 3, 5, 7, 2, None, 0), (1, 2, 7, 5, 3, 2, 1), (2, 1, 9, 11, (3, 2), (1, 2), (1, 1)),
    (1, 1, 4, 13, (1, 5), (3, 1), (0, 2)), (3, 2, 8, 8, 2, 1, 1), (1, 3, 10, 9, 4, 3, 2),
    (2, 2, 6, 33, 3, 2, 1), (1, 1, 3, 40, (2, 7), (1, 2), (1, 3)),
]
if not quick:
    pool_shapes += [(4, 16, 56, 57, 3, 2, 1), (2, 8, 64, 64, 2, None, 0), (1, 32, 33, 35, (3, 5), 1, (1, 2))]
# Huge hyper-parameters over tiny inputs: index products near and beyond 2**31 and 2**32.
H31 = 2**31 - 1
huge_pool = [(1, 2, 3, 4, (H31, 3), (1, 2), (H31 // 2, 1)), (2, 1, 2, 4, (3, 2**20 + 1), (2, 2), (1, 2**19)),
             (1, 1, 4, 3, (2**30, H31), (H31, 1), (2**29, 2**30 - 1))]
# (N, C, H, W, kernel, stride, padding, dilation): ceil_mode windows reaching past the padding,
# dilations larger than the input, SIMD interiors (stride 1 and 2) and scalar edges.
option_shapes = [
    (1, 1, 1, 1, 1, 1, 0, 1), (2, 3, 5, 7, 2, 3, 1, 2), (1, 2, 7, 5, 3, 2, 1, (2, 1)),
    (2, 1, 9, 11, (3, 2), (1, 2), (1, 1), (1, 3)), (1, 1, 4, 13, (1, 5), (3, 2), (0, 2), 1),
    (3, 2, 8, 8, 4, 3, 2, 2), (1, 3, 2, 2, 3, 2, 0, 1),
]
if not quick:
    option_shapes += [(4, 16, 56, 57, 3, 2, 1, 2), (2, 8, 33, 64, 2, 2, 1, (1, 2)), (1, 32, 30, 35, (3, 5), 1, (1, 2), 1)]
# Dilation and stride of 2**31 - 1 with ceil_mode over tiny inputs (one output row, whose second
# tap is far outside), and ceil_mode's second window a 2**30 stride after the first.
huge_options = [(1, 2, 3, 9, 2, (H31, 1), (0, 1), (H31, 2)), (1, 2, 3, 3, (3, 2**31 - 2), (1, 2**30), (1, 2**30 - 1), 1)]
huge_conv = [(1, 2, 3, 4, 2, 2, 2, (1, H31), (2**30, 2**30), (H31, H31)), (2, 1, 2, 2, 1, 3, 1, H31, (2**30 + 2, 0), (2**30 + 1, 1))]
# Grouped, depthwise (direct kernels: padded window, clipped path, strides, multipliers) and
# transposed convolutions: (function, x shape, w shape, hyper-parameters).
group_cases = [
    ("conv2d", (2, 4, 7, 6), (6, 2, 3, 2), dict(padding="same", groups=2)),
    ("conv2d", (9, 6, 9, 8), (12, 1, 3, 3), dict(padding=1, groups=6)),
    ("conv2d", (1, 3, 17, 16), (3, 1, 5, 5), dict(stride=2, padding=2, dilation=2, groups=3)),
    ("conv2d", (2, 2, 4, 5), (4, 1, 3, 3), dict(padding=30, groups=2)),
    ("conv2d", (2, 8, 5, 5), (8, 2, 1, 1), dict(groups=4)),
    ("conv1d", (3, 4, 20), (4, 1, 4), dict(padding="same", groups=4)),
    ("conv_transpose2d", (2, 4, 5, 4), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
    ("conv_transpose2d", (9, 3, 6, 6), (3, 1, 3, 3), dict(padding=1, groups=3)),
    ("conv_transpose1d", (2, 2, 7), (2, 3, 4), dict(stride=3, output_padding=2, dilation=2)),
]
if not quick:
    group_cases += [("conv2d", (10, 8, 20, 21), (8, 1, 3, 3), dict(padding=1, groups=8)),
                    ("conv2d", (3, 6, 24, 24), (6, 2, 3, 3), dict(stride=2, groups=3)),
                    ("conv_transpose2d", (9, 8, 14, 14), (8, 4, 2, 2), dict(stride=2)),
                    ("conv_transpose2d", (2, 6, 20, 20), (6, 1, 3, 3), dict(padding=1, groups=6))]
huge_groups = [  # near 2**31: compiled only (the reference materialises the padding)
    ("conv2d", (2, 3, 1, 5), (6, 1, 2, 1), dict(stride=(H31, 1), padding=(H31, 0), dilation=(H31, 1), groups=3)),
    ("conv_transpose2d", (2, 3, 2, 4), (3, 2, 2, 1), dict(stride=(H31 - 1, 1), padding=(H31 - 1, 0), dilation=(H31, 1))),
    ("conv_transpose2d", (2, 3, 2, 4), (3, 1, 2, 1),
     dict(stride=(H31 - 1, 1), padding=(H31 - 1, 0), dilation=(H31, 1), groups=3)),
]

# (engine instruction set, algorithm): the engine wherever it can run on each instruction set,
# then im2col + BLAS alone.
conv_paths = [(isa, "direct") for isa in _engine.supported_isas()] + [(_engine.isa(), "im2col")]
best_isa = _engine.isa()
for dtype, threads, (isa, algorithm) in itertools.product((np.float32, np.float64), (1, 2), conv_paths):
    fc.set_num_threads(threads)
    _engine._set_isa(isa)
    _engine.set_algorithm(algorithm)
    for n, c, h, w, f, kh, kw, s, p, d in conv_shapes + huge_conv:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        wt = rng.standard_normal((f, c, kh, kw)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype)
        try:
            y = fc.conv2d(x, wt, b, s, p, d, backend="cython")
        except ValueError:
            continue
        if max(np.atleast_1d(p)) < 2**20:  # the reference materialises the padding
            run("conv2d", x, wt, b, s, p, d)
            run("conv2d_backward", rng.standard_normal(y.shape).astype(dtype), x, wt, s, p, d)
            run("im2col", x, (kh, kw), s, p, d, exact=True)
            cols = fc.im2col(x, (kh, kw), s, p, d)
            run("col2im", rng.standard_normal(cols.shape).astype(dtype), x.shape, (kh, kw), s, p, d)
            run("conv1d", x[:, :, 0], wt[:, :, 0], b, np.atleast_1d(s)[-1], np.atleast_1d(p)[-1], np.atleast_1d(d)[-1])
        else:  # compiled only: exercise the index arithmetic
            fc.conv2d_backward(y, x, wt, s, p, d, backend="cython")
            cols = fc.im2col(x, (kh, kw), s, p, d, backend="cython")
            fc.col2im(cols, x.shape, (kh, kw), s, p, d, backend="cython")
            count += 4
    # Grouped, transposed and depthwise convolutions: again under each engine setting (the
    # ungrouped ones reach the engine; the depthwise kernels follow FASTCONV_ISA=generic only).
    for name, x_shape, w_shape, hyper in group_cases + huge_groups:
        filters = w_shape[1] * hyper.get("groups", 1) if "transpose" in name else w_shape[0]
        x, wt, b = (rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, (filters,)))
        y = getattr(fc, name)(x, wt, b, **hyper, backend="cython")
        dout = rng.standard_normal(y.shape).astype(dtype)
        if (name, x_shape, w_shape, hyper) in huge_groups:
            getattr(fc, name + "_backward")(dout, x, wt, **hyper, backend="cython")
            count += 2
            continue
        run(name, x, wt, b, **hyper)
        run(name + "_backward", dout, x, wt, **hyper)
    _engine._set_isa(best_isa)
    _engine.set_algorithm("auto")
    if (isa, algorithm) != conv_paths[0]:
        continue  # pooling does not depend on the engine: once per dtype and thread count
    for n, c, h, w, k, s, p in pool_shapes + huge_pool:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        if dtype == np.float64:
            x.reshape(-1)[::5] = np.nan  # NaN wins every window it is in
        y, idx = fc.max_pool2d(x, k, s, p, backend="cython")
        dout = rng.standard_normal(y.shape).astype(dtype)
        if max(np.atleast_1d(p)) < 2**16:
            run("max_pool2d", x, k, s, p, exact=True)
            run("max_pool2d_backward", dout, idx, x.shape)
            run("avg_pool2d", x, k, s, p)
            run("avg_pool2d_backward", dout, x.shape, k, s, p)
        else:
            fc.max_pool2d_backward(dout, idx, x.shape, backend="cython")
            # avg pooling over ~2**31 kernel columns is slow (a loop over every column); only
            # under the quick driver skip it.
            if not quick and max(np.atleast_1d(k)) <= 2**21:
                fc.avg_pool2d(x, k, s, p, backend="cython")
                fc.avg_pool2d_backward(y, x.shape, k, s, p, backend="cython")
            count += 1
    # Pooling options (dilation, ceil_mode: windows reaching past the padding, count_include_pad,
    # divisor_override), 1-D pooling and adaptive average pooling.
    for n, c, h, w, k, s, p, d in option_shapes:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        if dtype == np.float64:
            x.reshape(-1)[::7] = np.nan
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (np.broadcast_to(v, 2) for v in (k, s, p, d))
        for ceil_mode in (False, True):
            try:
                y, idx = fc.max_pool2d(x, k, s, p, d, ceil_mode, backend="cython")
                run("max_pool2d", x, k, s, p, d, ceil_mode, exact=True)
                run("max_pool2d_backward", rng.standard_normal(y.shape).astype(dtype), idx, x.shape)
                y1, idx1 = fc.max_pool1d(x[:, :, 0], kw, sw, pw, dw, ceil_mode, backend="cython")
                run("max_pool1d", x[:, :, 0], kw, sw, pw, dw, ceil_mode, exact=True)
                run("max_pool1d_backward", rng.standard_normal(y1.shape).astype(dtype), idx1, y1.shape[:2] + (w,))
            except ValueError:  # refused geometry (a dilated window of padding alone, or no
                pass            # window without ceil_mode): the tests check the refusals
            xf = np.nan_to_num(x)
            for count_include_pad, divisor in ((True, None), (False, None), (True, 3)):
                try:
                    a = fc.avg_pool2d(xf, k, s, p, ceil_mode, count_include_pad, divisor, backend="cython")
                except ValueError:
                    continue
                run("avg_pool2d", xf, k, s, p, ceil_mode, count_include_pad, divisor)
                run("avg_pool2d_backward", rng.standard_normal(a.shape).astype(dtype), x.shape, k, s, p, ceil_mode,
                    count_include_pad, divisor)
                a1 = fc.avg_pool1d(xf[:, :, 0], kw, sw, pw, ceil_mode, count_include_pad, backend="cython")
                run("avg_pool1d", xf[:, :, 0], kw, sw, pw, ceil_mode, count_include_pad)
                run("avg_pool1d_backward", rng.standard_normal(a1.shape).astype(dtype), a1.shape[:2] + (w,), kw, sw,
                    pw, ceil_mode, count_include_pad)
        xf = np.nan_to_num(x)
        for out in ((1, 1), (3, 2), (h + 3, max(w - 1, 1)), (2 * h + 1, 3 * w)):
            run("adaptive_avg_pool2d", xf, out)
            run("adaptive_avg_pool2d_backward", rng.standard_normal((n, c) + out).astype(dtype), x.shape)
    for n, c, h, w, k, s, p, d in huge_options:  # compiled only: the index arithmetic
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        y, idx = fc.max_pool2d(x, k, s, p, d, True, backend="cython")
        fc.max_pool2d_backward(y, idx, x.shape, backend="cython")
        a = fc.avg_pool2d(x, k, s, p, True, False, H31, backend="cython")
        fc.avg_pool2d_backward(a, x.shape, k, s, p, True, False, H31, backend="cython")
        count += 4
    # Channels-last (data_format="NHWC") convolutions: im2col + GEMM (pointwise, grouped; a
    # small batch's bands, a large batch's chunks), the depthwise direct kernels; and pooling.
    nhwc = {"data_format": "NHWC"}
    for n, c, h, w, f, kh, kw, s, p, d in conv_shapes + huge_conv:
        x = rng.standard_normal((n, h, w, c)).astype(dtype)
        wt = rng.standard_normal((kh, kw, c, f)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype)
        try:
            y = fc.conv2d(x, wt, b, s, p, d, **nhwc, backend="cython")
        except ValueError:
            continue
        dout = rng.standard_normal(y.shape).astype(dtype)
        if max(np.atleast_1d(p)) < 2**20:
            run("conv2d", x, wt, b, s, p, d, **nhwc)
            run("conv2d_backward", dout, x, wt, s, p, d, **nhwc)
        else:
            fc.conv2d_backward(dout, x, wt, s, p, d, **nhwc, backend="cython")
            count += 2
    for name, x_shape, w_shape, hyper in group_cases + huge_groups:
        if name != "conv2d":
            continue
        n, c, h, w = x_shape
        f, cg, kh, kw = w_shape
        x, wt = rng.standard_normal((n, h, w, c)).astype(dtype), rng.standard_normal((kh, kw, cg, f)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype)
        y = fc.conv2d(x, wt, b, **hyper, **nhwc, backend="cython")
        dout = rng.standard_normal(y.shape).astype(dtype)
        if (name, x_shape, w_shape, hyper) in huge_groups:
            fc.conv2d_backward(dout, x, wt, **hyper, **nhwc, backend="cython")
            count += 2
            continue
        run("conv2d", x, wt, b, **hyper, **nhwc)
        run("conv2d_backward", dout, x, wt, **hyper, **nhwc)
    for n, c, h, w, k, s, p, d in [shape + (1,) for shape in pool_shapes + huge_pool] + option_shapes + huge_options:
        x = rng.standard_normal((n, h, w, c)).astype(dtype)
        if dtype == np.float64:
            x.reshape(-1)[::5] = np.nan
        xf = np.nan_to_num(x)
        compiled_only = max(np.atleast_1d(p)) >= 2**16 or max(np.atleast_1d(d)) >= 2**16
        # (avg pooling over ~2**31 kernel columns loops over every column: not under --quick)
        with_avg = not compiled_only or (not quick and max(np.atleast_1d(k)) <= 2**21)
        for ceil_mode in (False, True):
            try:
                y, idx = fc.max_pool2d(x, k, s, p, d, ceil_mode, **nhwc, backend="cython")
                a = fc.avg_pool2d(xf, k, s, p, ceil_mode, False, 3, **nhwc, backend="cython") if with_avg else None
            except ValueError:  # refused geometry, as above
                continue
            dout = rng.standard_normal(y.shape).astype(dtype)
            if compiled_only:
                fc.max_pool2d_backward(dout, idx, x.shape, **nhwc, backend="cython")
                if with_avg:
                    fc.avg_pool2d_backward(a, x.shape, k, s, p, ceil_mode, False, 3, **nhwc, backend="cython")
                count += 2
                continue
            run("max_pool2d", x, k, s, p, d, ceil_mode, exact=True, **nhwc)
            run("max_pool2d_backward", dout, idx, x.shape, **nhwc)
            run("avg_pool2d", xf, k, s, p, ceil_mode, False, 3, **nhwc)
            run("avg_pool2d_backward", rng.standard_normal(a.shape).astype(dtype), x.shape, k, s, p, ceil_mode,
                False, 3, **nhwc)
    # Layer functions: planar and channels-last batch norm (8-lane tails, several tasks per
    # channel, one value per row), elementwise kernels around the block size, softmax rows.
    for shape, data_format in [((2, 1), "NCHW"), ((3, 2, 7), "NCHW"), ((2, 3, 5, 9), "NCHW"),
                               ((9, 1, 1, 3), "NHWC"), ((2, 5, 7, 3), "NHWC"), ((1, 7, 4100), "NCHW"),
                               ((5000, 7), "NHWC")] + ([] if quick else [((8, 4, 33, 35), "NCHW"),
                                                                        ((8, 33, 35, 4), "NHWC")]):
        x = rng.standard_normal(shape).astype(dtype)
        c = shape[-1] if data_format == "NHWC" else shape[1]
        w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
        rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
        for training in (True, False):
            run("batch_norm", x, w, b, rm.copy(), rv.copy(), training, data_format=data_format)
            _, mean, invstd = fc.batch_norm(x, w, b, rm.copy(), rv.copy(), training, data_format=data_format)
            run("batch_norm_backward", rng.standard_normal(shape).astype(dtype), x, w, mean, invstd, training,
                data_format=data_format)
    for size in (1, 7, 2**14 - 1, 2**14 + 3, 2**16 + 5) + (() if quick else (3 * 2**16 + 1,)):
        x = rng.standard_normal(size).astype(dtype)
        run("relu", x, exact=True)
        run("relu_backward", rng.standard_normal(size).astype(dtype), x, exact=True)
        u = rng.random(size)
        kernels = {name: fc._backend.kernels(name) for name in ("cython", "reference")}
        check(kernels["cython"].dropout(x, u, 0.3, 1 / 0.7), kernels["reference"].dropout(x, u, 0.3, 1 / 0.7), True)
        keep = u > 0.5
        check(kernels["cython"].dropout_backward(x, keep, 2.0), kernels["reference"].dropout_backward(x, keep, 2.0), True)
        count += 2
    for n, k in [(1, 1), (3, 7), (9, 2)] + ([] if quick else [(600, 33)]):
        logits = (4 * rng.standard_normal((n, k))).astype(dtype)
        run("softmax_cross_entropy", logits, rng.integers(0, k, n))
        run("softmax_cross_entropy", logits, rng.dirichlet(np.ones(k), n).astype(dtype))
    # The drop-ins' kernels (fastconv._dropin_api): the book's patch matrix (windows past every
    # edge, strides larger than the window), (in, out) affine GEMMs, group and layer norm
    # (8-lane tails, planes of one element, several tasks), the hinge loss.
    def run_dropin(name, *args):
        global count
        check(getattr(dropin, name)(*args, backend="cython"), getattr(dropin, name)(*args, backend="reference"))
        count += 1

    for n, c, h, w, fh, fw, s, p in [(1, 1, 1, 1, 1, 1, 1, 0), (2, 3, 7, 5, 3, 2, 2, 1), (1, 2, 4, 9, 2, 5, (1, 3), (0, 2)),
                                     (3, 1, 5, 5, 5, 5, 1, 2), (2, 4, 17, 13, 5, 3, 3, 4), (1, 1, 3, 8, 1, 1, 4, 0)] \
            + ([] if quick else [(8, 3, 33, 31, 5, 5, 1, 2)]):
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        rows = dropin.im2row(x, fh, fw, s, p, backend="cython")
        run_dropin("im2row", x, fh, fw, s, p)
        run_dropin("row2im", rng.standard_normal(rows.shape).astype(dtype), x.shape, fh, fw, s, p)
    for m, k, n in [(1, 1, 1), (3, 7, 5), (17, 129, 10)] + ([] if quick else [(100, 4320, 100), (2, 9000, 3)]):
        x, w = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
        run_dropin("affine", x, w, rng.standard_normal(n).astype(dtype))
        run_dropin("affine_backward", rng.standard_normal((m, n)).astype(dtype), x, w)
    for shape, groups in [((1, 1), 1), ((3, 6, 5, 7), 3), ((2, 4, 1, 1), 4), ((5, 9), 1), ((2, 12, 9, 11), 6),
                          ((1, 7, 4100), 1)] + ([] if quick else [((16, 32, 16, 16), 8), ((4000, 33), 1)]):
        x = rng.standard_normal(shape).astype(dtype)
        weight, bias = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
        run_dropin("group_norm", x, weight, bias, groups)
        _, mean, invstd = dropin.group_norm(x, None, None, groups, backend="cython")
        run_dropin("group_norm_backward", rng.standard_normal(shape).astype(dtype), x, weight, mean, invstd, groups)
    for n, k in [(1, 1), (3, 7), (9, 2)] + ([] if quick else [(600, 33)]):
        run_dropin("svm_loss", (4 * rng.standard_normal((n, k))).astype(dtype), rng.integers(0, k, n))
print(f"driver: {count} kernel calls checked")
EOF
}

status=0
for check in "${checks[@]}"; do
    start=$SECONDS
    case $check in
    debug)
        copy_and_build debug FASTCONV_DEBUG_CYTHON=1
        write_driver
        log "debug build: driver and kernel tests"
        (cd "$work/debug" && PYTHONPATH="$work/debug/src" "$PYTHON" "$work/driver.py" \
            && PYTHONPATH="$work/debug/src" "$PYTHON" -m pytest -q -p no:cacheprovider $KERNEL_TESTS) || status=1
        ;;
    asan)
        libasan=$(gcc -print-file-name=libasan.so)
        # Leak detection would report the interpreter's own never-freed objects; enormous
        # requests (a fuzz case asking for terabytes) return NULL -> MemoryError, not an abort.
        export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=4096:abort_on_error=1"
        PRELOAD=$libasan copy_and_build asan CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" LDFLAGS="-fsanitize=address"
        write_driver
        log "asan: driver, in-process fuzz, kernel tests"
        (cd "$work/asan" \
            && LD_PRELOAD="$libasan" PYTHONPATH="$work/asan/src" "$PYTHON" "$work/driver.py" \
            && LD_PRELOAD="$libasan" PYTHONPATH="$work/asan/src" "$PYTHON" tools/fuzz.py --in-process \
                --cases 4000 --seed 1 \
                2> >(grep -v "AddressSanitizer failed to allocate" >&2) \
            && LD_PRELOAD="$libasan" PYTHONPATH="$work/asan/src" "$PYTHON" -m pytest -q -p no:cacheprovider \
                $KERNEL_TESTS) || status=1
        unset ASAN_OPTIONS
        ;;
    valgrind)
        if ! command -v valgrind >/dev/null; then
            echo "memcheck: valgrind not found"; status=1; continue
        fi
        copy_and_build release
        write_driver
        log "valgrind memcheck: driver --quick"
        # PYTHONMALLOC=malloc: pymalloc's arenas confuse memcheck. Passive OpenMP waits keep
        # the spinning threads from crawling under valgrind's serialised scheduler.
        PYTHONMALLOC=malloc OMP_WAIT_POLICY=passive PYTHONPATH="$work/release/src" \
            valgrind --tool=memcheck --error-limit=no --num-callers=40 --log-file="$work/valgrind.log" \
            "$PYTHON" "$work/driver.py" --quick || status=1
        # Only errors whose stack passes through fastconv's extension modules are ours (NumPy,
        # OpenBLAS and CPython have known benign reports of their own).
        ours=$("$PYTHON" - "$work/valgrind.log" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"\n==\d+== \n", text)
ours = [b for b in blocks if re.search(r"(Invalid (read|write)|uninitialised|Mismatched free|Invalid free)", b)
        and re.search(r"fastconv/_ext/|_conv\.c|_pool\.c|_im2col\.c|_engine\.c|conv_tiles__|depthwise|_batchnorm\.c|_elementwise\.c|_loss\.c|_im2row\.c|_groupnorm\.c|_dense\.c", b)]
for b in ours[:5]:
    print(b)
print(f"valgrind: {len(ours)} error(s) in fastconv code", file=sys.stderr)
EOF
)
        grep -E "ERROR SUMMARY" "$work/valgrind.log" | tail -1
        if [ -n "$ours" ]; then echo "$ours"; status=1; fi
        ;;
    *)
        echo "memcheck: unknown check '$check' (debug, asan, valgrind)"; status=1
        ;;
    esac
    echo "memcheck: $check took $((SECONDS - start)) s"
done
[ $status -eq 0 ] && echo "memcheck: all clean" || echo "memcheck: FAILED"
exit $status
