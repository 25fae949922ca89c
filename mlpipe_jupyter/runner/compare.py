"""Comparing runs: parameters and metrics side by side, and for each step which
fingerprint components (code, parameters, inputs, environment ...) differ from the first
run — "why did this change" across runs, not only against the previous run (``explain``).

Every front-end compares through ``compare_runs``: ``mlpipe compare``, the REST API and
the JupyterLab run comparison. Metrics are those of ``runner.view`` (a reused step's are
its producer's), named ``STEP.METRIC``. ``chart_spec`` draws a metric across the runs, or
against a parameter, as a Vega-Lite chart (the JupyterLab comparison only renders it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.errors import DefinitionIssue, NotFoundError, ParameterError
from mlpipe_jupyter.model.fingerprint import (
    FingerprintComponents,
    changed_components,
    describe_changes,
)
from mlpipe_jupyter.model.values import parameter_text, read_literal
from mlpipe_jupyter.runner.sweep_view import _number, _spans_decades
from mlpipe_jupyter.runner.view import RunView, read_run
from mlpipe_jupyter.store import StepRunRecord, Store


@dataclass(frozen=True)
class StepComparison:
    """One step across the runs; ``changed[i]`` and ``changes[i]`` compare run i with the
    first run (both empty for the first run, and for a run without the step)."""

    step: str
    statuses: list[str | None]  # None: the run has no such step
    fingerprints: list[str | None]
    changed: list[list[str]]  # component names (model.fingerprint.COMPONENTS)
    changes: list[list[str]]  # the sentences ``mlpipe why`` uses

    @property
    def differs(self) -> bool:
        return any(self.changed) or len({f for f in self.fingerprints}) > 1


@dataclass(frozen=True)
class Comparison:
    runs: list[RunView]
    parameters: dict[str, list[Any]]  # name -> value per run (None when a run lacks it)
    metrics: dict[str, list[Any]]  # "step.metric" -> last value per run (None: not logged)
    steps: list[StepComparison] = field(default_factory=list)

    def differing_parameters(self) -> list[str]:
        return [name for name, values in self.parameters.items()
                if len({parameter_text(v) for v in values}) > 1]

    def differing_metrics(self) -> list[str]:
        return [name for name, values in self.metrics.items()
                if len({repr(v) for v in values}) > 1]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (REST): values as ``-p`` texts, so that types survive JSON."""
        return {
            "runs": [{"run_id": r.run_id, "status": r.status, "notebook": r.notebook,
                      "created_at": r.record.created_at if r.record else None,
                      "experiment": r.record.experiment if r.record else None,
                      "git": r.record.git if r.record else {}} for r in self.runs],
            "parameters": {name: [parameter_text(v) for v in values]
                           for name, values in self.parameters.items()},
            "differing_parameters": self.differing_parameters(),
            "metrics": self.metrics,
            "differing_metrics": self.differing_metrics(),
            "steps": [{"step": s.step, "statuses": s.statuses, "fingerprints": s.fingerprints,
                       "changed": s.changed, "changes": s.changes, "differs": s.differs}
                      for s in self.steps],
        }


def _effective_parameters(view: RunView, records: Mapping[str, StepRunRecord]) -> dict[str, Any]:
    """The values the run's steps ran with: defaults included (a run records only the
    values it was given), read from its steps' fingerprint components."""
    values: dict[str, Any] = {}
    for record in records.values():
        for name, text in ((record.components or {}).get("params") or {}).items():
            try:
                values.setdefault(name, read_literal(text))
            except ValueError:  # a record of an old scheme: its value as stored
                values.setdefault(name, text)
    values.update(view.record.params if view.record else {})
    return values


def check_refs(refs: Sequence[str]) -> None:
    """A ParameterError unless there are two or more runs to compare."""
    if len(refs) < 2:
        raise ParameterError.of([DefinitionIssue("compare needs two or more runs")])


def compare_runs(store: Store, refs: Sequence[str]) -> Comparison:
    """Compare two or more runs (ids, prefixes or 'latest'); the first is the baseline."""
    check_refs(refs)
    views = [read_run(store, ref) for ref in refs]
    records = [{s.step: s for s in store.runs.step_runs(view.run_id)} for view in views]
    names: list[str] = []
    for view in views:
        names += [s.name for s in view.steps if s.name not in names]
    parameters: dict[str, list[Any]] = {}
    for index, view in enumerate(views):
        for name, value in _effective_parameters(view, records[index]).items():
            parameters.setdefault(name, [None] * len(views))[index] = value
    metrics: dict[str, list[Any]] = {}
    for index, view in enumerate(views):
        for step in view.steps:
            for name, value in step.metrics.items():
                metrics.setdefault(f"{step.name}.{name}", [None] * len(views))[index] = value
    steps = []
    for name in names:
        base = records[0].get(name)
        base_components = (FingerprintComponents.from_dict(base.components)
                           if base is not None and base.components else None)
        statuses: list[str | None] = []
        prints: list[str | None] = []
        changed: list[list[str]] = []
        changes: list[list[str]] = []
        for index, by_step in enumerate(records):
            record = by_step.get(name)
            statuses.append(record.status.value if record else None)
            prints.append(record.fingerprint if record else None)
            if index == 0 or record is None or not record.components or base_components is None:
                changed.append([])
                changes.append([])
                continue
            current = FingerprintComponents.from_dict(record.components)
            changed.append(changed_components(base_components, current))
            changes.append(describe_changes(base_components, current))
        steps.append(StepComparison(name, statuses, prints, changed, changes))
    return Comparison(views, dict(sorted(parameters.items())), dict(sorted(metrics.items())),
                      steps)


def resolve_metric(name: str, metrics: Sequence[str]) -> str:
    """``accuracy`` -> ``evaluate.accuracy`` when one step logs it; errors name the choices."""
    if name in metrics:
        return name
    matches = [m for m in metrics if m.split(".", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise NotFoundError(f"metric {name!r} is logged by several steps: "
                            f"{', '.join(matches)}; name one")
    choices = ", ".join(metrics) or "none: no run logged a metric"
    raise NotFoundError(f"no metric {name!r} in these runs (their metrics: {choices})")


def chart_spec(comparison: Comparison, metric: str | None = None,
               parameter: str | None = None) -> dict[str, Any]:
    """A Vega-Lite chart of ``metric`` (``STEP.METRIC``, or ``METRIC`` when one step logs
    it; default: the first metric that differs, else the first) across the runs, in their
    order, or against ``parameter`` when given. JupyterLab renders it as
    ``application/vnd.vegalite.v5+json``; unknown names are NotFoundErrors naming the
    choices. Data fields have fixed names (``x``, ``y``): Vega-Lite reads a dot in a field
    name as a nested field, and metrics are named ``step.metric``."""
    names = list(comparison.metrics)
    if metric is None:
        numeric = [n for n in names
                   if any(_number(v) is not None for v in comparison.metrics[n])]
        differing = [n for n in comparison.differing_metrics() if n in numeric]
        if not numeric:
            raise NotFoundError("these runs have no numeric metric to chart")
        metric = (differing or numeric)[0]
    else:
        metric = resolve_metric(metric, names)
    if parameter is not None and parameter not in comparison.parameters:
        choices = ", ".join(comparison.parameters) or "none"
        raise NotFoundError(f"no parameter {parameter!r} in these runs (their parameters: "
                            f"{choices})")
    values: list[dict[str, Any]] = []
    for index, (view, value) in enumerate(zip(comparison.runs, comparison.metrics[metric],
                                              strict=True)):
        y = _number(value)
        if y is None:
            continue
        point: dict[str, Any] = {"y": y, "run": view.run_id, "position": index + 1,
                                 "status": view.status}
        if parameter is None:
            point["x"] = f"{index + 1}. {view.run_id}"
        else:
            given = comparison.parameters[parameter][index]
            point["x"] = given if _number(given) is not None else parameter_text(given)
        values.append(point)
    tooltip: list[dict[str, Any]] = [{"field": "position", "title": "#"}, {"field": "run"},
                                     {"field": "y", "title": metric}]
    y_axis: dict[str, Any] = {"field": "y", "title": metric, "type": "quantitative"}
    if parameter is None:
        x: dict[str, Any] = {"field": "x", "title": "run", "type": "ordinal", "sort": None,
                             "axis": {"labelAngle": -30, "labelLimit": 180}}
        mark: dict[str, Any] = {"type": "bar"}
        title = f"{metric} across {len(comparison.runs)} runs"
    else:
        numeric_x = bool(values) and all(_number(v["x"]) is not None for v in values)
        x = {"field": "x", "title": parameter,
             "type": "quantitative" if numeric_x else "nominal"}
        if numeric_x and _spans_decades([v["x"] for v in values]):
            x["scale"] = {"type": "log"}
        y_axis["scale"] = {"zero": False}
        tooltip.insert(2, {"field": "x", "title": parameter})
        repeated = len({repr(v["x"]) for v in values}) < len(values)
        mark = ({"type": "line", "point": True} if numeric_x and not repeated
                else {"type": "point", "filled": True, "size": 80})
        title = f"{metric} by {parameter} ({len(comparison.runs)} runs)"
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "width": 420, "height": 220,
        "data": {"values": values},
        "mark": mark,
        "encoding": {"x": x, "y": y_axis, "tooltip": tooltip},
    }


__all__ = ["Comparison", "StepComparison", "chart_spec", "check_refs", "compare_runs", "resolve_metric"]
