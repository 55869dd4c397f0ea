"""The summary of a run: geometric means per group, and BENCH.md's targets, each one counted.

Pure computation on the rows of a result dict (what --json writes), so that a saved run is
judged again under today's rules (``--load``) and the counting is testable without timing.
For every target the summary says how many of the measured workloads meet it, which one is
the worst, and which workloads of the target were not measured (a target met on part of its
workloads is "met (partial)").
"""

import collections
import math
from dataclasses import dataclass

from fastconv._bench.workloads import WORKLOADS

GROUPS = ("conv", "pool", "t1", "train")
GROUP_TITLES = {"conv": "convolution c1..c13", "pool": "pooling p1..p4", "t1": "t1_tiny",
                "train": "training tr1..tr5"}
GROUP_SIZES = collections.Counter(w.group for w in WORKLOADS.values())
BOTH = ("float32", "float64")


def _members(group):
    return tuple(name for name, w in WORKLOADS.items() if w.group == group)


@dataclass(frozen=True)
class RatioTarget:
    """fastconv time / torch time: a geometric mean over `members`, and/or a bound on each."""

    title: str
    members: tuple
    dtypes: tuple
    geomean: float = None
    each: float = None

    def rule(self):
        rules = [f"geomean <= {self.geomean}"] if self.geomean is not None else []
        if self.each is not None:
            rules.append(f"none above {self.each}" if rules else f"every ratio <= {self.each}")
        return ", ".join(rules)


@dataclass(frozen=True)
class SpeedupTarget:
    """fastconv's time at 1 thread / its time at 2 threads, at least `minimum` on each member."""

    title: str
    members: tuple
    minimum: float

    def rule(self):
        if self.minimum == 1.0:
            return "2 threads not slower than 1"
        return f"2 threads >= {self.minimum}x faster than 1"


# BENCH.md, "Targets": each ratio target holds at 1 and at 2 threads.
TARGET_THREADS = (1, 2)
RATIO_TARGETS = (
    RatioTarget(GROUP_TITLES["conv"], _members("conv"), ("float32",), geomean=0.75, each=1.0),
    RatioTarget(GROUP_TITLES["conv"], _members("conv"), ("float64",), geomean=0.4),
    RatioTarget("c12_depthwise", ("c12_depthwise",), BOTH, each=0.2),
    RatioTarget(GROUP_TITLES["pool"], _members("pool"), BOTH, each=0.4),
    RatioTarget("t1_tiny", ("t1_tiny",), BOTH, each=0.5),
    RatioTarget(GROUP_TITLES["train"], _members("train"), ("float32",), each=0.8),
    RatioTarget(GROUP_TITLES["train"], _members("train"), ("float64",), each=0.5),
)
SPEEDUP_TARGETS = (
    SpeedupTarget("c3, c4, p2", ("c3_resnet56", "c4_wide28", "p2_max2"), 1.7),
    SpeedupTarget(GROUP_TITLES["train"], _members("train"), 1.6),
    SpeedupTarget("every row", tuple(WORKLOADS), 1.0),
)
MEMORY_TARGET_PERCENT = 25.0  # extra memory of every convolution workload, % of inputs + outputs
MEMORY_MEMBERS = _members("conv")
PEAK_WORKLOADS = ("c3_resnet56", "c4_wide28", "c8_cifar32", "c9_cifar16", "c10_cifar8")


def geomean(values):
    """Geometric mean of positive numbers (None for an empty list)."""
    values = [float(v) for v in values]
    if not values:
        return None
    if any(v <= 0 for v in values):
        raise ValueError(f"geomean: values must be positive, got {values}")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _status(measured, of, met):
    if measured == 0:
        return "n/a"
    if not met:
        return "missed"
    return "met" if measured == of else "met (partial)"  # a workload not run could still break it


def _count(values, members, bound, larger_is_better=False):
    """How `values` (workload -> figure) of `members` compare with `bound`."""
    measured = {name: values[name] for name in members if name in values}
    within = [name for name, v in measured.items() if (v >= bound if larger_is_better else v <= bound)]
    pick = min if larger_is_better else max
    worst = pick(measured, key=measured.get) if measured else None
    return {"measured": len(measured), "of": len(members), "within": len(within),
            "worst_workload": worst, "worst": measured.get(worst),
            "not_measured": [name for name in members if name not in values]}


def _ratio_target(target, dtype, threads, ratios):
    bound = target.each if target.each is not None else target.geomean
    entry = {"kind": "ratio", "target": target.title, "dtype": dtype, "threads": threads, "rule": target.rule(),
             "bound": bound}
    entry.update(_count(ratios, target.members, bound))
    measured = [ratios[name] for name in target.members if name in ratios]
    entry["geomean"] = geomean(measured) if target.geomean is not None else None
    met = True
    if entry["geomean"] is not None:
        met &= entry["geomean"] <= target.geomean
    if target.each is not None:
        met &= entry["within"] == entry["measured"]
    entry["status"] = _status(entry["measured"], entry["of"], met)
    return entry


def speedups(rows):
    """fastconv's (and torch's) time at 1 thread / at 2 threads, per workload and dtype."""
    by_key = {(r["workload"], r["dtype"], r["threads"]): r for r in rows if not r.get("error")}
    result = []
    for (workload, dtype, threads), two in by_key.items():
        one = by_key.get((workload, dtype, 1))
        if threads != 2 or one is None:
            continue
        entry = {"workload": workload, "dtype": dtype}
        for name in ("fastconv", "torch"):
            if name in one["impls"] and name in two["impls"]:
                entry[name] = one["impls"][name]["total_ms"]["median"] / two["impls"][name]["total_ms"]["median"]
        if "fastconv" in entry:
            result.append(entry)
    return result


def summarise(rows, memory=()):
    """Geometric means per group, dtype and thread count; every BENCH.md target, counted."""
    ok_rows = [r for r in rows if not r.get("error")]
    groups = []
    keys = sorted({(r["group"], r["dtype"], r["threads"]) for r in ok_rows},
                  key=lambda k: (GROUPS.index(k[0]), k[1], k[2]))
    for group, dtype, threads in keys:
        members = [r for r in ok_rows if (r["group"], r["dtype"], r["threads"]) == (group, dtype, threads)]
        ratios = {r["workload"]: r["ratio_fastconv"] for r in members if r["ratio_fastconv"] is not None}
        groups.append({
            "group": group, "dtype": dtype, "threads": threads, "workloads": len(members), "of": GROUP_SIZES[group],
            "geomean_ratio": geomean(ratios.values()),
            "max_ratio": max(ratios.values()) if ratios else None,
            "worst_workload": max(ratios, key=ratios.get) if ratios else None,
            "geomean_ratio_numpy": geomean(r["ratio_numpy"] for r in members if r.get("ratio_numpy") is not None),
        })

    targets = []
    measured_keys = sorted({(r["dtype"], r["threads"]) for r in ok_rows})
    for target in RATIO_TARGETS:
        for dtype, threads in measured_keys:
            rows_here = [r for r in ok_rows if (r["dtype"], r["threads"]) == (dtype, threads)]
            if dtype in target.dtypes and threads in TARGET_THREADS and any(
                    r["workload"] in target.members for r in rows_here):
                ratios = {r["workload"]: r["ratio_fastconv"] for r in rows_here if r["ratio_fastconv"] is not None}
                targets.append(_ratio_target(target, dtype, threads, ratios))

    ups = speedups(rows)
    for target in SPEEDUP_TARGETS:
        for dtype in sorted({s["dtype"] for s in ups}):
            values = {s["workload"]: s["fastconv"] for s in ups if s["dtype"] == dtype}
            entry = {"kind": "speedup", "target": target.title, "dtype": dtype, "threads": None,
                     "rule": target.rule(), "bound": target.minimum}
            entry.update(_count(values, target.members, target.minimum, larger_is_better=True))
            if not entry["measured"]:
                continue
            entry["status"] = _status(entry["measured"], entry["of"], entry["within"] == entry["measured"])
            targets.append(entry)

    memory_rows = [m for m in memory if m.get("impl") != "torch" and "extra_percent" in m]
    for dtype, threads in sorted({(m["dtype"], m["threads"]) for m in memory_rows}):
        values = {m["workload"]: m["extra_percent"] for m in memory_rows if (m["dtype"], m["threads"]) == (dtype, threads)}
        entry = {"kind": "memory", "target": "extra memory, convolution", "dtype": dtype, "threads": threads,
                 "rule": f"<= {MEMORY_TARGET_PERCENT:g}% of inputs + outputs", "bound": MEMORY_TARGET_PERCENT}
        entry.update(_count(values, MEMORY_MEMBERS, MEMORY_TARGET_PERCENT))
        entry["status"] = _status(entry["measured"], entry["of"], entry["within"] == entry["measured"])
        targets.append(entry)

    peak = []
    for r in ok_rows:
        if r["workload"] in PEAK_WORKLOADS:
            entry = {"workload": r["workload"], "dtype": r["dtype"], "threads": r["threads"]}
            for name in ("fastconv", "torch"):
                if name in r["impls"]:
                    entry[name] = r["impls"][name]["fraction_of_limit"]
            peak.append(entry)

    failed = [{"workload": r["workload"], "dtype": r["dtype"], "threads": r["threads"], "error": r["error"]}
              for r in rows if r.get("error")]
    return {"groups": groups, "targets": targets, "speedups": ups, "peak": peak, "failed": failed}


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

def num(value, digits=3):
    """`value` with `digits` significant digits ("-" for None)."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def _figure(entry, value):
    if value is None:
        return "-"
    if entry["kind"] == "speedup":
        return f"{value:.2f}x"
    if entry["kind"] == "memory":
        return f"{value:.1f}%"
    return num(value)


def target_name(entry):
    threads = f" {entry['threads']}T" if entry["threads"] is not None else ""
    return f"{entry['target']} {entry['dtype']}{threads}"


def target_detail(entry):
    """e.g. "9 of 11 measured at most 1.00, geomean 0.82, worst c10_cifar8 1.23; not measured: c12, c13"."""
    direction = "at least" if entry["kind"] == "speedup" else "at most"
    parts = [f"{entry['within']} of {entry['measured']} measured {direction} {_figure(entry, entry['bound'])}"]
    if entry.get("geomean") is not None:
        parts.append(f"geomean {num(entry['geomean'])}")
    if entry["worst_workload"] is not None:
        parts.append(f"worst {entry['worst_workload']} {_figure(entry, entry['worst'])}")
    text = ", ".join(parts)
    if entry["not_measured"]:
        text += "; not measured: " + ", ".join(name.split("_")[0] for name in entry["not_measured"])
    return text


def group_line(g):
    return (f"{GROUP_TITLES[g['group']]:<19} {g['dtype']} {g['threads']}T: geomean fastconv/torch "
            f"{num(g['geomean_ratio'])}, max {num(g['max_ratio'])}"
            f"{' (' + g['worst_workload'] + ')' if g['worst_workload'] else ''}"
            f", numpy/torch {num(g['geomean_ratio_numpy'])} [{g['workloads']}/{g['of']} workloads]")


def summary_lines(summary):
    """Geometric means per group; then each target with its status; GEMM fractions; failures."""
    lines = [group_line(g) for g in summary["groups"]]
    if summary["targets"]:
        lines.append("targets (BENCH.md):")
    for t in summary["targets"]:
        lines.append(f"  {target_name(t)}: {t['rule']}: {t['status'].upper()} ({target_detail(t)})")
    for p in summary["peak"]:
        torch = f", torch {100 * p['torch']:.0f}%" if "torch" in p else ""
        lines.append(f"fraction of GEMM peak {p['workload']} {p['dtype']} {p['threads']}T: "
                     f"fastconv {100 * p['fastconv']:.0f}%{torch}")
    for f in summary["failed"]:
        lines.append(f"FAILED {f['workload']} {f['dtype']} {f['threads']}T: {f['error']}")
    return lines
