"""The scheduler: fires schedules, starts and watches their runs, retries, times out.

One ``tick()`` does everything once; ``serve()`` ticks until SIGTERM/SIGINT (``mlpipe
scheduler``), ``start()``/``stop()`` tick in a thread (for a Jupyter server extension).
Time comes from an injectable clock and runs from an injectable launcher, so tests drive
hours of schedule in milliseconds.

Safety across processes rests on the store, not on a leader: deciding a schedule's due
times, claiming a firing to start it, and taking over an orphaned one are each a
conditional write in an IMMEDIATE transaction, and firings are UNIQUE per (schedule,
fire key). Any number of schedulers can run against one workspace; each fire time gets
one firing and each firing one process at a time. Every scheduler heartbeats in the
``schedulers`` table; a firing whose owner stopped heartbeating (or whose process is
gone, on this host) is taken over by another: its still-running run is watched to the
end, a run that died with it is started again (reusing its finished steps).

Runs are ``mlpipe run`` subprocesses (see ``triggering``): a timeout is SIGTERM (the CLI
cancels cleanly), then SIGKILL of the run's process group after a grace period.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlpipe_jupyter.errors import MlpipeError, NotFoundError
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.scheduling.policies import RUN_ONCE, SKIP, plan_due, retry_delay
from mlpipe_jupyter.scheduling.schedules import (
    ACTIVE,
    CANCELED,
    DATASET,
    FAILED,
    PENDING,
    RETRY_WAIT,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    Firing,
    Schedule,
    _schedule,
    firing_from_row,
    iso,
)
from mlpipe_jupyter.scheduling.triggering import LAUNCH_LOG, PreparedRun, prepare_run, start_run
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.results import process_alive

log = logging.getLogger("mlpipe_jupyter.scheduler")

LEASE_SECONDS = 30.0  # a scheduler silent this long is dead; its firings are taken over
HEARTBEAT_SECONDS = 5.0
KILL_GRACE_SECONDS = 20.0  # between SIGTERM (cancel cleanly) and SIGKILL of a run

# Exit codes of `mlpipe run` (cli.main), and LOST for a run whose process vanished
# without recording an end (killed with its scheduler); not a code a process can return
# (Popen gives -N for death by signal N).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELED = 0, 1, 2, 130
LOST = -1000


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class RunHandle(Protocol):
    """A started run, as the scheduler watches it."""

    pid: int | None

    def poll(self) -> int | None:
        """None while running, else an exit code (or LOST)."""
        ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class RunLauncher(Protocol):
    def launch(self, store: Store, prepared: PreparedRun) -> RunHandle: ...

    def adopt(self, store: Store, pid: int | None, run_id: str) -> RunHandle:
        """A handle on a run started by another (dead) scheduler."""
        ...


class _ProcessHandle:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid: int | None = process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        _signal(self.pid, signal.SIGTERM, group=False)

    def kill(self) -> None:
        _signal(self.pid, signal.SIGKILL, group=True)


class _AdoptedHandle:
    """A run that is not our child: alive while its pid is, outcome read from the store."""

    def __init__(self, store: Store, pid: int | None, run_id: str) -> None:
        self.store, self.pid, self.run_id = store, pid, run_id

    def poll(self) -> int | None:
        if self.pid is not None and process_alive(self.pid):
            return None
        self.store.runs.mark_dead_runs()
        try:
            status = self.store.runs.get_run(self.run_id).status
        except NotFoundError:
            return LOST
        return {RunStatus.SUCCEEDED: EXIT_OK, RunStatus.FAILED: EXIT_FAILED}.get(status, LOST)

    def terminate(self) -> None:
        _signal(self.pid, signal.SIGTERM, group=False)

    def kill(self) -> None:
        _signal(self.pid, signal.SIGKILL, group=True)


def _signal(pid: int | None, sig: int, group: bool) -> None:
    if pid is None:
        return
    try:
        # the run has its own session: its group holds its kernels too
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class SubprocessLauncher:
    """Runs as ``mlpipe run`` processes (the default)."""

    def launch(self, store: Store, prepared: PreparedRun) -> RunHandle:
        return _ProcessHandle(start_run(store, prepared))

    def adopt(self, store: Store, pid: int | None, run_id: str) -> RunHandle:
        return _AdoptedHandle(store, pid, run_id)


@dataclass
class _Watched:
    firing: Firing
    handle: RunHandle
    adopted: bool = False
    terminated_at: float | None = None  # when SIGTERM was sent
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Scheduler:
    """Fires the schedules of one workspace. Safe to run several at once (see module doc)."""

    def __init__(
        self,
        store: Store,
        clock: Clock | None = None,
        launcher: RunLauncher | None = None,
        tick_seconds: float = 1.0,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.launcher = launcher or SubprocessLauncher()
        self.tick_seconds = tick_seconds
        self.lease_seconds = lease_seconds
        self.host = socket.gethostname()
        self.id = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self._watched: dict[tuple[int, str], _Watched] = {}
        self._stop = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._registered = False
        self._last_heartbeat = float("-inf")

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Tick in a background thread until ``stop()`` (for hosting in another process)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="mlpipe-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = KILL_GRACE_SECONDS) -> None:
        """Stop firing; cancel the runs in progress and leave their firings pending, so the
        next scheduler starts them again (finished steps are reused, nothing is lost)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._shutdown(timeout)

    def serve(self) -> None:
        """Tick in the foreground until SIGTERM or SIGINT, then stop gracefully."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        log.info("scheduler %s started on workspace %s", self.id, self.store.workspace.root)
        self._loop()
        log.info("scheduler %s stopping", self.id)
        self._shutdown(KILL_GRACE_SECONDS)
        log.info("scheduler %s stopped", self.id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bad tick must not end the scheduler; the next may succeed
                log.exception("scheduler tick failed")
            self._stop.wait(self.tick_seconds)

    def _shutdown(self, timeout: float) -> None:
        self._stopping = True
        for watched in self._watched.values():
            watched.handle.terminate()
        deadline = time.time() + timeout
        while self._watched and time.time() < deadline:
            self._watch(self.clock.now())
            time.sleep(0.1)
        for watched in list(self._watched.values()):
            watched.handle.kill()
        while self._watched and time.time() < deadline + 5:
            self._watch(self.clock.now())
            time.sleep(0.1)
        if self._registered:
            with self.store.workspace.transaction() as db:
                db.execute("UPDATE schedulers SET stopped_at=? WHERE id=?", (self.clock.now(), self.id))

    # -- one pass ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Heartbeat, take over orphans, watch runs, fire what is due, start what may start."""
        now = self.clock.now()
        self._heartbeat(now)
        self._adopt_orphans(now)
        self._watch(now)  # settle ended runs first: the overlap policy looks at them
        for schedule in self._schedules():
            try:
                self._fire_due(schedule, now)
            except MlpipeError as error:  # e.g. a cron made invalid by a tzdata change
                log.error("schedule %s: %s", schedule.name, error)
        if not self._stopping:
            self._dispatch(now)

    def _schedules(self) -> list[Schedule]:
        rows = self.store.workspace.query("SELECT * FROM schedules WHERE paused=0 ORDER BY id")
        return [_schedule(r) for r in rows]

    def _heartbeat(self, now: float) -> None:
        if now - self._last_heartbeat < HEARTBEAT_SECONDS and self._registered:
            return
        with self.store.workspace.transaction() as db:
            db.execute(
                "INSERT INTO schedulers (id, host, pid, started_at, heartbeat_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET heartbeat_at=excluded.heartbeat_at",
                (self.id, self.host, os.getpid(), now, now),
            )
        self._registered = True
        self._last_heartbeat = now

    # -- deciding fire times --------------------------------------------------------------
    def _fire_due(self, schedule: Schedule, now: float) -> None:
        with self.store.workspace.transaction() as db:
            row = db.execute("SELECT * FROM schedules WHERE id=? AND paused=0",
                             (schedule.id,)).fetchone()
            if row is None:
                return
            current = _schedule(row)  # re-read: another scheduler may have moved the cursor
            if current.kind == DATASET:
                latest = db.execute("SELECT MAX(version) FROM datasets WHERE name=?",
                                    (current.dataset,)).fetchone()[0] or 0
                if latest <= (current.dataset_seen or 0):
                    return
                # versions registered between two looks are folded into the newest one
                folded = latest - (current.dataset_seen or 0) - 1
                db.execute("UPDATE schedules SET dataset_seen=?, missed_total=missed_total+? "
                           "WHERE id=?", (latest, folded, current.id))
                self._insert_firing(db, current, f"{current.dataset}@v{latest}", now, False,
                                    latest, now)
                return
            times = current.fire_times()
            assert times is not None
            plan = plan_due(times, current.cursor, now, current.missed)
            if plan.cursor == current.cursor:
                return
            db.execute("UPDATE schedules SET cursor=?, missed_total=missed_total+? WHERE id=?",
                       (plan.cursor, plan.missed, current.id))
            if plan.missed:
                what = "folded into one late run" if current.missed == RUN_ONCE else "skipped"
                log.warning("schedule %s: %d missed fire time(s) %s (missed policy %s)",
                            current.name, plan.missed, what, current.missed)
            if plan.fire is not None:
                self._insert_firing(db, current, iso(plan.fire), plan.fire, plan.late, None, now)

    def _insert_firing(self, db: Any, schedule: Schedule, key: str, fire_time: float,
                       late: bool, dataset_version: int | None, now: float) -> None:
        active = db.execute(
            f"SELECT fire_key FROM firings WHERE schedule_id=? AND status IN ({_marks(ACTIVE)})",
            (schedule.id, *ACTIVE),
        ).fetchone()
        status, error = PENDING, None
        if active is not None and schedule.overlap == SKIP:
            status, error = SKIPPED, f"firing {active['fire_key']} was still active (overlap policy skip)"
        inserted = db.execute(
            "INSERT OR IGNORE INTO firings (schedule_id, fire_key, fire_time, status, late, "
            "dataset_version, error, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (schedule.id, key, fire_time, status, int(late), dataset_version, error, now, now),
        ).rowcount
        if inserted:
            log.info("schedule %s: fire time %s%s -> %s%s", schedule.name, key,
                     " (late, run once)" if late else "", status, f": {error}" if error else "")

    # -- starting runs ----------------------------------------------------------------------
    def _dispatch(self, now: float) -> None:
        rows = self.store.workspace.query(
            "SELECT * FROM firings WHERE status=? OR (status=? AND next_attempt_at<=?) "
            "ORDER BY fire_time, created_at",
            (PENDING, RETRY_WAIT, now),
        )
        for row in rows:
            self._try_start(firing_from_row(row), now)

    def _try_start(self, firing: Firing, now: float) -> None:
        schedule_row = self.store.workspace.query("SELECT * FROM schedules WHERE id=?",
                                                  (firing.schedule_id,))
        if not schedule_row:
            self._finish(firing, CANCELED, "schedule deleted", now, expect=firing.status)
            return
        schedule = _schedule(schedule_row[0])
        if schedule.paused or self._blocked(firing, schedule):
            return  # a paused schedule holds its pending firings and retries too
        try:
            prepared = prepare_run(
                self.store, schedule.pipeline, schedule.version, schedule.params,
                {schedule.dataset: firing.dataset_version}
                if schedule.dataset and firing.dataset_version else None,
            )
        except MlpipeError as error:
            self._finish(firing, FAILED, f"could not start: {error}", now, expect=firing.status)
            log.error("schedule %s firing %s could not start: %s", schedule.name,
                      firing.fire_key, error)
            return
        attempt = firing.attempt + 1
        deadline = now + schedule.timeout if schedule.timeout else None
        with self.store.workspace.transaction() as db:
            if self._blocked(firing, schedule, db):
                return
            claimed = db.execute(
                "UPDATE firings SET status=?, owner=?, attempt=?, run_id=?, run_ids=?, pid=NULL, "
                "deadline=?, next_attempt_at=NULL, updated_at=? WHERE schedule_id=? AND "
                "fire_key=? AND status=? AND attempt=?",
                (RUNNING, self.id, attempt, prepared.run_id,
                 json.dumps([*firing.run_ids, prepared.run_id]), deadline, now,
                 firing.schedule_id, firing.fire_key, firing.status, firing.attempt),
            ).rowcount
        if not claimed:
            return  # another scheduler started it first
        handle = self.launcher.launch(self.store, prepared)
        with self.store.workspace.transaction() as db:
            db.execute("UPDATE firings SET pid=? WHERE schedule_id=? AND fire_key=?",
                       (handle.pid, firing.schedule_id, firing.fire_key))
        started = self._reload(firing)
        self._watched[(firing.schedule_id, firing.fire_key)] = _Watched(started, handle)
        log.info("schedule %s firing %s: attempt %d started run %s (%s)", schedule.name,
                 firing.fire_key, attempt, prepared.run_id, prepared.published.ref)

    def _blocked(self, firing: Firing, schedule: Schedule, db: Any = None) -> bool:
        """Whether another firing of the schedule must go first: one running or waiting to
        retry, or an earlier pending one (overlap policy queue; under skip there is none)."""
        sql = ("SELECT 1 FROM firings WHERE schedule_id=? AND fire_key<>? AND (status IN (?, ?) "
               "OR (status=? AND (fire_time<? OR (fire_time=? AND created_at<?)))) LIMIT 1")
        args = (schedule.id, firing.fire_key, RUNNING, RETRY_WAIT, PENDING,
                firing.fire_time, firing.fire_time, firing.created_at)
        rows = db.execute(sql, args).fetchall() if db is not None else self.store.workspace.query(sql, args)
        return bool(rows)

    # -- watching runs ----------------------------------------------------------------------
    def _watch(self, now: float) -> None:
        for key, watched in list(self._watched.items()):
            code = watched.handle.poll()
            if code is None:
                deadline = watched.firing.deadline
                if deadline is not None and now > deadline and watched.terminated_at is None:
                    log.warning("firing %s: run %s timed out; stopping it", watched.firing.fire_key,
                                watched.firing.run_id)
                    watched.timed_out = True
                    watched.terminated_at = time.time()
                    watched.handle.terminate()
                elif (watched.terminated_at is not None
                      and time.time() - watched.terminated_at > KILL_GRACE_SECONDS):
                    watched.handle.kill()
                continue
            del self._watched[key]
            self._settle(watched, code, now)

    def _settle(self, watched: _Watched, code: int, now: float) -> None:
        firing = watched.firing
        row = self.store.workspace.query("SELECT * FROM schedules WHERE id=?", (firing.schedule_id,))
        schedule = _schedule(row[0]) if row else None
        name = schedule.name if schedule else f"#{firing.schedule_id} (deleted)"
        if code == EXIT_OK:
            self._finish(firing, SUCCEEDED, None, now)
            log.info("schedule %s firing %s: run %s succeeded", name, firing.fire_key, firing.run_id)
            return
        if (self._stopping and not watched.timed_out) or code == LOST:
            # interrupted with its scheduler: start it again later, as the same attempt
            self._finish(firing, PENDING, "interrupted: the scheduler stopped", now,
                         attempt=firing.attempt - 1)
            log.info("schedule %s firing %s: run %s interrupted; it starts again later",
                     name, firing.fire_key, firing.run_id)
            return
        if code == EXIT_CANCELED and not watched.timed_out:
            self._finish(firing, CANCELED, f"run {firing.run_id} was canceled", now)
            return
        if watched.timed_out:
            error = f"run {firing.run_id} timed out after {schedule.timeout if schedule else '?'} s"
        else:
            error = self._run_error(firing)
        retries_left = schedule is not None and firing.attempt <= schedule.max_retries
        if code != EXIT_USAGE and retries_left and schedule is not None:
            delay = retry_delay(firing.attempt, schedule.retry_backoff)
            self._finish(firing, RETRY_WAIT, error, now, next_attempt_at=now + delay)
            log.warning("schedule %s firing %s: attempt %d failed (%s); retry in %.0f s",
                        name, firing.fire_key, firing.attempt, error.splitlines()[0], delay)
            return
        self._finish(firing, FAILED, error, now)
        log.error("schedule %s firing %s failed: %s", name, firing.fire_key, error.splitlines()[0])

    def _run_error(self, firing: Firing) -> str:
        if firing.run_id:
            try:
                record = self.store.runs.get_run(firing.run_id)
            except NotFoundError:
                launch_log = self.store.workspace.run_dir(firing.run_id) / LAUNCH_LOG
                text = launch_log.read_text(errors="replace").strip() if launch_log.exists() else ""
                return f"run {firing.run_id} did not start: {text[-500:] or 'no output'}"
            return f"run {firing.run_id} {record.status.value}: {record.error or ''}".strip()
        return "failed"

    def _finish(self, firing: Firing, status: str, error: str | None, now: float,
                expect: str = RUNNING, attempt: int | None = None,
                next_attempt_at: float | None = None) -> None:
        with self.store.workspace.transaction() as db:
            db.execute(
                "UPDATE firings SET status=?, error=?, updated_at=?, attempt=?, "
                "next_attempt_at=?, pid=CASE WHEN ?=? THEN pid ELSE NULL END "
                "WHERE schedule_id=? AND fire_key=? AND status=?",
                (status, error, now, firing.attempt if attempt is None else attempt,
                 next_attempt_at, status, SUCCEEDED, firing.schedule_id, firing.fire_key, expect),
            )

    def _reload(self, firing: Firing) -> Firing:
        rows = self.store.workspace.query(
            "SELECT * FROM firings WHERE schedule_id=? AND fire_key=?",
            (firing.schedule_id, firing.fire_key))
        return firing_from_row(rows[0])

    # -- orphans ----------------------------------------------------------------------------
    def _adopt_orphans(self, now: float) -> None:
        rows = self.store.workspace.query(
            "SELECT f.*, s.host AS owner_host, s.pid AS owner_pid, s.heartbeat_at, s.stopped_at "
            "FROM firings f LEFT JOIN schedulers s ON s.id = f.owner "
            "WHERE f.status=? AND (f.owner IS NULL OR f.owner<>?)",
            (RUNNING, self.id),
        )
        for row in rows:
            if self._owner_alive(row, now):
                continue
            firing = firing_from_row(row)
            with self.store.workspace.transaction() as db:
                taken = db.execute(
                    "UPDATE firings SET owner=?, updated_at=? WHERE schedule_id=? AND fire_key=? "
                    "AND status=? AND owner IS ?",
                    (self.id, now, firing.schedule_id, firing.fire_key, RUNNING, firing.owner),
                ).rowcount
            if not taken:
                continue
            adopted = self._reload(firing)
            handle = self.launcher.adopt(self.store, adopted.pid, adopted.run_id or "")
            self._watched[(firing.schedule_id, firing.fire_key)] = _Watched(adopted, handle, adopted=True)
            log.warning("firing %s: its scheduler %s is gone; watching run %s (pid %s)",
                        firing.fire_key, firing.owner, firing.run_id, firing.pid)

    def _owner_alive(self, row: Any, now: float) -> bool:
        if row["owner_host"] is None or row["stopped_at"] is not None:
            return False
        if row["owner_host"] == self.host and not process_alive(row["owner_pid"]):
            return False
        # a live process (or another host): alive while it heartbeats
        return bool(now - row["heartbeat_at"] <= self.lease_seconds)


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in values)


__all__ = ["Clock", "RunHandle", "RunLauncher", "Scheduler", "SubprocessLauncher", "SystemClock"]
