"""The ``docker`` compute target: each step's papermill notebook in its own container.

What a container may do (network, capabilities, mounts, user) and how it is tethered to
this process is ``containers.py``'s business, shared with Dask workers. This executor
picks the image of each step's environment (building it once), runs containers on a
thread pool, and turns how they ended into outcomes. Containers a killed runner left
behind on this host are removed when the next runner starts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import ExecutorError
from mlpipe_jupyter.executors.base import Executor, OutcomeCallback, StepOutcome, StepTask
from mlpipe_jupyter.executors.docker.bootstrap import base_image_tag
from mlpipe_jupyter.executors.docker.containers import (
    LABEL_RUN,
    ContainerExit,
    ContainerStep,
    StepContainer,
    engine_error_message,
    remove_dead_containers,
)
from mlpipe_jupyter.executors.docker.engine import docker_client
from mlpipe_jupyter.executors.docker.images import ensure_env_image
from mlpipe_jupyter.store.environments import EnvironmentStore, parse_env_ref
from mlpipe_jupyter.store.workspace import Workspace

log = logging.getLogger(__name__)

__all__ = ["LABEL_RUN", "DockerExecutor", "container_step", "outcome_of"]


def container_step(task: StepTask, image: str) -> ContainerStep:
    """The container of a task: its inputs read-only, its run and staging folders writable."""
    writable = [task.step_notebook.parent] + ([task.staging] if task.staging else [])
    resources = task.resources
    return ContainerStep(
        run_id=task.run_id, step=task.step, image=image, step_notebook=task.step_notebook,
        output_notebook=task.output_notebook, log_path=task.log_path, cwd=task.cwd,
        kernel_name=task.kernel_name,
        read_only=tuple(Path(p) for p in task.input_paths.values()), writable=tuple(writable),
        network=task.network, cpus=resources.cpus, memory_bytes=resources.memory_bytes,
        gpus=resources.gpus, timeout_seconds=task.timeout_seconds,
    )


class DockerExecutor(Executor):
    """Runs each step in a fresh container of its environment's image."""

    name = "docker"

    def __init__(self, target: str = "docker", workspace: Workspace | None = None,
                 **_options: Any) -> None:
        self.target = target
        self.workspace = workspace
        self._client: Any = None
        self._images: dict[str | None, str] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._containers: dict[tuple[str, str], Any] = {}
        self._canceled: set[tuple[str, str | None]] = set()

    # -- before the run ---------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def check(self) -> None:
        self.remove_leftovers()

    def remove_leftovers(self) -> int:
        """Remove containers of runners on this host that are no longer alive."""
        return remove_dead_containers(self.client)

    def environment_fingerprint(self, env: str | None) -> str:
        return f"docker:{self._image(env)}"

    def _image(self, env: str | None) -> str:
        if env in self._images:
            return self._images[env]
        if env is None:
            import docker.errors

            tag = base_image_tag()
            try:
                image = str(self.client.images.get(tag).id)
            except docker.errors.ImageNotFound:
                raise ExecutorError(
                    f"the runner base image {tag} is not in the Docker engine; build it once "
                    "with `mlpipe image bootstrap` (no registry needed)"
                ) from None
        else:
            if self.workspace is None:
                raise ExecutorError("the docker executor needs a workspace for environments")
            name, version = parse_env_ref(env)
            environment = EnvironmentStore(self.workspace).get(name, version)
            log_path = self.workspace.root / "environments" / f"{name}-v{environment.version}.build.log"
            image = ensure_env_image(self.client, environment, log_path)
        self._images[env] = image
        return image

    def prepare(self, cwd: Path, expected_tasks: int, max_parallel: int) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="mlpipe-docker")

    # -- running ----------------------------------------------------------------------------
    def submit(self, task: StepTask, on_done: OutcomeCallback) -> None:
        if self._pool is None:
            self.prepare(task.cwd, 1, os.cpu_count() or 1)
        assert self._pool is not None
        self._pool.submit(self._run_safely, task, on_done)

    def cancel(self, run_id: str, step: str | None = None) -> None:
        with self._lock:
            self._canceled.add((run_id, step))
            victims = [c for (r, s), c in self._containers.items()
                       if r == run_id and (step is None or s == step)]
        for container in victims:
            container.stop()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _is_canceled(self, task: StepTask) -> bool:
        return (task.run_id, task.step) in self._canceled or (task.run_id, None) in self._canceled

    def _run_safely(self, task: StepTask, on_done: OutcomeCallback) -> None:
        started = time.time()
        try:
            outcome = self._run(task, started)
        except Exception as exc:  # never let a task end without an outcome
            log.exception("step %s failed inside the docker executor", task.step)
            outcome = StepOutcome(task, ok=False, error=engine_error_message(exc),
                                  started_at=started, ended_at=time.time())
        on_done(outcome)

    def _run(self, task: StepTask, started: float) -> StepOutcome:
        key = (task.run_id, task.step)
        if self._is_canceled(task):
            return StepOutcome(task, ok=False, canceled=True, error="canceled")
        container = StepContainer(self.client, container_step(task, self._image(task.env)))
        with self._lock:
            self._containers[key] = container
        if self._is_canceled(task):  # canceled while the image was looked up
            container.stop()
        try:
            ended = container.run()
        finally:
            with self._lock:
                self._containers.pop(key, None)
        return outcome_of(task, ended, started, canceled=self._is_canceled(task))


def outcome_of(task: StepTask, ended: ContainerExit, started: float,
               canceled: bool = False) -> StepOutcome:
    """The outcome of a task from how its container ended (and its output notebook)."""
    verdict = ended.verdict(task.output_notebook, task.timeout_seconds,
                            task.resources.memory_bytes, canceled)
    return StepOutcome(task, started_at=started, ended_at=time.time(), **verdict)
