"""The benchmark suite of BENCH.md behind ``python -m fastconv bench``.

workloads (kernel shapes, FLOP and byte counts; the registry of every workload) and training
(the training-step models, their torch twins, the loss check, the per-layer breakdown) ->
impls (fastconv, PyTorch, NumPy baseline for the kernels) -> timing (round-robin medians, the
NumPy baseline in a phase of its own) -> report (rates, ratios, tables, Markdown, plot) and
summary (geometric means, BENCH.md's targets counted); limits measures the machine, memory the
peak extra memory in a fresh process, runner ties them together.
"""
