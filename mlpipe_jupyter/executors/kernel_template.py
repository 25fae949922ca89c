"""The kernel template: a process that has imported ipykernel and IPython and does nothing
else, from which each new kernel is forked.

A kernel started the usual way spends most of its start-up importing (~0.7 s of CPU here);
a fork of a process that has done the imports skips that. The template keeps what a fork
needs to be safe and a kernel needs to be fresh:

* it runs no threads, opens no ZMQ context or kernel socket and never runs user code: it
  imports the kernel's modules (``PREIMPORTS``), then serves fork requests on a Unix socket
  in one thread, and refuses to fork if a thread appeared (a fork copies no threads, but
  copies their locks held);
* a request carries file descriptors only (stdin, stdout, stderr and a pipe); what the
  kernel gets — its command line, working folder and environment (a step's secrets among
  them) — is written by the requester into that pipe and read by the child alone, after the
  fork: the template never holds a step's environment;
* the child becomes a session leader (like ``start_new_session``), points fds 0-2 at the
  requester's, takes the command line, folder and environment, resets what the template set
  (signal handlers, ``sys.path[0]``, the cached temporary folder) and runs
  ``ipykernel.kernelapp`` as ``python -m ipykernel_launcher`` would; ``random`` is reseeded
  by Python at fork;
* the requester keeps its connection open while the kernel lives: the template reports the
  kernel's exit status on it, and kills the kernel (its process group) when the connection
  drops (the requester died). A kernel dies with the template (``PR_SET_PDEATHSIG`` and
  ipykernel's parent poller): nothing outlives its owner;
* a requester in another PID namespace (a docker lane's runner, outside the lane's
  container) signals its fork through the connection (``{"op": "signal"}``), and asks for
  the template's environment with its additions (``inherit_env`` in the pipe's spec)
  instead of sending its own.

The template is keyed on what its imports depend on (``template_key``): the interpreter, the
installed packages (the local executor's environment fingerprint), this file, and the
environment variables read at import time. It retires when the installed packages change
(checked before forking, and while idle), when its socket is removed, and after
``idle_seconds`` without kernels. The client side (starting the template on demand,
requesting forks) is ``template_client``; falling back to a normal start is
``fork_provisioner``.

The same server, started with the flavor ``STEP``, is the step template: it imports
``step_process`` (papermill, jupyter_client, the step runner) instead of the kernel's
modules, and its forks run ``step_process.main`` instead of ipykernel (see that module).
Its key also covers the package's sources (``template_client.package_identity``).

This module imports nothing but the standard library at module level: the template loads
it by file path, and the kernel template never imports the ``mlpipe_jupyter`` package
(whose modules a step imports itself, fresh, with its own environment).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

PROTOCOL = 1
ENV_CHECK_SECONDS = 2.0  # at most this often, the installed packages are re-read (~5 ms)
IDLE_CHECK_SECONDS = 5.0
MAX_REQUEST = 1 << 16

# What a started kernel imports beyond ``ipykernel.kernelapp`` (completion, tornado's
# queues, psutil): imported ahead too, so a fork does not import them. Each is optional
# (another ipykernel version may lack one).
PREIMPORTS = (
    "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger",
    "IPython.core.completerlib", "tornado.gen", "tornado.locks", "tornado.queues",
    "tornado.platform.asyncio", "psutil", "faulthandler",
)
# Step kernels run without the Jupyter debugger. Papermill never attaches one, and
# debugpy's import (with pydevd, which loads these modules too) is ~0.25 s of CPU: paid
# once per template locally, but once per step in a step's container. ``debugpy`` is
# hidden while ipykernel is imported, so ipykernel finds it missing and starts no
# debugger; a step's own ``import debugpy`` still works. MLPIPE_KERNEL_DEBUGGER=1 keeps it.
DEBUGGER_VARIABLE = "MLPIPE_KERNEL_DEBUGGER"
DEBUGGER_PREIMPORTS = ("gzip", "http.server", "xmlrpc.client")

# Environment variables read while those modules are imported (or by the interpreter at
# start): a template serves only kernels whose environment has the same values. Other
# variables (a step's secrets, MLPIPE_*, PATH) are set in the kernel after the fork.
KEY_PREFIXES = ("PYTHON", "PYDEVD", "DEBUGPY", "IPY", "JUPYTER", "JPY_", "TRAITLETS", "LC_",
                "LD_", "CONDA", "VIRTUAL_ENV")
KEY_NAMES = ("LANG", "LANGUAGE", "HOME", "QT_API", "MPLBACKEND", "IDE_PROJECT_ROOTS",
             DEBUGGER_VARIABLE)
KEY_IGNORED = ("JPY_PARENT_PID", "JPY_SESSION_NAME")  # set per kernel
# What a template's forks become: kernels (``python -m ipykernel_launcher``), or step
# processes (``step_process``: papermill and the step runner, imported by the template).
KERNEL = "kernel"
STEP = "step"
STEP_MODULE = "mlpipe_jupyter.executors.step_process"
DISABLE_VARIABLE = "MLPIPE_FORK_KERNELS"  # "0": local kernels start the usual way
# Set ("1") in a process forked from its own template (a step container's runner,
# ``docker/kernel_host``): that template is the one to ask; it never starts another.
HOSTED_VARIABLE = "MLPIPE_TEMPLATE_HOSTED"
_SOCKET_PREFIX = {KERNEL: "kt", STEP: "st"}


def hosted() -> bool:
    """Whether this process was forked from a template of its own (``HOSTED_VARIABLE``):
    that template is the one to ask for kernels, and none is to be started."""
    return os.environ.get(HOSTED_VARIABLE) == "1"


def socket_name(flavor: str, key: str) -> str:
    """The file name of the socket of a template of ``flavor`` and ``key``, in the runtime
    folder."""
    return f"{_SOCKET_PREFIX[flavor]}-{key}.sock"


def fork_enabled() -> bool:
    """Whether local kernels are forked from the template (on unless MLPIPE_FORK_KERNELS=0;
    POSIX only)."""
    if not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return False
    return os.environ.get(DISABLE_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


def environment_fingerprint(path: Iterable[str] | None = None) -> str:
    """The Python and its installed packages (from distribution folder names, which carry
    versions: cheap, ~5 ms, and changes whenever pip installs or removes). The local
    executor's environment fingerprint (part of every local step's fingerprint)."""
    names: list[str] = []
    for entry in sys.path if path is None else path:
        if entry and os.path.isdir(entry):
            try:
                listing = os.listdir(entry)
            except OSError:
                continue
            names += [f for f in listing if f.endswith((".dist-info", ".egg-info"))]
    version = ".".join(map(str, sys.version_info[:3]))
    digest = hashlib.sha256("\n".join(sorted(names)).encode("utf-8")).hexdigest()
    return f"local:python{version}:{len(names)}pkgs:{digest[:16]}"


def key_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` a template depends on (see ``KEY_PREFIXES``)."""
    return {name: value for name, value in env.items()
            if (name.startswith(KEY_PREFIXES) or name in KEY_NAMES) and name not in KEY_IGNORED}


def template_key(python: str, fingerprint: str, env: Mapping[str, str], flavor: str = KERNEL,
                 extra: str = "") -> str:
    """What a template is for: one interpreter, its packages, this file, the variables,
    its flavor (``KERNEL`` or ``STEP``) and ``extra`` (what else its imports depend on)."""
    with open(__file__, "rb") as source:
        code = hashlib.sha256(source.read()).hexdigest()
    text = json.dumps([PROTOCOL, os.path.realpath(python), fingerprint, code,
                       sorted(key_environment(env).items()), flavor, extra])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


# -- the template process ------------------------------------------------------------------
class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.fds: list[int] = []
        self.child: int | None = None


class Template:
    """The fork server (one thread, one selector)."""

    def __init__(self, socket_path: str, key: str, idle_seconds: float,
                 flavor: str = KERNEL) -> None:
        self.socket_path = socket_path
        self.key = key
        self.flavor = flavor
        self.idle_seconds = idle_seconds
        self.fingerprint = environment_fingerprint()
        self.checked_at = time.monotonic()
        self.last_active = time.monotonic()
        self.retiring: str | None = None  # why no more forks are served
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, _Connection] = {}  # by fd
        # by pid; None for a child watched for no requester (``watch``)
        self.children: dict[int, _Connection | None] = {}
        self.listener: socket.socket | None = None
        self.inode = 0
        self.wake_r, self.wake_w = os.pipe()
        self.forks = 0
        self.started = time.time()

    # -- set-up --------------------------------------------------------------------------
    def bind(self) -> None:
        """Listen on ``socket_path``: bound under a temporary name, then renamed, so a
        client never connects to a template that is not ready."""
        temporary = f"{self.socket_path}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(temporary)
        os.chmod(temporary, 0o600)
        listener.listen(64)
        listener.setblocking(False)
        os.rename(temporary, self.socket_path)
        self.inode = os.stat(self.socket_path).st_ino
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, _raise_exit)

    def watch(self, pid: int) -> None:
        """Serve on while ``pid``, a child forked by this process outside any request, lives;
        its end comes to ``_ended`` as a fork's does."""
        self.children[pid] = None

    # -- the loop --------------------------------------------------------------------------
    def serve(self) -> None:
        try:
            while not self._should_exit():
                for key, _events in self.selector.select(timeout=IDLE_CHECK_SECONDS):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        self._read(self.connections[key.fd])
                self._reap()
                self._check_environment()
        finally:
            self._close_listener()

    def _should_exit(self) -> bool:
        if self.listener is not None and not self._socket_is_ours():
            self.retiring = self.retiring or "its socket was removed"
            self._close_listener()
        if self.children:
            return False
        if self.retiring is not None:
            return True
        return not self.connections and time.monotonic() - self.last_active > self.idle_seconds

    def _socket_is_ours(self) -> bool:
        try:
            return os.stat(self.socket_path).st_ino == self.inode
        except OSError:
            return False

    def _close_listener(self) -> None:
        if self.listener is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        if self._socket_is_ours():
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
        self.listener.close()
        self.listener = None

    def _check_environment(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.retiring or (not force and now - self.checked_at < ENV_CHECK_SECONDS):
            return
        self.checked_at = now
        if environment_fingerprint() != self.fingerprint:
            self.retiring = "the installed packages changed since the template started"
            self._close_listener()

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.wake_r, 512):
                pass

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        uid = int.from_bytes(creds[4:8], sys.byteorder)
        if uid != os.getuid():  # the folder is private; this is the second lock
            sock.close()
            return
        sock.setblocking(False)
        connection = _Connection(sock)
        self.connections[sock.fileno()] = connection
        self.selector.register(sock, selectors.EVENT_READ, "connection")
        self.last_active = time.monotonic()

    def _read(self, connection: _Connection) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(connection.sock, MAX_REQUEST, 8)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        connection.fds += fds
        if not data:  # the requester is gone: so is its kernel
            self._drop(connection)
            return
        connection.buffer += data
        while b"\n" in connection.buffer:
            line, connection.buffer = connection.buffer.split(b"\n", 1)
            try:
                request = json.loads(line)
            except ValueError:
                request = {}
            self._handle(connection, request)

    def _reply(self, connection: _Connection, message: Mapping[str, Any]) -> None:
        try:
            connection.sock.setblocking(True)
            connection.sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
            connection.sock.setblocking(False)
        except OSError:
            self._drop(connection)

    def _handle(self, connection: _Connection, request: Mapping[str, Any]) -> None:
        self.last_active = time.monotonic()
        fds, connection.fds = connection.fds, []
        try:
            op = request.get("op")
            if request.get("protocol") != PROTOCOL:
                self._reply(connection, {"error": f"protocol {request.get('protocol')} "
                                                  f"requested, the template speaks {PROTOCOL}"})
            elif op == "status":
                self._reply(connection, self.status())
            elif op == "stop":
                self.retiring = "asked to stop"
                self._close_listener()
                self._reply(connection, {"ok": True})
            elif op == "fork":
                self._fork(connection, request, fds)
                fds = []  # closed by _fork
            elif op == "signal":
                # for a requester that cannot signal its fork itself (it runs in another
                # PID namespace: a container's); no reply, as for os.kill
                if connection.child is not None:
                    with contextlib.suppress(OSError, ValueError, TypeError):
                        os.kill(connection.child, int(request.get("signum", 0)))
            else:
                self._reply(connection, {"error": f"unknown request {op!r}"})
        finally:
            for fd in fds:
                os.close(fd)

    def status(self) -> dict[str, Any]:
        """What a test or ``mlpipe`` may ask: who the template is and what it holds."""
        return {"pid": os.getpid(), "key": self.key, "protocol": PROTOCOL, "flavor": self.flavor,
                "fingerprint": self.fingerprint, "python": sys.executable,
                "threads": _thread_count(), "modules": sorted(sys.modules),
                "children": sorted(self.children), "forks": self.forks,
                "environ": sorted(os.environ), "started": self.started,
                "retiring": self.retiring}

    def _fork(self, connection: _Connection, request: Mapping[str, Any], fds: list[int]) -> None:
        try:
            if request.get("key") != self.key:
                raise _Refused(f"the template serves another environment ({self.key})")
            self._check_environment(force=True)
            if self.retiring:
                raise _Refused(f"the template is retiring: {self.retiring}")
            if connection.child is not None:
                raise _Refused("one kernel per connection")
            if len(fds) != 4:
                raise _Refused(f"a fork needs 4 file descriptors, got {len(fds)}")
            threads = _thread_count()
            if threads != 1:
                raise _Refused(f"the template runs {threads} threads: forking it is unsafe")
            parent = os.getpid()
            pid = os.fork()
        except (_Refused, OSError) as exc:
            for fd in fds:
                os.close(fd)
            self._reply(connection, {"error": str(exc)})
            return
        if pid == 0:  # the kernel: never returns
            _child(self, fds, parent)
        for fd in fds:
            os.close(fd)
        self.forks += 1
        connection.child = pid
        self.children[pid] = connection
        self._reply(connection, {"pid": pid, "template": os.getpid()})

    def _drop(self, connection: _Connection) -> None:
        fd = connection.sock.fileno()
        if connection.child is not None and connection.child in self.children:
            _kill_group(connection.child)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(connection.sock)
        self.connections.pop(fd, None)
        for extra in connection.fds:
            with contextlib.suppress(OSError):
                os.close(extra)
        connection.fds = []
        connection.sock.close()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._ended(pid, status)

    def _ended(self, pid: int, status: int) -> None:
        """A fork ended (reaped): its requester is told its exit status."""
        connection = self.children.pop(pid, None)
        if connection is None:
            return
        connection.child = None
        self.last_active = time.monotonic()
        report = self.exit_report(pid, os.waitstatus_to_exitcode(status))
        if connection.sock.fileno() >= 0:
            self._reply(connection, report)

    def exit_report(self, pid: int, code: int) -> dict[str, Any]:
        """What the requester of fork ``pid`` is told once it ended with ``code``."""
        return {"exit": code}

    # -- in the child, right after the fork --------------------------------------------------
    def prepare_child(self) -> None:
        """In a fork, once the template's part is closed: what a kind of template adds."""

    def close_in_child(self) -> None:
        """Close everything of the template's (the listener, the other requesters'
        connections, the selector, the wake-up pipe)."""
        signal.set_wakeup_fd(-1)
        for connection in list(self.connections.values()):
            connection.sock.close()
            for fd in connection.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.connections.clear()
        self.children.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.selector.close()
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Refused(Exception):
    pass


def _raise_exit(*_: Any) -> None:
    raise SystemExit(0)


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def first_to_kill_for_memory() -> None:
    """Make this process the first the kernel's OOM killer picks (``oom_score_adj`` 1000;
    raising it needs no privilege): in a container shared by its steps, a step's kernel
    or step process goes before the templates that serve the next steps."""
    with contextlib.suppress(OSError):
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as adjust:
            adjust.write("1000")


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the template ends (Linux; elsewhere ipykernel's parent
    poller does it, within a second)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the template ended before prctl
        os._exit(1)


def _child(template: Template, fds: list[int], parent: int) -> NoReturn:
    """Become the kernel the requester described; never returns."""

    def become() -> int:
        template.close_in_child()
        template.prepare_child()
        os.setsid()
        _die_with_parent(parent)
        reset_signals()
        stdin, stdout, stderr, spec_fd = fds
        for target, fd in enumerate((stdin, stdout, stderr)):
            os.dup2(fd, target)
        for fd in {stdin, stdout, stderr}:
            if fd > 2:
                os.close(fd)
        with os.fdopen(spec_fd, "rb") as spec_file:
            spec = json.loads(spec_file.read())
        # the requester's environment, or (``inherit_env``: a requester outside this
        # container) the template's with the requester's additions
        env = {**os.environ, **spec["env"]} if spec.get("inherit_env") else spec["env"]
        _take_environment(spec["cwd"], env)
        if template.flavor == STEP:
            return _run_step_process(spec["argv"])
        return _run_kernel(spec["argv"], env, parent)

    run_and_exit(become)


def reset_signals() -> None:
    """In a fork of the template: the signal handling of a new Python, not the template's."""
    for signum in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_and_exit(body: Callable[[], int]) -> NoReturn:
    """End this forked process with ``body``'s exit status, as a Python ending ``main``
    would: ``sys.exit`` honoured, an exception printed, atexit handlers run and the standard
    streams flushed; then ``os._exit``, so nothing of the template's (its ``finally``
    blocks, its listener) runs in the fork."""
    code = 1
    try:
        code = body()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
        finally:
            os._exit(code)


def _take_environment(cwd: str, env: dict[str, str]) -> None:
    """The requester's working folder and environment, in place of the template's."""
    import tempfile

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    tempfile.tempdir = None  # the template's, if something asked for it


def _run_step_process(argv: list[str]) -> int:
    """``step_process.main(ARGS)``, in this already-started Python (a step template's)."""
    import importlib

    return int(importlib.import_module(STEP_MODULE).main(argv))


def _run_kernel(argv: list[str], env: dict[str, str], parent: int) -> int:
    """What ``python -m ipykernel_launcher ARGS`` does, in this already-started Python."""
    # ``-m`` put the folder first on sys.path and ipykernel_launcher removes it again; the
    # template's first entry ('' from ``-c``) goes the same way. IPython adds '' back.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    import ipykernel_launcher

    args = list(argv)
    if env.get("JPY_PARENT_PID"):
        os.environ["JPY_PARENT_PID"] = str(parent)
        # ipykernel read JPY_PARENT_PID when the template imported it: say it again. The
        # template is this kernel's parent (it reaps it); it is the one to outlive.
        args.append(f"--IPKernelApp.parent_handle={parent}")
    sys.argv = [ipykernel_launcher.__file__, *args]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()
    return 0


# -- entry point ------------------------------------------------------------------------------
def preimport(flavor: str = KERNEL) -> list[str]:
    """Import what a kernel imports (or, for a step template, the step process's modules
    and what they load ahead: ``step_process.prepare_template``); the modules that failed
    (optional ones)."""
    import importlib

    if flavor == STEP:  # not optional: a failure here fails the template's start
        importlib.import_module(STEP_MODULE).prepare_template()
        return []
    with_debugger = os.environ.get(DEBUGGER_VARIABLE) == "1"
    failed = []
    with contextlib.nullcontext() if with_debugger else _debugpy_hidden():
        for name in PREIMPORTS + (DEBUGGER_PREIMPORTS if with_debugger else ()):
            try:
                importlib.import_module(name)
            except Exception:
                failed.append(name)
    return failed


@contextlib.contextmanager
def _debugpy_hidden() -> Iterator[None]:
    """``import debugpy`` fails inside (ipykernel then has no debugger) and works again
    after, unless it was imported before."""
    if "debugpy" in sys.modules:
        yield
        return
    sys.modules["debugpy"] = None  # type: ignore[assignment]  # how Python marks a module missing
    try:
        yield
    finally:
        if sys.modules.get("debugpy", "") is None:
            del sys.modules["debugpy"]


def main(argv: list[str]) -> int:
    """``SOCKET KEY IDLE_SECONDS [FLAVOR [PACKAGE_ROOT]]``: import, listen, serve until
    retired or idle. A step template imports ``mlpipe_jupyter`` from PACKAGE_ROOT (the
    folder holding the requester's package), so its forks run the requester's code."""
    socket_path, key, idle = argv[0], argv[1], float(argv[2])
    flavor = argv[3] if len(argv) > 3 else KERNEL
    if flavor == STEP and len(argv) > 4:
        sys.path.insert(0, argv[4])
    started = time.monotonic()
    failed = preimport(flavor)
    # What the imports made is shared with every fork until written. A collection in a
    # fork would walk (and so write, copying their pages) all of it: moved out of the
    # collector's reach, it stays shared (Python's advice for fork servers).
    gc.collect()
    gc.freeze()
    template = Template(socket_path, key, idle, flavor)
    template.bind()
    print(f"{flavor} template {os.getpid()} ready in {time.monotonic() - started:.2f} s on "
          f"{socket_path}" + (f" (not imported: {', '.join(failed)})" if failed else ""),
          flush=True)
    with contextlib.suppress(SystemExit):  # SIGTERM; serve closes its listener either way
        template.serve()
    print(f"{flavor} template {os.getpid()} stopped after {template.forks} forks: "
          f"{template.retiring or 'idle'}", flush=True)
    return 0
