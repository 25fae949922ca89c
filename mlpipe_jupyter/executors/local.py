"""The ``local`` compute target: step notebooks run by papermill on this machine.

Each step gets a fresh kernel of the current Python, started ahead of need by a
``KernelPool``; the step runner (``step_runner.run_step_notebook``) executes the step
notebook on it, in the kernel's thread. A step with secrets gets a kernel of its own,
started with the secrets' values in its environment (resolved here, on the runner).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors.base import (
    Executor,
    StepOutcome,
    Submission,
    Unapplied,
    canceled_outcome,
    other_limits,
    resource_requests,
)
from mlpipe_jupyter.executors.kernel_template import environment_fingerprint, fork_enabled
from mlpipe_jupyter.executors.kernels import (
    KernelPool,
    WarmKernel,
    kernel_launched,
    kernel_modules,
    start_kernel,
)
from mlpipe_jupyter.executors.step_runner import load_papermill, run_step_notebook
from mlpipe_jupyter.model.step import StepHeader

# Extra kernels kept starting beyond the parallel slots, so the next ready step in a chain
# finds its kernel already up.
LOOKAHEAD_KERNELS = 2
# longest that papermill's import waits for the first kernel's launch (a slow template)
LAUNCH_WAIT_SECONDS = 2.0

log = logging.getLogger(__name__)


def local_environment_fingerprint() -> str:
    """The current Python and its installed packages (from distribution folder names,
    which carry versions: cheap, ~5 ms, and changes whenever pip installs or removes).
    The kernel template is keyed on it too (``kernel_template``)."""
    return environment_fingerprint()


def _load_papermill_after_launch() -> None:
    # after the first kernel's launch: importing papermill (~0.5 s of this process's CPU,
    # under the GIL) alongside the launch delays it; afterwards, it overlaps the kernel's
    # own start-up in its process
    kernel_launched.wait(timeout=LAUNCH_WAIT_SECONDS)
    load_papermill()


def _start_template() -> None:
    try:
        kernel_modules()  # first: see kernel_modules
        from mlpipe_jupyter.executors.fork_provisioner import ensure_template

        ensure_template()
    except Exception:  # each kernel start tries again, falls back and says why
        log.debug("the kernel template did not start ahead", exc_info=True)


class LocalExecutor(Executor):
    """Runs steps in fresh local kernels, several at once."""

    name = "local"

    def __init__(self, target: str = "local", kernel_name: str = "python3",
                 workspace: Any = None, **_options: Any) -> None:
        super().__init__()
        self.target = target
        self.workspace = workspace
        self.kernel_name = kernel_name
        self._pools: dict[Path, KernelPool] = {}
        self._max_warm = (os.cpu_count() or 1) + LOOKAHEAD_KERNELS
        self._lock = threading.Lock()
        self._papermill_loading = False
        self._template_starting = False

    def environment_fingerprint(self, env: str | None, image: str | None = None) -> str:
        # --env and --image name containers; local steps run in this Python either way.
        return local_environment_fingerprint()

    def unapplied(self, header: StepHeader) -> list[Unapplied]:
        notes = [Unapplied(what, "local compute runs steps in this machine's Python without "
                                 "resource limits")
                 for what in resource_requests(header.resources)]
        if header.image:
            notes.append(Unapplied(f"image {header.image}",
                                   "local compute runs steps in this Python environment; run "
                                   "with --compute docker to use it"))
        notes += [Unapplied(what, "local compute has no such limit")
                  for what in other_limits(header)]
        return notes

    def prepare(self, cwd: Path, expected_tasks: int, max_parallel: int) -> None:
        self._max_warm = max_parallel + LOOKAHEAD_KERNELS
        if expected_tasks > 0:
            if not self._template_starting and fork_enabled():
                # the kernel template (per user, started on demand): ready before the kernels
                self._template_starting = True
                threading.Thread(target=_start_template, daemon=True,
                                 name="mlpipe-kernel-template").start()
            self._pool(cwd).reserve(expected_tasks)
        if not self._papermill_loading:
            # import while the kernels start, not when the first step is ready
            self._papermill_loading = True
            threading.Thread(target=_load_papermill_after_launch, daemon=True,
                             name="mlpipe-papermill-import").start()

    def _pool(self, cwd: Path) -> KernelPool:
        with self._lock:
            pool = self._pools.get(cwd)
            if pool is None:
                pool = KernelPool(self.kernel_name, cwd, self._run_job, self._max_warm,
                                  fork=True)
                self._pools[cwd] = pool
            return pool

    def launch(self, submission: Submission) -> None:
        if submission.task.secrets:
            # the secrets go into the kernel's environment as it starts: a kernel of its own
            threading.Thread(target=self._run_with_secrets, args=(submission,), daemon=True,
                             name="mlpipe-secret-kernel").start()
            return
        self._pool(submission.task.cwd).submit(submission)

    def _run_with_secrets(self, submission: Submission) -> None:
        task = submission.task

        def run() -> StepOutcome:
            from mlpipe_jupyter.errors import SecretError
            from mlpipe_jupyter.store.secrets import SecretStore

            try:
                values = SecretStore(self.workspace).environment(task.secrets)
            except SecretError as exc:
                return StepOutcome(task, ok=False, error=str(exc))
            kernel: WarmKernel | None = None
            error: Exception | None = None
            try:
                kernel = start_kernel(task.kernel_name, task.cwd, env=values, fork=True)
            except Exception as exc:
                error = exc
            try:
                load_papermill()
                return run_step_notebook(task, kernel, submission.stop, start_error=error,
                                         secrets=values)
            finally:
                if kernel is not None:
                    kernel.shutdown()

        submission.execute(run)

    def cancel_launched(self, run_id: str, step: str | None,
                        victims: list[Submission]) -> None:
        # a running step's kernel was killed by its stop signal; queued ones end now
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            for submission in pool.take_queued():
                if submission.stop.is_set():
                    submission.report(canceled_outcome(submission.task))
                else:
                    pool.submit(submission)

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()

    def _run_job(self, kernel: WarmKernel | None, submission: Submission,
                 start_error: Exception | None) -> None:
        """In a kernel's thread: the step on its kernel (or why the kernel did not start)."""
        submission.execute(lambda: run_step_notebook(
            submission.task, kernel, submission.stop, start_error=start_error))
