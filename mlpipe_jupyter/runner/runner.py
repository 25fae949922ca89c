"""Running a pipeline: validate, plan, record, execute in parallel, commit, report.

The runner is the only writer of run records. Executors report outcomes; the runner turns
them into committed results, dataset versions, step states and events. Independent steps
run at once (up to ``max_parallel``); a failed step skips its downstream steps while
independent branches go on; Ctrl-C (or ``cancel()``) stops kernels and marks the run
canceled.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import DefinitionError, DefinitionIssue, ExecutorError
from mlpipe_jupyter.events import RUN_FINISHED, RUN_STARTED, STEP_STATUS, EventBus, RunEvent
from mlpipe_jupyter.executors.base import Executor, StepOutcome, StepTask
from mlpipe_jupyter.executors.registry import (
    DEFAULT_COMPUTE,
    check_compute_name,
    create_executor,
)
from mlpipe_jupyter.model.parameters import resolve_parameters
from mlpipe_jupyter.model.pipeline import Pipeline
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.model.step import Step
from mlpipe_jupyter.notebook import load_pipeline
from mlpipe_jupyter.render import notebook_error, render_step, write_step_notebook
from mlpipe_jupyter.runner.planning import EXECUTE, REUSE, Planner, Selection, StepPlan
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.compute import ComputeTargets
from mlpipe_jupyter.store.results import discard
from mlpipe_jupyter.store.runs import new_run_id
from mlpipe_jupyter.store.snapshot import git_info, snapshot_notebook
from mlpipe_jupyter.store.workspace import Workspace, find_workspace_dir

CANCEL_GRACE_SECONDS = 15
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


@dataclass
class RunResult:
    run_id: str
    status: RunStatus
    step_status: dict[str, StepStatus]
    failures: list[str]

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.SUCCEEDED


def _default_parallel() -> int:
    return os.cpu_count() or 1


class Runner:
    """Runs notebooks as pipelines against one workspace."""

    def __init__(self, store: Store | None = None, events: EventBus | None = None) -> None:
        self._store = store
        self.events = events or EventBus()
        self._cancel = threading.Event()
        self._executors: dict[str, Executor] = {}

    # -- public ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Cancel the run in progress (from any thread)."""
        self._cancel.set()

    def run(self, request: RunRequest) -> RunResult:
        pipeline = load_pipeline(request.notebook)  # messages name the path as the user gave it
        notebook = request.notebook.expanduser().resolve()
        parameters, store = self._validate(pipeline, request)
        run_id = request.run_id or new_run_id()
        try:
            return self._run(store, pipeline, notebook, run_id, parameters, request)
        finally:
            for executor in self._executors.values():
                executor.close()
            self._executors.clear()

    # -- before anything is written -------------------------------------------------------
    def _validate(self, pipeline: Pipeline, request: RunRequest) -> tuple[dict[str, Any], Store]:
        """Check the whole request; raise with every problem before writing anything."""
        store = self._store
        if store is None:
            found = find_workspace_dir()
            store = Store(Workspace(found)) if found and found.is_dir() else None
        datasets = store.datasets.versions() if store and store.workspace.db_path.exists() else {}
        issues = pipeline.definition_issues(datasets)
        issues += request.selection.check(pipeline)
        for name, version in sorted(request.dataset_versions.items()):
            if name not in pipeline.datasets_used():
                issues.append(DefinitionIssue(
                    "the pipeline reads no such dataset", field=f"--dataset-version {name}@v{version}"))
            elif version not in datasets.get(name, []):
                issues.append(DefinitionIssue(
                    f"dataset {name!r} has no version {version}",
                    field=f"--dataset-version {name}@v{version}"))
        computes = {request.compute or DEFAULT_COMPUTE}
        computes |= {s.header.compute for s in pipeline.steps if s.header.compute}
        named = ComputeTargets(store.workspace).names() if store else []
        for name in sorted(computes):
            problem = check_compute_name(name, named)
            if problem:
                step = next((s for s in pipeline.steps if s.header.compute == name), None)
                issues.append(DefinitionIssue(
                    problem, step=step.name if step else None, cell=step.cell if step else None,
                    field=f"--compute {name}",
                ))
        issues += self._environment_issues(pipeline, request, store)
        if request.max_parallel is not None and request.max_parallel < 1:
            issues.append(DefinitionIssue("--max-parallel must be at least 1"))
        if issues:
            raise DefinitionError(issues, pipeline.source)
        parameters = resolve_parameters(pipeline, request.parameters)
        if store is None:  # only now, with nothing wrong, is a new workspace created
            store = Store(Workspace.find(create=True))
        else:
            store.workspace.ensure_created()
        self._store = store
        return parameters, store

    @staticmethod
    def _environment_issues(
        pipeline: Pipeline, request: RunRequest, store: Store | None
    ) -> list[DefinitionIssue]:
        known = set(store.environments.names()) if store and store.workspace.db_path.exists() else set()
        issues = []
        uses: list[tuple[Step | None, str]] = [
            (s, s.header.env) for s in pipeline.steps if s.header.env
        ]
        if request.env:
            uses.append((None, request.env))
        for step, ref in uses:
            name = ref.partition("@")[0]
            if name not in known:
                issues.append(DefinitionIssue(
                    f"environment {name!r} is not defined (known: {', '.join(sorted(known)) or 'none'}); "
                    f"create it with `mlpipe env create {name} --pip PACKAGE ...`",
                    step=step.name if step else None, cell=step.cell if step else None,
                    field=f"--env {ref}",
                ))
        return issues

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
    def _run(
        self,
        store: Store,
        pipeline: Pipeline,
        notebook: Path,
        run_id: str,
        parameters: dict[str, Any],
        request: RunRequest,
    ) -> RunResult:
        store.runs.mark_dead_runs()
        store.results.clean_stale_staging()
        default_compute = request.compute or DEFAULT_COMPUTE
        planner = Planner(
            store, pipeline, notebook, run_id, parameters,
            lambda compute, env: self._executor(compute).environment_fingerprint(env),
            default_compute,
            request.env,
            request.dataset_versions,
            lambda step, compute, fingerprint: self._fetch_remote(
                store, run_id, step, compute, fingerprint),
        )
        plans = planner.plan(request.selection)
        max_parallel = request.max_parallel or _default_parallel()
        to_execute = [p for p in plans.values() if p.action == EXECUTE]
        for compute in {p.compute for p in to_execute}:
            count = sum(1 for p in to_execute if p.compute == compute)
            self._executor(compute).prepare(notebook.parent, count, max_parallel)

        order = pipeline.topological_order()
        planned = [
            plans[name].record(index, _initial_status(plans[name]), sorted(pipeline.upstream(name)))
            for index, name in enumerate(order)
        ]
        experiment = request.experiment or notebook.stem
        options: dict[str, Any] = {
            "compute": default_compute, "env": request.env, "max_parallel": max_parallel,
            "steps": list(request.selection.steps), "downstream": request.selection.downstream,
            "until": request.selection.until, "regenerate": request.selection.regenerate,
        }
        if request.dataset_versions:
            options["dataset_versions"] = dict(request.dataset_versions)
        store.runs.create_run(
            run_id, experiment, str(notebook), parameters, options, git_info(notebook.parent),
            planned, published=request.published,
        )
        snapshot_notebook(notebook, store.workspace.run_dir(run_id))
        self.events.emit(RunEvent(RUN_STARTED, run_id, RunStatus.RUNNING.value, detail={
            "notebook": str(notebook), "steps": order, "experiment": experiment,
            "upstream": {n: sorted(pipeline.upstream(n)) for n in order},
        }))
        for item in planned:
            self.events.emit(RunEvent(STEP_STATUS, run_id, item.status.value, item.step,
                                      {"reason": item.decision, "reused_from": item.reused_from}))
        execution = _Execution(self, store, pipeline, notebook, run_id, plans, max_parallel)
        return execution.go()


# An upstream step in one of these states means the step cannot run in this run.
_BLOCKING = (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED)


def _times(outcome: StepOutcome) -> dict[str, float]:
    """Start and end as the executor saw them: a step's time excludes waiting for a kernel."""
    times = {"ended_at": outcome.ended_at or time.time()}
    if outcome.started_at is not None:
        times["started_at"] = outcome.started_at
    return times


def _initial_status(plan: StepPlan) -> StepStatus:
    return {EXECUTE: StepStatus.QUEUED, REUSE: StepStatus.REUSED}.get(plan.action, StepStatus.SKIPPED)


class _Execution:
    """The state of one run while its steps execute (used from the runner's thread)."""

    def __init__(
        self,
        runner: Runner,
        store: Store,
        pipeline: Pipeline,
        notebook: Path,
        run_id: str,
        plans: dict[str, StepPlan],
        max_parallel: int,
    ) -> None:
        self.runner = runner
        self.store = store
        self.pipeline = pipeline
        self.notebook = notebook
        self.run_id = run_id
        self.plans = plans
        self.max_parallel = max_parallel
        self.status = {name: _initial_status(plan) for name, plan in plans.items()}
        self.attempts: dict[str, int] = {}
        self.staging: dict[str, Path] = {}
        self.outcomes: queue.Queue[StepOutcome] = queue.Queue()
        self.failures: list[str] = []
        self.canceled = False

    # -- main loop --------------------------------------------------------------------------
    def go(self) -> RunResult:
        for name, plan in self.plans.items():
            if plan.action == REUSE:
                self._register_outputs(name)
        try:
            self._loop()
        except KeyboardInterrupt:
            self._cancel_all()
        finally:
            for folder in self.staging.values():
                discard(folder)
        return self._finish()

    def _loop(self) -> None:
        while True:
            if self.runner._cancel.is_set() and not self.canceled:
                self._cancel_all()
                return
            self._submit_ready()
            running = [n for n, s in self.status.items() if s is StepStatus.RUNNING]
            if not running:
                return
            try:
                outcome = self.outcomes.get(timeout=0.2)
            except queue.Empty:
                continue
            self._handle(outcome)

    def _submit_ready(self) -> None:
        running = sum(1 for s in self.status.values() if s is StepStatus.RUNNING)
        for name in self.pipeline.topological_order():
            if running >= self.max_parallel:
                return
            if self.status[name] is not StepStatus.QUEUED:
                continue
            upstream = {u: self.status[u] for u in self.pipeline.upstream(name)}
            blocked = sorted(u for u, s in upstream.items() if s in _BLOCKING)
            if blocked:
                self._set(name, StepStatus.SKIPPED, ended_at=time.time(),
                          error=f"upstream step {', '.join(blocked)} did not succeed")
                continue
            if all(s in (StepStatus.SUCCEEDED, StepStatus.REUSED) for s in upstream.values()):
                self._start(name)
                running += 1

    def _start(self, name: str) -> None:
        plan = self.plans[name]
        attempt = self.attempts.get(name, 0) + 1
        self.attempts[name] = attempt
        step_dir = self.store.workspace.step_dir(self.run_id, name)
        step_dir.mkdir(parents=True, exist_ok=True)
        staging = self.store.results.new_staging(
            self.run_id, name, [o.name for o in plan.step.header.outputs]
        )
        self.staging[name] = staging
        context = {
            "run_id": self.run_id,
            "step": name,
            "notebook": str(self.notebook),
            "parameters": plan.parameters,
            "inputs": {
                k: {"path": str(p), "source": plan.input_sources.get(k, "")}
                for k, p in plan.input_paths.items()
            },
            "outputs": {o.name: str(staging / o.name) for o in plan.step.header.outputs},
            "metrics_path": str(step_dir / "metrics.jsonl"),
        }
        step_notebook = write_step_notebook(
            render_step(self.pipeline, plan.step, context), step_dir / "step.ipynb"
        )
        log_path = self.store.runs.log_path(self.run_id, name)
        if attempt > 1:
            with log_path.open("a", encoding="utf-8") as log_file:
                log_file.write(f"\n--- mlpipe: attempt {attempt} ---\n")
        (step_dir / "metrics.jsonl").unlink(missing_ok=True)
        task = StepTask(
            run_id=self.run_id, step=name, attempt=attempt, step_notebook=step_notebook,
            output_notebook=self.store.runs.output_notebook(self.run_id, name),
            log_path=log_path, cwd=self.notebook.parent, parameters=plan.parameters,
            input_paths=plan.input_paths, staging=staging, env=plan.env,
            network=plan.step.header.network,
            timeout_seconds=plan.step.header.timeout_seconds, resources=plan.step.header.resources,
            result_id=plan.result_id,
        )
        self._set(name, StepStatus.RUNNING, started_at=time.time(), attempts=attempt)
        self.runner._executor(plan.compute).submit(task, self.outcomes.put)

    def _handle(self, outcome: StepOutcome) -> None:
        name = outcome.task.step
        plan = self.plans[name]
        self._ingest_metrics(name)
        staging = self.staging.pop(name, None)
        if outcome.ok and staging is not None:
            try:
                self.store.results.commit(
                    staging, plan.result_id or "", plan.fingerprint or "", self.run_id, name
                )
            except OSError as exc:
                outcome = StepOutcome(outcome.task, ok=False,
                                      error=f"could not commit the step's outputs: {exc}")
            else:
                self._register_outputs(name)
                self._set(name, StepStatus.SUCCEEDED, **_times(outcome))
                return
        if staging is not None:
            discard(staging)
        if outcome.canceled or self.canceled:
            self._set(name, StepStatus.CANCELED, ended_at=time.time(), error="canceled")
            return
        if self.attempts.get(name, 1) <= plan.step.header.retries:
            self._set(name, StepStatus.QUEUED, error=self._report(outcome))
            return
        report = self._report(outcome)
        self.failures.append(report)
        self._set(name, StepStatus.FAILED, error=report, **_times(outcome))

    # -- helpers --------------------------------------------------------------------------
    def _report(self, outcome: StepOutcome) -> str:
        """Where and why a step failed, pointing into the source notebook."""
        task = outcome.task
        where = ""
        raised = None if outcome.timed_out or outcome.canceled else notebook_error(task.output_notebook)
        if raised is not None:
            where = {
                "step": f" in cell {raised.source_cell} (the step's code)",
                "setup": f" in %%mlsetup cell {raised.source_cell}",
                "parameters": " while setting parameters",
                "context": " while injecting the step context",
            }.get(raised.role, "")
        attempts = self.attempts.get(task.step, 1)
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        return (
            f"step '{task.step}' failed{where} of {self.notebook.name}{tries}: {outcome.error}\n"
            f"    output notebook: {task.output_notebook}\n"
            f"    log: {task.log_path}"
        )

    def _ingest_metrics(self, name: str) -> None:
        path = self.store.workspace.step_dir(self.run_id, name) / "metrics.jsonl"
        if not path.exists():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed kernel
            self.store.runs.add_metric(self.run_id, name, item["name"], item["value"], item["at"])

    def _register_outputs(self, name: str) -> None:
        plan = self.plans[name]
        for output in plan.step.header.outputs:
            if output.register_as and plan.result_id:
                self.store.datasets.register_folder(
                    output.register_as,
                    self.store.results.path(plan.result_id, output.name),
                    identity=f"result:{plan.result_id}:{output.name}",
                    source=f"run {self.run_id} step {name} output {output.name}",
                )

    def _set(self, name: str, status: StepStatus, **fields: Any) -> None:
        self.status[name] = status
        self.store.runs.update_step(self.run_id, name, status=status, **fields)
        detail = {k: v for k, v in fields.items() if k in ("error", "started_at", "ended_at",
                                                            "attempts")}
        self.runner.events.emit(RunEvent(STEP_STATUS, self.run_id, status.value, name, detail))

    def _cancel_all(self) -> None:
        self.canceled = True
        for name, status in self.status.items():
            if status is StepStatus.QUEUED:
                self._set(name, StepStatus.CANCELED, ended_at=time.time(), error="canceled")
        for executor in self.runner._executors.values():
            executor.cancel(self.run_id)
        deadline = time.time() + CANCEL_GRACE_SECONDS
        while any(s is StepStatus.RUNNING for s in self.status.values()) and time.time() < deadline:
            try:
                self._handle(self.outcomes.get(timeout=0.2))
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                break  # a second Ctrl-C: stop waiting
        for name, status in self.status.items():
            if status is StepStatus.RUNNING:
                self._set(name, StepStatus.CANCELED, ended_at=time.time(), error="canceled")

    def _finish(self) -> RunResult:
        if self.canceled:
            status = RunStatus.CANCELED
        elif any(s is StepStatus.FAILED for s in self.status.values()):
            status = RunStatus.FAILED
        else:
            status = RunStatus.SUCCEEDED
        error = "\n".join(self.failures) or ("canceled" if self.canceled else None)
        self.store.runs.finish_run(self.run_id, status, error)
        self.runner.events.emit(RunEvent(RUN_FINISHED, self.run_id, status.value,
                                         detail={"failures": self.failures}))
        return RunResult(self.run_id, status, dict(self.status), list(self.failures))


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
