"""What sweep tests check: how many times each step really executed in a sweep."""

from __future__ import annotations

from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.store import Store


def executed_steps(store: Store, sweep_id: str) -> dict[str, int]:
    """How many times each step executed (not reused) across the sweep's member runs."""
    counts: dict[str, int] = {}
    for member in store.sweeps.get(sweep_id).members:
        for step in store.runs.step_runs(member.run_id):
            if step.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
                counts[step.step] = counts.get(step.step, 0) + 1
    return counts
