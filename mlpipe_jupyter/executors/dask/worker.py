"""What runs on a Dask worker: one step notebook, executed by papermill in a fresh kernel,
or in a container of the step's environment on the worker's Docker engine.

This module is imported by the workers, so it holds no runner state: ``run_step`` gets the
step's ``StepTask.to_dict`` (with how to prepare it) and returns its ``StepOutcome.to_dict``
(with where it ran), plain dicts cheap to pickle. The step itself runs through the step
runner (``step_runner.run_step_notebook``) or in a container (``docker.containers``),
as on the runner's machine.
Paths are the runner's paths: with a shared-filesystem datastore they are valid on every
worker. With an object-store datastore ``run_step_objstore`` wraps ``run_step``: inputs are
downloaded, paths rewritten to a worker-local folder, outputs uploaded and committed.
The log is appended as the step runs, so ``mlpipe logs -f`` follows a step on any worker:
with a shared filesystem the worker appends to the runner's log file itself; with an
object store a ``streams.Tailer`` thread sends what the step appends to its local log and
metrics file to the runner as Dask events (``streams.STREAM_TOPIC``), and the full text
still comes back with the result. Cancel reaches a running step through a Dask ``Event``
(``future.cancel()`` alone cannot stop a task that has started): a watcher sets the
step's stop signal; the step runner enforces the timeout next to the kernel.
A step's secrets come as names only (``StepTask.secrets``): the worker resolves them from its
own sources (``store.secrets``: its ``MLPIPE_SECRET_<NAME>`` variables, its own registry for
the workspace's path, its files), so no value travels through the scheduler; they go into
a fresh kernel's environment (or the container's stdin) and are masked in what it writes.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from mlpipe_jupyter.executors.base import StepOutcome, StepTask
from mlpipe_jupyter.executors.dask.streams import start_tailer
from mlpipe_jupyter.executors.step_runner import load_papermill, run_step_notebook
from mlpipe_jupyter.executors.stop_signal import CANCELED, StopSignal

log = logging.getLogger(__name__)

# How often the watcher looks at the cancel events.
WATCH_INTERVAL_SECONDS = 0.3


def cancel_event_names(run_id: str, step: str) -> tuple[str, str]:
    """The Dask ``Event`` names that cancel one step, or every step of its run."""
    return f"mlpipe-cancel:{run_id}", f"mlpipe-cancel:{run_id}:{step}"


def _worker_identity() -> tuple[str, str]:
    """(worker address, worker name) of the Dask worker running this task, if any."""
    try:
        from distributed import get_worker

        worker = get_worker()
        return str(worker.address), str(worker.name)
    except Exception:  # called outside a worker (unit tests, local debugging)
        return "", ""


def _reset_outputs(staging: Path | None, outputs: list[str]) -> None:
    """Empty the output folders: a retry after a lost worker must not see its half-writes."""
    if not staging:
        return
    for name in outputs:
        folder = staging / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)


def cancel_events(task: StepTask) -> list[Any]:
    """The step's cancel ``Event``s; call from the task's thread, where ``get_client()``
    finds the worker's client (not from the kernel's or the watcher's thread)."""
    try:
        from distributed import Event, get_client

        client = get_client()
        return [Event(name, client=client)
                for name in cancel_event_names(task.run_id, task.step)]
    except Exception:  # not on a worker: no cancel, only the timeout
        log.debug("no cancel events: not on a dask worker", exc_info=True)
        return []


class _Watcher(threading.Thread):
    """Sets the step's stop signal when one of its cancel events is set."""

    def __init__(self, stop: StopSignal, events: list[Any]) -> None:
        super().__init__(daemon=True, name="mlpipe-dask-watch")
        self._stop_signal = stop
        self._halt = threading.Event()
        self._events = events

    def run(self) -> None:
        while not self._halt.wait(WATCH_INTERVAL_SECONDS):
            if any(self._is_set(event) for event in self._events):
                self._stop_signal.set(CANCELED)
                return

    @staticmethod
    def _is_set(event: Any) -> bool:
        try:
            return bool(event.is_set())
        except Exception:  # the scheduler is briefly unreachable: ask again next time
            log.debug("cancel event check failed", exc_info=True)
            return False

    def stop(self) -> None:
        self._halt.set()


def _placement() -> dict[str, Any]:
    """Where this task runs: ``worker`` (address), ``worker_name``, ``host`` and ``pid``."""
    address, name = _worker_identity()
    return {"worker": address, "worker_name": name, "host": socket.gethostname(),
            "pid": os.getpid()}


def run_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Execute one step notebook here; never raises for a failing step.

    ``spec["task"]`` is the ``StepTask.to_dict`` of the step. It runs in the worker's
    Python, or in the step's container when ``spec["container"]`` names its environment
    (the worker needs a Docker engine). Returns ``outcome`` (``StepOutcome.to_dict``) with
    where it ran (``_placement``).
    """
    task = StepTask.from_dict(spec["task"])
    placement = _placement()
    return {"outcome": _run_here(task, spec, placement).to_dict(), **placement}


def _run_here(task: StepTask, spec: dict[str, Any], placement: dict[str, Any]) -> StepOutcome:
    started = time.time()
    address = placement["worker"]
    stop = StopSignal()
    watcher = _Watcher(stop, cancel_events(task))
    watcher.start()
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with task.log_path.open("a", encoding="utf-8") as log_file:
            # The first line says where the step ran: after a lost worker the log shows both.
            where = "in a container on" if spec.get("container") else "on"
            log_file.write(f"--- mlpipe: step {task.step} {where} dask worker {address or '?'} "
                           f"({placement['worker_name']}, host {placement['host']}, "
                           f"pid {placement['pid']}) ---\n")
            for note in spec.get("log_notes", []):  # how the worker prepared the step
                log_file.write(f"--- mlpipe: {note} ---\n")
            log_file.flush()
            _reset_outputs(task.staging, list(spec.get("outputs", [])))
            secrets, problem = _resolve_secrets(task, spec.get("workspace"))
            if problem is not None:
                outcome = StepOutcome(task, ok=False, error=f"on worker {address}: {problem}")
            elif spec.get("container"):
                outcome = _run_in_container(task, spec["container"], stop, log_file, address,
                                            secrets)
            else:
                outcome = _run_in_kernel(task, bool(spec.get("warm", True)) and not secrets,
                                         stop, log_file, address, secrets)
    finally:
        watcher.stop()
    return replace(outcome, started_at=started, ended_at=time.time())


def _resolve_secrets(task: StepTask, workspace: str | None) -> tuple[dict[str, str], str | None]:
    """The step's secrets from this worker's own sources, or why they cannot be had."""
    if not task.secrets:
        return {}, None
    from mlpipe_jupyter.errors import SecretError
    from mlpipe_jupyter.store.secrets import SecretStore

    try:
        return SecretStore(Path(workspace) if workspace else None).environment(task.secrets), None
    except SecretError as exc:
        return {}, str(exc)


def _run_in_kernel(task: StepTask, warm: bool, stop: StopSignal, log_file: TextIO,
                   address: str, secrets: dict[str, str] | None = None) -> StepOutcome:
    """The step runner on a fresh kernel of the worker's own Python.

    The kernel was started ahead when it could be (``warm``: steps that share a working
    folder, i.e. a shared filesystem); each kernel runs this one step and is shut down.
    """
    from mlpipe_jupyter.executors.dask.warm import run_with_kernel
    from mlpipe_jupyter.executors.kernels import WarmKernel, start_kernel

    load_papermill()
    done: list[StepOutcome] = []

    def execute(kernel: WarmKernel | None, error: Exception | None) -> None:
        done.append(run_step_notebook(task, kernel, stop, start_error=error, output=log_file,
                                      where=f" on worker {address}", secrets=secrets))

    if warm:
        run_with_kernel(task.kernel_name, task.cwd, execute)
    else:
        try:
            kernel = start_kernel(task.kernel_name, task.cwd, env=secrets or None, fork=True)
        except Exception as exc:
            execute(None, exc)
        else:
            try:
                execute(kernel, None)
            finally:
                kernel.shutdown()
    if not done:  # the step runner raised (logged by the kernel's slot)
        return StepOutcome(task, ok=False, error=f"internal error on worker {address}; see "
                                                 "the worker's log")
    return done[0]


def _run_in_container(task: StepTask, box: dict[str, Any], stop: StopSignal,
                      log_file: TextIO, address: str,
                      secrets: dict[str, str] | None = None) -> StepOutcome:
    """The step in a container of its environment, on this worker's Docker engine.

    The image is built here when the engine lacks it (one build per host at a time); the
    container is tethered to this worker process, so a lost worker's step stops too, and
    it enforces the step's timeout itself.
    """
    from mlpipe_jupyter.executors.docker.containers import (
        StepContainer,
        container_step,
        engine_error_message,
        remove_dead_containers,
        with_missing_module_hint,
    )
    from mlpipe_jupyter.executors.docker.engine import docker_client
    from mlpipe_jupyter.executors.docker.images import build_log_path, ensure_env_image
    from mlpipe_jupyter.store.environments import EnvironmentSpec, EnvironmentVersion

    env = box["environment"]
    environment = EnvironmentVersion(env["name"], int(env["version"]),
                                     EnvironmentSpec(env["image"], tuple(env["pip"]),
                                                     tuple(env["apt"])))

    def say(line: str) -> None:
        log_file.write(f"--- mlpipe: {line} ---\n")
        log_file.flush()

    try:
        client = docker_client()
        remove_dead_containers(client)
        image = ensure_env_image(client, environment, build_log_path(environment), log=say)
    except Exception as exc:
        return StepOutcome(task, ok=False, error=f"on worker {address}: {exc}")
    try:
        container = StepContainer(client, container_step(task, image))
        with stop.watch(container.stop):
            ended = container.run(secrets)
        return with_missing_module_hint(ended.outcome(task, canceled=stop.canceled), task)
    except Exception as exc:
        return StepOutcome(task, ok=False,
                           error=f"on worker {address}: {engine_error_message(exc)}")


def _rewrite_paths(text: str, mapping: dict[str, str]) -> str:
    """Replace host paths (as they appear JSON-escaped in the notebook) by worker paths,
    longest first so that a folder never shadows a path inside it."""
    import json

    for host in sorted(mapping, key=len, reverse=True):
        text = text.replace(json.dumps(host)[1:-1], json.dumps(mapping[host])[1:-1])
    return text


def run_step_objstore(spec: dict[str, Any]) -> dict[str, Any]:
    """Run a step on a worker that shares no filesystem with the runner.

    ``spec["objstore"]`` gives the datastore URL, each input's host path and its prefix in
    the datastore, and the result id. Inputs are downloaded into a worker-local folder, the
    notebook (sent as text) runs with its context paths rewritten to local ones, and on
    success the outputs are uploaded and committed as ``results/<result_id>/`` with its
    marker. While it runs, a ``streams.Tailer`` streams the log and the metrics to the runner; the
    executed notebook, the whole log and the metrics also come back as text, with the
    stream's ``stream_key``.
    """
    import tempfile

    from mlpipe_jupyter.executors.dask import objstore
    from mlpipe_jupyter.executors.dask.input_cache import InputCache

    remote = spec["objstore"]
    fs, root = objstore.filesystem(remote["url"])
    local = Path(tempfile.mkdtemp(prefix="mlpipe-step-"))
    result: dict[str, Any] | None = None
    try:
        cache = InputCache.from_environment()
        mapping: dict[str, str] = {}
        notes: list[str] = []
        for name, item in sorted(remote["inputs"].items()):
            folder = local / "inputs" / name
            if cache is None:
                objstore.download_folder(fs, f"{root}/{item['prefix']}", folder)
                notes.append(f"input {name}: downloaded")
            else:
                notes.append(f"input {name}: "
                             f"{cache.fetch(fs, remote['url'], root, item['prefix'], folder)}")
            mapping[item["host"]] = str(folder)
        task = StepTask.from_dict(spec["task"])
        for name in spec.get("outputs", []) if task.staging is not None else []:
            mapping[str(task.staging / name)] = str(local / "outputs" / name)
        mapping[remote["metrics_path"]] = str(local / "metrics.jsonl")
        notebook = local / "step.ipynb"
        notebook.write_text(_rewrite_paths(remote["notebook_text"], mapping), encoding="utf-8")
        (local / "cwd").mkdir()
        local_task = replace(
            task, step_notebook=notebook, output_notebook=local / "output.ipynb",
            log_path=local / "step.log", cwd=local / "cwd", staging=local / "outputs",
            input_paths={n: local / "inputs" / n for n in remote["inputs"]})
        local_spec = {**spec, "warm": False,  # a new cwd each step
                      "log_notes": notes}
        tailer = start_tailer(spec["task"], {"log": local / "step.log",
                                              "metrics": local / "metrics.jsonl"})
        try:
            placement = _placement()
            outcome = _run_here(local_task, local_spec, placement)
        finally:
            if tailer is not None:
                tailer.finish()
        if outcome.ok:
            try:
                staging = f"{root}/staging/{objstore.unique_suffix()}"
                objstore.upload_folder(fs, local / "outputs", staging)
                objstore.commit(fs, staging, f"{root}/results/{remote['result_id']}")
            except Exception as exc:
                outcome = replace(outcome, ok=False, error=(
                    f"uploading the step's outputs to the datastore failed: "
                    f"{type(exc).__name__}: {exc}"))
        result = {"outcome": outcome.to_dict(), **placement,
                  "stream_key": tailer.key if tailer is not None else None}
        for key, name in (("output_notebook_text", "output.ipynb"), ("log_text", "step.log"),
                          ("metrics_text", "metrics.jsonl")):
            path = local / name
            # bytes decoded as the tailer does (no newline translation): the same offsets
            result[key] = (path.read_bytes().decode("utf-8", "replace") if path.exists()
                           else None)
        return result
    except Exception as exc:
        error = (f"the datastore could not be used on the worker: "
                 f"{type(exc).__name__}: {exc}")
        if result is None:
            result = _placement()
        result["outcome"] = {**result.get("outcome", {}), "ok": False, "error": error,
                             "ended_at": time.time()}
        return result
    finally:
        shutil.rmtree(local, ignore_errors=True)
