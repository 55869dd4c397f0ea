"""Build the compiled kernels of fastconv.

Environment switches:
  FASTCONV_USE_OPENMP=0       build without OpenMP (kernels run serially; show_config() says so)
  FASTCONV_REQUIRE_OPENMP=1   fail the build when the OpenMP probe fails instead of warning
  FASTCONV_DEBUG_CYTHON=1     bounds-checked, assertion-enabled build for the test suite
  FASTCONV_LIBOMP_PREFIX=DIR  macOS: where libomp is (DIR/include/omp.h, DIR/lib); default: Homebrew's
  FASTCONV_BUILD_JOBS=N       compile N modules at once (default: the CPUs available; `-j` overrides)
"""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
EXT_DIR = Path("src", "fastconv", "_ext")
KERNEL_DIR = EXT_DIR / "kernels"   # the micro-kernels: C sources and their headers
# C sources compiled into an extension beside its .pyx: the micro-kernels, one file per family
# and instruction set. Each file enables its instruction set itself (target pragmas), so every
# build holds every kernel and the CPU's features choose at import (kernels/isa.c). They all go
# into _engine, which owns the instruction-set choice; other modules reach its kernel tables
# through _engine's C functions.
EXTRA_SOURCES = {"_engine": [str(c) for c in sorted(KERNEL_DIR.glob("*.c"))]}

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n == omp_get_max_threads());
        return 0;
    }
    """
)


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags(compiler_type):
    """(compile_args, link_args) that enable OpenMP for this compiler."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang has no OpenMP runtime of its own: it needs libomp. Homebrew's is keg-only
        # (not on the default search paths), so point at it explicitly; the rpath lets the
        # probe and an in-place build run, and delocate bundles the library into a wheel.
        compile_args, link_args = ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
        prefix = _libomp_prefix()
        if prefix:
            compile_args.append(f"-I{prefix}/include")
            link_args = [f"-L{prefix}/lib", "-lomp", f"-Wl,-rpath,{prefix}/lib"]
        return compile_args, link_args
    return ["-fopenmp"], ["-fopenmp"]


def _libomp_prefix():
    """Where libomp lives on macOS: $FASTCONV_LIBOMP_PREFIX, else Homebrew's, else None."""
    candidates = [os.environ.get("FASTCONV_LIBOMP_PREFIX", ""), "/opt/homebrew/opt/libomp", "/usr/local/opt/libomp"]
    for prefix in candidates:
        if prefix and Path(prefix, "include", "omp.h").is_file():
            return prefix
    return None


def _probe_openmp(compiler, compile_args, link_args):
    """Compile, link and run a tiny OpenMP program; return '' on success or the reason."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text(OPENMP_PROBE)
        try:
            objects = compiler.compile([str(src)], output_dir=tmp, extra_postargs=compile_args)
            exe = str(Path(tmp, "probe"))
            compiler.link_executable(objects, exe, extra_postargs=link_args)
            if compiler.compiler_type == "msvc":
                exe += ".exe"
            out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        except Exception as exc:  # compile, link or run failure: all mean "no OpenMP"
            return f"{type(exc).__name__}: {exc}"
        if out.returncode != 0 or out.stdout.strip() != "1":
            return f"probe program returned {out.returncode} with output {out.stdout!r}"
    return ""


def _build_jobs():
    """Modules compiled at once: FASTCONV_BUILD_JOBS, else the CPUs this process may use (pip
    builds with no -j, and the modules are independent)."""
    value = os.environ.get("FASTCONV_BUILD_JOBS", "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class BuildExtWithOpenMP(build_ext):
    """build_ext that adds OpenMP flags after checking that they really work."""

    def build_extensions(self):
        if not self.parallel:
            self.parallel = _build_jobs()
        compile_args, link_args = _openmp_flags(self.compiler.compiler_type)
        use_openmp = os.environ.get("FASTCONV_USE_OPENMP", "1").strip() not in ("0", "false", "no", "off")
        if use_openmp:
            reason = _probe_openmp(self.compiler, compile_args, link_args)
            if reason:
                message = (
                    "fastconv: OpenMP does not work with this compiler "
                    f"({reason}); building WITHOUT OpenMP, kernels will run on one thread."
                )
                if _env_flag("FASTCONV_REQUIRE_OPENMP"):
                    raise RuntimeError(message + " (FASTCONV_REQUIRE_OPENMP=1 makes this an error)")
                banner = "!" * 78
                print(f"\n{banner}\n{message}\n{banner}\n", file=sys.stderr)
                use_openmp = False
        else:
            print("fastconv: FASTCONV_USE_OPENMP=0, building without OpenMP", file=sys.stderr)
        # -ffp-contract=off: a*b + c stays two rounded operations (GCC contracts it into one FMA
        # wherever the target has FMA, e.g. every aarch64 build), so that the kernels compute the
        # same bits as the NumPy twins they are tested against. Micro-kernels that want FMA ask
        # for it with intrinsics.
        opt = ["/O2"] if self.compiler.compiler_type == "msvc" else ["-O3", "-ffp-contract=off"]
        if self.compiler.compiler_type != "msvc" and not _env_flag("FASTCONV_DEBUG_CYTHON"):
            # Python's own CFLAGS often carry -g: debug info would make each module ~5x larger
            # (a 2.7 MB wheel instead of well under 1 MB). A debug build keeps it.
            opt.append("-g0")
        for ext in self.extensions:
            ext.extra_compile_args = opt + (compile_args if use_openmp else [])
            ext.extra_link_args = link_args if use_openmp else []
        super().build_extensions()


def extensions():
    debug = _env_flag("FASTCONV_DEBUG_CYTHON")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": False,
        "initializedcheck": debug,
        "cdivision": True,
        "nonecheck": debug,
        "cpow": True,
    }
    mods = []
    for pyx in sorted(EXT_DIR.glob("*.pyx")):
        mods.append(
            Extension(
                f"fastconv._ext.{pyx.stem}",
                [str(pyx)] + EXTRA_SOURCES.get(pyx.stem, []),
                include_dirs=[np.get_include(), str(EXT_DIR)],
                # A changed header must rebuild the extensions (cythonize only tracks .pyx/.pxd).
                depends=[str(h) for h in sorted(KERNEL_DIR.glob("*.h"))],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
                + ([("CYTHON_WITHOUT_ASSERTIONS", None)] if not debug else []),
            )
        )
    return cythonize(
        mods,
        compiler_directives=directives,
        include_path=["src"],
        annotate=_env_flag("FASTCONV_ANNOTATE"),
        # A debug build must not reuse C files generated without bounds checks.
        force=debug,
        nthreads=_build_jobs() if sys.platform != "win32" else 0,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtWithOpenMP})
