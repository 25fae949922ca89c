"""One step notebook in one container: how it is created, watched, stopped and removed.

Shared by the ``docker`` executor (containers on the runner's engine) and by Dask workers
that run a step's environment on their own engine, so both apply the same isolation:
no network unless the step asks (``--network``: the host network, the only one an engine
without a bridge has), all capabilities dropped, no-new-privileges, a pids limit, the
starting user's uid/gid (files on the host belong to them), inputs and the notebook folder
read-only, only the step's staging and run folders writable, no Docker socket. Every path
is mounted at its own path, so the rendered step notebook runs unchanged. (A lane, a
container that serves several steps of a run, mounts whole folders instead: ``lanes.py``.)

Containers are tethered to the process that starts them (see ``tether.py``): if it dies,
the step stops, so a retry never shares its output folders with an orphan. They carry
labels naming that process, and ``remove_dead_containers`` cleans up what a killed
process left behind on its host.

The task crosses into the container as ``StepTask.to_dict`` (JSON, on the command line),
and the step's outcome comes back as ``StepOutcome.to_dict`` in ``outcome.json`` in the
step folder; ``ContainerExit.outcome`` merges it with what the engine saw.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlpipe_jupyter
from mlpipe_jupyter.executors.base import StepOutcome, StepTask, canceled_outcome
from mlpipe_jupyter.executors.docker.kernel_host import HOST_FILE_NAME, host_command
from mlpipe_jupyter.executors.docker.tether import EXIT_STARTER_GONE
from mlpipe_jupyter.executors.kernel_template import DEBUGGER_VARIABLE
from mlpipe_jupyter.executors.masking import Masker
from mlpipe_jupyter.executors.step_runner import stopped_outcome
from mlpipe_jupyter.executors.stop_signal import TIMED_OUT
from mlpipe_jupyter.processes import process_alive
from mlpipe_jupyter.render import notebook_error

log = logging.getLogger(__name__)

LABEL_RUN = "org.mlpipe.run"
LABEL_STEP = "org.mlpipe.step"
LABEL_HOST = "org.mlpipe.runner-host"
LABEL_PID = "org.mlpipe.runner-pid"
PACKAGE_MOUNT = "/opt/mlpipe/lib"
TETHER = f"{PACKAGE_MOUNT}/mlpipe_jupyter/executors/docker/tether.py"
KERNEL_HOST = f"{PACKAGE_MOUNT}/mlpipe_jupyter/executors/docker/{HOST_FILE_NAME}"
OUTCOME_FILE = "outcome.json"  # in the step folder: the outcome in_container reports
STOP_GRACE_SECONDS = 3
PIDS_LIMIT = 1024
# Below this, a memory limit leaves little for the step itself: a trivial step's container
# (its kernel host, runner and kernel) fails at 64 MiB and runs at 96 MiB (measured).
SMALL_MEMORY = 128 * 1024**2


@dataclass(frozen=True)
class ContainerStep:
    """Everything a container needs to execute one step notebook with papermill."""

    task: StepTask
    image: str
    read_only: tuple[Path, ...] = ()  # inputs (the cwd is always read-only)
    writable: tuple[Path, ...] = ()  # the run folder and the staging folder

    @property
    def outcome_path(self) -> Path:
        """Where ``in_container`` writes the step's outcome (in the writable step folder)."""
        return self.task.step_notebook.parent / OUTCOME_FILE


def container_step(task: StepTask, image: str) -> ContainerStep:
    """The container of a task: its inputs read-only, its run and staging folders writable.

    Only folders that exist are mounted: Docker would create a missing one, as root, where
    it should be (in the results folder). A --run-if step that runs without an upstream
    step's result has no folder for that input at all (the step sees it as None)."""
    writable = [task.step_notebook.parent] + ([task.staging] if task.staging else [])
    return ContainerStep(task, image,
                         read_only=tuple(Path(p) for p in task.input_paths.values()
                                         if Path(p).exists()),
                         writable=tuple(writable))


@dataclass
class ContainerExit:
    """How a step's container ended, with the outcome its step runner reported (None when
    the image's Python could not run it: the ``papermill`` command ran instead)."""

    exit_code: int
    oom: bool = False
    timed_out: bool = False
    stopped: bool = False  # stop() was called (a cancel)
    reported: StepOutcome | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def outcome(self, task: StepTask, canceled: bool = False) -> StepOutcome:
        """The step's outcome, as a user should read it: what the engine saw of the
        container (timeout, cancel, memory) comes first, then what the step runner inside
        reported."""
        if self.ok:
            return StepOutcome(task, ok=True)
        if self.timed_out:
            return stopped_outcome(task, TIMED_OUT, "the container")
        if canceled or self.stopped:
            return canceled_outcome(task)
        raised = notebook_error(task.output_notebook) if self.exit_code == 1 else None
        if raised is not None:
            return StepOutcome(task, ok=False, error=f"{raised.ename}: {raised.evalue}")
        return StepOutcome(task, ok=False, error=self._reason(task.resources.memory_bytes))

    def _reason(self, memory_bytes: int | None) -> str:
        if self.exit_code == EXIT_STARTER_GONE:
            return "the process that started the container went away; the step was stopped"
        if self.oom or self.exit_code == 137 and memory_bytes:
            limit = f" ({memory_bytes / 1024**2:.0f} MiB, --memory)" if memory_bytes else ""
            hint = ("; the step's papermill runner and kernel alone take ~80-100 MiB of it: "
                    "give it more" if memory_bytes and memory_bytes < SMALL_MEMORY else "")
            return f"the container was killed for using more memory than its limit{limit}{hint}"
        if self.exit_code == 138:
            return "the kernel died (exit 138), most likely out of memory"
        if self.reported is not None and self.reported.error:
            return self.reported.error  # e.g. the kernel died, or could not start
        return f"the container exited with code {self.exit_code}; see the step's log"


def _mounts(step: ContainerStep) -> dict[str, dict[str, str]]:
    mounts: dict[str, dict[str, str]] = {}

    def mount(path: Path, mode: str) -> None:
        real = str(Path(path).resolve())
        mounts[real] = {"bind": real, "mode": mode}

    mount(step.task.cwd, "ro")
    for path in step.read_only:
        mount(path, "ro")
    for path in step.writable:
        mount(path, "rw")
    mounts.update(package_mount())
    return mounts


def package_mount() -> dict[str, dict[str, str]]:
    """This package, read-only, where the container's PYTHONPATH finds it."""
    package = Path(mlpipe_jupyter.__file__).resolve().parent
    return {str(package): {"bind": f"{PACKAGE_MOUNT}/mlpipe_jupyter", "mode": "ro"}}


def _kernel_options() -> dict[str, str]:
    """The starter's kernel settings that the container's kernel host reads."""
    value = os.environ.get(DEBUGGER_VARIABLE)
    return {DEBUGGER_VARIABLE: value} if value else {}


def _limits(step: ContainerStep) -> dict[str, Any]:
    from docker.types import DeviceRequest

    options: dict[str, Any] = {}
    resources = step.task.resources
    if resources.memory_bytes:
        options["mem_limit"] = resources.memory_bytes
        options["memswap_limit"] = resources.memory_bytes  # no swap: the limit is the limit
    if resources.cpus:
        options["nano_cpus"] = int(min(resources.cpus, os.cpu_count() or 1) * 1e9)
    if resources.gpus:
        options["device_requests"] = [DeviceRequest(count=resources.gpus,
                                                     capabilities=[["gpu"]])]
    return options


class StepContainer:
    """One step's container, from creation to removal; ``stop`` may come from any thread."""

    def __init__(self, client: Any, step: ContainerStep) -> None:
        self.client = client
        self.step = step
        self._container: Any = None
        self._tether: Any = None  # the attached stdin socket, open while we live
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def run(self, secrets: Mapping[str, str] | None = None) -> ContainerExit:
        """Create, start, wait (up to the timeout), and always remove the container.

        ``secrets`` (``{ENV_VAR: value}``, resolved by the caller) are written as one JSON
        line to the container's attached stdin, never into its configuration: ``docker
        inspect`` and the image never hold them. The container's output is masked too."""
        step, task = self.step, self.step.task
        # The container enforces the timeout (the wait below), so its message names the
        # container; the step runner inside has none.
        inside = replace(task, timeout_seconds=None).to_dict()
        command = [str(step.outcome_path), json.dumps(inside)]
        step.outcome_path.unlink(missing_ok=True)  # an earlier attempt's
        try:
            if not self.start(command, _mounts(step), task.run_id, task.step):
                return ContainerExit(exit_code=-1, stopped=True)
            return self.finish(json.dumps(dict(secrets or {})), secrets)
        finally:
            self.remove()

    def start(self, arguments: list[str], mounts: dict[str, dict[str, str]], run_id: str,
              step_name: str, environment: Mapping[str, str] | None = None) -> bool:
        """Create and start the container running ``in_container ARGUMENTS`` (or, with
        ``--lane``, a lane's step template) under the kernel host, with ``environment``
        added, its stdin attached (the tether); False when stopped first."""
        task = self.step.task
        # -I -S: the tether needs only the standard library; skipping site saves ~70 ms.
        # Under it, the kernel host: the runner and the kernel forked from one Python.
        command = ["python3", "-I", "-S", TETHER, *host_command(KERNEL_HOST, arguments)]
        with self._lock:
            if self._stopped.is_set():
                return False
            self._container = self.client.containers.create(
                self.step.image, command,
                user=f"{os.getuid()}:{os.getgid()}",
                environment={"HOME": "/tmp", "USER": "mlpipe", "PYTHONPATH": PACKAGE_MOUNT,
                             "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                             **_kernel_options(), **(environment or {})},
                working_dir=str(task.cwd.resolve()),
                volumes=mounts,
                network_mode="host" if task.network else "none",
                labels={LABEL_RUN: run_id, LABEL_STEP: step_name,
                        LABEL_HOST: socket.gethostname(), LABEL_PID: str(os.getpid())},
                cap_drop=["ALL"], security_opt=["no-new-privileges"], pids_limit=PIDS_LIMIT,
                init=True,
                # stdin open, attached once, not detached: the engine closes it (and the
                # tether stops the step) when our connection drops
                stdin_open=True, detach=False,
                **_limits(self.step),
            )
        self._tether = self._container.attach_socket(params={"stdin": 1, "stream": 1})
        self._container.start()
        return True

    def finish(self, first_line: str, secrets: Mapping[str, str] | None = None
               ) -> ContainerExit:
        """Send the started container its first line (the secrets), stream its output into the step's log and wait for its end (up to the
        step's timeout). The caller removes it."""
        import requests.exceptions

        step, task, container = self.step, self.step.task, self._container
        self.send_line(first_line)
        follower = threading.Thread(target=_follow_logs,
                                    args=(container, task.log_path, Masker((secrets or {}).values())),
                                    daemon=True, name="mlpipe-container-log")
        follower.start()
        timed_out = False
        try:
            exit_code = int(container.wait(timeout=task.timeout_seconds).get("StatusCode", -1))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True  # docker-py 7 raises ConnectionError ("Read timed out.") here
            container.stop(timeout=STOP_GRACE_SECONDS)
            exit_code = int(container.wait(timeout=30).get("StatusCode", -1))
        follower.join(timeout=5)
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        return ContainerExit(exit_code, oom=oom, timed_out=timed_out,
                             stopped=self._stopped.is_set(),
                             reported=_read_outcome(task, step.outcome_path))

    @property
    def short_id(self) -> str:
        """The container's short id ("" before it is created)."""
        return str(getattr(self._container, "short_id", "") or "")

    def send_line(self, text: str) -> None:
        """The one line the tether hands to the command's stdin."""
        _send_line(self._tether, text)

    def last_output(self, lines: int = 5) -> str:
        """The end of the container's output, on one line (why it ended early)."""
        try:
            text = self._container.logs(tail=lines).decode("utf-8", "replace")
        except Exception:
            return "(its output is gone)"
        return " / ".join(line.strip() for line in text.splitlines() if line.strip()) or "no output"

    def stop(self) -> None:
        """Stop the step (a cancel): the container gets SIGTERM, then SIGKILL."""
        with self._lock:
            self._stopped.set()
            container = self._container
        if container is not None:
            try:
                container.stop(timeout=STOP_GRACE_SECONDS)
            except Exception:  # already gone
                log.debug("stopping a container failed", exc_info=True)

    def alive(self) -> bool:
        """Whether the container is still running (a lane that did not end early)."""
        try:
            self._container.reload()
        except Exception:
            return False
        return bool(self._container.attrs.get("State", {}).get("Running"))

    def remove(self) -> None:
        """Close the tether and remove the container (whatever runs in it ends)."""
        if self._tether is not None:
            try:
                self._tether.close()
            except Exception:
                log.debug("closing the container's stdin failed", exc_info=True)
        if self._container is None:
            return
        try:
            self._container.remove(force=True)
        except Exception:
            log.debug("removing a container failed", exc_info=True)


def _read_outcome(task: StepTask, path: Path) -> StepOutcome | None:
    """The outcome the container's step runner wrote, if it wrote one (and remove it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        path.unlink()
    except (OSError, ValueError):
        return None
    return StepOutcome.from_dict(task, data)


def engine_error_message(exc: BaseException) -> str:
    """One line for an error the engine raised while running a step."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    if "could not select device driver" in message:
        message = "GPUs were requested (--gpus) but the Docker engine has no GPU runtime"
    return f"docker: {message}"


def _send_line(tether: Any, text: str) -> None:
    """The one line the tether hands to ``in_container``: the secrets (``{}`` when none;
    a lane gets ``{}`` and ignores it)."""
    line = (text + "\n").encode()
    sock = getattr(tether, "_sock", tether)
    if hasattr(sock, "sendall"):
        sock.sendall(line)
    else:
        tether.write(line)
        if hasattr(tether, "flush"):
            tether.flush()


def _follow_logs(container: Any, log_path: Path, masker: Masker | None = None) -> None:
    """Stream the container's output into the step's log while it runs (secrets masked:
    what the kernel's process writes itself bypasses the step runner's masking)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pending = b""
    try:
        with log_path.open("ab") as out:
            for chunk in container.logs(stream=True, follow=True):
                if masker:
                    pending += chunk
                    if b"\n" not in pending:
                        continue
                    complete, _, pending = pending.rpartition(b"\n")
                    chunk = masker.text((complete + b"\n").decode("utf-8", "replace")).encode()
                out.write(chunk)
                out.flush()
            if pending and masker:
                out.write(masker.text(pending.decode("utf-8", "replace")).encode())
    except Exception:  # the container was removed under us: the log is complete
        log.debug("log streaming ended", exc_info=True)


def remove_dead_containers(client: Any, labels: Iterable[str] = ()) -> int:
    """Remove step containers started on this host by processes that are no longer alive."""
    import docker.errors

    removed = 0
    filters = [f"{LABEL_HOST}={socket.gethostname()}", *labels]
    # The low-level listing: ``containers.list`` inspects each container it lists, which
    # fails (404) when another runner's container ends between the listing and the inspect.
    for entry in client.api.containers(all=True, filters={"label": filters}):
        pid = (entry.get("Labels") or {}).get(LABEL_PID, "")
        if pid.isdigit() and not process_alive(int(pid)):
            try:
                client.api.remove_container(entry["Id"], force=True)
            except docker.errors.NotFound:
                continue  # removed meanwhile, by another runner on this host
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # its removal is already in progress elsewhere
                    raise
                continue
            removed += 1
    return removed


def say_in_log(task: StepTask, line: str) -> None:
    """A line of ours in the step's log, before its output."""
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
    with task.log_path.open("a", encoding="utf-8") as out:
        out.write(f"--- mlpipe: {line} ---\n")


_MISSING_MODULE = re.compile(r"^ModuleNotFoundError: No module named '([^']+)'")


def with_missing_module_hint(outcome: StepOutcome, task: StepTask) -> StepOutcome:
    """``outcome``, its error followed by how to get a missing module into the step's image
    when a step failed for one. The same notebook works locally, where the module is
    installed; in a container only the image's packages are there."""
    found = _MISSING_MODULE.match(outcome.error or "") if not outcome.ok else None
    if found is None:
        return outcome
    module = found.group(1)
    if task.image is not None:
        where = f"the step's image {task.image} (--image) does not have it; install it there"
    elif task.env is not None:
        name = task.env.split("@")[0]
        where = (f"the step's environment {task.env} does not have it; make a new version with "
                 f"the package that provides {module}: `mlpipe env create {name} --pip ...` "
                 "(its packages and that one)")
    else:
        where = ("the step ran in mlpipe's base image, which holds only papermill and "
                 f"ipykernel; give it an environment with the package that provides {module}: "
                 "`mlpipe env create NAME --pip PACKAGE`, then `--env NAME` on the run or in "
                 "the step's %%mlstep line")
    return replace(
        outcome, error=f"{outcome.error}. In a container only the image's packages are there: "
                       f"{where}")
