"""The API reference, generated from the public modules' ``__all__`` at every build.

Public modules are ``fastconv`` and each of its submodules whose name has no leading
underscore (found on disk, so a new one such as ``fastconv.dlfs`` gets its page without any
edit here; ``fastconv.dask`` is one even though ``fastconv`` does not import it). For each,
``config-inited`` writes ``api/<module>.rst``: the module's docstring, then an autosummary
table per kind of name in its ``__all__`` (functions, classes, exceptions, modules, data);
autosummary then writes one page per function or class into ``api/generated/``. A name
added to an ``__all__`` is thus documented by the next build, and one removed loses its page
(the generated files are rewritten from scratch each time).

Generating is not proof of documenting: ``env-check-consistency`` then checks that every name
in every public ``__all__`` is a registered object of the Python domain, and fails the build
with the list of those that are not (for example a name whose import failed, which
autosummary only warns about).
"""

import importlib
import inspect
import pkgutil
import shutil
import types
from pathlib import Path

from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

PACKAGE = "fastconv"
API_DIR = "api"            # under the Sphinx source directory; generated, ignored by git

# Section order on a module page. Autosummary writes each object's page from the template
# _templates/autosummary/<kind>.rst (function, class, exception).
KINDS = [("Functions", "function"), ("Classes", "class"), ("Exceptions", "exception")]


def public_modules():
    """``fastconv`` and its public submodules, imported, in a stable order."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + sorted(
        f"{PACKAGE}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    )
    return [importlib.import_module(name) for name in names]


def public_names(module):
    """The names a module exports; a public module without ``__all__`` is an error."""
    names = getattr(module, "__all__", None)
    if names is None:
        raise ExtensionError(f"{module.__name__} has no __all__: the API reference is generated from it")
    return list(names)


def kind_of(value):
    """'module', 'exception', 'class', 'function' or 'data'."""
    if isinstance(value, types.ModuleType):
        return "module"
    if inspect.isclass(value):
        return "exception" if issubclass(value, BaseException) else "class"
    if callable(value):
        return "function"
    return "data"


def module_page(module):
    """The reST of a module's page."""
    name = module.__name__
    by_kind = {}
    for item in public_names(module):
        by_kind.setdefault(kind_of(getattr(module, item)), []).append(item)
    lines = [name, "=" * len(name), "", f".. automodule:: {name}", "", f".. currentmodule:: {name}", ""]
    for title, kind in KINDS:
        if by_kind.get(kind):
            lines += [title, "-" * len(title), "", ".. autosummary::", "   :toctree: generated",
                      "   :nosignatures:", ""]
            lines += [f"   {item}" for item in by_kind[kind]] + [""]
    if by_kind.get("module"):
        lines += ["Modules", "-------", ""]
        lines += [f"- :mod:`{name}.{item}`" for item in by_kind["module"]] + [""]
    if by_kind.get("data"):
        lines += ["Data", "----", ""]
        for item in by_kind["data"]:
            lines += [f".. autodata:: {item}", "   :no-value:", ""]
    return "\n".join(lines)


def index_page(modules):
    title = "API reference"
    lines = [title, "=" * len(title), "",
             "One page per public module, one per function and class: generated at build time "
             "from each module's ``__all__``.", "",
             ".. toctree::", "   :hidden:", ""]
    lines += [f"   {module.__name__}" for module in modules] + [""]
    lines += [".. autosummary::", "   :nosignatures:", ""]
    lines += [f"   {module.__name__}" for module in modules] + [""]
    return "\n".join(lines)


def generate(app, config):
    out = Path(app.srcdir) / API_DIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    modules = public_modules()
    for module in modules:
        (out / f"{module.__name__}.rst").write_text(module_page(module))
    (out / "index.rst").write_text(index_page(modules))
    count = sum(len(public_names(m)) for m in modules)
    logger.info(f"[fastconv_api] {len(modules)} module pages, {count} public names, "
                f"from {importlib.import_module(PACKAGE).__file__}")


def missing_objects(modules, registered):
    """Public names (``module.name``) that are not in ``registered`` (a set of full names)."""
    wanted = [m.__name__ for m in modules]
    wanted += [f"{m.__name__}.{item}" for m in modules for item in public_names(m)]
    return [name for name in wanted if name not in registered]


def check(app, env):
    # Objects described on a page of the API reference (not merely mentioned in the guide).
    objects = env.get_domain("py").objects
    registered = {name for name, entry in objects.items() if entry.docname.startswith(f"{API_DIR}/")}
    missing = missing_objects(public_modules(), registered)
    if missing:
        raise ExtensionError("public names without a page in the API reference: " + ", ".join(missing))
    logger.info("[fastconv_api] every public name has its page")


def setup(app):
    # At config-inited, before Sphinx lists the source files and autosummary reads them.
    app.connect("config-inited", generate)
    app.connect("env-check-consistency", check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
