"""The executor contract: how a compute target runs one step notebook.

An executor receives ``StepTask``s (a rendered step notebook, where to write the executed
notebook and the log, the staging folders for outputs, limits) and reports one
``StepOutcome`` per task through the callback given to ``submit``; it may call the
callback from any thread. It never writes run records, commits results or registers
datasets: the runner does, from the outcome. It fails a task, never the process: every
problem with a task (the notebook raised, the kernel died, a timeout, a cancel) becomes an
outcome with ``ok=False`` and a message a user can act on. Problems with the target itself
(unreachable, misconfigured) raise ``ExecutorError`` from ``check`` before anything runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlpipe_jupyter.model.step import Resources


@dataclass(frozen=True)
class StepTask:
    """One attempt of one step, ready to execute."""

    run_id: str
    step: str
    attempt: int
    step_notebook: Path  # the rendered notebook to execute
    output_notebook: Path  # where the executed notebook goes (written even on failure)
    log_path: Path  # the step's stdout/stderr, appended while it runs
    cwd: Path  # the kernel's working folder (the source notebook's folder)
    input_paths: Mapping[str, Path] = field(default_factory=dict)  # read-only folders
    staging: Path | None = None  # output folders live under it, one per output
    env: str | None = None
    network: bool = False  # the step asked for network access (--network)
    kernel_name: str = "python3"
    timeout_seconds: float | None = None
    resources: Resources = field(default_factory=Resources)
    result_id: str | None = None  # where the outputs are committed (remote datastores use it)


@dataclass(frozen=True)
class StepOutcome:
    """How a task ended. ``error`` is the user-facing sentence when ``ok`` is False."""

    task: StepTask
    ok: bool
    error: str | None = None
    exception_name: str | None = None
    exception_value: str | None = None
    cell_index: int | None = None  # index in the executed step notebook
    canceled: bool = False
    timed_out: bool = False
    started_at: float | None = None
    ended_at: float | None = None


OutcomeCallback = Callable[[StepOutcome], None]


class Executor(ABC):
    """A compute target. Subclasses implement ``submit`` (and usually ``prepare``)."""

    #: the name steps use in ``--compute``
    name: str = ""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise ExecutorError when the target cannot run steps (called before a run)."""

    def environment_fingerprint(self, env: str | None) -> str:
        """What identifies the software a step runs with on this target (part of reuse)."""
        raise NotImplementedError

    def prepare(self, cwd: Path, expected_tasks: int, max_parallel: int) -> None:  # noqa: B027
        """Get ready for about ``expected_tasks`` tasks (start kernels or containers early)."""

    def fetch_result(self, result_id: str, into: Path) -> bool:
        """Download the committed result ``result_id`` from the target's own datastore into
        ``into`` (one folder per output); False when the target has none or lacks it.
        Lets results computed on another machine be reused (object-store datastores)."""
        return False

    @abstractmethod
    def submit(self, task: StepTask, on_done: OutcomeCallback) -> None:
        """Start ``task`` (soon, not necessarily now) and call ``on_done`` once when it ends."""

    @abstractmethod
    def cancel(self, run_id: str, step: str | None = None) -> None:
        """Stop a task (or all of a run's) quickly; each still reports a canceled outcome."""

    def close(self) -> None:  # noqa: B027
        """Release everything (kernels, containers). Called once, also after errors."""
