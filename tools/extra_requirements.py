"""Print the requirements of one of fastconv's extras, one a line, as the installed fastconv
declares them, for the interpreter that runs this (so that a script can install an extra's requirements without building fastconv
again, which ``pip install ".[extra]"`` would do).

    python tools/extra_requirements.py docs
    python tools/extra_requirements.py test --without torch
"""

import argparse
import sys
from importlib.metadata import PackageNotFoundError, requires

from packaging.requirements import Requirement


def extra_requirements(extra, without=()):
    """The requirements that `extra` adds for this interpreter (their markers evaluated here)."""
    found = []
    for text in requires("fastconv") or []:
        req = Requirement(text)
        if req.marker is None or not req.marker.evaluate({"extra": extra}) or req.marker.evaluate({"extra": ""}):
            continue  # a base dependency, or another extra's
        if req.name in without:
            continue
        req.marker = None
        found.append(str(req))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("extra")
    parser.add_argument("--without", action="append", default=[], metavar="NAME",
                        help="leave this distribution out (repeatable)")
    args = parser.parse_args(argv)
    try:
        found = extra_requirements(args.extra, set(args.without))
    except PackageNotFoundError:
        sys.exit("extra_requirements: fastconv is not installed")
    if not found:
        sys.exit(f"extra_requirements: fastconv has no extra {args.extra!r} (or it is empty)")
    print("\n".join(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
