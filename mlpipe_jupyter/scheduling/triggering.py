"""Triggering a published pipeline: validate, then start a run and return its id at once.

A run of a published pipeline is ``python -m mlpipe_jupyter run SNAPSHOT --published
NAME@vN --run-id ID`` in its own process (and session), with the workspace passed as
``MLPIPE_HOME`` and the snapshot's folder as working directory. Its own process because
a trigger must return before the run ends, a REST handler must not host kernels, and the
scheduler can time a run out by signalling it (SIGTERM makes the CLI cancel cleanly).
Everything that can be checked without running is checked here, before anything starts,
so the id returned names a run that is being created.

A trigger may carry a sweep (``model.sweep``): then the process is ``mlpipe run SNAPSHOT
--published NAME@vN --sweep ... --yes --sweep-id ID``, the id returned is the sweep's, and
every member is validated here first, as ``mlpipe run --sweep`` would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mlpipe_jupyter.errors import NotFoundError
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.sweep import SweepSpec
from mlpipe_jupyter.model.values import parameter_texts
from mlpipe_jupyter.processes import process_alive
from mlpipe_jupyter.runner.sweep import member_run_id
from mlpipe_jupyter.scheduling.publishing import PublishedPipeline
from mlpipe_jupyter.store import Store, SweepRecord
from mlpipe_jupyter.store.runs import RunRecord, new_run_id
from mlpipe_jupyter.store.sweeps import is_sweep_id, new_sweep_id
from mlpipe_jupyter.store.workspace import HOME_VARIABLE, Workspace
from mlpipe_jupyter.validation import validate_trigger

LAUNCH_LOG = "launcher.log"


def launch_log(workspace: Workspace, started_id: str) -> Path:
    """Where the output of a triggered process goes: ``runs/ID/launcher.log`` for a run,
    ``sweeps/ID/launcher.log`` for a sweep (its members' folders are theirs)."""
    if is_sweep_id(started_id):
        return workspace.sweep_dir(started_id) / LAUNCH_LOG
    return workspace.run_dir(started_id) / LAUNCH_LOG


def describe_started(started_id: str) -> str:
    """``run ID`` or ``sweep ID``: what a firing's or a trigger's id names."""
    return f"{'sweep' if is_sweep_id(started_id) else 'run'} {started_id}"


@dataclass(frozen=True)
class PreparedRun:
    """A validated run (or sweep) of a published version, ready to start."""

    published: PublishedPipeline
    parameters: dict[str, str]  # as text, the way ``-p NAME=VALUE`` passes them
    run_id: str  # the run's id; a sweep's id when ``sweep`` is set
    dataset_versions: dict[str, int] = field(default_factory=dict)
    schedule: str | None = None  # the schedule firing it: its runs notify its targets
    sweep: SweepSpec | None = None  # every member validated (and confirmed: --yes)

    @property
    def sweep_id(self) -> str | None:
        return self.run_id if self.sweep is not None else None

    @property
    def member_run_ids(self) -> list[str]:
        """A sweep's member run ids, known before it starts (none for a run)."""
        if self.sweep is None:
            return []
        return [member_run_id(self.run_id, n) for n in range(1, self.sweep.size() + 1)]

    def describe(self) -> str:
        return describe_started(self.run_id)

    def command(self) -> list[str]:
        """The ``mlpipe run`` command line of this run (or sweep)."""
        command = [
            sys.executable, "-m", "mlpipe_jupyter", "run", str(self.published.notebook),
            "--published", self.published.ref,
        ]
        if self.sweep is None:
            command += ["--run-id", self.run_id]
        command += ["--experiment", self.published.name, "--quiet"]
        for name, value in sorted(self.parameters.items()):
            command += ["-p", f"{name}={value}"]
        for name, version in sorted(self.dataset_versions.items()):
            command += ["--dataset-version", f"{name}@v{version}"]
        if self.schedule:
            command += ["--schedule", self.schedule]
        if self.sweep is not None:
            command += sweep_arguments(self.sweep)
            # validated (and confirmed) by the trigger: the process must not ask again
            command += ["--yes", "--sweep-id", self.run_id]
        return command


def sweep_arguments(spec: SweepSpec) -> list[str]:
    """``--sweep ... [--samples N --seed S]``: the options that ask ``mlpipe run`` for
    ``spec`` (its stored form, ``SweepSpec.to_dict()``, parses back to the same members)."""
    data = spec.to_dict()
    arguments = [word for item in data["sweep"] for word in ("--sweep", item)]
    if "samples" in data:
        arguments += ["--samples", str(data["samples"]), "--seed", str(data["seed"])]
    return arguments


def prepare_run(
    store: Store,
    name: str,
    version: int | None = None,
    parameters: Mapping[str, Any] | None = None,
    dataset_versions: Mapping[str, int] | None = None,
    schedule: str | None = None,
    sweep: SweepSpec | None = None,
    yes: bool = False,
) -> PreparedRun:
    """Check a trigger without starting anything.

    Raises PublishedPipelineNotFoundError (unknown name or version), ConflictError
    (disabled), then every other problem at once (``validation.validate_trigger``):
    ParameterError when only parameters are wrong, else DefinitionError (a dataset it
    reads is gone, a pinned version does not exist, a compute target is unknown, ...).
    With ``sweep``, the sweep's problems too (a parameter the version does not declare, a
    member's value of the wrong type, more than ``CONFIRM_ABOVE`` members without ``yes``).
    """
    texts = parameter_texts(parameters)
    published, _ = validate_trigger(store, name, version, texts, dataset_versions,
                                    sweep=sweep, yes=yes)
    started_id = new_sweep_id() if sweep is not None else new_run_id()
    return PreparedRun(published, texts, started_id, dict(dataset_versions or {}), schedule,
                       sweep)


def start_run(store: Store, prepared: PreparedRun) -> subprocess.Popen[bytes]:
    """Start the run's process, detached in its own session; its output goes to
    ``runs/ID/launcher.log`` (``sweeps/ID/launcher.log`` for a sweep), empty unless the
    run fails before it records anything."""
    log_path = launch_log(store.workspace, prepared.run_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, HOME_VARIABLE: str(store.workspace.root)}
    with log_path.open("ab") as log:
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
    sweep: SweepSpec | None = None,
    yes: bool = False,
) -> str:
    """Start a run of published pipeline ``name`` (its default version unless ``version``)
    with ``parameters`` and return the run id without waiting for it; with ``sweep``,
    start that sweep and return its id.

    The one call a REST handler needs; its errors are the ones ``prepare_run`` raises.
    """
    prepared = prepare_run(store, name, version, parameters, sweep=sweep, yes=yes)
    start_run(store, prepared)
    return prepared.run_id


def wait_for_run(store: Store, run_id: str, timeout: float | None = None,
                 poll_seconds: float = 0.5) -> RunRecord:
    """Block until run ``run_id`` has a final status (or ``timeout`` seconds pass)."""
    def ended() -> RunRecord | None:
        store.runs.mark_dead_runs()
        record = store.runs.get_run(run_id)
        return record if record.status.is_final else None
    return _wait(store, run_id, f"run {run_id}", ended, timeout, poll_seconds)


def started_status(store: Store, started_id: str) -> RunStatus:
    """The status of what a trigger or firing started: its run's, or its sweep's (read
    from the sweep's members). NotFoundError when it was never recorded."""
    if is_sweep_id(started_id):
        return RunStatus(store.sweeps.get(started_id).status)
    return store.runs.get_run(started_id).status


def sweep_ended(record: SweepRecord) -> bool:
    """Whether a sweep is over: no member runs or waits, and its process has finished (or
    is gone: its members that never started count as canceled)."""
    if record.status == RunStatus.RUNNING.value:
        return False
    if record.ended_at is not None:
        return True
    return record.host == socket.gethostname() and not process_alive(record.pid)


def wait_for_sweep(store: Store, sweep_id: str, timeout: float | None = None,
                   poll_seconds: float = 0.5) -> SweepRecord:
    """Block until sweep ``sweep_id`` has ended (or ``timeout`` seconds pass): its status
    is then succeeded (every member), failed (some) or canceled."""
    def ended() -> SweepRecord | None:
        store.runs.mark_dead_runs()
        record = store.sweeps.get(sweep_id)
        return record if sweep_ended(record) else None
    return _wait(store, sweep_id, f"sweep {sweep_id}", ended, timeout, poll_seconds)


_Ended = TypeVar("_Ended")


def _wait(store: Store, started_id: str, what: str, ended: Callable[[], _Ended | None],
          timeout: float | None, poll_seconds: float) -> _Ended:
    """Poll ``ended`` (NotFoundError: not recorded yet) until it returns its record."""
    deadline = None if timeout is None else time.time() + timeout
    log_path = launch_log(store.workspace, started_id)
    while True:
        recorded = True
        try:
            record = ended()
        except NotFoundError:
            record, recorded = None, False
        if record is not None:
            return record
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout} s")
        time.sleep(poll_seconds)
        if not recorded:
            _raise_if_not_started(log_path, what)


def _raise_if_not_started(log_path: Path, what: str) -> None:
    """The process ended before recording anything: say why instead of waiting forever."""
    if log_path.exists():
        text = log_path.read_text(errors="replace").strip()
        if text and "mlpipe:" in text:
            raise NotFoundError(f"{what} did not start: {text}")


__all__ = ["PreparedRun", "describe_started", "launch_log", "prepare_run", "start_run",
           "started_status", "sweep_arguments", "sweep_ended", "trigger_published", "wait_for_run",
           "wait_for_sweep"]
