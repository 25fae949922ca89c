"""Running a parameter sweep: its members are runs that share every step they can.

Each member is an ordinary run (its own run id, record, events and notifications) with
the sweep's values for the swept parameters. All members are validated, planned and
recorded before the first step starts; then one driver executes them together within
``max_parallel``. A step whose result id (its fingerprint) is the same in several
members runs once, in the first member that reaches it, and the others reuse its result
(``execution.SharedWork``): in a sweep of ``C`` x ``frac``, ``prepare`` (which uses only
``frac``) runs once per ``frac``. A failed member never stops the others.
"""

from __future__ import annotations

import queue
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.executors.base import StepOutcome
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.sweep import SweepSpec
from mlpipe_jupyter.notebook import load_pipeline
from mlpipe_jupyter.runner.execution import RunResult, SharedWork, drive
from mlpipe_jupyter.runner.planning import EXECUTE, StepPlan
from mlpipe_jupyter.runner.runner import Runner, RunRequest, _default_parallel
from mlpipe_jupyter.store.sweeps import new_sweep_id
from mlpipe_jupyter.validation import sweep_values


@dataclass
class SweepRequest:
    """A sweep: the run every member shares (``-p`` values included) and what is swept."""

    run: RunRequest
    spec: SweepSpec
    yes: bool = False  # confirmed: run even more than model.sweep.CONFIRM_ABOVE members
    sweep_id: str | None = None  # chosen by the caller (a trigger returns it at once)


@dataclass
class SweepResult:
    sweep_id: str
    members: list[tuple[dict[str, Any], RunResult]] = field(default_factory=list)

    @property
    def status(self) -> RunStatus:
        statuses = {result.status for _, result in self.members}
        for status in (RunStatus.CANCELED, RunStatus.FAILED):
            if status in statuses:
                return status
        return RunStatus.SUCCEEDED

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.SUCCEEDED

    @property
    def failures(self) -> list[str]:
        return [failure for _, result in self.members for failure in result.failures]


def member_run_id(sweep_id: str, position: int) -> str:
    """Run ids of a sweep's members: the sweep's id and the member's number (unique even
    for hundreds of members started in one second, and sorted with the sweep)."""
    return f"{sweep_id.removeprefix('sw-')}-m{position:03d}"


def run_sweep(sweep: SweepRequest, runner: Runner | None = None) -> SweepResult:
    """Validate the whole sweep, then run its members; see the module docstring."""
    runner = runner or Runner()
    request = sweep.run
    pipeline = load_pipeline(request.notebook)
    notebook = request.notebook.expanduser().resolve()
    members, problems = sweep_values(pipeline, request.parameters, sweep.spec, sweep.yes)
    base, store = runner.validate_request(pipeline, request, extra=problems)
    sweep_id = sweep.sweep_id or new_sweep_id()
    member_values = [{**base, **values} for values in members]
    run_ids = [member_run_id(sweep_id, n) for n in range(1, len(members) + 1)]
    try:
        plans = [runner.plan_run(store, pipeline, notebook, run_id, values, request,
                              forced_id=sweep_id)
                 for run_id, values in zip(run_ids, member_values, strict=True)]
        _note_shared(plans, run_ids)
        runner.prepare_targets(notebook, _unique_executions(plans), request)
        experiment = request.experiment or pipeline.experiment or notebook.stem
        store.sweeps.create(
            sweep_id, str(notebook), experiment, sweep.spec.to_dict(), base,
            list(zip(run_ids, sweep.spec.members(), strict=True)), published=request.published,
            schedule=request.schedule,
        )
        outcomes: queue.Queue[StepOutcome] = queue.Queue()
        shared = SharedWork()
        executions = [
            runner.record_run(store, pipeline, notebook, run_id, values, request, member_plans,
                           outcomes=outcomes, shared=shared, sweep=sweep_id)
            for run_id, values, member_plans in zip(run_ids, member_values, plans, strict=True)
        ]
        max_parallel = request.max_parallel or _default_parallel()
        results = drive(executions, max_parallel, runner.cancel_requested)
        store.sweeps.finish(sweep_id)
        for result in results:
            runner.notify_ended(store, result.run_id, request)
        return SweepResult(sweep_id, [(values, result) for values, result
                                      in zip(members, results, strict=True)])
    finally:
        runner.close()


def _note_shared(plans: list[dict[str, StepPlan]], run_ids: list[str]) -> None:
    """Say in a member's plan that an earlier member executes the same step for it."""
    owners: dict[str, str] = {}
    for run_id, member in zip(run_ids, plans, strict=True):
        for plan in member.values():
            if plan.action != EXECUTE or not plan.result_id:
                continue
            owner = owners.setdefault(plan.result_id, run_id)
            if owner != run_id:
                plan.reason = (f"executed once for the sweep, by run {owner} (same code, "
                               f"parameters, inputs and environment); {plan.reason}")


def _unique_executions(plans: list[dict[str, StepPlan]]) -> list[Mapping[str, StepPlan]]:
    """The plans with each shared execution counted once (what the targets prepare for)."""
    seen: set[str] = set()
    unique: list[Mapping[str, StepPlan]] = []
    for member in plans:
        kept = {}
        for name, plan in member.items():
            if plan.action == EXECUTE and plan.result_id and plan.result_id not in seen:
                seen.add(plan.result_id)
                kept[name] = plan
        unique.append(kept)
    return unique


__all__ = ["SweepRequest", "SweepResult", "member_run_id", "run_sweep"]
