"""show_config(): what this installation of fastconv is running with."""

import platform
import sys

import numpy as np

from fastconv import _backend, _threads
from fastconv._version import __version__


def _extension_info():
    try:
        from fastconv._ext import _depthwise, _openmp_info
    except ImportError as exc:
        return {"extension": f"not loaded ({exc})", "openmp": False, "openmp_version": None, "compiler": None,
                "depthwise_kernels": None}
    return {
        "extension": "loaded",
        "openmp": _openmp_info.openmp_enabled(),
        "openmp_version": _openmp_info.openmp_version() or None,
        "compiler": _openmp_info.compiler(),
        "depthwise_kernels": _depthwise.kernel_isa(),   # instruction set of the direct kernels
    }


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
