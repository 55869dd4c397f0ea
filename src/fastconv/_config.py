"""show_config(): what this installation of fastconv is running with."""

import platform
import sys

import numpy as np

from fastconv import _backend, _threads
from fastconv._version import __version__


def _extension_info():
    try:
        from fastconv._ext import _depthwise, _engine, _openmp_info
    except ImportError as exc:
        return {"extension": f"not loaded ({exc})", "openmp": False, "openmp_version": None,
                "compiler": None, "isa": None, "isa_supported": [], "conv_algorithm": None,
                "depthwise_kernels": None}
    return {
        "extension": "loaded",
        "openmp": _openmp_info.openmp_enabled(),
        "openmp_version": _openmp_info.openmp_version() or None,
        "compiler": _openmp_info.compiler(),
        # The engine's instruction set (kernels/isa.c; FASTCONV_ISA can lower it): the one in
        # use, those this CPU supports, FASTCONV_CONV_ALGORITHM's setting; and the depthwise
        # kernels' own (AVX2 or portable: FASTCONV_ISA=generic lowers both).
        "isa": _engine.isa(),
        "isa_supported": _engine.supported_isas(),
        "conv_algorithm": _engine.get_algorithm(),
        "depthwise_kernels": _depthwise.kernel_isa(),
    }


def conv_algorithm(x_shape, w_shape, stride=1, padding=0, dilation=1, dtype="float32",
                   threads=None):
    """What the compiled backend runs for a convolution of these shapes (conv1d when x_shape
    has 3 axes): a dict with "forward" and "backward" (e.g. "direct/avx512: 14x32 tiles, ..."
    or "im2col+blas"), "isa", and the engine's workspace bytes. Arguments are checked as
    conv2d / conv1d check them; `threads` defaults to get_num_threads()."""
    from fastconv import _validation as check

    nd = len(x_shape) - 2
    fname = "conv_algorithm"
    meta = ((tuple(x_shape), np.dtype(dtype)), (tuple(w_shape), np.dtype(dtype)), None)
    params, _, dtype = check._conv_plan.__wrapped__(fname, nd, False, meta, stride, padding, dilation, 1)
    params = (params[0], tuple(before for before, _ in params[1]), params[2])
    if nd == 1:
        x_shape = (x_shape[0], x_shape[1], 1, x_shape[2])
        w_shape = (w_shape[0], w_shape[1], 1, w_shape[2])
        params = tuple(((first,) + p) for first, p in zip((1, 0, 1), params))
    if _backend.get_backend() != "cython":
        return {"forward": "reference", "backward": "reference", "isa": None}
    from fastconv._ext import _engine

    threads = _threads.get_num_threads() if threads is None else threads
    return _engine.algorithm(tuple(x_shape), tuple(w_shape), *params, dtype, threads)


def fma_peak_gflops(isa=None, dtype="float32", threads=1, seconds=0.1):
    """GFLOP/s of independent FMAs on `threads` threads with the kernels of `isa` (default:
    the one in use): the ceiling the convolution engine's rates are fractions of."""
    from fastconv._ext import _engine

    return _engine.fma_peak_gflops(_engine.isa() if isa is None else isa, dtype, threads, seconds)


def _blas_info():
    """The BLAS libraries loaded in this process (SciPy's is the one the kernels call)."""
    try:
        from threadpoolctl import threadpool_info
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so that it is listed)
    except ImportError as exc:
        return [{"error": str(exc)}]
    return [
        {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]


def show_config():
    """A dict describing this installation: version, backend, OpenMP, threads, BLAS, compiler."""
    config = {
        "version": __version__,
        "backend": _backend.get_backend(),
        "available_backends": [b for b in _backend.BACKENDS if b in _backend._modules],
    }
    config.update(_extension_info())
    config.update(
        {
            "num_threads": _threads.get_num_threads(),
            "openmp_wait_policy": _threads.wait_policy if config["openmp"] else None,
            "blas": _blas_info(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "platform": platform.platform(),
            "machine": platform.machine(),
        }
    )
    return config
