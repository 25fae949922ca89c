"""The ``docker`` compute target: each step's papermill notebook in a container of its image.

What a container may do (network, capabilities, mounts, user) and how it is tethered to
this process is ``containers.py``'s business, shared with Dask workers. This executor
picks the image of each step — its own (``--image``, papermill added) or its
environment's — building it once, and runs steps on a thread pool: in a lane of the run
(``lanes.py``: a container that serves the run's steps one after another, cleaned
between them) or, for a step with secrets, a memory limit or inputs outside the lane's
folders, in a container of its own; how that container ended becomes an outcome in
``ContainerExit.outcome``.
Containers a killed runner left behind on this host are removed when the next runner
starts.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import ExecutorError, SecretError
from mlpipe_jupyter.executors.base import (
    Executor,
    StepOutcome,
    Submission,
    Unapplied,
    other_limits,
)
from mlpipe_jupyter.executors.docker.bootstrap import base_image_tag, cache_dir
from mlpipe_jupyter.executors.docker.containers import (
    LABEL_RUN,
    StepContainer,
    container_step,
    engine_error_message,
    remove_dead_containers,
    with_missing_module_hint,
)
from mlpipe_jupyter.executors.docker.engine import docker_client
from mlpipe_jupyter.executors.docker.images import ensure_env_image, ensure_step_image
from mlpipe_jupyter.executors.docker.lanes import Lanes, remove_dead_lane_folders
from mlpipe_jupyter.model.step import StepHeader
from mlpipe_jupyter.store.environments import EnvironmentStore, parse_env_ref
from mlpipe_jupyter.store.secrets import SecretStore
from mlpipe_jupyter.store.workspace import Workspace

log = logging.getLogger(__name__)

__all__ = ["LABEL_RUN", "DockerExecutor"]


class DockerExecutor(Executor):
    """Runs each step in a container of its environment's image: a lane's, or its own."""

    name = "docker"

    def __init__(self, target: str = "docker", workspace: Workspace | None = None,
                 **_options: Any) -> None:
        super().__init__()
        self.target = target
        self.workspace = workspace
        self._client: Any = None
        self._images: dict[tuple[str | None, str | None], str] = {}  # (env, image) -> id
        self._pool: ThreadPoolExecutor | None = None
        self._lanes: Lanes | None = None  # created with the first prepare

    # -- before the run ---------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def check(self) -> None:
        self.remove_leftovers()

    def remove_leftovers(self) -> int:
        """Remove containers of runners on this host that are no longer alive (and their
        lanes' socket folders)."""
        remove_dead_lane_folders()
        return remove_dead_containers(self.client)

    def environment_fingerprint(self, env: str | None, image: str | None = None) -> str:
        return f"docker:{self._image(env, image)}"

    def unapplied(self, header: StepHeader) -> list[Unapplied]:
        # resources become container limits (containers.py), the image is the container's
        return [Unapplied(what, "a Docker container has no such limit")
                for what in other_limits(header)]

    def _image(self, env: str | None, image: str | None = None) -> str:
        """The id of the image a step runs in: its own (``--image``, with papermill
        added), its environment's, or mlpipe's base image."""
        key = (env, image)
        if key in self._images:
            return self._images[key]
        if image is not None:
            builds = self.workspace.root / "images" if self.workspace else cache_dir().parent / "builds"
            found = ensure_step_image(self.client, image, builds)
        elif env is None:
            import docker.errors

            tag = base_image_tag()
            try:
                found = str(self.client.images.get(tag).id)
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
            found = ensure_env_image(self.client, environment, log_path)
        self._images[key] = found
        return found

    def prepare(self, cwd: Path, expected_tasks: int, max_parallel: int) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="mlpipe-docker")
        self._lanes_of_run()

    def _lanes_of_run(self) -> Lanes:
        if self._lanes is None:
            self._lanes = Lanes(self.client, self.workspace)
        return self._lanes

    # -- running ----------------------------------------------------------------------------
    def launch(self, submission: Submission) -> None:
        if self._pool is None:
            self.prepare(submission.task.cwd, 1, os.cpu_count() or 1)
        assert self._pool is not None
        self._pool.submit(submission.execute, lambda: self._run(submission))

    def internal_error(self, exc: BaseException) -> str:
        return engine_error_message(exc)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._lanes is not None:
            self._lanes.close()
            self._lanes = None

    def _run(self, submission: Submission) -> StepOutcome:
        """In a pool thread: the task in a lane of the run, or in a container of its own
        (from creation to removal); a module missing in the image says how to add it."""
        outcome = self._run_in_container(submission)
        return with_missing_module_hint(outcome, submission.task)

    def _run_in_container(self, submission: Submission) -> StepOutcome:
        task = submission.task
        try:  # resolved here, on the runner; the container gets them on its stdin
            secrets = SecretStore(self.workspace).environment(task.secrets) if task.secrets else {}
        except SecretError as exc:
            return StepOutcome(task, ok=False, error=str(exc))
        step = container_step(task, self._image(task.env, task.image))
        lanes = self._lanes_of_run()
        lane = lanes.take(step)
        if lane is not None:
            try:
                outcome = lane.run(submission)
            finally:
                lanes.give_back(lane)
            if outcome is not None:
                return outcome
        container = StepContainer(self.client, step)
        # a cancel while the image was looked up stops the container at once
        with submission.stop.watch(container.stop):
            ended = container.run(secrets)
        return ended.outcome(task, canceled=submission.stop.canceled)
