"""Firings: one row per fire time of a schedule, keyed by (schedule, fire key).

The fire key is the fire time in UTC, or ``DS@vN`` for a dataset trigger; that UNIQUE key
is what makes a second scheduler unable to fire the same time twice. A firing's life:

pending     decided, waiting to start (queued behind a running firing, or interrupted)
running     its run's process is started; ``owner`` is the scheduler watching it
retry_wait  its run failed; it starts again at ``next_attempt_at``
succeeded   its run succeeded
failed      its run failed after its retries, timed out, or could not start
skipped     not run: an earlier firing was still active (overlap policy ``skip``)
canceled    its schedule was deleted, or its run was canceled by someone else

Every change of state is a conditional write (``... WHERE status=? AND attempt=?``) in an
IMMEDIATE transaction, so that of several schedulers racing for a firing one wins.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlpipe_jupyter.store.schedulers import SchedulerLease, lease_from_row
from mlpipe_jupyter.store.workspace import Workspace

PENDING, RUNNING, RETRY_WAIT = "pending", "running", "retry_wait"
SUCCEEDED, FAILED, SKIPPED, CANCELED = "succeeded", "failed", "skipped", "canceled"
ACTIVE = (PENDING, RUNNING, RETRY_WAIT)


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


def firing_from_row(row: Any) -> Firing:
    return Firing(
        schedule_id=row["schedule_id"], fire_key=row["fire_key"], fire_time=row["fire_time"],
        status=row["status"], late=bool(row["late"]), dataset_version=row["dataset_version"],
        attempt=row["attempt"], run_id=row["run_id"], run_ids=json.loads(row["run_ids"]),
        owner=row["owner"], pid=row["pid"], deadline=row["deadline"],
        next_attempt_at=row["next_attempt_at"], error=row["error"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


# -- statements that run inside another store's transaction ------------------------------
def active_fire_key(db: sqlite3.Connection, schedule_id: int) -> str | None:
    """The fire key of a pending, running or retry-waiting firing of the schedule, if any.
    ``db`` is a connection inside the caller's transaction."""
    row = db.execute(
        f"SELECT fire_key FROM firings WHERE schedule_id=? AND status IN ({_marks(ACTIVE)})",
        (schedule_id, *ACTIVE),
    ).fetchone()
    return None if row is None else str(row["fire_key"])


def insert_firing(db: sqlite3.Connection, schedule_id: int, fire_key: str, fire_time: float,
                  status: str, late: bool, dataset_version: int | None, error: str | None,
                  now: float) -> bool:
    """Record a firing unless one with this key exists; whether it was inserted.
    ``db`` is a connection inside the caller's transaction."""
    inserted = db.execute(
        "INSERT OR IGNORE INTO firings (schedule_id, fire_key, fire_time, status, late, "
        "dataset_version, error, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (schedule_id, fire_key, fire_time, status, int(late), dataset_version, error, now, now),
    ).rowcount
    return bool(inserted)


def cancel_unstarted(db: sqlite3.Connection, schedule_id: int, error: str, now: float) -> None:
    """Cancel the schedule's pending and retry-waiting firings (running ones go on).
    ``db`` is a connection inside the caller's transaction."""
    db.execute(
        "UPDATE firings SET status=?, error=?, updated_at=? WHERE schedule_id=? "
        "AND status IN (?, ?)",
        (CANCELED, error, now, schedule_id, PENDING, RETRY_WAIT),
    )


_BLOCKED = (
    "SELECT 1 FROM firings WHERE schedule_id=? AND fire_key<>? AND (status IN (?, ?) "
    "OR (status=? AND (fire_time<? OR (fire_time=? AND created_at<?)))) LIMIT 1"
)


def _blocked_args(firing: Firing) -> tuple[object, ...]:
    return (firing.schedule_id, firing.fire_key, RUNNING, RETRY_WAIT, PENDING,
            firing.fire_time, firing.fire_time, firing.created_at)


class FiringStore:
    """The ``firings`` table."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    # -- reading ----------------------------------------------------------------------------
    def get(self, schedule_id: int, fire_key: str) -> Firing:
        """The firing as stored now (it must exist)."""
        rows = self.workspace.query(
            "SELECT * FROM firings WHERE schedule_id=? AND fire_key=?", (schedule_id, fire_key))
        return firing_from_row(rows[0])

    def of_schedule(self, schedule_id: int, limit: int = 20) -> list[Firing]:
        """The schedule's latest ``limit`` firings, newest first."""
        rows = self.workspace.query(
            "SELECT * FROM firings WHERE schedule_id=? ORDER BY fire_time DESC, created_at DESC "
            "LIMIT ?",
            (schedule_id, limit),
        )
        return [firing_from_row(r) for r in rows]

    def startable(self, now: float) -> list[Firing]:
        """Pending firings, and retry-waiting ones whose retry time has come, oldest first."""
        rows = self.workspace.query(
            "SELECT * FROM firings WHERE status=? OR (status=? AND next_attempt_at<=?) "
            "ORDER BY fire_time, created_at",
            (PENDING, RETRY_WAIT, now),
        )
        return [firing_from_row(r) for r in rows]

    def blocked(self, firing: Firing) -> bool:
        """Whether another firing of its schedule must go first: one running or waiting to
        retry, or an earlier pending one."""
        return bool(self.workspace.query(_BLOCKED, _blocked_args(firing)))

    def running_elsewhere(self, scheduler_id: str) -> list[tuple[Firing, SchedulerLease | None]]:
        """Running firings owned by another scheduler (or by none), each with its owner's
        heartbeat row (None when the owner has none)."""
        rows = self.workspace.query(
            "SELECT f.*, s.id AS lease_id, s.host AS lease_host, s.pid AS lease_pid, "
            "s.heartbeat_at AS lease_heartbeat_at, s.stopped_at AS lease_stopped_at "
            "FROM firings f LEFT JOIN schedulers s ON s.id = f.owner "
            "WHERE f.status=? AND (f.owner IS NULL OR f.owner<>?)",
            (RUNNING, scheduler_id),
        )
        return [(firing_from_row(r), lease_from_row(r, "lease_")) for r in rows]

    # -- writing (conditional: false when another scheduler got there first) -----------------
    def claim(self, firing: Firing, owner: str, attempt: int, run_id: str,
              deadline: float | None, now: float) -> bool:
        """Mark ``firing`` running as attempt ``attempt`` of run ``run_id``, owned by
        ``owner`` — in one transaction with the check that no other firing of its schedule
        must go first, and only if it is still in the status and attempt it was read with.
        False when it is blocked or another scheduler claimed it first."""
        with self.workspace.transaction() as db:
            if db.execute(_BLOCKED, _blocked_args(firing)).fetchall():
                return False
            claimed = db.execute(
                "UPDATE firings SET status=?, owner=?, attempt=?, run_id=?, run_ids=?, pid=NULL, "
                "deadline=?, next_attempt_at=NULL, updated_at=? WHERE schedule_id=? AND "
                "fire_key=? AND status=? AND attempt=?",
                (RUNNING, owner, attempt, run_id, json.dumps([*firing.run_ids, run_id]),
                 deadline, now, firing.schedule_id, firing.fire_key, firing.status,
                 firing.attempt),
            ).rowcount
        return bool(claimed)

    def set_pid(self, schedule_id: int, fire_key: str, pid: int | None) -> None:
        """Record the process that runs the firing's run."""
        with self.workspace.transaction() as db:
            db.execute("UPDATE firings SET pid=? WHERE schedule_id=? AND fire_key=?",
                       (pid, schedule_id, fire_key))

    def finish(self, firing: Firing, status: str, error: str | None, now: float,
               expect: str = RUNNING, attempt: int | None = None,
               next_attempt_at: float | None = None) -> None:
        """Move ``firing`` to ``status`` if it is still in ``expect``; the pid is kept only
        for a success. ``attempt`` None keeps the firing's attempt."""
        with self.workspace.transaction() as db:
            db.execute(
                "UPDATE firings SET status=?, error=?, updated_at=?, attempt=?, "
                "next_attempt_at=?, pid=CASE WHEN ?=? THEN pid ELSE NULL END "
                "WHERE schedule_id=? AND fire_key=? AND status=?",
                (status, error, now, firing.attempt if attempt is None else attempt,
                 next_attempt_at, status, SUCCEEDED, firing.schedule_id, firing.fire_key, expect),
            )

    def take_over(self, firing: Firing, owner: str, now: float) -> bool:
        """Make ``owner`` the owner of running ``firing`` if its owner is still the one it was
        read with; False when another scheduler took it first."""
        with self.workspace.transaction() as db:
            taken = db.execute(
                "UPDATE firings SET owner=?, updated_at=? WHERE schedule_id=? AND fire_key=? "
                "AND status=? AND owner IS ?",
                (owner, now, firing.schedule_id, firing.fire_key, RUNNING, firing.owner),
            ).rowcount
        return bool(taken)
