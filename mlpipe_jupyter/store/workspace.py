"""The workspace: a ``.mlpipe/`` folder holding the run store, datasets and results.

Found like git finds its folder: ``MLPIPE_HOME`` if set, else the nearest ``.mlpipe/`` in the
current folder or one of its parents. Commands that write create one in the current folder
when none is found; commands that only read say how to make one.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from mlpipe_jupyter.errors import WorkspaceError

WORKSPACE_DIRNAME = ".mlpipe"
HOME_VARIABLE = "MLPIPE_HOME"
_SCHEMA_VERSION = 6
SETUP_LOCK_NAME = "mlpipe.db.setup-lock"  # held while a process sets the database up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, experiment TEXT NOT NULL, notebook TEXT NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, ended_at REAL,
    params TEXT NOT NULL, options TEXT NOT NULL, git TEXT NOT NULL,
    pid INTEGER NOT NULL, host TEXT NOT NULL, error TEXT, published TEXT);
CREATE INDEX IF NOT EXISTS runs_by_notebook ON runs (notebook, created_at);
CREATE TABLE IF NOT EXISTS step_runs (
    run_id TEXT NOT NULL, step TEXT NOT NULL, position INTEGER NOT NULL,
    status TEXT NOT NULL, cell INTEGER, upstream TEXT NOT NULL,
    started_at REAL, ended_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
    fingerprint TEXT, result_id TEXT, reused_from TEXT, decision TEXT,
    components TEXT, error TEXT, compute TEXT,
    PRIMARY KEY (run_id, step));
CREATE INDEX IF NOT EXISTS step_runs_by_fingerprint ON step_runs (fingerprint);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, step TEXT NOT NULL, name TEXT NOT NULL,
    value TEXT NOT NULL, logged_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_by_step ON metrics (run_id, step);
CREATE TABLE IF NOT EXISTS results (
    result_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, run_id TEXT NOT NULL,
    step TEXT NOT NULL, committed_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS results_by_fingerprint ON results (fingerprint, committed_at);
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT NOT NULL, version INTEGER NOT NULL, fingerprint TEXT NOT NULL,
    kind TEXT NOT NULL, path TEXT NOT NULL, created_at REAL NOT NULL,
    source TEXT NOT NULL, files INTEGER NOT NULL, bytes INTEGER NOT NULL,
    description TEXT, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS environments (
    name TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (name, version));
-- schema 3: published pipelines, schedules, firings, scheduler heartbeats
CREATE TABLE IF NOT EXISTS published_pipelines (
    name TEXT NOT NULL, version INTEGER NOT NULL, content_hash TEXT NOT NULL,
    notebook TEXT NOT NULL, source TEXT NOT NULL, steps TEXT NOT NULL,
    parameters TEXT NOT NULL, environments TEXT NOT NULL, datasets TEXT NOT NULL,
    files TEXT NOT NULL, git TEXT NOT NULL, description TEXT,
    created_at REAL NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS published_defaults (
    name TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    pipeline TEXT NOT NULL, version INTEGER, kind TEXT NOT NULL,
    cron TEXT, timezone TEXT NOT NULL, every_seconds REAL, dataset TEXT,
    params TEXT NOT NULL, missed TEXT NOT NULL, overlap TEXT NOT NULL,
    max_retries INTEGER NOT NULL, retry_backoff REAL NOT NULL, timeout REAL,
    paused INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, anchor REAL NOT NULL,
    cursor REAL NOT NULL, dataset_seen INTEGER, missed_total INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS firings (
    schedule_id INTEGER NOT NULL, fire_key TEXT NOT NULL, fire_time REAL NOT NULL,
    status TEXT NOT NULL, late INTEGER NOT NULL DEFAULT 0, dataset_version INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0, run_id TEXT, run_ids TEXT NOT NULL DEFAULT '[]',
    owner TEXT, pid INTEGER, deadline REAL, next_attempt_at REAL,
    error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (schedule_id, fire_key));
CREATE INDEX IF NOT EXISTS firings_by_status ON firings (status, schedule_id);
CREATE TABLE IF NOT EXISTS schedulers (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
    started_at REAL NOT NULL, heartbeat_at REAL NOT NULL, stopped_at REAL);
-- schema 4: notifications: where to notify (the workspace default, a published pipeline's,
-- a schedule's), what each run's notifications did, and the workspace's settings
CREATE TABLE IF NOT EXISTS notify_targets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, owner TEXT NOT NULL,
    spec TEXT NOT NULL, notify_on TEXT NOT NULL, created_at REAL NOT NULL,
    UNIQUE (scope, owner, spec));
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, channel TEXT NOT NULL,
    source TEXT NOT NULL, run_status TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL, error TEXT, sent_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS notifications_by_run ON notifications (run_id);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- schema 5: parameter sweeps: a sweep and its members (each member is an ordinary run)
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY, notebook TEXT NOT NULL, experiment TEXT NOT NULL,
    spec TEXT NOT NULL, params TEXT NOT NULL, created_at REAL NOT NULL, ended_at REAL,
    pid INTEGER NOT NULL, host TEXT NOT NULL, published TEXT, schedule TEXT);
CREATE TABLE IF NOT EXISTS sweep_members (
    sweep_id TEXT NOT NULL, position INTEGER NOT NULL, run_id TEXT NOT NULL,
    params TEXT NOT NULL, PRIMARY KEY (sweep_id, position));
CREATE INDEX IF NOT EXISTS sweep_members_by_run ON sweep_members (run_id);
-- schema 6: a schedule whose firings each start a sweep: its SweepSpec.to_dict() as JSON
CREATE TABLE IF NOT EXISTS schedule_sweeps (
    schedule_id INTEGER PRIMARY KEY, spec TEXT NOT NULL);
"""


def find_workspace_dir(start: Path | None = None) -> Path | None:
    """The workspace folder that applies at ``start`` (default: the current folder)."""
    home = os.environ.get(HOME_VARIABLE)
    if home:
        return Path(home).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / WORKSPACE_DIRNAME
        if candidate.is_dir():
            return candidate
    return None


class Workspace:
    """Paths and the SQLite connection of one workspace. Safe to share between threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()

    # -- discovery ----------------------------------------------------------------------
    @classmethod
    def find(cls, start: Path | None = None, create: bool = False) -> Workspace:
        """The workspace that applies here; created in ``start`` (or cwd) if asked and absent."""
        found = find_workspace_dir(start)
        if found is None:
            if not create:
                raise WorkspaceError(
                    f"no {WORKSPACE_DIRNAME}/ workspace in {Path.cwd()} or its parents "
                    f"(and {HOME_VARIABLE} is not set); `mlpipe run` creates one here"
                )
            found = (start or Path.cwd()).resolve() / WORKSPACE_DIRNAME
        workspace = cls(found)
        if create:
            workspace.ensure_created()
        elif not found.is_dir():
            raise WorkspaceError(f"workspace folder {found} does not exist")
        return workspace

    def ensure_created(self) -> None:
        for folder in (self.root, self.runs_dir, self.results_dir, self.staging_dir, self.data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        gitignore = self.root / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("# mlpipe workspace: run history and data, not source\n*\n")

    # -- layout -------------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.root / "mlpipe.db"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def results_dir(self) -> Path:
        """Committed step outputs, one immutable folder per result id."""
        return self.root / "results"

    @property
    def staging_dir(self) -> Path:
        """Where running steps write; moved into results/ only on success."""
        return self.root / "staging"

    @property
    def data_dir(self) -> Path:
        """Registered dataset content, one immutable folder per content fingerprint."""
        return self.root / "data"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    @property
    def sweeps_dir(self) -> Path:
        return self.root / "sweeps"

    def sweep_dir(self, sweep_id: str) -> Path:
        """Files of a sweep that no member run owns (a triggered sweep's launcher log)."""
        return self.sweeps_dir / sweep_id

    def step_dir(self, run_id: str, step: str) -> Path:
        return self.runs_dir / run_id / "steps" / step

    # -- database -----------------------------------------------------------------------
    @cached_property
    def db(self) -> sqlite3.Connection:
        """One connection shared by the process' threads; use ``transaction()`` to write."""
        if not self.root.is_dir():
            raise WorkspaceError(f"workspace folder {self.root} does not exist")
        connection = sqlite3.connect(
            self.db_path, timeout=60, check_same_thread=False, isolation_level=None
        )
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA busy_timeout=60000")
        # One process at a time sets the file up: SQLite answers a second process switching
        # a new database to WAL at the same moment with "database is locked" at once, without
        # waiting (two first runs of a new workspace, started together, failed so).
        with self._setup_lock():
            # WAL: readers never block the runner, and a killed writer leaves a readable file.
            connection.execute("PRAGMA journal_mode=WAL")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version < _SCHEMA_VERSION:
                # every statement is CREATE ... IF NOT EXISTS: upgrading only adds tables
                connection.executescript(_SCHEMA)
                connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        connection.execute("PRAGMA synchronous=NORMAL")
        if version > _SCHEMA_VERSION:
            raise WorkspaceError(
                f"workspace {self.root} was written by a newer mlpipe (schema {version}); "
                "upgrade mlpipe_jupyter"
            )
        return connection

    @contextmanager
    def _setup_lock(self) -> Iterator[None]:
        """An exclusive lock on ``mlpipe.db.setup-lock``, for the moments a process sets the
        database up (its journal mode and schema)."""
        import fcntl

        with open(self.root / SETUP_LOCK_NAME, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self.db.execute(sql, args))

    def change_marker(self) -> tuple[int, int]:
        """A value that changes whenever any process commits to the database: SQLite's
        ``data_version`` (commits of other connections) and this connection's own changes."""
        with self._lock:
            version = self.db.execute("PRAGMA data_version").fetchone()[0]
            return int(version), self.db.total_changes

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.close()
            del self.__dict__["db"]


class _Transaction:
    """``with workspace.transaction() as db:`` an IMMEDIATE transaction (one writer at a time)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def __enter__(self) -> sqlite3.Connection:
        self.workspace._lock.acquire()
        try:
            self.workspace.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.workspace._lock.release()
            raise
        return self.workspace.db

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        try:
            self.workspace.db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.workspace._lock.release()
