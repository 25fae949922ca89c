"""A real Dask cluster on loopback for tests and benchmarks: `dask scheduler` and
`dask worker` processes (one thread each, no nanny, so a test can SIGKILL the very process
that runs a step), all importing this checkout's mlpipe_jupyter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


@dataclass
class WorkerSpec:
    name: str
    resources: str | None = None  # e.g. "GPU=1"
    env: dict[str, str] = field(default_factory=dict)  # e.g. a DOCKER_HOST nobody answers on
    new_session: bool = False  # its own process group (a test signals the whole group)


@dataclass
class SubprocessCluster:
    """Scheduler and workers as subprocesses; ``start()`` waits until all are connected."""

    folder: Path
    workers: Sequence[WorkerSpec] = (WorkerSpec("w1"), WorkerSpec("w2"))
    allowed_failures: int | None = None
    address: str = ""
    scheduler: subprocess.Popen[bytes] | None = None
    worker_procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        # the workers' input cache (object-storage datastores): this cluster's own, shared by
        # its workers as on one host, so no test sees entries of an earlier one
        env.setdefault("MLPIPE_INPUT_CACHE", str(self.folder / "input-cache"))
        if self.allowed_failures is not None:
            env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(self.allowed_failures)
        return env

    def _log(self, name: str) -> object:
        return (self.folder / f"{name}.log").open("ab")

    def start(self) -> SubprocessCluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        scheduler_file = self.folder / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
            env=self.env(), stdout=self._log("scheduler"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                self.stop()
                raise RuntimeError(f"dask scheduler did not start; see {self.folder}")
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written in one go, but be safe about a partial read
        self.address = json.loads(scheduler_file.read_text())["address"]
        for spec in self.workers:
            self.add_worker(spec)
        self.wait_for_workers(len(self.workers))
        return self

    def add_worker(self, spec: WorkerSpec) -> None:
        command = [sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                   "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1", "--no-dashboard",
                   "--name", spec.name, "--memory-limit", "0", "--death-timeout", "30"]
        if spec.resources:
            command += ["--resources", spec.resources]
        self.worker_procs[spec.name] = subprocess.Popen(
            command, env={**self.env(), **spec.env}, stdout=self._log(spec.name),
            stderr=subprocess.STDOUT, start_new_session=spec.new_session,
        )

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        deadline = time.monotonic() + START_TIMEOUT
        with Client(self.address, timeout=10, set_as_default=False) as client:
            while len(client.nthreads()) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(client.nthreads())} of {count} dask workers "
                                       f"connected; see {self.folder}")
                time.sleep(0.1)

    def kill_worker(self, name: str) -> None:
        process = self.worker_procs.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    @property
    def compute(self) -> str:
        return "dask://" + self.address.split("://", 1)[1]

    def stop(self) -> None:
        for process in [*self.worker_procs.values(), self.scheduler]:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in [*self.worker_procs.values(), self.scheduler]:
            if process is None:
                continue
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.worker_procs.clear()
