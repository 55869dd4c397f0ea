"""python -m fastconv check (placeholder)."""


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true")


def run(args):
    print("nothing to check yet")
    return 0
