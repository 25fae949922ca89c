"""Schedules as stored: what fires which published pipeline, and how far it has fired.

A schedule fires by cron (in a time zone), every fixed interval, or when a dataset gets a
new version. ``cursor`` says up to when every fire time has been decided, ``dataset_seen``
which dataset version a dataset schedule last acted on. Deciding the next fire times is
the scheduler's (``model.schedule_policies``); recording the decision is ``fire_due`` here:
one IMMEDIATE transaction that re-reads the schedule, moves its cursor and inserts the
firing, so two schedulers never decide the same fire time twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlpipe_jupyter.errors import ConflictError
from mlpipe_jupyter.store.datasets import latest_version_number
from mlpipe_jupyter.store.firings import active_fire_key, cancel_unstarted, insert_firing
from mlpipe_jupyter.store.workspace import Workspace

CRON, EVERY, DATASET = "cron", "every", "dataset"


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule's row. ``scheduling.schedules.Schedule`` adds its fire times."""

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
    # each firing starts this sweep (model.sweep.SweepSpec.to_dict()) instead of one run
    sweep: dict[str, Any] | None = None

    @property
    def target(self) -> str:
        return f"{self.pipeline}@v{self.version}" if self.version else f"{self.pipeline} (default)"


def schedule_from_row(row: Any) -> ScheduleRecord:
    return ScheduleRecord(
        id=row["id"], name=row["name"], pipeline=row["pipeline"], version=row["version"],
        kind=row["kind"], cron=row["cron"], timezone=row["timezone"],
        every_seconds=row["every_seconds"], dataset=row["dataset"],
        params=json.loads(row["params"]), missed=row["missed"], overlap=row["overlap"],
        max_retries=row["max_retries"], retry_backoff=row["retry_backoff"],
        timeout=row["timeout"], paused=bool(row["paused"]), created_at=row["created_at"],
        anchor=row["anchor"], cursor=row["cursor"], dataset_seen=row["dataset_seen"],
        missed_total=row["missed_total"],
        sweep=json.loads(row["sweep_spec"]) if row["sweep_spec"] else None,
    )


# A schedule's row with its sweep (schedule_sweeps, a table of its own: schema upgrades
# only add tables).
_SELECT = ("SELECT s.*, w.spec AS sweep_spec FROM schedules s "
           "LEFT JOIN schedule_sweeps w ON w.schedule_id = s.id")


@dataclass(frozen=True)
class NewFiring:
    """A firing a decision asks to record."""

    fire_key: str
    fire_time: float
    status: str  # pending, or skipped (overlap policy skip)
    late: bool = False
    dataset_version: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Advance:
    """A decision about a schedule's due fire times: where its cursor (and the dataset
    version seen) moves, how many fire times got no run, and the firing to record."""

    cursor: float
    dataset_seen: int | None
    missed: int
    firing: NewFiring | None


class DueCheck:
    """A schedule as read inside ``fire_due``'s transaction, with the reads a decision
    may need in that same transaction."""

    def __init__(self, schedule: ScheduleRecord, db: sqlite3.Connection) -> None:
        self.schedule = schedule
        self._db = db

    def latest_dataset_version(self) -> int:
        """The newest version of the schedule's dataset (0 when there is none)."""
        assert self.schedule.dataset is not None
        return latest_version_number(self._db, self.schedule.dataset)

    def active_firing(self) -> str | None:
        """The fire key of a firing of the schedule that is pending, running or waiting
        to retry, if any."""
        return active_fire_key(self._db, self.schedule.id)


class ScheduleStore:
    """The ``schedules`` table."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    # -- reading ----------------------------------------------------------------------------
    def find(self, name: str) -> ScheduleRecord | None:
        rows = self.workspace.query(f"{_SELECT} WHERE s.name=?", (name,))
        return schedule_from_row(rows[0]) if rows else None

    def by_id(self, schedule_id: int) -> ScheduleRecord | None:
        rows = self.workspace.query(f"{_SELECT} WHERE s.id=?", (schedule_id,))
        return schedule_from_row(rows[0]) if rows else None

    def all(self, pipeline: str | None = None) -> list[ScheduleRecord]:
        """Every schedule (of ``pipeline`` if given) by name; none while the workspace has
        no database yet (reading does not create it)."""
        if not self.workspace.db_path.exists():
            return []
        if pipeline is not None:
            rows = self.workspace.query(
                f"{_SELECT} WHERE s.pipeline=? ORDER BY s.name", (pipeline,))
        else:
            rows = self.workspace.query(f"{_SELECT} ORDER BY s.name")
        return [schedule_from_row(r) for r in rows]

    def unpaused(self) -> list[ScheduleRecord]:
        """The schedules that are not paused, by id."""
        rows = self.workspace.query(f"{_SELECT} WHERE s.paused=0 ORDER BY s.id")
        return [schedule_from_row(r) for r in rows]

    def names_starting(self, prefix: str) -> set[str]:
        """The schedule names that begin with ``prefix`` (to pick a free one)."""
        rows = self.workspace.query("SELECT name FROM schedules WHERE name LIKE ?", (prefix + "%",))
        return {r["name"] for r in rows}

    # -- writing ----------------------------------------------------------------------------
    def create(
        self,
        *,
        name: str,
        pipeline: str,
        version: int | None,
        kind: str,
        cron: str | None,
        timezone: str,
        every_seconds: float | None,
        dataset: str | None,
        params: dict[str, str],
        missed: str,
        overlap: str,
        max_retries: int,
        retry_backoff: float,
        timeout: float | None,
        created_at: float,
        dataset_seen: int | None,
        sweep: Mapping[str, Any] | None = None,
    ) -> ScheduleRecord:
        """Store a new schedule whose fire times start at ``created_at`` (and whose firings
        each start ``sweep``, when given).

        ConflictError when the name is taken (checked in the same transaction).
        """
        with self.workspace.transaction() as db:
            taken = db.execute("SELECT 1 FROM schedules WHERE name=?", (name,)).fetchone()
            if taken:
                raise ConflictError(f"a schedule named {name!r} exists already "
                                    "(delete it first or choose another --name)")
            db.execute(
                "INSERT INTO schedules (name, pipeline, version, kind, cron, timezone, "
                "every_seconds, dataset, params, missed, overlap, max_retries, retry_backoff, "
                "timeout, created_at, anchor, cursor, dataset_seen) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, pipeline, version, kind, cron, timezone, every_seconds, dataset,
                 json.dumps(params), missed, overlap, max_retries, retry_backoff, timeout,
                 created_at, created_at, created_at, dataset_seen),
            )
            if sweep is not None:
                db.execute(
                    "INSERT INTO schedule_sweeps (schedule_id, spec) SELECT id, ? FROM schedules "
                    "WHERE name=?", (json.dumps(dict(sweep)), name))
        found = self.find(name)
        assert found is not None
        return found

    def pause(self, schedule_id: int) -> None:
        with self.workspace.transaction() as db:
            db.execute("UPDATE schedules SET paused=1 WHERE id=?", (schedule_id,))

    def resume(self, schedule: ScheduleRecord, at: float) -> None:
        """Unpause without catching up: the cursor moves to ``at`` (if behind) and a dataset
        schedule's seen version to its dataset's newest, read in the same transaction."""
        with self.workspace.transaction() as db:
            seen = schedule.dataset_seen
            if schedule.dataset:
                seen = latest_version_number(db, schedule.dataset)
            db.execute("UPDATE schedules SET paused=0, cursor=MAX(cursor, ?), dataset_seen=? "
                       "WHERE id=?", (at, seen, schedule.id))

    def delete(self, schedule_id: int, now: float) -> None:
        """Delete the schedule and cancel its firings that have not started, in one
        transaction; running firings and the history stay."""
        with self.workspace.transaction() as db:
            db.execute("DELETE FROM schedules WHERE id=?", (schedule_id,))
            db.execute("DELETE FROM schedule_sweeps WHERE schedule_id=?", (schedule_id,))
            cancel_unstarted(db, schedule_id, "schedule deleted", now)

    def fire_due(
        self, schedule_id: int, now: float, decide: Callable[[DueCheck], Advance | None]
    ) -> Advance | None:
        """Decide a schedule's due fire times and record the decision atomically.

        In one IMMEDIATE transaction: re-read the schedule (it may have been paused, deleted
        or advanced by another scheduler since it was listed), ask ``decide`` — which may
        read more through the ``DueCheck`` — and store what it returns: the cursor, the
        dataset version seen, the missed count and the new firing (unless one with its key
        exists). Returns the decision when a firing was inserted, else None.
        """
        with self.workspace.transaction() as db:
            row = db.execute(f"{_SELECT} WHERE s.id=? AND s.paused=0",
                             (schedule_id,)).fetchone()
            if row is None:
                return None
            current = schedule_from_row(row)
            advance = decide(DueCheck(current, db))
            if advance is None:
                return None
            db.execute("UPDATE schedules SET cursor=?, dataset_seen=?, "
                       "missed_total=missed_total+? WHERE id=?",
                       (advance.cursor, advance.dataset_seen, advance.missed, current.id))
            firing = advance.firing
            if firing is None:
                return None
            inserted = insert_firing(db, current.id, firing.fire_key, firing.fire_time,
                                     firing.status, firing.late, firing.dataset_version,
                                     firing.error, now)
        return advance if inserted else None
