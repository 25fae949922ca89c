"""Warm kernels on a Dask worker: the next step's kernel starts while this one runs.

A kernel start (about 1 s on a busy 2-core machine) is most of a short step's overhead.
The local executor hides it with a ``KernelPool``; a worker gets the same, one pool per
(kernel name, working folder) in the worker process:

- ``prewarm`` (sent to every worker by the executor's ``prepare``) starts one kernel before
  the run's first step arrives;
- ``run_with_kernel`` hands a step to a started kernel and asks for one more spare, so the
  step after it finds its kernel ready.

Kernels are forked from the kernel template of the worker's host and Python, as the local
executor's are (``fork_provisioner``: a per-user service, started on demand, stopped when
idle; the usual start when it cannot serve, said in the step's log). Each kernel still runs
exactly one step and is then shut down: steps never share interpreter state. A pool nobody used for ``IDLE_SECONDS`` is closed (its spare kernel shut
down). When the worker closes (SIGTERM, SIGINT, ``Client.retire_workers``...), the
``KernelsPlugin`` (registered by the executor) kills the kernels of running steps, so the
worker need not wait for them to finish, and shuts the spares down, their files removed.
A worker killed outright leaves its kernels' folder: its kernels exit on their own
(ipykernel watches its parent), and the next worker or kernel start on the host removes
the folder (``kernels.reap_orphans``).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlpipe_jupyter.executors.kernels import KernelPool, WarmKernel, kill_all, reap_orphans

log = logging.getLogger(__name__)

IDLE_SECONDS = 60.0
REAP_INTERVAL_SECONDS = 5.0

#: what a step does with its kernel (None, and the error, when no kernel could start)
KernelWork = Callable[[WarmKernel | None, Exception | None], None]


@dataclass
class _Job:
    work: KernelWork
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Pool:
    pool: KernelPool
    active: int = 0  # steps running or queued on it
    last_used: float = field(default_factory=time.monotonic)


_lock = threading.Lock()
_pools: dict[tuple[str, str], _Pool] = {}
_reaper: threading.Thread | None = None


def _run_job(kernel: WarmKernel | None, job: _Job, error: Exception | None) -> None:
    try:
        job.work(kernel, error)
    except Exception:  # the work reports its own failures; never kill the pool's thread
        log.exception("a step failed inside its kernel slot")
    finally:
        job.done.set()


def _worker_threads() -> int:
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except Exception:  # not on a worker
        return 1


def _pool(kernel_name: str, cwd: Path) -> _Pool:
    """The pool for these kernels, created on first use (call with ``_lock`` held)."""
    global _reaper
    key = (kernel_name, str(cwd))
    entry = _pools.get(key)
    if entry is None:
        # as many kernels as the worker runs steps at once, plus the spare
        entry = _Pool(KernelPool(kernel_name, cwd, _run_job, max_warm=_worker_threads() + 1,
                                 fork=True))
        _pools[key] = entry
    if _reaper is None:
        _reaper = threading.Thread(target=_reap, daemon=True, name="mlpipe-warm-reaper")
        _reaper.start()
    return entry


def prewarm(kernel_name: str, cwd: str) -> None:
    """Start a spare kernel now, unless one is started or starting already."""
    with _lock:
        entry = _pool(kernel_name, Path(cwd))
        entry.last_used = time.monotonic()
        entry.pool.keep_spare(1)


def run_with_kernel(kernel_name: str, cwd: Path, work: KernelWork) -> None:
    """Run ``work`` on a started kernel of this pool (waiting for one if needed), and
    make sure the next step finds a spare. Returns when ``work`` has returned."""
    job = _Job(work)
    with _lock:
        entry = _pool(kernel_name, cwd)
        entry.active += 1
        entry.pool.submit(job)
        entry.pool.keep_spare(1)
    try:
        job.done.wait()
    finally:
        with _lock:
            entry.active -= 1
            entry.last_used = time.monotonic()


def _reap() -> None:
    """Close pools idle for ``IDLE_SECONDS``: their spare kernels are not needed."""
    while True:
        time.sleep(REAP_INTERVAL_SECONDS)
        now = time.monotonic()
        with _lock:
            idle = [key for key, entry in _pools.items()
                    if entry.active == 0 and now - entry.last_used > IDLE_SECONDS]
            closing = [_pools.pop(key).pool for key in idle]
        for pool in closing:
            pool.close()


def close_all() -> None:
    """Shut every pool's spare kernels down (at the worker's exit)."""
    with _lock:
        closing = [entry.pool for entry in _pools.values()]
        _pools.clear()
    for pool in closing:
        pool.close()


atexit.register(close_all)

PLUGIN_NAME = "mlpipe-kernels"


def kernels_plugin() -> object:
    """A worker plugin that cleans up after dead workers when a worker starts, and stops
    this worker's kernels when it closes (registered once per scheduler: idempotent)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KernelsPlugin(WorkerPlugin):  # type: ignore[misc]
        idempotent = True

        def setup(self, worker: object) -> None:
            reap_orphans()

        async def teardown(self, worker: object) -> None:
            import asyncio

            kill_all()  # running steps end now (as a dead kernel) instead of at their end
            await asyncio.get_running_loop().run_in_executor(None, close_all)

    return KernelsPlugin()
