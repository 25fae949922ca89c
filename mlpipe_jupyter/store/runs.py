"""Run history: experiments, pipeline runs, step runs and metrics in the workspace's SQLite."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import NotFoundError
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.model.values import read_stored_values, stored_values
from mlpipe_jupyter.processes import process_alive
from mlpipe_jupyter.store.workspace import Workspace

RUN_ALIASES = ("latest", "last")


def new_run_id() -> str:
    """Sortable and readable: 20261121-140502-7f3a."""
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class RunRecord:
    id: str
    experiment: str
    notebook: str
    status: RunStatus
    created_at: float
    ended_at: float | None
    params: dict[str, Any]
    options: dict[str, Any]
    git: dict[str, Any]
    pid: int
    host: str
    error: str | None
    published: str | None

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.created_at


@dataclass(frozen=True)
class StepRunRecord:
    run_id: str
    step: str
    position: int
    status: StepStatus
    cell: int | None
    upstream: list[str]
    started_at: float | None
    ended_at: float | None
    attempts: int
    fingerprint: str | None
    result_id: str | None
    reused_from: str | None  # run id that produced the reused result
    decision: str | None  # why it was reused, executed or skipped
    components: dict[str, Any] | None
    error: str | None
    compute: str | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


@dataclass(frozen=True)
class PlannedStep:
    """What the runner records for a step when the run starts."""

    step: str
    position: int
    status: StepStatus
    cell: int | None
    upstream: Sequence[str]
    fingerprint: str | None
    result_id: str | None
    reused_from: str | None
    decision: str
    components: dict[str, Any] | None
    compute: str | None


def _run(row: Any) -> RunRecord:
    return RunRecord(
        id=row["id"],
        experiment=row["experiment"],
        notebook=row["notebook"],
        status=RunStatus(row["status"]),
        created_at=row["created_at"],
        ended_at=row["ended_at"],
        params=read_stored_values(json.loads(row["params"])),
        options=json.loads(row["options"]),
        git=json.loads(row["git"]),
        pid=row["pid"],
        host=row["host"],
        error=row["error"],
        published=row["published"],
    )


def _step_run(row: Any) -> StepRunRecord:
    return StepRunRecord(
        run_id=row["run_id"],
        step=row["step"],
        position=row["position"],
        status=StepStatus(row["status"]),
        cell=row["cell"],
        upstream=json.loads(row["upstream"]),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        attempts=row["attempts"],
        fingerprint=row["fingerprint"],
        result_id=row["result_id"],
        reused_from=row["reused_from"],
        decision=row["decision"],
        components=json.loads(row["components"]) if row["components"] else None,
        error=row["error"],
        compute=row["compute"],
    )


class RunStore:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    # -- writing (the runner) -------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        experiment: str,
        notebook: str,
        params: dict[str, Any],
        options: dict[str, Any],
        git: dict[str, Any],
        steps: Sequence[PlannedStep],
        published: str | None = None,
    ) -> None:
        now = time.time()
        with self.workspace.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO experiments (name, created_at) VALUES (?, ?)",
                (experiment, now),
            )
            db.execute(
                "INSERT INTO runs (id, experiment, notebook, status, created_at, params, options,"
                " git, pid, host, published) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, experiment, notebook, RunStatus.RUNNING.value, now,
                 json.dumps(stored_values(params)), json.dumps(options, default=repr),
                 json.dumps(git), os.getpid(), socket.gethostname(), published),
            )
            db.executemany(
                "INSERT INTO step_runs (run_id, step, position, status, cell, upstream, "
                "fingerprint, result_id, reused_from, decision, components, compute, "
                "started_at, ended_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (run_id, s.step, s.position, s.status.value, s.cell, json.dumps(list(s.upstream)),
                     s.fingerprint, s.result_id, s.reused_from, s.decision,
                     json.dumps(s.components) if s.components is not None else None, s.compute,
                     now if s.status.is_final else None, now if s.status.is_final else None)
                    for s in steps
                ],
            )

    _STEP_FIELDS = frozenset(
        {"status", "started_at", "ended_at", "attempts", "fingerprint", "result_id",
         "reused_from", "decision", "components", "error", "compute"}
    )

    def update_step(self, run_id: str, step: str, **fields: Any) -> None:
        unknown = set(fields) - self._STEP_FIELDS
        if unknown:
            raise ValueError(f"unknown step run fields {unknown}")
        values = {
            k: (v.value if isinstance(v, StepStatus) else json.dumps(v) if k == "components" else v)
            for k, v in fields.items()
        }
        assignments = ", ".join(f"{k}=?" for k in values)
        with self.workspace.transaction() as db:
            db.execute(
                f"UPDATE step_runs SET {assignments} WHERE run_id=? AND step=?",
                (*values.values(), run_id, step),
            )

    def finish_run(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        with self.workspace.transaction() as db:
            db.execute(
                "UPDATE runs SET status=?, ended_at=?, error=? WHERE id=?",
                (status.value, time.time(), error, run_id),
            )

    def add_metric(self, run_id: str, step: str, name: str, value: Any, at: float) -> None:
        with self.workspace.transaction() as db:
            db.execute(
                "INSERT INTO metrics (run_id, step, name, value, logged_at) VALUES (?,?,?,?,?)",
                (run_id, step, name, json.dumps(value, default=repr), at),
            )

    def mark_dead_runs(self) -> list[str]:
        """Runs left 'running' by a runner of this host that died (kill -9, power loss)
        are marked canceled, with their unfinished steps, so history never lies."""
        host = socket.gethostname()
        dead = [
            r for r in self.workspace.query(
                "SELECT id, pid FROM runs WHERE status=? AND host=?", (RunStatus.RUNNING.value, host)
            )
            if not process_alive(r["pid"])
        ]
        now = time.time()
        for row in dead:
            with self.workspace.transaction() as db:
                db.execute(
                    "UPDATE runs SET status=?, ended_at=?, error=? WHERE id=? AND status=?",
                    (RunStatus.CANCELED.value, now,
                     f"the runner (pid {row['pid']}) stopped before the run ended",
                     row["id"], RunStatus.RUNNING.value),
                )
                db.execute(
                    "UPDATE step_runs SET status=?, ended_at=?, error=COALESCE(error, ?) "
                    "WHERE run_id=? AND status IN (?, ?)",
                    (StepStatus.CANCELED.value, now, "the runner stopped", row["id"],
                     StepStatus.QUEUED.value, StepStatus.RUNNING.value),
                )
        return [r["id"] for r in dead]

    # -- reading --------------------------------------------------------------------------
    def resolve_run_id(self, text: str) -> str:
        """A full run id from an id, a unique prefix of one, or 'latest'."""
        if text in RUN_ALIASES:
            rows = self.workspace.query("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1")
            if not rows:
                raise NotFoundError("there are no runs in this workspace yet")
            return str(rows[0]["id"])
        rows = self.workspace.query(
            "SELECT id FROM runs WHERE id LIKE ? ORDER BY created_at DESC LIMIT 6",
            (text.replace("%", "").replace("_", r"\_") + "%",),
        )
        exact = [r["id"] for r in rows if r["id"] == text]
        if exact:
            return str(exact[0])
        if len(rows) == 1:
            return str(rows[0]["id"])
        if not rows:
            raise NotFoundError(f"no run {text!r} (see `mlpipe runs`)")
        some = ", ".join(r["id"] for r in rows[:5])
        raise NotFoundError(f"run {text!r} is ambiguous: {some}, ...")

    def get_run(self, run_id: str) -> RunRecord:
        rows = self.workspace.query("SELECT * FROM runs WHERE id=?", (self.resolve_run_id(run_id),))
        return _run(rows[0])

    def list_runs(
        self,
        notebook: str | None = None,
        experiment: str | None = None,
        status: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> list[RunRecord]:
        clauses, args = [], []
        for column, value in (("notebook", notebook), ("experiment", experiment), ("status", status)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.workspace.query(
            f"SELECT * FROM runs {where} ORDER BY created_at DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [_run(r) for r in rows]

    def step_runs(self, run_id: str) -> list[StepRunRecord]:
        rows = self.workspace.query(
            "SELECT * FROM step_runs WHERE run_id=? ORDER BY position", (run_id,)
        )
        return [_step_run(r) for r in rows]

    def step_run(self, run_id: str, step: str) -> StepRunRecord:
        rows = self.workspace.query(
            "SELECT * FROM step_runs WHERE run_id=? AND step=?", (run_id, step)
        )
        if not rows:
            steps = ", ".join(s.step for s in self.step_runs(run_id)) or "none"
            raise NotFoundError(f"run {run_id} has no step {step!r} (steps: {steps})")
        return _step_run(rows[0])

    def previous_step_run(self, notebook: str, step: str, before: float) -> StepRunRecord | None:
        """The latest earlier run of the same notebook's step that has a fingerprint."""
        rows = self.workspace.query(
            "SELECT s.* FROM step_runs s JOIN runs r ON r.id = s.run_id WHERE r.notebook=? "
            "AND s.step=? AND r.created_at < ? AND s.components IS NOT NULL "
            "AND s.status IN ('succeeded', 'reused') ORDER BY r.created_at DESC LIMIT 1",
            (notebook, step, before),
        )
        return _step_run(rows[0]) if rows else None

    def latest_committed(self, step: str, notebook: str | None = None) -> StepRunRecord | None:
        """The newest succeeded or reused run of ``step`` (of ``notebook`` when given) whose
        committed result folder still exists: what an interactive cell reads as its outputs."""
        sql = (
            "SELECT s.* FROM step_runs s JOIN runs r ON r.id = s.run_id WHERE s.step=? "
            "AND s.status IN ('succeeded', 'reused') AND s.result_id IS NOT NULL"
        )
        args: tuple[Any, ...] = (step,)
        if notebook is not None:
            sql += " AND r.notebook=?"
            args += (notebook,)
        rows = self.workspace.query(
            sql + " ORDER BY COALESCE(s.ended_at, r.created_at) DESC LIMIT 20", args
        )
        for row in rows:
            if (self.workspace.results_dir / row["result_id"]).is_dir():
                return _step_run(row)
        return None

    def producer_of(self, result_id: str) -> StepRunRecord | None:
        """The step run that executed and committed ``result_id``."""
        rows = self.workspace.query(
            "SELECT * FROM step_runs WHERE result_id=? AND status='succeeded' "
            "ORDER BY ended_at LIMIT 1",
            (result_id,),
        )
        return _step_run(rows[0]) if rows else None

    def metrics(self, run_id: str, step: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT step, name, value, logged_at FROM metrics WHERE run_id=?"
        args: tuple[Any, ...] = (run_id,)
        if step is not None:
            sql += " AND step=?"
            args += (step,)
        rows = self.workspace.query(sql + " ORDER BY logged_at", args)
        return [
            {"step": r["step"], "name": r["name"], "value": json.loads(r["value"]),
             "logged_at": r["logged_at"]}
            for r in rows
        ]

    def signatures(self, limit: int = 50) -> dict[str, tuple[str, float | None, str | None, int]]:
        """For the ``limit`` newest runs and every running one: (status, ended_at, each
        step's ``step:status:attempts``, metric count) — what changes while a run moves."""
        rows = self.workspace.query(
            "SELECT r.id, r.status, r.ended_at, (SELECT group_concat(s.step || ':' || s.status "
            "|| ':' || s.attempts, ',') FROM step_runs s WHERE s.run_id = r.id) AS steps, "
            "(SELECT count(*) FROM metrics m WHERE m.run_id = r.id) AS metrics "
            "FROM runs r WHERE r.id IN (SELECT id FROM runs ORDER BY created_at DESC LIMIT ?) "
            "OR r.status = 'running'",
            (limit,),
        )
        return {r["id"]: (r["status"], r["ended_at"], r["steps"], r["metrics"]) for r in rows}

    # -- files ----------------------------------------------------------------------------
    def output_notebook(self, run_id: str, step: str) -> Path:
        return self.workspace.step_dir(run_id, step) / "output.ipynb"

    def log_path(self, run_id: str, step: str) -> Path:
        return self.workspace.step_dir(run_id, step) / "log.txt"
