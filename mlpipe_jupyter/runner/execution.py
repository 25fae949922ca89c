"""Runs' execution: submit ready steps, commit results, skip downstream of failures.

The ``Execution`` is the runner's state machine for a planned run. It is the only place
that turns executor outcomes into committed results, dataset versions, step states and
events; it never talks to executors except through ``submit`` and ``cancel``. ``drive``
runs one execution, or several together (a sweep's members) within one ``max_parallel``;
``SharedWork`` lets those execute a step they have in common once.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_jupyter.events import RUN_FINISHED, STEP_STATUS, EventBus, RunEvent
from mlpipe_jupyter.executors.base import Executor, StepOutcome, StepTask
from mlpipe_jupyter.model.pipeline import Pipeline
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.render import notebook_error, render_step, write_step_notebook
from mlpipe_jupyter.runner.planning import EXECUTE, REUSE, StepPlan
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.results import discard

CANCEL_GRACE_SECONDS = 15


@dataclass
class RunResult:
    run_id: str
    status: RunStatus
    step_status: dict[str, StepStatus]
    failures: list[str]

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.SUCCEEDED



# An upstream step in one of these states means the step cannot run in this run.
_BLOCKING = (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED)


def _times(outcome: StepOutcome) -> dict[str, float]:
    """Start and end as the executor saw them: a step's time excludes waiting for a kernel."""
    times = {"ended_at": outcome.ended_at or time.time()}
    if outcome.started_at is not None:
        times["started_at"] = outcome.started_at
    return times


def initial_status(plan: StepPlan) -> StepStatus:
    return {EXECUTE: StepStatus.QUEUED, REUSE: StepStatus.REUSED}.get(plan.action, StepStatus.SKIPPED)


class Execution:
    """The state of one run while its steps execute (used from the runner's thread)."""

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        notebook: Path,
        run_id: str,
        plans: dict[str, StepPlan],
        max_parallel: int,
        executor_for: Callable[[str], Executor],
        executors: Callable[[], Iterable[Executor]],
        events: EventBus,
        cancel_requested: threading.Event,
        outcomes: queue.Queue[StepOutcome] | None = None,
        shared: SharedWork | None = None,
    ) -> None:
        self.executor_for = executor_for
        self.executors = executors
        self.events = events
        self.cancel_requested = cancel_requested
        self.store = store
        self.pipeline = pipeline
        self.notebook = notebook
        self.run_id = run_id
        self.plans = plans
        self.max_parallel = max_parallel
        self.status = {name: initial_status(plan) for name, plan in plans.items()}
        self.attempts: dict[str, int] = {}
        self.staging: dict[str, Path] = {}
        # one queue for every execution that one driver runs (a sweep's members)
        self.outcomes: queue.Queue[StepOutcome] = outcomes if outcomes is not None else queue.Queue()
        self.shared = shared  # steps this run shares with other runs of this process
        if shared is not None:
            shared.add(self)
        self.failures: list[str] = []
        self.last_error: dict[str, str] = {}  # step -> the report of its failure
        self.canceled = False

    # -- driven by ``drive`` -----------------------------------------------------------------
    def go(self) -> RunResult:
        """Execute this run alone (a run that is not part of a sweep)."""
        return drive([self], self.max_parallel, self.cancel_requested)[0]

    def begin(self) -> None:
        for name, plan in self.plans.items():
            if plan.action == REUSE:
                self._register_outputs(name)

    def running(self) -> int:
        return sum(1 for s in self.status.values() if s is StepStatus.RUNNING)

    def done(self) -> bool:
        """Every step has ended (none is queued, waiting or running)."""
        return not any(s in (StepStatus.QUEUED, StepStatus.RUNNING)
                       for s in self.status.values())

    def submit_ready(self, free: int) -> int:
        """Start ready steps while ``free`` slots last; how many started."""
        started = 0
        for name in self.pipeline.topological_order():
            if started >= free:
                break
            if self.status[name] is not StepStatus.QUEUED:
                continue
            upstream = {u: self.status[u] for u in self.pipeline.upstream(name)}
            blocked = sorted(u for u, s in upstream.items() if s in _BLOCKING)
            if blocked:
                self._set(name, StepStatus.SKIPPED, ended_at=time.time(),
                          error=f"upstream step {', '.join(blocked)} did not succeed")
                continue
            if all(s in (StepStatus.SUCCEEDED, StepStatus.REUSED) for s in upstream.values()):
                if self._take_shared(name):
                    self._start(name)
                    started += 1
        return started

    def _take_shared(self, name: str) -> bool:
        """Whether this run executes ``name`` now: True unless another run of this process
        executes the same result (then this one waits, or reuses or shares its failure)."""
        plan = self.plans[name]
        if self.shared is None or not plan.result_id:
            return True
        owner = self.shared.claim(plan.result_id, self.run_id, name)
        if owner is None:
            return True
        run_id, status, error = owner
        if status is StepStatus.SUCCEEDED:
            self._register_outputs(name)
            now = time.time()
            self._set(name, StepStatus.REUSED, reused_from=run_id, started_at=now,
                      ended_at=now, decision=(
                          f"reused the result of run {run_id}, which executed it for this "
                          "sweep: code, parameters, inputs and environment are the same"))
        elif status is StepStatus.FAILED:
            first = (error or "").splitlines()[0] if error else "it failed"
            report = (f"step '{name}' failed in run {run_id} of this sweep (the same code, "
                      f"parameters, inputs and environment), so it was not run again: {first}")
            self.failures.append(report)
            self._set(name, StepStatus.FAILED, ended_at=time.time(), error=report)
        return False  # waiting (queued or running elsewhere), reused or failed

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
            log_path=log_path, cwd=self.notebook.parent,
            input_paths=plan.input_paths, staging=staging, env=plan.env, image=plan.image,
            network=plan.step.header.network,
            timeout_seconds=plan.step.header.timeout_seconds, resources=plan.step.header.resources,
            result_id=plan.result_id,
            secrets=tuple((use.name, use.env) for use in plan.step.header.secrets),
        )
        self._set(name, StepStatus.RUNNING, started_at=time.time(), attempts=attempt)
        self.executor_for(plan.compute).submit(task, self.outcomes.put)

    def handle(self, outcome: StepOutcome) -> None:
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
        self.last_error[name] = report
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
                "variables-in": " while loading the variables it receives",
                "variables-out": " while saving its variables for later steps",
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
                                                            "attempts", "reused_from")}
        if "decision" in fields:
            detail["reason"] = fields["decision"]
        self.events.emit(RunEvent(STEP_STATUS, self.run_id, status.value, name, detail))

    def cancel_queued(self) -> None:
        """Cancel: queued steps end now; running ones are stopped by ``drive``."""
        self.canceled = True
        for name, status in self.status.items():
            if status is StepStatus.QUEUED:
                self._set(name, StepStatus.CANCELED, ended_at=time.time(), error="canceled")

    def cancel_running(self) -> None:
        """Steps still running after the grace period are recorded canceled."""
        for name, status in self.status.items():
            if status is StepStatus.RUNNING:
                self._set(name, StepStatus.CANCELED, ended_at=time.time(), error="canceled")

    def discard_staging(self) -> None:
        for folder in self.staging.values():
            discard(folder)
        self.staging.clear()

    def finish(self) -> RunResult:
        if self.canceled:
            status = RunStatus.CANCELED
        elif any(s is StepStatus.FAILED for s in self.status.values()):
            status = RunStatus.FAILED
        else:
            status = RunStatus.SUCCEEDED
        error = "\n".join(self.failures) or ("canceled" if self.canceled else None)
        self.store.runs.finish_run(self.run_id, status, error)
        self.events.emit(RunEvent(RUN_FINISHED, self.run_id, status.value,
                                         detail={"failures": self.failures}))
        return RunResult(self.run_id, status, dict(self.status), list(self.failures))




def drive(executions: Sequence[Execution], max_parallel: int,
          cancel_requested: threading.Event) -> list[RunResult]:
    """Run ``executions`` together until every step has ended, at most ``max_parallel``
    steps at once over all of them; earlier executions get free slots first.

    They must share one outcomes queue (a sweep's members) unless there is one. Ctrl-C or
    ``cancel_requested`` cancels them all: queued steps end at once, running ones are
    stopped and given ``CANCEL_GRACE_SECONDS`` to end.
    """
    by_run = {execution.run_id: execution for execution in executions}
    outcomes = executions[0].outcomes
    results: dict[str, RunResult] = {}

    def finish_done() -> None:  # a member's run ends when its last step does
        for execution in executions:
            if execution.run_id not in results and execution.done():
                results[execution.run_id] = execution.finish()

    try:
        for execution in executions:
            execution.begin()
        while True:
            if cancel_requested.is_set():
                _cancel(executions, outcomes)
                break
            running = sum(e.running() for e in executions)
            for execution in executions:
                running += execution.submit_ready(max_parallel - running)
            finish_done()
            if running == 0:
                break
            try:
                outcome = outcomes.get(timeout=0.2)
            except queue.Empty:
                continue
            by_run[outcome.task.run_id].handle(outcome)
    except KeyboardInterrupt:
        _cancel(executions, outcomes)
    finally:
        for execution in executions:
            execution.discard_staging()
    for execution in executions:
        if execution.run_id not in results:
            results[execution.run_id] = execution.finish()
    return [results[execution.run_id] for execution in executions]


def _cancel(executions: Sequence[Execution], outcomes: queue.Queue[StepOutcome]) -> None:
    by_run = {execution.run_id: execution for execution in executions}
    for execution in executions:
        execution.cancel_queued()
    for execution in executions:
        for executor in execution.executors():
            executor.cancel(execution.run_id)
    deadline = time.time() + CANCEL_GRACE_SECONDS
    while any(e.running() for e in executions) and time.time() < deadline:
        try:
            outcome = outcomes.get(timeout=0.2)
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            break  # a second Ctrl-C: stop waiting
        by_run[outcome.task.run_id].handle(outcome)
    for execution in executions:
        execution.cancel_running()


class SharedWork:
    """Which run of this process executes each result id, so that runs started together
    (a sweep's members) execute a step they have in common once: the first run to reach
    it executes it; the others wait for it, then reuse its result (or share its failure).

    Result ids are fingerprints (forced steps get a unique id), so the same id means the
    same code, parameters, inputs and environment. Used from the driver's thread only.
    """

    def __init__(self) -> None:
        self._owners: dict[str, tuple[Execution, str]] = {}
        self._executions: dict[str, Execution] = {}

    def add(self, execution: Execution) -> None:
        self._executions[execution.run_id] = execution

    def claim(self, result_id: str, run_id: str, step: str
              ) -> tuple[str, StepStatus, str | None] | None:
        """None: ``run_id`` executes ``step`` (its claim is recorded). Otherwise the run
        that executes it, that step's status there and its error (still QUEUED or RUNNING:
        wait and ask again)."""
        owner = self._owners.get(result_id)
        if owner is not None and owner[0].run_id != run_id:
            execution, name = owner
            status = execution.status[name]
            if status in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.QUEUED,
                          StepStatus.RUNNING):
                error = execution.last_error.get(name) if status is StepStatus.FAILED else None
                return execution.run_id, status, error
            # skipped or canceled there: this run executes it itself
        self._owners[result_id] = (self._executions[run_id], step)
        return None
