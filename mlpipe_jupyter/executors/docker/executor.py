"""The ``docker`` compute target: each step's papermill notebook in its own container.

Security and ownership, by default: no network (``--network`` on a step opts in, with the
host network, the only one an engine without a bridge has), all capabilities dropped,
no-new-privileges, a pids limit, the host user's uid/gid (so files on the host belong to
the user), inputs and the notebook folder mounted read-only, only the step's staging and
run folders writable, no Docker socket. Every path is mounted at the same path as on the
host, so the rendered step notebook works unchanged in a container.

The executor owns its containers' lives: they carry labels naming the runner's host and
pid, are stopped and removed in ``finally``, and leftovers of a killed runner are removed
when the next runner starts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlpipe_jupyter
from mlpipe_jupyter.errors import ExecutorError
from mlpipe_jupyter.executors.base import Executor, OutcomeCallback, StepOutcome, StepTask
from mlpipe_jupyter.executors.docker.bootstrap import base_image_tag
from mlpipe_jupyter.executors.docker.engine import docker_client
from mlpipe_jupyter.executors.docker.images import ensure_env_image
from mlpipe_jupyter.render import notebook_error
from mlpipe_jupyter.store.environments import EnvironmentStore, parse_env_ref
from mlpipe_jupyter.store.results import process_alive
from mlpipe_jupyter.store.workspace import Workspace

log = logging.getLogger(__name__)

LABEL_RUN = "org.mlpipe.run"
LABEL_STEP = "org.mlpipe.step"
LABEL_HOST = "org.mlpipe.runner-host"
LABEL_PID = "org.mlpipe.runner-pid"
PACKAGE_MOUNT = "/opt/mlpipe/lib"
STOP_GRACE_SECONDS = 3
PIDS_LIMIT = 1024


def _stop_reason(exit_code: int, oom: bool, memory: int | None) -> str:
    if oom or exit_code == 137 and memory:
        limit = f" ({memory / 1024**2:.0f} MiB, --memory)" if memory else ""
        return f"the container was killed for using more memory than its limit{limit}"
    if exit_code == 138:
        return "the kernel died (exit 138), most likely out of memory"
    return f"the container exited with code {exit_code}; see the step's log"


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
        removed = 0
        host = socket.gethostname()
        for container in self.client.containers.list(all=True, filters={"label": f"{LABEL_HOST}={host}"}):
            pid = container.labels.get(LABEL_PID, "")
            if pid.isdigit() and not process_alive(int(pid)):
                container.remove(force=True)
                removed += 1
        return removed

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
            try:
                container.stop(timeout=STOP_GRACE_SECONDS)
            except Exception:  # already gone
                log.debug("stopping a container failed", exc_info=True)

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
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            if "could not select device driver" in message:
                message = "GPUs were requested (--gpus) but the Docker engine has no GPU runtime"
            outcome = StepOutcome(task, ok=False, error=f"docker: {message}",
                                  started_at=started, ended_at=time.time())
        on_done(outcome)

    def _mounts(self, task: StepTask) -> dict[str, dict[str, str]]:
        mounts: dict[str, dict[str, str]] = {}

        def mount(path: Path, mode: str) -> None:
            real = str(Path(path).resolve())
            mounts[real] = {"bind": real, "mode": mode}

        mount(task.cwd, "ro")
        for path in task.input_paths.values():
            mount(path, "ro")
        mount(task.step_notebook.parent, "rw")
        if task.staging is not None:
            mount(task.staging, "rw")
        package = Path(mlpipe_jupyter.__file__).resolve().parent
        mounts[str(package)] = {"bind": f"{PACKAGE_MOUNT}/mlpipe_jupyter", "mode": "ro"}
        return mounts

    def _run(self, task: StepTask, started: float) -> StepOutcome:
        import requests.exceptions
        from docker.types import DeviceRequest

        key = (task.run_id, task.step)
        if self._is_canceled(task):
            return StepOutcome(task, ok=False, canceled=True, error="canceled")
        params_file = task.step_notebook.parent / "parameters.json"
        params_file.write_text(json.dumps(dict(task.parameters)), encoding="utf-8")
        resources = task.resources
        options: dict[str, Any] = {}
        if resources.memory_bytes:
            options["mem_limit"] = resources.memory_bytes
            options["memswap_limit"] = resources.memory_bytes  # no swap: the limit is the limit
        if resources.cpus:
            options["nano_cpus"] = int(min(resources.cpus, os.cpu_count() or 1) * 1e9)
        if resources.gpus:
            options["device_requests"] = [DeviceRequest(count=resources.gpus, capabilities=[["gpu"]])]
        container = self.client.containers.create(
            self._image(task.env),
            ["papermill", str(task.step_notebook), str(task.output_notebook),
             "-f", str(params_file), "-k", task.kernel_name, "--no-progress-bar", "--log-output"],
            user=f"{os.getuid()}:{os.getgid()}",
            environment={"HOME": "/tmp", "USER": "mlpipe", "PYTHONPATH": PACKAGE_MOUNT,
                         "PYTHONDONTWRITEBYTECODE": "1"},
            working_dir=str(task.cwd.resolve()),
            volumes=self._mounts(task),
            network_mode="host" if task.network else "none",
            labels={LABEL_RUN: task.run_id, LABEL_STEP: task.step,
                    LABEL_HOST: socket.gethostname(), LABEL_PID: str(os.getpid())},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=PIDS_LIMIT,
            init=True,
            detach=True,
            **options,
        )
        with self._lock:
            self._containers[key] = container
        timed_out = False
        try:
            container.start()
            follower = threading.Thread(target=self._follow_logs, args=(container, task.log_path),
                                        daemon=True)
            follower.start()
            try:
                result = container.wait(timeout=task.timeout_seconds)
                exit_code = int(result.get("StatusCode", -1))
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                timed_out = True  # docker-py 7 raises ConnectionError ("Read timed out.") here
                container.stop(timeout=STOP_GRACE_SECONDS)
                exit_code = int(container.wait(timeout=30).get("StatusCode", -1))
            follower.join(timeout=5)
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        finally:
            with self._lock:
                self._containers.pop(key, None)
            try:
                container.remove(force=True)
            except Exception:
                log.debug("removing a container failed", exc_info=True)
        ended = time.time()
        if exit_code == 0:
            return StepOutcome(task, ok=True, started_at=started, ended_at=ended)
        if timed_out:
            return StepOutcome(task, ok=False, timed_out=True, started_at=started, ended_at=ended,
                               error=f"timed out after {task.timeout_seconds:g} s (--timeout); "
                                     "the container was stopped")
        if self._is_canceled(task):
            return StepOutcome(task, ok=False, canceled=True, error="canceled",
                               started_at=started, ended_at=ended)
        raised = notebook_error(task.output_notebook) if exit_code == 1 else None
        if raised is not None:
            return StepOutcome(task, ok=False, error=f"{raised.ename}: {raised.evalue}",
                               exception_name=raised.ename, exception_value=raised.evalue,
                               started_at=started, ended_at=ended)
        return StepOutcome(task, ok=False, started_at=started, ended_at=ended,
                           error=_stop_reason(exit_code, oom, resources.memory_bytes))

    @staticmethod
    def _follow_logs(container: Any, log_path: Path) -> None:
        """Stream the container's output into the step's log while it runs."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with log_path.open("ab") as out:
                for chunk in container.logs(stream=True, follow=True):
                    out.write(chunk)
                    out.flush()
        except Exception:  # the container was removed under us: the log is complete
            log.debug("log streaming ended", exc_info=True)
