"""The read model of a sweep: one row per member, its swept values and its metrics.

Every front-end shows a sweep through ``read_sweep``: ``mlpipe sweep show``, the notebook
widget, the REST API and the panel. A member's metrics are its steps' metrics as
``runner.view`` resolves them (a reused step's are those of the run that produced it),
named ``STEP.METRIC``; ``sort`` also takes a bare ``METRIC`` that only one step logs.
The best member is the first one after sorting by that metric (highest first unless
``ascending``); members without a numeric value for it come last and are never best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.errors import NotFoundError
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.model.values import parameter_text
from mlpipe_jupyter.runner.view import read_run
from mlpipe_jupyter.store import Store, SweepRecord

_EXECUTED = (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)


@dataclass(frozen=True)
class SweepRow:
    position: int
    run_id: str
    status: str
    params: dict[str, Any]  # the swept values, as the member ran with them
    metrics: dict[str, Any] = field(default_factory=dict)  # "step.metric" -> last value
    best: bool = False


@dataclass(frozen=True)
class SweepView:
    record: SweepRecord
    parameters: tuple[str, ...]  # the swept parameters, in --sweep order
    metrics: tuple[str, ...]  # every "step.metric" any member logged, sorted
    rows: tuple[SweepRow, ...]  # sorted by ``sort`` when given, else in member order
    sort: str | None  # the "step.metric" that ranks members (None: no metric at all)
    ascending: bool
    executed: dict[str, int]  # step -> how many members executed it (the rest reused it)

    @property
    def best(self) -> SweepRow | None:
        return next((row for row in self.rows if row.best), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (REST, the widget)."""
        record = self.record
        return {
            "id": record.id, "notebook": record.notebook, "experiment": record.experiment,
            "status": record.status, "created_at": record.created_at,
            "ended_at": record.ended_at, "spec": record.spec, "counts": record.counts(),
            "parameters": list(self.parameters), "metrics": list(self.metrics),
            "sort": self.sort, "ascending": self.ascending, "executed": self.executed,
            "published": record.published, "schedule": record.schedule,
            "rows": [
                {"position": r.position, "run_id": r.run_id, "status": r.status,
                 "params": r.params, "metrics": r.metrics, "best": r.best}
                for r in self.rows
            ],
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def resolve_metric(name: str, metrics: tuple[str, ...]) -> str:
    """``accuracy`` -> ``evaluate.accuracy`` when one step logs it; errors name the choices."""
    if name in metrics:
        return name
    matches = [m for m in metrics if m.split(".", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    choices = ", ".join(metrics) or "none: no member logged a metric yet"
    if matches:
        raise NotFoundError(f"metric {name!r} is logged by several steps: "
                            f"{', '.join(matches)}; name one")
    raise NotFoundError(f"no metric {name!r} in this sweep (its metrics: {choices})")


def read_sweep(store: Store, ref: str = "latest", sort: str | None = None,
               ascending: bool = False) -> SweepView:
    """The sweep ``ref`` (id, prefix or 'latest'), ranked by metric ``sort`` (default:
    the first metric, highest first)."""
    store.runs.mark_dead_runs()
    record = store.sweeps.get(ref)
    parameters = tuple(text.split("=", 1)[0] for text in record.spec.get("sweep", []))
    rows: list[SweepRow] = []
    executed: dict[str, int] = {}
    for member in record.members:
        metrics: dict[str, Any] = {}
        params: dict[str, Any] = dict(member.params)
        try:
            view = read_run(store, member.run_id)
        except NotFoundError:  # not started (yet): its values as given
            rows.append(SweepRow(member.position, member.run_id, member.status, params))
            continue
        if view.record is not None:
            params = {name: view.record.params.get(name, params.get(name)) for name in parameters}
        for step in view.steps:
            executed.setdefault(step.name, 0)
            if step.status in _EXECUTED:
                executed[step.name] += 1
            for name, value in step.metrics.items():
                metrics[f"{step.name}.{name}"] = value
        rows.append(SweepRow(member.position, member.run_id, member.status, params, metrics))
    names = tuple(sorted({name for row in rows for name in row.metrics}))
    chosen = resolve_metric(sort, names) if sort else (names[0] if names else None)
    if chosen is not None:
        ranked = [row for row in rows if _number(row.metrics.get(chosen)) is not None]
        ranked.sort(key=lambda row: _number(row.metrics[chosen]) or 0.0, reverse=not ascending)
        unranked = [row for row in rows if _number(row.metrics.get(chosen)) is None]
        if ranked:
            ranked[0] = SweepRow(**{**ranked[0].__dict__, "best": True})
        rows = ranked + unranked if sort else _restore_order(rows, ranked)
    return SweepView(record, parameters, names, tuple(rows), chosen, ascending, executed)


def _restore_order(rows: list[SweepRow], ranked: list[SweepRow]) -> list[SweepRow]:
    """Member order, with the best row marked (no --sort: the table reads like the grid)."""
    best = next((row.position for row in ranked if row.best), None)
    return [SweepRow(**{**row.__dict__, "best": True}) if row.position == best else row
            for row in rows]


def chart_spec(view: SweepView, metric: str, parameter: str) -> dict[str, Any]:
    """A Vega-Lite chart of ``metric`` against ``parameter``, one line per value of the
    other swept parameter (JupyterLab renders ``application/vnd.vegalite.v5+json``).

    Data fields have fixed names (``x``, ``y``, ``series``): Vega-Lite reads a dot in a
    field name as a nested field, and metrics are named ``step.metric``."""
    others = [p for p in view.parameters if p != parameter]
    values = []
    for row in view.rows:
        y = _number(row.metrics.get(metric))
        if y is None:
            continue
        point: dict[str, Any] = {"x": row.params.get(parameter), "y": y, "run": row.run_id,
                                 "member": row.position}
        if others:
            point["series"] = ", ".join(f"{o}={parameter_text(row.params.get(o))}"
                                        for o in others)
        values.append(point)
    numeric = bool(values) and all(_number(v["x"]) is not None for v in values)
    x: dict[str, Any] = {"field": "x", "title": parameter,
                         "type": "quantitative" if numeric else "nominal"}
    if numeric and _spans_decades([v["x"] for v in values]):
        x["scale"] = {"type": "log"}
    tooltip = [{"field": "member"}, {"field": "run"}, {"field": "x", "title": parameter},
               {"field": "y", "title": metric}]
    encoding: dict[str, Any] = {
        "x": x, "y": {"field": "y", "title": metric, "type": "quantitative",
                      "scale": {"zero": False}},
        "tooltip": tooltip,
    }
    if others:
        encoding["color"] = {"field": "series", "type": "nominal", "title": ", ".join(others)}
        tooltip.append({"field": "series", "title": ", ".join(others)})
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"{metric} by {parameter} (sweep {view.record.id})",
        "width": 360, "height": 220,
        "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "encoding": encoding,
    }


def _spans_decades(values: list[Any]) -> bool:
    numbers = [float(v) for v in values if _number(v) is not None]
    positive = [n for n in numbers if n > 0]
    return len(positive) == len(numbers) and len(positive) > 2 and \
        max(positive) / min(positive) >= 100


__all__ = ["SweepRow", "SweepView", "chart_spec", "read_sweep", "resolve_metric"]
