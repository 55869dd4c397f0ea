"""The benchmark suite of BENCH.md behind ``python -m fastconv bench``.

workloads (shapes, FLOP and byte counts) -> impls (fastconv, PyTorch, NumPy baseline) ->
timing (round-robin medians) -> report (rates, ratios, geometric means, targets, tables, plot);
limits measures the machine, memory the peak extra memory in a fresh process, runner ties
them together.
"""
