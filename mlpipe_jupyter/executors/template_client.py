"""The client side of the fork templates (``kernel_template``): where a template lives,
starting it on demand, asking it for a fork, and the forked process as ``Popen`` shows one.

Two kinds of template, each a per-user service started on demand and stopped when idle:

* the **kernel template** (``KERNEL``) has imported ipykernel and IPython; its forks are
  kernels (``fork_kernel``, used by ``fork_provisioner``'s kernel provisioner);
* the **step template** (``STEP``) has imported the step runner, papermill and
  jupyter_client; its forks are step processes (``step_process``): each starts its kernel
  (a fork of the kernel template), waits for one step, runs it and exits.

Where: ``RUNTIME_DIR/kt-<key>.sock`` (kernel) and ``st-<key>.sock`` (step), where the
runtime dir is ``$MLPIPE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/mlpipe``, else
``$TMPDIR/mlpipe-run-<uid>`` (a folder only the user can enter). The CLI, a kernel running
``%mlpipe run`` and the Jupyter server's REST runs all use them: one template per user and
environment, whichever process runs the runner, instead of one per process (the kernel of a
notebook or the Jupyter server could not be forked themselves: they run threads and user
code; a template of their own would be the same child process, started more often).

This module imports no Jupyter package: a runner that hands its steps to step processes
never imports jupyter_client or papermill itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors import kernel_template
from mlpipe_jupyter.executors.kernel_template import (
    KERNEL,
    PROTOCOL,
    STEP,
    environment_fingerprint,
)
from mlpipe_jupyter.processes import process_alive

# ForkedProcess.wait looks again at least this often (it wakes at once on news)
WAIT_SLICE_SECONDS = 0.1
START_TIMEOUT = 30.0  # the template's imports take ~1 s; more under load
CONNECT_TIMEOUT = 10.0
IDLE_SECONDS = 900.0  # MLPIPE_KERNEL_TEMPLATE_IDLE overrides
RETRY_AFTER_FAILED_START = 30.0  # a template that would not start is not tried again sooner
FINGERPRINT_TTL = 2.0
# A template's lock and log files stay after it stops, for its next start with the same key.
# Every package install or source edit makes a new key, so a starting template removes the
# files of other keys whose template is not running and that were not touched for this long.
STALE_FILES_SECONDS = 24 * 3600.0

_BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_mlpipe_kernel_template', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = module\n"
    "spec.loader.exec_module(module)\n"
    "sys.exit(module.main(sys.argv[2:]))\n"
)


class TemplateUnavailable(Exception):
    """The template cannot fork this kernel; the message says why (for the step log)."""


# -- where the template lives ----------------------------------------------------------------
def runtime_dir() -> Path:
    """The user's private folder for template sockets (made 0700 if missing); raises
    TemplateUnavailable when it is not private."""
    explicit = os.environ.get("MLPIPE_RUNTIME_DIR")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if explicit:
        folder = Path(explicit)
    elif xdg and os.path.isdir(xdg):
        folder = Path(xdg) / "mlpipe"
    else:
        folder = Path(tempfile.gettempdir()) / f"mlpipe-run-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError as exc:
        raise TemplateUnavailable(f"no runtime folder for the kernel template: {exc}") from exc
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise TemplateUnavailable(f"the runtime folder {folder} is not private to this user")
    return folder


_fingerprint_lock = threading.Lock()
_fingerprint: tuple[float, str] | None = None


def current_fingerprint() -> str:
    """The environment fingerprint, re-read at most every FINGERPRINT_TTL seconds."""
    global _fingerprint
    with _fingerprint_lock:
        now = time.monotonic()
        if _fingerprint is None or now - _fingerprint[0] > FINGERPRINT_TTL:
            _fingerprint = (now, environment_fingerprint())
        return _fingerprint[1]


def template_env() -> dict[str, str]:
    """The template's own environment: this process's, less what is set per kernel. Never
    a kernel's: that may hold a step's secrets."""
    return {k: v for k, v in os.environ.items() if k not in kernel_template.KEY_IGNORED}


def check_kernel_env(env: Mapping[str, str]) -> None:
    """A kernel whose environment sets a variable read at import time (see
    ``kernel_template.KEY_PREFIXES``) otherwise than this process cannot be forked from
    this process's template (such a value may also be a secret: it never goes there)."""
    wanted = kernel_template.key_environment(env)
    have = kernel_template.key_environment(os.environ)
    differ = sorted(name for name in set(wanted) | set(have) if wanted.get(name) != have.get(name))
    if differ:
        raise TemplateUnavailable(f"the kernel's environment sets {', '.join(differ)}, which "
                                  "ipykernel reads when imported, otherwise than the runner")


class TemplateAddress:
    """One template (``flavor``: ``KERNEL`` or ``STEP``): its key, socket and lock file."""

    def __init__(self, python: str, flavor: str = KERNEL) -> None:
        self.python = python
        self.flavor = flavor
        # the step template imports this package: a changed source makes another template
        extra = package_identity() if flavor == STEP else ""
        self.key = kernel_template.template_key(python, current_fingerprint(), os.environ,
                                                flavor=flavor, extra=extra)
        folder = runtime_dir()
        self.socket_path = str(folder / kernel_template.socket_name(flavor, self.key))
        stem = self.socket_path[:-len(".sock")]
        self.lock_path = f"{stem}.lock"
        self.log_path = f"{stem}.log"
        if len(self.socket_path) > 100:
            raise TemplateUnavailable(f"the socket path {self.socket_path} is too long")

    @property
    def name(self) -> str:
        """What the messages call it: "the kernel template", "the step template"."""
        return f"the {self.flavor} template"


@dataclass(frozen=True)
class SocketAddress:
    """A template known by its socket alone, started by someone else (a docker lane's step
    template, in its container): never started from here, and its forks live in another
    PID namespace."""

    socket_path: str
    key: str
    flavor: str = STEP
    name: str = "the container's step template"


_identity_lock = threading.Lock()
_identity: tuple[float, str] | None = None


def package_identity() -> str:
    """This package's folder and the size and time of each of its source files (~2 ms),
    re-read at most every FINGERPRINT_TTL seconds: an editable install's edits reach the
    next step template, not a stale one."""
    global _identity
    with _identity_lock:
        now = time.monotonic()
        if _identity is None or now - _identity[0] > FINGERPRINT_TTL:
            folder = Path(__file__).resolve().parents[1]
            entries = [str(folder)]
            for path in sorted(folder.rglob("*.py")):
                with contextlib.suppress(OSError):
                    info = path.stat()
                    entries.append(f"{path.relative_to(folder)}:{info.st_size}:{info.st_mtime_ns}")
            _identity = (now, "\n".join(entries))
        return _identity[1]


_spawn_locks: dict[str, threading.Lock] = {}  # key -> one starter per template in this process
_spawn_locks_guard = threading.Lock()
_failed_starts: dict[str, tuple[float, str]] = {}  # key -> (when, why)
_spawned: list[subprocess.Popen[bytes]] = []


def connect(address: TemplateAddress, start: bool = True) -> socket.socket:
    """A connection to the template (started first when missing and ``start``)."""
    if kernel_template.hosted():
        start = False  # this process's template is the one it was forked from
    try:
        return _connect(address.socket_path)
    except OSError as exc:
        if not start:
            raise TemplateUnavailable(f"no {address.flavor} template is running "
                                      f"({exc.strerror})") from exc
    failed = _failed_starts.get(address.key)
    if failed and time.monotonic() - failed[0] < RETRY_AFTER_FAILED_START:
        raise TemplateUnavailable(failed[1])
    with _spawn_locks_guard:
        spawn_lock = _spawn_locks.setdefault(address.key, threading.Lock())
    with spawn_lock, open(address.lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter per template, across processes
        try:
            return _connect(address.socket_path)
        except OSError:
            pass
        try:
            return _start(address)
        except TemplateUnavailable as exc:
            _failed_starts[address.key] = (time.monotonic(), str(exc))
            raise


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def _start(address: TemplateAddress) -> socket.socket:
    """Start the template (a session of its own, outliving this process) and connect."""
    for process in list(_spawned):  # reap templates this process started that ended
        if process.poll() is not None:
            _spawned.remove(process)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address.socket_path)  # a dead template's
    remove_stale_files(Path(address.socket_path).parent, keep=address.key)
    idle = os.environ.get("MLPIPE_KERNEL_TEMPLATE_IDLE", str(IDLE_SECONDS))
    with open(address.log_path, "ab") as log:
        process = subprocess.Popen(
            [address.python, "-c", _BOOT, kernel_template.__file__, address.socket_path,
             address.key, idle, address.flavor, str(Path(__file__).resolve().parents[2])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/",
            env=template_env(), start_new_session=True, close_fds=True)
    _spawned.append(process)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            return _connect(address.socket_path)
        except OSError:
            pass
        if process.poll() is not None:
            raise TemplateUnavailable(f"{address.name} exited at start ({process.returncode}; "
                                      f"see {address.log_path})")
        time.sleep(0.02)
    raise TemplateUnavailable(f"{address.name} did not start in {START_TIMEOUT:g} s")


def request(sock: socket.socket, message: Mapping[str, Any], fds: list[int] | None = None,
            timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """Send one request line (with ``fds``) and read one reply line."""
    data = json.dumps({"protocol": PROTOCOL, **message}).encode("utf-8") + b"\n"
    sock.settimeout(timeout)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)
    return _read_line(sock)


def _read_line(sock: socket.socket) -> dict[str, Any]:
    buffer = b""
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise TemplateUnavailable("the template closed the connection")
        buffer += chunk
    reply: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
    return reply


def status(flavor: str = KERNEL) -> dict[str, Any]:
    """The running template's status (pid, modules, children, environment variable
    names), without starting one; raises TemplateUnavailable when none runs."""
    with connect(TemplateAddress(sys.executable, flavor), start=False) as sock:
        return request(sock, {"op": "status"})


def ensure_template(flavor: str = KERNEL) -> int:
    """Start this process's template now if it is not running (ahead of the first fork);
    its pid. Raises TemplateUnavailable."""
    address = TemplateAddress(sys.executable, flavor)
    with connect(address) as sock:
        reply = request(sock, {"op": "status"})
    if "pid" not in reply:
        raise TemplateUnavailable(f"{address.name} refused: {reply.get('error')}")
    return int(reply["pid"])


def stop_template(flavor: str = KERNEL) -> bool:
    """Ask the running template to stop (it ends when its forks have); False if none."""
    try:
        with connect(TemplateAddress(sys.executable, flavor), start=False) as sock:
            return bool(request(sock, {"op": "stop"}).get("ok"))
    except (TemplateUnavailable, OSError):
        return False


def stop_all(folder: Path | None = None) -> int:
    """Ask every template with a socket in ``folder`` (the runtime folder) to stop, whatever
    its environment; how many were asked."""
    asked = 0
    try:
        folder = folder or runtime_dir()
    except TemplateUnavailable:
        return 0
    for path in sorted(folder.glob("[ks]t-*.sock")):
        try:
            with _connect(str(path)) as sock:
                request(sock, {"op": "stop"}, timeout=5)
                asked += 1
        except (OSError, TemplateUnavailable, ValueError):
            continue
    return asked


def remove_stale_files(folder: Path, keep: str = "", older_than: float = STALE_FILES_SECONDS
                       ) -> list[str]:
    """Remove the socket, lock and log files of templates (other than key ``keep``) that
    are not running and whose files are all older than ``older_than`` seconds; the names
    removed. A key whose lock another process holds (starting that template) is left."""
    removed: list[str] = []
    now = time.time()
    keys: dict[str, list[Path]] = {}
    for path in folder.glob("[ks]t-*.*"):
        if path.suffix in (".sock", ".lock", ".log"):
            keys.setdefault(path.stem, []).append(path)
    for stem, paths in keys.items():
        if stem.split("-", 1)[-1] == keep or not _all_older(paths, now - older_than):
            continue
        socket_path = folder / f"{stem}.sock"
        if socket_path.exists() and _answers(socket_path):
            continue
        lock_path = folder / f"{stem}.lock"
        try:
            lock = open(lock_path, "a+b")  # noqa: SIM115  (held across the removal)
        except OSError:
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # being started right now
                continue
            for path in (socket_path, folder / f"{stem}.log", lock_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path.name)
    return removed


def _all_older(paths: list[Path], cutoff: float) -> bool:
    try:
        return all(path.lstat().st_mtime < cutoff for path in paths)
    except OSError:  # removed meanwhile
        return False


def _answers(socket_path: Path) -> bool:
    try:
        with _connect(str(socket_path)):
            return True
    except OSError:
        return False


# -- a forked kernel ----------------------------------------------------------------------------
class ForkedProcess:
    """A forked kernel or step process, as ``Popen`` would show it: ``pid``, ``poll``, ``wait``,
    ``send_signal``, ``kill``, ``terminate``, ``returncode`` and the pipes. Its exit status
    comes from the template (its parent); if the template is gone, from a pidfd."""

    def __init__(self, pid: int, sock: socket.socket, stdout: Any = None,
                 stderr: Any = None, stdin: Any = None, remote: bool = False) -> None:
        self.pid = pid  # in the template's PID namespace: with ``remote``, not ours
        self.remote = remote
        self.exit_report: dict[str, Any] = {}  # the template's whole exit message
        self.args: list[str] = []
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._sock: socket.socket | None = sock
        self._buffer = b""
        self._pidfd: int | None = None
        if not remote:
            with contextlib.suppress(OSError, AttributeError):
                self._pidfd = os.pidfd_open(pid)
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                self._check()
            return self.returncode

    def _check(self) -> None:
        if self._sock is not None:
            try:
                self._sock.setblocking(False)
                while True:
                    chunk = self._sock.recv(4096)
                    if not chunk:  # the template ended (it would have said the exit first)
                        self._close_socket()
                        break
                    self._buffer += chunk
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close_socket()
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if "exit" in message:
                        self.exit_report = message
                        self.returncode = int(message["exit"])
                        self._close_pidfd()
                        return
        if self._sock is None:  # no template to tell: ask the kernel itself
            if self.remote:  # its template (and so the fork) is gone
                self.returncode = -signal.SIGKILL
            elif self._pidfd is not None:
                if select.select([self._pidfd], [], [], 0)[0]:
                    self.returncode = -signal.SIGKILL
                    self._close_pidfd()
            elif not process_alive(self.pid):
                self.returncode = -signal.SIGKILL

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            slice_ = WAIT_SLICE_SECONDS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                slice_ = min(slice_, left)
            self._sleep_until_news(slice_)
        assert self.returncode is not None
        return self.returncode

    def _sleep_until_news(self, seconds: float) -> None:
        """Sleep until the template says something (the exit comes the moment it reaps
        the process: a step's end and a run's end wait for it) or, with no template to
        tell, until the process ends; at most ``seconds``."""
        watched = self._sock if self._sock is not None else self._pidfd
        if watched is None:
            time.sleep(min(seconds, 0.01))  # neither: poll() asks the kernel (os.kill)
            return
        try:
            select.select([watched], [], [], seconds)
        except (OSError, ValueError):  # closed by another thread meanwhile: poll again
            pass

    def send_signal(self, signum: int) -> None:
        if self.poll() is not None:
            return
        if self.remote:
            sock = self._sock
            if sock is not None:
                message = {"protocol": PROTOCOL, "op": "signal", "signum": int(signum)}
                with contextlib.suppress(OSError):
                    sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
            return
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signum)
            return
        os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Let the kernel go: closing the connection makes the template kill it if alive."""
        with self._lock:
            self._close_socket()
            self._close_pidfd()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close_socket()
            self._close_pidfd()


def _stream_fd(value: Any, default: int, close: list[int], pipes: dict[str, Any], name: str,
               reading: bool = False) -> int:
    """The fd a fork's stdin/stdout/stderr gets (``Popen``'s conventions: None inherits,
    PIPE makes a pipe whose other end becomes ``process.stdin``/``stdout``/``stderr``).
    ``reading``: the fork reads it (stdin)."""
    if value is None:
        return default
    if value == subprocess.PIPE:
        read, write = os.pipe()
        if reading:
            pipes[name] = os.fdopen(write, "wb", buffering=0)
            close.append(read)
            return read
        pipes[name] = os.fdopen(read, "rb")
        close.append(write)
        return write
    if value == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDONLY if reading else os.O_WRONLY)
        close.append(fd)
        return fd
    if isinstance(value, int):
        return value
    return int(value.fileno())


def fork_kernel(cmd: list[str], env: Mapping[str, str], cwd: str, stdout: Any = None,
                stderr: Any = None) -> ForkedProcess:
    """A kernel forked from the template of ``cmd``'s Python, running ``cmd``'s arguments;
    raises TemplateUnavailable (with the reason) when the template cannot do it."""
    python, args = _ipykernel_command(cmd)
    check_kernel_env(env)
    # as jupyter_client sets it for the kernels it starts
    kernel_env = {**env, "JPY_PARENT_PID": str(os.getpid())}
    process = fork_process(TemplateAddress(python), args, kernel_env, cwd,
                           stdout=stdout, stderr=stderr)
    process.args = list(cmd)
    return process


def fork_process(address: TemplateAddress | SocketAddress, args: Sequence[str],
                 env: Mapping[str, str], cwd: str, stdin: Any = None, stdout: Any = None,
                 stderr: Any = None, start: bool = True) -> ForkedProcess:
    """A fork of the template at ``address`` (started first when missing and ``start``,
    else TemplateUnavailable), given ``args``,
    the working folder ``cwd`` and the environment ``env``; its standard streams follow
    ``Popen``'s conventions (stdin None is /dev/null). Raises TemplateUnavailable (with
    the reason) when the template cannot do it.

    A ``SocketAddress`` template is in a container: it is never started from here, the
    fork keeps the template's (the container's) environment with ``env`` added, and it is
    signaled through the template, its PID being the container's."""
    remote = isinstance(address, SocketAddress)
    if remote:
        try:
            sock = _connect(address.socket_path)
        except OSError as exc:
            raise TemplateUnavailable(f"{address.name} does not answer ({exc})") from exc
    else:
        assert isinstance(address, TemplateAddress)
        sock = connect(address, start=start)
    close: list[int] = []
    pipes: dict[str, Any] = {}
    try:
        stdin_fd = _stream_fd(stdin if stdin is not None else subprocess.DEVNULL, 0, close,
                              pipes, "stdin", reading=True)
        out_fd = _stream_fd(stdout, 1, close, pipes, "stdout")
        err_fd = out_fd if stderr == subprocess.STDOUT else _stream_fd(
            stderr, 2, close, pipes, "stderr")
        spec_read, spec_write = os.pipe()
        close.append(spec_read)
        try:
            reply = request(sock, {"op": "fork", "key": address.key},
                            [stdin_fd, out_fd, err_fd, spec_read])
            if "pid" in reply:
                # the environment goes to the fork alone, never through the template
                spec = json.dumps({"argv": list(args), "cwd": cwd, "env": dict(env),
                                   "inherit_env": remote}).encode()
                with os.fdopen(spec_write, "wb") as spec_file:
                    spec_write = -1
                    spec_file.write(spec)
        finally:
            if spec_write >= 0:
                os.close(spec_write)
        if "pid" not in reply:
            raise TemplateUnavailable(f"{address.name} refused: {reply.get('error')}")
    except TemplateUnavailable:
        sock.close()
        for pipe in pipes.values():
            pipe.close()
        raise
    except OSError as exc:
        sock.close()
        for pipe in pipes.values():
            pipe.close()
        raise TemplateUnavailable(f"{address.name} failed: {exc}") from exc
    finally:
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
    return ForkedProcess(int(reply["pid"]), sock, pipes.get("stdout"), pipes.get("stderr"),
                         pipes.get("stdin"), remote=remote)


def _ipykernel_command(cmd: list[str]) -> tuple[str, list[str]]:
    """(python, kernel arguments) of ``python -m ipykernel_launcher ARGS`` in this Python;
    TemplateUnavailable for any other command."""
    if len(cmd) < 3 or cmd[1] != "-m" or cmd[2] not in ("ipykernel_launcher", "ipykernel"):
        raise TemplateUnavailable(f"the kernel spec does not start ipykernel ({' '.join(cmd[:3])})")
    python = cmd[0]
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        raise TemplateUnavailable(f"the kernel spec starts another Python ({python})")
    return python, list(cmd[3:])


