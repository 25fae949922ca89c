"""Published pipelines: immutable, versioned snapshots of a notebook pipeline.

``publish`` copies the notebook — with the local modules its steps import and the files
their ``--hash-paths`` name — into ``.mlpipe/published/NAME/vN/``, so a later edit of the
notebook never changes a published version. Publishing content identical to the latest
version creates nothing. Each name has a default version: the newest one, unless another
was chosen with ``set_default``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import (
    ConflictError,
    DefinitionError,
    DefinitionIssue,
    PublishedPipelineNotFoundError,
)
from mlpipe_jupyter.model.grammar import DATASET_NAME
from mlpipe_jupyter.model.pipeline import Pipeline
from mlpipe_jupyter.model.values import parameter_text, read_stored_values, stored_values
from mlpipe_jupyter.notebook import load_pipeline, pipeline_from_cells, read_code_cells
from mlpipe_jupyter.runner.planning import local_modules
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.datasets import hash_file
from mlpipe_jupyter.store.environments import parse_env_ref
from mlpipe_jupyter.store.snapshot import git_info

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
            "parameter_texts": {k: parameter_text(v) for k, v in self.parameters.items()},
            "environments": self.environments, "datasets": self.datasets, "files": self.files,
            "git": self.git, "description": self.description, "created_at": self.created_at,
            "disabled": self.disabled, "default": self.is_default,
        }


def load_published_pipeline(published: PublishedPipeline) -> Pipeline:
    """The pipeline of a published snapshot; messages name it ``NAME@vN``."""
    return pipeline_from_cells(read_code_cells(published.notebook), source=published.ref)


def check_name(name: str, what: str = "published pipeline") -> None:
    if not DATASET_NAME.match(name):
        raise DefinitionError([DefinitionIssue(
            f"{what} name {name!r} is not valid: letters, digits, '_', '-', '.'", field="--name",
        )])


def _pipeline_files(pipeline: Pipeline, folder: Path) -> tuple[list[Path], list[DefinitionIssue]]:
    """Local modules and ``--hash-paths`` files the steps depend on, under ``folder``."""
    found: set[Path] = set()
    issues: list[DefinitionIssue] = []
    for cell in pipeline.setup:
        found.update(local_modules(cell.code, folder))
    for step in pipeline.steps:
        found.update(local_modules(step.code, folder))
        for pattern in step.header.hash_paths:
            matched = [p for p in folder.glob(pattern) if p.is_file()]
            if not matched:
                issues.append(DefinitionIssue(
                    f"matches no file under {folder}", step=step.name, cell=step.cell,
                    field=f"--hash-paths {pattern}",
                ))
            found.update(matched)
    return sorted(found), issues


def _content_hash(notebook: Path, pipeline: Pipeline, files: list[Path], folder: Path) -> str:
    """What makes two publications the same: the pipeline cells and the copied files.

    Outputs, metadata and cells that are not steps or setup are left out, so executing or
    annotating the notebook does not make a new version.
    """
    pipeline_cells = {s.cell for s in pipeline.steps} | {s.cell for s in pipeline.setup}
    digest = hashlib.sha256()
    for number, source in read_code_cells(notebook):
        if number in pipeline_cells:
            digest.update(f"cell\0{source}\0".encode())
    for path in files:
        digest.update(f"file\0{path.relative_to(folder).as_posix()}\0{hash_file(path)}\0".encode())
    return digest.hexdigest()[:32]


def _describe_steps(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [
        {
            "name": step.name, "cell": step.cell,
            "inputs": [ref.describe() for ref in step.header.inputs],
            "outputs": [out.describe() for out in step.header.outputs],
            "after": sorted(pipeline.upstream(step.name)),
            "env": step.header.env, "compute": step.header.compute,
        }
        for step in pipeline.steps
    ]


def _resolve_environments(store: Store, pipeline: Pipeline) -> tuple[dict[str, str], list[DefinitionIssue]]:
    known = set(store.environments.names())
    resolved: dict[str, str] = {}
    issues: list[DefinitionIssue] = []
    for step in pipeline.steps:
        if not step.header.env:
            continue
        name, version = parse_env_ref(step.header.env)
        if name not in known:
            issues.append(DefinitionIssue(
                f"environment {name!r} is not defined; create it with `mlpipe env create {name}`",
                step=step.name, cell=step.cell, field=f"--env {step.header.env}",
            ))
            continue
        resolved[step.name] = store.environments.get(name, version).ref
    return resolved, issues


def publish(
    store: Store,
    notebook: Path,
    name: str,
    description: str | None = None,
    make_default: bool = True,
) -> tuple[PublishedPipeline, bool]:
    """Publish ``notebook`` as the next version of ``name``; returns (version, created).

    The pipeline is validated first (every issue at once) and nothing is stored when it
    has any. Content identical to the latest version returns that version, uncreated.
    """
    check_name(name)
    pipeline = load_pipeline(notebook)
    source = notebook.expanduser().resolve()
    folder = source.parent
    store.workspace.ensure_created()
    issues = pipeline.definition_issues(store.datasets.versions())
    environments, env_issues = _resolve_environments(store, pipeline)
    files, file_issues = _pipeline_files(pipeline, folder)
    issues += env_issues + file_issues
    if issues:
        raise DefinitionError(issues, pipeline.source)
    pipeline.topological_order()  # cycles were reported above; this cannot raise now
    content_hash = _content_hash(source, pipeline, files, folder)
    latest = _latest_row(store, name)
    if latest is not None and latest["content_hash"] == content_hash:
        return get_published(store, name, latest["version"]), False

    # Stage the snapshot outside the transaction (copying may be slow), then move it into
    # place and insert the row in one IMMEDIATE transaction: two publishers never share a
    # version number, and a crash leaves at most an unreferenced staging folder.
    staging = store.workspace.staging_dir / f"publish-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        shutil.copy2(source, staging / SNAPSHOT_NOTEBOOK)
        relative = []
        for path in files:
            rel = path.relative_to(folder)
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, staging / rel)
            relative.append(rel.as_posix())
        with store.workspace.transaction() as db:
            row = db.execute(
                "SELECT version, content_hash FROM published_pipelines WHERE name=? "
                "ORDER BY version DESC LIMIT 1", (name,),
            ).fetchone()
            if row is not None and row["content_hash"] == content_hash:
                version, created = row["version"], False  # another publisher just did it
            else:
                version, created = (row["version"] + 1 if row else 1), True
                target = published_dir(store, name) / f"v{version}"
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():  # left by a crash between rename and commit
                    shutil.rmtree(target)
                os.rename(staging, target)
                db.execute(
                    "INSERT INTO published_pipelines (name, version, content_hash, notebook, "
                    "source, steps, parameters, environments, datasets, files, git, "
                    "description, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (name, version, content_hash, str(target / SNAPSHOT_NOTEBOOK), str(source),
                     json.dumps(_describe_steps(pipeline)),
                     json.dumps(stored_values(pipeline.parameters())), json.dumps(environments),
                     json.dumps(sorted(pipeline.datasets_used())), json.dumps(relative),
                     json.dumps(git_info(folder)), description, time.time()),
                )
                if make_default:
                    db.execute(
                        "INSERT INTO published_defaults (name, version) VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET version=excluded.version",
                        (name, version),
                    )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return get_published(store, name, version), created


def published_dir(store: Store, name: str) -> Path:
    return store.workspace.root / "published" / name


def _latest_row(store: Store, name: str) -> Any:
    rows = store.workspace.query(
        "SELECT * FROM published_pipelines WHERE name=? ORDER BY version DESC LIMIT 1", (name,)
    )
    return rows[0] if rows else None


def _default_version(store: Store, name: str) -> int | None:
    rows = store.workspace.query("SELECT version FROM published_defaults WHERE name=?", (name,))
    if rows:
        return int(rows[0]["version"])
    latest = _latest_row(store, name)
    return int(latest["version"]) if latest is not None else None


def _from_row(row: Any, default: int | None) -> PublishedPipeline:
    return PublishedPipeline(
        name=row["name"], version=row["version"], content_hash=row["content_hash"],
        notebook=Path(row["notebook"]), source=row["source"], steps=json.loads(row["steps"]),
        parameters=read_stored_values(json.loads(row["parameters"])), environments=json.loads(row["environments"]),
        datasets=json.loads(row["datasets"]), files=json.loads(row["files"]),
        git=json.loads(row["git"]), description=row["description"],
        created_at=row["created_at"], disabled=bool(row["disabled"]),
        is_default=row["version"] == default,
    )


def published_names(store: Store) -> list[str]:
    if not store.workspace.db_path.exists():
        return []
    rows = store.workspace.query("SELECT DISTINCT name FROM published_pipelines ORDER BY name")
    return [r["name"] for r in rows]


def get_published(store: Store, name: str, version: int | None = None) -> PublishedPipeline:
    """Version ``version`` of ``name``, or its default version.

    PublishedPipelineNotFoundError lists the known names or versions.
    """
    names = published_names(store)
    if name not in names:
        raise PublishedPipelineNotFoundError(
            f"no published pipeline named {name!r} (published: {', '.join(names) or 'none'}; "
            f"publish one with `mlpipe publish NOTEBOOK --name {name}`)"
        )
    default = _default_version(store, name)
    wanted = default if version is None else version
    rows = store.workspace.query(
        "SELECT * FROM published_pipelines WHERE name=? AND version=?", (name, wanted)
    )
    if not rows:
        versions = [r["version"] for r in store.workspace.query(
            "SELECT version FROM published_pipelines WHERE name=? ORDER BY version", (name,))]
        raise PublishedPipelineNotFoundError(
            f"published pipeline {name!r} has no version {version} "
            f"(versions: {', '.join(f'v{v}' for v in versions)})"
        )
    return _from_row(rows[0], default)


def list_published(store: Store, name: str | None = None) -> list[PublishedPipeline]:
    """Every published version (of ``name`` if given), by name then version."""
    if name is not None:
        get_published(store, name)  # the not-found error
    result = []
    for known in published_names(store):
        if name is not None and known != name:
            continue
        default = _default_version(store, known)
        rows = store.workspace.query(
            "SELECT * FROM published_pipelines WHERE name=? ORDER BY version", (known,)
        )
        result += [_from_row(r, default) for r in rows]
    return result


def set_enabled(store: Store, name: str, version: int | None, enabled: bool) -> list[PublishedPipeline]:
    """Disable (or enable again) one version, or every version of ``name`` when None.

    A disabled version cannot be triggered; schedules that fire it record a failed firing.
    """
    targets = [get_published(store, name, version)] if version is not None else list_published(store, name)
    with store.workspace.transaction() as db:
        for target in targets:
            db.execute(
                "UPDATE published_pipelines SET disabled=? WHERE name=? AND version=?",
                (0 if enabled else 1, name, target.version),
            )
    return [get_published(store, name, t.version) for t in targets]


def set_default(store: Store, name: str, version: int) -> PublishedPipeline:
    """Make ``version`` the one that triggers and schedules without a version run."""
    target = get_published(store, name, version)
    if target.disabled:
        raise ConflictError(f"{target.ref} is disabled; enable it before making it the default")
    with store.workspace.transaction() as db:
        db.execute(
            "INSERT INTO published_defaults (name, version) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET version=excluded.version",
            (name, version),
        )
    return get_published(store, name, version)


def runnable(store: Store, name: str, version: int | None = None) -> PublishedPipeline:
    """The version a trigger runs: found, and not disabled (else ConflictError)."""
    target = get_published(store, name, version)
    if target.disabled:
        which = "its default version " if version is None else ""
        raise ConflictError(
            f"published pipeline {name!r} {which}v{target.version} is disabled "
            f"(`mlpipe published enable {name} --version {target.version}`)"
        )
    return target
