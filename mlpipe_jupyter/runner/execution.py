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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlpipe_jupyter.events import RUN_FINISHED, STEP_STATUS, EventBus, RunEvent
from mlpipe_jupyter.executors.base import Executor, StepOutcome, StepTask
from mlpipe_jupyter.model.conditions import (
    ALL_SUCCEEDED,
    ANY_FAILED,
    ConditionFailure,
    evaluate_condition,
)
from mlpipe_jupyter.model.pipeline import Pipeline
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.model.step import StepOutputInput
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



# An upstream step in one of these states means the step cannot run in this run (unless
# its --run-if rule says otherwise).
_BLOCKING = (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED)
_DONE_OK = (StepStatus.SUCCEEDED, StepStatus.REUSED)


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
        # steps that failed or were canceled, and those skipped because of one of them
        # (what a --run-if any_failed step reacts to; a step skipped by a false condition
        # is not among them)
        self.failed_above: set[str] = set()
        # step -> input -> why its folder is not there (an upstream step did not succeed)
        self.missing_inputs: dict[str, dict[str, str]] = {}
        self.decided: dict[str, str] = {}  # step -> the decision recorded with its condition

    # -- driven by ``drive`` -----------------------------------------------------------------
    def go(self) -> RunResult:
        """Execute this run alone (a run that is not part of a sweep)."""
        return drive([self], self.max_parallel, self.cancel_requested)[0]

    def begin(self) -> None:
        for name, plan in self.plans.items():
            if plan.action == REUSE:
                self._register_outputs(name)
                self._note_reused_condition(name)

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
            if self._may_start(name) and self._take_shared(name):
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
            self.failed_above.add(name)
            self._set(name, StepStatus.FAILED, ended_at=time.time(), error=report)
        return False  # waiting (queued or running elsewhere), reused or failed

    def _may_start(self, name: str) -> bool:
        """Whether ``name`` starts now. Waits (False) while its run-if rule needs upstream
        steps to end; skips or fails it (False) when its rule or ``--if`` condition says
        so; otherwise records the condition's result and starts it (True)."""
        plan = self.plans[name]
        rule = plan.step.header.run_if
        upstream = {u: self.status[u] for u in self.pipeline.upstream(name)}
        blocked = sorted(u for u, s in upstream.items() if s in _BLOCKING)
        failed = sorted(u for u in blocked if u in self.failed_above)
        if rule == ALL_SUCCEEDED:
            if blocked:
                if failed:
                    error = f"upstream step {', '.join(blocked)} did not succeed"
                else:  # skipped by a condition (or a run-if rule) above: not a failure
                    first = self.store.runs.step_run(self.run_id, blocked[0]).error or ""
                    error = (f"upstream step {', '.join(blocked)} was skipped"
                             + (f": {first.splitlines()[0]}" if first else ""))
                self._skip(name, error, because_of_failure=bool(failed))
                return False
            if not all(s in _DONE_OK for s in upstream.values()):
                return False
        else:
            if not all(s.is_final for s in upstream.values()):
                return False  # all_done and any_failed wait for every upstream step
            if rule == ANY_FAILED and not failed:
                self._skip(name, f"no upstream step failed (run-if {ANY_FAILED})",
                           because_of_failure=False)
                return False
        notes: list[str] = []
        condition = plan.step.header.condition
        if condition is not None:
            try:
                result = evaluate_condition(condition, self._upstream_metrics(condition.steps),
                                            plan.condition_parameters)
            except ConditionFailure as exc:
                report = (f"step '{name}' failed: its condition could not be evaluated: {exc}")
                self.failures.append(report)
                self.failed_above.add(name)
                self._set(name, StepStatus.FAILED, ended_at=time.time(), error=report)
                return False
            sentence = result.sentence(condition)
            if not result.value:
                self._skip(name, sentence, because_of_failure=False,
                           decision=f"skipped because its condition is false\n{sentence}")
                return False
            notes.append(sentence)
        not_ok = sorted(u for u, s in upstream.items() if s not in _DONE_OK)
        if not_ok:  # all_done / any_failed with an upstream step that did not succeed
            notes.append(self._without(name, not_ok))
        decision = "\n".join([plan.decision, *notes])
        if notes and self.decided.get(name) != decision:  # once (a shared step may wait)
            self.decided[name] = decision
            self._set(name, StepStatus.QUEUED, decision=decision)
        return True

    def _skip(self, name: str, error: str, because_of_failure: bool,
              decision: str | None = None) -> None:
        if because_of_failure:
            self.failed_above.add(name)
        fields: dict[str, Any] = {"ended_at": time.time(), "error": error}
        if decision is not None or self.plans[name].step.header.run_if != ALL_SUCCEEDED \
                or self.plans[name].step.header.condition is not None:
            fields["decision"] = decision or f"skipped: {error}"
        self._set(name, StepStatus.SKIPPED, **fields)

    def _upstream_metrics(self, steps: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Each step's metrics, the last value of each: a reused step's are those of the run
        that produced its result (as ``runner.view.step_view`` shows them)."""
        found: dict[str, dict[str, Any]] = {}
        for step in steps:
            reused = self.status.get(step) is StepStatus.REUSED
            source = (self.plans[step].reused_from if reused else None) or self.run_id
            found[step] = {m["name"]: m["value"] for m in self.store.runs.metrics(source, step)}
        return found

    def _note_reused_condition(self, name: str) -> None:
        """A reused gated step: its condition was true when its result was made, and reads
        the same metrics now; its result is recorded with the decision all the same."""
        plan = self.plans[name]
        condition = plan.step.header.condition
        if condition is None or not all(self.status.get(s) is StepStatus.REUSED
                                        for s in condition.steps):
            return
        try:
            sentence = evaluate_condition(condition, self._upstream_metrics(condition.steps),
                                          plan.condition_parameters).sentence(condition)
        except ConditionFailure as exc:
            sentence = f"condition {condition.text}: {exc}"
        self.store.runs.update_step(self.run_id, name, decision=f"{plan.decision}\n{sentence}")

    def _without(self, name: str, not_ok: list[str]) -> str:
        """A run-if step that runs although upstream steps did not succeed: their outputs
        are not mounted (the step sees those inputs as None), and its result is committed
        under fingerprint + run id, so that no later run reuses it."""
        plan = self.plans[name]
        missing: dict[str, str] = {}
        for ref in plan.step.header.inputs:
            if isinstance(ref, StepOutputInput) and ref.step in not_ok:
                plan.input_paths.pop(ref.name, None)
                missing[ref.name] = f"upstream step {ref.step} {self.status[ref.step].value}"
        self.missing_inputs[name] = missing
        if plan.result_id == plan.fingerprint:
            self._rekey(name, f"{plan.fingerprint}-{self.run_id}")
        outcomes = ", ".join(f"{u} {self.status[u].value}" for u in not_ok)
        return (f"run-if {plan.step.header.run_if}: runs although upstream step {outcomes}; "
                "its result is kept for this run only (never reused)")

    def _rekey(self, name: str, result_id: str) -> None:
        """Commit ``name`` under ``result_id``, and re-fingerprint the queued steps below it
        that read it: their fingerprints named its planned result."""
        plan = self.plans[name]
        old = plan.result_id
        plan.result_id = result_id
        self.store.runs.update_step(self.run_id, name, result_id=result_id)
        for down in sorted(self.pipeline.downstream(name)):
            below = self.plans[down]
            if below.action != EXECUTE or self.status[down] is not StepStatus.QUEUED \
                    or below.components is None or old is None:
                continue
            inputs = {k: v[: -len(old)] + result_id if v.endswith(f"#{old}") else v
                      for k, v in below.components.inputs.items()}
            for ref in below.step.header.inputs:
                if isinstance(ref, StepOutputInput) and ref.step == name \
                        and ref.name in below.input_paths:
                    below.input_paths[ref.name] = self.store.results.path(result_id, ref.output)
            forced = below.result_id != below.fingerprint
            below.components = replace(below.components, inputs=inputs)
            below.fingerprint = below.components.fingerprint()
            self.store.runs.update_step(self.run_id, down, fingerprint=below.fingerprint,
                                        components=below.components.to_dict())
            self._rekey(down, f"{below.fingerprint}-{self.run_id}" if forced
                        else below.fingerprint)

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
        context: dict[str, Any] = {
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
        for key, why in self.missing_inputs.get(name, {}).items():  # None in the step
            context["inputs"][key] = {"path": None, "source": plan.input_sources.get(key, ""),
                                      "missing": why}
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
                # a run-if step that ran without an upstream result is kept under its
                # result id alone: no later run finds it by fingerprint (never reused)
                kept_as = plan.result_id if name in self.missing_inputs else plan.fingerprint
                self.store.results.commit(
                    staging, plan.result_id or "", kept_as or "", self.run_id, name
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
            self.failed_above.add(name)
            self._set(name, StepStatus.CANCELED, ended_at=time.time(), error="canceled")
            return
        if self.attempts.get(name, 1) <= plan.step.header.retries:
            self._set(name, StepStatus.QUEUED, error=self._report(outcome))
            return
        report = self._report(outcome)
        self.failures.append(report)
        self.last_error[name] = report
        self.failed_above.add(name)
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
