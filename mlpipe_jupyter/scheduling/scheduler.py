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
cancels cleanly), then SIGKILL of the run's process group after a grace period. A
schedule with a sweep starts one ``mlpipe run --sweep`` process per firing, and the
firing's ``run_id`` is the sweep's id: the process exits 0 when every member succeeded,
1 when some failed, 130 when canceled, like a run's.
"""

from __future__ import annotations

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
from mlpipe_jupyter.model.schedule_policies import RUN_ONCE, SKIP, plan_due, retry_delay
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.sweep import SweepSyntaxError
from mlpipe_jupyter.processes import process_alive
from mlpipe_jupyter.scheduling.schedules import (
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
    iso,
)
from mlpipe_jupyter.scheduling.triggering import (
    PreparedRun,
    describe_started,
    launch_log,
    prepare_run,
    start_run,
    started_status,
)
from mlpipe_jupyter.store import SchedulerLease, Store
from mlpipe_jupyter.store.schedules import Advance, DueCheck, NewFiring
from mlpipe_jupyter.store.sweeps import is_sweep_id

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
    """A run (or sweep) that is not our child: alive while its pid is, outcome read from
    the store."""

    def __init__(self, store: Store, pid: int | None, run_id: str) -> None:
        self.store, self.pid, self.run_id = store, pid, run_id

    def poll(self) -> int | None:
        if self.pid is not None and process_alive(self.pid):
            return None
        self.store.runs.mark_dead_runs()
        try:
            status = started_status(self.store, self.run_id)
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
            self.store.schedulers.mark_stopped(self.id, self.clock.now())

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
        return [Schedule.of(r) for r in self.store.schedules.unpaused()]

    def _heartbeat(self, now: float) -> None:
        if now - self._last_heartbeat < HEARTBEAT_SECONDS and self._registered:
            return
        self.store.schedulers.heartbeat(self.id, self.host, os.getpid(), now)
        self._registered = True
        self._last_heartbeat = now

    # -- deciding fire times --------------------------------------------------------------
    def _fire_due(self, schedule: Schedule, now: float) -> None:
        # the store re-reads the schedule and records the decision in one transaction:
        # another scheduler may have moved the cursor since it was listed
        fired = self.store.schedules.fire_due(schedule.id, now,
                                              lambda check: self._decide(check, now))
        if fired is not None and fired.firing is not None:
            firing = fired.firing
            log.info("schedule %s: fire time %s%s -> %s%s", schedule.name, firing.fire_key,
                     " (late, run once)" if firing.late else "", firing.status,
                     f": {firing.error}" if firing.error else "")

    def _decide(self, check: DueCheck, now: float) -> Advance | None:
        """What is due of the schedule as ``check`` read it; None when nothing is."""
        current = Schedule.of(check.schedule)
        if current.kind == DATASET:
            latest = check.latest_dataset_version()
            if latest <= (current.dataset_seen or 0):
                return None
            # versions registered between two looks are folded into the newest one
            folded = latest - (current.dataset_seen or 0) - 1
            return Advance(current.cursor, latest, folded, self._new_firing(
                check, f"{current.dataset}@v{latest}", now, False, latest))
        times = current.fire_times()
        assert times is not None
        plan = plan_due(times, current.cursor, now, current.missed)
        if plan.cursor == current.cursor:
            return None
        if plan.missed:
            what = "folded into one late run" if current.missed == RUN_ONCE else "skipped"
            log.warning("schedule %s: %d missed fire time(s) %s (missed policy %s)",
                        current.name, plan.missed, what, current.missed)
        firing = None
        if plan.fire is not None:
            firing = self._new_firing(check, iso(plan.fire), plan.fire, plan.late, None)
        return Advance(plan.cursor, current.dataset_seen, plan.missed, firing)

    @staticmethod
    def _new_firing(check: DueCheck, key: str, fire_time: float, late: bool,
                    dataset_version: int | None) -> NewFiring:
        """A firing to record: pending, or skipped while another is active (overlap skip)."""
        active = check.active_firing()
        if active is not None and check.schedule.overlap == SKIP:
            return NewFiring(key, fire_time, SKIPPED, late, dataset_version,
                             f"firing {active} was still active (overlap policy skip)")
        return NewFiring(key, fire_time, PENDING, late, dataset_version)

    # -- starting runs ----------------------------------------------------------------------
    def _dispatch(self, now: float) -> None:
        for firing in self.store.firings.startable(now):
            self._try_start(firing, now)

    def _try_start(self, firing: Firing, now: float) -> None:
        record = self.store.schedules.by_id(firing.schedule_id)
        if record is None:
            self._finish(firing, CANCELED, "schedule deleted", now, expect=firing.status)
            return
        schedule = Schedule.of(record)
        if schedule.paused or self.store.firings.blocked(firing):
            return  # a paused schedule holds its pending firings and retries too
        try:
            prepared = prepare_run(
                self.store, schedule.pipeline, schedule.version, schedule.params,
                {schedule.dataset: firing.dataset_version}
                if schedule.dataset and firing.dataset_version else None,
                schedule=schedule.name, sweep=schedule.sweep_spec(),
                yes=True,  # a sweep's size was confirmed when the schedule was created
            )
        except (MlpipeError, SweepSyntaxError) as error:
            self._finish(firing, FAILED, f"could not start: {error}", now, expect=firing.status)
            log.error("schedule %s firing %s could not start: %s", schedule.name,
                      firing.fire_key, error)
            return
        attempt = firing.attempt + 1
        deadline = now + schedule.timeout if schedule.timeout else None
        # blocked again, or another scheduler started it first: checked and claimed at once
        if not self.store.firings.claim(firing, self.id, attempt, prepared.run_id, deadline, now):
            return
        handle = self.launcher.launch(self.store, prepared)
        self.store.firings.set_pid(firing.schedule_id, firing.fire_key, handle.pid)
        started = self.store.firings.get(firing.schedule_id, firing.fire_key)
        self._watched[(firing.schedule_id, firing.fire_key)] = _Watched(started, handle)
        log.info("schedule %s firing %s: attempt %d started %s (%s)", schedule.name,
                 firing.fire_key, attempt, prepared.describe(), prepared.published.ref)

    # -- watching runs ----------------------------------------------------------------------
    def _watch(self, now: float) -> None:
        for key, watched in list(self._watched.items()):
            code = watched.handle.poll()
            if code is None:
                deadline = watched.firing.deadline
                if deadline is not None and now > deadline and watched.terminated_at is None:
                    log.warning("firing %s: %s timed out; stopping it", watched.firing.fire_key,
                                _started(watched.firing))
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
        record = self.store.schedules.by_id(firing.schedule_id)
        schedule = Schedule.of(record) if record else None
        name = schedule.name if schedule else f"#{firing.schedule_id} (deleted)"
        started = _started(firing)
        if code == EXIT_OK:
            self._finish(firing, SUCCEEDED, None, now)
            log.info("schedule %s firing %s: %s succeeded", name, firing.fire_key, started)
            return
        if (self._stopping and not watched.timed_out) or code == LOST:
            # interrupted with its scheduler: start it again later, as the same attempt
            self._finish(firing, PENDING, "interrupted: the scheduler stopped", now,
                         attempt=firing.attempt - 1)
            log.info("schedule %s firing %s: %s interrupted; it starts again later",
                     name, firing.fire_key, started)
            return
        if code == EXIT_CANCELED and not watched.timed_out:
            self._finish(firing, CANCELED, f"{started} was canceled", now)
            return
        if watched.timed_out:
            error = f"{started} timed out after {schedule.timeout if schedule else '?'} s"
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
        if not firing.run_id:
            return "failed"
        try:
            if is_sweep_id(firing.run_id):
                return _sweep_error(self.store, firing.run_id)
            record = self.store.runs.get_run(firing.run_id)
        except NotFoundError:
            path = launch_log(self.store.workspace, firing.run_id)
            text = path.read_text(errors="replace").strip() if path.exists() else ""
            return f"{_started(firing)} did not start: {text[-500:] or 'no output'}"
        return f"run {firing.run_id} {record.status.value}: {record.error or ''}".strip()

    def _finish(self, firing: Firing, status: str, error: str | None, now: float,
                expect: str = RUNNING, attempt: int | None = None,
                next_attempt_at: float | None = None) -> None:
        self.store.firings.finish(firing, status, error, now, expect=expect, attempt=attempt,
                                  next_attempt_at=next_attempt_at)

    # -- orphans ----------------------------------------------------------------------------
    def _adopt_orphans(self, now: float) -> None:
        for firing, lease in self.store.firings.running_elsewhere(self.id):
            if self._owner_alive(lease, now):
                continue
            if not self.store.firings.take_over(firing, self.id, now):
                continue
            adopted = self.store.firings.get(firing.schedule_id, firing.fire_key)
            handle = self.launcher.adopt(self.store, adopted.pid, adopted.run_id or "")
            self._watched[(firing.schedule_id, firing.fire_key)] = _Watched(adopted, handle, adopted=True)
            log.warning("firing %s: its scheduler %s is gone; watching %s (pid %s)",
                        firing.fire_key, firing.owner, _started(firing), firing.pid)

    def _owner_alive(self, lease: SchedulerLease | None, now: float) -> bool:
        if lease is None or lease.stopped_at is not None:
            return False
        if lease.host == self.host and not process_alive(lease.pid):
            return False
        # a live process (or another host): alive while it heartbeats
        return bool(now - lease.heartbeat_at <= self.lease_seconds)


def _started(firing: Firing) -> str:
    """``run ID`` or ``sweep ID``: what the firing started, for messages."""
    return describe_started(firing.run_id) if firing.run_id else "its run"


def _sweep_error(store: Store, sweep_id: str) -> str:
    """Why a sweep a firing started did not succeed: how many members failed or were
    canceled, and the first failed member's error."""
    store.runs.mark_dead_runs()
    record = store.sweeps.get(sweep_id)
    counts = record.counts()
    bad = [f"{counts[s]} {s}" for s in (RunStatus.FAILED.value, RunStatus.CANCELED.value)
           if counts.get(s)]
    text = (f"sweep {sweep_id} {record.status}: {', '.join(bad) or 'no member failed'} "
            f"of {len(record.members)} members")
    failed = next((m for m in record.members if m.status == RunStatus.FAILED.value), None)
    if failed is not None:
        try:
            error = store.runs.get_run(failed.run_id).error
        except NotFoundError:
            error = None
        if error:
            text += f"; run {failed.run_id}: {error}"
    return text


__all__ = ["Clock", "RunHandle", "RunLauncher", "Scheduler", "SubprocessLauncher", "SystemClock"]
