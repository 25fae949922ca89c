"""The ``local`` compute target: step notebooks run by papermill on this machine.

Each step gets a fresh kernel of the current Python, started ahead of need by a
``KernelPool``; papermill drives that kernel (``km``/``kc`` handed to its nbclient engine),
so the executed notebook is exactly what the ``papermill`` command would have written.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors.base import Executor, OutcomeCallback, StepOutcome, StepTask
from mlpipe_jupyter.executors.kernels import KernelPool, WarmKernel
from mlpipe_jupyter.model.fingerprint import hash_text

log = logging.getLogger(__name__)

# Extra kernels kept starting beyond the parallel slots, so the next ready step in a chain
# finds its kernel already up.
LOOKAHEAD_KERNELS = 2


def _import_papermill() -> Any:
    # jsonschema imports rfc3987_syntax when it is installed (jupyter-events brings it),
    # which builds a grammar at import time: ~2 s, for a format check notebooks never use.
    # Refusing that import makes jsonschema skip the IRI format checker and nothing else.
    if "rfc3987_syntax" not in sys.modules and "jsonschema" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
        try:
            import papermill
        finally:
            del sys.modules["rfc3987_syntax"]
    import papermill

    import mlpipe_jupyter.executors.papermill_engine  # noqa: F401  (registers the engine)

    logging.getLogger("papermill").setLevel(logging.WARNING)
    return papermill


def local_environment_fingerprint() -> str:
    """The current Python and its installed packages (from distribution folder names,
    which carry versions: cheap, ~5 ms, and changes whenever pip installs or removes)."""
    names: list[str] = []
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            try:
                listing = os.listdir(entry)
            except OSError:
                continue
            names += [f for f in listing if f.endswith((".dist-info", ".egg-info"))]
    version = ".".join(map(str, sys.version_info[:3]))
    return f"local:python{version}:{len(names)}pkgs:{hash_text(chr(10).join(sorted(names)))[:16]}"


class LocalExecutor(Executor):
    """Runs steps in fresh local kernels, several at once."""

    name = "local"

    def __init__(self, target: str = "local", kernel_name: str = "python3", **_options: Any) -> None:
        self.target = target
        self.kernel_name = kernel_name
        self._pools: dict[Path, KernelPool] = {}
        self._max_warm = (os.cpu_count() or 1) + LOOKAHEAD_KERNELS
        self._lock = threading.Lock()
        self._papermill_lock = threading.Lock()
        self._running: dict[tuple[str, str], WarmKernel] = {}
        self._canceled: set[tuple[str, str | None]] = set()
        self._timed_out: set[tuple[str, str]] = set()
        self._papermill: Any = None

    def environment_fingerprint(self, env: str | None) -> str:
        # --env names a container environment; local steps run in this Python either way.
        return local_environment_fingerprint()

    def prepare(self, cwd: Path, expected_tasks: int, max_parallel: int) -> None:
        self._max_warm = max_parallel + LOOKAHEAD_KERNELS
        if expected_tasks > 0:
            self._pool(cwd).reserve(expected_tasks)
        if self._papermill is None:
            # import while the kernels start, not when the first step is ready
            threading.Thread(target=self._load_papermill, daemon=True).start()

    def _load_papermill(self) -> Any:
        with self._papermill_lock:
            if self._papermill is None:
                self._papermill = _import_papermill()
            return self._papermill

    def _pool(self, cwd: Path) -> KernelPool:
        with self._lock:
            pool = self._pools.get(cwd)
            if pool is None:
                pool = KernelPool(self.kernel_name, cwd, self._run_job, self._max_warm)
                self._pools[cwd] = pool
            return pool

    def submit(self, task: StepTask, on_done: OutcomeCallback) -> None:
        self._pool(task.cwd).submit((task, on_done))

    def cancel(self, run_id: str, step: str | None = None) -> None:
        with self._lock:
            self._canceled.add((run_id, step))
            victims = [
                kernel for (r, s), kernel in self._running.items()
                if r == run_id and (step is None or s == step)
            ]
            pools = list(self._pools.values())
        for kernel in victims:
            kernel.kill()
        for pool in pools:
            for task, on_done in pool.take_queued():
                if self._is_canceled(task):
                    on_done(StepOutcome(task, ok=False, canceled=True, error="canceled"))
                else:
                    pool.submit((task, on_done))

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()

    # -- in a kernel thread ---------------------------------------------------------------
    def _is_canceled(self, task: StepTask) -> bool:
        return (task.run_id, task.step) in self._canceled or (task.run_id, None) in self._canceled

    def _run_job(self, kernel: WarmKernel | None, job: Any, start_error: Exception | None) -> None:
        task, on_done = job
        started = time.time()
        try:
            if self._is_canceled(task):
                outcome = StepOutcome(task, ok=False, canceled=True, error="canceled")
            elif kernel is None:
                outcome = StepOutcome(
                    task, ok=False, error=f"the kernel could not start: {start_error}",
                    started_at=started, ended_at=time.time(),
                )
            else:
                outcome = self._execute(kernel, task, started)
        except BaseException as exc:  # never let a task end without an outcome
            log.exception("step %s failed inside the executor", task.step)
            outcome = StepOutcome(task, ok=False, error=f"internal error: {exc!r}",
                                  started_at=started, ended_at=time.time())
        on_done(outcome)

    def _execute(self, kernel: WarmKernel, task: StepTask, started: float) -> StepOutcome:
        papermill = self._load_papermill()
        from papermill.exceptions import PapermillExecutionError

        from mlpipe_jupyter.executors.papermill_engine import ENGINE_NAME

        key = (task.run_id, task.step)
        timer = None
        with self._lock:
            self._running[key] = kernel
        if task.timeout_seconds:
            timer = threading.Timer(task.timeout_seconds, self._time_out, (key, kernel))
            timer.daemon = True
            timer.start()
        task.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with task.log_path.open("a", encoding="utf-8") as log_file:
                papermill.execute_notebook(
                    str(task.step_notebook),
                    str(task.output_notebook),
                    kernel_name=task.kernel_name,
                    engine_name=ENGINE_NAME,
                    km=kernel.manager,
                    kc=kernel.client,
                    progress_bar=False,
                    stdout_file=log_file,
                    stderr_file=log_file,
                )
            return StepOutcome(task, ok=True, started_at=started, ended_at=time.time())
        except PapermillExecutionError as exc:
            return StepOutcome(
                task, ok=False, error=f"{exc.ename}: {exc.evalue}", exception_name=exc.ename,
                exception_value=exc.evalue, cell_index=exc.cell_index,
                started_at=started, ended_at=time.time(),
            )
        except Exception as exc:
            ended = time.time()
            if key in self._timed_out:
                return StepOutcome(
                    task, ok=False, timed_out=True,
                    error=f"timed out after {task.timeout_seconds:g} s (--timeout); the kernel "
                    "was stopped", started_at=started, ended_at=ended,
                )
            if self._is_canceled(task):
                return StepOutcome(task, ok=False, canceled=True, error="canceled",
                                   started_at=started, ended_at=ended)
            name = type(exc).__name__
            message = "the kernel died (out of memory, or the process was killed)" if (
                name == "DeadKernelError") else f"{name}: {exc}"
            return StepOutcome(task, ok=False, error=message, exception_name=name,
                               started_at=started, ended_at=ended)
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._running.pop(key, None)

    def _time_out(self, key: tuple[str, str], kernel: WarmKernel) -> None:
        self._timed_out.add(key)
        kernel.kill()
