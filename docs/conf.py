"""Sphinx configuration of the strands-trio docs.

Build: ``sphinx-build -W --keep-going -E -b html docs docs/_build/html`` (as ``.ci/run`` does),
after ``pip install -e '.[docs]'``. The pages stay Markdown (MyST); the API reference is
autodoc. Offline: intersphinx reads the inventories in ``_inventories/``.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.metadata
import sys
from typing import Any, TypeVar, cast

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext.intersphinx import resolve_reference_in_inventory
from sphinx.pycode import ModuleAnalyzer
from sphinx.transforms.post_transforms import SphinxPostTransform

project = "strands-trio"
author = "the strands-trio authors"
copyright = "the strands-trio authors"
release = importlib.metadata.version("strands-trio")
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
    "myst_parser",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# examples/ is code (the pages include excerpts of it), _inventories/ the intersphinx files.
exclude_patterns = ["_build", "examples", "_inventories", "**/__pycache__"]

# Every cross-reference must resolve: a typo or a renamed object fails the build (-W).
nitpicky = True
nitpick_ignore = [
    # Private classes that appear in the signatures of public ones (an internal constructor's
    # argument, what a broker hub's hooks take), on purpose not documented.
    ("py:class", "strands_trio._host.Target"),
    ("py:class", "strands_trio.broker._roster.ClientEntry"),
    # A broker's cluster node: in strands_trio.broker.cluster, imported only with Redis (and
    # so for typing only in BrokerAddress).
    ("py:class", "ClusterNode"),
    ("py:class", "strands_trio.testing._fake_broker._Link"),
    ("py:class", "strands_trio.redis._link.Link"),
    # Third-party types with no inventory to link to: prometheus_client has no Sphinx docs,
    # and PyJWT's do not document these (imported for typing only, so unqualified here).
    ("py:class", "CollectorRegistry"),
    # attrs' protocol of attrs instances (what StrandsApp sends as a typed message): attrs'
    # docs mention it but do not document it as an object.
    ("py:class", "attr.AttrsInstance"),
    ("py:class", "AllowedPublicKeys"),
    ("py:class", "PyJWK"),
]

# -- MyST: the pages are Markdown that also reads well on GitHub ----------------------------------
myst_heading_anchors = 3  # [text](page.md#a-heading) works as on GitHub

# -- autodoc and napoleon: docstrings are Google style --------------------------------------------
# sphinxcontrib-trio extends autodoc's class-based documenters, so that members too are shown
# as `await f()`, `async with f()` or `@decorator`; Sphinx 9's new autodoc would bypass it.
autodoc_use_legacy_class_based = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_attr_annotations = True

# -- intersphinx, without the network -------------------------------------------------------------
# The inventories are kept in _inventories/, made from the sdists of the versions we run on
# (_inventories/rebuild.py), so a build never fetches anything and -W cannot fail on a fetch.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", "_inventories/python.inv"),
    "trio": ("https://trio.readthedocs.io/en/stable/", "_inventories/trio.inv"),
    "attrs": ("https://www.attrs.org/en/stable/", "_inventories/attrs.inv"),
    "cattrs": ("https://catt.rs/en/stable/", "_inventories/cattrs.inv"),
}

# -- HTML -----------------------------------------------------------------------------------------
# sphinx_rtd_theme: the theme of Trio's own docs, which these pages link to throughout.
html_theme = "sphinx_rtd_theme"
html_title = f"strands-trio {release}"


# -- Public names for private homes ---------------------------------------------------------------
# Classes live in private modules (strands_trio._client) and are documented where they are
# imported from (strands_trio.StrandsClient). Signatures name the private home; this resolves
# such a reference to the documented public name, and shows a type variable (F, T) as text.

PUBLIC_MODULES = [
    "strands_trio",
    "strands_trio.context",
    "strands_trio.protocol",
    "strands_trio.middleware",
    "strands_trio.testing",
    "strands_trio.broker",
]


def _public_names() -> dict[str, str]:
    """``home.qualname`` of each public object to its first public name."""
    names: dict[str, str] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            home = getattr(obj, "__module__", None)
            qualname = getattr(obj, "__qualname__", None)
            if home and qualname and home.startswith("strands_trio"):
                names.setdefault(f"{home}.{qualname}", f"{module_name}.{name}")
    return names


PUBLIC = _public_names()


def _is_type_variable(target: str) -> bool:
    module_name, _, name = target.rpartition(".")
    if not module_name.startswith("strands_trio."):
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    return isinstance(getattr(module, name, None), TypeVar)


def _resolve_private(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    public = PUBLIC.get(target)
    if public is None:
        owner, _, member = target.rpartition(".")
        if owner in PUBLIC:
            public = f"{PUBLIC[owner]}.{member}"
    if public is not None:
        domain = env.get_domain("py")
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
        )
    if _is_type_variable(target):
        return contnode
    return None


class _BuiltinsFromPython(SphinxPostTransform):
    """Resolve a builtin class in an annotation (``type``, ``str``) to Python's docs.

    Sphinx looks annotations up in "fuzzy" mode and falls back to attributes, so the builtin
    ``type`` in a signature would link to the attribute ``MetadataKey.type`` (with a warning
    naming every attribute called ``type``). Builtins go to the Python inventory first.
    """

    default_priority = 5  # before sphinx's ReferencesResolver (10)

    def run(self, **kwargs: Any) -> None:
        for node in list(self.document.findall(pending_xref)):
            target = node.get("reftarget", "")
            if (
                node.get("refdomain") == "py"
                and node.get("reftype") == "class"
                and isinstance(getattr(builtins, target, None), type)
            ):
                contnode = cast(nodes.TextElement, node[0].deepcopy())
                ref = resolve_reference_in_inventory(self.env, "python", node, contnode)
                if ref is not None:
                    node.replace_self(ref)


def _data_doc(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """A public constant's doc is the ``#:`` comment where it is defined, in a private module.

    autodoc reads ``#:`` comments only in the module being documented, where a re-exported
    constant is merely imported, and would show its class's docstring instead (``str``'s, or
    ``MetadataKey``'s for ``IDENTITY``).
    """
    if what != "data":
        return
    attr = name.rpartition(".")[2]
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("strands_trio") and getattr(module, attr, None) is obj:
            comment = ModuleAnalyzer.for_module(module_name).find_attr_docs().get(("", attr))
            if comment:
                lines[:] = list(comment)
                return
    lines[:] = []


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", _resolve_private)
    app.connect("autodoc-process-docstring", _data_doc)
    app.add_post_transform(_BuiltinsFromPython)
    return {"parallel_read_safe": True}
