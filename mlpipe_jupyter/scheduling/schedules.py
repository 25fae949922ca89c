"""Schedules and their firings, as stored in the workspace.

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
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlpipe_jupyter.errors import (
    ConflictError,
    NotFoundError,
    ScheduleDefinitionError,
)
from mlpipe_jupyter.model.parameters import resolve_parameters
from mlpipe_jupyter.model.values import parameter_text
from mlpipe_jupyter.scheduling.cron import CronExpression, load_timezone
from mlpipe_jupyter.scheduling.policies import (
    MISSED_POLICIES,
    OVERLAP_POLICIES,
    SKIP,
    FireTimes,
    fire_times,
    format_duration,
    upcoming,
)
from mlpipe_jupyter.scheduling.publishing import (
    check_name,
    get_published,
    load_published_pipeline,
    runnable,
)
from mlpipe_jupyter.store import Store

CRON, EVERY, DATASET = "cron", "every", "dataset"

PENDING, RUNNING, RETRY_WAIT = "pending", "running", "retry_wait"
SUCCEEDED, FAILED, SKIPPED, CANCELED = "succeeded", "failed", "skipped", "canceled"
ACTIVE = (PENDING, RUNNING, RETRY_WAIT)


def iso(timestamp: float) -> str:
    """A fire time as its key: UTC, to the second."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Schedule:
    id: int
    name: str
    pipeline: str
    version: int | None  # None: the pipeline's default version when it fires
    kind: str  # cron, every or dataset
    cron: str | None
    timezone: str
    every_seconds: float | None
    dataset: str | None
    params: dict[str, str]
    missed: str  # skip | run_once
    overlap: str  # skip | queue
    max_retries: int
    retry_backoff: float  # seconds before the first retry; each next one waits 4x longer
    timeout: float | None  # seconds a run may take before it is stopped
    paused: bool
    created_at: float
    anchor: float
    cursor: float  # every fire time up to here has been decided
    dataset_seen: int | None  # the dataset version last acted on
    missed_total: int  # fire times that got no run of their own

    @property
    def target(self) -> str:
        return f"{self.pipeline}@v{self.version}" if self.version else f"{self.pipeline} (default)"

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


@dataclass(frozen=True)
class Firing:
    schedule_id: int
    fire_key: str
    fire_time: float
    status: str
    late: bool  # a missed fire time run once by the run_once policy
    dataset_version: int | None
    attempt: int
    run_id: str | None
    run_ids: list[str]
    owner: str | None
    pid: int | None
    deadline: float | None
    next_attempt_at: float | None
    error: str | None
    created_at: float
    updated_at: float


def _schedule(row: Any) -> Schedule:
    return Schedule(
        id=row["id"], name=row["name"], pipeline=row["pipeline"], version=row["version"],
        kind=row["kind"], cron=row["cron"], timezone=row["timezone"],
        every_seconds=row["every_seconds"], dataset=row["dataset"],
        params=json.loads(row["params"]), missed=row["missed"], overlap=row["overlap"],
        max_retries=row["max_retries"], retry_backoff=row["retry_backoff"],
        timeout=row["timeout"], paused=bool(row["paused"]), created_at=row["created_at"],
        anchor=row["anchor"], cursor=row["cursor"], dataset_seen=row["dataset_seen"],
        missed_total=row["missed_total"],
    )


def firing_from_row(row: Any) -> Firing:
    return Firing(
        schedule_id=row["schedule_id"], fire_key=row["fire_key"], fire_time=row["fire_time"],
        status=row["status"], late=bool(row["late"]), dataset_version=row["dataset_version"],
        attempt=row["attempt"], run_id=row["run_id"], run_ids=json.loads(row["run_ids"]),
        owner=row["owner"], pid=row["pid"], deadline=row["deadline"],
        next_attempt_at=row["next_attempt_at"], error=row["error"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


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
) -> Schedule:
    """Validate every field, then store the schedule. Nothing is stored on any error.

    Raises ScheduleDefinitionError (trigger, time zone, policies), PublishedPipelineNotFoundError,
    ConflictError (disabled version, name taken), ParameterError.
    """
    created = time.time() if now is None else now
    triggers = [t for t in (cron, every_seconds, on_dataset) if t is not None]
    if len(triggers) != 1:
        raise ScheduleDefinitionError("give exactly one of --cron, --every and --on-dataset")
    load_timezone(timezone_name)
    if cron is not None:
        cron_expr = CronExpression.parse(cron)
        cron_expr.next_after(datetime.fromtimestamp(created, tz=timezone.utc),
                             load_timezone(timezone_name))  # "never fires" is an error now
    if every_seconds is not None and every_seconds < 1:
        raise ScheduleDefinitionError("--every must be at least 1s")
    if missed not in MISSED_POLICIES:
        raise ScheduleDefinitionError(f"--missed {missed!r}: expected one of {', '.join(MISSED_POLICIES)}")
    if overlap not in OVERLAP_POLICIES:
        raise ScheduleDefinitionError(f"--overlap {overlap!r}: expected one of {', '.join(OVERLAP_POLICIES)}")
    if max_retries < 0:
        raise ScheduleDefinitionError(f"--retries {max_retries}: must be 0 or more")
    if retry_backoff < 0:
        raise ScheduleDefinitionError(f"--retry-backoff {retry_backoff}: must be 0 or more")
    if timeout is not None and timeout <= 0:
        raise ScheduleDefinitionError(f"--timeout {timeout}: must be more than 0")
    published = runnable(store, pipeline, version)
    texts = {k: parameter_text(v) for k, v in (params or {}).items()}
    resolve_parameters(load_published_pipeline(published), texts)
    dataset_seen = None
    if on_dataset is not None:
        if on_dataset not in published.datasets:
            raise ScheduleDefinitionError(
                f"--on-dataset {on_dataset}: {published.ref} reads no such dataset "
                f"(it reads: {', '.join(published.datasets) or 'none'})"
            )
        latest = store.datasets.latest(on_dataset, missing_ok=True)
        dataset_seen = latest.version if latest else 0
    kind = CRON if cron is not None else EVERY if every_seconds is not None else DATASET
    schedule_name = name or _free_name(store, f"{pipeline}-{kind}")
    check_name(schedule_name, "schedule")
    with store.workspace.transaction() as db:
        taken = db.execute("SELECT 1 FROM schedules WHERE name=?", (schedule_name,)).fetchone()
        if taken:
            raise ConflictError(f"a schedule named {schedule_name!r} exists already "
                                "(delete it first or choose another --name)")
        db.execute(
            "INSERT INTO schedules (name, pipeline, version, kind, cron, timezone, "
            "every_seconds, dataset, params, missed, overlap, max_retries, retry_backoff, "
            "timeout, created_at, anchor, cursor, dataset_seen) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (schedule_name, pipeline, version, kind, cron, timezone_name, every_seconds,
             on_dataset, json.dumps(texts), missed, overlap, max_retries, retry_backoff,
             timeout, created, created, created, dataset_seen),
        )
    return get_schedule(store, schedule_name)


def _free_name(store: Store, base: str) -> str:
    taken = {r["name"] for r in store.workspace.query(
        "SELECT name FROM schedules WHERE name LIKE ?", (base + "%",))}
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def list_schedules(store: Store, pipeline: str | None = None) -> list[Schedule]:
    if not store.workspace.db_path.exists():
        return []
    if pipeline is not None:
        get_published(store, pipeline)  # unknown name: the not-found error
        rows = store.workspace.query("SELECT * FROM schedules WHERE pipeline=? ORDER BY name", (pipeline,))
    else:
        rows = store.workspace.query("SELECT * FROM schedules ORDER BY name")
    return [_schedule(r) for r in rows]


def get_schedule(store: Store, name: str) -> Schedule:
    rows = store.workspace.query("SELECT * FROM schedules WHERE name=?", (name,))
    if not rows:
        known = ", ".join(s.name for s in list_schedules(store)) or "none"
        raise NotFoundError(f"no schedule named {name!r} (schedules: {known})")
    return _schedule(rows[0])


def set_paused(store: Store, name: str, paused: bool, now: float | None = None) -> Schedule:
    """Pause or resume. Resuming does not catch up: fire times (and dataset versions)
    that passed while paused are dropped, unlike times missed while no scheduler ran."""
    schedule = get_schedule(store, name)
    at = time.time() if now is None else now
    with store.workspace.transaction() as db:
        if paused:
            db.execute("UPDATE schedules SET paused=1 WHERE id=?", (schedule.id,))
        else:
            seen = schedule.dataset_seen
            if schedule.dataset:
                row = db.execute("SELECT MAX(version) FROM datasets WHERE name=?",
                                 (schedule.dataset,)).fetchone()
                seen = row[0] or 0
            db.execute("UPDATE schedules SET paused=0, cursor=MAX(cursor, ?), dataset_seen=? "
                       "WHERE id=?", (at, seen, schedule.id))
    return get_schedule(store, name)


def delete_schedule(store: Store, name: str) -> Schedule:
    """Delete a schedule; its firings that have not started are canceled, running ones
    finish (without retries), and its history stays readable through ``firings``."""
    schedule = get_schedule(store, name)
    with store.workspace.transaction() as db:
        db.execute("DELETE FROM schedules WHERE id=?", (schedule.id,))
        db.execute(
            "UPDATE firings SET status=?, error=?, updated_at=? WHERE schedule_id=? "
            "AND status IN (?, ?)",
            (CANCELED, "schedule deleted", time.time(), schedule.id, PENDING, RETRY_WAIT),
        )
    return schedule


def firings(store: Store, schedule: Schedule, limit: int = 20) -> list[Firing]:
    """The schedule's latest firings, newest first."""
    rows = store.workspace.query(
        "SELECT * FROM firings WHERE schedule_id=? ORDER BY fire_time DESC, created_at DESC LIMIT ?",
        (schedule.id, limit),
    )
    return [firing_from_row(r) for r in rows]
