"""Warm kernels: start each step's fresh kernel before the step needs it.

Kernel start-up (~0.6 s, more under load) dominates a short step. A ``KernelPool`` keeps
a few kernels starting or started ahead of the steps that will use them, each in its own
thread with its own event loop (jupyter_client's async objects belong to the loop that made
them, so a kernel is started, used and shut down by one thread). Every kernel runs exactly
one step and is then shut down: steps never share interpreter state.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_START_ATTEMPTS = 3  # concurrent starts occasionally collide (ZMQ address already in use)


@dataclass
class WarmKernel:
    """A started kernel with a connected client, owned by the thread that started it."""

    loop: asyncio.AbstractEventLoop
    manager: Any  # jupyter_client AsyncKernelManager
    client: Any  # its AsyncKernelClient, channels started, kernel ready

    def kill(self) -> None:
        """Kill the kernel process now; safe from any thread (used for cancel and timeout)."""
        process = getattr(getattr(self.manager, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            process.kill()

    def shutdown(self) -> None:
        """Stop the kernel and close its sockets (in the owning thread)."""
        try:
            self.client.stop_channels()
            self.loop.run_until_complete(self.manager.shutdown_kernel(now=True))
        except Exception:  # a kernel that already died has nothing left to shut down
            log.debug("kernel shutdown failed", exc_info=True)
            self.kill()
        finally:
            self.loop.close()


def start_kernel(kernel_name: str, cwd: Path, startup_timeout: float = 60) -> WarmKernel:
    """Start a kernel in ``cwd`` and wait until it answers, in the calling thread."""
    from jupyter_client.manager import AsyncKernelManager

    last_error: Exception | None = None
    for _ in range(_START_ATTEMPTS):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        # IPC sockets: no TCP port races between concurrent starts, and no plaintext-TCP
        # warning from ipykernel in every step log.
        socket_prefix = os.path.join(_ipc_dir(), f"k-{uuid.uuid4().hex[:12]}")
        manager = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=socket_prefix)
        try:
            loop.run_until_complete(manager.start_kernel(cwd=str(cwd)))
            client = manager.client()
            client.start_channels()
            loop.run_until_complete(client.wait_for_ready(timeout=startup_timeout))
            return WarmKernel(loop=loop, manager=manager, client=client)
        except Exception as exc:  # retried: most start failures are transient
            last_error = exc
            log.debug("kernel start failed, retrying", exc_info=True)
            try:
                loop.run_until_complete(manager.shutdown_kernel(now=True))
            except Exception:
                pass
            loop.close()
    raise RuntimeError(f"kernel {kernel_name!r} did not start: {last_error}")


_IPC_DIR: str | None = None


def _ipc_dir() -> str:
    """A short private folder for IPC socket files (Unix socket paths are limited to ~100)."""
    global _IPC_DIR
    if _IPC_DIR is None or not os.path.isdir(_IPC_DIR):
        _IPC_DIR = tempfile.mkdtemp(prefix="mlpipe-ipc-")
        atexit.register(shutil.rmtree, _IPC_DIR, True)
    return _IPC_DIR


Job = Any
JobRunner = Callable[[WarmKernel | None, Job, Exception | None], None]


class KernelPool:
    """Runs jobs, each on a fresh kernel started ahead of time.

    ``reserve(n)`` says n more jobs are coming, so that up to ``max_warm`` kernels start
    now. ``submit(job)`` queues a job; the first warm kernel takes it. ``run_job`` is called
    in the kernel's thread with (kernel, job, None), or (None, job, error) when no kernel
    could be started; it must not raise.
    """

    def __init__(self, kernel_name: str, cwd: Path, run_job: JobRunner, max_warm: int) -> None:
        self.kernel_name = kernel_name
        self.cwd = cwd
        self.run_job = run_job
        self.max_warm = max(1, max_warm)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._to_start = 0  # kernels still to start for jobs announced or queued
        self._threads = 0
        self._waiting = 0  # threads with a kernel (or starting one) not yet given a job
        self._closing = False
        self._all_threads: list[threading.Thread] = []
        # Kernels starting at once beyond the core count only slow each other down, and
        # delay the one the next step needs.
        self._starting = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))

    def reserve(self, count: int) -> None:
        with self._lock:
            self._to_start += count
            self._spawn_locked()

    def keep_spare(self, count: int) -> None:
        """Have ``count`` kernels started (or starting) that no queued job will take."""
        with self._lock:
            spare = self._waiting + self._to_start - self._jobs.qsize()
            if spare < count:
                self._to_start += count - spare
                self._spawn_locked()

    def submit(self, job: Job) -> None:
        with self._lock:
            # a job nobody reserved a kernel for (a retry) brings its own
            if self._jobs.qsize() + 1 > self._waiting + self._to_start:
                self._to_start += 1
            self._spawn_locked()
        self._jobs.put(job)

    def take_queued(self) -> list[Job]:
        """Remove and return the jobs no kernel has taken yet (for cancel)."""
        taken: list[Job] = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return taken
            if job is not None:
                taken.append(job)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._to_start = 0
            threads = self._threads
        for _ in range(threads):
            self._jobs.put(None)
        for thread in self._all_threads:
            thread.join(timeout=30)

    def _spawn_locked(self) -> None:
        # A new thread claims its first kernel here, so bursts of calls never over-spawn.
        while not self._closing and self._to_start > 0 and self._threads < self.max_warm:
            self._to_start -= 1
            self._threads += 1
            self._waiting += 1
            thread = threading.Thread(target=self._slot, name="mlpipe-kernel", daemon=True)
            self._all_threads.append(thread)
            thread.start()

    def _slot(self) -> None:
        claimed = True
        while True:
            if not claimed:
                with self._lock:
                    if self._closing or self._to_start <= 0:
                        self._threads -= 1
                        return
                    self._to_start -= 1
                    self._waiting += 1
            claimed = False
            kernel: WarmKernel | None = None
            error: Exception | None = None
            try:
                with self._starting:
                    kernel = start_kernel(self.kernel_name, self.cwd)
            except Exception as exc:
                error = exc
            job = self._jobs.get()
            with self._lock:
                self._waiting -= 1
            if job is None:
                if kernel is not None:
                    kernel.shutdown()
                with self._lock:
                    self._threads -= 1
                return
            try:
                self.run_job(kernel, job, error)
            finally:
                if kernel is not None:
                    kernel.shutdown()
