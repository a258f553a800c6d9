"""The docs site (docs/conf.py) leaves nothing out: every page is in a table of contents, and
every public name is in the API reference (docs/api/, one page per package). The build itself
is its own step of .ci/run."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import posixpath
import re
import tomllib
from pathlib import Path

import pytest

import strands_trio

DOCS = Path(__file__).resolve().parents[2] / "docs"
API = DOCS / "api"
EXCLUDED = {"_build", "examples", "_inventories"}  # conf.py's exclude_patterns
TOCTREE = re.compile(r"```\{toctree\}\n(.*?)```", re.DOTALL)
LINK = re.compile(r"^- \[.*?\]\(([\w./-]+)\.md\)", re.MULTILINE)


def pages() -> set[str]:
    """Every page of the site, by its docname (``api/strands_trio``)."""
    return {
        path.relative_to(DOCS).with_suffix("").as_posix()
        for path in DOCS.rglob("*.md")
        if not EXCLUDED & set(path.relative_to(DOCS).parts)
    }


def toctrees(docname: str) -> list[tuple[str | None, list[str]]]:
    """The caption and the entries (as written, relative to the page) of each of a page's
    toctrees."""
    found = []
    for block in TOCTREE.findall((DOCS / f"{docname}.md").read_text()):
        lines = block.splitlines()
        captions = [
            line.removeprefix(":caption:").strip() for line in lines if line.startswith(":caption:")
        ]
        entries = [line for line in lines if line and not line.startswith(":")]
        found.append((captions[0] if captions else None, entries))
    return found


def children(docname: str) -> list[str]:
    """The docnames a page's toctrees name, in order."""
    here = posixpath.dirname(docname)
    return [
        posixpath.normpath(posixpath.join(here, entry))
        for _, entries in toctrees(docname)
        for entry in entries
    ]


def test_every_page_is_in_a_toctree_once() -> None:
    """A page missing from every toctree would be built but reachable from nowhere in the
    navigation: each is reached from index.md, directly or through a page it names (the API
    pages, through api/index.md), and is named once."""
    named: list[str] = []
    reached = {"index"}
    todo = ["index"]
    while todo:
        for child in children(todo.pop()):
            named.append(child)
            if child not in reached:
                reached.add(child)
                todo.append(child)
    assert sorted(named) == sorted(pages() - {"index"})


def test_index_groups_the_pages_by_audience() -> None:
    """The site's navigation is grouped: index.md has one captioned toctree per audience."""
    assert [caption for caption, _ in toctrees("index")] == [
        "Writing backends",
        "Running a broker",
        "Reference",
    ]


@pytest.mark.parametrize("docname", ["index", "api/index"])
def test_lists_of_links_follow_the_toctrees(docname: str) -> None:
    """A page's list of links (what GitHub shows) and its hidden toctrees (the site's
    navigation) name the same pages in the same order: before each toctree, under a heading
    that is its caption if it has one, a list of its pages."""
    text = (DOCS / f"{docname}.md").read_text()
    blocks = list(TOCTREE.finditer(text))
    assert blocks
    start = 0
    for block, (caption, entries) in zip(blocks, toctrees(docname), strict=True):
        before = text[start : block.start()]
        assert LINK.findall(before) == entries
        if caption is not None:
            assert re.findall(r"^## (.+)$", before, re.MULTILINE)[-1:] == [caption]
        start = block.end()


def api_pages() -> list[Path]:
    return sorted(API.glob("*.md"))


def documented_on(page: Path) -> dict[str, list[str]]:
    """The names a page documents with autodoc, by the module they are documented in (the
    current module starts afresh on each page, as in Sphinx)."""
    names: dict[str, list[str]] = {}
    module = ""
    for kind, name in re.findall(r"^\.\. (\w+)::\s*([\w.]+)", page.read_text(), re.MULTILINE):
        if kind in ("automodule", "currentmodule"):
            module = name
            names.setdefault(module, [])
        elif kind.startswith("auto"):
            names[module].append(name)
    return names


def documented() -> dict[str, list[str]]:
    """The names the API pages document with autodoc, by the module they are documented in."""
    names: dict[str, list[str]] = {}
    for page in api_pages():
        for module, listed in documented_on(page).items():
            names.setdefault(module, []).extend(listed)
    return names


def public_packages() -> list[str]:
    """strands_trio and its public modules and packages, one level down: those in its
    directory, and those pyproject.toml lists (a package mapped from another folder, as
    ``strands_trio.middleware`` from ``middleware/`` has been, is not in that directory)."""
    found = {
        f"strands_trio.{info.name}"
        for info in pkgutil.iter_modules(strands_trio.__path__)
        if not info.name.startswith("_")
    }
    pyproject = tomllib.loads((DOCS.parent / "pyproject.toml").read_text())
    listed = pyproject.get("tool", {}).get("setuptools", {}).get("packages", [])
    found |= {
        package
        for package in (listed if isinstance(listed, list) else [])
        if package.count(".") == 1 and not package.rpartition(".")[2].startswith("_")
    }
    return ["strands_trio", *sorted(found)]


def test_one_api_page_per_public_package() -> None:
    """docs/api/<package>.md documents <package>: its first directive is its automodule."""
    assert {page.stem for page in api_pages()} - {"index"} == set(public_packages())
    for page in api_pages():
        if page.stem != "index":
            first = re.search(r"^\.\. (\w+)::\s*([\w.]+)", page.read_text(), re.MULTILINE)
            assert first is not None
            assert first.groups() == ("automodule", page.stem)


def test_nothing_is_documented_twice() -> None:
    """Each name is documented once, and each class or function under one name only."""
    seen: dict[int, str] = {}
    for module_name, listed in documented().items():
        assert len(listed) == len(set(listed)), f"{module_name}: documented twice"
        module = importlib.import_module(module_name)
        for name in listed:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isroutine(obj):
                where = f"{module_name}.{name}"
                assert seen.setdefault(id(obj), where) == where, f"{where} is {seen[id(obj)]}"


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
        if name not in names.get(package, []) and id(getattr(module, name)) not in shown
    ]
    assert not missing, f"{package}: not in docs/api/: {missing}"
    assert set(names.get(package, [])) <= set(module.__all__)
