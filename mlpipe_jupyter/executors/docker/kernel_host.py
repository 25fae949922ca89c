"""A step container's first process: a kernel template whose first fork is the step runner
(or, in a lane, the lane's step template).

Nothing is warm in a fresh container. Its step runner (``in_container``) and the step's
kernel used to import ipykernel's stack each on their own: jupyter_client, ZMQ, tornado,
traitlets, IPython, ~0.5 s of CPU apiece (~1.7 s for the runner, papermill and the kernel
together). On two cores that CPU was most of what a docker step cost beyond a local one.

Here it is imported once. This process loads ``kernel_template`` by file (so it never
imports this package), imports what a kernel imports, and binds a kernel template's socket
in a private runtime folder, as the per-user template does on the host. Then it forks the
step runner from itself: the runner finds ipykernel's stack imported, adds papermill and
this package, and runs ``in_container.main`` with this process's arguments. The runner's
kernel is forked from this same template through the fork provisioner, like a local step's
kernel: the process it is forked from has only imported, never run a thread, a runner
module or user code. The step still gets its own new kernel process, in its own container.

The template serves the runner's fork requests until the runner ends, passes SIGTERM on
to it (``docker stop`` reaches this process through the tether), and exits with the
runner's exit status; a kernel dies with its template. Where the template cannot be set
up (an image whose Python lacks what it needs), this process becomes the plain command,
``python3 -m ...in_container ARGS`` (``os.execvp``), and the kernel starts the usual way.

A lane's container (``lanes.py``) runs ``--lane SOCKET``: the first fork is then the lane's
step template (``lane_server.main([SOCKET])``), whose step processes get their kernels
from this template in the same way, one step after another. A lane that cannot set up
the template exits with ``EXIT_NO_TEMPLATE``: its steps get containers of their own.

Usage: ``python3 -c BOOT THIS_FILE ARGS`` (``host_command``), ARGS as ``in_container``'s
(or ``--lane SOCKET``). Standard library only at module level: it runs before anything
else is imported.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

RUNNER_MODULE = "mlpipe_jupyter.executors.docker.in_container"
# ``--lane SOCKET``: the first fork is a lane's step template instead (``lane_server``)
LANE_FLAG = "--lane"
LANE_MODULE = "mlpipe_jupyter.executors.docker.lane_server"
EXIT_NO_TEMPLATE = 3  # a lane whose kernel template could not be set up
LANE_VARIABLE = "MLPIPE_LANE"  # "1" in a lane's container (``lanes.py`` sets it)
HOST_FILE_NAME = "kernel_host.py"
# ``python3 -c BOOT PATH ARGS``: loads this file by path (``-m`` would import the package
# first, and every kernel forked from here would inherit it).
BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_mlpipe_kernel_host', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = module\n"
    "spec.loader.exec_module(module)\n"
    "sys.exit(module.main(sys.argv[2:]))\n"
)


def host_command(host_file: str, arguments: list[str]) -> list[str]:
    """The command that runs ``in_container ARGUMENTS`` under a kernel host, this file
    being at ``host_file`` in the container."""
    return ["python3", "-c", BOOT, host_file, *arguments]


def _load_kernel_template() -> ModuleType:
    """``kernel_template``, loaded from its file beside this package's ``executors``."""
    path = Path(__file__).resolve().parents[1] / "kernel_template.py"
    spec = importlib.util.spec_from_file_location("_mlpipe_kernel_template", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _plain_runner(argv: list[str], why: BaseException) -> NoReturn:
    """Become ``python3 -m in_container ARGV``: the kernel will start the usual way."""
    sys.stderr.write(f"mlpipe: no kernel template in this container ({type(why).__name__}: "
                     f"{why}); the kernel starts the usual way\n")
    sys.stderr.flush()
    os.execvp(sys.executable, [sys.executable, "-m", RUNNER_MODULE, *argv])


def main(argv: list[str]) -> int:
    lane = argv[:1] == [LANE_FLAG]
    try:
        kernel_template = _load_kernel_template()
        template = _host_template(kernel_template)
        runner = os.fork()
    except Exception as exc:  # an older Python (no send_fds, ...), a broken install
        if lane:  # the runner takes the step to a container of its own, which falls back
            sys.stderr.write(f"mlpipe: this container cannot serve as a lane: no kernel "
                             f"template ({type(exc).__name__}: {exc})\n")
            return EXIT_NO_TEMPLATE
        _plain_runner(argv, exc)
    if runner == 0:  # never returns
        _run_runner(kernel_template, template, LANE_MODULE if lane else RUNNER_MODULE,
                    argv[1:] if lane else argv)
    template.runner = runner
    template.watch(runner)  # the template serves while the runner lives
    try:
        template.serve()
    finally:
        # its private folder (in a container's /tmp it would go with the container; run
        # elsewhere it would stay)
        shutil.rmtree(os.path.dirname(template.socket_path), ignore_errors=True)
    return int(template.runner_exit)


def _host_template(kernel_template: ModuleType) -> Any:
    """The bound template, its imports done; this process's environment says where it is
    (what its forks inherit)."""
    folder = tempfile.mkdtemp(prefix="mlpipe-host-")  # private (0700), the container's own
    try:
        return _bound_template(kernel_template, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _bound_template(kernel_template: ModuleType, folder: str) -> Any:
    os.environ["MLPIPE_RUNTIME_DIR"] = folder
    os.environ[kernel_template.HOSTED_VARIABLE] = "1"
    with _stderr_kept_unless_failing() as kept:
        failed = kernel_template.preimport(kernel_template.KERNEL)
        if "ipykernel.kernelapp" in failed:
            kept.failed = True
            raise ImportError("ipykernel is not importable")
    # the key from the environment as the imports left it (debugpy sets PYDEVD_*): the
    # runner, forked after them, computes it from that same environment
    key = kernel_template.template_key(sys.executable, kernel_template.environment_fingerprint(),
                                       os.environ, kernel_template.KERNEL)
    socket_path = os.path.join(folder, kernel_template.socket_name(kernel_template.KERNEL, key))
    gc.collect()
    gc.freeze()  # shared with the forks, as in the template's main
    template = _hosting_class(kernel_template)(socket_path, key, idle_seconds=float("inf"),
                                               flavor=kernel_template.KERNEL)
    template.bind()
    return template


class _Kept:
    failed = False


@contextlib.contextmanager
def _stderr_kept_unless_failing() -> Iterator[_Kept]:
    """What the imports write to stderr (debugpy's warning about frozen modules) is kept
    out of the step's log, as a kernel's own start keeps it, unless they fail."""
    kept = _Kept()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buffer:
        sys.stderr.flush()
        os.dup2(buffer.fileno(), 2)
        try:
            yield kept
        except BaseException:
            kept.failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if kept.failed:
                buffer.seek(0)
                sys.stderr.write(buffer.read().decode("utf-8", "replace"))


def _hosting_class(kernel_template: ModuleType) -> type:
    """``kernel_template.Template`` with a runner: what it ends with, and how it stops.
    Made here, not at module level: ``kernel_template`` is loaded by path when this runs,
    and where it cannot be, this process becomes the plain runner."""

    class HostingTemplate(kernel_template.Template):  # type: ignore[misc, name-defined]
        runner: int | None = None
        runner_exit = 1

        def bind(self) -> None:
            super().bind()
            signal.signal(signal.SIGTERM, self._stop_runner)

        def prepare_child(self) -> None:
            if os.environ.get(LANE_VARIABLE) == "1":  # a lane's: its kernels die first
                kernel_template.first_to_kill_for_memory()

        def _stop_runner(self, *_: Any) -> None:
            """SIGTERM goes on to the runner, which stops its step; this serves on until
            the runner has ended."""
            if self.runner is not None:
                with contextlib.suppress(OSError):
                    os.kill(self.runner, signal.SIGTERM)

        def _ended(self, pid: int, status: int) -> None:
            if pid != self.runner:
                super()._ended(pid, status)
                return
            self.children.pop(pid, None)
            self.runner = None
            self.runner_exit = _exit_status(os.waitstatus_to_exitcode(status))
            self.retiring = "the step runner ended"
            self._close_listener()  # no more forks: nobody is left to ask for one
            for kernel in list(self.children):  # its kernel, had it not stopped it
                kernel_template._kill_group(kernel)

    return HostingTemplate


def _exit_status(code: int) -> int:
    """A child's exit code as a shell reports it (128 + signal when killed)."""
    return code if code >= 0 else 128 - code


def _run_runner(kernel_template: ModuleType, template: Any, module: str,
                argv: list[str]) -> NoReturn:
    """In the fork: drop the template's part, run ``module``'s ``main(argv)`` (the step
    runner, or a lane's step template); never returns."""

    def run() -> int:
        template.close_in_child()
        kernel_template.reset_signals()
        return int(importlib.import_module(module).main(argv))

    kernel_template.run_and_exit(run)
    raise AssertionError("run_and_exit returned")  # it ends the process
