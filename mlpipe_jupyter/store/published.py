"""Published pipelines as stored: immutable versions, their snapshot folders, each name's default.

Version N of NAME is a row of ``published_pipelines`` and the folder
``.mlpipe/published/NAME/vN/`` holding the notebook snapshot (and the files its steps
need). Each name has a default version (``published_defaults``): the one chosen last, else
the newest. Validating and staging a publication is ``scheduling.publishing``'s; this
module stores it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import PublishedPipelineNotFoundError
from mlpipe_jupyter.model.values import parameter_texts, read_stored_values, stored_values
from mlpipe_jupyter.store.workspace import Workspace

SNAPSHOT_NOTEBOOK = "notebook.ipynb"


@dataclass(frozen=True)
class PublishedPipeline:
    """One immutable published version."""

    name: str
    version: int
    content_hash: str
    notebook: Path  # the snapshot that runs execute
    source: str  # the notebook it was published from
    steps: list[dict[str, Any]]
    parameters: dict[str, Any]  # defaults
    environments: dict[str, str]  # step -> environment reference (resolved at publish)
    datasets: list[str]  # datasets its steps read
    files: list[str]  # files copied beside the snapshot, relative to it
    git: dict[str, Any]
    description: str | None
    created_at: float
    disabled: bool
    is_default: bool

    @property
    def ref(self) -> str:
        """``NAME@vN``: what a run's ``published`` field records."""
        return f"{self.name}@v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for REST responses)."""
        return {
            "name": self.name, "version": self.version, "ref": self.ref,
            "content_hash": self.content_hash, "notebook": str(self.notebook),
            "source": self.source, "steps": self.steps, "parameters": self.parameters,
            # as a user types them after -p NAME= (JSON has no True, tuples or bytes)
            "parameter_texts": parameter_texts(self.parameters),
            "environments": self.environments, "datasets": self.datasets, "files": self.files,
            "git": self.git, "description": self.description, "created_at": self.created_at,
            "disabled": self.disabled, "default": self.is_default,
        }


def _from_row(row: Any, default: int | None) -> PublishedPipeline:
    return PublishedPipeline(
        name=row["name"], version=row["version"], content_hash=row["content_hash"],
        notebook=Path(row["notebook"]), source=row["source"], steps=json.loads(row["steps"]),
        parameters=read_stored_values(json.loads(row["parameters"])),
        environments=json.loads(row["environments"]),
        datasets=json.loads(row["datasets"]), files=json.loads(row["files"]),
        git=json.loads(row["git"]), description=row["description"],
        created_at=row["created_at"], disabled=bool(row["disabled"]),
        is_default=row["version"] == default,
    )


class PublishedStore:
    """The ``published_pipelines`` and ``published_defaults`` tables, and the snapshots."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def folder(self, name: str) -> Path:
        """Where the versions of ``name`` keep their snapshots (``vN/`` each)."""
        return self.workspace.root / "published" / name

    # -- reading ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every published name; none while the workspace has no database yet."""
        if not self.workspace.db_path.exists():
            return []
        rows = self.workspace.query("SELECT DISTINCT name FROM published_pipelines ORDER BY name")
        return [r["name"] for r in rows]

    def latest(self, name: str) -> PublishedPipeline | None:
        """The newest version of ``name`` (None when it has none)."""
        rows = self.workspace.query(
            "SELECT * FROM published_pipelines WHERE name=? ORDER BY version DESC LIMIT 1", (name,)
        )
        return _from_row(rows[0], self.default_version(name)) if rows else None

    def default_version(self, name: str) -> int | None:
        """The version chosen as default, else the newest; None when ``name`` has none."""
        rows = self.workspace.query("SELECT version FROM published_defaults WHERE name=?", (name,))
        if rows:
            return int(rows[0]["version"])
        latest = self.workspace.query(
            "SELECT version FROM published_pipelines WHERE name=? ORDER BY version DESC LIMIT 1",
            (name,),
        )
        return int(latest[0]["version"]) if latest else None

    def get(self, name: str, version: int | None = None) -> PublishedPipeline:
        """Version ``version`` of ``name``, or its default version.

        PublishedPipelineNotFoundError lists the known names or versions.
        """
        names = self.names()
        if name not in names:
            raise PublishedPipelineNotFoundError(
                f"no published pipeline named {name!r} (published: {', '.join(names) or 'none'}; "
                f"publish one with `mlpipe publish NOTEBOOK --name {name}`)"
            )
        default = self.default_version(name)
        wanted = default if version is None else version
        rows = self.workspace.query(
            "SELECT * FROM published_pipelines WHERE name=? AND version=?", (name, wanted)
        )
        if not rows:
            versions = [r["version"] for r in self.workspace.query(
                "SELECT version FROM published_pipelines WHERE name=? ORDER BY version", (name,))]
            raise PublishedPipelineNotFoundError(
                f"published pipeline {name!r} has no version {version} "
                f"(versions: {', '.join(f'v{v}' for v in versions)})"
            )
        return _from_row(rows[0], default)

    def all(self, name: str | None = None) -> list[PublishedPipeline]:
        """Every published version (of ``name`` if given: not-found error when unknown),
        by name then version."""
        if name is not None:
            self.get(name)  # the not-found error
        result = []
        for known in self.names():
            if name is not None and known != name:
                continue
            default = self.default_version(known)
            rows = self.workspace.query(
                "SELECT * FROM published_pipelines WHERE name=? ORDER BY version", (known,)
            )
            result += [_from_row(r, default) for r in rows]
        return result

    # -- writing ----------------------------------------------------------------------------
    def add(
        self,
        name: str,
        staging: Path,
        *,
        content_hash: str,
        source: Path,
        steps: list[dict[str, Any]],
        parameters: dict[str, Any],
        environments: dict[str, str],
        datasets: list[str],
        files: list[str],
        git: dict[str, Any],
        description: str | None,
        make_default: bool,
    ) -> tuple[int, bool]:
        """Make the snapshot folder ``staging`` the next version of ``name``; returns
        (version, created).

        One IMMEDIATE transaction reads the latest version, moves ``staging`` into place as
        ``vN`` and inserts the row (and the default), so two publishers never share a
        version number. When the latest version has ``content_hash`` already (another
        publisher just did it) nothing is stored and ``staging`` stays where it is.
        """
        with self.workspace.transaction() as db:
            row = db.execute(
                "SELECT version, content_hash FROM published_pipelines WHERE name=? "
                "ORDER BY version DESC LIMIT 1", (name,),
            ).fetchone()
            if row is not None and row["content_hash"] == content_hash:
                return int(row["version"]), False
            version = row["version"] + 1 if row else 1
            target = self.folder(name) / f"v{version}"
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # left by a crash between rename and commit
                shutil.rmtree(target)
            os.rename(staging, target)
            db.execute(
                "INSERT INTO published_pipelines (name, version, content_hash, notebook, "
                "source, steps, parameters, environments, datasets, files, git, "
                "description, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, version, content_hash, str(target / SNAPSHOT_NOTEBOOK), str(source),
                 json.dumps(steps), json.dumps(stored_values(parameters)),
                 json.dumps(environments), json.dumps(datasets), json.dumps(files),
                 json.dumps(git), description, time.time()),
            )
            if make_default:
                _set_default(db, name, version)
        return version, True

    def set_disabled(self, name: str, versions: Sequence[int], disabled: bool) -> None:
        """Disable (or enable) these versions of ``name``, in one transaction."""
        with self.workspace.transaction() as db:
            for version in versions:
                db.execute(
                    "UPDATE published_pipelines SET disabled=? WHERE name=? AND version=?",
                    (1 if disabled else 0, name, version),
                )

    def set_default(self, name: str, version: int) -> None:
        """Make ``version`` the default version of ``name``."""
        with self.workspace.transaction() as db:
            _set_default(db, name, version)


def _set_default(db: sqlite3.Connection, name: str, version: int) -> None:
    db.execute(
        "INSERT INTO published_defaults (name, version) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET version=excluded.version",
        (name, version),
    )
