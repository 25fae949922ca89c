"""Schedules and their firings: creating, listing, pausing and deleting schedules.

A schedule fires a published pipeline by cron (in a time zone), every fixed interval, or
when a dataset gets a new version. Each firing is one row keyed by (schedule, fire key) —
the fire time in UTC, or ``DS@vN`` for a dataset trigger — and that UNIQUE key is what
makes a second scheduler unable to fire the same time twice. A firing's life:

pending     decided, waiting to start (queued behind a running firing, or interrupted)
running     its run's process is started; ``owner`` is the scheduler watching it
retry_wait  its run failed; it starts again at ``next_attempt_at``
succeeded   its run succeeded
failed      its run failed after its retries, timed out, or could not start
skipped     not run: an earlier firing was still active (overlap policy ``skip``)
canceled    its schedule was deleted, or its run was canceled by someone else

The rows are ``store.schedules`` and ``store.firings``; ``Firing``, the firing statuses and
the schedule kinds are defined there and re-exported here. ``Schedule`` is the stored
record with its fire times.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from mlpipe_jupyter.errors import NotFoundError
from mlpipe_jupyter.model.notify import parse_on
from mlpipe_jupyter.model.schedule_policies import (
    SKIP,
    FireTimes,
    fire_times,
    format_duration,
    upcoming,
)
from mlpipe_jupyter.model.sweep import SweepSpec, parse_sweep, requested_sweep
from mlpipe_jupyter.model.values import parameter_texts
from mlpipe_jupyter.scheduling.publishing import get_published
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.firings import (
    ACTIVE,
    CANCELED,
    FAILED,
    PENDING,
    RETRY_WAIT,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    Firing,
    firing_from_row,
)
from mlpipe_jupyter.store.notify import SCHEDULE as NOTIFY_SCHEDULE
from mlpipe_jupyter.store.schedules import CRON, DATASET, EVERY, ScheduleRecord
from mlpipe_jupyter.validation import validate_schedule


def iso(timestamp: float) -> str:
    """A fire time as its key: UTC, to the second."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Schedule(ScheduleRecord):
    """A stored schedule, with its fire times."""

    @classmethod
    def of(cls, record: ScheduleRecord) -> Schedule:
        """The schedule of a record read from the store."""
        if isinstance(record, cls):
            return record
        return cls(**{f.name: getattr(record, f.name) for f in fields(record)})

    def sweep_spec(self) -> SweepSpec | None:
        """The sweep each firing starts (validated when the schedule was created), or None:
        each firing starts one run."""
        if self.sweep is None:
            return None
        return parse_sweep(self.sweep["sweep"], self.sweep.get("samples"),
                           self.sweep.get("seed"))

    def describe_sweep(self) -> str:
        """``C=0.1,1 x frac=0.5,0.8 (4 members)``, or "" for a schedule of single runs."""
        spec = self.sweep_spec()
        if spec is None:
            return ""
        axes = " x ".join(axis.describe() for axis in spec.axes)
        if spec.samples is not None:
            return f"{axes} ({spec.samples} samples, seed {spec.seed})"
        return f"{axes} ({spec.size()} members)"

    def fire_times(self) -> FireTimes | None:
        if self.kind == DATASET:
            return None
        return fire_times(self.cron, self.timezone, self.every_seconds, self.anchor)

    def describe_trigger(self) -> str:
        if self.kind == CRON:
            return f"cron '{self.cron}' {self.timezone}"
        if self.kind == EVERY:
            return f"every {format_duration(self.every_seconds or 0)}"
        seen = f"v{self.dataset_seen}" if self.dataset_seen else "none"
        return f"new version of dataset {self.dataset} (last seen {seen})"

    def next_fire_times(self, now: float | None = None, count: int = 3) -> list[float]:
        """The next ``count`` fire times (none for a paused or dataset schedule)."""
        times = self.fire_times()
        if times is None or self.paused:
            return []
        return upcoming(times, max(self.cursor, time.time() if now is None else now), count)

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """A JSON-ready view (for REST responses), with the next fire times."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["trigger"] = self.describe_trigger()
        data["next_fire_times"] = [iso(t) for t in self.next_fire_times(now)]
        return data


def create_schedule(
    store: Store,
    pipeline: str,
    *,
    name: str | None = None,
    version: int | None = None,
    cron: str | None = None,
    timezone_name: str = "UTC",
    every_seconds: float | None = None,
    on_dataset: str | None = None,
    params: Mapping[str, Any] | None = None,
    missed: str = SKIP,
    overlap: str = SKIP,
    max_retries: int = 0,
    retry_backoff: float = 30.0,
    timeout: float | None = None,
    now: float | None = None,
    notify: Sequence[str] = (),
    notify_on: Sequence[str] = (),
    sweep: Sequence[str] = (),
    samples: int | None = None,
    seed: int | None = None,
    yes: bool = False,
) -> Schedule:
    """Validate every field, then store the schedule. Nothing is stored on any error.

    With ``sweep`` (``--sweep`` texts, and ``samples``/``seed`` for random search) each
    firing starts that sweep of the published version instead of one run; ``yes``
    confirms a sweep of more than ``model.sweep.CONFIRM_ABOVE`` members.

    Every problem is reported at once (``validation.validate_schedule``): ScheduleDefinitionError
    (trigger, cron, time zone, policies, name — with any parameter problems), ParameterError
    (only parameters are wrong); PublishedPipelineNotFoundError or ConflictError (disabled
    version) when the schedule's own fields are fine; ConflictError when the name is taken.
    """
    created = time.time() if now is None else now
    texts = parameter_texts(params)
    validate_schedule(
        store, pipeline, version, texts, on_dataset, cron=cron, timezone_name=timezone_name,
        every_seconds=every_seconds, missed=missed, overlap=overlap, max_retries=max_retries,
        retry_backoff=retry_backoff, timeout=timeout, name=name, now=created,
        notify=notify, notify_on=notify_on, sweep=sweep, samples=samples, seed=seed, yes=yes,
    )
    spec = requested_sweep(sweep, samples, seed)  # valid: checked with the rest
    dataset_seen = None
    if on_dataset is not None:
        latest = store.datasets.latest(on_dataset, missing_ok=True)
        dataset_seen = latest.version if latest else 0
    kind = CRON if cron is not None else EVERY if every_seconds is not None else DATASET
    schedule_name = name or _free_name(store, f"{pipeline}-{kind}")
    schedule = Schedule.of(store.schedules.create(
        name=schedule_name, pipeline=pipeline, version=version, kind=kind, cron=cron,
        timezone=timezone_name, every_seconds=every_seconds, dataset=on_dataset, params=texts,
        missed=missed, overlap=overlap, max_retries=max_retries, retry_backoff=retry_backoff,
        timeout=timeout, created_at=created, dataset_seen=dataset_seen,
        sweep=spec.to_dict() if spec is not None else None,
    ))
    # runs it starts notify these (``--schedule NAME`` on their command line)
    store.notify.replace_targets(NOTIFY_SCHEDULE, schedule.name, notify, parse_on(notify_on)[0])
    return schedule


def _free_name(store: Store, base: str) -> str:
    taken = store.schedules.names_starting(base)
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def list_schedules(store: Store, pipeline: str | None = None) -> list[Schedule]:
    if pipeline is not None and store.workspace.db_path.exists():
        get_published(store, pipeline)  # unknown name: the not-found error
    return [Schedule.of(r) for r in store.schedules.all(pipeline)]


def get_schedule(store: Store, name: str) -> Schedule:
    found = store.schedules.find(name)
    if found is None:
        known = ", ".join(s.name for s in list_schedules(store)) or "none"
        raise NotFoundError(f"no schedule named {name!r} (schedules: {known})")
    return Schedule.of(found)


def set_paused(store: Store, name: str, paused: bool, now: float | None = None) -> Schedule:
    """Pause or resume. Resuming does not catch up: fire times (and dataset versions)
    that passed while paused are dropped, unlike times missed while no scheduler ran."""
    schedule = get_schedule(store, name)
    at = time.time() if now is None else now
    if paused:
        store.schedules.pause(schedule.id)
    else:
        store.schedules.resume(schedule, at)
    return get_schedule(store, name)


def delete_schedule(store: Store, name: str) -> Schedule:
    """Delete a schedule; its firings that have not started are canceled, running ones
    finish (without retries), and its history stays readable through ``firings``."""
    schedule = get_schedule(store, name)
    store.schedules.delete(schedule.id, time.time())
    store.notify.remove_owner(NOTIFY_SCHEDULE, schedule.name)
    return schedule


def firings(store: Store, schedule: Schedule, limit: int = 20) -> list[Firing]:
    """The schedule's latest firings, newest first."""
    return store.firings.of_schedule(schedule.id, limit)


__all__ = [
    "ACTIVE", "CANCELED", "CRON", "DATASET", "EVERY", "FAILED", "PENDING", "RETRY_WAIT",
    "RUNNING", "SKIPPED", "SUCCEEDED", "Firing", "Schedule", "create_schedule",
    "delete_schedule", "firing_from_row", "firings", "get_schedule", "iso", "list_schedules",
    "set_paused",
]
