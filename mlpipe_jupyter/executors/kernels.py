"""Warm kernels: start each step's fresh kernel before the step needs it.

Kernel start-up (~0.6 s, more under load) dominates a short step. A ``KernelPool`` keeps
a few kernels starting or started ahead of the steps that will use them, each in its own
thread with its own event loop (jupyter_client's async objects belong to the loop that made
them, so a kernel is started, used and shut down by one thread). Every kernel runs exactly
one step and is then shut down: steps never share interpreter state.

Nothing outlives its owner. Each process keeps its kernels' files (connection files, which
hold the kernel's HMAC key, and IPC sockets) in one private folder of its own,
``$TMPDIR/mlpipe-ipc-<pid>-<start time>-*``. A kernel's files go when it is shut down,
however its step ended; at the process's exit every kernel still alive is killed and the
folder removed. A process killed outright (``kill -9``) cannot do that: the next process
that starts kernels on the host (``reap_orphans``) kills the kernels whose connection file
is in a dead owner's folder, with their process groups, and removes the folder.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_jupyter.errors import ExecutorError
from mlpipe_jupyter.processes import process_alive, stat_fields

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

_START_ATTEMPTS = 3  # concurrent starts occasionally collide (ZMQ address already in use)


@dataclass
class WarmKernel:
    """A started kernel with a connected client, owned by the thread that started it."""

    loop: asyncio.AbstractEventLoop
    manager: Any  # jupyter_client AsyncKernelManager
    client: Any  # its AsyncKernelClient, channels started, kernel ready
    # why the kernel was started the usual way instead of forked from the kernel template
    # (fork_provisioner); the step log says it
    note: str | None = None

    def _wait_for_exit(self, timeout: float = 5.0) -> bool:
        """Whether the kernel process has ended (waiting up to ``timeout`` for it)."""
        process = getattr(getattr(self.manager, "provisioner", None), "process", None)
        if process is None:
            return False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    async def _release(self) -> None:
        """For an ended kernel, all that jupyter_client's shutdown would still do: reap it
        and close its pipes, then its sockets and files. (The shutdown itself would first
        interrupt, kill and wait for the process that is gone: ~10 ms at every step's end.)"""
        await self.manager.provisioner.wait()
        await self.manager.cleanup_resources()

    def kill(self) -> None:
        """Kill the kernel process now, with what it started (its process group); safe
        from any thread (used for cancel, timeout and a closing worker)."""
        process = getattr(getattr(self.manager, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            _kill_group(process.pid)
            process.kill()

    def shutdown(self) -> None:
        """Stop the kernel, close its sockets and remove its files (in the owning thread)."""
        try:
            self.client.stop_channels()
            # killed and waited for here (Popen's wait polls every few ms, ForkedProcess's
            # wakes when the template reaps it): jupyter_client's shutdown polls every
            # 0.1 s, and the end of every run waits for its last kernel's
            self.kill()
            if self._wait_for_exit():
                self.loop.run_until_complete(self._release())
            else:
                self.loop.run_until_complete(self.manager.shutdown_kernel(now=True))
        except Exception:  # a kernel that already died has nothing left to shut down
            log.debug("kernel shutdown failed", exc_info=True)
            self.kill()
        finally:
            _forget(self)
            _remove_files(self.manager)
            self.loop.close()


# Set once this process has launched a kernel (its process is starting): work that competes
# with the launch for this process's CPU, such as importing papermill, waits for it.
kernel_launched = threading.Event()


# A step kernel keeps its input history in memory, as nbclient's kernels do (its
# ``ipython_hist_file``): ``In``, ``_i`` and ``%history`` work as usual, but no cell is
# committed to the user's IPython history database. The kernels of a fan-out, a sweep or a
# schedule all committing every cell to that one SQLite file meet "database is locked"
# (ipython/ipython#10753, #12202), fill the user's interactive history with step code, and
# pay ~2 ms a cell here for it.
IN_MEMORY_HISTORY = "--HistoryManager.hist_file=:memory:"


def _kernel_arguments(manager: Any) -> list[str]:
    """What a step kernel is started with beyond its kernel spec (IPython kernels only)."""
    return [IN_MEMORY_HISTORY] if manager.ipykernel else []


def start_kernel(kernel_name: str, cwd: Path, startup_timeout: float = 60,
                 env: dict[str, str] | None = None, fork: bool = False) -> WarmKernel:
    """Start a kernel in ``cwd`` and wait until it answers, in the calling thread.
    ``env``: variables added to the kernel's environment (a step's secrets), set when its
    process starts, so they are never in the notebook. ``fork``: fork it from the kernel
    template (``fork_provisioner``) when it can, else start it the usual way."""
    last_error: Exception | None = None
    for _ in range(_START_ATTEMPTS):
        with _start_in_flight():
            kernel = _start_attempt(kernel_name, cwd, startup_timeout, env, fork)
        if isinstance(kernel, WarmKernel):
            return kernel
        last_error = kernel
    raise ExecutorError(f"kernel {kernel_name!r} did not start: {last_error}")


def _start_attempt(kernel_name: str, cwd: Path, startup_timeout: float,
                   env: dict[str, str] | None, fork: bool) -> WarmKernel | Exception:
    """One try of ``start_kernel``: the kernel, or why it did not start (mostly transient:
    tried again). A process that begins to exit meanwhile stops it at its next step."""
    import asyncio  # here: a run that starts no kernel needs no event loop

    from mlpipe_jupyter.executors.kernel_template import fork_enabled

    AsyncKernelManager, use_fork_provisioner = kernel_modules()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # IPC sockets: no TCP port races between concurrent starts, and no plaintext-TCP
    # warning from ipykernel in every step log.
    # The connection file goes into the same private folder (not jupyter_client's
    # default, a tmp*.json in $TMPDIR), so one folder holds all of this process's
    # kernel files and names its owner.
    prefix = os.path.join(_ipc_dir(), f"k-{uuid.uuid4().hex[:12]}")
    manager = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=prefix,
                                 connection_file=f"{prefix}.json",
                                 kernel_spec_manager=kernel_spec_manager())
    kernel: WarmKernel | None = None
    try:
        if fork and fork_enabled():
            use_fork_provisioner(manager)
        extra: dict[str, Any] = {"extra_arguments": _kernel_arguments(manager)}
        if env:
            # what the kernel's process writes itself (a subprocess, a C library) bypasses
            # the step runner: it is masked on its way to this process's own output
            extra.update(env={**os.environ, **env}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
        loop.run_until_complete(manager.start_kernel(cwd=str(cwd), **extra))
        kernel_launched.set()
        if env:
            _forward_masked(manager, env.values())
        client = manager.client()
        kernel = WarmKernel(loop=loop, manager=manager, client=client,
                            note=getattr(manager.provisioner, "fallback_reason", None))
        _remember(kernel)
        _wait_for_sockets(manager, prefix, startup_timeout)
        _stop_if_exiting()
        client.start_channels()
        loop.run_until_complete(_wait_until_ready(client, manager, startup_timeout))
        return kernel
    except Exception as exc:
        log.debug("kernel start failed", exc_info=True)
        try:
            loop.run_until_complete(manager.shutdown_kernel(now=True))
        except Exception:
            pass
        if kernel is not None:
            kernel.kill()
            _forget(kernel)
        _remove_files(manager)
        loop.close()
        return exc
    except BaseException:  # interrupted (Ctrl-C) while starting: no kernel left behind
        if kernel is not None:
            kernel.kill()
            _forget(kernel)
        _remove_files(manager)
        raise


class _Exiting(RuntimeError):
    """This process began to exit: no kernel starts now (see ``_at_exit``)."""


@contextlib.contextmanager
def _start_in_flight() -> Iterator[None]:
    """Count a kernel start of this process while it runs, for ``_at_exit`` to wait for;
    none begins once the process exits."""
    global _starting, _starting_pid
    with _LIVE_LOCK:
        _stop_if_exiting()
        if _starting_pid != os.getpid():  # a fork's count starts anew
            _starting, _starting_pid = 0, os.getpid()
        _starting += 1
    try:
        yield
    finally:
        with _LIVE_LOCK:
            _starting -= 1
            _starts_done.notify_all()


def _stop_if_exiting() -> None:
    if _exiting_pid == os.getpid():
        # ``_at_exit`` has run (or is running): files made now, by a kernel still starting
        # in another thread, would outlive the process
        raise _Exiting("this process is exiting: no kernel starts now")


_IMPORT_LOCK = threading.Lock()
SOCKET_POLL_SECONDS = 0.002


def _wait_for_sockets(manager: Any, prefix: str, timeout: float) -> None:
    """Wait until the kernel has bound the IPC sockets a step needs first (shell, IOPub,
    control): a client that connects before that retries only after ZMQ's reconnect
    interval (0.1 s), and a forked kernel binds them ~20 ms after its launch. Returns
    early if the kernel ends; ``_wait_until_ready`` reports that."""
    info = manager.get_connection_info()
    paths = [f"{prefix}-{info[name]}" for name in ("shell_port", "iopub_port", "control_port")]
    process = getattr(manager.provisioner, "process", None)
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(path) for path in paths):
        if time.monotonic() > deadline or (process is not None and process.poll() is not None):
            return
        time.sleep(SOCKET_POLL_SECONDS)


async def _wait_until_ready(client: Any, manager: Any, timeout: float) -> None:
    """Wait until the kernel answers ``kernel_info`` on its shell channel with its IOPub
    channel connected: jupyter_client's ``wait_for_ready``, less its final wait for 0.2 s of
    silence on IOPub (on every kernel start, before the first cell can run). Leftover status
    messages do no harm: nbclient reads only the messages of the requests it sent."""
    deadline = time.monotonic() + timeout
    while True:
        client.kernel_info()
        try:
            reply = await client.shell_channel.get_msg(timeout=1)
        except queue.Empty:
            reply = None
        if reply is not None and reply["msg_type"] == "kernel_info_reply":
            try:  # the kernel said "busy" on IOPub before replying: connected when it arrives
                await client.iopub_channel.get_msg(timeout=0.2)
            except queue.Empty:
                pass  # not subscribed yet (a slow joiner): ask again
            else:
                handle = getattr(client, "_handle_kernel_info_reply", None)
                if handle is not None:  # protocol version adaptation, as jupyter_client does
                    handle(reply)
                return
        if not await manager.is_alive():
            raise RuntimeError("Kernel died before replying to kernel_info")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")


def kernel_modules() -> tuple[Any, Any]:
    """jupyter_client's kernel manager and the fork provisioner, imported by one thread at a
    time: threads entering jupyter_client's circular imports by different modules at once
    can get a half-imported module ("cannot import name 'AsyncKernelManager'")."""
    with _IMPORT_LOCK:
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_client.provisioning import KernelProvisionerFactory

        from mlpipe_jupyter.executors.fork_provisioner import use_fork_provisioner

        # a singleton made at first use, by scanning every package's entry points (~0.1 s),
        # without a lock: kernels starting together each scanned them
        KernelProvisionerFactory.instance()
    return AsyncKernelManager, use_fork_provisioner


def kernel_spec_manager() -> Any:
    """One KernelSpecManager for this process's kernels, its folders set up front.

    jupyter_client computes the default folders by importing IPython (for
    ``~/.ipython/kernels``): ~0.8 s of a runner's start-up, paid on the critical path of
    the first step of every run. The same folders, without IPython: Jupyter's kernel paths,
    then ``$IPYTHONDIR/kernels`` (``~/.ipython`` when unset)."""
    global _spec_manager
    with _IMPORT_LOCK:
        if _spec_manager is None:
            from jupyter_client.kernelspec import KernelSpecManager
            from jupyter_core.paths import jupyter_path

            ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(
                os.path.expanduser("~"), ".ipython")
            _spec_manager = KernelSpecManager(
                kernel_dirs=[*jupyter_path("kernels"), os.path.join(ipython_dir, "kernels")])
        return _spec_manager


_spec_manager: Any = None


def _forward_masked(manager: Any, values: Any) -> None:
    """Copy the kernel process's own output to this process's stdout, secrets masked."""
    from mlpipe_jupyter.executors.masking import Masker

    process = getattr(getattr(manager, "provisioner", None), "process", None)
    stream = getattr(process, "stdout", None)
    if stream is None:
        return
    masker = Masker(values)

    def forward() -> None:
        out = sys.__stdout__
        try:
            for line in iter(stream.readline, b""):
                if out is not None:
                    out.write(masker.text(line.decode("utf-8", "replace")))
                    out.flush()
        except (OSError, ValueError):
            pass

    threading.Thread(target=forward, daemon=True, name="mlpipe-kernel-output").start()


_IPC_DIR: str | None = None
_IPC_OWNER = 0  # the pid that made _IPC_DIR (a forked child makes its own)
_LIVE_LOCK = threading.Lock()
_LIVE: dict[int, WarmKernel] = {}  # this process's kernels, started and not shut down
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_SOCKET_NAME = len("/") + len("/k-0123456789ab-1")  # the folder's separator and a socket's name
_FOLDER = re.compile(r"^mlpipe-ipc-(\d+)-(\d+)-")


def _ipc_dir() -> str:
    """This process's private folder for its kernels' files (short: Unix socket paths are
    limited to ~100 characters). Made on first use, after reaping dead owners' folders."""
    global _IPC_DIR, _IPC_OWNER
    with _LIVE_LOCK:
        _stop_if_exiting()
        if _IPC_DIR is None or _IPC_OWNER != os.getpid() or not os.path.isdir(_IPC_DIR):
            if _IPC_OWNER != os.getpid():
                reap_orphans()
            pid = os.getpid()
            prefix = f"mlpipe-ipc-{pid}-{_start_time(pid)}-"
            base = tempfile.gettempdir()
            if len(base) + len(prefix) + 8 + _SOCKET_NAME > _SOCKET_PATH_MAX:
                base = "/tmp"  # a TMPDIR too long for socket paths: ipykernel could not bind
            _IPC_DIR = tempfile.mkdtemp(prefix=prefix, dir=base)
            _IPC_OWNER = pid
        return _IPC_DIR


def _start_time(pid: int) -> int:
    """When the process started (clock ticks since boot; 0 where /proc is missing): with the
    pid, it names one process, never a later one that reuses the pid."""
    fields = stat_fields(pid)
    try:
        return int(fields[19]) if fields else 0  # field 22 of proc(5): starttime
    except (IndexError, ValueError):
        return 0


def _owner_alive(pid: int, start_time: int) -> bool:
    """The process that made a folder still runs (a reused pid has another start time)."""
    return process_alive(pid) and _start_time(pid) == start_time


def _kill_group(pid: int) -> None:
    """SIGKILL a kernel's process group (a kernel leads a session of its own)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    except OSError:  # ended already
        pass


def _remember(kernel: WarmKernel) -> None:
    with _LIVE_LOCK:
        _LIVE[id(kernel)] = kernel


def _forget(kernel: WarmKernel) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(id(kernel), None)


def _remove_files(manager: Any) -> None:
    """The kernel's connection file and IPC sockets (jupyter_client's own clean-up, which
    ``shutdown_kernel`` skips when the kernel was dead already or the shutdown failed)."""
    try:
        manager.cleanup_connection_file()
        manager.cleanup_ipc_files()
    except Exception:
        log.debug("removing a kernel's files failed", exc_info=True)


def kill_all() -> None:
    """Kill every kernel this process started and has not shut down (a step running on one
    fails as a dead kernel); their threads still shut them down and remove their files."""
    with _LIVE_LOCK:
        kernels = list(_LIVE.values())
    for kernel in kernels:
        kernel.kill()


_exiting_pid = 0  # the pid whose ``_at_exit`` ran: a fork's own exit comes later
_starting = 0  # kernel starts in flight in the process ``_starting_pid``
_starting_pid = 0
_starts_done = threading.Condition(_LIVE_LOCK)
EXIT_WAIT_FOR_STARTS = 5.0  # longest the exit waits for a kernel start to stop


def _at_exit() -> None:
    """Last resort at interpreter exit: kill what is left and remove this process's folder
    (kernels are shut down properly before, by their pools; this catches the rest). From
    here on no folder is made (``_ipc_dir``): a step process that exits while its kernel
    is still starting in another thread leaves nothing behind."""
    global _exiting_pid
    with _LIVE_LOCK:
        _exiting_pid = os.getpid()
        # a kernel still starting in another thread (a step process told it is not needed)
        # stops at its next step, killing what it started: wait for that, so that nothing
        # writes into the folder once it is removed
        _starts_done.wait_for(lambda: _starting == 0 or _starting_pid != os.getpid(),
                              timeout=EXIT_WAIT_FOR_STARTS)
        kernels = list(_LIVE.values())
        _LIVE.clear()
        folder = _IPC_DIR if _IPC_OWNER == os.getpid() else None
    for kernel in kernels:
        kernel.kill()
        _remove_files(kernel.manager)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


atexit.register(_at_exit)  # at import: it runs after the pools' own atexit clean-up


def reap_orphans(tmpdir: str | None = None) -> int:
    """Clean up after processes that died without doing it (``kill -9``, a crash): for
    each of this user's ``mlpipe-ipc-*`` folders whose owner is gone, kill the kernels
    connected through it (with their process groups) and remove it. Returns how many
    folders were removed. Linux (``/proc``); elsewhere kernels exit with their parent and
    only the folders are removed."""
    bases = {tmpdir} if tmpdir else {tempfile.gettempdir(), "/tmp"}  # see _ipc_dir
    dead = []
    for base in bases:
        dead += _dead_folders(base)
    if not dead:
        return 0
    for pid in _pids_using(dead):
        _kill_group(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for path in dead:
        shutil.rmtree(path, ignore_errors=True)
    log.info("removed %d kernel folders of dead processes", len(dead))
    return len(dead)


def _dead_folders(base: str) -> list[str]:
    """The ``mlpipe-ipc-*`` folders in ``base`` of this user whose owner is gone."""
    try:
        names = os.listdir(base)
    except OSError:
        return []
    dead = []
    for name in names:
        found = _FOLDER.match(name)
        path = os.path.join(base, name)
        if found is None or int(found.group(1)) == os.getpid():
            continue
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not _owner_alive(int(found.group(1)), int(found.group(2))):
            dead.append(path)
    return dead


def _pids_using(folders: list[str]) -> list[int]:
    """Processes with an argument naming a connection file in one of ``folders`` (a
    kernel's ``-f FOLDER/k-*.json``)."""
    marks = tuple(os.fsencode(folder + os.sep) for folder in folders)
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
        except OSError:
            continue
        if any(arg.startswith(marks) and arg.endswith(b".json") for arg in args):
            pids.append(int(entry))
    return pids


Job = Any
# (what the slot started: a WarmKernel, or what the pool's ``start`` returns; the job; the
# start's error)
JobRunner = Callable[[Any, Job, Exception | None], None]


FORKED_STARTS_PER_CORE = 4


class KernelPool:
    """Runs jobs, each on a fresh kernel started ahead of time.

    ``reserve(n)`` says n more jobs are coming, so that up to ``max_warm`` kernels start
    now. ``submit(job)`` queues a job; the first warm kernel takes it. ``run_job`` is called
    in the kernel's thread with (kernel, job, None), or (None, job, error) when no kernel
    could be started; it must not raise.
    """

    def __init__(self, kernel_name: str, cwd: Path, run_job: JobRunner, max_warm: int,
                 fork: bool = False, start: Callable[[], Any] | None = None) -> None:
        self.kernel_name = kernel_name
        self.fork = fork  # kernels forked from the kernel template (start_kernel)
        # what a slot starts ahead: a kernel (``start_kernel``), or whatever ``start``
        # returns (a step process): anything with ``shutdown()``
        self.start = start or (lambda: start_kernel(self.kernel_name, self.cwd, fork=self.fork))
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
        # delay the one the next step needs. A forked kernel costs a fifth of a fresh one
        # (no interpreter start, no imports): a fan-out's kernels all start at once.
        cores = max(1, os.cpu_count() or 1)
        self._starting = threading.BoundedSemaphore(cores * FORKED_STARTS_PER_CORE
                                                    if fork else cores)

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
            kernel: Any = None
            error: Exception | None = None
            try:
                with self._starting:
                    kernel = self.start()
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
