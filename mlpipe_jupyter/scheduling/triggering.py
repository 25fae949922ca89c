"""Triggering a published pipeline: validate, then start a run and return its id at once.

A run of a published pipeline is ``python -m mlpipe_jupyter run SNAPSHOT --published
NAME@vN --run-id ID`` in its own process (and session), with the workspace passed as
``MLPIPE_HOME`` and the snapshot's folder as working directory. Its own process because
a trigger must return before the run ends, a REST handler must not host kernels, and the
scheduler can time a run out by signalling it (SIGTERM makes the CLI cancel cleanly).
Everything that can be checked without running is checked here, before anything starts,
so the id returned names a run that is being created.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.errors import NotFoundError
from mlpipe_jupyter.model.values import parameter_texts
from mlpipe_jupyter.scheduling.publishing import PublishedPipeline
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.runs import RunRecord, new_run_id
from mlpipe_jupyter.store.workspace import HOME_VARIABLE
from mlpipe_jupyter.validation import validate_trigger

LAUNCH_LOG = "launcher.log"


@dataclass(frozen=True)
class PreparedRun:
    """A validated run of a published version, ready to start."""

    published: PublishedPipeline
    parameters: dict[str, str]  # as text, the way ``-p NAME=VALUE`` passes them
    run_id: str
    dataset_versions: dict[str, int] = field(default_factory=dict)
    schedule: str | None = None  # the schedule firing it: its runs notify its targets

    def command(self) -> list[str]:
        """The ``mlpipe run`` command line of this run."""
        command = [
            sys.executable, "-m", "mlpipe_jupyter", "run", str(self.published.notebook),
            "--published", self.published.ref, "--run-id", self.run_id,
            "--experiment", self.published.name, "--quiet",
        ]
        for name, value in sorted(self.parameters.items()):
            command += ["-p", f"{name}={value}"]
        for name, version in sorted(self.dataset_versions.items()):
            command += ["--dataset-version", f"{name}@v{version}"]
        if self.schedule:
            command += ["--schedule", self.schedule]
        return command


def prepare_run(
    store: Store,
    name: str,
    version: int | None = None,
    parameters: Mapping[str, Any] | None = None,
    dataset_versions: Mapping[str, int] | None = None,
    schedule: str | None = None,
) -> PreparedRun:
    """Check a trigger without starting anything.

    Raises PublishedPipelineNotFoundError (unknown name or version), ConflictError
    (disabled), then every other problem at once (``validation.validate_trigger``):
    ParameterError when only parameters are wrong, else DefinitionError (a dataset it
    reads is gone, a pinned version does not exist, a compute target is unknown, ...).
    """
    texts = parameter_texts(parameters)
    published, _ = validate_trigger(store, name, version, texts, dataset_versions)
    return PreparedRun(published, texts, new_run_id(), dict(dataset_versions or {}), schedule)


def start_run(store: Store, prepared: PreparedRun) -> subprocess.Popen[bytes]:
    """Start the run's process, detached in its own session; its output goes to
    ``runs/ID/launcher.log`` (empty unless the run fails before it records anything)."""
    run_dir = store.workspace.run_dir(prepared.run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, HOME_VARIABLE: str(store.workspace.root)}
    with (run_dir / LAUNCH_LOG).open("ab") as log:
        return subprocess.Popen(
            prepared.command(), cwd=prepared.published.notebook.parent, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def trigger_published(
    store: Store,
    name: str,
    version: int | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> str:
    """Start a run of published pipeline ``name`` (its default version unless ``version``)
    with ``parameters`` and return the run id without waiting for it.

    The one call a REST handler needs; its errors are the ones ``prepare_run`` raises.
    """
    prepared = prepare_run(store, name, version, parameters)
    start_run(store, prepared)
    return prepared.run_id


def wait_for_run(store: Store, run_id: str, timeout: float | None = None,
                 poll_seconds: float = 0.5) -> RunRecord:
    """Block until run ``run_id`` has a final status (or ``timeout`` seconds pass)."""
    deadline = None if timeout is None else time.time() + timeout
    launch_log = store.workspace.run_dir(run_id) / LAUNCH_LOG
    while True:
        try:
            store.runs.mark_dead_runs()
            record = store.runs.get_run(run_id)
        except NotFoundError:
            record = None
        if record is not None and record.status.is_final:
            return record
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(f"run {run_id} did not finish within {timeout} s")
        time.sleep(poll_seconds)
        if record is None and launch_log.exists():
            # the process ended before recording the run: say why instead of waiting forever
            text = launch_log.read_text(errors="replace").strip()
            if text and "mlpipe:" in text:
                raise NotFoundError(f"run {run_id} did not start: {text}")


__all__ = ["PreparedRun", "prepare_run", "start_run", "trigger_published", "wait_for_run"]
