"""The sdist and the wheel hold what the project ships and nothing else.

Both archives are built from this checkout the way a release is: ``python -m build`` makes
the sdist from the repository and the wheel from that sdist (so a wheel that cannot be
built from the sdist fails here too); a second wheel is built straight from the repository,
as ``pip install .`` does. Each archive is checked against an explicit allow-list: the
package ``mlpipe_jupyter/``, the prebuilt lab extension, the Jupyter server config and the
docs the README links (the sdist only), plus the packaging metadata. Anything else (a
stray wheel, a notebook, a ``.mlpipe`` workspace, ``node_modules``, tests, scripts, the
TypeScript sources) fails with the names of the unexpected files. The files the install
needs (the extension's package.json and static/ bundle, the server config) are required,
so a build that silently drops them fails as well.

Needs ``build``, ``hatchling`` and ``hatch-jupyter-builder`` (the ``test`` extra) and builds
without isolation, so it runs offline. The lab extension is built by ``scripts/install``;
when it is missing, the build hook runs jlpm first.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "mlpipe_jupyter"

# Files of the package that are not Python modules; every other package file is a .py.
PACKAGE_DATA = {
    "mlpipe_jupyter/py.typed",
    "mlpipe_jupyter/jupyter/widget.js",  # the DAG widget's front end (anywidget)
    "mlpipe_jupyter/server/openapi.yaml",  # served by the REST API
}
# The docs the README links, shipped in the sdist so those links resolve there.
DOCS = {
    "docs/architecture.md",
    "docs/dask.md",
    "docs/fork-kernels.md",
    "docs/grammar.md",
    "docs/jupyterlab.md",
    "docs/kale.md",
    "docs/magics.md",
    "docs/workflows.md",
    "docs/notifications.md",
    "docs/scheduling.md",
    "docs/secrets.md",
    "docs/variables.md",
}
# screenshots the docs show (made by the browser tests)
DOC_IMAGES = re.compile(r"docs/images/[\w.-]+\.png")
# README links to files that document the repository, not the package: not in the sdist.
REPOSITORY_ONLY_LINKS = {"benchmarks/README.md"}
SERVER_CONFIG = "jupyter-config/server-config/mlpipe_jupyter.json"
# Added by hatchling: .gitignore goes into every sdist it builds (it is what keeps
# __pycache__ and the built extension's duplicate out of the wheel built from the sdist).
SDIST_METADATA = {"PKG-INFO", "pyproject.toml", "README.md", ".gitignore"}
WHEEL_METADATA = {"METADATA", "WHEEL", "RECORD", "entry_points.txt"}

# The prebuilt lab extension (jupyter labextension build output), relative to its folder:
# package.json, the webpack build log, and the flat static/ bundle.
LABEXTENSION_FILES = re.compile(
    r"(package\.json|build_log\.json"
    r"|static/[\w.-]+\.(js|js\.map|js\.LICENSE\.txt|css|json|svg|png|woff2?|ttf|eot))"
)
LABEXTENSION_REQUIRED = {"package.json", "static/style.js"}
WHEEL_LABEXTENSION = "share/jupyter/labextensions/mlpipe-jupyter/"
WHEEL_SERVER_CONFIG = "etc/jupyter/jupyter_server_config.d/mlpipe_jupyter.json"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    _build(out / "release")  # the sdist, then the wheel from the sdist
    _build(out / "direct", "--wheel")  # the wheel from the repository
    (sdist,) = (out / "release").glob("*.tar.gz")
    (wheel,) = (out / "release").glob("*.whl")
    (direct,) = (out / "direct").glob("*.whl")
    return {"sdist": sdist, "wheel": wheel, "direct wheel": direct}


def _build(outdir: Path, *args: str) -> None:
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir),
               *args, str(REPO)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (
        f"{' '.join(command)} exited {proc.returncode}\n"
        f"{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    )


@functools.cache
def _sdist_files(sdist: Path) -> dict[str, bytes]:
    """The sdist's regular files by path below its top folder ``NAME-VERSION/``."""
    files = {}
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        tops = {PurePosixPath(m.name).parts[0] for m in members}
        assert len(tops) == 1, f"{sdist.name}: more than one top-level folder: {sorted(tops)}"
        for member in members:
            if member.isdir():
                continue
            assert member.isfile(), f"{sdist.name}: not a regular file: {member.name}"
            name = str(PurePosixPath(*PurePosixPath(member.name).parts[1:]))
            extracted = tar.extractfile(member)
            assert extracted is not None
            files[name] = extracted.read()
    return files


@functools.cache
def _wheel_files(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {
            info.filename: archive.read(info)
            for info in archive.infolist() if not info.is_dir()
        }


def _is_package_file(name: str) -> bool:
    return name.startswith(f"{PACKAGE}/") and (name.endswith(".py") or name in PACKAGE_DATA)


def _source_package_files() -> set[str]:
    """The package files the checkout has: every module and the named data files."""
    modules = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / PACKAGE).rglob("*.py")
        if "__pycache__" not in path.parts and "labextension" not in path.parts
    }
    return modules | PACKAGE_DATA


def _unexpected(archive: str, names: set[str]) -> str:
    return (
        f"{archive} holds {len(names)} file(s) outside its allow-list "
        f"(tests/test_packaging.py; the build config is in pyproject.toml):\n  "
        + "\n  ".join(sorted(names))
    )


def _missing(archive: str, names: set[str]) -> str:
    return f"{archive} lacks {len(names)} file(s) it must ship:\n  " + "\n  ".join(sorted(names))


def _check_labextension(archive: str, files: dict[str, bytes]) -> None:
    """``files``: the extension's files by path relative to its folder."""
    missing = LABEXTENSION_REQUIRED - files.keys()
    assert not missing, _missing(f"{archive}'s lab extension", missing)
    package_json = json.loads(files["package.json"])
    assert package_json["name"] == "mlpipe-jupyter"
    entry = package_json["jupyterlab"]["_build"]["load"]  # static/remoteEntry.HASH.js
    assert entry in files, _missing(f"{archive}'s lab extension", {entry})


def _check_server_config(archive: str, content: bytes) -> None:
    config = json.loads(content)
    enabled = config["ServerApp"]["jpserver_extensions"]
    assert enabled == {"mlpipe_jupyter.server": True}, f"{archive}: server config {config}"


def test_sdist_holds_only_the_package_extension_config_and_docs(dists):
    files = _sdist_files(dists["sdist"])
    extension_prefix = f"{PACKAGE}/labextension/"
    extension = {
        name[len(extension_prefix):]: data
        for name, data in files.items() if name.startswith(extension_prefix)
    }
    allowed = SDIST_METADATA | DOCS | {SERVER_CONFIG}
    unexpected = {
        name for name in files
        if name not in allowed and not _is_package_file(name)
        and not DOC_IMAGES.fullmatch(name)
        and not (name.startswith(extension_prefix)
                 and LABEXTENSION_FILES.fullmatch(name[len(extension_prefix):]))
    }
    assert not unexpected, _unexpected(dists["sdist"].name, unexpected)

    required = SDIST_METADATA | DOCS | {SERVER_CONFIG} | _source_package_files()
    missing = required - files.keys()
    assert not missing, _missing(dists["sdist"].name, missing)
    _check_labextension(dists["sdist"].name, extension)
    _check_server_config(dists["sdist"].name, files[SERVER_CONFIG])


def test_sdist_resolves_the_readme_links(dists):
    """Every relative link of the README, and of the docs it links, is a file in the sdist."""
    files = _sdist_files(dists["sdist"])
    dangling = set()
    seen: set[str] = set()
    pending = ["README.md"]
    while pending:
        doc = pending.pop()
        if doc in seen:
            continue
        seen.add(doc)
        for target in re.findall(r"\]\(([^)\s]+)\)", files[doc].decode()):
            if re.match(r"[a-z][a-z0-9+.-]*:|#", target):  # a URL or an anchor in this file
                continue
            path = (PurePosixPath(doc).parent / target.split("#")[0]).as_posix()
            if path in REPOSITORY_ONLY_LINKS:
                continue
            if path not in files:
                dangling.add(f"{doc} -> {target}")
            elif path.endswith(".md"):
                pending.append(path)
    assert not dangling, "links that do not resolve in the sdist:\n  " + "\n  ".join(
        sorted(dangling)
    )
    assert DOCS <= seen, f"docs in the sdist that the README does not link: {DOCS - seen}"


@pytest.mark.parametrize("which", ["wheel", "direct wheel"])
def test_wheel_holds_only_the_package_extension_and_config(dists, which):
    wheel = dists[which]
    files = _wheel_files(wheel)
    match = re.fullmatch(rf"{PACKAGE}-([^-]+)-py3-none-any\.whl", wheel.name)
    assert match, f"not a pure-Python wheel for any Python 3: {wheel.name}"
    data = f"{PACKAGE}-{match[1]}.data/data/"
    dist_info = f"{PACKAGE}-{match[1]}.dist-info/"
    extension = {
        name[len(data + WHEEL_LABEXTENSION):]: content
        for name, content in files.items() if name.startswith(data + WHEEL_LABEXTENSION)
    }
    allowed = {data + WHEEL_SERVER_CONFIG} | {dist_info + name for name in WHEEL_METADATA}
    unexpected = {
        name for name in files
        if name not in allowed and not _is_package_file(name)
        and not DOC_IMAGES.fullmatch(name)
        and not (name.startswith(data + WHEEL_LABEXTENSION)
                 and LABEXTENSION_FILES.fullmatch(name[len(data + WHEEL_LABEXTENSION):]))
    }
    assert not unexpected, _unexpected(f"{which} {wheel.name}", unexpected)

    required = allowed | _source_package_files()
    missing = required - files.keys()
    assert not missing, _missing(f"{which} {wheel.name}", missing)
    _check_labextension(wheel.name, extension)
    _check_server_config(wheel.name, files[data + WHEEL_SERVER_CONFIG])


def test_the_wheels_from_the_sdist_and_from_the_repository_agree(dists):
    """``pip install .`` and an install from the sdist get the same files."""
    from_sdist = _wheel_files(dists["wheel"])
    direct = _wheel_files(dists["direct wheel"])
    assert set(from_sdist) == set(direct), (
        f"only in the wheel from the sdist: {sorted(from_sdist.keys() - direct.keys())}\n"
        f"only in the wheel from the repository: {sorted(direct.keys() - from_sdist.keys())}"
    )
    extension_from_sdist = {
        name.split(WHEEL_LABEXTENSION, 1)[1]: content
        for name, content in from_sdist.items() if WHEEL_LABEXTENSION in name
    }
    sdist_extension = {
        name[len(f"{PACKAGE}/labextension/"):]: content
        for name, content in _sdist_files(dists["sdist"]).items()
        if name.startswith(f"{PACKAGE}/labextension/")
    }
    assert extension_from_sdist == sdist_extension, (
        "the lab extension in the wheel built from the sdist differs from the sdist's"
    )
