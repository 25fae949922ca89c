"""Lanes: containers that serve a run's docker steps one after another.

A container of its own per step costs the engine's work, a Python, and ipykernel's and
papermill's imports: ~0.7 s of CPU on a 2-core machine, most of what a docker step cost
beyond a local one. A lane is one container that pays it once: its kernel host and its
step template (``lane_server``) stay up, and each step of the run that fits it gets a
step process forked from that template, with a kernel forked from the kernel host, as a
local step does. The step process runs the step exactly as a local one does
(``step_process``), its job and outcome travelling over pipes handed through the lane's
socket; the socket's folder (this process's, private) is mounted into the container.

What stays per step, as with a container per step:
- a new process and a new kernel; nothing of the step before in its modules or variables;
- the container as a fresh one would be: after each step, before the next can start, the
  lane kills whatever the step left running and empties the container's writable folders
  (``lane_server``); a lane that could not be cleaned is removed, never reused;
- the limits: a lane runs one step at a time, so its CPU and GPU limits are the step's.
  A step with a memory limit (``--memory``) gets a container of its own, as before: in a
  lane, the lane's step template (~40 MiB with papermill imported) would count against
  the step's limit, and a limit a step fits in alone could kill it in a lane;
- read-only inputs: a lane mounts what any step of its run may use as whole folders, the
  notebook's folder, the workspace's results and data read-only, the run's step folders
  and the staging folder writable; a step whose inputs lie
  elsewhere (a dataset registered in place, an input cache) gets a container of its own.

Steps with secrets get a container of their own, as before: their values reach a kernel
only through the stdin of a container that holds nothing else. Lanes are created when a
step finds none free (the first step of a run starts one; a fan-out starts one per branch
running at once) and removed when the run ends; a killed runner's are stopped by their
tether and removed by the next runner on the host (``remove_dead_containers``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors.base import StepOutcome, Submission
from mlpipe_jupyter.executors.docker.containers import (
    ContainerStep,
    StepContainer,
    package_mount,
    say_in_log,
)
from mlpipe_jupyter.executors.docker.kernel_host import LANE_FLAG, LANE_VARIABLE
from mlpipe_jupyter.executors.docker.lane_server import LANE_KEY
from mlpipe_jupyter.executors.step_process import StepProcess
from mlpipe_jupyter.executors.template_client import (
    SocketAddress,
    TemplateUnavailable,
    fork_process,
    runtime_dir,
)
from mlpipe_jupyter.processes import process_alive
from mlpipe_jupyter.store.workspace import Workspace

log = logging.getLogger(__name__)

SOCKET_NAME = "lane.sock"
FOLDER_PREFIX = "lane-"  # lane-PID-XXXX in the runtime folder: the runner's PID, for cleanup
# Longest a step waits for the lane it started (a slow engine); then it starts its own.
START_WAIT_SECONDS = 120.0
ALIVE_CHECK_SECONDS = 0.5  # while waiting for the socket, this often: did the container end?
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class LaneKey:
    """What a container fixes at its creation, so what steps must share to share a lane."""

    image: str
    cwd: str
    network: bool
    resources: str  # the limits, as text
    run_id: str

    @classmethod
    def of(cls, step: ContainerStep) -> LaneKey:
        task = step.task
        return cls(step.image, str(task.cwd.resolve()), task.network, repr(task.resources),
                   task.run_id)


class Lane:
    """One started lane: its container, its socket, how many steps it served."""

    def __init__(self, client: Any, like: ContainerStep, mounts: dict[str, dict[str, str]],
                 folder: Path) -> None:
        self.container = StepContainer(client, like)
        self.mounts = mounts
        self.folder = folder
        self.socket_path = folder / SOCKET_NAME
        self.served = 0
        self.broken = False  # never reused again

    def begin(self) -> str | None:
        """Start the container and wait for its step template; None when it serves, else
        why not."""
        task = self.container.step.task
        if not self.container.start([LANE_FLAG, str(self.socket_path)], self.mounts,
                                    task.run_id, task.step, environment={LANE_VARIABLE: "1"}):
            return "stopped while starting"
        self.container.send_line("{}")  # no secrets: the tether passes it on, unused
        deadline = time.monotonic() + START_WAIT_SECONDS
        checked = time.monotonic()
        while not self.socket_path.exists():
            now = time.monotonic()
            if now > deadline:
                return f"its step template did not start in {START_WAIT_SECONDS:g} s"
            if now - checked > ALIVE_CHECK_SECONDS:
                checked = now
                if not self.container.alive():
                    return f"its container ended: {self.container.last_output()}"
            time.sleep(0.01)
        return None

    def serves(self, step: ContainerStep) -> bool:
        """Whether every folder ``step`` reads or writes is mounted, as it needs it."""
        def under(path: Path, mode: str) -> bool:
            real = Path(path).resolve()
            return any(mount["mode"] in (mode, "rw") and real.is_relative_to(source)
                       for source, mount in self.mounts.items())

        task = step.task
        return (not self.broken and under(task.cwd, "ro")
                and all(under(p, "ro") for p in step.read_only)
                and all(under(p, "rw") for p in step.writable))

    def run(self, submission: Submission) -> StepOutcome | None:
        """Run the submission's step in a step process of this lane; None (and the lane
        broken) when the lane could not fork one: the step then gets its own container."""
        task = submission.task
        try:
            process = StepProcess(fork_process(
                SocketAddress(str(self.socket_path), LANE_KEY), ["--kernel", task.kernel_name],
                {}, str(task.cwd.resolve()), stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        except TemplateUnavailable as exc:
            log.info("lane %s cannot serve step %s: %s", self.container.short_id, task.step, exc)
            self.broken = True
            return None
        self.served += 1
        say_in_log(task, f"step {task.step} in lane container {self.container.short_id}, its "
                         f"{_ordinal(self.served)} step (cleaned after each)")
        try:
            return process.run(submission)
        finally:
            process.shutdown()  # it ends; the lane cleans the container, then tells us
            if not process.process.exit_report.get("cleaned"):
                self.broken = True  # not cleaned, or the lane is gone: never used again

    def remove(self) -> None:
        """Remove the container (whatever runs in it ends) and the socket's folder."""
        self.broken = True
        self.container.remove()
        shutil.rmtree(self.folder, ignore_errors=True)


class Lanes:
    """The executor's lanes: free ones by ``LaneKey``; a step that finds none starts one."""

    def __init__(self, client: Any, workspace: Workspace | None) -> None:
        self.client = client
        self.workspace = workspace
        self._lock = threading.Lock()
        self._free: dict[LaneKey, list[Lane]] = {}
        self._all: list[Lane] = []
        self._closed = False
        self._unavailable: str | None = None  # why lanes are not used (any more) in this run

    def take(self, step: ContainerStep) -> Lane | None:
        """A free lane for ``step``, or a new one (started here, so waited for); None when
        the step needs a container of its own."""
        if self.workspace is None or step.task.secrets or step.task.resources.memory_bytes:
            return None
        key = LaneKey.of(step)
        found: Lane | None = None
        with self._lock:
            if self._closed or self._unavailable:
                return None
            free = self._free.setdefault(key, [])
            # a free lane of the key serves the step unless its inputs lie elsewhere: then
            # no lane of the run would, and the lane stays free for the next step
            found = next((lane for lane in reversed(free) if lane.serves(step)), None)
            if found is not None:
                free.remove(found)
                return found
            if free:
                return None
        started = self._start(step)
        if started is not None and not started.serves(step):  # inputs outside its folders
            self.give_back(started)
            return None
        return started

    def give_back(self, lane: Lane) -> None:
        """A lane whose step ended: free again, or removed when broken or the run is over."""
        with self._lock:
            if not lane.broken and not self._closed:
                self._free.setdefault(LaneKey.of(lane.container.step), []).append(lane)
                return
        self._retire(lane)

    def _start(self, like: ContainerStep) -> Lane | None:
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-",
                                           dir=runtime_dir()))
        except (OSError, TemplateUnavailable) as exc:
            self._give_up(f"no folder for a lane's socket: {exc}")
            return None
        if len(str(folder / SOCKET_NAME)) > MAX_SOCKET_PATH:
            shutil.rmtree(folder, ignore_errors=True)
            self._give_up(f"the socket path under {folder} is too long")
            return None
        mounts = self._mounts(like, folder)
        lane = Lane(self.client, like, mounts, folder)
        with self._lock:
            self._all.append(lane)
        try:
            why = lane.begin()
        except Exception as exc:  # the engine refused: the step's own container will say why
            why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            self._give_up(why)
            self._retire(lane)
            return None
        return lane

    def _give_up(self, why: str) -> None:
        with self._lock:
            first = self._unavailable is None
            self._unavailable = why
        if first:
            log.info("docker steps run in containers of their own: a lane did not start (%s)",
                     why)

    def _retire(self, lane: Lane) -> None:
        with self._lock:
            if lane in self._all:
                self._all.remove(lane)
        lane.remove()

    def _mounts(self, like: ContainerStep, folder: Path) -> dict[str, dict[str, str]]:
        """Whole folders: what any step of ``like``'s run may read or write; the socket's."""
        assert self.workspace is not None
        workspace = self.workspace
        writable = [workspace.run_dir(like.task.run_id) / "steps", workspace.staging_dir, folder]
        read_only = [like.task.cwd, workspace.results_dir, workspace.data_dir]
        mounts: dict[str, dict[str, str]] = {}
        for folders, mode in ((read_only, "ro"), (writable, "rw")):
            for path in folders:
                path.mkdir(parents=True, exist_ok=True)  # else Docker makes it, as root
                real = str(path.resolve())
                mounts[real] = {"bind": real, "mode": mode}
        mounts.update(package_mount())
        return mounts

    def close(self) -> None:
        """Remove every lane (the run is over), at once and in parallel."""
        with self._lock:
            self._closed = True
            lanes = list(self._all)
            self._all.clear()
            self._free.clear()
        removers = [threading.Thread(target=lane.remove, daemon=True, name="mlpipe-lane-end")
                    for lane in lanes]
        for remover in removers:
            remover.start()
        for remover in removers:
            remover.join()


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def remove_dead_lane_folders() -> int:
    """Remove the socket folders of lanes whose runner is no longer alive."""
    removed = 0
    with contextlib.suppress(OSError, TemplateUnavailable):
        for folder in runtime_dir().glob(f"{FOLDER_PREFIX}*-*"):
            pid = folder.name[len(FOLDER_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed
