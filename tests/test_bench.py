"""The benchmark suite's logic (python -m fastconv bench): formulas, statistics, output files.

No timing assertions: the machine is shared and timings are noise here. Expected values are
worked out by hand from BENCH.md's formulas, not computed with the code under test.
"""

import json
import math
import sys

import numpy as np
import pytest

from fastconv.__main__ import main
from fastconv._bench import impls, limits, memory, report, timing, workloads
from fastconv._bench.workloads import ConvWorkload, PoolWorkload

FAST_RUN = ["bench", "--only", "t1", "--repeat", "1", "--threads", "1", "--no-memory", "--no-progress"]


# --- work formulas -----------------------------------------------------------------------------

def test_conv_flops_small_workload_by_hand():
    # N=2, C=3, 5x5, F=4, K=3, stride 2, pad 1: OH = OW = (5 + 2 - 2 - 1) // 2 + 1 = 3
    wl = ConvWorkload("small", 2, 3, 5, 5, 4, 3, 2, 1)
    assert wl.out_hw == (3, 3)
    assert wl.forward_flops() == 2 * 2 * 4 * 3 * 9 * 9 == 3888
    assert wl.backward_flops() == 7776
    assert wl.work() == 11664
    # x 150 + w 108 + b 4 + dout 72 elements, outputs the same again, 4 bytes each
    assert wl.io_bytes(np.float32) == 2 * 334 * 4
    assert wl.io_bytes(np.float64) == 2 * 334 * 8


def test_bench_md_workloads_flops():
    assert workloads.WORKLOADS["c1_cs231n"].forward_flops() == 88_473_600  # 2*50*32*27*32*32
    c2 = workloads.WORKLOADS["c2_cs231n_s2"]
    assert c2.out_hw == (16, 16)  # (31 + 2 - 3) // 2 + 1
    assert c2.forward_flops() == 2 * 100 * 25 * 27 * 256
    c5 = workloads.WORKLOADS["c5_stem7x7"]
    assert c5.out_hw == (112, 112)  # (224 + 6 - 7) // 2 + 1
    c7 = workloads.WORKLOADS["c7_conv1d"]
    assert c7.out_hw == (1, 1000)
    assert c7.shapes()["x"] == (32, 64, 1000) and c7.shapes()["w"] == (64, 64, 5)
    assert c7.forward_flops() == 1_310_720_000  # 2*32*64*64*5*1000


def test_pool_bytes_by_hand():
    p1 = workloads.WORKLOADS["p1_cs231n"]  # max, (100, 3, 32, 32) -> 16x16
    # forward: read 307200 x float32, write 76800 y float32 + 76800 int64 indices
    assert p1.forward_bytes(np.float32) == 1_228_800 + 307_200 + 614_400
    # backward: read dout and indices, write dx
    assert p1.backward_bytes(np.float32) == 307_200 + 614_400 + 1_228_800
    assert p1.work(np.float32) == 4_300_800
    avg = PoolWorkload("a", "avg", 1, 1, 4, 4, 2, 2, 0)  # no indices
    assert avg.work(np.float64) == (16 + 4) * 8 * 2
    p3 = workloads.WORKLOADS["p3_max3"]
    assert p3.out_hw == (56, 56)  # (112 + 2 - 3) // 2 + 1


def test_every_bench_md_workload_is_defined():
    names = {"c1_cs231n", "c2_cs231n_s2", "c3_resnet56", "c4_wide28", "c5_stem7x7", "c6_1x1", "c7_conv1d",
             "t1_tiny", "p1_cs231n", "p2_max2", "p3_max3", "p4_avg2"}
    assert set(workloads.WORKLOADS) == names
    assert [w.name for w in workloads.WORKLOADS.values() if w.group == "conv"] == sorted(
        n for n in names if n[0] == "c")


def test_select():
    assert [w.name for w in workloads.select("c1,p2")] == ["c1_cs231n", "p2_max2"]
    assert [w.name for w in workloads.select("t1_tiny,t1")] == ["t1_tiny"]
    assert workloads.select("none") == []
    assert len(workloads.select(None)) == 12
    for bad in ("c9", "p"):
        with pytest.raises(ValueError, match="--only"):
            workloads.select(bad)


def test_make_inputs_shapes_and_dtype():
    wl = workloads.WORKLOADS["c7_conv1d"]
    inputs = workloads.make_inputs(wl, np.float32)
    assert {k: v.shape for k, v in inputs.items()} == wl.shapes()
    assert all(v.dtype == np.float32 for v in inputs.values())


# --- statistics and summary --------------------------------------------------------------------

def test_geomean_and_rate():
    assert report.geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert report.geomean([0.5, 2.0, 1.0]) == pytest.approx(1.0)
    assert report.geomean([]) is None
    with pytest.raises(ValueError):
        report.geomean([1.0, 0.0])
    assert report.rate(3e9, 1500.0) == pytest.approx(2.0)  # 3 GFLOP in 1.5 s


def _row(workload, dtype, threads, fastconv_ms, torch_ms, numpy_ms=None):
    wl = workloads.WORKLOADS[workload]
    impl = lambda ms: {"total_ms": {"median": ms, "min": ms, "max": ms}}  # noqa: E731
    row = {"workload": workload, "kind": wl.kind, "group": wl.group, "dtype": dtype, "threads": threads,
           "work": wl.work(dtype), "impls": {"fastconv": dict(impl(fastconv_ms), backend="cython")}}
    if torch_ms is not None:
        row["impls"]["torch"] = impl(torch_ms)
    if numpy_ms is not None:
        row["impls"]["numpy"] = impl(numpy_ms)
    return report.complete_row(row, limits.NOMINAL)


def test_complete_row_rates_fractions_ratios():
    row = _row("c1_cs231n", "float32", 2, 10.0, 20.0, 40.0)
    work = 3 * 88_473_600
    assert row["impls"]["fastconv"]["rate"] == pytest.approx(work / 0.010 / 1e9)
    assert row["impls"]["fastconv"]["fraction_of_limit"] == pytest.approx(work / 0.010 / 1e9 / 217.0)
    assert row["ratio_fastconv"] == pytest.approx(0.5)
    assert row["ratio_numpy"] == pytest.approx(2.0)
    pool = _row("p1_cs231n", "float32", 1, 1.0, None)
    assert pool["impls"]["fastconv"]["fraction_of_limit"] == pytest.approx(4_300_800 / 1e-3 / 1e9 / 37.0)
    assert pool["ratio_fastconv"] is None


def test_summary_geomeans_targets_and_speedups():
    rows = [
        _row("c1_cs231n", "float32", 2, 1.0, 2.0),   # 0.5
        _row("c3_resnet56", "float32", 2, 4.0, 2.0),  # 2.0: above 1.5, so the target is missed
        _row("c3_resnet56", "float32", 1, 8.0, 3.0),  # 2T vs 1T: 8 / 4 = 2.0x
        _row("p2_max2", "float32", 2, 3.0, 10.0),     # 0.3
        _row("p2_max2", "float32", 1, 4.0, 10.0),     # speed-up 4 / 3 = 1.33x: missed
        _row("t1_tiny", "float64", 2, 1.0, 4.0),      # 0.25
    ]
    summary = report.summarise(rows, memory=[
        {"workload": "c3_resnet56", "dtype": "float32", "threads": 2, "impl": "cython", "extra_percent": 10.0},
        {"workload": "c3_resnet56", "dtype": "float32", "threads": 2, "impl": "torch", "extra_percent": 90.0},
    ])
    groups = {(g["group"], g["dtype"], g["threads"]): g for g in summary["groups"]}
    conv = groups[("conv", "float32", 2)]
    assert conv["geomean_ratio"] == pytest.approx(1.0)
    assert conv["max_ratio"] == pytest.approx(2.0) and conv["worst_workload"] == "c3_resnet56"
    assert conv["target"]["status"] == "missed"
    assert groups[("conv", "float32", 1)]["target"] is None  # targets are for 2 threads
    assert groups[("pool", "float32", 2)]["target"]["status"] == "met (partial)"  # 1 of 4 measured
    assert groups[("t1", "float64", 2)]["target"]["status"] == "met"
    speedups = {s["workload"]: s for s in summary["speedups"]}
    assert speedups["c3_resnet56"]["fastconv"] == pytest.approx(2.0) and speedups["c3_resnet56"]["met"]
    assert speedups["p2_max2"]["fastconv"] == pytest.approx(4 / 3) and not speedups["p2_max2"]["met"]
    assert speedups["c3_resnet56"]["torch"] == pytest.approx(1.5)
    assert summary["memory"] == [{"workload": "c3_resnet56", "dtype": "float32", "threads": 2,
                                  "extra_percent": 10.0, "target": 25.0, "met": True}]
    lines = report.summary_lines(summary)
    assert any("MISSED" in line and "convolution" in line for line in lines)


def test_summary_without_torch_is_not_applicable():
    summary = report.summarise([_row("t1_tiny", "float32", 2, 1.0, None)])
    (group,) = summary["groups"]
    assert group["geomean_ratio"] is None and group["target"]["status"] == "n/a"


# --- timing ------------------------------------------------------------------------------------

def test_plan_inner_loops_and_repetitions():
    number, reps = timing.plan({"fast": 1e-4, "slow": 1e-2}, min_repeat=5, max_repeat=100,
                               target_seconds=1.0, min_sample_seconds=0.002)
    assert number == {"fast": 20, "slow": 1}
    assert reps == 84  # ceil(1.0 s / (20 * 0.1 ms + 10 ms)) = ceil(83.3)
    assert timing.plan({"a": 10.0}, min_repeat=5)[1] == 5
    assert timing.plan({"a": 1e-6}, max_repeat=7)[1] == 7
    assert timing.plan({"a": 1e-6}, repeat=2)[1] == 2


def test_measure_round_robin_rotates():
    order = []

    def make(name):
        return (lambda: order.append(name), lambda state: None)

    result = timing.measure({"a": make("a"), "b": make("b"), "c": make("c")}, repeat=3,
                            min_sample_seconds=0, gap_seconds=0)
    warm = order[: len(order) - 9]
    timed = order[len(warm):]
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert set(result) == {"a", "b", "c"}
    assert len(result["a"]["samples"]) == 3
    t = result["a"]["total"]
    assert t["min"] <= t["median"] <= t["max"]


# --- machine limits and memory ----------------------------------------------------------------

def test_limits_lookup_and_tiny_measurements():
    table = {1: 10.0, 2: 18.0}
    assert limits.lookup(table, 1) == 10.0 and limits.lookup(table, 4) == 18.0
    assert limits.lookup({"1": 5.0}, 2) == 5.0  # keys come back as strings from JSON
    assert limits.gemm_gflops(np.float32, 1, size=64, repeat=1) > 0
    assert limits.copy_gbps(2, megabytes=4, repeat=1) > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS high-water reset is Linux-only")
def test_memory_reference_counts_the_whole_batch_im2col():
    # The reference backend builds the whole batch's columns: 50 * 27 * 1024 float32 = 5.5 MB
    m = memory.measure("c1_cs231n", "float32", 1, "reference")
    assert "error" not in m, m
    cols = 50 * 27 * 32 * 32 * 4
    assert m["extra_bytes"] >= cols
    assert m["traced_extra_bytes"] >= cols
    assert m["inputs_outputs_bytes"] == workloads.WORKLOADS["c1_cs231n"].io_bytes(np.float32)


# --- whole runs, in process --------------------------------------------------------------------

def test_tiny_run_json_markdown_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")  # the bench extra's, not the test extra's (--plot needs it)
    out_json, out_md, out_png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    assert main(FAST_RUN + ["--json", str(out_json), "--markdown", str(out_md), "--plot", str(out_png)]) == 0
    text = capsys.readouterr().out
    assert "OPENBLAS_CORETYPE=" in text and "summary" in text
    result = json.loads(out_json.read_text())
    assert result["schema"] == "fastconv-bench/1"
    for key in ("machine", "versions", "environment", "show_config", "config", "limits", "rows",
                "memory", "summary", "notes", "duration_s"):
        assert key in result, key
    assert "OPENBLAS_CORETYPE" in result["environment"]
    assert result["config"]["threads"] == [1]
    rows = result["rows"]
    assert [(r["workload"], r["dtype"], r["threads"]) for r in rows] == [
        ("t1_tiny", "float32", 1), ("t1_tiny", "float64", 1)]
    for r in rows:
        assert r["work"] == 3 * 2 * 9 * 9  # forward 2*1*1*1*9*3*3 = 162, times 3
        fc = r["impls"]["fastconv"]
        assert fc["repeats"] == 1 and fc["backend"] == result["config"]["backend"]
        for part in ("total_ms", "forward_ms", "backward_ms"):
            assert set(fc[part]) == {"median", "min", "max"}
        assert fc["rate"] > 0 and fc["fraction_of_limit"] > 0
        if "torch" in r["impls"]:
            assert r["ratio_fastconv"] == pytest.approx(
                fc["total_ms"]["median"] / r["impls"]["torch"]["total_ms"]["median"])
    assert {g["group"] for g in result["summary"]["groups"]} == {"t1"}
    md_rows = [line for line in out_md.read_text().splitlines() if line.startswith("| t1_tiny |")]
    assert sum("GFLOP/s" in line for line in md_rows) == 2  # results table; the rest is the summary
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_rerenders(tmp_path, capsys):
    out_json, out_md = tmp_path / "r.json", tmp_path / "again.md"
    assert main(FAST_RUN + ["--dtype", "float32", "--json", str(out_json)]) == 0
    capsys.readouterr()
    assert main(["bench", "--load", str(out_json), "--markdown", str(out_md)]) == 0
    assert "t1_tiny" in capsys.readouterr().out
    assert "| t1_tiny | float32 | 1 |" in out_md.read_text()


def test_torch_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(impls, "import_torch", lambda: (None, "PyTorch is not importable (test)"))
    out_json = tmp_path / "r.json"
    assert main(FAST_RUN + ["--dtype", "float32", "--threads", "2", "--json", str(out_json)]) == 0
    assert "PyTorch is not importable (test)" in capsys.readouterr().out
    result = json.loads(out_json.read_text())
    assert result["versions"]["torch"] is None
    assert any("not importable" in n for n in result["notes"])
    (row,) = result["rows"]
    assert "torch" not in row["impls"] and row["ratio_fastconv"] is None
    assert result["summary"]["groups"][0]["target"]["status"] == "n/a"


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert main(FAST_RUN + ["--plot", str(tmp_path / "p.png")]) == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_bad_options_are_errors(capsys):
    assert main(["bench", "--only", "c99", "--no-progress"]) == 2
    assert "--only" in capsys.readouterr().err
    assert main(["bench", "--only", "t1", "--threads", "0", "--no-progress"]) == 2
    assert main(["bench", "--only", "t1", "--dtype", "int8", "--no-progress"]) == 2
