"""Packaging: what an installed fastconv carries and how it behaves when its binary is broken.

* the version lives in one place (fastconv/_version.py) and the installed metadata agrees;
* the typing files (py.typed, .pyi stubs) are installed and the stubs match the real signatures;
  mypy accepts a typed use of the API (skipped when mypy is not installed);
* an installed wheel holds no Cython sources, C files, tests or benchmarks (skipped for an
  editable install, which has no file list; tools/check_wheel.sh runs it on a real wheel);
* every module-level import of a third-party package is a declared runtime dependency;
* a damaged compiled extension (a corrupt shared library, as after a bad copy or a wheel for
  another platform) leaves `import fastconv` working on the reference backend with one
  warning that says why, and the command line says so too.

The plain "extension missing" fallback is covered by test_backend.py.
"""

import ast
import importlib.metadata
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastconv
import fastconv.reference

PACKAGE_DIR = Path(fastconv.__file__).parent
REPO = Path(__file__).resolve().parents[1]
DIST = importlib.metadata.distribution("fastconv")


def _is_editable():
    direct_url = DIST.read_text("direct_url.json")
    return bool(direct_url) and json.loads(direct_url).get("dir_info", {}).get("editable", False)


# ----------------------------------------------------------------------------------------------
# Version and metadata
# ----------------------------------------------------------------------------------------------

def test_version_matches_installed_metadata():
    assert fastconv.__version__ == importlib.metadata.version("fastconv")
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?(a|b|rc|dev|post)\d+)*", fastconv.__version__)
    assert fastconv.show_config()["version"] == fastconv.__version__


def test_version_is_written_in_one_place():
    """pyproject.toml reads the version from _version.py and states none of its own."""
    pyproject = REPO / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("pyproject.toml not beside the tests")
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(pyproject.read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "fastconv._version.__version__"
    # No other file of the package spells the version out.
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.name != "_version.py":
            assert not re.search(r"__version__\s*=\s*['\"]", path.read_text()), path


# Optional subpackages, which `import fastconv` never imports, and the packages of the extra
# that their modules may import at module level (test_optional_extras_are_declared checks that
# the extras declare them).
OPTIONAL_SUBPACKAGES = {"dask": {"dask", "distributed"}}


def test_runtime_dependencies_are_declared():
    """Every module-level import of a third-party package is in Requires-Dist (without extras).

    Optional packages (torch, matplotlib, tqdm, ...) may only be imported inside functions,
    except in an optional subpackage (fastconv.dask), which imports its own extra's packages.
    """
    declared = {
        re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("-", "_")
        for requirement in DIST.requires or []
        if "extra ==" not in requirement
    }
    assert {"numpy", "scipy", "threadpoolctl"} <= declared
    undeclared = []
    for path in PACKAGE_DIR.rglob("*.py"):
        subpackage = path.relative_to(PACKAGE_DIR).parts[0]
        allowed = declared | OPTIONAL_SUBPACKAGES.get(subpackage, set())
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:  # module level only: imports inside functions are lazy
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "fastconv" and top not in allowed:
                    undeclared.append(f"{path.relative_to(PACKAGE_DIR)}: {name}")
    assert not undeclared, undeclared


def test_optional_extras_are_declared():
    """The extra named after each optional subpackage installs what its modules import, and so
    does the test extra (CI installs ".[test]" and runs the subpackage's tests)."""
    pyproject = REPO / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("pyproject.toml not beside the tests")
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]

    def names(extra):
        return {re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower().replace("-", "_") for r in extras[extra]}

    for subpackage, packages in OPTIONAL_SUBPACKAGES.items():
        assert packages <= names(subpackage), (subpackage, extras.get(subpackage))
        assert packages <= names("test"), extras["test"]


def test_license_is_in_the_metadata():
    metadata = DIST.metadata
    assert metadata.get("License-Expression") == "BSD-3-Clause" or "BSD" in (metadata.get("License") or "")
    if not _is_editable():
        assert any(str(f).endswith("LICENSE") for f in DIST.files or []), "LICENSE not installed"


# ----------------------------------------------------------------------------------------------
# Typing
# ----------------------------------------------------------------------------------------------

def test_typing_files_are_installed():
    assert (PACKAGE_DIR / "py.typed").is_file()
    assert (PACKAGE_DIR / "__init__.pyi").is_file()
    assert (PACKAGE_DIR / "reference" / "__init__.pyi").is_file()


def _stub_signatures(stub):
    """{function name: [(parameter name, kind, default source or None)]} from a .pyi file."""
    tree = ast.parse(stub.read_text())
    result = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
            params = [(a.arg, "positional", d and ast.unparse(d)) for a, d in zip(positional, defaults)]
            params += [
                (a.arg, "keyword", d and ast.unparse(d)) for a, d in zip(args.kwonlyargs, args.kw_defaults)
            ]
            result[node.name] = params
    return result


def _runtime_signature(function):
    kinds = {
        inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
        inspect.Parameter.POSITIONAL_ONLY: "positional",
        inspect.Parameter.KEYWORD_ONLY: "keyword",
    }
    return [
        (p.name, kinds[p.kind], None if p.default is inspect.Parameter.empty else repr(p.default))
        for p in inspect.signature(function).parameters.values()
    ]


@pytest.mark.parametrize("module", [fastconv, fastconv.reference], ids=["fastconv", "fastconv.reference"])
def test_stubs_match_the_runtime_signatures(module):
    """Every public function is in the stub with the same parameters, kinds and defaults."""
    stub = Path(module.__file__).with_suffix(".pyi")
    stubbed = _stub_signatures(stub)
    public_functions = sorted(
        name for name in module.__all__ if inspect.isfunction(getattr(module, name))
    )
    assert sorted(stubbed) == public_functions
    for name in public_functions:
        assert stubbed[name] == _runtime_signature(getattr(module, name)), name


@pytest.fixture(scope="module")
def mypy(tmp_path_factory):
    """Run mypy (from this interpreter, so it sees the installed fastconv) on a file.

    The two mypy tests share one cache, so NumPy's stubs are analysed once (~10 s).
    """
    pytest.importorskip("mypy", reason="mypy is not installed")
    import fastconv

    cache = tmp_path_factory.mktemp("mypy_cache")
    # mypy ignores PYTHONPATH: when the fastconv under test is a source tree on it (not the one
    # in site-packages, or the one an editable install points to), point mypy at that tree, and
    # silence errors inside the package as mypy does for an installed one.
    env, extra = dict(os.environ), []
    source = Path(fastconv.__file__).resolve().parents[1]
    if "site-packages" not in source.parts:
        env["MYPYPATH"], extra = str(source), ["--follow-imports=silent"]

    def run(path, *options):
        return subprocess.run(
            [sys.executable, "-m", "mypy", *options, *extra, "--cache-dir", str(cache),
             "--config-file", os.devnull, str(path)],
            capture_output=True, text=True, cwd=cache, timeout=600, env=env,
        )
    return run


def test_mypy_accepts_typed_usage(mypy):
    """mypy --strict on tests/typing_usage.py, resolving fastconv as installed (stubs + py.typed)."""
    proc = mypy(Path(__file__).with_name("typing_usage.py"), "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_rejects_a_wrong_call(mypy, tmp_path):
    """The stubs are really used: a hyper-parameter of the wrong type is a type error."""
    bad = tmp_path / "bad_usage.py"
    bad.write_text("import numpy as np\nimport fastconv\n"
                   "fastconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), stride='2')\n")
    proc = mypy(bad, "--strict")
    assert proc.returncode == 1 and 'Argument "stride" to "conv2d"' in proc.stdout, proc.stdout


def test_typed_usage_runs():
    """The typed usage file is real code: it runs on the installed package."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import typing_usage
    finally:
        sys.path.pop(0)
    assert np.isfinite(typing_usage.typed_usage())


# ----------------------------------------------------------------------------------------------
# What an installed wheel holds
# ----------------------------------------------------------------------------------------------

def test_installed_files_hold_no_sources_tests_or_benchmarks():
    if _is_editable():
        pytest.skip("editable install: no installed file list (tools/check_wheel.sh checks the wheel)")
    files = [str(f).replace("\\", "/") for f in DIST.files or []]
    assert any(f.startswith("fastconv/_ext/_openmp_info.") for f in files), files
    unwanted = [
        f for f in files
        if f.endswith((".pyx", ".pxd", ".c", ".html"))
        or f.split("/")[0] in ("tests", "benchmarks", "examples")
    ]
    assert not unwanted, unwanted


# ----------------------------------------------------------------------------------------------
# A damaged compiled extension
# ----------------------------------------------------------------------------------------------

def _copy_with_corrupt_extensions(tmp_path):
    """A copy of the installed package whose compiled modules are not valid shared libraries."""
    copy = tmp_path / "site" / "fastconv"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.c", "*.html"))
    compiled = [p for p in (copy / "_ext").iterdir() if p.suffix in (".so", ".pyd")]
    for path in compiled:
        path.write_bytes(b"this is not a shared library\n" * 8)
    return copy.parent, compiled


def _run(args, site, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("FASTCONV_BACKEND", "PYTHONWARNINGS")}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300,
        env=dict(env, PYTHONPATH=str(site)), cwd=site, **kwargs,
    )


def test_corrupt_extension_falls_back_with_one_clear_warning(tmp_path):
    site, compiled = _copy_with_corrupt_extensions(tmp_path)
    if not compiled:
        pytest.skip("no compiled modules installed: nothing to corrupt")
    code = textwrap.dedent(
        """
        import json, sys, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import numpy as np
            import fastconv, fastconv.reference
            y = fastconv.conv2d(np.arange(9.0).reshape(1, 1, 3, 3), np.ones((1, 1, 2, 2)))
        config = fastconv.show_config()
        print(json.dumps({
            "file": fastconv.__file__, "backend": fastconv.get_backend(), "openmp": config["openmp"],
            "extension": config["extension"], "y": y.tolist(),
            "warnings": [(w.category.__name__, str(w.message)) for w in caught],
        }))
        """
    )
    proc = _run(["-c", code], site)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).is_relative_to(site), "the copy was not the package imported"
    assert out["backend"] == "reference"
    assert out["openmp"] is False and out["extension"].startswith("not loaded")
    # 2x2 window sums of [[0, 1, 2], [3, 4, 5], [6, 7, 8]], by hand.
    assert out["y"] == [[[[8.0, 12.0], [20.0, 24.0]]]]
    assert len(out["warnings"]) == 1, out["warnings"]
    category, message = out["warnings"][0]
    assert category == "RuntimeWarning"
    assert "reference" in message and "could not be imported" in message
    # The warning carries the loader's reason, so the user can tell what is broken.
    assert "fastconv._ext" in message or any(p.stem.split(".")[0] in message for p in compiled), message


def test_corrupt_extension_command_line(tmp_path):
    """`info` still works and reports the reference backend; `check` fails with a clear reason."""
    site, compiled = _copy_with_corrupt_extensions(tmp_path)
    if not compiled:
        pytest.skip("no compiled modules installed: nothing to corrupt")
    info = _run(["-m", "fastconv", "info"], site)
    assert info.returncode == 0, info.stderr
    assert re.search(r"^backend\s+reference$", info.stdout, re.MULTILINE), info.stdout
    assert info.stderr.count("could not be imported") == 1, info.stderr
    check = _run(["-m", "fastconv", "check", "--quick"], site)
    assert check.returncode == 1
    assert "compiled backend is not available" in check.stdout, check.stdout
