"""The ``local`` compute target: step notebooks run by papermill on this machine.

Each step gets a fresh kernel of the current Python and a step process of its own
(``step_process``): a fork of the per-user step template, which has papermill imported,
starts the step's kernel (a fork of the kernel template), runs the step notebook on it
(``step_runner.run_step_notebook``) and reports the outcome. They are started ahead of need
by a ``KernelPool``, so the next ready step finds its process and kernel up. The runner
itself imports neither papermill nor jupyter_client: the steps' papermill work spreads over
the cores instead of queueing for the runner's one GIL.

When the step template cannot serve (fork-started kernels turned off with
``MLPIPE_FORK_KERNELS=0``, or the template would not start), steps run as they used to: in
the runner's threads, each on a kernel of its own. A step with secrets always does: its
kernel is started with the secrets' values in its environment (resolved here, on the
runner), and no template ever holds them.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors import head_start
from mlpipe_jupyter.executors.base import (
    Executor,
    StepOutcome,
    Submission,
    Unapplied,
    canceled_outcome,
    other_limits,
    resource_requests,
)
from mlpipe_jupyter.executors.kernel_template import (
    KERNEL,
    STEP,
    environment_fingerprint,
    fork_enabled,
)
from mlpipe_jupyter.executors.kernels import (
    KernelPool,
    WarmKernel,
    kernel_launched,
    start_kernel,
)
from mlpipe_jupyter.executors.step_process import StepProcess
from mlpipe_jupyter.executors.step_runner import load_papermill, run_step_notebook
from mlpipe_jupyter.executors.template_client import TemplateUnavailable
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


def _start_templates(flavors: tuple[str, ...]) -> None:
    """Start the templates (each in a thread: they start in parallel) ahead of the first
    step process or kernel."""
    from mlpipe_jupyter.executors.template_client import ensure_template

    def ensure(flavor: str) -> None:
        try:
            ensure_template(flavor)
        except Exception:  # each fork tries again, falls back and says why
            log.debug("the %s template did not start ahead", flavor, exc_info=True)

    threads = [threading.Thread(target=ensure, args=(flavor,), daemon=True,
                                name=f"mlpipe-{flavor}-template") for flavor in flavors]
    for thread in threads:
        thread.start()


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
        # steps run in step processes until the step template fails to serve one
        self._step_processes = fork_enabled()

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
                # the templates (per user, started on demand): up before the first forks
                self._template_starting = True
                _start_templates((KERNEL, STEP) if self._step_processes else (KERNEL,))
            self._pool(cwd).reserve(expected_tasks)
        if not self._step_processes:
            self._load_papermill_ahead()

    def _load_papermill_ahead(self) -> None:
        """For steps run in this process: import papermill while the kernels start, not
        when the first step is ready."""
        with self._lock:
            if self._papermill_loading:
                return
            self._papermill_loading = True
        threading.Thread(target=_load_papermill_after_launch, daemon=True,
                         name="mlpipe-papermill-import").start()

    def _pool(self, cwd: Path) -> KernelPool:
        with self._lock:
            pool = self._pools.get(cwd)
            if pool is None:
                pool = KernelPool(self.kernel_name, cwd, self._run_job, self._max_warm,
                                  fork=True, start=lambda: self._start_slot(cwd))
                self._pools[cwd] = pool
            return pool

    def _start_slot(self, cwd: Path) -> StepProcess | WarmKernel:
        """What a pool slot holds for its step: a step process, else (no step template)
        a kernel for a step run in this process."""
        if self._step_processes:
            try:
                ahead = head_start.take(cwd, self.kernel_name)  # the command's, if any
                if ahead is not None:
                    return StepProcess(ahead)
                return StepProcess.start(self.kernel_name, cwd)
            except TemplateUnavailable as exc:
                with self._lock:
                    first = self._step_processes
                    self._step_processes = False
                if first:
                    log.info("steps run in the runner's process: %s", exc)
                self._load_papermill_ahead()
        return start_kernel(self.kernel_name, cwd, fork=True)

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

    def _run_job(self, slot: StepProcess | WarmKernel | None, submission: Submission,
                 start_error: Exception | None) -> None:
        """In a pool slot's thread: the step in its step process, or in this process on its
        kernel (or why neither started)."""
        if isinstance(slot, StepProcess):
            process = slot
            submission.execute(lambda: process.run(submission))
            return
        submission.execute(lambda: run_step_notebook(
            submission.task, slot, submission.stop, start_error=start_error))
