"""Backends, threads and configuration: get/set/use_backend, FASTCONV_BACKEND and
OMP_NUM_THREADS at import, set_num_threads, show_config, and the fallback to the reference
backend when the compiled extension cannot be imported. Import-time behaviour is checked in
fresh interpreters (subprocesses)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastconv as fc
from fastconv import _backend
from conftest import AVAILABLE_BACKENDS

PUBLIC_FUNCTIONS = [
    "conv2d", "conv2d_backward", "conv1d", "conv1d_backward",
    "conv_transpose2d", "conv_transpose2d_backward", "conv_transpose1d", "conv_transpose1d_backward",
    "im2col", "col2im", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
]


def run_python(code, **env):
    """Run code in a fresh interpreter with the given environment variables (None removes one);
    returns (the JSON the code printed on its last stdout line, stderr)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("FASTCONV_BACKEND", "OMP_NUM_THREADS")}
    environment.pop("PYTHONWARNINGS", None)
    for key, value in env.items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=environment, timeout=120, cwd=os.path.dirname(__file__),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


# ----------------------------------------------------------------------------------------------
# get / set / use_backend
# ----------------------------------------------------------------------------------------------

def test_public_names():
    for name in PUBLIC_FUNCTIONS + ["get_backend", "set_backend", "use_backend", "get_num_threads",
                                     "set_num_threads", "show_config"]:
        assert callable(getattr(fc, name)), name
    for name in PUBLIC_FUNCTIONS:
        assert callable(getattr(fc.reference, name)), name
    assert isinstance(fc.__version__, str) and fc.__version__


def test_default_backend_is_cython_when_it_loaded():
    expected = "cython" if "cython" in _backend._modules else "reference"
    out, _ = run_python("import json, fastconv; print(json.dumps(fastconv.get_backend()))")
    assert out == expected


@pytest.mark.parametrize("name", AVAILABLE_BACKENDS)
def test_set_backend(name):
    fc.set_backend(name)
    assert fc.get_backend() == name
    assert fc.show_config()["backend"] == name


def test_use_backend_restores_on_exit_and_on_error():
    fc.set_backend(AVAILABLE_BACKENDS[0])
    with fc.use_backend("reference") as active:
        assert active == "reference" and fc.get_backend() == "reference"
        with fc.use_backend(AVAILABLE_BACKENDS[0]):
            assert fc.get_backend() == AVAILABLE_BACKENDS[0]
        assert fc.get_backend() == "reference"
    assert fc.get_backend() == AVAILABLE_BACKENDS[0]

    with pytest.raises(ZeroDivisionError):
        with fc.use_backend("reference"):
            1 / 0
    assert fc.get_backend() == AVAILABLE_BACKENDS[0]

    with pytest.raises(ValueError):  # a fastconv error inside the block
        with fc.use_backend("reference"):
            fc.conv2d(np.ones((1, 2, 3, 3)), np.ones((1, 3, 2, 2)))
    assert fc.get_backend() == AVAILABLE_BACKENDS[0]


def test_unknown_backend_leaves_the_active_one():
    before = fc.get_backend()
    for bad in ("bogus", "numpy", "CYTHON "):
        with pytest.raises(ValueError, match="backend"):
            fc.set_backend(bad)
        with pytest.raises(ValueError, match="backend"):
            with fc.use_backend(bad):
                pass  # pragma: no cover
        assert fc.get_backend() == before


def test_reference_namespace_is_the_reference_backend():
    """fastconv.reference.f(...) == fastconv.f(..., backend="reference"), bitwise, whatever
    the active backend."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    x1, w1 = x[:, :, 0], w[:, :, 0]
    dout = rng.standard_normal((2, 4, 5, 5))
    calls = {
        "conv2d": (x, w, b),
        "conv2d_backward": (dout, x, w),
        "conv1d": (x1, w1, b),
        "conv1d_backward": (rng.standard_normal((2, 4, 5)), x1, w1),
        "im2col": (x, (3, 2)),
        "col2im": (rng.standard_normal((2, 18, 25)), x.shape, (3, 2)),
        "max_pool2d": (x, 2),
        "max_pool2d_backward": (rng.standard_normal((2, 3, 3, 3)), rng.integers(0, 42, (2, 3, 3, 3)), x.shape),
        "avg_pool2d": (x, 2),
        "avg_pool2d_backward": (rng.standard_normal((2, 3, 3, 3)), x.shape, 2),
        "max_pool1d": (x1, 3, 2, 1, 2, True),
        "max_pool1d_backward": (rng.standard_normal((2, 3, 3)), rng.integers(0, 6, (2, 3, 3)), x1.shape),
        "avg_pool1d": (x1, 3, 2, 1, True, False),
        "avg_pool1d_backward": (rng.standard_normal((2, 3, 4)), x1.shape, 3, 2, 1, True, False),
        "adaptive_avg_pool2d": (x, (4, 5)),
        "adaptive_avg_pool2d_backward": (rng.standard_normal((2, 3, 4, 5)), x.shape),
        # w (C=3, F=4, 3, 2) as a transposed convolution's weight: (2, 4, 9, 7) out, stride 1.
        "conv_transpose2d": (x, w.transpose(1, 0, 2, 3), b),
        "conv_transpose2d_backward": (rng.standard_normal((2, 4, 9, 7)), x, w.transpose(1, 0, 2, 3)),
        "conv_transpose1d": (x1, w1.transpose(1, 0, 2), b, 2, 0, 1),
        "conv_transpose1d_backward": (rng.standard_normal((2, 4, 13)), x1, w1.transpose(1, 0, 2), 2, 0, 1),
    }
    assert sorted(calls) == sorted(PUBLIC_FUNCTIONS)
    for active in AVAILABLE_BACKENDS:
        with fc.use_backend(active):
            for name, args in calls.items():
                got = getattr(fc.reference, name)(*args)
                want = getattr(fc, name)(*args, backend="reference")
                for g, e in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]):
                    np.testing.assert_array_equal(g, e)


# ----------------------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------------------

def test_get_and_set_num_threads():
    fc.set_num_threads(3)
    assert fc.get_num_threads() == 3
    assert fc.show_config()["num_threads"] == 3
    fc.set_num_threads(np.int64(1))
    assert fc.get_num_threads() == 1 and type(fc.get_num_threads()) is int


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_results_are_bitwise_identical_for_every_thread_count(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 4, 12, 11)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((9, 6, 6, 6)).astype(np.float32)

    def everything():
        y, idx = fc.max_pool2d(x, 3, 2, 1, backend=backend)
        return [
            fc.conv2d(x, w, None, 2, 1, backend=backend),
            *fc.conv2d_backward(dout, x, w, 2, 1, backend=backend),
            fc.im2col(x, 3, 1, 1, backend=backend),
            fc.col2im(fc.im2col(x, 3, 1, 1, backend=backend), x.shape, 3, 1, 1, backend=backend),
            y, idx, fc.max_pool2d_backward(y, idx, x.shape, backend=backend),
            fc.avg_pool2d(x, 2, backend=backend),
            fc.avg_pool2d_backward(x[:, :, :6, :5], x.shape, 2, backend=backend),
        ]

    fc.set_num_threads(1)
    serial = everything()
    for n in (2, 3, 7):
        fc.set_num_threads(n)
        for got, want in zip(everything(), serial):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("value, expected", [("3", 3), ("2,1", 2), (" 5 ", 5), ("1", 1)])
def test_omp_num_threads_sets_the_default(value, expected):
    out, _ = run_python("import json, fastconv; print(json.dumps(fastconv.get_num_threads()))",
                        OMP_NUM_THREADS=value)
    assert out == expected


@pytest.mark.parametrize("value", ["abc", "0", "-2"])
def test_bad_omp_num_threads_warns_and_uses_the_cpu_count(value):
    code = """
        import json, os, fastconv
        print(json.dumps([fastconv.get_num_threads(), len(os.sched_getaffinity(0))]))
    """
    (threads, cpus), stderr = run_python(code, OMP_NUM_THREADS=value)
    assert threads == cpus
    assert "OMP_NUM_THREADS" in stderr


def test_default_threads_without_omp_num_threads():
    code = """
        import json, os, fastconv
        print(json.dumps([fastconv.get_num_threads(), len(os.sched_getaffinity(0))]))
    """
    (threads, cpus), _ = run_python(code)
    assert threads == cpus >= 1


# ----------------------------------------------------------------------------------------------
# FASTCONV_BACKEND
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["reference", " Reference "])
def test_fastconv_backend_env_reference(value):
    out, _ = run_python("import json, fastconv; print(json.dumps(fastconv.get_backend()))",
                        FASTCONV_BACKEND=value)
    assert out == "reference"


@pytest.mark.skipif("cython" not in _backend._modules, reason="compiled extension not built")
def test_fastconv_backend_env_cython():
    out, _ = run_python("import json, fastconv; print(json.dumps(fastconv.get_backend()))",
                        FASTCONV_BACKEND="cython")
    assert out == "cython"


def test_fastconv_backend_env_unknown_warns():
    out, stderr = run_python("import json, fastconv; print(json.dumps(fastconv.get_backend()))",
                             FASTCONV_BACKEND="bogus")
    assert out == ("cython" if "cython" in _backend._modules else "reference")
    assert "FASTCONV_BACKEND" in stderr and "bogus" in stderr


# ----------------------------------------------------------------------------------------------
# show_config
# ----------------------------------------------------------------------------------------------

def test_show_config():
    config = fc.show_config()
    for key in ("version", "backend", "openmp", "num_threads", "blas", "compiler"):
        assert key in config, key
    assert config["version"] == fc.__version__
    assert config["backend"] == fc.get_backend()
    assert config["num_threads"] == fc.get_num_threads()
    assert isinstance(config["openmp"], bool)
    json.dumps(config, default=str)  # printable by `python -m fastconv info`
    with fc.use_backend("reference"):
        assert fc.show_config()["backend"] == "reference"


# ----------------------------------------------------------------------------------------------
# Fallback when the compiled extension cannot be imported
# ----------------------------------------------------------------------------------------------

# Makes every compiled module of fastconv unimportable, as on an install whose build failed.
BLOCK_EXTENSION = """
    import importlib.abc, sys

    class BlockCompiledModules(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.startswith("fastconv._ext."):
                raise ImportError(f"simulated missing extension module {name}")
            return None

    sys.meta_path.insert(0, BlockCompiledModules())
"""


def test_fallback_without_the_extension_warns_exactly_once():
    code = BLOCK_EXTENSION + """
    import json, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import numpy as np
        import fastconv
        import fastconv.reference, fastconv._api
        y = fastconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
        y2, _ = fastconv.max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)
        config = fastconv.show_config()
        try:
            fastconv.set_backend("cython")
            refused = False
        except ValueError as exc:
            refused = "cython" in str(exc)
    warned = [(w.category.__name__, str(w.message)) for w in caught]
    print(json.dumps({
        "backend": fastconv.get_backend(), "config_backend": config["backend"],
        "available": config.get("available_backends"), "openmp": config["openmp"],
        "y": y.tolist(), "y2": y2.tolist(), "refused": refused, "warnings": warned,
    }))
    """
    out, _ = run_python(code)
    assert out["backend"] == out["config_backend"] == "reference"
    assert out["openmp"] is False
    assert out["y"] == [[[[4.0, 4.0], [4.0, 4.0]]]]
    assert out["y2"] == [[[[5.0, 7.0], [13.0, 15.0]]]]
    assert out["refused"]
    about_extension = [w for w in out["warnings"] if "extension" in w[1]]
    assert len(about_extension) == 1, out["warnings"]
    assert len(out["warnings"]) == 1, out["warnings"]
    category, message = about_extension[0]
    assert category == "RuntimeWarning" and "reference" in message


def test_fallback_warning_is_shown_by_default_filters():
    """With Python's default warning filters the user sees the warning once on stderr."""
    code = BLOCK_EXTENSION + """
    import json
    import fastconv, fastconv.reference
    import importlib; importlib.reload(fastconv)
    print(json.dumps(fastconv.get_backend()))
    """
    out, stderr = run_python(code)
    assert out == "reference"
    assert stderr.count("could not be imported") == 1, stderr


def test_fallback_with_fastconv_backend_cython_requested():
    code = BLOCK_EXTENSION + """
    import json, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastconv
    print(json.dumps([fastconv.get_backend(), [str(w.message) for w in caught]]))
    """
    (backend, messages), _ = run_python(code, FASTCONV_BACKEND="cython")
    assert backend == "reference"
    assert any("FASTCONV_BACKEND" in m for m in messages)


@pytest.mark.parametrize("backend", AVAILABLE_BACKENDS)
def test_concurrent_calls_from_python_threads(backend):
    """Kernels release the GIL and reuse workspaces: calls from several Python threads at once
    must each get the result of a lone call."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    jobs = []
    for k in range(8):
        x = rng.standard_normal((3 + k % 3, 3, 10 + k, 9)).astype(np.float32 if k % 2 else np.float64)
        w = rng.standard_normal((4, 3, 3, 2)).astype(x.dtype)
        jobs.append((x, w))

    def work(job):
        x, w = job
        y = fc.conv2d(x, w, None, 1, 1, backend=backend)
        dx, dw, db = fc.conv2d_backward(y, x, w, 1, 1, backend=backend)
        p, idx = fc.max_pool2d(x, 2, backend=backend)
        return [y, dx, dw, db, p, idx, fc.im2col(x, 3, backend=backend)]

    fc.set_num_threads(2)
    expected = [work(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            for got, want in zip(pool.map(work, jobs), expected):
                for g, e in zip(got, want):
                    np.testing.assert_array_equal(g, e)


# ----------------------------------------------------------------------------------------------
# How long idle OpenMP threads spin (fastconv._threads.openmp_spin_policy)
# ----------------------------------------------------------------------------------------------

SPIN_PROBE = """
    import json, os, threading, time
    import fastconv
    from fastconv._ext import _openmp_info

    def workers_running():
        task = f"/proc/{os.getpid()}/task"
        me = threading.get_native_id()
        states = []
        for tid in os.listdir(task):
            try:
                with open(f"{task}/{tid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(tid) != me:
                states.append(stat[stat.rindex(")") + 2])
        return "R" in states

    waits = []
    for _ in range(7):
        _openmp_info.threads_that_ran(2)
        start = time.perf_counter()
        while workers_running() and time.perf_counter() - start < 2.0:
            pass
        waits.append(time.perf_counter() - start)
    waits.sort()
    print(json.dumps({"policy": fastconv.show_config()["openmp_wait_policy"],
                      "env": os.environ.get("GOMP_SPINCOUNT"), "wait": waits[3]}))
"""

needs_gnu_openmp = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and "cython" in AVAILABLE_BACKENDS
         and fc.show_config()["openmp"] and "gcc" in (fc.show_config()["compiler"] or "")),
    reason="the spin policy is GNU OpenMP's (libgomp, Linux)",
)


@needs_gnu_openmp
def test_idle_openmp_threads_stop_spinning_soon():
    """fastconv's spin count takes effect (idle workers sleep far sooner than with a long spin
    count the user chose), and GOMP_SPINCOUNT does not leak into the user's environment."""
    ours, _ = run_python(SPIN_PROBE, GOMP_SPINCOUNT=None, OMP_WAIT_POLICY=None)
    assert ours["policy"] == "GOMP_SPINCOUNT=10000 (set by fastconv)"
    assert ours["env"] is None
    theirs, _ = run_python(SPIN_PROBE, GOMP_SPINCOUNT="3000000", OMP_WAIT_POLICY=None)
    assert theirs["policy"] == "environment: GOMP_SPINCOUNT=3000000" and theirs["env"] == "3000000"
    assert ours["wait"] < theirs["wait"] / 4, (ours, theirs)


@needs_gnu_openmp
def test_wait_policy_of_the_user_or_of_an_earlier_runtime_is_kept():
    code = "import json, os, fastconv; print(json.dumps([fastconv.show_config()['openmp_wait_policy'], os.environ.get('GOMP_SPINCOUNT')]))"
    (policy, env), _ = run_python(code, OMP_WAIT_POLICY="passive", GOMP_SPINCOUNT=None)
    assert policy == "environment: OMP_WAIT_POLICY=passive" and env is None
    # A runtime loaded before fastconv keeps its settings when fastconv shares it (a source
    # build links the system's libgomp.so.1); a repaired wheel vendors its own libgomp under
    # another name, which starts fresh and takes fastconv's spin count.
    preload = (
        "import ctypes; ctypes.CDLL('libgomp.so.1'); "
        "import json, os, fastconv; from fastconv._threads import _gnu_openmp_runtimes; "
        "print(json.dumps([fastconv.show_config()['openmp_wait_policy'], "
        "os.environ.get('GOMP_SPINCOUNT'), len(_gnu_openmp_runtimes())]))"
    )
    (policy, env, runtimes), _ = run_python(preload, OMP_WAIT_POLICY=None, GOMP_SPINCOUNT=None)
    assert env is None
    if runtimes == 1:
        assert policy.startswith("runtime defaults (") and "libgomp" in policy, policy
    else:
        assert policy == "GOMP_SPINCOUNT=10000 (set by fastconv)", (policy, runtimes)
