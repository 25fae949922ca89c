"""Registered datasets: named, immutable, content-fingerprinted versions (v1, v2, ...)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlpipe_jupyter.errors import DatasetError, NotFoundError
from mlpipe_jupyter.model.grammar import DATASET_NAME
from mlpipe_jupyter.store.workspace import Workspace
from mlpipe_jupyter.tabular import TABULAR_SUFFIXES, read_tabular_folder

FILE = "file"
TABULAR = "tabular"


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a registered dataset."""

    name: str
    version: int
    fingerprint: str
    kind: str  # "file" or "tabular"
    path: Path
    created_at: float
    source: str  # where it came from: a path, or "run RUN step STEP output OUT"
    files: int
    bytes: int
    description: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def identity(self) -> str:
        """What a step's fingerprint records for this input."""
        return f"dataset:{self.name}@v{self.version}#{self.fingerprint}"

    def to_pandas(self):  # type: ignore[no-untyped-def]
        """The dataset's CSV/Parquet files as one pandas DataFrame."""
        return read_tabular_folder(self.path, what=f"dataset {self.ref}")


def _iter_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


def hash_file(path: Path) -> str:
    """sha256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_fingerprint(root: Path) -> tuple[str, int, int]:
    """(fingerprint, file count, byte count) of a file or folder: a manifest of paths and
    content hashes, so renaming a file or changing a byte both change it."""
    manifest = hashlib.sha256()
    count = size = 0
    base = root if root.is_dir() else root.parent
    for path in _iter_files(root):
        manifest.update(f"{path.relative_to(base).as_posix()}\0{hash_file(path)}\n".encode())
        count += 1
        size += path.stat().st_size
    return manifest.hexdigest()[:32], count, size


def _row_to_version(row: object) -> DatasetVersion:
    r = dict(row)  # type: ignore[call-overload]
    return DatasetVersion(
        name=r["name"],
        version=r["version"],
        fingerprint=r["fingerprint"],
        kind=r["kind"],
        path=Path(r["path"]),
        created_at=r["created_at"],
        source=r["source"],
        files=r["files"],
        bytes=r["bytes"],
        description=r["description"],
    )


def latest_version_number(db: sqlite3.Connection, name: str) -> int:
    """The newest version number of dataset ``name`` (0 when it has none), read through
    ``db`` — a connection inside the caller's transaction."""
    row = db.execute("SELECT MAX(version) FROM datasets WHERE name=?", (name,)).fetchone()
    return int(row[0] or 0)


def guess_kind(path: Path) -> str:
    """Tabular when every file is CSV or Parquet (and there is at least one)."""
    files = list(_iter_files(path))
    tabular = files and all(p.suffix.lower() in TABULAR_SUFFIXES for p in files)
    return TABULAR if tabular else FILE


class DatasetStore:
    """Register and look up dataset versions in a workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def register(
        self,
        name: str,
        path: Path,
        tabular: bool = False,
        description: str | None = None,
    ) -> tuple[DatasetVersion, bool]:
        """Copy ``path`` into the workspace as the next version of ``name``.

        Returns (version, created). Content identical to the latest version creates nothing.
        """
        if not DATASET_NAME.match(name):
            raise DatasetError(
                f"dataset name {name!r} is not valid: letters, digits, '_', '-', '.'"
            )
        source = path.expanduser().resolve()
        if not source.exists():
            raise DatasetError(f"cannot register {name!r}: {path} does not exist")
        fingerprint, files, size = content_fingerprint(source)
        if files == 0:
            raise DatasetError(f"cannot register {name!r}: {path} holds no files")
        if tabular:
            bad = [p.name for p in _iter_files(source) if p.suffix.lower() not in TABULAR_SUFFIXES]
            if bad:
                raise DatasetError(
                    f"cannot register {name!r} as tabular: {', '.join(bad[:5])} "
                    f"{'is' if len(bad) == 1 else 'are'} not CSV or Parquet"
                )
        latest = self.latest(name, missing_ok=True)
        if latest is not None and latest.fingerprint == fingerprint:
            return latest, False
        stored = self._store_content(source, fingerprint)
        kind = TABULAR if tabular else FILE
        return self._add_version(name, fingerprint, kind, stored, str(source), files, size,
                                 description), True

    def register_folder(
        self, name: str, folder: Path, identity: str, source: str
    ) -> tuple[DatasetVersion, bool]:
        """Register an already-immutable folder (a committed step output) without copying."""
        latest = self.latest(name, missing_ok=True)
        if latest is not None and latest.fingerprint == identity:
            return latest, False
        files = list(_iter_files(folder))
        size = sum(p.stat().st_size for p in files)
        version = self._add_version(
            name, identity, guess_kind(folder), folder, source, len(files), size, None
        )
        return version, True

    def _store_content(self, source: Path, fingerprint: str) -> Path:
        target = self.workspace.data_dir / fingerprint
        if target.exists():
            return target
        staging = self.workspace.staging_dir / f"dataset-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            if source.is_dir():
                shutil.copytree(source, staging / "content")
            else:
                (staging / "content").mkdir()
                shutil.copy2(source, staging / "content" / source.name)
            make_read_only(staging / "content")
            try:
                os.rename(staging / "content", target)  # atomic: all or nothing
            except OSError:
                if not target.exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _add_version(
        self,
        name: str,
        fingerprint: str,
        kind: str,
        path: Path,
        source: str,
        files: int,
        size: int,
        description: str | None,
    ) -> DatasetVersion:
        with self.workspace.transaction() as db:
            version = latest_version_number(db, name) + 1
            db.execute(
                "INSERT INTO datasets (name, version, fingerprint, kind, path, created_at, "
                "source, files, bytes, description) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (name, version, fingerprint, kind, str(path), time.time(), source, files, size,
                 description),
            )
        return self.get(name, version)

    def get(self, name: str, version: int | None = None) -> DatasetVersion:
        if version is None:
            found = self.latest(name)
            assert found is not None
            return found
        rows = self.workspace.query(
            "SELECT * FROM datasets WHERE name=? AND version=?", (name, version)
        )
        if not rows:
            versions = ", ".join(f"v{v}" for v in self.versions().get(name, [])) or "none"
            raise NotFoundError(f"dataset {name!r} has no version {version} (versions: {versions})")
        return _row_to_version(rows[0])

    def latest(self, name: str, missing_ok: bool = False) -> DatasetVersion | None:
        rows = self.workspace.query(
            "SELECT * FROM datasets WHERE name=? ORDER BY version DESC LIMIT 1", (name,)
        )
        if not rows:
            if missing_ok:
                return None
            known = ", ".join(sorted(self.versions())) or "none"
            raise NotFoundError(f"no dataset named {name!r} (registered: {known})")
        return _row_to_version(rows[0])

    def versions(self) -> dict[str, list[int]]:
        """Every dataset name with its versions."""
        result: dict[str, list[int]] = {}
        for row in self.workspace.query("SELECT name, version FROM datasets ORDER BY name, version"):
            result.setdefault(row["name"], []).append(row["version"])
        return result

    def history(self, name: str) -> list[DatasetVersion]:
        rows = self.workspace.query(
            "SELECT * FROM datasets WHERE name=? ORDER BY version", (name,)
        )
        if not rows:
            self.latest(name)  # raises the NotFoundError with the known names
        return [_row_to_version(r) for r in rows]

    def from_source(self, prefix: str) -> list[DatasetVersion]:
        """The versions whose recorded source starts with ``prefix`` (``"run RUN "``: the
        versions a run's steps registered), by name and version."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.workspace.query(
            "SELECT * FROM datasets WHERE source LIKE ? ESCAPE '\\' ORDER BY name, version",
            (escaped + "%",),
        )
        return [_row_to_version(r) for r in rows]

    def all_latest(self) -> list[DatasetVersion]:
        rows = self.workspace.query(
            "SELECT d.* FROM datasets d JOIN (SELECT name, MAX(version) v FROM datasets "
            "GROUP BY name) m ON d.name=m.name AND d.version=m.v ORDER BY d.name"
        )
        return [_row_to_version(r) for r in rows]


def make_read_only(root: Path) -> None:
    """Committed content is immutable: take write permission away (a guard, not security)."""
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            os.chmod(path, os.stat(path).st_mode & ~0o222)
        for name in dirs:
            path = os.path.join(folder, name)
            os.chmod(path, os.stat(path).st_mode & ~0o222)
    os.chmod(root, os.stat(root).st_mode & ~0o222)

