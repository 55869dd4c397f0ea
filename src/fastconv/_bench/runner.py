"""The benchmark run: options, thread control, the measurement loop, and output.

fastconv and PyTorch are timed side by side, round-robin, in one process; the NumPy baseline
is timed after them, in a phase of its own, so that its spinning OpenBLAS threads never slow
them down (see fastconv._bench.timing). Thread counts are set for all three at once: fastconv
through set_num_threads, PyTorch through torch.set_num_threads, the BLAS (which the NumPy
baseline and fastconv.nn's Linear layers run on) through threadpoolctl.
"""

import contextlib
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

import fastconv
from fastconv import _backend
from fastconv._bench import impls as implementations
from fastconv._bench import limits as machine_limits
from fastconv._bench import memory as memory_probe
from fastconv._bench import breakdown, report, summary, timing, training, workloads

SCHEMA = "fastconv-bench/1"
# A training sample runs back-to-back steps for at least this long (see _measure_one).
TRAINING_SAMPLE_SECONDS = 0.1


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes at most: fewer repetitions, 2 threads only (unless --threads), "
                             "no NumPy baseline on the largest workloads, memory in float32 only")
    parser.add_argument("--threads", default=None,
                        help="comma-separated thread counts (default 1,2; --quick: 2)")
    parser.add_argument("--dtype", default="float32,float64", help="comma-separated dtypes (default float32,float64)")
    parser.add_argument("--only", default=None,
                        help="comma-separated workloads, their prefixes or groups, e.g. c1,p2,tr1 or conv,pool,train "
                             "(all by default; 'none' runs no workload, e.g. with --limits)")
    parser.add_argument("--layers", action="store_true",
                        help="training steps: also time each layer's forward and backward, the loss, zero_grad "
                             "and the optimizer step, in fastconv.nn and torch.nn, and print where the time goes")
    parser.add_argument("--backend", choices=_backend.BACKENDS, default=None,
                        help=f"fastconv backend to time (default: the active one, {fastconv.get_backend()!r})")
    parser.add_argument("--repeat", type=int, default=None,
                        help="repetitions per workload (default: adaptive, at least 5, more for fast workloads; "
                             "--quick: at least 3)")
    parser.add_argument("--limits", action="store_true",
                        help="measure the machine (BLAS GEMM GFLOP/s, streaming copy GB/s) and use it for the "
                             "fractions; without it BENCH.md's nominal figures are used")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--no-numpy", action="store_true", help="leave the plain-NumPy baseline out")
    parser.add_argument("--gap-ms", type=float, default=None,
                        help="pause between two implementations' samples within a round-robin, in ms (default: "
                             "kernels as long as the previous sample took, 1-100 ms; training steps 250 ms; "
                             "0 for none)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--json", metavar="FILE", help="write every figure, the machine and versions as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the results and summary as Markdown tables")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG of the time ratios vs PyTorch (needs matplotlib)")
    parser.add_argument("--load", metavar="FILE",
                        help="do not measure: re-render a JSON file written by --json (with --markdown/--plot)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_list(text, convert, what):
    try:
        values = [convert(v.strip()) for v in text.split(",") if v.strip()]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: cannot parse {text!r} ({exc})") from None
    if not values:
        raise ValueError(f"{what}: empty list {text!r}")
    return values


def _threads(text):
    n = int(text)
    if n < 1:
        raise ValueError("thread counts must be >= 1")
    return n


def _dtype(text):
    dtype = np.dtype(text)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"only float32 and float64 are benchmarked, not {dtype}")
    return dtype.name


class _Progress:
    """A tqdm bar on stderr, or nothing when tqdm is missing or the bar is turned off."""

    def __init__(self, total, enabled):
        self.bar = None
        if enabled and total:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                # disable=None: shown on a terminal, silent when stderr is a file or a pipe.
                self.bar = tqdm(total=total, file=sys.stderr, unit="run", dynamic_ncols=True, leave=False,
                                disable=None)

    def describe(self, text):
        if self.bar is not None:
            self.bar.set_description_str(text)

    def postfix(self, text):
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def advance(self):
        if self.bar is not None:
            self.bar.update(1)

    def write(self, text):
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _thread_count(n, torch):
    """Run fastconv, torch and the BLAS with `n` threads; restore the previous counts after."""
    from threadpoolctl import threadpool_limits

    previous_fc = fastconv.get_num_threads()
    previous_torch = torch.get_num_threads() if torch is not None else None
    fastconv.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        fastconv.set_num_threads(previous_fc)
        if torch is not None:
            torch.set_num_threads(previous_torch)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# The instruction-set flags that decide which kernels (fastconv's, OpenBLAS's, oneDNN's) run.
CPU_FLAGS = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx_vnni", "amx_tile", "neon", "asimd", "sve"}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(flags & CPU_FLAGS)
    except OSError:
        pass
    return None


def machine():
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
            "cpu_flags": _cpu_flags(), "cpu_count": os.cpu_count(), "cpus_available": affinity}


def versions(torch):
    import scipy
    import threadpoolctl

    return {"fastconv": fastconv.__version__, "python": sys.version.split()[0], "numpy": np.__version__,
            "scipy": scipy.__version__, "threadpoolctl": threadpoolctl.__version__,
            "torch": torch.__version__ if torch is not None else None}


def print_header(result, out=print):
    cfg, env = result["config"], result["environment"]
    show = result["show_config"]
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})" for b in show.get("blas", [])
                     if "error" not in b) or "none found"
    out(f"fastconv {show['version']}  backend={cfg['backend']} (available: {', '.join(show['available_backends'])})"
        f"  OpenMP={'on' if show.get('openmp') else 'off'}  compiler={show.get('compiler')}")
    out(f"BLAS: {blas}")
    out(f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE')}  OMP_NUM_THREADS={env.get('OMP_NUM_THREADS')}  "
        f"CPU: {result['machine']['cpu']} x{result['machine']['cpus_available']}  "
        f"flags: {' '.join(result['machine'].get('cpu_flags') or []) or 'unknown'}")
    v = result["versions"]
    out(f"numpy {v['numpy']}  scipy {v['scipy']}  torch {v['torch'] or 'not available'}  python {v['python']}")
    out(f"threads {cfg['threads']}  dtypes {cfg['dtypes']}  {'QUICK  ' if cfg['quick'] else ''}"
        f"limits: {result['limits']['source']}")
    lim = result["limits"]
    gemm = ", ".join(f"{d} " + "/".join(f"{report._num(v)}" for _, v in sorted(t.items(), key=lambda kv: int(kv[0])))
                     for d, t in lim["gemm_gflops"].items())
    copy = "/".join(f"{report._num(v)}" for _, v in sorted(lim["copy_gbps"].items(), key=lambda kv: int(kv[0])))
    keys = "/".join(str(k) for k in sorted(int(k) for k in lim["copy_gbps"]))
    out(f"machine limits at {keys} threads: GEMM GFLOP/s {gemm}; copy GB/s {copy}")
    for note in result["notes"]:
        out(f"note: {note}")
    for skip in result.get("skipped", []):
        out(f"skipped {skip['workload']}: {skip['reason']}")


def _row(workload, dtype, threads, timings, backend, skipped):
    impls = {}
    for name, t in timings.items():
        impls[name] = {"total_ms": t["total"], "forward_ms": t["forward"], "backward_ms": t["backward"],
                       "repeats": len(t["samples"]), "calls_per_sample": t["number"], "samples_ms": t["samples"]}
    if "fastconv" in impls:
        impls["fastconv"]["backend"] = backend
    return {"workload": workload.name, "kind": workload.kind, "group": workload.group,
            "description": workload.describe(), "dtype": dtype, "threads": threads,
            "work": workload.work(dtype) if impls else None,
            "work_unit": "byte" if workload.kind == "pool" else "FLOP",
            "impls": impls, "skipped": skipped}


def run(args):
    """Entry point of ``python -m fastconv bench``; returns the exit status.

    0, or 1 when a training row failed its loss check, 2 for bad options.
    """
    if args.load:
        with open(args.load) as f:
            result = json.load(f)
        # Recompute the summary from the raw rows: the saved one may predate a fix of the rules.
        result["summary"] = summary.summarise(result["rows"], result["memory"])
        return _output(result, args, print_rows=True)
    if args.plot:
        try:
            report.require_matplotlib()
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        result = measure(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _output(result, args, print_rows=False)


def _output(result, args, print_rows):
    if print_rows:
        print_header(result)
        print(report.text_table(report.ROW_HEADER, [report.row_cells(r, result["memory"]) for r in result["rows"]]))
        for row in result["rows"]:
            if row.get("layers"):
                print()
                print(report.layer_title(row))
                print(report.text_table(report.LAYER_HEADER, report.layer_cells(row)))
    if result["rows"]:
        print()
        print("summary (fastconv time / torch time; below 1 is faster):")
        for line in summary.summary_lines(result["summary"]):
            print("  " + line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.jsonable(result), f, indent=1)
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.markdown_report(result))
        print(f"wrote {args.markdown}")
    if args.plot:
        try:
            report.plot(result, args.plot)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.plot}")
    return 1 if result["summary"].get("failed") else 0


def measure(args):
    """Run the selected workloads; returns the result dict (the --json schema)."""
    started = time.time()
    quick = args.quick
    thread_counts = _parse_list(args.threads or ("2" if quick else "1,2"), _threads, "--threads")
    dtypes = _parse_list(args.dtype, _dtype, "--dtype")
    selected = workloads.select(args.only)
    backend = _backend._check_name(args.backend) if args.backend else fastconv.get_backend()
    if args.repeat is not None and args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    if args.gap_ms is not None and args.gap_ms < 0:
        raise ValueError(f"--gap-ms must be >= 0, got {args.gap_ms}")
    notes = []
    skipped = [{"workload": w.name, "reason": w.unsupported()} for w in selected if w.unsupported()]
    chosen = [w for w in selected if not w.unsupported()]

    torch = None
    if not args.no_torch:
        torch, reason = implementations.import_torch()
        if torch is None:
            notes.append(reason)
        elif not torch.__version__.startswith(implementations.TORCH_VERSION_WANTED):
            notes.append(f"BENCH.md compares with PyTorch {implementations.TORCH_VERSION_WANTED}; this is {torch.__version__}")
    if backend == "reference":
        notes.append("fastconv runs on its pure-NumPy 'reference' backend (the compiled extension is "
                     + ("not loaded" if "cython" not in _backend._modules else "not selected") + ")")

    makers = {"fastconv": implementations.fastconv_maker(backend)}
    if torch is not None:
        makers["torch"] = implementations.torch_maker(torch)
    if args.no_numpy:
        pass
    elif backend == "reference":
        notes.append("the NumPy baseline is left out: fastconv's reference backend is that same code")
    else:
        makers["numpy"] = implementations.fastconv_maker("reference")
    if "numpy" in makers:
        notes.append("the NumPy baseline is timed after fastconv and torch, on its own, so that its "
                     "spinning BLAS threads never slow them down")

    if quick:
        skipped_numpy = (f"; NumPy baseline skipped on {', '.join(workloads.SLOW_FOR_NUMPY)}" if "numpy" in makers else "")
        notes.append(f"--quick: fewer repetitions (at least {args.repeat or 3}), threads {thread_counts}"
                     f"{skipped_numpy}; memory in float32 only")

    conv_for_memory = [w for w in chosen if w.kind == "conv" and w.group == "conv"]
    memory_dtypes = dtypes[:1] if quick else dtypes
    n_memory = 0 if args.no_memory else len(conv_for_memory) * len(memory_dtypes)
    n_limits = len(thread_counts) * (len(dtypes) + 1) if args.limits else 0
    progress = _Progress(len(chosen) * len(dtypes) * len(thread_counts) + n_memory + n_limits,
                         enabled=not args.no_progress)

    result = {
        "schema": SCHEMA, "options": {k: v for k, v in vars(args).items() if k != "func"}, "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "machine": machine(), "versions": versions(torch), "environment": machine_limits.environment(),
        "show_config": fastconv.show_config(),
        "config": {"backend": backend, "threads": thread_counts, "dtypes": dtypes, "quick": quick,
                   "repeat": args.repeat, "workloads": [w.name for w in chosen],
                   "implementations": list(makers)},
        "notes": notes, "skipped": skipped, "rows": [], "memory": [], "summary": summary.summarise([]),
    }
    try:
        if args.limits:
            progress.describe("machine limits")
            result["limits"] = machine_limits.measure(thread_counts, dtypes, quick=quick, progress=progress.advance)
        else:
            result["limits"] = machine_limits.NOMINAL
        print_header(result, out=progress.write)
        if chosen:
            progress.write(report.stream_line(report.ROW_HEADER))

        for threads in thread_counts:
            with _thread_count(threads, torch):
                for dtype in dtypes:
                    for workload in chosen:
                        progress.describe(f"{workload.name} {dtype} {threads}T")
                        row = _measure_one(workload, dtype, threads, makers, torch, backend, args, progress)
                        report.complete_row(row, result["limits"])
                        result["rows"].append(row)
                        progress.write(report.stream_line(report.row_cells(row)))
                        if row.get("error"):
                            progress.write(f"FAILED {workload.name} {dtype} {threads}T: {row['error']}")
                        if row.get("layers"):
                            progress.write(report.layer_title(row))
                            progress.write(report.text_table(report.LAYER_HEADER, report.layer_cells(row)))
                        progress.advance()

        if not args.no_memory:
            threads = max(thread_counts)
            for dtype in memory_dtypes:
                for workload in conv_for_memory:
                    progress.describe(f"memory {workload.name} {dtype}")
                    m = memory_probe.measure(workload.name, dtype, threads, backend)
                    m.update({"workload": workload.name, "dtype": dtype, "threads": threads, "impl": backend})
                    result["memory"].append(m)
                    if "error" in m:
                        progress.write(f"memory {workload.name} {dtype}: failed: {m['error']}")
                    else:
                        progress.write(f"memory {workload.name} {dtype} {threads}T ({backend}): extra "
                                       f"{m['extra_bytes'] / 2**20:.1f} MiB = {m['extra_percent']:.1f}% of inputs+outputs "
                                       f"(tracemalloc {(m['traced_extra_bytes'] or 0) / 2**20:.1f} MiB, "
                                       f"RSS {m['rss_extra_bytes'] / 2**20:.1f} MiB)")
                    progress.advance()
    finally:
        progress.close()
    result["summary"] = summary.summarise(result["rows"], result["memory"])
    result["duration_s"] = time.time() - started
    return result


def _measure_one(workload, dtype, threads, makers, torch, backend, args, progress):
    skipped = {}
    wanted = list(makers)
    if "numpy" in makers and args.quick and workload.name in workloads.SLOW_FOR_NUMPY:
        skipped["numpy"] = "--quick skips the NumPy baseline on the largest workloads"
        wanted.remove("numpy")
    if workload.kind == "train":
        try:
            impls, losses = training.prepare(workload, dtype, backend, torch, wanted)
        except training.TrainingError as exc:
            row = _row(workload, dtype, threads, {}, backend, skipped)
            row["error"] = str(exc)
            return row
    else:
        inputs = workloads.make_inputs(workload, dtype)
        impls = {name: makers[name](workload, inputs) for name in wanted}
    state = {"done": 0, "reps": 0}

    def on_plan(reps):
        state["reps"] = reps

    def on_repetition():
        state["done"] += 1
        progress.postfix(f"rep {state['done']}/{state['reps']}")

    if args.quick:
        options = {"min_repeat": 3, "max_repeat": 30, "target_seconds": 0.4}
    else:
        options = {"min_repeat": 5, "max_repeat": 200, "target_seconds": 3.0}
    if workload.kind == "train":
        # fastconv.nn's Linear layers run NumPy's matmul, whose OpenBLAS threads spin on after
        # the step: torch must not start in that wake, so the two are a settling pause apart.
        # Each sample is a few steps back to back, as in a training loop (a step's own spinning
        # threads do slow the next step: that cost is fastconv.nn's and stays in).
        options.update(gap_seconds=timing.SETTLE_SECONDS, max_gap_seconds=timing.SETTLE_SECONDS,
                       min_sample_seconds=TRAINING_SAMPLE_SECONDS)
    if args.gap_ms is not None:
        options.update(gap_seconds=args.gap_ms / 1e3, max_gap_seconds=args.gap_ms / 1e3)
    # The baseline's phase comes last: fastconv and torch round-robin first, then NumPy alone.
    phases = [{name: _pair(impls[name]) for name in impls if name != "numpy"},
              {name: _pair(impls[name]) for name in impls if name == "numpy"}]
    timings = timing.measure_phases(phases, repeat=args.repeat, on_repetition=on_repetition, on_plan=on_plan,
                                    **options)
    row = _row(workload, dtype, threads, timings, backend, skipped)
    if workload.kind == "train":
        row["first_losses"] = losses
        if args.layers:
            progress.describe(f"{workload.name} {dtype} {threads}T layers")
            count = args.repeat or options["min_repeat"]
            parts = breakdown.layer_breakdown({name: impls[name] for name in ("fastconv", "torch") if name in impls},
                                             count, gap_seconds=options["gap_seconds"])
            row["layers"] = {"steps": count, "parts": parts}
    return row


def _pair(impl):
    """(forward, backward) of a kernel maker's pair or a training step object."""
    return (impl.forward, impl.backward) if hasattr(impl, "forward") else impl
