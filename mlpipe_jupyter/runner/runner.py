"""Running a pipeline: validate, plan, record, execute in parallel, commit, report.

The runner is the only writer of run records. Executors report outcomes; the runner turns
them into committed results, dataset versions, step states and events. Independent steps
run at once (up to ``max_parallel``); a failed step skips its downstream steps while
independent branches go on; Ctrl-C (or ``cancel()``) stops kernels and marks the run
canceled.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import DefinitionIssue, ExecutorError
from mlpipe_jupyter.events import RUN_STARTED, STEP_STATUS, EventBus, RunEvent
from mlpipe_jupyter.executors.base import Executor, StepOutcome, unapplied_sentences
from mlpipe_jupyter.executors.kernels import reap_orphans
from mlpipe_jupyter.executors.registry import DEFAULT_COMPUTE, create_executor
from mlpipe_jupyter.model.notify import parse_on
from mlpipe_jupyter.model.pipeline import Pipeline
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.step import Step
from mlpipe_jupyter.notebook import load_pipeline
from mlpipe_jupyter.notifications import notify_run, targets_for
from mlpipe_jupyter.runner.execution import Execution, RunResult, SharedWork, initial_status
from mlpipe_jupyter.runner.planning import EXECUTE, Planner, Selection, StepPlan
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.results import discard
from mlpipe_jupyter.store.runs import new_run_id
from mlpipe_jupyter.store.snapshot import git_info, snapshot_notebook
from mlpipe_jupyter.store.workspace import Workspace, find_workspace_dir
from mlpipe_jupyter.validation import validate_run

log = logging.getLogger(__name__)


@dataclass
class RunRequest:
    """Everything a user can ask of one run."""

    notebook: Path
    parameters: Mapping[str, str] = field(default_factory=dict)  # -p NAME=VALUE, as text
    compute: str | None = None  # default compute for steps that name none
    env: str | None = None  # default environment for steps that name none
    selection: Selection = field(default_factory=Selection)
    max_parallel: int | None = None
    experiment: str | None = None
    published: str | None = None  # "NAME@vN" for runs of a published pipeline
    run_id: str | None = None  # chosen by the caller (a trigger returns it before the run starts)
    # dataset name -> version for `dataset:NAME` inputs that name no version (a dataset
    # trigger pins the version that fired instead of whatever is latest at plan time)
    dataset_versions: Mapping[str, int] = field(default_factory=dict)
    # notification specs of this run (model.notify grammar) and the statuses that notify
    # them (default: failed, canceled); the workspace's, the published pipeline's and the
    # schedule's targets are added when the run ends
    notify: Sequence[str] = ()
    notify_on: Sequence[str] = ()
    schedule: str | None = None  # the schedule that started this run (set by the scheduler)


def _default_parallel() -> int:
    return os.cpu_count() or 1


class Runner:
    """Runs notebooks as pipelines against one workspace."""

    def __init__(self, store: Store | None = None, events: EventBus | None = None) -> None:
        self._store = store
        self.events = events or EventBus()
        self.cancel_requested = threading.Event()  # set by cancel(); drive() watches it
        self._executors: dict[str, Executor] = {}

    # -- public ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Cancel the run in progress (from any thread)."""
        self.cancel_requested.set()

    def run(self, request: RunRequest) -> RunResult:
        pipeline = load_pipeline(request.notebook)  # messages name the path as the user gave it
        notebook = request.notebook.expanduser().resolve()
        parameters, store = self.validate_request(pipeline, request)
        run_id = request.run_id or new_run_id()
        try:
            plans = self.plan_run(store, pipeline, notebook, run_id, parameters, request)
            self.prepare_targets(notebook, [plans], request)
            execution = self.record_run(store, pipeline, notebook, run_id, parameters, request,
                                     plans)
            result = execution.go()  # the run's final status is recorded (and emitted)
            self.notify_ended(store, run_id, request)
            return result
        finally:
            self.close()

    def close(self) -> None:
        """Close the compute targets' executors this runner opened."""
        for executor in self._executors.values():
            executor.close()
        self._executors.clear()

    # -- before anything is written -------------------------------------------------------
    # The steps of ``run`` are public so that ``runner.sweep`` can run several runs as one:
    # validate_request, plan_run (each member), prepare_targets (once), record_run (each),
    # ``execution.drive`` (all together), notify_ended (each).
    def validate_request(self, pipeline: Pipeline, request: RunRequest,
                         extra: Sequence[DefinitionIssue] = ()) -> tuple[dict[str, Any], Store]:
        """Check the whole request; raise with every problem (and ``extra``, a sweep's)
        before writing anything."""
        store = self._store
        if store is None:
            found = find_workspace_dir()
            store = Store(Workspace(found)) if found and found.is_dir() else None
        parameters = validate_run(
            store, pipeline, request.notebook.expanduser().resolve().parent,
            parameters=request.parameters, compute=request.compute, env=request.env,
            dataset_versions=request.dataset_versions, steps=request.selection.steps,
            until=request.selection.until, downstream=request.selection.downstream,
            max_parallel=request.max_parallel, notify=request.notify,
            notify_on=request.notify_on, extra=extra,
        )
        if store is None:  # only now, with nothing wrong, is a new workspace created
            store = Store(Workspace.find(create=True))
        else:
            store.workspace.ensure_created()
        self._store = store
        return parameters, store

    def _executor(self, compute: str) -> Executor:
        if compute not in self._executors:
            assert self._store is not None
            executor = create_executor(compute, workspace=self._store.workspace)
            executor.check()
            self._executors[compute] = executor
        return self._executors[compute]

    def _fetch_remote(self, store: Store, run_id: str, step: Step, compute: str,
                      fingerprint: str) -> bool:
        """Commit locally a result the compute target's datastore already holds."""
        executor = self._executor(compute)
        if type(executor).fetch_result is Executor.fetch_result:
            return False
        staging = store.results.new_staging(run_id, step.name,
                                            [o.name for o in step.header.outputs])
        try:
            if not executor.fetch_result(fingerprint, staging):
                discard(staging)
                return False
            store.results.commit(staging, fingerprint, fingerprint, run_id, step.name)
            return True
        except Exception as exc:  # the step just runs: reuse is an optimisation
            discard(staging)
            log.warning("step %s: could not fetch its result from the datastore: %s",
                        step.name, exc)
            return False

    # -- the run ----------------------------------------------------------------------------
    def plan_run(self, store: Store, pipeline: Pipeline, notebook: Path, run_id: str,
              parameters: dict[str, Any], request: RunRequest,
              forced_id: str | None = None) -> dict[str, StepPlan]:
        """Every step's plan. ``forced_id`` makes forced results unique per sweep, not per
        run (default: the run id), so that a sweep's members still share them."""
        store.runs.mark_dead_runs()
        store.results.clean_stale_staging()
        reap_orphans()  # kernels and kernel files of runners killed outright (kill -9)
        environments: dict[tuple[str, str | None, str | None], str] = {}

        def environment(compute: str, env: str | None, image: str | None) -> str:
            # once per target and environment in a plan, not once per step: a local one
            # lists sys.path's folders (~1 ms; a 100-step chain's no-op re-run is ~0.6 s)
            key = (compute, env, image)
            if key not in environments:
                environments[key] = self._executor(compute).environment_fingerprint(env, image)
            return environments[key]

        planner = Planner(
            store, pipeline, notebook, forced_id or run_id, parameters, environment,
            request.compute or DEFAULT_COMPUTE,
            request.env,
            request.dataset_versions,
            lambda step, compute, fingerprint: self._fetch_remote(
                store, run_id, step, compute, fingerprint),
            lambda compute, header: self._executor(compute).unapplied(header),
        )
        return planner.plan(request.selection)

    def prepare_targets(self, notebook: Path, plans: Sequence[Mapping[str, StepPlan]],
                 request: RunRequest) -> None:
        """Let each compute target get ready for the steps it will execute (warm kernels)."""
        max_parallel = request.max_parallel or _default_parallel()
        to_execute = [p for member in plans for p in member.values() if p.action == EXECUTE]
        for compute in {p.compute for p in to_execute}:
            count = sum(1 for p in to_execute if p.compute == compute)
            self._executor(compute).prepare(notebook.parent, count, max_parallel)

    def record_run(
        self,
        store: Store,
        pipeline: Pipeline,
        notebook: Path,
        run_id: str,
        parameters: dict[str, Any],
        request: RunRequest,
        plans: dict[str, StepPlan],
        outcomes: queue.Queue[StepOutcome] | None = None,
        shared: SharedWork | None = None,
        sweep: str | None = None,
    ) -> Execution:
        """Record the run and its planned steps, announce it, and return its execution."""
        max_parallel = request.max_parallel or _default_parallel()
        order = pipeline.topological_order()
        planned = [
            plans[name].record(index, initial_status(plans[name]), sorted(pipeline.upstream(name)))
            for index, name in enumerate(order)
        ]
        experiment = request.experiment or pipeline.experiment or notebook.stem
        options: dict[str, Any] = {
            "compute": request.compute or DEFAULT_COMPUTE, "env": request.env,
            "max_parallel": max_parallel,
            "steps": list(request.selection.steps), "downstream": request.selection.downstream,
            "until": request.selection.until, "regenerate": request.selection.regenerate,
        }
        if request.dataset_versions:
            options["dataset_versions"] = dict(request.dataset_versions)
        if request.schedule:
            options["schedule"] = request.schedule
        if sweep:
            options["sweep"] = sweep
        store.runs.create_run(
            run_id, experiment, str(notebook), parameters, options, git_info(notebook.parent),
            planned, published=request.published,
        )
        snapshot_notebook(notebook, store.workspace.run_dir(run_id))
        detail: dict[str, Any] = {
            "notebook": str(notebook), "steps": order, "experiment": experiment,
            "upstream": {n: sorted(pipeline.upstream(n)) for n in order},
            "variables": {n: [f"{f.producer}.{f.name}" for f in pipeline.flows_into(n)]
                          for n in order if pipeline.flows_into(n)},
            # step -> sentences: what its compute target will not apply of its requests
            "unapplied": {n: unapplied_sentences(plans[n].unapplied)
                          for n in order if plans[n].unapplied},
        }
        if sweep:
            detail["sweep"] = sweep
        self.events.emit(RunEvent(RUN_STARTED, run_id, RunStatus.RUNNING.value, detail=detail))
        for item in planned:
            self.events.emit(RunEvent(STEP_STATUS, run_id, item.status.value, item.step,
                                      {"reason": item.decision, "reused_from": item.reused_from}))
        return Execution(
            store, pipeline, notebook, run_id, plans, max_parallel,
            executor_for=self._executor, executors=self._executors.values,
            events=self.events, cancel_requested=self.cancel_requested,
            outcomes=outcomes, shared=shared,
        )

    def notify_ended(self, store: Store, run_id: str, request: RunRequest) -> None:
        """The run's notifications; they never change its status (``notify_run`` records
        failures and raises nothing) and take at most timeout x attempts + back-offs."""
        try:
            statuses, _ = parse_on(request.notify_on)
            targets = targets_for(store, request.notify, statuses, request.published,
                                  request.schedule)
            notify_run(store, run_id, targets)
        except Exception:  # noqa: BLE001 -- a bug here must not fail a finished run
            log.exception("notifications of run %s", run_id)


def run_notebook(
    notebook: Path | str,
    parameters: Mapping[str, str] | None = None,
    *,
    compute: str | None = None,
    env: str | None = None,
    steps: Sequence[str] = (),
    downstream: bool = False,
    until: str | None = None,
    regenerate: bool = False,
    max_parallel: int | None = None,
    store: Store | None = None,
    events: EventBus | None = None,
) -> RunResult:
    """Run a notebook as a pipeline (the library form of ``mlpipe run``)."""
    request = RunRequest(
        notebook=Path(notebook), parameters=dict(parameters or {}), compute=compute, env=env,
        selection=Selection(tuple(steps), downstream, until, regenerate),
        max_parallel=max_parallel,
    )
    return Runner(store, events).run(request)


__all__ = ["ExecutorError", "RunRequest", "RunResult", "Runner", "run_notebook"]
