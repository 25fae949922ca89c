"""Plain-text reports read from the store, shared by the ``mlpipe`` CLI and the ``%mlpipe`` magics."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mlpipe_jupyter.model.values import parameter_text

if TYPE_CHECKING:  # every `mlpipe` command imports this module for table(): keep it light
    from mlpipe_jupyter.runner.compare import Comparison
    from mlpipe_jupyter.runner.sweep_view import SweepView
    from mlpipe_jupyter.store import Store


def when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "-"


def seconds(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else "-"


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns, as ``mlpipe runs`` prints them."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def runs_table(
    store: Store,
    notebook: str | None = None,
    limit: int = 10,
    experiment: str | None = None,
    status: str | None = None,
    offset: int = 0,
) -> str:
    """The latest runs (filtered when asked), newest first."""
    from mlpipe_jupyter.runner.view import step_counts

    store.runs.mark_dead_runs()
    runs = store.runs.list_runs(notebook, experiment, status, limit, offset)
    if not runs:
        filtered = notebook or experiment or status
        return "no matching runs" if filtered else "no runs yet"
    rows = []
    for run in runs:
        counts = step_counts(store, run.id)
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        rows.append([run.id, run.status.value, when(run.created_at), seconds(run.duration),
                     run.experiment, summary])
    return table(rows, ["RUN", "STATUS", "STARTED", "TIME", "EXPERIMENT", "STEPS"])


def status_text(store: Store, run_ref: str) -> str:
    """One line for the run and one per step, with errors' first lines."""
    run = store.runs.get_run(run_ref)
    lines = [f"run {run.id}: {run.status.value} ({seconds(run.duration)}) {run.notebook}"]
    rows = []
    for step in store.runs.step_runs(run.id):
        note = step.error.splitlines()[0] if step.error else ""
        if step.status.value == "reused":
            note = f"from run {step.reused_from}"
        took = seconds(step.duration) if step.status.value != "reused" else "-"
        rows.append([step.step, step.status.value, took, note])
    lines.append(table(rows, ["STEP", "STATUS", "TIME", "NOTE"]))
    return "\n".join(lines)


def value_text(value: object) -> str:
    """A metric value in a table cell: floats to 4 significant digits, literals otherwise."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return parameter_text(value)


def sweep_text(view: SweepView) -> str:
    """``mlpipe sweep show``: the sweep, one row per member, the best one marked."""
    record = view.record
    counts = ", ".join(f"{n} {s}" for s, n in sorted(record.counts().items()))
    lines = [f"sweep {record.id}: {record.status}, {len(record.members)} members ({counts}) "
             f"{record.notebook}"]
    lines.append("  " + " ".join(f"--sweep {t}" for t in record.spec.get("sweep", []))
                 + (f" --samples {record.spec['samples']} --seed {record.spec['seed']}"
                    if "samples" in record.spec else ""))
    header = ["", "#", "RUN", "STATUS", *view.parameters, *view.metrics]
    rows = [
        ["*" if row.best else "", str(row.position), row.run_id, row.status,
         *(parameter_text(row.params.get(p)) for p in view.parameters),
         *(value_text(row.metrics[m]) if m in row.metrics else "-" for m in view.metrics)]
        for row in view.rows
    ]
    lines.append(table(rows, header))
    if view.sort:
        order = "lowest" if view.ascending else "highest"
        best = view.best
        lines.append(f"* best by {view.sort} ({order}): "
                     + (f"member {best.position}, run {best.run_id}" if best else "none yet"))
    executed = ", ".join(f"{step} {n}x" for step, n in view.executed.items() if n)
    if view.executed:
        lines.append(f"steps executed by this sweep: {executed or 'none'} (for "
                     f"{len(record.members)} members; every other step was reused)")
    return "\n".join(lines)


def compare_text(comparison: Comparison) -> str:
    """``mlpipe compare``: parameters and metrics side by side (``*`` marks a difference),
    then each step's status per run and what differs from the first run."""
    runs = [view.run_id for view in comparison.runs]
    header = ["", "", *runs]
    lines = [f"comparing {len(runs)} runs; the first, {runs[0]}, is the baseline"]
    differing = set(comparison.differing_parameters())
    rows = [["*" if name in differing else "", name,
             *("-" if v is None else parameter_text(v) for v in values)]
            for name, values in comparison.parameters.items()]
    if rows:
        lines += ["", "PARAMETERS", table(rows, header)]
    rows = [["*" if len({repr(v) for v in values}) > 1 else "", name,
             *("-" if v is None else value_text(v) for v in values)]
            for name, values in comparison.metrics.items()]
    if rows:
        lines += ["", "METRICS", table(rows, header)]
    rows = []
    for step in comparison.steps:
        cells = []
        for index, status in enumerate(step.statuses):
            changed = step.changed[index]
            cells.append("-" if status is None else
                         status + (f" ({', '.join(changed)} changed)" if changed else ""))
        rows.append(["*" if step.differs else "", step.step, *cells])
    lines += ["", "STEPS (what differs from the baseline's fingerprint)", table(rows, header)]
    for step in comparison.steps:
        for index, changes in enumerate(step.changes):
            for change in changes:
                lines.append(f"  {step.step} in {runs[index]}: {change}")
    return "\n".join(lines)
