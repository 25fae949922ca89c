"""The executor contract: how a compute target runs one step notebook.

An executor receives ``StepTask``s (a rendered step notebook, where to write the executed
notebook and the log, the staging folders for outputs, limits) and reports one
``StepOutcome`` per task through the callback given to ``submit``; it may call the
callback from any thread. It never writes run records, commits results or registers
datasets: the runner does, from the outcome. It fails a task, never the process: every
problem with a task (the notebook raised, the kernel died, a timeout, a cancel) becomes an
outcome with ``ok=False`` and a message a user can act on. Problems with the target itself
(unreachable, misconfigured) raise ``ExecutorError`` from ``check`` before anything runs.

``Executor.submit`` is a template method (as papermill's ``Engine.execute_notebook`` and
jupyter-scheduler's ``ExecutionManager.process``): it refuses a canceled task, keeps the
task's ``Submission`` (its stop signal, its start time, its once-only report) and calls
``launch``, the one method a target implements: where and how the task starts. Whatever
goes wrong inside still ends in an outcome (``Submission.fail``). ``cancel`` sets the stop
signal of the run's submissions; ``cancel_launched`` lets a target reach what it queued.

Tasks and outcomes cross process boundaries (a container, a Dask worker) in one form only:
``StepTask.to_dict`` / ``from_dict`` and ``StepOutcome.to_dict`` / ``from_dict``, plain
JSON values.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors.stop_signal import CANCELED, StopSignal
from mlpipe_jupyter.model.step import Resources, StepHeader

log = logging.getLogger(__name__)


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
    image: str | None = None  # the step's own container image (--image), instead of env
    network: bool = False  # the step asked for network access (--network)
    kernel_name: str = "python3"
    timeout_seconds: float | None = None
    resources: Resources = field(default_factory=Resources)
    result_id: str | None = None  # where the outputs are committed (remote datastores use it)
    # (secret name, environment variable) pairs: names only, never values. Whoever runs the
    # step resolves them from its own sources (store.secrets) into the kernel's environment.
    secrets: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The task as plain JSON values (paths as strings)."""
        return {
            "run_id": self.run_id, "step": self.step, "attempt": self.attempt,
            "step_notebook": str(self.step_notebook),
            "output_notebook": str(self.output_notebook),
            "log_path": str(self.log_path), "cwd": str(self.cwd),
            "input_paths": {name: str(path) for name, path in self.input_paths.items()},
            "staging": str(self.staging) if self.staging is not None else None,
            "env": self.env, "image": self.image, "network": self.network, "kernel_name": self.kernel_name,
            "timeout_seconds": self.timeout_seconds, "resources": asdict(self.resources),
            "result_id": self.result_id,
            "secrets": [[name, env] for name, env in self.secrets],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepTask:
        """The task ``to_dict`` described."""
        return cls(
            run_id=data["run_id"], step=data["step"], attempt=int(data["attempt"]),
            step_notebook=Path(data["step_notebook"]),
            output_notebook=Path(data["output_notebook"]),
            log_path=Path(data["log_path"]), cwd=Path(data["cwd"]),
            input_paths={name: Path(path) for name, path in data.get("input_paths", {}).items()},
            staging=Path(data["staging"]) if data.get("staging") else None,
            env=data.get("env"), image=data.get("image"), network=bool(data.get("network")),
            kernel_name=data.get("kernel_name") or "python3",
            timeout_seconds=data.get("timeout_seconds"),
            resources=Resources(**data.get("resources", {})),
            result_id=data.get("result_id"),
            secrets=tuple((str(name), str(env)) for name, env in data.get("secrets", [])),
        )


@dataclass(frozen=True)
class StepOutcome:
    """How a task ended. ``error`` is the user-facing sentence when ``ok`` is False."""

    task: StepTask
    ok: bool
    error: str | None = None
    canceled: bool = False
    timed_out: bool = False
    started_at: float | None = None
    ended_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The outcome as plain JSON values, without its task: whoever receives it sent the
        task, and keeps it (with its own paths, which a worker may have rewritten)."""
        return {"ok": self.ok, "error": self.error, "canceled": self.canceled,
                "timed_out": self.timed_out, "started_at": self.started_at,
                "ended_at": self.ended_at}

    @classmethod
    def from_dict(cls, task: StepTask, data: Mapping[str, Any]) -> StepOutcome:
        """The outcome of ``task`` that ``to_dict`` described."""
        return cls(task, ok=bool(data["ok"]), error=data.get("error"),
                   canceled=bool(data.get("canceled")), timed_out=bool(data.get("timed_out")),
                   started_at=data.get("started_at"), ended_at=data.get("ended_at"))


@dataclass(frozen=True)
class Unapplied:
    """A request of a step that its compute target does not apply: shown, never fatal."""

    what: str  # "GPU request (1)", "image python:3.12", "limit ephemeral-storage=1Gi"
    why: str  # what the target does instead, and how to get it applied

    def __str__(self) -> str:
        return f"{self.what} not applied: {self.why}"


def unapplied_sentences(notes: list[Unapplied]) -> list[str]:
    """The notes as sentences, one per reason: "GPU request (1), memory request (512 MiB)
    not applied: ..." """
    grouped: dict[str, list[str]] = {}
    for note in notes:
        grouped.setdefault(note.why, []).append(note.what)
    return [f"{', '.join(whats)} not applied: {why}" for why, whats in grouped.items()]


def resource_requests(resources: Resources) -> list[str]:
    """The resource requests of a step, as ``Unapplied.what`` names them."""
    found = []
    if resources.gpus:
        found.append(f"GPU request ({resources.gpus})")
    if resources.cpus:
        found.append(f"CPU request ({resources.cpus:g})")
    if resources.memory_bytes:
        found.append(f"memory request ({resources.memory_bytes / 1024**2:g} MiB)")
    return found


def other_limits(header: StepHeader) -> list[str]:
    """Limits with no equivalent in mlpipe (Kale ``limit:RESOURCE:VALUE``)."""
    return [f"limit {name}={value}" for name, value in header.other_limits]


def canceled_outcome(task: StepTask) -> StepOutcome:
    """The outcome of a task canceled before it could start."""
    return StepOutcome(task, ok=False, canceled=True, error="canceled")


OutcomeCallback = Callable[[StepOutcome], None]


class Submission:
    """A task while an executor holds it: its stop signal, when it started, and its report,
    which reaches the runner exactly once, whichever thread gets there first."""

    def __init__(self, executor: Executor, task: StepTask, on_done: OutcomeCallback) -> None:
        self.executor = executor
        self.task = task
        self.stop = StopSignal()
        self.started_at: float | None = None
        self._on_done = on_done
        self._lock = threading.Lock()
        self._reported = False

    def execute(self, run: Callable[[], StepOutcome]) -> None:
        """Run the task now, in this thread (``run`` returns its outcome), and report it; a
        task canceled while it waited ends at once."""
        if self.stop.is_set():
            self.report(canceled_outcome(self.task))
            return
        self.started_at = time.time()
        self.conclude(run)

    def conclude(self, make: Callable[[], StepOutcome]) -> None:
        """Report the outcome ``make`` returns, or the error it raised as the outcome."""
        try:
            outcome = make()
        except BaseException as exc:  # never let a task end without an outcome
            self.fail(exc)
            return
        self.report(outcome)

    def fail(self, exc: BaseException) -> None:
        """Report an error inside the executor as the task's outcome."""
        log.error("step %s failed inside the %s executor", self.task.step, self.executor.name,
                  exc_info=exc)
        self.report(StepOutcome(self.task, ok=False, error=self.executor.internal_error(exc)))

    def report(self, outcome: StepOutcome) -> None:
        """Hand the outcome to the runner (once; later calls are ignored), with its times."""
        with self._lock:
            if self._reported:
                return
            self._reported = True
        if outcome.started_at is None and self.started_at is not None:
            outcome = replace(outcome, started_at=self.started_at)
        if outcome.ended_at is None:
            outcome = replace(outcome, ended_at=time.time())
        self.executor._forget(self)
        self._on_done(outcome)


class Executor(ABC):
    """A compute target. Subclasses implement ``launch`` (and usually ``prepare``)."""

    #: the name steps use in ``--compute``
    name: str = ""

    def __init__(self) -> None:
        self._submissions_lock = threading.Lock()
        self._submissions: set[Submission] = set()
        self._canceled: set[tuple[str, str | None]] = set()

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise ExecutorError when the target cannot run steps (called before a run)."""

    def environment_fingerprint(self, env: str | None, image: str | None = None) -> str:
        """What identifies the software a step runs with on this target (part of reuse):
        its environment (``--env``) or its own image (``--image``), when the target uses
        them. Raises ExecutorError when that software cannot be had."""
        raise NotImplementedError

    def unapplied(self, header: StepHeader) -> list[Unapplied]:
        """The requests of a step this target does not apply (resources, an image, other
        limits). The step still runs; the run shows these. By default: all of them."""
        why = f"the {self.name or 'this'} compute target does not apply it"
        requests = resource_requests(header.resources) + other_limits(header)
        if header.image:
            requests.append(f"image {header.image}")
        return [Unapplied(what, why) for what in requests]

    def prepare(self, cwd: Path, expected_tasks: int, max_parallel: int) -> None:  # noqa: B027
        """Get ready for about ``expected_tasks`` tasks (start kernels or containers early)."""

    def fetch_result(self, result_id: str, into: Path) -> bool:
        """Download the committed result ``result_id`` from the target's own datastore into
        ``into`` (one folder per output); False when the target has none or lacks it.
        Lets results computed on another machine be reused (object-store datastores)."""
        return False

    # -- the template ---------------------------------------------------------------------
    def submit(self, task: StepTask, on_done: OutcomeCallback) -> None:
        """Start ``task`` (soon, not necessarily now) and call ``on_done`` once when it ends."""
        submission = Submission(self, task, on_done)
        with self._submissions_lock:
            canceled = self._is_canceled(task)
            if not canceled:
                self._submissions.add(submission)
        if canceled:
            submission.report(canceled_outcome(task))
            return
        try:
            self.launch(submission)
        except BaseException as exc:  # never let a task end without an outcome
            submission.fail(exc)

    @abstractmethod
    def launch(self, submission: Submission) -> None:
        """Start the submission's task where this target runs steps, and see that
        ``submission.execute``, ``conclude`` or ``report`` is called when it ends. Set
        ``submission.stop`` must stop it (``stop.watch`` the kernel or container)."""

    def cancel(self, run_id: str, step: str | None = None) -> None:
        """Stop a task (or all of a run's) quickly; each still reports a canceled outcome."""
        with self._submissions_lock:
            self._canceled.add((run_id, step))
            victims = [s for s in self._submissions if s.task.run_id == run_id
                       and (step is None or s.task.step == step)]
        for submission in victims:
            submission.stop.set(CANCELED)
        self.cancel_launched(run_id, step, victims)

    def cancel_launched(self, run_id: str, step: str | None,  # noqa: B027 - optional hook
                        victims: list[Submission]) -> None:
        """Reach canceled tasks the stop signal cannot (queued ones, remote ones)."""

    def internal_error(self, exc: BaseException) -> str:
        """The outcome's message for an error inside the executor."""
        return f"internal error: {exc!r}"

    def close(self) -> None:  # noqa: B027
        """Release everything (kernels, containers). Called once, also after errors."""

    def _is_canceled(self, task: StepTask) -> bool:
        return (task.run_id, task.step) in self._canceled or (task.run_id, None) in self._canceled

    def _forget(self, submission: Submission) -> None:
        with self._submissions_lock:
            self._submissions.discard(submission)
