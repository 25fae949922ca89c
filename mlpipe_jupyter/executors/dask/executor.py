"""The ``dask`` compute target: each step is a task on a Dask cluster's workers.

``--compute dask://HOST:PORT`` (or a named target from ``mlpipe compute add``) submits every
ready step to the scheduler; independent steps run on different workers at once. A worker
runs the step notebook with papermill in a fresh kernel (``worker.run_step``), or, for a
step that names an environment (``--env``), in that environment's container on a worker
whose host has a Docker engine (the task is restricted to those workers). The
datastore is a shared filesystem: the runner's paths (step notebook, log, staging folder,
inputs) are the same on every node, so outputs land in the staging folder and the runner
commits them as for local runs.
With an object-store datastore (``mlpipe datastore add``; an fsspec URL), nothing is
shared: inputs go up to the datastore before submit, the worker runs
``worker.run_step_objstore`` and commits the outputs there, and the executor downloads the
committed result into the staging folder (see docs/dask.md). The step's log and metrics
still grow while it runs: the worker sends their new bytes as Dask events on one topic
(``streams.STREAM_TOPIC``), which the executor subscribes to and appends in order;
when the task ends, ``_materialise`` adds what the events did not carry (``streams.LiveLogs``).

Faults become outcomes, never hangs:
- a worker lost mid-step: the scheduler runs the task again on another worker, up to its
  ``distributed.scheduler.allowed-failures`` (default 3); beyond, the step fails with the
  cause ("the worker running the step was lost ...");
- no worker can take a step (none left, or none declares the requested resources): the
  step fails at once, or after ``no_worker_timeout`` seconds when workers disappear;
- the scheduler goes away: every pending step fails with that cause.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import ExecutorError, TargetUnavailableError
from mlpipe_jupyter.executors.base import (
    Executor,
    StepOutcome,
    StepTask,
    Submission,
    Unapplied,
    other_limits,
)
from mlpipe_jupyter.executors.dask.cluster import (
    DEFAULT_CONNECT_TIMEOUT,
    connect,
    dask_resources,
    dropped_message,
    placement_problem,
    scheduler_address,
    task_error_message,
    worker_resources,
)
from mlpipe_jupyter.executors.dask.remote_datastore import RemoteDatastore
from mlpipe_jupyter.executors.dask.streams import LiveLogs
from mlpipe_jupyter.executors.dask.worker import (
    cancel_event_names,
    run_step,
    run_step_objstore,
)
from mlpipe_jupyter.executors.docker.engine import docker_engine_problem
from mlpipe_jupyter.executors.docker.images import container_fingerprint
from mlpipe_jupyter.model.fingerprint import hash_text
from mlpipe_jupyter.model.step import StepHeader
from mlpipe_jupyter.store.environments import EnvironmentStore, EnvironmentVersion, parse_env_ref

log = logging.getLogger(__name__)

# How long pending steps may wait for a suitable worker once none is left.
DEFAULT_NO_WORKER_TIMEOUT = 30.0
WATCHDOG_INTERVAL_SECONDS = 1.0
# After a cancel, how long close() waits before deleting the cancel events (the workers'
# watchers look every worker.WATCH_INTERVAL_SECONDS).
CANCEL_GRACE_SECONDS = 1.5
DEFAULT_KERNEL = "python3"  # the kernel started ahead on the workers (steps' usual one)


@dataclass
class _Pending:
    submission: Submission
    future: Any
    wanted: dict[str, float]
    candidates: list[str] | None = None  # the workers it may run on; None: any
    unplaceable_since: float | None = None

    @property
    def task(self) -> StepTask:
        return self.submission.task


@dataclass
class Placement:
    """Where an attempt of a step ran (kept for ``placements`` and the tests)."""

    worker: str
    worker_name: str
    host: str
    pid: int
    extra: dict[str, Any] = field(default_factory=dict)


class DaskExecutor(Executor):
    """Submits steps to a Dask scheduler; see the module docstring."""

    name = "dask"

    def __init__(self, target: str = "dask", workspace: Any = None, address: str | None = None,
                 datastore: str | None = None,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 no_worker_timeout: float | None = None, **_options: Any) -> None:
        super().__init__()
        self.target = target
        self.workspace = workspace
        self.address = address or scheduler_address(target)
        self.datastore = datastore
        self.connect_timeout = connect_timeout
        # read at run time (not bound at import) so a deployment or a test can change it
        self.no_worker_timeout = (DEFAULT_NO_WORKER_TIMEOUT if no_worker_timeout is None
                                  else no_worker_timeout)
        self._client: Any = None
        self._remote: RemoteDatastore | None = None  # set by check(): an object-store datastore
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}  # by Dask key
        self._events_set: set[str] = set()  # cancel events this executor set
        self._last_cancel: float | None = None  # monotonic time of the last cancel
        self._env_fingerprint: str | None = None
        self._environments: dict[str, EnvironmentVersion] = {}
        self._engines: dict[str, str | None] | None = None  # worker -> Docker problem
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()
        self.live_logs = LiveLogs()  # object-store datastore: logs streamed by the workers
        #: (run id, step) -> where each finished attempt ran
        self.placements: dict[tuple[str, str], list[Placement]] = {}

    # -- before the run ---------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = connect(self.address, self.connect_timeout)
        return self._client

    def check(self) -> None:
        """Connect, and require at least one worker, before anything runs."""
        from mlpipe_jupyter.store.datastores import resolve_datastore

        url = resolve_datastore(self.workspace, self.datastore)
        self._remote = None
        if url is not None:
            remote = RemoteDatastore(url, self.workspace)
            remote.probe()
            self._remote = remote
        client = self.client
        deadline = time.monotonic() + self.connect_timeout
        while not client.nthreads():
            if time.monotonic() > deadline:
                raise TargetUnavailableError(
                    f"the dask cluster {self.address} has no workers; start some with "
                    f"`dask worker {self.address}`"
                )
            time.sleep(0.2)
        from mlpipe_jupyter.executors.dask.warm import PLUGIN_NAME, kernels_plugin

        try:  # the workers stop their kernels when they close (see warm.py)
            client.register_plugin(kernels_plugin(), name=PLUGIN_NAME)
        except Exception:
            log.debug("registering the kernels plugin failed", exc_info=True)

    def unapplied(self, header: StepHeader) -> list[Unapplied]:
        # resources place the step on a worker that declares them (and limit its container
        # when it names --env); a step's own image is the docker target's business
        notes = []
        if header.image:
            notes.append(Unapplied(f"image {header.image}",
                                   "dask workers run steps in their own Python (or an --env "
                                   "environment's container); run with --compute docker to "
                                   "use it"))
        return notes + [Unapplied(what, "dask workers have no such limit")
                        for what in other_limits(header)]

    def environment_fingerprint(self, env: str | None, image: str | None = None) -> str:
        """Without ``--env``: the workers' Python and packages, the same fingerprint as a
        local run when every worker has the runner's software, so results are reused across
        machines. With ``--env``: the environment's definition and base image, whichever
        worker builds it (pin package versions for results that must match everywhere)."""
        if env is not None:
            return container_fingerprint(self._environment(env))
        if self._env_fingerprint is None:
            from mlpipe_jupyter.executors.local import local_environment_fingerprint

            found = set(self.client.run(local_environment_fingerprint).values())
            if len(found) == 1:
                self._env_fingerprint = found.pop()
            else:  # mixed software: results depend on which worker ran them
                self._env_fingerprint = f"dask:mixed:{hash_text(chr(10).join(sorted(found)))[:16]}"
        return self._env_fingerprint

    def _environment(self, env: str) -> EnvironmentVersion:
        """The environment a step names, once a worker with a Docker engine is known."""
        if env not in self._environments:
            if self.workspace is None:
                raise ExecutorError(f"--env {env}: environments need a workspace")
            name, version = parse_env_ref(env)
            environment = EnvironmentStore(self.workspace).get(name, version)
            engines = self._docker_workers()
            if not any(problem is None for problem in engines.values()):
                found = "; ".join(f"{w}: {p}" for w, p in sorted(engines.items())) or "no workers"
                raise ExecutorError(
                    f"--env {env}: steps with an environment run in containers, and no worker "
                    f"of the dask cluster {self.address} has a Docker engine ({found}). Start "
                    "workers on hosts with Docker, or drop --env to run in the workers' Python"
                )
            self._environments[env] = environment
        return self._environments[env]

    def _docker_workers(self, refresh: bool = False) -> dict[str, str | None]:
        """Each worker's Docker engine: None where one answers, else why not (cached)."""
        if self._engines is None or refresh:
            self._engines = dict(self.client.run(docker_engine_problem))
        return self._engines

    def _container_spec(self, task: StepTask) -> tuple[dict[str, Any], list[str]]:
        """The container part of a step's spec, and the workers that can run it."""
        assert task.env is not None
        environment = self._environment(task.env)
        current = set(worker_resources(self.client))
        engines = self._docker_workers()
        if not any(problem is None and w in current for w, problem in engines.items()):
            engines = self._docker_workers(refresh=True)  # workers came and went since
        candidates = sorted(w for w, problem in engines.items() if problem is None and w in current)
        # network and limits travel with the task
        box = {"environment": {"name": environment.name, "version": environment.version,
                               **environment.spec.to_dict()}}
        return box, candidates

    def prepare(self, cwd: Path, expected_tasks: int, max_parallel: int) -> None:
        """Have every worker start a kernel now, so the first steps find theirs started.

        Only with a shared filesystem: with object storage each step gets a fresh working
        folder of its own, which a kernel started ahead could not be in."""
        if expected_tasks <= 0 or self._remote is not None:
            return
        from mlpipe_jupyter.executors.dask.warm import prewarm

        try:
            self.client.run(prewarm, DEFAULT_KERNEL, str(cwd))
        except Exception:  # an optimisation only: steps start their kernels if need be
            log.debug("asking the workers to start kernels failed", exc_info=True)

    # -- running ----------------------------------------------------------------------------
    def launch(self, submission: Submission) -> None:
        task = submission.task
        wanted = dask_resources(task.resources)
        container: dict[str, Any] | None = None
        candidates: list[str] | None = None  # None: any worker
        try:
            if task.env is not None:
                container, candidates = self._container_spec(task)
            problem = placement_problem(wanted, _only(worker_resources(self.client), candidates),
                                        self.address, _needs(candidates))
        except ExecutorError as exc:
            problem = str(exc)
        except Exception as exc:  # the scheduler went away since check()
            problem = f"the dask scheduler {self.address} stopped answering: {exc}"
        if problem:
            submission.report(StepOutcome(task, ok=False, error=problem, started_at=time.time(),
                                          ended_at=time.time()))
            return
        spec: dict[str, Any] = {
            "task": task.to_dict(),
            "outputs": sorted(p.name for p in task.staging.iterdir() if p.is_dir())
            if task.staging and task.staging.is_dir() else [],
        }
        if task.secrets and self.workspace is not None:
            # the worker resolves the secrets' names from its own sources; this path only
            # says which workspace's registry to look in there (never a value)
            spec["workspace"] = str(getattr(self.workspace, "root", self.workspace))
        if container is not None:
            spec["container"] = container
        function = run_step
        if self._remote is not None:
            try:
                spec["objstore"] = self._remote.publish_inputs(task)
            except Exception as exc:
                submission.report(StepOutcome(task, ok=False, ended_at=time.time(), error=(
                    f"could not upload the step's inputs to the datastore "
                    f"{self._remote.url}: {type(exc).__name__}: {exc}")))
                return
            function = run_step_objstore
            if self._reuse_remote(submission, self._remote):
                return
            self.live_logs.follow(self.client, task)
        key = f"mlpipe-{task.run_id}-{task.step}-{task.attempt}-{time.time_ns()}"
        future = self.client.submit(function, spec, key=key, pure=False,
                                    resources=wanted or None, retries=0,
                                    workers=candidates, allow_other_workers=False)
        with self._lock:
            self._pending[key] = _Pending(submission, future, wanted, candidates)
        future.add_done_callback(self._on_future_done)
        self._start_watchdog()

    def cancel_launched(self, run_id: str, step: str | None,
                        victims: list[Submission]) -> None:
        with self._lock:
            pending = [p for p in self._pending.values() if p.submission in victims]
        if not pending or self._client is None:
            return
        from distributed import Event

        # The event stops a step that already runs (its kernel is killed on the worker);
        # cancelling the future drops the ones still queued and reports them here.
        run_event, step_event = cancel_event_names(run_id, step or "")
        name = run_event if step is None else step_event
        with self._lock:
            self._last_cancel = time.monotonic()
            self._events_set.add(name)
        try:
            event = Event(name, client=self._client)
            event.set()
        except Exception:
            log.debug("setting the cancel event failed", exc_info=True)
        try:
            self._client.cancel([p.future for p in pending], force=True)
        except Exception:
            log.debug("cancelling futures failed", exc_info=True)

    def close(self) -> None:
        self._closing.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        if self._client is not None:
            self._forget_cancel_events()
            self.live_logs.unsubscribe(self._client)
            try:
                self._client.close(timeout=5)
            except Exception:
                log.debug("closing the dask client failed", exc_info=True)
            self._client = None

    def _forget_cancel_events(self) -> None:
        """Delete the cancel events this executor set from the scheduler (clearing a Dask
        event deletes it), which would otherwise keep them as long as it lives. First wait
        until every watcher has had time to see them: a force-cancelled task may still be
        running its kernel."""
        with self._lock:
            names, self._events_set = sorted(self._events_set), set()
            last_cancel, self._last_cancel = self._last_cancel, None
        if not names:
            return
        if last_cancel is not None:
            time.sleep(max(0.0, last_cancel + CANCEL_GRACE_SECONDS - time.monotonic()))
        from distributed import Event

        for name in names:
            try:
                Event(name, client=self._client).clear()
            except Exception:
                log.debug("clearing the cancel event %s failed", name, exc_info=True)

    # -- object-store datastore ------------------------------------------------------------
    def fetch_result(self, result_id: str, into: Path) -> bool:
        return self._remote is not None and self._remote.fetch_result(result_id, into)

    def _reuse_remote(self, submission: Submission, remote: RemoteDatastore) -> bool:
        """When the datastore already holds the committed result (another machine ran the
        same step with the same inputs, code and software), download it instead of running
        the step again: result ids are content-addressed, so it is the same result."""
        task = submission.task
        try:
            if not remote.has_result(task.result_id):
                return False
        except Exception:
            log.debug("checking the datastore for a committed result failed", exc_info=True)
            return False
        started = time.time()
        message = (f"--- mlpipe: step {task.step}: result {task.result_id} is already committed "
                   f"in the datastore {remote.url}; downloaded instead of run ---\n")
        problem = self._materialise(task, {"log_text": message}, True, remote)
        submission.report(StepOutcome(task, ok=problem is None, error=problem,
                                      started_at=started, ended_at=time.time()))
        return True

    def _materialise(self, task: StepTask, result: dict[str, Any], ok: bool,
                     remote: RemoteDatastore) -> str | None:
        """Write what the worker sent back next to the run, and download the committed
        result into the task's staging folder (the runner commits it as usual)."""
        if result.get("output_notebook_text") is not None:
            task.output_notebook.parent.mkdir(parents=True, exist_ok=True)
            task.output_notebook.write_text(result["output_notebook_text"], encoding="utf-8")
        self.live_logs.write_rest(task, result)
        return remote.download_outputs(task) if ok else None

    # -- outcomes -----------------------------------------------------------------------------
    def _report(self, key: str, make: Callable[[_Pending], StepOutcome]) -> None:
        """Report the task's outcome once, whoever (callback or watchdog) gets there first."""
        with self._lock:
            pending = self._pending.pop(key, None)
        if pending is None:
            return

        def outcome() -> StepOutcome:
            try:
                return make(pending)
            finally:  # a lost or canceled step: keep what was streamed
                self.live_logs.end(pending.task)

        pending.submission.conclude(outcome)

    def _on_future_done(self, future: Any) -> None:
        self._report(future.key, lambda p: self._outcome(p, future))

    def _outcome(self, pending: _Pending, future: Any) -> StepOutcome:
        task = pending.task
        status = future.status
        if status == "finished":
            result = future.result()
            outcome = StepOutcome.from_dict(task, result["outcome"])
            if self._remote is not None:
                problem = self._materialise(task, result, outcome.ok, self._remote)
                if problem:
                    outcome = replace(outcome, ok=False, error=problem)
            self.placements.setdefault((task.run_id, task.step), []).append(Placement(
                result.get("worker", ""), result.get("worker_name", ""), result.get("host", ""),
                int(result.get("pid", 0))))
            return outcome
        if status == "cancelled" or self._is_canceled(task):
            if self._is_canceled(task):
                return StepOutcome(task, ok=False, canceled=True, error="canceled",
                                   ended_at=time.time())
            return StepOutcome(task, ok=False, ended_at=time.time(),
                               error=dropped_message(self._client, self.address, future))
        exc = future.exception()
        return StepOutcome(task, ok=False, error=task_error_message(exc), ended_at=time.time())

    # -- watchdog: a pending step must never wait forever -----------------------------------
    def _start_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is not None:
                return
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name="mlpipe-dask-watchdog")
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._closing.wait(WATCHDOG_INTERVAL_SECONDS):
            with self._lock:
                pending = list(self._pending.items())
            if not pending:
                continue
            try:
                workers = worker_resources(self._client)
            except Exception as exc:
                message = f"lost the connection to the dask scheduler {self.address}: {exc}"
                for key, _ in pending:
                    self._fail(key, message)
                continue
            now = time.monotonic()
            for key, item in pending:
                problem = placement_problem(item.wanted, _only(workers, item.candidates),
                                            self.address, _needs(item.candidates))
                if problem is None:
                    item.unplaceable_since = None
                elif item.unplaceable_since is None:
                    item.unplaceable_since = now
                elif now - item.unplaceable_since > self.no_worker_timeout:
                    self._fail(key, f"{problem} (waited {self.no_worker_timeout:g} s)")

    def _fail(self, key: str, message: str) -> None:
        with self._lock:
            pending = self._pending.get(key)
        if pending is not None:
            try:
                self._client.cancel([pending.future], force=True)
            except Exception:
                log.debug("cancelling an unplaceable task failed", exc_info=True)
        self._report(key, lambda p: StepOutcome(p.task, ok=False, error=message,
                                                ended_at=time.time()))


def _only(workers: dict[str, Any], candidates: list[str] | None) -> dict[str, Any]:
    """The workers a task may use: all of them, or its candidates among them."""
    if candidates is None:
        return workers
    return {w: r for w, r in workers.items() if w in candidates}


def _needs(candidates: list[str] | None) -> str | None:
    """What a restricted task needs of a worker, for the message when none is left."""
    return None if candidates is None else "a Docker engine (the step names --env)"
