"""``mlpipe why``: why a step was reused, executed or skipped, component by component."""

from __future__ import annotations

from mlpipe_jupyter.model.fingerprint import FingerprintComponents, describe_changes
from mlpipe_jupyter.runner.view import condition_result
from mlpipe_jupyter.store import Store


def explain_step(store: Store, run_ref: str, step: str) -> list[str]:
    """Sentences explaining the decision about ``step`` in run ``run_ref``."""
    run = store.runs.get_run(run_ref)
    record = store.runs.step_run(run.id, step)
    lines = [f"step '{step}' in run {run.id}: {record.status.value}"]
    if record.decision:
        first, *more = record.decision.splitlines()
        lines.append(f"decision: {first}")
        lines += [f"  {line}" for line in more]  # a condition's result, a run-if note
    settings = (record.components or {}).get("settings", {})
    if settings.get("run_if"):
        lines.append(f"run-if: {settings['run_if']}")
    if settings.get("condition") and not condition_result(record.decision, record.error):
        lines.append(f"condition {settings['condition']}: not evaluated (the step did not "
                     "get that far)" if record.status.value in ("skipped", "canceled",
                                                              "failed")
                     else f"condition: {settings['condition']}")
    if record.fingerprint:
        lines.append(f"fingerprint: {record.fingerprint}")
    if record.error:
        lines.append(f"error: {record.error}")
    if record.components is None:
        return lines
    current = FingerprintComponents.from_dict(record.components)
    previous = store.runs.previous_step_run(run.notebook, step, run.created_at)
    if previous is None or previous.components is None:
        lines.append("no earlier run of this step to compare with")
        return lines
    changes = describe_changes(FingerprintComponents.from_dict(previous.components), current)
    if changes:
        lines.append(f"compared with run {previous.run_id} ({previous.status.value}):")
        lines += [f"  - {change}" for change in changes]
    else:
        lines.append(f"compared with run {previous.run_id}: nothing changed")
    return lines
