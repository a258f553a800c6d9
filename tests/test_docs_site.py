"""The docs site (docs/conf.py) leaves nothing out: every page is in the table of contents, and
every public name is in the API reference. The build itself is its own step of .ci/run."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import strands_trio

DOCS = Path(__file__).resolve().parent.parent / "docs"
INDEX = (DOCS / "index.md").read_text()
API = (DOCS / "api.md").read_text()


def toctree_entries() -> list[str]:
    (block,) = re.findall(r"```\{toctree\}\n(.*?)```", INDEX, re.DOTALL)
    return [line for line in block.splitlines() if line and not line.startswith(":")]


def test_every_page_is_in_the_toctree() -> None:
    """A page missing from index.md's toctree would be built but reachable from nowhere."""
    pages = {path.stem for path in DOCS.glob("*.md")} - {"index"}
    assert sorted(toctree_entries()) == sorted(pages)


def test_index_lists_the_toctree_in_its_order() -> None:
    """index.md's list of links (what GitHub shows) and its hidden toctree (the site's
    navigation) name the same pages in the same order."""
    links = re.findall(r"^- \[.*?\]\(([\w-]+)\.md\)", INDEX, re.MULTILINE)
    assert links == toctree_entries()


def documented() -> dict[str, set[str]]:
    """The names api.md documents with autodoc, by the module they are documented in."""
    names: dict[str, set[str]] = {}
    module = ""
    for kind, name in re.findall(r"^\.\. (\w+)::\s*([\w.]+)", API, re.MULTILINE):
        if kind in ("automodule", "currentmodule"):
            module = name
            names.setdefault(module, set())
        elif kind.startswith("auto"):
            names[module].add(name)
    return names


def public_packages() -> list[str]:
    found = [
        f"strands_trio.{info.name}"
        for info in pkgutil.iter_modules(strands_trio.__path__)
        if not info.name.startswith("_")
    ]
    return ["strands_trio", *sorted(found)]


def test_every_public_package_is_in_the_api_reference() -> None:
    documented_modules = set(documented()) | {"strands_trio.context"}  # under strands_trio
    assert set(public_packages()) <= documented_modules


@pytest.mark.parametrize("package", public_packages())
def test_every_public_name_is_in_the_api_reference(package: str) -> None:
    """Each name of a package's ``__all__`` is documented there, or, for a name the package
    re-exports (``strands_trio.protocol.ProtocolError``), where the same object is; and
    nothing else is documented under the package."""
    module = importlib.import_module(package)
    names = documented()
    shown = {
        id(getattr(importlib.import_module(where), name))
        for where, listed in names.items()
        for name in listed
    }
    missing = [
        name
        for name in module.__all__
        if name not in names.get(package, set()) and id(getattr(module, name)) not in shown
    ]
    assert not missing, f"{package}: not in docs/api.md: {missing}"
    assert names.get(package, set()) <= set(module.__all__)
