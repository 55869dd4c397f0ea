"""The benchmark suite of BENCH.md behind ``python -m fastconv bench``.

workloads (kernel shapes, FLOP and byte counts; the registry of every workload) and training
(the training-step models, their steps, the loss check; twin builds their torch.nn twins,
breakdown times them layer by layer) -> impls (fastconv, PyTorch, NumPy baseline for the
kernels) -> timing (round-robin medians, the NumPy baseline in a phase of its own) -> report
(rates, ratios, tables, Markdown, plot) and summary (geometric means, BENCH.md's targets
counted); limits measures the machine, memory the peak extra memory in a fresh process,
runner ties them together.
"""
