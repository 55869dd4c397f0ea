"""Turning measurements into figures: rates, ratios, geometric means, targets, tables, plots.

Everything here is pure computation on the result dict (the same dict that --json writes), so
a saved run can be re-rendered (``--load FILE``) and the logic is testable without timing.
"""

import math

import numpy as np

from fastconv._bench import limits as machine_limits

GROUPS = ("conv", "pool", "t1")
GROUP_TITLES = {"conv": "convolution c1..c7", "pool": "pooling p1..p4", "t1": "t1_tiny"}
GROUP_SIZES = {"conv": 7, "pool": 4, "t1": 1}

# BENCH.md targets at 2 threads (fastconv time / torch time).
TARGET_THREADS = 2
TARGETS = {
    ("conv", "float32"): {"geomean": 1.0, "max": 1.5},
    ("conv", "float64"): {"geomean": 0.6},
    ("pool", "float32"): {"max": 0.4},
    ("pool", "float64"): {"max": 0.4},
    ("t1", "float32"): {"max": 0.5},
    ("t1", "float64"): {"max": 0.5},
}
SPEEDUP_WORKLOADS = ("c3_resnet56", "c4_wide28", "p2_max2")
SPEEDUP_TARGET = 1.7
MEMORY_TARGET = {"c3_resnet56": 25.0}  # extra memory, % of inputs + outputs


def geomean(values):
    """Geometric mean of positive numbers (None for an empty list)."""
    values = [float(v) for v in values]
    if not values:
        return None
    if any(v <= 0 for v in values):
        raise ValueError(f"geomean: values must be positive, got {values}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def rate(work, milliseconds):
    """GFLOP/s (or GB/s) for `work` FLOPs (or bytes) done in `milliseconds`."""
    return work / (milliseconds * 1e-3) / 1e9


def limit_for(limits, kind, dtype, threads):
    """The machine limit a workload's rate is compared with: GEMM GFLOP/s or copy GB/s."""
    if kind == "conv":
        return machine_limits.lookup(limits["gemm_gflops"][dtype], threads)
    return machine_limits.lookup(limits["copy_gbps"], threads)


def complete_row(row, limits):
    """Add rates, fractions of the machine limit and ratios to a row of raw timings."""
    for name, impl in row["impls"].items():
        median = impl["total_ms"]["median"]
        impl["rate"] = rate(row["work"], median)
        impl["fraction_of_limit"] = impl["rate"] / limit_for(limits, row["kind"], row["dtype"], row["threads"])
    torch = row["impls"].get("torch")
    for name in ("fastconv", "numpy"):
        mine = row["impls"].get(name)
        row[f"ratio_{name}"] = (mine["total_ms"]["median"] / torch["total_ms"]["median"]) if mine and torch else None
    return row


def summarise(rows, memory=()):
    """Geometric means of fastconv/torch per group, dtype and thread count; targets; speed-ups."""
    groups = []
    keys = sorted({(r["group"], r["dtype"], r["threads"]) for r in rows},
                  key=lambda k: (GROUPS.index(k[0]), k[1], k[2]))
    for group, dtype, threads in keys:
        members = [r for r in rows if (r["group"], r["dtype"], r["threads"]) == (group, dtype, threads)]
        ratios = {r["workload"]: r["ratio_fastconv"] for r in members if r["ratio_fastconv"] is not None}
        numpy_ratios = [r["ratio_numpy"] for r in members if r.get("ratio_numpy") is not None]
        entry = {
            "group": group, "dtype": dtype, "threads": threads,
            "workloads": len(members), "of": GROUP_SIZES[group],
            "geomean_ratio": geomean(ratios.values()),
            "max_ratio": max(ratios.values()) if ratios else None,
            "worst_workload": max(ratios, key=ratios.get) if ratios else None,
            "geomean_ratio_numpy": geomean(numpy_ratios),
            "target": None,
        }
        target = TARGETS.get((group, dtype)) if threads == TARGET_THREADS else None
        if target is not None:
            entry["target"] = _judge(target, entry, len(ratios))
        groups.append(entry)

    speedups = []
    by_key = {(r["workload"], r["dtype"], r["threads"]): r for r in rows}
    for workload in SPEEDUP_WORKLOADS:
        for dtype in sorted({r["dtype"] for r in rows}):
            one, two = by_key.get((workload, dtype, 1)), by_key.get((workload, dtype, 2))
            if not (one and two):
                continue
            entry = {"workload": workload, "dtype": dtype, "target": SPEEDUP_TARGET}
            for name in ("fastconv", "torch"):
                if name in one["impls"] and name in two["impls"]:
                    entry[name] = one["impls"][name]["total_ms"]["median"] / two["impls"][name]["total_ms"]["median"]
            entry["met"] = entry.get("fastconv", 0) >= SPEEDUP_TARGET
            speedups.append(entry)

    memory_targets = []
    for m in memory:
        if m.get("workload") in MEMORY_TARGET and m.get("impl") != "torch" and "extra_percent" in m:
            limit = MEMORY_TARGET[m["workload"]]
            memory_targets.append({"workload": m["workload"], "dtype": m["dtype"], "threads": m["threads"],
                                   "extra_percent": m["extra_percent"], "target": limit,
                                   "met": m["extra_percent"] <= limit})
    return {"groups": groups, "speedups": speedups, "memory": memory_targets}


def _judge(target, entry, measured):
    """met / missed / partial / n/a for one group against its BENCH.md target."""
    rules = []
    if "geomean" in target:
        rules.append(f"geomean <= {target['geomean']}")
    if "max" in target:
        rules.append(f"none above {target['max']}" if "geomean" in target else f"every ratio <= {target['max']}")
    text = " and ".join(rules)
    if measured == 0:
        return {"rule": text, "status": "n/a", "why": "no fastconv/torch ratio measured"}
    met = True
    if "geomean" in target:
        met &= entry["geomean_ratio"] <= target["geomean"]
    if "max" in target:
        met &= entry["max_ratio"] <= target["max"]
    status = "met" if met else "missed"
    if measured < entry["of"] and met:
        status = "met (partial)"  # a missing workload could still break it
    return {"rule": text, "status": status, "why": f"{measured} of {entry['of']} workloads"}


# ---------------------------------------------------------------------------------------------
# Text and Markdown
# ---------------------------------------------------------------------------------------------

def _ms(impl):
    if impl is None:
        return "-"
    t = impl["total_ms"]
    return f"{_num(t['median'])} ({_num(t['min'])}-{_num(t['max'])})"


def _num(value, digits=3):
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def _mem(memory, row):
    for m in memory:
        if (m.get("workload"), m.get("dtype"), m.get("threads"), m.get("impl")) == (
            row["workload"], row["dtype"], row["threads"], row["impls"]["fastconv"]["backend"]
        ) and "extra_bytes" in m:
            return f"{m['extra_bytes'] / 2**20:.1f} MiB ({m['extra_percent']:.0f}%)"
    return "-"


ROW_HEADER = ["workload", "dtype", "thr", "fastconv ms (min-max)", "torch ms (min-max)", "numpy ms (min-max)",
              "fc/torch", "np/torch", "fastconv rate", "% limit", "torch rate", "extra mem"]


# Column widths for rows printed one at a time as they are measured.
STREAM_WIDTHS = [12, 7, 3, 24, 24, 24, 8, 8, 18, 7, 18, 17]


def stream_line(cells):
    """One row padded to STREAM_WIDTHS, so rows printed as they come line up with the header."""
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, STREAM_WIDTHS)).rstrip()


def row_cells(row, memory=()):
    unit = "GFLOP/s" if row["kind"] == "conv" else "GB/s"
    impls = row["impls"]
    fc, torch, numpy = impls.get("fastconv"), impls.get("torch"), impls.get("numpy")
    return [
        row["workload"], row["dtype"], str(row["threads"]), _ms(fc), _ms(torch),
        _ms(numpy) if numpy else "skipped" if row.get("skipped", {}).get("numpy") else "-",
        _num(row["ratio_fastconv"]), _num(row.get("ratio_numpy")),
        f"{_num(fc['rate'])} {unit}" if fc else "-",
        f"{100 * fc['fraction_of_limit']:.1f}%" if fc else "-",
        f"{_num(torch['rate'])} {unit}" if torch else "-",
        _mem(memory, row) if row["kind"] == "conv" and fc else "-",
    ]


def text_table(header, rows):
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


SUMMARY_HEADER = ["group", "dtype", "thr", "workloads", "geomean fc/torch", "max fc/torch (worst)",
                  "geomean np/torch", "target (2 threads)", "status"]


def summary_cells(summary):
    cells = []
    for g in summary["groups"]:
        target = g["target"] or {}
        worst = f"{_num(g['max_ratio'])} ({g['worst_workload']})" if g["max_ratio"] is not None else "-"
        cells.append([GROUP_TITLES[g["group"]], g["dtype"], str(g["threads"]), f"{g['workloads']}/{g['of']}",
                      _num(g["geomean_ratio"]), worst, _num(g["geomean_ratio_numpy"]),
                      target.get("rule", "-"), target.get("status", "-")])
    return cells


def summary_lines(summary):
    """One line per group (geometric means and target), then speed-ups and memory targets."""
    lines = []
    for g in summary["groups"]:
        target = g["target"]
        judged = f"  target {target['rule']}: {target['status'].upper()} ({target['why']})" if target else ""
        lines.append(
            f"{GROUP_TITLES[g['group']]:<19} {g['dtype']} {g['threads']}T: geomean fastconv/torch "
            f"{_num(g['geomean_ratio'])}, max {_num(g['max_ratio'])}"
            f"{' (' + g['worst_workload'] + ')' if g['worst_workload'] else ''}"
            f", numpy/torch {_num(g['geomean_ratio_numpy'])} [{g['workloads']}/{g['of']} workloads]{judged}"
        )
    for s in summary["speedups"]:
        torch = f", torch {s['torch']:.2f}x" if "torch" in s else ""
        fc = f"{s['fastconv']:.2f}x" if "fastconv" in s else "-"
        lines.append(f"2 vs 1 thread {s['workload']} {s['dtype']}: fastconv {fc}{torch}  "
                     f"target >= {s['target']}x: {'MET' if s['met'] else 'MISSED'}")
    for m in summary["memory"]:
        lines.append(f"extra memory {m['workload']} {m['dtype']} {m['threads']}T: {m['extra_percent']:.1f}% of inputs+outputs"
                     f"  target <= {m['target']:.0f}%: {'MET' if m['met'] else 'MISSED'}")
    return lines


def markdown_report(result):
    """The whole run as Markdown: configuration, results table, summary, notes."""
    cfg = result["config"]
    lines = [
        f"fastconv {result['versions']['fastconv']} (backend `{cfg['backend']}`), "
        f"PyTorch {result['versions'].get('torch') or 'not available'}, NumPy {result['versions']['numpy']}; "
        f"threads {cfg['threads']}; {'quick run; ' if cfg['quick'] else ''}"
        f"OPENBLAS_CORETYPE={result['environment'].get('OPENBLAS_CORETYPE')}; "
        f"limits: {result['limits']['source']}.",
        "",
        "Times are forward + backward per call, median (min-max) in ms; ratios below 1 mean faster "
        "than PyTorch. Rates: GFLOP/s for convolutions, GB/s for pooling; % limit is of the "
        "machine's BLAS GEMM or streaming copy.",
        "",
        markdown_table(ROW_HEADER, [row_cells(r, result["memory"]) for r in result["rows"]]),
        "",
        markdown_table(SUMMARY_HEADER, summary_cells(result["summary"])),
        "",
    ]
    extra = [l for l in summary_lines(result["summary"]) if l.startswith(("2 vs 1", "extra memory"))]
    lines += [f"- {l}" for l in extra]
    lines += [f"- note: {n}" for n in result["notes"]]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------

def require_matplotlib():
    """Import matplotlib with the Agg backend, or raise RuntimeError saying how to get it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(
            f"--plot needs matplotlib ({exc}); install it with `pip install fastconv[bench]` "
            "or `pip install matplotlib`"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(result, path):
    """PNG: one bar group per workload, time ratios vs PyTorch on a log axis, a line at 1.0."""
    plt = require_matplotlib()
    rows = [r for r in result["rows"] if r.get("ratio_fastconv") is not None or r.get("ratio_numpy") is not None]
    thread_counts = sorted({r["threads"] for r in rows}) or [0]
    workloads = list(dict.fromkeys(r["workload"] for r in result["rows"]))
    series = [(impl, dtype) for impl in ("fastconv", "numpy") for dtype in ("float32", "float64")
              if any(r.get(f"ratio_{impl}") is not None and r["dtype"] == dtype for r in rows)]
    fig, axes = plt.subplots(len(thread_counts), 1, figsize=(max(6, 0.9 * len(workloads) + 2), 4.2 * len(thread_counts)),
                             squeeze=False)
    width = 0.8 / max(1, len(series))
    colours = {("fastconv", "float32"): "#1f77b4", ("fastconv", "float64"): "#6baed6",
               ("numpy", "float32"): "#d62728", ("numpy", "float64"): "#fc9272"}
    for ax, threads in zip(axes[:, 0], thread_counts):
        by_key = {(r["workload"], r["dtype"]): r for r in rows if r["threads"] == threads}
        for s, (impl, dtype) in enumerate(series):
            xs, ys = [], []
            for i, w in enumerate(workloads):
                r = by_key.get((w, dtype))
                if r is not None and r.get(f"ratio_{impl}") is not None:
                    xs.append(i + (s - (len(series) - 1) / 2) * width)
                    ys.append(r[f"ratio_{impl}"])
            ax.bar(xs, ys, width, label=f"{impl} {dtype}", color=colours[(impl, dtype)])
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_yscale("log")
        ratios = [r[f"ratio_{impl}"] for r in by_key.values() for impl, _ in series if r.get(f"ratio_{impl}")]
        if ratios:  # head room above the bars for the legend
            ax.set_ylim(min(min(ratios), 1.0) / 1.5, max(max(ratios), 1.0) * 6)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels(workloads, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("time / PyTorch time")
        ax.set_title(f"{threads} thread{'s' * (threads != 1)}: below 1 is faster than PyTorch", fontsize=10)
        if series:
            ax.legend(fontsize=8, ncol=len(series), loc="upper left")
    fig.suptitle(f"fastconv {result['versions']['fastconv']} ({result['config']['backend']}) vs PyTorch "
                 f"{result['versions'].get('torch') or '(missing)'}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def nominal_or(limits):
    return limits if limits is not None else machine_limits.NOMINAL


def jsonable(obj):
    """Copy of `obj` with dict keys as strings and NumPy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
