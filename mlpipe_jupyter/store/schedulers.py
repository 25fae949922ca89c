"""Scheduler heartbeats: which schedulers work on a workspace, and whether they still do.

Every scheduler has a row keyed by its id (``host:pid:random``) and refreshes
``heartbeat_at`` while it runs; ``stopped_at`` is set when it stops cleanly. A firing whose
owner stopped, or stopped heartbeating, is taken over by another scheduler (see
``FiringStore.running_elsewhere``): the lease rule itself is the scheduler's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlpipe_jupyter.store.workspace import Workspace


@dataclass(frozen=True)
class SchedulerLease:
    """A scheduler as its heartbeat row records it."""

    id: str
    host: str
    pid: int
    heartbeat_at: float
    stopped_at: float | None  # None while it runs (or until it is found dead)


def lease_from_row(row: Any, prefix: str = "") -> SchedulerLease | None:
    """The lease in ``row`` (columns named ``prefix + field``); None when the row has none
    (a LEFT JOIN that found no scheduler)."""
    if row[prefix + "host"] is None:
        return None
    return SchedulerLease(
        id=row[prefix + "id"], host=row[prefix + "host"], pid=row[prefix + "pid"],
        heartbeat_at=row[prefix + "heartbeat_at"], stopped_at=row[prefix + "stopped_at"],
    )


class SchedulerStore:
    """The ``schedulers`` table: one heartbeat row per scheduler."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def heartbeat(self, scheduler_id: str, host: str, pid: int, now: float) -> None:
        """Register ``scheduler_id`` (started now) or refresh its heartbeat."""
        with self.workspace.transaction() as db:
            db.execute(
                "INSERT INTO schedulers (id, host, pid, started_at, heartbeat_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET heartbeat_at=excluded.heartbeat_at",
                (scheduler_id, host, pid, now, now),
            )

    def mark_stopped(self, scheduler_id: str, now: float) -> None:
        """Record that ``scheduler_id`` stopped cleanly: its firings may be taken over at once."""
        with self.workspace.transaction() as db:
            db.execute("UPDATE schedulers SET stopped_at=? WHERE id=?", (now, scheduler_id))

    def get(self, scheduler_id: str) -> SchedulerLease | None:
        """The heartbeat row of ``scheduler_id``, None when it never registered."""
        rows = self.workspace.query("SELECT * FROM schedulers WHERE id=?", (scheduler_id,))
        return lease_from_row(rows[0]) if rows else None
