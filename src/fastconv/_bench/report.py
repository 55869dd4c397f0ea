"""Turning measurements into figures: rates, ratios, tables, Markdown, plots.

Everything here is pure computation on the result dict (the same dict that --json writes), so
a saved run can be re-rendered (``--load FILE``) and the logic is testable without timing.
The summary and BENCH.md's targets are fastconv._bench.summary's.
"""

import numpy as np

from fastconv._bench import limits as machine_limits
from fastconv._bench import summary as summaries
from fastconv._bench.summary import num as _num


def rate(work, milliseconds):
    """GFLOP/s (or GB/s) for `work` FLOPs (or bytes) done in `milliseconds`."""
    return work / (milliseconds * 1e-3) / 1e9


def limit_for(limits, kind, dtype, threads):
    """The machine limit a workload's rate is compared with: GEMM GFLOP/s or copy GB/s."""
    if kind in ("conv", "train"):
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


# ---------------------------------------------------------------------------------------------
# Text and Markdown
# ---------------------------------------------------------------------------------------------

def _ms(impl):
    if impl is None:
        return "-"
    t = impl["total_ms"]
    return f"{_num(t['median'])} ({_num(t['min'])}-{_num(t['max'])})"


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
    impls = row["impls"]
    fc, torch, numpy = impls.get("fastconv"), impls.get("torch"), impls.get("numpy")
    if row.get("error"):
        return [row["workload"], row["dtype"], str(row["threads"]), "FAILED (see the summary)"] + ["-"] * 8
    unit = "GB/s" if row["kind"] == "pool" else "GFLOP/s"
    return [
        row["workload"], row["dtype"], str(row["threads"]), _ms(fc), _ms(torch),
        _ms(numpy) if numpy else "skipped" if row.get("skipped", {}).get("numpy") else "-",
        _num(row["ratio_fastconv"]), _num(row.get("ratio_numpy")),
        f"{_num(fc['rate'])} {unit}" if fc else "-",
        f"{100 * fc['fraction_of_limit']:.1f}%" if fc else "-",
        f"{_num(torch['rate'])} {unit}" if torch else "-",
        _mem(memory, row) if row["kind"] == "conv" and fc else "-",
    ]


LAYER_HEADER = ["part of the step", "fastconv fwd ms", "bwd ms", "torch fwd ms", "bwd ms", "fc/torch"]


def layer_title(row):
    return (f"{row['workload']} {row['dtype']} {row['threads']}T, where a step's time goes "
            f"(medians of {row['layers']['steps']} instrumented steps):")


def layer_cells(row):
    """One line per part of a training step (layers, loss, zero_grad, optimizer, other, step)."""
    cells = []
    for part in row["layers"]["parts"]:
        fc, torch = part.get("fastconv", {}), part.get("torch", {})
        if "total_ms" in fc:  # "other" and "step": one figure each
            mine, theirs = fc["total_ms"], torch.get("total_ms")
            cells.append([part["part"], _num(mine), "", _num(theirs), "", _ratio(mine, theirs)])
            continue
        mine = fc["forward_ms"] + fc["backward_ms"]
        theirs = torch["forward_ms"] + torch["backward_ms"] if torch else None
        cells.append([part["part"], _num(fc["forward_ms"]), _num(fc["backward_ms"]),
                      _num(torch.get("forward_ms")), _num(torch.get("backward_ms")), _ratio(mine, theirs)])
    return cells


def _ratio(mine, theirs):
    return _num(mine / theirs) if theirs else "-"


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


GROUP_HEADER = ["group", "dtype", "thr", "workloads", "geomean fc/torch", "max fc/torch (worst)", "geomean np/torch"]
TARGET_HEADER = ["target", "dtype", "thr", "rule", "status", "count"]


def group_cells(summary):
    cells = []
    for g in summary["groups"]:
        worst = f"{_num(g['max_ratio'])} ({g['worst_workload']})" if g["max_ratio"] is not None else "-"
        cells.append([summaries.GROUP_TITLES[g["group"]], g["dtype"], str(g["threads"]), f"{g['workloads']}/{g['of']}",
                      _num(g["geomean_ratio"]), worst, _num(g["geomean_ratio_numpy"])])
    return cells


def target_cells(summary):
    return [[t["target"], t["dtype"], "1, 2" if t["threads"] is None else str(t["threads"]), t["rule"],
             t["status"], summaries.target_detail(t)] for t in summary["targets"]]


def markdown_report(result):
    """The whole run as Markdown: configuration, results, summary, targets, layers, notes."""
    cfg = result["config"]
    summary = result["summary"]
    lines = [
        f"fastconv {result['versions']['fastconv']} (backend `{cfg['backend']}`), "
        f"PyTorch {result['versions'].get('torch') or 'not available'}, NumPy {result['versions']['numpy']}; "
        f"threads {cfg['threads']}; {'quick run; ' if cfg['quick'] else ''}"
        f"OPENBLAS_CORETYPE={result['environment'].get('OPENBLAS_CORETYPE')}; "
        f"CPU flags: {' '.join(result['machine'].get('cpu_flags') or []) or 'unknown'}; "
        f"limits: {result['limits']['source']}.",
        "",
        "Times are forward + backward per call (training: one whole step), median (min-max) in ms; "
        "ratios below 1 mean faster than PyTorch. Rates: GFLOP/s for convolutions and training steps, "
        "GB/s for pooling; % limit is of the machine's BLAS GEMM or streaming copy.",
        "",
        markdown_table(ROW_HEADER, [row_cells(r, result["memory"]) for r in result["rows"]]),
        "",
        markdown_table(GROUP_HEADER, group_cells(summary)),
        "",
        markdown_table(TARGET_HEADER, target_cells(summary)),
        "",
    ]
    lines += [f"- {line}" for line in summaries.summary_lines(summary) if line.startswith(("fraction", "FAILED"))]
    lines += [f"- skipped {s['workload']}: {s['reason']}" for s in result.get("skipped", [])]
    lines += [f"- note: {n}" for n in result["notes"]]
    for row in result["rows"]:
        if row.get("layers"):
            lines += ["", layer_title(row), "", markdown_table(LAYER_HEADER, layer_cells(row))]
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


def jsonable(obj):
    """Copy of `obj` with dict keys as strings and NumPy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
