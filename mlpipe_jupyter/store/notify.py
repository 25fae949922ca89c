"""Notifications in the workspace: where runs notify (``notify_targets``: the workspace
default, a published pipeline's, a schedule's), what each run's notifications did
(``notifications``), and the workspace's settings (``settings``: SMTP, server URL, retries).

A target's spec is stored as the user wrote it (a webhook URL may hold a token: the
workspace is the user's own); a delivery record holds the channel with credentials
stripped (``model.notify.NotifySpec.channel``) and never a secret.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlpipe_jupyter.store.workspace import Workspace

WORKSPACE = "workspace"  # scope of the workspace default (owner "")
PUBLISHED = "published"  # owner: the published pipeline's name
SCHEDULE = "schedule"  # owner: the schedule's name
SCOPES = (WORKSPACE, PUBLISHED, SCHEDULE)


@dataclass(frozen=True)
class NotifyTarget:
    id: int
    scope: str
    owner: str
    spec: str
    on: tuple[str, ...]  # the run statuses that notify
    created_at: float

    @property
    def source(self) -> str:
        """Where the target comes from, as shown: ``workspace``, ``published nightly`` ..."""
        return self.scope if self.scope == WORKSPACE else f"{self.scope} {self.owner}"


@dataclass(frozen=True)
class NotificationRecord:
    """One notification of one run: the channel (credentials stripped), where the target
    came from, the run status it reported, sent or failed, after how many attempts."""

    id: int
    run_id: str
    channel: str
    source: str
    run_status: str
    status: str
    attempts: int
    error: str | None
    sent_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "source": self.source, "run_status": self.run_status,
                "status": self.status, "attempts": self.attempts, "error": self.error,
                "sent_at": self.sent_at}


def _target(row: Any) -> NotifyTarget:
    return NotifyTarget(row["id"], row["scope"], row["owner"], row["spec"],
                        tuple(json.loads(row["notify_on"])), row["created_at"])


class NotifyStore:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    # -- targets ------------------------------------------------------------------------------
    def targets(self, scope: str | None = None, owner: str | None = None) -> list[NotifyTarget]:
        if not self.workspace.db_path.exists():
            return []
        sql = "SELECT * FROM notify_targets WHERE 1=1"
        args: list[object] = []
        if scope is not None:
            sql += " AND scope = ?"
            args.append(scope)
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        return [_target(r) for r in self.workspace.query(sql + " ORDER BY id", tuple(args))]

    def add_target(self, scope: str, owner: str, spec: str, on: Sequence[str],
                   now: float | None = None) -> NotifyTarget:
        """Add (or, for the same spec, update the statuses of) a target."""
        with self.workspace.transaction() as db:
            db.execute(
                "INSERT INTO notify_targets (scope, owner, spec, notify_on, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, owner, spec) "
                "DO UPDATE SET notify_on = excluded.notify_on",
                (scope, owner, spec, json.dumps(list(on)), time.time() if now is None else now))
        return next(t for t in self.targets(scope, owner) if t.spec == spec)

    def replace_targets(self, scope: str, owner: str, specs: Sequence[str],
                        on: Sequence[str]) -> list[NotifyTarget]:
        """The targets of (scope, owner) become ``specs``, all notifying on ``on``."""
        now = time.time()
        with self.workspace.transaction() as db:
            db.execute("DELETE FROM notify_targets WHERE scope = ? AND owner = ?", (scope, owner))
            for spec in dict.fromkeys(specs):
                db.execute(
                    "INSERT INTO notify_targets (scope, owner, spec, notify_on, created_at) "
                    "VALUES (?, ?, ?, ?, ?)", (scope, owner, spec, json.dumps(list(on)), now))
        return self.targets(scope, owner)

    def remove_target(self, target_id: int) -> None:
        with self.workspace.transaction() as db:
            db.execute("DELETE FROM notify_targets WHERE id = ?", (target_id,))

    def remove_owner(self, scope: str, owner: str) -> None:
        with self.workspace.transaction() as db:
            db.execute("DELETE FROM notify_targets WHERE scope = ? AND owner = ?", (scope, owner))

    # -- deliveries ----------------------------------------------------------------------------
    def record(self, run_id: str, channel: str, source: str, run_status: str, status: str,
               attempts: int, error: str | None) -> None:
        with self.workspace.transaction() as db:
            db.execute(
                "INSERT INTO notifications (run_id, channel, source, run_status, status, "
                "attempts, error, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, channel, source, run_status, status, attempts, error, time.time()))

    def of_run(self, run_id: str) -> list[NotificationRecord]:
        if not self.workspace.db_path.exists():
            return []
        rows = self.workspace.query(
            "SELECT * FROM notifications WHERE run_id = ? ORDER BY id", (run_id,))
        return [NotificationRecord(r["id"], r["run_id"], r["channel"], r["source"],
                                   r["run_status"], r["status"], r["attempts"], r["error"],
                                   r["sent_at"]) for r in rows]


class SettingsStore:
    """The workspace's settings (``mlpipe config``): text values by key."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def all(self) -> dict[str, str]:
        if not self.workspace.db_path.exists():
            return {}
        return {r["key"]: r["value"]
                for r in self.workspace.query("SELECT key, value FROM settings ORDER BY key")}

    def get(self, key: str) -> str | None:
        return self.all().get(key)

    def set(self, key: str, value: str) -> None:
        with self.workspace.transaction() as db:
            db.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def unset(self, key: str) -> None:
        with self.workspace.transaction() as db:
            db.execute("DELETE FROM settings WHERE key = ?", (key,))


__all__ = ["PUBLISHED", "SCHEDULE", "SCOPES", "WORKSPACE", "NotificationRecord",
           "NotifyStore", "NotifyTarget", "SettingsStore"]
