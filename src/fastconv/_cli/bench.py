"""python -m fastconv bench: the benchmark suite of BENCH.md (see fastconv._bench)."""

from fastconv._bench.runner import add_arguments, run

__all__ = ["add_arguments", "run"]
