"""Ready containers: the next docker step's container, started before the step is ready.

A docker step pays for its container's start, a Python, papermill's import and a kernel's
start (~1.2 s) before its first cell. While a step runs, the executor starts containers
for the next steps like it (up to ``LOOKAHEAD``, never more than the steps still to come): same image, limits, network, kernel and working folder. That
container imports papermill, starts its kernel and waits, with nothing of any step in it.
When the next step is launched, it takes the waiting container and sends it its job (the
task and where to write the outcome) as one line on the container's stdin; the container
runs exactly that step, then ends and is removed, as every step container is. Steps never
share a container, a kernel or a process.

The mounts of a container are fixed when it is created, so a ready container mounts what
any step of the run may use, by whole folders: the notebook's folder, the workspace's
results and registered data read-only; the run's step folders and the staging folder
(where outputs are written until committed) writable. A step whose inputs lie elsewhere
(a dataset registered in place, an input cache) or that needs secrets (its kernel must
start with them) gets a fresh container, as before.

A ready container nobody takes (the rest of the run was reused, failed or canceled) is
removed when the run ends; one left by a killed runner is removed by the next runner on
the host (``remove_dead_containers``), and its tether stops it as soon as its starter is
gone.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors.docker.containers import (
    ContainerExit,
    ContainerStep,
    StepContainer,
    package_mount,
)
from mlpipe_jupyter.executors.docker.in_container import READY_FLAG
from mlpipe_jupyter.store.workspace import Workspace

log = logging.getLogger(__name__)

READY_STEP_LABEL = "(ready)"  # the step label of a container no step has taken yet
# Longest a step waits for the ready container started for it (a slow image pull or
# engine); then it starts its own.
START_WAIT_SECONDS = 120.0
# Ready containers kept per kind of step: a container takes longer to come up (~1-3 s)
# than a short step to run, so a chain's next two steps each get one started.
LOOKAHEAD = 2


@dataclass(frozen=True)
class ReadyKey:
    """What a container fixes at its creation, so what a step must share to take it."""

    image: str
    cwd: str
    network: bool
    resources: str  # the limits, as text
    kernel_name: str
    run_id: str

    @classmethod
    def of(cls, step: ContainerStep) -> ReadyKey:
        task = step.task
        return cls(step.image, str(task.cwd.resolve()), task.network,
                   repr(task.resources), task.kernel_name, task.run_id)


class ReadyContainer(StepContainer):
    """A started container waiting for its step (``ReadyContainers.take``)."""

    def __init__(self, client: Any, template: ContainerStep,
                 mounts: dict[str, dict[str, str]]) -> None:
        super().__init__(client, template)
        self.mounts = mounts
        self.ended = threading.Event()  # removed (taken and run, or discarded)

    @property
    def short_id(self) -> str:
        return str(getattr(self._container, "short_id", "") or "")

    def begin(self) -> bool:
        task = self.step.task
        return self.start([READY_FLAG, task.kernel_name], self.mounts, task.run_id,
                          READY_STEP_LABEL)

    def serves(self, step: ContainerStep) -> bool:
        """Whether every folder ``step`` reads or writes is mounted, as it needs it."""
        def under(path: Path, mode: str) -> bool:
            real = Path(path).resolve()
            return any(mount["mode"] in (mode, "rw") and real.is_relative_to(source)
                       for source, mount in self.mounts.items())

        task = step.task
        return (under(task.cwd, "ro") and all(under(p, "ro") for p in step.read_only)
                and all(under(p, "rw") for p in step.writable))

    def run_step(self, step: ContainerStep) -> ContainerExit:
        """Run ``step`` in this container: its job line, its log, its end; then remove it."""
        self.step = step
        inside = replace(step.task, timeout_seconds=None).to_dict()
        step.outcome_path.unlink(missing_ok=True)
        try:
            if self._stopped.is_set():
                return ContainerExit(exit_code=-1, stopped=True)
            return self.finish(json.dumps({"task": inside, "outcome": str(step.outcome_path)}))
        finally:
            self.discard()

    def discard(self) -> None:
        self._remove()
        self.ended.set()


@dataclass
class _Slot:
    """A ready container being started (``done`` is set once it is, or failed to be)."""

    done: threading.Event = field(default_factory=threading.Event)
    container: ReadyContainer | None = None


class ReadyContainers:
    """The executor's ready containers, up to ``LOOKAHEAD`` per ``ReadyKey``, started for
    steps still to come (``expect``), never more than those."""

    def __init__(self, client: Any, workspace: Workspace | None) -> None:
        self.client = client
        self.workspace = workspace
        self._lock = threading.Lock()
        self._slots: dict[ReadyKey, list[_Slot]] = {}  # oldest first
        self._expected = 0  # steps announced and not launched yet
        self._closed = False

    def expect(self, count: int) -> None:
        with self._lock:
            self._expected += count

    def take(self, step: ContainerStep) -> ReadyContainer | None:
        """The ready container for ``step`` if one was started for a step like it and can
        serve it (waiting for it to be up: it started before any fresh one could), and the
        next one starts for the step after it. Counts ``step`` as launched."""
        key = ReadyKey.of(step)
        with self._lock:
            self._expected = max(0, self._expected - 1)
            if step.task.secrets:  # its kernel starts with them: the waiting ones stay
                return None
            queued = self._slots.setdefault(key, [])
            slot = queued.pop(0) if queued else None
            if self.workspace is not None and not self._closed:
                while len(queued) < min(LOOKAHEAD, self._expected):
                    queued.append(self._start(key, step))
        if slot is None:
            return None
        slot.done.wait(timeout=START_WAIT_SECONDS)
        taken = slot.container
        if taken is None or not taken.serves(step) or not taken.alive():
            self._discard(slot)  # the step starts its own container, as it always could
            return None
        return taken

    def _start(self, key: ReadyKey, like: ContainerStep) -> _Slot:
        slot = _Slot()

        def start() -> None:
            container = ReadyContainer(self.client, like, self._mounts(like))
            try:
                if container.begin():
                    slot.container = container
                else:
                    container.discard()
            except Exception:
                log.debug("starting a ready container failed", exc_info=True)
                container.discard()
            finally:
                slot.done.set()

        threading.Thread(target=start, daemon=True, name="mlpipe-ready-container").start()
        return slot

    def _discard(self, slot: _Slot) -> None:
        slot.done.wait(timeout=START_WAIT_SECONDS)
        if slot.container is not None:
            slot.container.discard()

    def _mounts(self, like: ContainerStep) -> dict[str, dict[str, str]]:
        """Whole folders: what any step of ``like``'s run may read or write."""
        assert self.workspace is not None
        workspace = self.workspace
        writable = [workspace.run_dir(like.task.run_id) / "steps", workspace.staging_dir]
        read_only = [like.task.cwd, workspace.results_dir, workspace.data_dir]
        mounts: dict[str, dict[str, str]] = {}
        for folders, mode in ((read_only, "ro"), (writable, "rw")):
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)  # else Docker makes it, as root
                real = str(folder.resolve())
                mounts[real] = {"bind": real, "mode": mode}
        mounts.update(package_mount())
        return mounts

    def close(self) -> None:
        """Remove the containers nobody took (the run is over), once they are up."""
        with self._lock:
            self._closed = True
            slots = [slot for queued in self._slots.values() for slot in queued]
            self._slots.clear()
        for slot in slots:
            self._discard(slot)
