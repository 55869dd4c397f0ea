#!/usr/bin/env bash
# Build the HTML documentation with every warning an error (-W, and -n: every cross-reference
# must resolve), running the gallery's examples.
#
# Usage: tools/build_docs.sh [OUTDIR]     (default: build/docs/html; open OUTDIR/index.html)
#   PYTHON=...   the interpreter (default: python); it must import fastconv (an install, or
#                src/ on PYTHONPATH after an in-place build) and have the docs extra:
#                pip install ".[docs]"
#
# The API pages (docs/api/) and the gallery's pages (docs/auto_examples/) are generated into
# the source directory at every build and ignored by git; they are removed first, so that a
# page whose name has left an __all__ does not linger. No network is needed: the build uses
# no intersphinx inventories.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python}
out=${1:-$repo/build/docs/html}
doctrees=$(dirname "$out")/doctrees

rm -rf "$repo/docs/api" "$repo/docs/auto_examples" "$repo/docs/sg_execution_times.rst" "$out" "$doctrees"
# The gallery's figures do not depend on the thread count; on a busy shared machine 1 thread
# is the quickest and least disruptive.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MPLBACKEND=Agg
start=$SECONDS
"$python" -m sphinx -b html -W --keep-going -n -q -d "$doctrees" "$repo/docs" "$out"
pages=$(find "$out" -name '*.html' -not -path '*/_static/*' -not -name 'genindex.html' \
        -not -name 'search.html' -not -name 'py-modindex.html' | wc -l)
echo "build_docs: $pages pages in $(( SECONDS - start )) s: $out/index.html"
