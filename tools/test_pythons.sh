#!/usr/bin/env bash
# Test fastconv on every supported CPython that pyenv has: build the sdist once, then for each
# Python install it (a build from scratch) in a fresh venv with the test extra's requirements
# and run the test suite against that install.
#
# Usage: tools/test_pythons.sh [--skip VERSION] [VERSION ...]
#   VERSION                     X.Y; default: every supported one, 3.10 3.11 3.12 3.13
#   --skip VERSION              leave one out (CI: the version its own full runs already use)
#   TEST_PYTHONS_PROFILE=NAME   hypothesis profile of these runs (tests/conftest.py; default:
#                               the suite's own "default")
#   TEST_PYTHONS_KEEP=1         keep the work directory
#
# Each VERSION is found as the newest pyenv-installed CPython X.Y.*; a version that is missing
# is a failure, not a skip (the point is that every supported Python was tested).
#
# PyTorch, the test extra's yardstick, is installed only when a wheel of the pinned version for
# that interpreter is on local disk (pip's find-links / file indexes, asked with --no-index; its
# dependencies then come from the index as usual): from PyPI it would be a multi-GB CUDA build. Without it the torch comparisons skip themselves;
# everything else, the compiled-vs-reference cross-checks included, runs on every Python.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
skip=""
if [[ ${1:-} == --skip ]]; then skip=${2:?--skip needs a version}; shift 2; fi
if (( $# )); then versions=("$@"); else versions=(3.10 3.11 3.12 3.13); fi
host_python=${PYTHON:-python3}
pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
work=$(mktemp -d "${TMPDIR:-/tmp}/fastconv-test-pythons.XXXXXX")
if [[ ${TEST_PYTHONS_KEEP:-0} == 1 ]]; then
    trap 'echo "test_pythons: work directory kept: $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PIP_DISABLE_PIP_VERSION_CHECK=1
unset FASTCONV_BACKEND FASTCONV_USE_OPENMP FASTCONV_REQUIRE_OPENMP FASTCONV_DEBUG_CYTHON PYTHONPATH
[[ -n ${TEST_PYTHONS_PROFILE:-} ]] && export HYPOTHESIS_PROFILE=$TEST_PYTHONS_PROFILE

step() { printf '\n=== %s\n' "$*"; }
fail() { printf 'test_pythons: FAILED: %s\n' "$*" >&2; exit 1; }

# The newest pyenv CPython X.Y.* (plain releases only: no t/dev/rc suffix).
find_python() {
    local found
    found=$(ls -d "$pyenv_root"/versions/"$1".* 2>/dev/null | grep -E "/$1\.[0-9]+$" | sort -V | tail -n 1)
    [[ -n $found && -x $found/bin/python ]] && echo "$found/bin/python"
}

step "copy of the source tree (tracked and new files; no build products)"
mkdir "$work/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 -I{} sh -c 'test -e "{}" && echo "{}"' | tar -cf - -T -) | tar -xf - -C "$work/src"

step "sdist (once, with $host_python)"
"$host_python" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install -q build
(cd "$work/src" && "$work/tools/bin/python" -m build --sdist --outdir "$work/dist" . >"$work/sdist.log" 2>&1) \
    || { tail -n 40 "$work/sdist.log"; fail "python -m build --sdist"; }
sdist=$(ls "$work"/dist/fastconv-*.tar.gz)
echo "$(basename "$sdist")"

summary=()
for version in "${versions[@]}"; do
    [[ $version == "$skip" ]] && { echo "CPython $version: skipped (--skip)"; continue; }
    python=$(find_python "$version") || fail "no pyenv CPython $version under $pyenv_root/versions"
    venv="$work/venv-$version"
    step "CPython $version ($python)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip packaging

    start=$SECONDS
    "$venv/bin/python" -m pip install -q "$sdist" || fail "$version: pip install of the sdist"
    build_s=$(( SECONDS - start ))

    # The test extra as the installed sdist declares it; torch apart (see the header).
    mapfile -t others < <("$venv/bin/python" "$work/src/tools/extra_requirements.py" test --without torch)
    torch_req=$("$venv/bin/python" "$work/src/tools/extra_requirements.py" test | grep -E '^torch([^A-Za-z0-9_.-]|$)' || true)
    "$venv/bin/python" -m pip install -q "${others[@]}" || fail "$version: the test requirements"
    # A local wheel of torch itself, for this interpreter (its dependencies come from the index).
    torch="no"
    if [[ -n $torch_req ]] && "$venv/bin/python" -m pip download -q --no-index --no-deps --only-binary=:all: \
            -d "$work/torch-$version" "$torch_req" >/dev/null 2>&1; then
        "$venv/bin/python" -m pip install -q "$work/torch-$version"/torch-*.whl || fail "$version: torch from $work/torch-$version"
        torch=$("$venv/bin/python" -c "import torch; print(torch.__version__)")
    fi
    echo "installed in $build_s s (the build); test requirements: ${others[*]}; torch: $torch"

    # From the copy of the tree: tests/ and the files they read, while `import fastconv` is the
    # install (with the src/ layout nothing there is importable as fastconv).
    (cd "$work/src" && "$venv/bin/python" -c "
import sys, fastconv
c = fastconv.show_config()
assert fastconv.__file__.startswith(sys.prefix), ('tests would import', fastconv.__file__)
assert c['backend'] == 'cython' and c['openmp'], c
print('fastconv', c['version'], 'from', fastconv.__file__, '- numpy', c['numpy'])
") || fail "$version: the installed fastconv"

    start=$SECONDS
    status=0
    (cd "$work/src" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests) | tee "$work/pytest-$version.log" \
        || status=$?
    suite_s=$(( SECONDS - start ))
    result=$(grep -E '^=* ?[0-9]+ (passed|failed)' "$work/pytest-$version.log" | tail -n 1 | tr -d '=' | sed 's/^ *//')
    summary+=("CPython $version: build $build_s s, suite $suite_s s, torch $torch: $result")
    (( status == 0 )) || { printf '%s\n' "${summary[@]}"; fail "$version: the test suite"; }
done

step "summary (hypothesis profile: ${HYPOTHESIS_PROFILE:-default})"
printf '%s\n' "${summary[@]}"
