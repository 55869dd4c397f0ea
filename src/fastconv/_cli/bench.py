"""python -m fastconv bench (placeholder until the benchmark suite lands)."""


def add_arguments(parser):
    pass


def run(args):
    print("the benchmark suite is not written yet")
    return 1
