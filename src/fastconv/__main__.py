"""Command line: python -m fastconv info | check | bench (see --help of each)."""

import argparse
import importlib
import sys

COMMANDS = {
    "info": "show the configuration (version, backend, OpenMP, threads, BLAS, compiler)",
    "check": "cross-check the compiled kernels against fastconv.reference on random configurations",
    "bench": "benchmark fastconv against PyTorch and plain NumPy (../shared/BENCH.md workloads)",
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{info,check,bench}")
    modules = {}
    for name, help_text in COMMANDS.items():
        modules[name] = importlib.import_module(f"fastconv._cli.{name}")
        modules[name].add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    return modules[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
