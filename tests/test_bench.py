"""The benchmark suite's logic (python -m fastconv bench): formulas, statistics, output files.

No timing assertions: the machine is shared and timings are noise here. Expected values are
worked out by hand from BENCH.md's formulas, not computed with the code under test.
"""

import dataclasses
import json
import sys

import numpy as np
import pytest

from fastconv import nn
from fastconv.__main__ import main
from fastconv._bench import breakdown, impls, limits, memory, report, summary, timing, training, twin, workloads
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


def test_new_conv_workloads_flops_by_hand():
    # The three CIFAR stages do the same work: 2*128*32*(32*9)*32*32 = 2*128*64*(64*9)*16*16 = ...
    for name in ("c8_cifar32", "c9_cifar16", "c10_cifar8"):
        assert workloads.WORKLOADS[name].forward_flops() == 2_415_919_104, name
    c11 = workloads.WORKLOADS["c11_down"]
    assert c11.out_hw == (16, 16)  # (32 + 2 - 3) // 2 + 1
    assert c11.forward_flops() == 1_207_959_552  # 2*128*64*(32*9)*16*16
    c12 = workloads.WORKLOADS["c12_depthwise"]  # one input channel per output channel
    assert c12.shapes()["w"] == (128, 1, 3, 3)
    assert c12.forward_flops() == 115_605_504  # 2*64*128*(1*9)*28*28
    c13 = workloads.WORKLOADS["c13_tconv"]  # (28 - 1)*2 - 0 + 2 = 56; every input times every weight
    assert c13.out_hw == (56, 56)
    assert c13.shapes() == {"x": (32, 64, 28, 28), "w": (64, 32, 2, 2), "b": (32,), "dout": (32, 32, 56, 56)}
    assert c13.forward_flops() == 411_041_792  # 2*32*64*28*28*32*2*2
    assert c13.work() == 3 * 411_041_792
    assert "groups=128" in c12.describe() and c13.describe().startswith("conv_transpose2d")


def test_training_step_flops_by_hand():
    # tr1: conv 3->32 7x7 on 32x32 (2*50*32*147*1024), fc 8192->100, fc 100->10; backward twice forward
    forward = 2 * 50 * 32 * 147 * 1024 + 2 * 50 * 8192 * 100 + 2 * 50 * 100 * 10
    assert forward == 563_709_600
    assert training.BY_NAME["tr1_cs231n"].work() == 3 * forward
    # tr2: conv 1->30 5x5 on 28x28 -> 24x24, fc 4320->100, fc 100->10
    assert training.BY_NAME["tr2_dlfs"].work() == 3 * (86_400_000 + 86_400_000 + 200_000)
    # tr3: conv 3->32, 32->32 at 32x32, 32->64 at 16x16, fc 4096->10 (BN, ReLU, pooling not counted)
    forward = 226_492_416 + 2_415_919_104 + 1_207_959_552 + 10_485_760
    assert training.BY_NAME["tr3_vgg_bn"].work() == 3 * forward


def test_every_bench_md_workload_is_defined():
    conv = ["c1_cs231n", "c2_cs231n_s2", "c3_resnet56", "c4_wide28", "c5_stem7x7", "c6_1x1", "c7_conv1d",
            "c8_cifar32", "c9_cifar16", "c10_cifar8", "c11_down", "c12_depthwise", "c13_tconv"]
    train = ["tr1_cs231n", "tr2_dlfs", "tr3_vgg_bn", "tr4_resnet", "tr5_mobilenet"]
    names = conv + ["t1_tiny", "p1_cs231n", "p2_max2", "p3_max3", "p4_avg2"] + train
    assert list(workloads.WORKLOADS) == names
    assert [w.name for w in workloads.WORKLOADS.values() if w.group == "conv"] == conv
    assert [w.name for w in workloads.WORKLOADS.values() if w.group == "train"] == train
    assert summary.GROUP_SIZES == {"conv": 13, "t1": 1, "pool": 4, "train": 5}


def test_select():
    assert [w.name for w in workloads.select("c1,p2")] == ["c1_cs231n", "p2_max2"]
    assert [w.name for w in workloads.select("c1,c10")] == ["c1_cs231n", "c10_cifar8"]
    assert [w.name for w in workloads.select("t1_tiny,t1")] == ["t1_tiny"]
    assert [w.name for w in workloads.select("tr1,tr3")] == ["tr1_cs231n", "tr3_vgg_bn"]
    assert [w.name for w in workloads.select("train")] == [w.name for w in training.WORKLOADS]
    assert len(workloads.select("conv,c1")) == 13
    assert [w.name for w in workloads.select("pool")] == ["p1_cs231n", "p2_max2", "p3_max3", "p4_avg2"]
    assert workloads.select("none") == []
    assert len(workloads.select(None)) == 23
    for bad in ("c99", "p", "tr"):
        with pytest.raises(ValueError, match="--only"):
            workloads.select(bad)


def test_skip_reasons_follow_what_fastconv_has(monkeypatch):
    c12, c13 = workloads.WORKLOADS["c12_depthwise"], workloads.WORKLOADS["c13_tconv"]
    tr4, tr5 = training.BY_NAME["tr4_resnet"], training.BY_NAME["tr5_mobilenet"]

    def conv2d_without_groups(x, w, b=None, stride=1, padding=0, dilation=1, *, backend=None):
        pass

    monkeypatch.setattr(workloads.fastconv, "conv2d", conv2d_without_groups)
    monkeypatch.delattr(workloads.fastconv, "conv_transpose2d", raising=False)
    for name in ("Residual", "AdaptiveAvgPool2D"):
        monkeypatch.delattr(nn, name, raising=False)
    monkeypatch.setattr(nn, "Conv2D", type("Conv2D", (), {"__init__": lambda self, in_channels, out_channels: None}))
    assert c12.unsupported() == "fastconv.conv2d has no groups= keyword yet"
    assert c13.unsupported() == "fastconv has no conv_transpose2d yet"
    assert tr4.unsupported() == "fastconv.nn has no Residual, AdaptiveAvgPool2D yet"
    assert tr5.unsupported() == "fastconv.nn has no Conv2D(groups=), AdaptiveAvgPool2D yet"
    assert workloads.WORKLOADS["c1_cs231n"].unsupported() is None
    assert training.BY_NAME["tr1_cs231n"].unsupported() is None

    # ... and they join as soon as the features exist.
    def conv2d_with_groups(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None):
        pass

    monkeypatch.setattr(workloads.fastconv, "conv2d", conv2d_with_groups)
    monkeypatch.setattr(workloads.fastconv, "conv_transpose2d", conv2d_with_groups, raising=False)
    monkeypatch.setattr(nn, "Residual", object, raising=False)
    monkeypatch.setattr(nn, "AdaptiveAvgPool2D", object, raising=False)
    assert c12.unsupported() is None and c13.unsupported() is None and tr4.unsupported() is None


def test_make_inputs_shapes_and_dtype():
    wl = workloads.WORKLOADS["c7_conv1d"]
    inputs = workloads.make_inputs(wl, np.float32)
    assert {k: v.shape for k, v in inputs.items()} == wl.shapes()
    assert all(v.dtype == np.float32 for v in inputs.values())


# --- statistics and summary --------------------------------------------------------------------

def test_geomean_and_rate():
    assert summary.geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert summary.geomean([0.5, 2.0, 1.0]) == pytest.approx(1.0)
    assert summary.geomean([]) is None
    with pytest.raises(ValueError):
        summary.geomean([1.0, 0.0])
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


def _targets(summary_dict, target=None, dtype=None, threads=None):
    return [t for t in summary_dict["targets"]
            if (target is None or t["target"] == target) and (dtype is None or t["dtype"] == dtype)
            and (threads is None or t["threads"] == threads)]


def test_summary_geomeans_and_conv_targets_at_both_thread_counts():
    rows = [
        _row("c1_cs231n", "float32", 2, 1.0, 2.0),    # 0.5
        _row("c3_resnet56", "float32", 2, 4.0, 2.0),  # 2.0: above 1.0, so the target is missed
        _row("c3_resnet56", "float32", 1, 8.0, 3.0),  # 2.67
        _row("c1_cs231n", "float32", 1, 1.0, 2.0),    # 0.5
        _row("c9_cifar16", "float32", 1, 1.4, 2.0),   # 0.7
        _row("t1_tiny", "float64", 2, 1.0, 4.0),      # 0.25
    ]
    result = summary.summarise(rows)
    groups = {(g["group"], g["dtype"], g["threads"]): g for g in result["groups"]}
    conv = groups[("conv", "float32", 2)]
    assert conv["geomean_ratio"] == pytest.approx(1.0) and conv["of"] == 13
    assert conv["max_ratio"] == pytest.approx(2.0) and conv["worst_workload"] == "c3_resnet56"

    (two,) = _targets(result, "convolution c1..c13", "float32", 2)
    assert two["rule"] == "geomean <= 0.75, none above 1.0"
    assert (two["measured"], two["of"], two["within"]) == (2, 13, 1)
    assert two["worst_workload"] == "c3_resnet56" and two["worst"] == pytest.approx(2.0)
    assert two["status"] == "missed"
    assert "c2" in two["not_measured"][0] and len(two["not_measured"]) == 11
    (one,) = _targets(result, "convolution c1..c13", "float32", 1)  # targets hold at 1 thread too
    assert (one["measured"], one["within"]) == (3, 2)
    assert one["geomean"] == pytest.approx((0.5 * 0.7 * 8 / 3) ** (1 / 3))
    assert one["status"] == "missed"
    (tiny,) = _targets(result, "t1_tiny", "float64", 2)
    assert tiny["status"] == "met" and (tiny["measured"], tiny["of"]) == (1, 1)
    # No c12, pooling or training rows: those targets are not listed at all.
    assert not _targets(result, "c12_depthwise") and not _targets(result, "pooling p1..p4")
    assert not _targets(result, "training tr1..tr5")
    lines = summary.summary_lines(result)
    assert any("MISSED" in line and "convolution c1..c13 float32 2T" in line for line in lines)


def test_summary_geomean_rule_alone_and_partial_status():
    rows = [_row("c1_cs231n", "float64", 2, 1.0, 4.0), _row("c2_cs231n_s2", "float64", 2, 2.0, 4.0)]
    (entry,) = _targets(summary.summarise(rows), "convolution c1..c13", "float64", 2)
    assert entry["rule"] == "geomean <= 0.4"
    assert entry["geomean"] == pytest.approx((0.25 * 0.5) ** 0.5)  # 0.354: met, on 2 of 13
    assert entry["status"] == "met (partial)" and entry["within"] == 1  # 0.25 is within 0.4, 0.5 is not


def test_summary_c12_pooling_and_training_targets():
    rows = [
        _row("c12_depthwise", "float32", 2, 1.0, 10.0),  # 0.1 <= 0.2
        _row("p1_cs231n", "float64", 1, 1.0, 2.0),       # 0.5 > 0.4
        _row("p2_max2", "float64", 1, 1.0, 4.0),         # 0.25
        _row("tr1_cs231n", "float32", 2, 7.0, 10.0),     # 0.7 <= 0.8
        _row("tr3_vgg_bn", "float32", 2, 9.0, 10.0),     # 0.9 > 0.8
        _row("tr1_cs231n", "float64", 2, 4.0, 10.0),     # 0.4 <= 0.5
    ]
    result = summary.summarise(rows)
    (c12,) = _targets(result, "c12_depthwise", "float32", 2)
    assert c12["status"] == "met" and c12["rule"] == "every ratio <= 0.2"
    (pool,) = _targets(result, "pooling p1..p4", "float64", 1)
    assert (pool["measured"], pool["of"], pool["within"]) == (2, 4, 1)
    assert pool["worst_workload"] == "p1_cs231n" and pool["status"] == "missed"
    (train32,) = _targets(result, "training tr1..tr5", "float32", 2)
    assert (train32["measured"], train32["within"], train32["worst_workload"]) == (2, 1, "tr3_vgg_bn")
    assert train32["status"] == "missed"
    (train64,) = _targets(result, "training tr1..tr5", "float64", 2)
    assert train64["status"] == "met (partial)" and train64["bound"] == 0.5
    conv = _targets(result, "convolution c1..c13", "float32", 2)[0]  # c12 counts in the geomean too
    assert conv["measured"] == 1 and conv["geomean"] == pytest.approx(0.1)


def test_summary_speedups_scaling_memory_and_peak():
    rows = [
        _row("c3_resnet56", "float32", 1, 8.0, 3.0),
        _row("c3_resnet56", "float32", 2, 4.0, 2.0),  # 8 / 4 = 2.0x (torch 1.5x)
        _row("p2_max2", "float32", 1, 4.0, 10.0),
        _row("p2_max2", "float32", 2, 3.0, 10.0),     # 1.33x: below 1.7
        _row("tr1_cs231n", "float32", 1, 30.0, 40.0),
        _row("tr1_cs231n", "float32", 2, 20.0, 25.0),  # 1.5x: below 1.6
        _row("c1_cs231n", "float32", 1, 3.0, 4.0),
        _row("c1_cs231n", "float32", 2, 3.3, 2.0),    # 0.91x: slower at 2 threads
    ]
    memory_rows = [
        {"workload": "c3_resnet56", "dtype": "float32", "threads": 2, "impl": "cython", "extra_percent": 10.0},
        {"workload": "c4_wide28", "dtype": "float32", "threads": 2, "impl": "cython", "extra_percent": 60.0},
        {"workload": "c3_resnet56", "dtype": "float32", "threads": 2, "impl": "torch", "extra_percent": 90.0},
    ]
    result = summary.summarise(rows, memory_rows)
    ups = {s["workload"]: s for s in result["speedups"]}
    assert ups["c3_resnet56"]["fastconv"] == pytest.approx(2.0) and ups["c3_resnet56"]["torch"] == pytest.approx(1.5)
    (kernels,) = _targets(result, "c3, c4, p2", "float32")
    assert (kernels["measured"], kernels["of"], kernels["within"]) == (2, 3, 1)
    assert kernels["worst_workload"] == "p2_max2" and kernels["worst"] == pytest.approx(4 / 3)
    assert kernels["status"] == "missed" and kernels["rule"] == "2 threads >= 1.7x faster than 1"
    (train,) = [t for t in _targets(result, "training tr1..tr5", "float32") if t["kind"] == "speedup"]
    assert train["within"] == 0 and train["worst"] == pytest.approx(1.5)
    (every,) = _targets(result, "every row", "float32")
    assert every["rule"] == "2 threads not slower than 1"
    assert (every["measured"], every["within"], every["worst_workload"]) == (4, 3, "c1_cs231n")
    (mem,) = [t for t in result["targets"] if t["kind"] == "memory"]
    assert (mem["measured"], mem["of"], mem["within"], mem["worst_workload"]) == (2, 13, 1, "c4_wide28")
    assert mem["status"] == "missed"
    peak = {(p["workload"], p["threads"]): p for p in result["peak"]}
    assert set(peak) == {("c3_resnet56", 1), ("c3_resnet56", 2)}  # c3, c4, c8, c9, c10 only
    work = workloads.WORKLOADS["c3_resnet56"].work()
    assert peak[("c3_resnet56", 2)]["fastconv"] == pytest.approx(work / 4e-3 / 1e9 / 217.0)
    lines = summary.summary_lines(result)
    assert any(line.startswith("fraction of GEMM peak c3_resnet56 float32 2T") for line in lines)
    assert any("extra memory" in line and "worst c4_wide28 60.0%" in line for line in lines)


def test_summary_without_torch_is_not_applicable():
    result = summary.summarise([_row("t1_tiny", "float32", 2, 1.0, None)])
    (group,) = result["groups"]
    assert group["geomean_ratio"] is None
    (target,) = result["targets"]
    assert target["status"] == "n/a" and target["measured"] == 0


def test_summary_lists_failed_rows_and_ignores_them_in_targets():
    failed = {"workload": "tr1_cs231n", "kind": "train", "group": "train", "dtype": "float32", "threads": 2,
              "impls": {}, "error": "losses differ", "ratio_fastconv": None}
    result = summary.summarise([failed, _row("tr2_dlfs", "float32", 2, 1.0, 2.0)])
    assert result["failed"] == [{"workload": "tr1_cs231n", "dtype": "float32", "threads": 2, "error": "losses differ"}]
    (train,) = _targets(result, "training tr1..tr5", "float32", 2)
    assert train["measured"] == 1 and "tr1_cs231n" in train["not_measured"]
    assert summary.summary_lines(result)[-1] == "FAILED tr1_cs231n float32 2T: losses differ"
    assert report.row_cells(failed)[3] == "FAILED (see the summary)"


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


def test_measure_phases_never_interleave():
    order = []

    def make(name):
        return (lambda: order.append(name), lambda state: None)

    result = timing.measure_phases([{"fastconv": make("fastconv"), "torch": make("torch")}, {}, {"numpy": make("numpy")}],
                                   settle_seconds=0, repeat=4, min_sample_seconds=0, gap_seconds=0)
    assert set(result) == {"fastconv", "torch", "numpy"}
    first_numpy = order.index("numpy")  # warm-up included: nothing of the first phase after it
    assert set(order[:first_numpy]) == {"fastconv", "torch"} and set(order[first_numpy:]) == {"numpy"}
    assert order.count("numpy") >= 5  # warm-up, then 4 repetitions


def test_measure_phases_settles_before_each_phase(monkeypatch):
    sleeps = []
    monkeypatch.setattr(timing.time, "sleep", sleeps.append)
    nothing = (lambda: None, lambda state: None)
    timing.measure_phases([{"a": nothing}, {"b": nothing}], settle_seconds=0.25, repeat=1, gap_seconds=0)
    assert sleeps == [0.25, 0.25]


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


# --- training steps --------------------------------------------------------------------------

def test_check_losses_tolerances():
    training.check_losses("tr", "float32", {"torch": [2.0, 1.9], "fastconv": [2.0001, 1.9], "numpy": [2.0, 1.90001]})
    with pytest.raises(training.TrainingError, match=r"fastconv .* differ from torch's"):
        training.check_losses("tr", "float32", {"torch": [2.0, 1.9], "fastconv": [2.0, 1.901]})
    training.check_losses("tr", "float64", {"torch": [2.0], "fastconv": [2.0 + 1e-11]})
    with pytest.raises(training.TrainingError, match="relative error 5.00e-10"):
        training.check_losses("tr", "float64", {"torch": [2.0], "fastconv": [2.0 + 1e-9]})
    with pytest.raises(training.TrainingError):
        training.check_losses("tr", "float32", {"torch": [2.0], "fastconv": [float("nan")]})
    # Without torch, the NumPy baseline is checked against fastconv.
    with pytest.raises(training.TrainingError, match="numpy .* differ from fastconv's"):
        training.check_losses("tr", "float32", {"fastconv": [2.0], "numpy": [2.1]})


def test_torch_twin_mirrors_the_model_and_its_weights():
    torch = pytest.importorskip("torch")
    model = training.BY_NAME["tr3_vgg_bn"].build(np.float32, np.random.default_rng(1))
    module = twin.to_torch(model, torch)
    assert [type(m).__name__ for m in module] == [
        "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU",
        "MaxPool2d", "Flatten", "Linear"]
    assert module[0].bias is None and module[3].bias is not None and module[0].padding == (1, 1)
    model.layers[1].buffers["running_var"][:] = 3.0  # buffers are copied too
    twin.copy_weights(model, module, torch)
    ours = model.state_dict()
    theirs = {name: value for name, value in module.state_dict().items() if not name.endswith("num_batches_tracked")}
    assert set(ours) == set(theirs)  # the same names: "0.weight", "1.running_var", ...
    for name, value in ours.items():
        np.testing.assert_array_equal(theirs[name].numpy(), value, err_msg=name)
    with pytest.raises(twin.TwinError, match="no torch twin for fastconv.nn.Dropout"):
        twin.to_torch(nn.Sequential(nn.Dropout(0.5)), torch)


@pytest.mark.parametrize("name, dtype", [("tr1_cs231n", "float64"), ("tr2_dlfs", "float32"), ("tr3_vgg_bn", "float64")])
def test_prepare_runs_the_same_training_in_all_three(name, dtype):
    torch = pytest.importorskip("torch")
    workload = dataclasses.replace(training.BY_NAME[name], batch=10)  # the model, on a small batch
    steps, losses = training.prepare(workload, dtype, fastconv_backend(), torch, ["fastconv", "torch", "numpy"])
    assert set(losses) == {"fastconv", "torch", "numpy"} and len(losses["torch"]) == training.CHECK_STEPS
    assert losses["torch"][0] == pytest.approx(np.log(10), rel=0.2)  # near chance at the start
    assert losses["torch"][-1] != losses["torch"][0]  # the optimizer did move the weights
    # After the check steps the weights still agree: backward and the optimizer match too.
    tol = {"float32": 1e-4, "float64": 1e-9}[dtype]
    theirs = steps["torch"].model.state_dict()
    for key, value in steps["fastconv"].model.state_dict().items():
        np.testing.assert_allclose(value, theirs[key].numpy(), rtol=tol, atol=tol, err_msg=key)
        np.testing.assert_allclose(steps["numpy"].model.state_dict()[key], value, rtol=tol, atol=tol)
    assert steps["fastconv"].x.dtype == np.dtype(dtype) and steps["torch"].x.dtype == getattr(torch, dtype)


def test_a_training_row_with_disagreeing_losses_fails_loudly(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    copy_weights = twin.copy_weights

    def copy_then_spoil(model, module, torch):
        copy_weights(model, module, torch)
        with torch.no_grad():
            module[0].weight.mul_(1.01)

    monkeypatch.setattr(twin, "copy_weights", copy_then_spoil)
    out_json = tmp_path / "r.json"
    status = main(["bench", "--only", "tr2", "--threads", "1", "--dtype", "float32", "--repeat", "1", "--no-numpy",
                   "--no-memory", "--no-progress", "--json", str(out_json)])
    assert status == 1
    text = capsys.readouterr().out
    assert "FAILED tr2_dlfs float32 1T: tr2_dlfs float32: the first 3 losses of fastconv" in text
    (row,) = json.loads(out_json.read_text())["rows"]
    assert row["impls"] == {} and row["ratio_fastconv"] is None and "do not compute the same thing" in row["error"]


class StandInResidual(nn.Layer):
    """``block(x) + shortcut(x)`` for these tests, until fastconv.nn has its own Residual."""

    def __init__(self, block, shortcut=None):
        self.block, self.shortcut = block, shortcut
        self.training = True

    def _parts(self):
        return [("block", self.block)] + ([("shortcut", self.shortcut)] if self.shortcut is not None else [])

    def _prefixed(self, attribute):
        return {f"{n}.{k}": v for n, part in self._parts() for k, v in getattr(part, attribute).items()}

    params = property(lambda self: self._prefixed("params"))
    grads = property(lambda self: self._prefixed("grads"))
    buffers = property(lambda self: self._prefixed("buffers"))

    def forward(self, x):
        return self.block.forward(x) + (x if self.shortcut is None else self.shortcut.forward(x))

    def backward(self, dout):
        return self.block.backward(dout) + (dout if self.shortcut is None else self.shortcut.backward(dout))

    def zero_grad(self):
        for _, part in self._parts():
            part.zero_grad()


class StandInGlobalAvgPool2D(nn.Layer):
    """AdaptiveAvgPool2D(1) for these tests."""

    def __init__(self, output_size, **kw):
        super().__init__(**kw)
        assert output_size == 1
        self.output_size = output_size

    def forward(self, x):
        self._cache = x.shape
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, dout):
        n, c, h, w = self._cache
        return np.broadcast_to(dout / (h * w), (n, c, h, w)).copy()


def test_resnet_step_with_residual_layers(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(nn, "Residual", StandInResidual, raising=False)
    monkeypatch.setattr(nn, "AdaptiveAvgPool2D", StandInGlobalAvgPool2D, raising=False)
    training._forward_flops.cache_clear()
    workload = training.BY_NAME["tr4_resnet"]
    assert workload.unsupported() is None
    # stem 3->16; block 16 (two 16->16); block 32 s2 (16->32, 32->32, 1x1 shortcut); block 64 s2; fc
    forward = (56_623_104 + 2 * 301_989_888 + 150_994_944 + 301_989_888 + 16_777_216
               + 150_994_944 + 301_989_888 + 16_777_216 + 81_920)
    assert workload.work() == 3 * forward
    steps, losses = training.prepare(dataclasses.replace(workload, batch=8), "float64", fastconv_backend(), torch,
                                     ["fastconv", "torch"])
    assert len(losses["torch"]) == training.CHECK_STEPS  # and they agreed, or prepare would have raised
    module = steps["torch"].model
    assert type(module[3]).__name__ == "Residual" and isinstance(module[3].shortcut, torch.nn.Identity)
    assert isinstance(module[5].shortcut, torch.nn.Conv2d) and module[5].shortcut.stride == (2, 2)
    assert breakdown.layer_label(3, steps["fastconv"].layers[3]) == "3 StandInResidual"  # the class name
    training._forward_flops.cache_clear()


def fastconv_backend():
    return "cython" if "cython" in impls.fastconv._backend._modules else "reference"


def test_layer_breakdown_and_load(tmp_path, capsys):
    pytest.importorskip("torch")
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["bench", "--only", "tr2", "--threads", "1", "--dtype", "float32", "--repeat", "2", "--layers",
                 "--no-numpy", "--no-memory", "--no-progress", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "tr2_dlfs float32 1T, where a step's time goes (medians of 2 instrumented steps):" in text
    (row,) = json.loads(out_json.read_text())["rows"]
    assert row["kind"] == "train" and row["work"] == training.BY_NAME["tr2_dlfs"].work()
    assert set(row["first_losses"]) == {"fastconv", "torch"}
    parts = row["layers"]["parts"]
    assert [p["part"] for p in parts] == [
        "0 Conv2D 1->30 5x5", "1 ReLU", "2 MaxPool2D 2x2", "3 Flatten", "4 Linear 4320->100", "5 ReLU",
        "6 Linear 100->10", "loss", "zero_grad", "optimizer", "other", "step"]
    for name in ("fastconv", "torch"):
        conv = parts[0][name]
        assert conv["forward_ms"] > 0 and conv["backward_ms"] > 0
        assert parts[-3][name]["backward_ms"] > 0  # the optimizer step
        assert parts[-2][name]["total_ms"] >= 0  # "other": the step's time outside every part
        assert parts[-1][name]["total_ms"] >= parts[0][name]["forward_ms"] + parts[0][name]["backward_ms"]
    assert row["impls"]["fastconv"]["forward_ms"]["median"] > 0 and row["impls"]["torch"]["backward_ms"]["median"] > 0

    assert main(["bench", "--load", str(out_json), "--markdown", str(out_md)]) == 0
    again = capsys.readouterr().out
    assert "where a step's time goes" in again and "training tr1..tr5" in again
    md = out_md.read_text()
    assert "| 0 Conv2D 1->30 5x5 |" in md and "| tr2_dlfs | float32 | 1 |" in md
    assert "| training tr1..tr5 | float32 | 1 | every ratio <= 0.8 |" in md


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
    assert result["summary"]["targets"][0]["status"] == "n/a"


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
    assert main(["bench", "--only", "t1", "--gap-ms", "-1", "--no-progress"]) == 2
    assert "--gap-ms" in capsys.readouterr().err


def test_numpy_baseline_runs_after_fastconv_and_torch(monkeypatch):
    pytest.importorskip("torch")
    log = []

    def logged(maker, name):
        def make(workload, inputs):
            forward, backward = maker(workload, inputs)

            def logged_forward():
                log.append((workload.name, name))
                return forward()
            return logged_forward, backward
        return make

    fastconv_maker, torch_maker = impls.fastconv_maker, impls.torch_maker
    monkeypatch.setattr(impls, "fastconv_maker",
                        lambda backend: logged(fastconv_maker(backend), "numpy" if backend == "reference" else "fastconv"))
    monkeypatch.setattr(impls, "torch_maker", lambda torch: logged(torch_maker(torch), "torch"))
    assert main(["bench", "--only", "t1,p1", "--threads", "1", "--dtype", "float32", "--repeat", "3",
                 "--no-memory", "--no-progress"]) == 0
    assert [w for w, _ in log] == sorted((w for w, _ in log), key=["t1_tiny", "p1_cs231n"].index)
    for workload in ("t1_tiny", "p1_cs231n"):
        names = [n for w, n in log if w == workload]
        first = names.index("numpy")
        assert set(names[:first]) == {"fastconv", "torch"} and set(names[first:]) == {"numpy"}, names
