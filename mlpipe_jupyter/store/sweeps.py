"""Sweeps: a sweep's record and its members' run ids (the members are ordinary runs).

A sweep's status is never stored: it is read from its members' runs, so it cannot
disagree with them. A member whose run was never created (the sweep was stopped before
reaching it) counts as ``pending`` while the sweep's process lives, else ``canceled``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlpipe_jupyter.errors import NotFoundError
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.values import read_stored_values, stored_values
from mlpipe_jupyter.processes import process_alive
from mlpipe_jupyter.store.workspace import Workspace

PENDING = "pending"  # a member whose run has not been created yet
SWEEP_ALIASES = ("latest", "last")


def new_sweep_id() -> str:
    """Sortable and readable, and never mistaken for a run id: sw-20261129-140502-7f3a."""
    return f"sw-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def is_sweep_id(text: str) -> bool:
    """Whether an id that may name a run or a sweep (a firing's ``run_id``) is a sweep's."""
    return text.startswith("sw-")


@dataclass(frozen=True)
class SweepMember:
    position: int  # 1-based, in the order the sweep expands
    run_id: str
    params: dict[str, str]  # the swept values, as -p texts
    status: str  # the member run's status, or PENDING / canceled when it has none


@dataclass(frozen=True)
class SweepRecord:
    id: str
    notebook: str
    experiment: str
    spec: dict[str, Any]  # SweepSpec.to_dict()
    params: dict[str, Any]  # the values every member shares (-p)
    created_at: float
    ended_at: float | None
    pid: int
    host: str
    published: str | None
    schedule: str | None
    members: tuple[SweepMember, ...]

    @property
    def status(self) -> str:
        """running while a member runs or waits; else canceled, failed or succeeded."""
        statuses = {m.status for m in self.members}
        if statuses & {RunStatus.RUNNING.value, PENDING}:
            return RunStatus.RUNNING.value
        for status in (RunStatus.CANCELED, RunStatus.FAILED):
            if status.value in statuses:
                return str(status.value)
        return RunStatus.SUCCEEDED.value

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for member in self.members:
            counts[member.status] = counts.get(member.status, 0) + 1
        return counts


class SweepStore:
    """The ``sweeps`` and ``sweep_members`` tables."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def create(self, sweep_id: str, notebook: str, experiment: str, spec: Mapping[str, Any],
               params: Mapping[str, Any], members: Sequence[tuple[str, Mapping[str, str]]],
               published: str | None = None, schedule: str | None = None) -> None:
        """Record a sweep and its members' run ids before the first member starts."""
        with self.workspace.transaction() as db:
            db.execute(
                "INSERT INTO sweeps (id, notebook, experiment, spec, params, created_at, pid,"
                " host, published, schedule) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (sweep_id, notebook, experiment, json.dumps(dict(spec)),
                 json.dumps(stored_values(params)), time.time(), os.getpid(),
                 socket.gethostname(), published, schedule),
            )
            db.executemany(
                "INSERT INTO sweep_members (sweep_id, position, run_id, params) VALUES (?,?,?,?)",
                [(sweep_id, index, run_id, json.dumps(dict(values)))
                 for index, (run_id, values) in enumerate(members, start=1)],
            )

    def finish(self, sweep_id: str) -> None:
        with self.workspace.transaction() as db:
            db.execute("UPDATE sweeps SET ended_at=? WHERE id=?", (time.time(), sweep_id))

    def resolve(self, text: str) -> str:
        """A full sweep id from an id, a unique prefix (with or without ``sw-``) or 'latest'."""
        if text in SWEEP_ALIASES:
            rows = self.workspace.query("SELECT id FROM sweeps ORDER BY created_at DESC LIMIT 1")
            if not rows:
                raise NotFoundError("there are no sweeps in this workspace yet "
                                    "(start one with `mlpipe run NB --sweep NAME=V1,V2`)")
            return str(rows[0]["id"])
        prefix = text if text.startswith("sw-") else f"sw-{text}"
        rows = self.workspace.query(
            "SELECT id FROM sweeps WHERE id LIKE ? ORDER BY created_at DESC LIMIT 6",
            (prefix.replace("%", "").replace("_", r"\_") + "%",),
        )
        exact = [r["id"] for r in rows if r["id"] == prefix]
        if exact or len(rows) == 1:
            return str((exact or [rows[0]["id"]])[0])
        if not rows:
            raise NotFoundError(f"no sweep {text!r} (see `mlpipe sweep list`)")
        raise NotFoundError(f"sweep {text!r} is ambiguous: "
                            + ", ".join(r["id"] for r in rows[:5]) + ", ...")

    def get(self, text: str) -> SweepRecord:
        sweep_id = self.resolve(text)
        row = self.workspace.query("SELECT * FROM sweeps WHERE id=?", (sweep_id,))[0]
        return self._record(row)

    def list(self, limit: int = 50, notebook: str | None = None) -> list[SweepRecord]:
        sql, args = "SELECT * FROM sweeps", ()  # type: tuple[str, tuple[Any, ...]]
        if notebook:
            sql, args = sql + " WHERE notebook=?", (notebook,)
        rows = self.workspace.query(sql + " ORDER BY created_at DESC LIMIT ?", (*args, limit))
        return [self._record(row) for row in rows]

    def sweep_of(self, run_id: str) -> str | None:
        """The sweep that run ``run_id`` is a member of, if any."""
        rows = self.workspace.query("SELECT sweep_id FROM sweep_members WHERE run_id=?", (run_id,))
        return str(rows[0]["sweep_id"]) if rows else None

    def _record(self, row: Any) -> SweepRecord:
        alive = row["ended_at"] is None and (
            row["host"] != socket.gethostname() or process_alive(row["pid"]))
        members = self.workspace.query(
            "SELECT m.position, m.run_id, m.params, r.status FROM sweep_members m "
            "LEFT JOIN runs r ON r.id = m.run_id WHERE m.sweep_id=? ORDER BY m.position",
            (row["id"],),
        )
        return SweepRecord(
            id=row["id"], notebook=row["notebook"], experiment=row["experiment"],
            spec=json.loads(row["spec"]), params=read_stored_values(json.loads(row["params"])),
            created_at=row["created_at"], ended_at=row["ended_at"], pid=row["pid"],
            host=row["host"], published=row["published"], schedule=row["schedule"],
            members=tuple(
                SweepMember(m["position"], m["run_id"], json.loads(m["params"]),
                            m["status"] or (PENDING if alive else RunStatus.CANCELED.value))
                for m in members
            ),
        )
