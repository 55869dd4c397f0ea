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
KERNEL_TESTS="tests/test_cython_conv.py tests/test_cython_pool.py tests/test_layouts.py
  tests/test_validation.py tests/test_fuzz.py tests/test_size_limits.py tests/test_numerics.py
  tests/test_concurrency.py tests/test_engine.py"


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
from fastconv._ext import _engine

quick = "--quick" in sys.argv
rng = np.random.default_rng(0)
count = 0


def check(got, want, exact=False):
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        if exact or g.dtype.kind in "iu":
            assert np.array_equal(g, w, equal_nan=g.dtype.kind == "f")
        else:
            tol = 1e-4 if g.dtype == np.float32 else 1e-10
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
huge_conv = [(1, 2, 3, 4, 2, 2, 2, (1, H31), (2**30, 2**30), (H31, H31)), (2, 1, 2, 2, 1, 3, 1, H31, (2**30 + 2, 0), (2**30 + 1, 1))]

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
        and re.search(r"fastconv/_ext/|_conv\.c|_pool\.c|_im2col\.c|_engine\.c|conv_tiles__", b)]
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
