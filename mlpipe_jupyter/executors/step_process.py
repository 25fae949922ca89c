"""Local steps in processes of their own, forked from the step template.

Why: a runner is one Python process. Run in its threads, every step's papermill side —
papermill's import (~0.4 s of CPU), its parameters, notebook writes and validation, nbclient's
message handling — queues for that process's one GIL, while the steps' kernels wait on the
other cores. In a fan-out of eight that queue is most of the run's overhead. A step process
does that work for one step in a process of its own, forked from a template that has
imported it all ahead (``kernel_template``, flavor ``STEP``): the eight spread over the
cores, and the runner imports neither papermill nor jupyter_client.

A step process's life:

1. The local executor forks it ahead of need, as it used to start kernels ahead
   (``KernelPool``); it starts its kernel at once (a fork of the kernel template, or the
   usual way when that template cannot serve: the step log says so).
2. It reads one line on stdin: ``{"task": StepTask.to_dict()}``. End-of-file instead (the
   run needed fewer steps): it stops its kernel and exits.
3. It runs the step exactly as the runner would have (``step_runner.run_step_notebook``:
   papermill, the timeout, the step log, the executed notebook).
4. It writes ``{"outcome": StepOutcome.to_dict()}`` as one line on stdout, stops its
   kernel and exits. Anything else it prints goes to stderr.

SIGTERM cancels the step (its kernel is killed; the outcome says canceled). A runner that
dies takes its step processes along: their template kills a fork whose requester's
connection closed, and the kernel template does the same for their kernels.

Each step still gets a fresh kernel process of its own; the step process holds no user code
and no state of another step (it is one fork, used once).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors.base import StepOutcome, StepTask, Submission
from mlpipe_jupyter.executors.head_start import step_process_fork
from mlpipe_jupyter.executors.stop_signal import CANCELED, StopSignal
from mlpipe_jupyter.executors.template_client import ForkedProcess

# After a cancel's SIGTERM, the step process has this long to kill its kernel and report.
STOP_GRACE_SECONDS = 5.0
# How long shutting down waits for a step process to stop its kernel and exit by itself.
EXIT_WAIT_SECONDS = 5.0


def prepare_template() -> None:
    """In the step template, before it serves: import and build what every step process
    would (papermill, jupyter_client, the kernel provisioner factory, the kernel spec
    folders, nbformat's validator), starting no thread."""
    from mlpipe_jupyter.executors.kernels import kernel_modules, kernel_spec_manager
    from mlpipe_jupyter.executors.step_runner import load_papermill

    kernel_modules()
    kernel_spec_manager()
    load_papermill()


# -- in the runner -------------------------------------------------------------------------------
class StepProcess:
    """A step process forked for one step of ``cwd``, its kernel starting or up."""

    def __init__(self, process: ForkedProcess) -> None:
        self.process = process
        self._killer: threading.Timer | None = None

    @classmethod
    def start(cls, kernel_name: str, cwd: Path) -> StepProcess:
        """Fork one now; raises ``TemplateUnavailable`` (with the reason) when the step
        template cannot serve."""
        return cls(step_process_fork(kernel_name, cwd))

    @property
    def pid(self) -> int:
        return self.process.pid

    def run(self, submission: Submission) -> StepOutcome:
        """Hand it the submission's task and wait for the outcome (a set stop signal
        cancels the step)."""
        from mlpipe_jupyter.executors.step_runner import stopped_outcome

        task = submission.task
        job = json.dumps({"task": task.to_dict()}).encode("utf-8") + b"\n"
        with submission.stop.watch(self._stop):
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(job)
            except OSError:  # it died already: its stdout says so (end-of-file)
                pass
            assert self.process.stdout is not None
            line = self.process.stdout.readline()
        self._cancel_killer()
        if line:
            try:
                return StepOutcome.from_dict(task, json.loads(line)["outcome"])
            except (ValueError, KeyError, TypeError):
                pass
        code = self._exit_code()
        if submission.stop.reason is not None:
            return stopped_outcome(task, submission.stop.reason, "the step's process")
        return StepOutcome(task, ok=False, error=(
            f"the step's process ended before the step did ({_describe_exit(code)}); "
            "its kernel was stopped"))

    def shutdown(self) -> None:
        """End it: end-of-file on its stdin (it stops its kernel and exits), then close the
        connection to the template, which kills it if it is still there."""
        self._cancel_killer()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._exit_code()
        self.process.close()

    def _stop(self) -> None:
        # from the canceling thread: ask (SIGTERM: the step process kills its kernel and
        # reports), then make sure
        self.process.terminate()
        killer = threading.Timer(STOP_GRACE_SECONDS, self.process.kill)
        killer.daemon = True
        self._killer = killer
        killer.start()

    def _cancel_killer(self) -> None:
        if self._killer is not None:
            self._killer.cancel()
            self._killer = None

    def _exit_code(self) -> int | None:
        try:
            return self.process.wait(timeout=EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            return None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# -- in the step process ---------------------------------------------------------------------
def main(argv: list[str]) -> int:
    """A step process (a fork of the step template): ``--kernel NAME``. See the module."""
    from mlpipe_jupyter.executors.kernels import WarmKernel, start_kernel
    from mlpipe_jupyter.executors.step_runner import run_step_notebook

    kernel_name = argv[argv.index("--kernel") + 1] if "--kernel" in argv else "python3"
    # the outcome goes on the real stdout; whatever else is printed goes to stderr
    outcome_fd = os.dup(1)
    os.dup2(2, 1)
    stop = StopSignal()

    def canceled(*_: Any) -> None:
        # not in the handler: stopping takes locks the interrupted code may hold
        threading.Thread(target=stop.set, args=(CANCELED,), daemon=True).start()

    signal.signal(signal.SIGTERM, canceled)
    job: queue.Queue[bytes] = queue.Queue(maxsize=1)
    status = [1]  # the exit status: 0 once the outcome is written (a raise prints, and stays 1)

    def step() -> None:
        # the kernel is started, used and shut down by this one thread (``kernels``)
        kernel: WarmKernel | None = None
        error: Exception | None = None
        try:
            kernel = start_kernel(kernel_name, Path.cwd(), fork=True)
        except Exception as exc:  # reported as the step's outcome, once it has a step
            error = exc
        try:
            task = StepTask.from_dict(json.loads(job.get())["task"])
            outcome = run_step_notebook(task, kernel, stop, start_error=error)
            with os.fdopen(outcome_fd, "wb") as out:
                out.write(json.dumps({"outcome": outcome.to_dict()}).encode("utf-8") + b"\n")
            status[0] = 0
        finally:
            if kernel is not None:
                kernel.shutdown()

    worker = threading.Thread(target=step, name="mlpipe-step")
    worker.start()
    line = sys.stdin.buffer.readline()
    if not line:
        # Not needed after all (a head start no step took, a run that ended first): end now,
        # even while the kernel is still starting, rather than wait for it. The exit kills
        # a started kernel and removes its files (``kernels``); one still being forked is
        # killed by the kernel template when this process's connection to it closes.
        return 0
    job.put(line)
    worker.join()
    return status[0]
