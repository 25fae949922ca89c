"""Talking to a Dask scheduler: addresses, reachability, and what its workers offer.

Kept apart from the executor so that ``mlpipe compute list/show`` can probe a target
without creating an executor, and so that the placement rule (which worker can take a
step's resource request) is one small function with its own tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlpipe_jupyter.errors import ExecutorError, TargetUnavailableError
from mlpipe_jupyter.model.step import Resources

DEFAULT_CONNECT_TIMEOUT = 5.0
# The names workers declare with `dask worker ... --resources "CPU=2 MEMORY=8e9 GPU=1"`.
RESOURCE_CPU = "CPU"
RESOURCE_MEMORY = "MEMORY"
RESOURCE_GPU = "GPU"


def scheduler_address(target: str) -> str:
    """The scheduler address of a compute name: ``dask://h:p`` -> ``tcp://h:p``.

    ``dask://tls://h:p`` and plain ``tcp://``/``tls://`` addresses are kept as they are.
    """
    rest = target.split("://", 1)[1] if target.startswith("dask://") else target
    if "://" not in rest:
        rest = f"tcp://{rest}"
    if not rest.split("://", 1)[1]:
        raise ExecutorError(f"compute target {target!r} names no scheduler; use dask://HOST:PORT")
    return rest


def dask_resources(resources: Resources) -> dict[str, float]:
    """The Dask resource constraints of a step: only what it asked for."""
    wanted: dict[str, float] = {}
    if resources.cpus:
        wanted[RESOURCE_CPU] = float(resources.cpus)
    if resources.memory_bytes:
        wanted[RESOURCE_MEMORY] = float(resources.memory_bytes)
    if resources.gpus:
        wanted[RESOURCE_GPU] = float(resources.gpus)
    return wanted


def _format(resources: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in sorted(resources.items())) or "none"


def placement_problem(wanted: Mapping[str, float],
                      workers: Mapping[str, Mapping[str, float]], address: str,
                      needs: str | None = None) -> str | None:
    """Why no worker can take a task needing ``wanted`` (None when one can).

    ``workers`` maps each worker address to the resources it declared; when the task may
    only run on some workers, it holds those, and ``needs`` says what they have.
    """
    if not workers and needs:
        return (f"no worker of the dask cluster {address} with {needs} is connected; start "
                f"one with `dask worker {address}` on such a host")
    if not workers:
        return (f"the dask cluster {address} has no workers; start some with "
                f"`dask worker {address}`")
    if not wanted:
        return None
    for declared in workers.values():
        if all(declared.get(name, 0) >= amount for name, amount in wanted.items()):
            return None
    offered = "; ".join(f"{w}: {_format(r)}" for w, r in sorted(workers.items()))
    return (f"no worker of the dask cluster {address} declares the resources the step requests "
            f"({_format(wanted)}); workers offer: {offered}. Start a worker with "
            f"`dask worker {address} --resources \"{_format(wanted)}\"`")


@dataclass
class ClusterInfo:
    """What a probe of a scheduler found."""

    address: str
    reachable: bool
    error: str | None = None
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # address -> details

    def summary(self) -> str:
        if not self.reachable:
            return f"unreachable ({self.error})"
        threads = sum(int(w.get("nthreads", 0)) for w in self.workers.values())
        return f"reachable, {len(self.workers)} workers, {threads} threads"


def unreachable_message(address: str, exc: BaseException) -> str:
    return (f"dask scheduler {address} is unreachable: {type(exc).__name__}: {exc}; start one "
            f"with `dask scheduler --host HOST --port PORT` and workers with "
            f"`dask worker {address}`")


def connect(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Any:
    """A ``distributed.Client`` for ``address``, or ExecutorError saying how to fix it."""
    try:
        from distributed import Client
    except ImportError:
        raise ExecutorError(
            "the dask compute target needs the `distributed` package: "
            "pip install 'mlpipe_jupyter[dask]'"
        ) from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise TargetUnavailableError(unreachable_message(address, exc)) from None


def worker_resources(client: Any) -> dict[str, dict[str, float]]:
    """Each worker's declared resources, asked of the scheduler now (not cached)."""
    info = client.sync(client.scheduler.identity)
    return {addr: dict(w.get("resources") or {}) for addr, w in info.get("workers", {}).items()}


def probe(address: str, timeout: float = 2.0, engines: bool = False) -> ClusterInfo:
    """Whether the scheduler answers, with its workers (for ``mlpipe compute list/show``).

    With ``engines``, each worker is also asked whether a Docker engine answers on its host
    (``docker``: None when one does, else why not): where ``--env`` steps can run."""
    try:
        client = connect(address, timeout)
    except ExecutorError as exc:
        return ClusterInfo(address, False, str(exc).split("; start one")[0].split(": ", 1)[-1])
    try:
        info = client.sync(client.scheduler.identity)
        workers = {
            addr: {"name": w.get("name"), "nthreads": w.get("nthreads"),
                   "memory_limit": w.get("memory_limit"), "resources": w.get("resources") or {}}
            for addr, w in info.get("workers", {}).items()
        }
        if engines and workers:
            from mlpipe_jupyter.executors.docker.engine import docker_engine_problem

            answers = client.run(docker_engine_problem, on_error="return")
            for addr, answer in answers.items():
                if addr in workers:
                    workers[addr]["docker"] = (answer if not isinstance(answer, BaseException)
                                               else f"could not ask: {answer}")
        return ClusterInfo(address, True, workers=workers)
    finally:
        client.close()


def dropped_message(client: Any, address: str, future: Any) -> str:
    """Why the cluster cancelled a step we did not cancel (its workers gone, or us cut off)."""
    try:
        future.result(timeout=1)
        detail = ""
    except Exception as exc:  # FutureCancelledError carries the scheduler's reason
        detail = f": {str(exc).strip().splitlines()[0]}" if str(exc).strip() else ""
    try:
        workers = worker_resources(client)
    except Exception:
        return f"lost the connection to the dask scheduler {address}{detail}"
    if not workers:
        return (f"the dask cluster {address} dropped the step: it has no workers left "
                f"(start some with `dask worker {address}`){detail}")
    return f"the dask cluster {address} dropped the step{detail}"


def task_error_message(exc: BaseException) -> str:
    """The outcome's message for a step's Dask task that failed (not the step: its task)."""
    name = type(exc).__name__
    if name == "KilledWorker":
        # The count is the scheduler's allowed-failures + 1; its message says it (our own
        # dask config may differ from the scheduler's).
        found = re.search(r"on (\d+) different workers", str(exc))
        count = int(found.group(1)) if found else 0
        lost = {0: "more often than the scheduler allows", 1: "once"}.get(count, f"{count} times")
        last = getattr(exc, "last_worker", None)
        where = f"; the last was {getattr(last, 'address', last)}" if last else ""
        return (f"the worker running the step was lost {lost} (killed, out of memory, or "
                f"disconnected; see distributed.scheduler.allowed-failures){where}")
    return f"the step's task failed on the dask cluster: {name}: {exc}"
