"""Environments: a base image plus pip (and apt) packages, stored with versions.

A step names one with ``--env NAME``; container executors build an image from the latest
version (or ``NAME@N``) and tag it by the spec's content hash, so an unchanged environment
is built once and reused.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.errors import EnvironmentDefinitionError, NotFoundError
from mlpipe_jupyter.model.fingerprint import canonical_json, hash_text
from mlpipe_jupyter.store.workspace import Workspace

ENV_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class EnvironmentSpec:
    """What an environment is made of. ``image`` None means mlpipe's own base image."""

    image: str | None = None
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "pip": list(self.pip), "apt": list(self.apt)}

    @property
    def content_hash(self) -> str:
        return hash_text(canonical_json(self.to_dict()))[:12]


@dataclass(frozen=True)
class EnvironmentVersion:
    name: str
    version: int
    spec: EnvironmentSpec
    created_at: float = field(default=0.0)

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


def parse_env_ref(text: str) -> tuple[str, int | None]:
    """``sklearn`` or ``sklearn@2`` (or ``@v2``)."""
    name, _, version = text.partition("@")
    number = version.lstrip("v")
    if version and not number.isdigit():
        raise EnvironmentDefinitionError(f"environment version {version!r} must be a number")
    return name, int(number) if version else None


class EnvironmentStore:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def create(self, name: str, spec: EnvironmentSpec) -> tuple[EnvironmentVersion, bool]:
        """Store ``spec`` as the next version of ``name`` (unless it equals the latest)."""
        if not ENV_NAME.match(name):
            raise EnvironmentDefinitionError(
                f"environment name {name!r} is not valid: lower-case letters, digits, '_', '-', '.'"
            )
        for package in (*spec.pip, *spec.apt):
            if not package.strip() or package.startswith("-"):
                raise EnvironmentDefinitionError(f"package {package!r} is not a package name")
        latest = self.latest(name, missing_ok=True)
        if latest is not None and latest.spec == spec:
            return latest, False
        with self.workspace.transaction() as db:
            row = db.execute("SELECT MAX(version) FROM environments WHERE name=?", (name,)).fetchone()
            version = (row[0] or 0) + 1
            db.execute(
                "INSERT INTO environments (name, version, spec, spec_hash, created_at) "
                "VALUES (?,?,?,?,?)",
                (name, version, json.dumps(spec.to_dict()), spec.content_hash, time.time()),
            )
        return self.get(name, version), True

    def get(self, name: str, version: int | None = None) -> EnvironmentVersion:
        if version is None:
            found = self.latest(name)
            assert found is not None
            return found
        rows = self.workspace.query(
            "SELECT * FROM environments WHERE name=? AND version=?", (name, version)
        )
        if not rows:
            raise NotFoundError(f"environment {name!r} has no version {version}")
        return _row(rows[0])

    def latest(self, name: str, missing_ok: bool = False) -> EnvironmentVersion | None:
        rows = self.workspace.query(
            "SELECT * FROM environments WHERE name=? ORDER BY version DESC LIMIT 1", (name,)
        )
        if not rows:
            if missing_ok:
                return None
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(
                f"no environment named {name!r} (known: {known}); create it with "
                f"`mlpipe env create {name} --pip PACKAGE ...`"
            )
        return _row(rows[0])

    def names(self) -> list[str]:
        return [r["name"] for r in self.workspace.query(
            "SELECT DISTINCT name FROM environments ORDER BY name")]

    def history(self, name: str) -> list[EnvironmentVersion]:
        self.latest(name)  # raises with the known names
        rows = self.workspace.query(
            "SELECT * FROM environments WHERE name=? ORDER BY version", (name,)
        )
        return [_row(r) for r in rows]


def _row(row: Any) -> EnvironmentVersion:
    data = json.loads(row["spec"])
    spec = EnvironmentSpec(image=data.get("image"), pip=tuple(data.get("pip", [])),
                           apt=tuple(data.get("apt", [])))
    return EnvironmentVersion(row["name"], row["version"], spec, row["created_at"])
