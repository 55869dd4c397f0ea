"""Sphinx configuration of fastconv's documentation (built by tools/build_docs.sh).

The docs document the fastconv that Python imports (an install, or src/ on PYTHONPATH after
an in-place build): nothing here puts src/ on sys.path, so that a stale source tree can never
shadow the compiled package that the gallery runs.
"""

import os
import re
import sys
from pathlib import Path

import fastconv

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "fastconv"
author = "fastconv developers"
copyright = "fastconv developers"
release = fastconv.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "fastconv_api",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "_ext", "_templates", "gallery"]
# Every cross-reference must resolve (tools/build_docs.sh also passes -n). No intersphinx: the
# build is offline, so references stay inside fastconv; numpydoc's parameter types stay text.
nitpicky = True

# -- autodoc, autosummary, numpydoc -----------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"            # signatures come from the code, types from the docstrings
autodoc_preserve_defaults = True      # defaults as written (np.float32), not their repr
add_module_names = False
numpydoc_show_class_members = False   # the class template lists members with autodoc
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- MyST (the Markdown user guide, docs/numerics.md among it) --------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- sphinx-gallery ----------------------------------------------------------------------------
def _skipped_examples():
    """Gallery examples whose feature is not in this fastconv yet: left out of the build."""
    skipped = []
    if not hasattr(fastconv.nn, "ConvTranspose2D"):
        skipped.append("plot_autoencoder.py")
    return skipped


SKIPPED_EXAMPLES = _skipped_examples()
if SKIPPED_EXAMPLES:
    print(f"[conf] gallery examples left out (feature missing): {', '.join(SKIPPED_EXAMPLES)}")

sphinx_gallery_conf = {
    "examples_dirs": ["gallery"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",        # execute every plot_*.py
    "ignore_pattern": "|".join([r"__init__\.py"] + [re.escape(name) for name in SKIPPED_EXAMPLES]),
    "within_subsection_order": "gallery_order.GalleryOrder",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "show_memory": False,
    "capture_repr": (),
    # An example that raises fails the build (sphinx-gallery's default, spelled out).
    "only_warn_on_example_error": False,
}
# The examples run in this process: they find the repository (benchmarks/results/) here.
os.environ.setdefault("FASTCONV_REPO", str(REPO))

# -- HTML --------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"fastconv {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
html_copy_source = False
