"""Rebuild the intersphinx inventories in this folder, for the versions the project runs on.

The docs build (``sphinx-build -W``) must not need the network, so the ``objects.inv`` of the
projects it links to are kept here. This script makes them the honest way, without fetching
any inventory: it downloads the sdists of trio, attrs and cattrs at the versions installed
next to strands-trio (their docs sources are in the sdists), builds each project's docs with
Sphinx in a throwaway virtual environment holding that project's own docs requirements, and
keeps the ``objects.inv`` of each build. Python's comes from Debian's ``python3.X-doc``
package, which Debian builds with Sphinx from CPython's sources (skipped, keeping the current
file, where ``apt-get`` is missing).

    python docs/_inventories/rebuild.py                      # this Python's environment
    python docs/_inventories/rebuild.py --python .venv/bin/python

It takes about a minute; everything but the four ``.inv`` files is made under a temporary
directory and removed afterwards (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECTS = ("trio", "attrs", "cattrs")
# Where each sdist keeps its Sphinx sources (the folder with conf.py).
CONF_DIRS = {"trio": "docs/source", "attrs": "docs", "cattrs": "docs"}


def run(*args: str | Path, cwd: Path | None = None) -> str:
    print("+", " ".join(map(str, args)), file=sys.stderr)
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, check=True, text=True, stdout=subprocess.PIPE
    ).stdout


def installed_versions(python: str) -> dict[str, str]:
    code = "import importlib.metadata as m, sys; print(*(m.version(p) for p in sys.argv[1:]))"
    versions = run(python, "-c", code, *PROJECTS).split()
    return dict(zip(PROJECTS, versions, strict=True))


def docs_requirements(name: str, version: str, source: Path) -> list[str]:
    """What the project's own docs build installs (as its Read the Docs configuration does)."""
    if name == "trio":
        return ["-r", str(source / "docs-requirements.in"), f"trio=={version}"]
    pyproject = tomllib.loads((source / "pyproject.toml").read_text())
    group = [req for req in pyproject["dependency-groups"]["docs"] if isinstance(req, str)]
    # cattrs documents its preconfigured converters (orjson's among them) with every extra.
    extras = ",".join(pyproject["project"]["optional-dependencies"]) if name == "cattrs" else ""
    return [*group, f"{name}[{extras}]=={version}"]


def python_inventory(python: str, work: Path) -> Path | None:
    """objects.inv of CPython's docs, from Debian's python3.X-doc package."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("no apt-get: keeping python.inv as it is", file=sys.stderr)
        return None
    minor = run(python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").strip()
    debs = work / "deb"
    debs.mkdir()
    try:
        run("apt-get", "download", f"python{minor}-doc", cwd=debs)
    except subprocess.CalledProcessError:
        print(f"no python{minor}-doc package: keeping python.inv as it is", file=sys.stderr)
        return None
    (deb,) = debs.glob("*.deb")
    run("dpkg-deb", "-x", deb, debs / "x")
    return debs / "x" / "usr" / "share" / "doc" / f"python{minor}" / "html" / "objects.inv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the project's interpreter")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    versions = installed_versions(args.python)
    work = Path(tempfile.mkdtemp(prefix="strands-trio-inventories-"))
    try:
        python_inv = python_inventory(args.python, work)
        if python_inv is not None:
            shutil.copyfile(python_inv, HERE / "python.inv")

        pins = [f"{name}=={version}" for name, version in versions.items()]
        run(
            sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
            "--no-deps", "--dest", work / "sdists", *pins,
        )  # fmt: skip
        sources = {}
        for name, version in versions.items():
            (sdist,) = (work / "sdists").glob(f"{name}-{version}.tar.gz")
            with tarfile.open(sdist) as tar:
                tar.extractall(work / "src", filter="data")
            sources[name] = work / "src" / f"{name}-{version}"

        venv = work / "venv"
        run(args.python, "-m", "venv", venv)
        requirements = [
            req
            for name in PROJECTS
            for req in docs_requirements(name, versions[name], sources[name])
        ]
        run(
            venv / "bin" / "python", "-m", "pip", "install", "--quiet",
            "--disable-pip-version-check", "sphinx", *requirements,
        )  # fmt: skip

        for name in PROJECTS:
            conf_dir = sources[name] / CONF_DIRS[name]
            # Offline: link to Python through the local inventory, and to nothing else (links
            # out of a project do not change its own inventory).
            mapping = {"python": ("https://docs.python.org/3", str(HERE / "python.inv"))}
            with (conf_dir / "conf.py").open("a") as conf:
                conf.write(f"\n\nintersphinx_mapping = {mapping!r}\n")
            out = work / "build" / name
            run(venv / "bin" / "sphinx-build", "-Q", "-j", "auto", "-b", "html", conf_dir, out)
            shutil.copyfile(out / "objects.inv", HERE / f"{name}.inv")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work)

    for name in ("python", *PROJECTS):
        with (HERE / f"{name}.inv").open("rb") as inv:
            header = [inv.readline().decode().strip("# \n") for _ in range(3)]
        print(f"{name}.inv: {header[1]}, {header[2]}")


if __name__ == "__main__":
    main()
