"""What runs on a Dask worker: one step notebook, executed by papermill in a fresh kernel,
or in a container of the step's environment on the worker's Docker engine.

This module is imported by the workers, so it holds no runner state: ``run_step`` gets a
plain dict (paths, limits) and returns a plain dict, both cheap to pickle.
Paths are the runner's paths: with a shared-filesystem datastore they are valid on every
worker. With an object-store datastore ``run_step_objstore`` wraps ``run_step``: inputs are
downloaded, paths rewritten to a worker-local folder, outputs uploaded and committed.
The log is appended as the step runs, so ``mlpipe logs -f`` follows a step on any worker:
with a shared filesystem the worker appends to the runner's log file itself; with an
object store a ``streams.Tailer`` thread sends what the step appends to its local log and
metrics file to the runner as Dask events (``streams.STREAM_TOPIC``), and the full text
still comes back with the result. Cancel reaches a running step through a Dask ``Event``
(``future.cancel()`` alone cannot stop a task that has started), and a timeout is enforced
here, next to the kernel.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from mlpipe_jupyter.executors.dask.streams import start_tailer

log = logging.getLogger(__name__)

# How often the watcher looks at the cancel events and the deadline.
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


def _reset_outputs(staging: str | None, outputs: list[str]) -> None:
    """Empty the output folders: a retry after a lost worker must not see its half-writes."""
    if not staging:
        return
    for name in outputs:
        folder = Path(staging) / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)


def cancel_events(spec: dict[str, Any]) -> list[Any]:
    """The step's cancel ``Event``s; call from the task's thread, where ``get_client()``
    finds the worker's client (not from the kernel's or the watcher's thread)."""
    try:
        from distributed import Event, get_client

        client = get_client()
        return [Event(name, client=client)
                for name in cancel_event_names(spec["run_id"], spec["step"])]
    except Exception:  # not on a worker: no cancel, only the timeout
        log.debug("no cancel events: not on a dask worker", exc_info=True)
        return []


class _Watcher(threading.Thread):
    """Stops the step (``stop``) when one of its cancel events is set or it runs past its
    deadline."""

    def __init__(self, stop: Callable[[], None], events: list[Any],
                 timeout: float | None) -> None:
        super().__init__(daemon=True, name="mlpipe-dask-watch")
        self._stop_step = stop
        self.reason: str | None = None  # "canceled" or "timed_out" once it acted
        self._halt = threading.Event()
        self._deadline = time.monotonic() + float(timeout) if timeout else None
        self._events = events

    def run(self) -> None:
        while not self._halt.wait(WATCH_INTERVAL_SECONDS):
            if self._deadline is not None and time.monotonic() > self._deadline:
                self.reason = "timed_out"
            elif any(self._is_set(event) for event in self._events):
                self.reason = "canceled"
            if self.reason:
                self._stop_step()
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


def run_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Execute one step notebook here; never raises for a failing step.

    In the worker's Python, or in the step's container when ``spec["container"]`` names
    its environment (the worker needs a Docker engine). Returns ``ok``, ``error``,
    ``ename``, ``evalue``, ``cell_index``, ``canceled``, ``timed_out``, ``started_at``,
    ``ended_at``, ``worker`` (address), ``worker_name``, ``host`` and ``pid``.
    """
    started = time.time()
    address, name = _worker_identity()
    result: dict[str, Any] = {
        "ok": False, "error": None, "ename": None, "evalue": None, "cell_index": None,
        "canceled": False, "timed_out": False, "started_at": started, "ended_at": None,
        "worker": address, "worker_name": name, "host": socket.gethostname(), "pid": os.getpid(),
    }
    log_path = Path(spec["log_path"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log_file:
        # The first line says where the step ran: after a lost worker the log shows both.
        where = "in a container on" if spec.get("container") else "on"
        log_file.write(f"--- mlpipe: step {spec['step']} {where} dask worker {address or '?'} "
                       f"({name}, host {result['host']}, pid {result['pid']}) ---\n")
        for note in spec.get("log_notes", []):  # how the worker prepared the step
            log_file.write(f"--- mlpipe: {note} ---\n")
        log_file.flush()
        _reset_outputs(spec.get("staging"), list(spec.get("outputs", [])))
        if spec.get("container"):
            _run_in_container(spec, log_file, result)
        else:
            _run_in_kernel(spec, log_file, result)
        result["ended_at"] = time.time()
    return result


def _run_in_kernel(spec: dict[str, Any], log_file: TextIO, result: dict[str, Any]) -> None:
    """papermill in a fresh kernel of the worker's own Python.

    The kernel was started ahead when it could be (``warm``: steps that share a working
    folder, i.e. a shared filesystem); each kernel runs this one step and is shut down.
    """
    from mlpipe_jupyter.executors.dask.warm import run_with_kernel
    from mlpipe_jupyter.executors.kernels import WarmKernel, start_kernel
    from mlpipe_jupyter.executors.local import _import_papermill

    papermill = _import_papermill()
    from papermill.exceptions import PapermillExecutionError

    from mlpipe_jupyter.executors.papermill_engine import ENGINE_NAME

    address = result["worker"]
    events = cancel_events(spec)

    def execute(kernel: WarmKernel | None, error: Exception | None) -> None:
        if kernel is None:
            result["error"] = f"the kernel could not start on worker {address}: {error}"
            return
        watcher = _Watcher(kernel.kill, events, spec.get("timeout_seconds"))
        watcher.start()
        try:
            papermill.execute_notebook(
                spec["step_notebook"], spec["output_notebook"],
                kernel_name=spec["kernel_name"],
                engine_name=ENGINE_NAME, km=kernel.manager, kc=kernel.client,
                progress_bar=False, stdout_file=log_file, stderr_file=log_file,
            )
            result["ok"] = True
        except PapermillExecutionError as exc:
            result.update(error=f"{exc.ename}: {exc.evalue}", ename=exc.ename,
                          evalue=exc.evalue, cell_index=exc.cell_index)
        except Exception as exc:
            if watcher.reason == "timed_out":
                result.update(timed_out=True, error=f"timed out after "
                              f"{spec['timeout_seconds']:g} s (--timeout); the kernel was stopped")
            elif watcher.reason == "canceled":
                result.update(canceled=True, error="canceled")
            elif type(exc).__name__ == "DeadKernelError":
                result.update(error=f"the kernel died on worker {address} (out of memory, or "
                              "the process was killed)", ename="DeadKernelError")
            else:
                result.update(error=f"{type(exc).__name__}: {exc}", ename=type(exc).__name__)
        finally:
            watcher.stop()

    if spec.get("warm", True):
        run_with_kernel(spec["kernel_name"], Path(spec["cwd"]), execute)
        return
    try:
        kernel = start_kernel(spec["kernel_name"], Path(spec["cwd"]))
    except Exception as exc:
        execute(None, exc)
        return
    try:
        execute(kernel, None)
    finally:
        kernel.shutdown()


def _run_in_container(spec: dict[str, Any], log_file: TextIO, result: dict[str, Any]) -> None:
    """papermill in a container of the step's environment, on this worker's Docker engine.

    The image is built here when the engine lacks it (one build per host at a time); the
    container is tethered to this worker process, so a lost worker's step stops too.
    """
    from mlpipe_jupyter.executors.docker.containers import (
        ContainerStep,
        StepContainer,
        engine_error_message,
        remove_dead_containers,
    )
    from mlpipe_jupyter.executors.docker.engine import docker_client
    from mlpipe_jupyter.executors.docker.images import build_log_path, ensure_env_image
    from mlpipe_jupyter.store.environments import EnvironmentSpec, EnvironmentVersion

    box = spec["container"]
    env = box["environment"]
    environment = EnvironmentVersion(env["name"], int(env["version"]),
                                     EnvironmentSpec(env["image"], tuple(env["pip"]),
                                                     tuple(env["apt"])))
    address = result["worker"]

    def say(line: str) -> None:
        log_file.write(f"--- mlpipe: {line} ---\n")
        log_file.flush()

    try:
        client = docker_client()
        remove_dead_containers(client)
        image = ensure_env_image(client, environment, build_log_path(environment), log=say)
    except Exception as exc:
        result["error"] = f"on worker {address}: {exc}"
        return
    step = ContainerStep(
        run_id=spec["run_id"], step=spec["step"], image=image,
        step_notebook=Path(spec["step_notebook"]), output_notebook=Path(spec["output_notebook"]),
        log_path=Path(spec["log_path"]), cwd=Path(spec["cwd"]),
        kernel_name=spec["kernel_name"],
        read_only=tuple(Path(p) for p in spec.get("input_paths", [])),
        writable=tuple(Path(p) for p in (str(Path(spec["step_notebook"]).parent),
                                         spec.get("staging")) if p),
        network=bool(box.get("network")), cpus=box.get("cpus"),
        memory_bytes=box.get("memory_bytes"), gpus=box.get("gpus"),
        timeout_seconds=spec.get("timeout_seconds"),
    )
    container = StepContainer(client, step)
    # the container enforces the timeout itself
    watcher = _Watcher(container.stop, cancel_events(spec), timeout=None)
    watcher.start()
    try:
        ended = container.run()
        verdict = ended.verdict(step.output_notebook, step.timeout_seconds, step.memory_bytes,
                                canceled=watcher.reason == "canceled")
        result.update(ok=verdict["ok"], error=verdict.get("error"),
                      ename=verdict.get("exception_name"), evalue=verdict.get("exception_value"),
                      canceled=bool(verdict.get("canceled")),
                      timed_out=bool(verdict.get("timed_out")))
    except Exception as exc:
        result["error"] = f"on worker {address}: {engine_error_message(exc)}"
    finally:
        watcher.stop()


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
        outputs = list(spec.get("outputs", []))
        for name in outputs:
            mapping[str(Path(spec["staging"]) / name)] = str(local / "outputs" / name)
        mapping[remote["metrics_path"]] = str(local / "metrics.jsonl")
        notebook = local / "step.ipynb"
        notebook.write_text(_rewrite_paths(remote["notebook_text"], mapping), encoding="utf-8")
        (local / "cwd").mkdir()
        local_spec = {**spec, "step_notebook": str(notebook),
                      "output_notebook": str(local / "output.ipynb"),
                      "log_path": str(local / "step.log"), "cwd": str(local / "cwd"),
                      "staging": str(local / "outputs"), "warm": False,  # a new cwd each step
                      "log_notes": notes,
                      "input_paths": [str(local / "inputs" / n) for n in remote["inputs"]]}
        tailer = start_tailer(spec, {"log": local / "step.log",
                                      "metrics": local / "metrics.jsonl"})
        try:
            result = run_step(local_spec)
        finally:
            if tailer is not None:
                tailer.finish()
        result["stream_key"] = tailer.key if tailer is not None else None
        if result["ok"]:
            try:
                staging = f"{root}/staging/{objstore.unique_suffix()}"
                objstore.upload_folder(fs, local / "outputs", staging)
                objstore.commit(fs, staging, f"{root}/results/{remote['result_id']}")
            except Exception as exc:
                result.update(ok=False, error=f"uploading the step's outputs to the datastore "
                              f"failed: {type(exc).__name__}: {exc}")
        for key, name in (("output_notebook_text", "output.ipynb"), ("log_text", "step.log"),
                          ("metrics_text", "metrics.jsonl")):
            path = local / name
            # bytes decoded as the tailer does (no newline translation): the same offsets
            result[key] = (path.read_bytes().decode("utf-8", "replace") if path.exists()
                           else None)
        return result
    except Exception as exc:
        if result is None:
            address, name = _worker_identity()
            result = {"ok": False, "canceled": False, "timed_out": False, "worker": address,
                      "worker_name": name, "host": socket.gethostname(), "pid": os.getpid(),
                      "ended_at": time.time()}
        result.update(ok=False, error=f"the datastore could not be used on the worker: "
                      f"{type(exc).__name__}: {exc}")
        return result
    finally:
        shutil.rmtree(local, ignore_errors=True)
