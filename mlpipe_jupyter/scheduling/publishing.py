"""Published pipelines: immutable, versioned snapshots of a notebook pipeline.

``publish`` copies the notebook — with the local modules its steps import and the files
their ``--hash-paths`` name — into ``.mlpipe/published/NAME/vN/``, so a later edit of the
notebook never changes a published version. Publishing content identical to the latest
version creates nothing. Each name has a default version: the newest one, unless another
was chosen with ``set_default``. What is stored, and how, is ``store.published``'s; the
``PublishedPipeline`` record lives there and is re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import ConflictError, DefinitionError
from mlpipe_jupyter.kale import METADATA_KEY as KALE_METADATA_KEY
from mlpipe_jupyter.model.notify import parse_on
from mlpipe_jupyter.model.pipeline import KALE, Pipeline
from mlpipe_jupyter.model.step import VARIABLES_INPUT_PREFIX, VARIABLES_OUTPUT
from mlpipe_jupyter.notebook import load_pipeline, read_notebook
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.datasets import hash_file
from mlpipe_jupyter.store.environments import parse_env_ref
from mlpipe_jupyter.store.notify import PUBLISHED
from mlpipe_jupyter.store.published import SNAPSHOT_NOTEBOOK, PublishedPipeline
from mlpipe_jupyter.store.snapshot import git_info
from mlpipe_jupyter.validation import (
    local_modules,
    name_issues,
    published_pipeline,
    runnable_version,
    validate_publish,
)


def load_published_pipeline(published: PublishedPipeline) -> Pipeline:
    """The pipeline of a published snapshot; messages name it ``NAME@vN``."""
    return published_pipeline(published)


def check_name(name: str, what: str = "published pipeline") -> None:
    """Raise DefinitionError when ``name`` is not a valid published pipeline (or schedule) name."""
    issues = name_issues(name, what)
    if issues:
        raise DefinitionError(issues)


def _local_modules(pipeline: Pipeline, folder: Path) -> set[Path]:
    """The local modules the setup cells and steps import, under ``folder``."""
    codes = [cell.code for cell in pipeline.setup] + [step.code for step in pipeline.steps]
    return {path for code in codes for path in local_modules(code, folder)}


def _content_hash(notebook: Path, pipeline: Pipeline, files: list[Path], folder: Path) -> str:
    """What makes two publications the same: the pipeline cells and the copied files.

    Outputs, metadata and cells that are not steps or setup are left out, so executing or
    annotating the notebook does not make a new version. A Kale notebook's pipeline is
    every code cell with its tags (untagged cells join steps) and its Kale metadata.
    """
    pipeline_cells = {s.cell for s in pipeline.steps} | {s.cell for s in pipeline.setup}
    digest = hashlib.sha256()
    content = read_notebook(notebook)
    if pipeline.kind == KALE:
        kale = json.dumps(content.metadata.get(KALE_METADATA_KEY), sort_keys=True, default=str)
        digest.update(f"kale\0{kale}\0".encode())
    for cell in content.code_cells:
        if pipeline.kind == KALE:
            digest.update(f"cell\0{cell.source}\0{json.dumps(cell.tags)}\0".encode())
        elif cell.number in pipeline_cells:
            digest.update(f"cell\0{cell.source}\0".encode())
    for path in files:
        digest.update(f"file\0{path.relative_to(folder).as_posix()}\0{hash_file(path)}\0".encode())
    return digest.hexdigest()[:32]


def _describe_steps(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [
        {
            "name": step.name, "cell": step.cell,
            # the folders of handed-over variables are mlpipe's, not the user's: "uses" says
            "inputs": [ref.describe() for ref in step.header.inputs
                       if not ref.name.startswith(VARIABLES_INPUT_PREFIX)],
            "outputs": [out.describe() for out in step.header.outputs
                        if out.name != VARIABLES_OUTPUT],
            "uses": [f"{flow.producer}.{flow.name}" for flow in pipeline.flows_into(step.name)],
            "after": sorted(pipeline.upstream(step.name)),
            "env": step.header.env, "compute": step.header.compute,
        }
        for step in pipeline.steps
    ]


def _resolve_environments(store: Store, pipeline: Pipeline) -> dict[str, str]:
    """Each step's environment as the NAME@vN it names now (checked to exist)."""
    resolved: dict[str, str] = {}
    for step in pipeline.steps:
        if step.header.env:
            name, version = parse_env_ref(step.header.env)
            resolved[step.name] = store.environments.get(name, version).ref
    return resolved


def publish(
    store: Store,
    notebook: Path,
    name: str,
    description: str | None = None,
    make_default: bool = True,
    notify: Sequence[str] | None = None,
    notify_on: Sequence[str] = (),
) -> tuple[PublishedPipeline, bool]:
    """Publish ``notebook`` as the next version of ``name``; returns (version, created).

    The pipeline is validated first (every issue at once) and nothing is stored when it
    has any. Content identical to the latest version returns that version, uncreated.
    ``notify`` (not None) replaces the notification targets of ``name`` — every version's
    runs notify them — even when the content is unchanged; None keeps them.
    """
    pipeline = load_pipeline(notebook)
    source = notebook.expanduser().resolve()
    folder = source.parent
    hash_files = validate_publish(store, pipeline, folder, name, notify or (), notify_on)
    store.workspace.ensure_created()
    if notify is not None:
        store.notify.replace_targets(PUBLISHED, name, notify, parse_on(notify_on)[0])
    environments = _resolve_environments(store, pipeline)
    files = sorted(_local_modules(pipeline, folder) | set(hash_files))
    pipeline.topological_order()  # cycles were reported above; this cannot raise now
    content_hash = _content_hash(source, pipeline, files, folder)
    latest = store.published.latest(name)
    if latest is not None and latest.content_hash == content_hash:
        return get_published(store, name, latest.version), False

    # Stage the snapshot outside the transaction (copying may be slow); the store then moves
    # it into place and inserts the row in one IMMEDIATE transaction: two publishers never
    # share a version number, and a crash leaves at most an unreferenced staging folder.
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
        version, created = store.published.add(
            name, staging, content_hash=content_hash, source=source,
            steps=_describe_steps(pipeline), parameters=pipeline.parameters(),
            environments=environments, datasets=sorted(pipeline.datasets_used()),
            files=relative, git=git_info(folder), description=description,
            make_default=make_default,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return get_published(store, name, version), created


def published_dir(store: Store, name: str) -> Path:
    return store.published.folder(name)


def published_names(store: Store) -> list[str]:
    return store.published.names()


def get_published(store: Store, name: str, version: int | None = None) -> PublishedPipeline:
    """Version ``version`` of ``name``, or its default version.

    PublishedPipelineNotFoundError lists the known names or versions.
    """
    return store.published.get(name, version)


def list_published(store: Store, name: str | None = None) -> list[PublishedPipeline]:
    """Every published version (of ``name`` if given), by name then version."""
    return store.published.all(name)


def set_enabled(store: Store, name: str, version: int | None, enabled: bool) -> list[PublishedPipeline]:
    """Disable (or enable again) one version, or every version of ``name`` when None.

    A disabled version cannot be triggered; schedules that fire it record a failed firing.
    """
    targets = [get_published(store, name, version)] if version is not None else list_published(store, name)
    store.published.set_disabled(name, [t.version for t in targets], disabled=not enabled)
    return [get_published(store, name, t.version) for t in targets]


def set_default(store: Store, name: str, version: int) -> PublishedPipeline:
    """Make ``version`` the one that triggers and schedules without a version run."""
    target = get_published(store, name, version)
    if target.disabled:
        raise ConflictError(f"{target.ref} is disabled; enable it before making it the default")
    store.published.set_default(name, version)
    return get_published(store, name, version)


def runnable(store: Store, name: str, version: int | None = None) -> PublishedPipeline:
    """The version a trigger runs: found, and not disabled (else ConflictError)."""
    return runnable_version(store, name, version)
