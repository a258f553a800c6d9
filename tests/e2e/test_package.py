"""The package as installed: its layout, the sans-IO boundary, and the demo command."""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import strands_trio

PACKAGE = Path(strands_trio.__file__).parent
SANS_IO = [
    *sorted((PACKAGE / "protocol").glob("*.py")),
    PACKAGE / "context.py",
    PACKAGE / "_errors.py",
]


def run_python(code: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_middleware_is_a_subpackage_only(tmp_path: Path) -> None:
    """middleware/ is importable as strands_trio.middleware, and nothing installs a top-level
    module called middleware."""
    code = "import importlib.util, strands_trio.middleware; print(importlib.util.find_spec('middleware'))"
    assert run_python(code, tmp_path) == "None"


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    """pyproject.toml lists each package explicitly (middleware/ comes in through a symlink), so a new
    subpackage left off the list would be missing from the wheel, though editable installs
    still find it."""
    root = PACKAGE.parent
    with (root / "pyproject.toml").open("rb") as file:
        listed = set(tomllib.load(file)["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in PACKAGE.rglob("__init__.py")
        if "_demo_static" not in init.parts
    }
    assert found | {"strands_trio.middleware"} == listed


def test_protocol_imports_no_trio() -> None:
    """The protocol package and the models it uses import nothing from trio (sans-IO)."""
    for path in SANS_IO:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(name.split(".")[0] == "trio" for name in names), path


def test_demo_runs_and_exits(tmp_path: Path) -> None:
    """`python -m strands_trio demo --script` plays its conversation over loopback and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "strands_trio", "demo", "--script"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "mallory connects with a bad token -> refused" in result.stdout
    assert 'bob receives:   {"from": "alice", "text": "hello bob!"}' in result.stdout
    assert result.stdout.rstrip().endswith("demo finished: the backend shut down cleanly")


def test_static_files_are_package_data() -> None:
    """Every file the broker or the demo serves from the package (the browser client
    strands.js, the demo's page) matches a package-data pattern, so the wheel ships it."""
    root = PACKAGE.parent
    with (root / "pyproject.toml").open("rb") as file:
        patterns = tomllib.load(file)["tool"]["setuptools"]["package-data"]["strands_trio"]
    served = [
        path.relative_to(PACKAGE).as_posix()
        for folder in ("static", "_demo_static")
        for path in (PACKAGE / folder).rglob("*")
        if path.is_file()
    ]
    assert "static/strands.js" in served
    for name in served:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
