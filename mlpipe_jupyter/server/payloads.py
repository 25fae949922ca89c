"""The REST API's JSON bodies, made from the run read model and the store's records.

Their shapes are the schemas of ``openapi.yaml`` (``RunSummary``, ``RunDetail``, ``Step``,
``Published``, ``SweepSummary``); the panel's ``api.ts`` mirrors them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlpipe_jupyter.model.values import parameter_texts
from mlpipe_jupyter.runner.view import StepView
from mlpipe_jupyter.scheduling.publishing import PublishedPipeline
from mlpipe_jupyter.store import RunRecord, SweepRecord
from mlpipe_jupyter.store.notify import NotificationRecord


def run_summary(run: RunRecord, step_counts: Mapping[str, int], notebook: str,
                live: bool) -> dict[str, Any]:
    """A run as the run list shows it; ``notebook`` as the server names it."""
    return {
        "id": run.id,
        "status": run.status.value,
        "experiment": run.experiment,
        "notebook": notebook,
        "created_at": run.created_at,
        "ended_at": run.ended_at,
        "duration": run.duration,
        "step_counts": dict(step_counts),
        "params": json_safe(run.params),
        "param_texts": parameter_texts(run.params),
        "error": run.error,
        "live": live,
        # the sweep the run is a member of: a panel showing that sweep redraws on its events
        "sweep": run.options.get("sweep"),
    }


def sweep_summary(record: SweepRecord, notebook: str, live: bool) -> dict[str, Any]:
    """A sweep as the sweep list shows it (``GET sweeps/{id}`` has its members' table)."""
    return {
        "id": record.id,
        "status": record.status,
        "notebook": notebook,
        "experiment": record.experiment,
        "created_at": record.created_at,
        "ended_at": record.ended_at,
        "spec": json_safe(record.spec),
        "params": json_safe(record.params),
        "param_texts": parameter_texts(record.params),
        "members": len(record.members),
        "counts": record.counts(),
        "published": record.published,
        "schedule": record.schedule,
        "live": live,
    }


def run_details(run: RunRecord) -> dict[str, Any]:
    """What a run's detail adds to its summary, besides its steps."""
    return {
        "options": json_safe(run.options),
        "git": run.git,
        "host": run.host,
        "pid": run.pid,
        "published": run.published,
    }


def notifications_payload(records: Sequence[NotificationRecord]) -> list[dict[str, Any]]:
    """A run's notifications: channel (credentials stripped), where the target came from,
    the run status it reported, sent or failed, attempts, error, time."""
    return [record.to_dict() for record in records]


def step_payload(step: StepView) -> dict[str, Any]:
    """A step of a run (``has_output``: it executed in this run and left its notebook; a
    reused step's notebook is its source run's, which the output routes resolve)."""
    return {
        "name": step.name,
        "status": step.status,
        "layer": step.layer,
        "upstream": list(step.upstream),
        "variables": {producer: list(names) for producer, names in step.variables.items()},
        "cell": step.cell,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "duration": step.duration,
        "attempts": step.attempts,
        "fingerprint": step.fingerprint,
        "reused": step.reused,
        "reused_from": step.reused_from,
        "decision": step.decision,
        "error": step.error,
        "compute": step.compute,
        "metrics": {name: json_safe(value) for name, value in step.metrics.items()},
        "has_output": step.has_output,
        "run_if": step.run_if,
        "condition": step.condition,
        "condition_result": step.condition_result,
    }


def published_entry(name: str, versions: list[PublishedPipeline]) -> dict[str, Any]:
    """A published pipeline: every version, and which one is the default."""
    default = next((v for v in versions if v.is_default), None)
    return {
        "name": name,
        "default_version": default.version if default else None,
        "versions": [json_safe(v.to_dict()) for v in versions],
    }




_NON_FINITE = {"Infinity": "inf", "-Infinity": "-inf", "NaN": "nan"}


def json_safe(value: Any) -> Any:
    """Values as JSON can carry them (records may hold tuples or repr'd objects). Infinity
    and NaN (a 1e999 parameter, a NaN metric) become the strings "inf", "-inf" and "nan":
    json.dumps would write them as bare Infinity/NaN, which is not JSON, and a browser's
    JSON.parse then rejects the whole answer."""
    return json.loads(json.dumps(value, default=repr), parse_constant=_NON_FINITE.__getitem__)
