"""A head start for the ``mlpipe run`` command: the first local step's process, forked
while the command is still importing and planning.

The local executor forks step processes (``step_process``) once the run is planned, so
that the first step's kernel starts then: ~0.25 s after the command started, spent on
imports, the argument parser, validation and planning, all in one thread on one core.
Asked for at the command's start instead (``cli.entry``, before the command's own
imports), the step template forks the process at once, and its kernel starts on the other
core while the command imports and plans: the first cell of a local run runs ~0.2 s sooner
(a cold chain, an edited step, a large hand-over). The fork is asked for in the command's
thread when the template is up (~10 ms), in a background thread when it must be started
(~1-2 s from cold), so that the command never waits for a template's start.

The process is only a head start: it holds no step yet. The first step process the local
executor needs for the same folder and kernel takes it (``take``). A run that needs none
(all reused, all in containers) ends it (``end_unused``), as the executor ends a step
process it started for a step that then did not run; the command never waits for a fork
still on its way (a step template starting from cold). If the template cannot fork it,
nothing happens here: the executor asks again, falls back and says why, as always.

Only the command line begins one: a process that goes on after its run (a kernel, the
Jupyter server) starts its step processes when the run is planned.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from mlpipe_jupyter.executors.kernel_template import STEP, fork_enabled
from mlpipe_jupyter.executors.template_client import (
    ForkedProcess,
    TemplateAddress,
    TemplateUnavailable,
    connect,
    fork_process,
)

log = logging.getLogger(__name__)

DEFAULT_KERNEL = "python3"
# Longest the executor waits for the head start's fork (a template starting from cold
# takes ~1-2 s); after that it forks its own, and this one is ended with the run.
TAKE_WAIT_SECONDS = 30.0


class _HeadStart:
    """One fork of the step template for steps of ``cwd`` on ``kernel_name``, in flight."""

    def __init__(self, cwd: Path, kernel_name: str) -> None:
        self.cwd = cwd
        self.kernel_name = kernel_name
        self.process: ForkedProcess | None = None
        self.done = threading.Event()
        self.unwanted = False  # ended before its fork came: the fork ends on arrival
        if not self._fork_now():
            threading.Thread(target=self._fork, daemon=True, name="mlpipe-head-start").start()

    def _fork_now(self) -> bool:
        """Fork in this thread when the template is up (~10 ms); False when it is not (it
        is started in the background). In a thread of its own, behind the command's imports
        holding the GIL, the same fork took ~90 ms."""
        try:
            process = step_process_fork(self.kernel_name, self.cwd, start=False)
        except TemplateUnavailable:
            return False  # not running (or refused): the thread starts it, or says why
        except Exception:  # the executor will try again, and report why if it fails
            log.debug("no head start for the first step", exc_info=True)
            process = None
        self.process = process
        self.done.set()
        return True

    def _fork(self) -> None:
        process = None
        try:
            # the template first (started if missing: ~1 s from cold), and no fork asked
            # for if the command no longer wants one by then: a command that ends (a run
            # with every step reused) leaves no fork behind, only a warm template
            with connect(TemplateAddress(sys.executable, STEP)):
                pass
            if not self.unwanted:
                process = step_process_fork(self.kernel_name, self.cwd)
        except Exception:  # the executor will try again, and report why if it fails
            log.debug("no head start for the first step", exc_info=True)
        with _lock:
            self.process = process
            self.done.set()
            unwanted = self.unwanted
        if unwanted and process is not None:
            _end(process)

    def result(self, timeout: float | None) -> ForkedProcess | None:
        return self.process if self.done.wait(timeout) else None

    def end(self) -> None:
        """End its process now, or, while the fork is still on its way (the template
        starting from cold), as soon as it arrives: the command never waits for it."""
        with _lock:
            if not self.done.is_set():
                self.unwanted = True
                return
        if self.process is not None:
            _end(self.process)


def _end(process: ForkedProcess) -> None:
    """End a step process that holds no step (end-of-file: it exits at once)."""
    from mlpipe_jupyter.executors.step_process import StepProcess

    StepProcess(process).shutdown()


_lock = threading.Lock()
_pending: _HeadStart | None = None


def step_process_fork(kernel_name: str, cwd: Path, start: bool = True) -> ForkedProcess:
    """A step process forked from the step template (started first when missing and
    ``start``), its kernel starting (what ``StepProcess.start`` wraps)."""
    address = TemplateAddress(sys.executable, STEP)
    return fork_process(address, ["--kernel", kernel_name], dict(os.environ), str(cwd),
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start=start)


def begin(notebook: Path, kernel_name: str = DEFAULT_KERNEL) -> None:
    """Fork a step process for steps of ``notebook``'s folder, in the background. Nothing
    for a notebook that does not exist (the run will say so) or with fork-started kernels
    turned off."""
    global _pending
    if not fork_enabled():
        return
    try:
        path = notebook.expanduser()
        if not path.is_file():
            return
        folder = path.resolve().parent
    except (OSError, RuntimeError, ValueError):
        return  # a path that cannot be looked at (too long, ~nosuchuser): the run says so
    with _lock:
        if _pending is None:
            _pending = _HeadStart(folder, kernel_name)


def take(cwd: Path, kernel_name: str) -> ForkedProcess | None:
    """The head start's process, if one was begun for steps of ``cwd`` on
    ``kernel_name`` and its fork succeeded (waiting for it: it began first)."""
    global _pending
    with _lock:
        pending = _pending
        if pending is None or pending.cwd != cwd.resolve() or pending.kernel_name != kernel_name:
            return None
        _pending = None
    return pending.result(TAKE_WAIT_SECONDS)


def end_unused() -> None:
    """End the head start's process if no step took it (every step reused, or none
    local). A fork still on its way is not waited for: it ends itself when it arrives, and
    if this process has exited by then, the template ends it (its requester is gone)."""
    global _pending
    with _lock:
        pending, _pending = _pending, None
    if pending is not None:
        pending.end()
