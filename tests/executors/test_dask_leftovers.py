"""Nothing is left behind by a Dask worker, however it stops: while a step runs on it (and
a spare warm kernel waits for the next one), the worker gets SIGTERM, SIGINT or a SIGTERM
to its process group; after ``kill -9`` the next worker start on the host cleans up.

The worker has a private TMPDIR and Jupyter runtime folder (and its own Dask scratch
folder elsewhere), so whatever is found there is its leftovers.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.leftovers import SLEEPY, Sandbox, kill_kernels

pytest.importorskip("distributed")

from tests.executors.dask_cluster import SubprocessCluster, WorkerSpec  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.dask]
NOTHING = {"kernels": [], "files": [], "ipc_folders": []}


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SubprocessCluster]:
    """A scheduler; each test adds the worker it stops."""
    cluster = SubprocessCluster(tmp_path_factory.mktemp("dask-leftovers"), ()).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def boxes(tmp_path: Path) -> Iterator[tuple[Sandbox, Sandbox]]:
    """The runner's sandbox (project, workspace) and the worker's (its TMPDIR)."""
    runner, worker = Sandbox(tmp_path / "runner"), Sandbox(tmp_path / "worker")
    yield runner, worker
    for box in (runner, worker):
        kill_kernels(box.tmp)
        box.remove()


def _start_worker(cluster: SubprocessCluster, name: str, box: Sandbox) -> None:
    from distributed import Client

    env = {"TMPDIR": str(box.tmp), "JUPYTER_RUNTIME_DIR": str(box.runtime),
           "DASK_TEMPORARY_DIRECTORY": str(box.root / "dask-scratch")}
    cluster.add_worker(WorkerSpec(name, env=env, new_session=True))
    deadline = time.monotonic() + 60
    with Client(cluster.address, timeout=10, set_as_default=False) as client:
        while name not in {w["name"] for w in client.scheduler_info()["workers"].values()}:
            assert time.monotonic() < deadline, f"worker {name} did not connect"
            time.sleep(0.1)


def _step_running_with_a_spare(cluster: SubprocessCluster, runner: Sandbox,
                               worker: Sandbox) -> object:
    """A run whose step sleeps on the worker, which keeps a spare kernel started."""
    run = runner.start_run(runner.notebook("sleepy", SLEEPY), "--compute", cluster.compute)
    runner.wait_running(run)
    deadline = time.monotonic() + 60
    while len(worker.kernels()) < 2:  # the step's kernel and the spare
        assert time.monotonic() < deadline, "no spare kernel started"
        time.sleep(0.1)
    return run


def _end_run(run: object, runner: Sandbox) -> None:
    """Cancel the run (its step was lost with the worker); it leaves nothing either."""
    run.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    run.wait(timeout=120)  # type: ignore[attr-defined]
    assert runner.leftovers() == NOTHING


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "process-group SIGTERM"])
def test_a_stopped_worker_leaves_nothing(scheduler: SubprocessCluster,
                                         boxes: tuple[Sandbox, Sandbox], how: str) -> None:
    runner, worker = boxes
    name = f"w-{how.split()[-1].lower()}-{'group' if ' ' in how else 'process'}"
    _start_worker(scheduler, name, worker)
    run = _step_running_with_a_spare(scheduler, runner, worker)
    process = scheduler.worker_procs.pop(name)
    if how == "process-group SIGTERM":
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(getattr(signal, how))
    # the worker stops the running step's kernel instead of waiting for its end (a minute)
    process.wait(timeout=50)
    assert worker.leftovers() == NOTHING
    _end_run(run, runner)


def test_the_next_worker_cleans_up_after_one_killed_with_sigkill(
        scheduler: SubprocessCluster, boxes: tuple[Sandbox, Sandbox]) -> None:
    runner, worker = boxes
    _start_worker(scheduler, "w-killed", worker)
    run = _step_running_with_a_spare(scheduler, runner, worker)
    scheduler.kill_worker("w-killed")
    assert worker.leftovers()["ipc_folders"]  # a dead worker cannot clean up
    _end_run(run, runner)
    _start_worker(scheduler, "w-next", worker)  # same host, same TMPDIR
    assert worker.wait_clean(timeout=30) == NOTHING
    process = scheduler.worker_procs.pop("w-next")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=50)
    assert worker.leftovers() == NOTHING
