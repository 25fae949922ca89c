"""The dask compute target against a real scheduler and worker processes on loopback."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_jupyter.errors import ExecutorError
from mlpipe_jupyter.executors.dask.cluster import placement_problem, scheduler_address
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.runner.runner import Runner, RunRequest, run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import step_output, write_notebook
from tests.leftovers import kernels_of
from tests.value_probe import literal_values, run_overrides

pytest.importorskip("distributed")

from tests.executors.dask_cluster import SubprocessCluster, WorkerSpec  # noqa: E402

slow = [pytest.mark.slow, pytest.mark.dask]
RUN_BOUND_SECONDS = 180  # no test run may take longer: "the run never hangs"


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SubprocessCluster]:
    """A scheduler and three 1-thread workers; w3 declares a GPU."""
    cluster = SubprocessCluster(
        tmp_path_factory.mktemp("dask-cluster"),
        (WorkerSpec("w1"), WorkerSpec("w2"), WorkerSpec("w3", "GPU=1")),
    ).start()
    yield cluster
    cluster.stop()


def _workers(store: Store, run_id: str, step: str) -> list[str]:
    """The worker names the step's log says it ran on, in order."""
    text = store.runs.log_path(run_id, step).read_text()
    return re.findall(r"--- mlpipe: step \S+ on dask worker \S+ \((\S+),", text)



FAN_OUT = [
    "%%mlsetup\nimport time",
    "%%mlstep make --output o --param n=3\n(outputs.o / 'n').write_text(str(n))",
    "%%mlstep square --input i=make.o --output o\ntime.sleep(2)\n"
    "x = int((inputs.i / 'n').read_text())\n(outputs.o / 'v').write_text(str(x * x))\n"
    "import mlpipe_jupyter\nmlpipe_jupyter.log('x', x)",
    "%%mlstep cube --input i=make.o --output o\ntime.sleep(2)\n"
    "x = int((inputs.i / 'n').read_text())\n(outputs.o / 'v').write_text(str(x ** 3))",
    "%%mlstep total --input a=square.o --input b=cube.o --output o\n"
    "s = int((inputs.a / 'v').read_text()) + int((inputs.b / 'v').read_text())\n"
    "(outputs.o / 'v').write_text(str(s))",
]


# -- pure pieces -----------------------------------------------------------------------------
def test_scheduler_address_of_compute_names() -> None:
    assert scheduler_address("dask://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert scheduler_address("dask://tls://h:8786") == "tls://h:8786"
    assert scheduler_address("tcp://h:1") == "tcp://h:1"
    with pytest.raises(ExecutorError):
        scheduler_address("dask://")


def test_placement_needs_a_worker_declaring_every_requested_resource() -> None:
    workers = {"tcp://a:1": {}, "tcp://b:1": {"GPU": 1.0, "CPU": 4.0}}
    assert placement_problem({}, workers, "tcp://s:1") is None
    assert placement_problem({"GPU": 1, "CPU": 2}, workers, "tcp://s:1") is None
    problem = placement_problem({"GPU": 2}, workers, "tcp://s:1")
    assert problem and "GPU=2" in problem and "--resources" in problem
    assert "no workers" in (placement_problem({}, {}, "tcp://s:1") or "")


# -- against the cluster -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.dask
def test_fan_out_runs_on_different_workers_like_a_local_run(
        dask_cluster: SubprocessCluster, store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "fan.ipynb", FAN_OUT)
    result = run_notebook(notebook, {"n": "4"}, compute=dask_cluster.compute, store=store,
                          max_parallel=3)
    assert result.ok, result.failures
    run_id = result.run_id
    square, cube = (store.runs.step_run(run_id, s) for s in ("square", "cube"))
    # the independent steps ran at once, on different workers
    assert _workers(store, run_id, "square") != _workers(store, run_id, "cube")
    assert square.started_at < cube.ended_at and cube.started_at < square.ended_at
    assert square.compute == dask_cluster.compute
    assert (step_output(store, run_id, "total", "o") / "v").read_text() == str(16 + 64)
    assert [m["value"] for m in store.runs.metrics(run_id, "square")] == [4]

    # the same pipeline run locally (forced) writes identical outputs
    local = run_notebook(notebook, {"n": "4"}, store=store, regenerate=True)
    assert local.ok, local.failures
    for step in ("make", "square", "cube", "total"):
        ours, theirs = step_output(store, run_id, step, "o"), step_output(store, local.run_id, step, "o")
        assert ours != theirs
        assert {p.name: p.read_bytes() for p in ours.iterdir()} == \
            {p.name: p.read_bytes() for p in theirs.iterdir()}

    # a re-run on the cluster reuses everything
    again = run_notebook(notebook, {"n": "4"}, compute=dask_cluster.compute, store=store)
    assert set(again.step_status.values()) == {StepStatus.REUSED}


@pytest.mark.slow
@pytest.mark.dask
def test_unreachable_scheduler_fails_before_anything_runs(store: Store,
                                                          workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "u.ipynb", FAN_OUT[:2])
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=r"dask scheduler tcp://127.0.0.1:9 is unreachable"):
        run_notebook(notebook, compute="dask://127.0.0.1:9", store=store)
    assert time.monotonic() - started < 30
    assert store.runs.list_runs() == []


@pytest.mark.slow
@pytest.mark.dask
def test_steps_are_placed_on_workers_declaring_their_resources(
        dask_cluster: SubprocessCluster, store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "gpu.ipynb", [
        "%%mlstep train --output o --gpus 1\n(outputs.o / 'f').write_text('x')",
        "%%mlstep huge --output o --gpus 8\n(outputs.o / 'f').write_text('x')",
        "%%mlstep plain --output o\n(outputs.o / 'f').write_text('x')",
    ])
    started = time.monotonic()
    result = run_notebook(notebook, compute=dask_cluster.compute, store=store)
    assert time.monotonic() - started < 60  # the impossible request failed fast
    assert result.step_status["train"] is StepStatus.SUCCEEDED
    assert _workers(store, result.run_id, "train") == ["w3"]
    assert result.step_status["plain"] is StepStatus.SUCCEEDED
    huge = store.runs.step_run(result.run_id, "huge")
    assert huge.status is StepStatus.FAILED
    assert "declares the resources" in (huge.error or "") and "GPU=8" in (huge.error or "")


def _run_in_thread(runner: Runner, request: RunRequest) -> tuple[threading.Thread, list]:
    box: list = []

    def target() -> None:
        try:
            box.append(runner.run(request))
        except BaseException as exc:  # surfaced by the test
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _wait_for_worker_line(store: Store, step: str, timeout: float = 60,
                          box: list | None = None) -> tuple[str, list[str]]:
    """Wait until the step's code runs on a worker (it prints 'sleeping'). With the run's
    ``box`` (``_run_in_thread``), a run that ends first fails the wait at once, and a wait
    that fails says how the run and the step stand (a flake under load is then readable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not box:
        runs = store.runs.list_runs()
        if runs:
            path = store.runs.log_path(runs[0].id, step)
            if path.exists() and "sleeping" in path.read_text():
                return runs[0].id, _workers(store, runs[0].id, step)
        time.sleep(0.2)
    raise AssertionError(f"step {step} never started on a dask worker: "
                         f"{_how_it_stands(store, step, box)}")


def _how_it_stands(store: Store, step: str, box: list | None) -> str:
    """The run's result (if it ended), its steps' states and the step log's last lines."""
    said = [f"the run ended: {box[0]!r}" if box else "the run goes on"]
    runs = store.runs.list_runs()
    if runs:
        states = [(s.step, s.status.value) for s in store.runs.step_runs(runs[0].id)]
        said.append(f"steps: {states}")
        path = store.runs.log_path(runs[0].id, step)
        if path.exists():
            said.append("step log ends: " + " | ".join(path.read_text().splitlines()[-8:]))
    return "; ".join(said)


SLOW_STEP = [
    "%%mlstep slow --output o\nimport time\n(outputs.o / 'partial').write_text('half')\n"
    "print('sleeping', flush=True)\ntime.sleep(6)\n(outputs.o / 'done').write_text('yes')",
]


@pytest.mark.slow
@pytest.mark.dask
def test_a_worker_killed_mid_step_is_retried_on_another(tmp_path: Path, store: Store,
                                                        workspace_dir: Path) -> None:
    cluster = SubprocessCluster(tmp_path / "cluster").start()
    try:
        notebook = write_notebook(workspace_dir / "kill.ipynb", SLOW_STEP)
        runner = Runner(store)
        thread, box = _run_in_thread(runner, RunRequest(notebook=notebook,
                                                        compute=cluster.compute))
        run_id, [first] = _wait_for_worker_line(store, "slow", box=box)
        cluster.kill_worker(first)
        thread.join(RUN_BOUND_SECONDS)
        assert not thread.is_alive(), "the run hung after its worker was killed"
        [result] = box
        assert result.ok, result.failures
        names = _workers(store, run_id, "slow")
        assert len(names) == 2 and names[0] == first and names[1] != first
        assert sorted(p.name for p in step_output(store, run_id, "slow", "o").iterdir()) == \
            ["done", "partial"]
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.dask
def test_a_lost_worker_beyond_the_allowed_failures_fails_the_step_with_the_cause(
        tmp_path: Path, store: Store, workspace_dir: Path) -> None:
    cluster = SubprocessCluster(tmp_path / "cluster", allowed_failures=0).start()
    try:
        notebook = write_notebook(workspace_dir / "kill.ipynb", SLOW_STEP)
        runner = Runner(store)
        thread, box = _run_in_thread(runner, RunRequest(notebook=notebook,
                                                        compute=cluster.compute))
        run_id, [first] = _wait_for_worker_line(store, "slow", box=box)
        cluster.kill_worker(first)
        thread.join(RUN_BOUND_SECONDS)
        assert not thread.is_alive(), "the run hung after its worker was killed"
        [result] = box
        assert result.status is RunStatus.FAILED
        [report] = result.failures
        assert "the worker running the step was lost once" in report, report
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.dask
def test_cancel_stops_a_step_running_on_a_worker(dask_cluster: SubprocessCluster,
                                                 store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "cancel.ipynb", [
        "%%mlstep slow --output o\nimport os, time\nprint('kernel pid', os.getpid())\n"
        "print('sleeping', flush=True)\ntime.sleep(6)",
    ])
    runner = Runner(store)
    thread, box = _run_in_thread(runner, RunRequest(notebook=notebook,
                                                    compute=dask_cluster.compute))
    run_id, _ = _wait_for_worker_line(store, "slow", box=box)
    canceled_at = time.monotonic()
    runner.cancel()
    thread.join(RUN_BOUND_SECONDS)
    assert not thread.is_alive()
    [result] = box
    assert result.status is RunStatus.CANCELED
    assert time.monotonic() - canceled_at < 5  # the step did not run its 6 s to the end
    assert store.runs.step_run(run_id, "slow").status is StepStatus.CANCELED
    # the step's kernel on the worker was killed too, not left sleeping (the worker may
    # have started a spare kernel for its next step: that one stays)
    import psutil

    [pid] = re.findall(r"kernel pid (\d+)", store.runs.log_path(run_id, "slow").read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == "zombie"
    # and the run's cancel events do not stay behind on the scheduler
    assert _cancel_events_on_scheduler(dask_cluster) == []


def _cancel_events_on_scheduler(cluster: SubprocessCluster) -> list[str]:
    from distributed import Client

    def names(dask_scheduler: Any) -> list[str]:
        return [n for n in dask_scheduler.extensions["events"]._events
                if str(n).startswith("mlpipe-cancel")]

    with Client(cluster.address, timeout=10, set_as_default=False) as client:
        return list(client.run_on_scheduler(names))


# -- named compute targets (.mlpipe/compute.json) and the compute CLI ---------------------------
def test_compute_targets_are_stored_in_the_workspace(store: Store) -> None:
    from mlpipe_jupyter.errors import NotFoundError
    from mlpipe_jupyter.store.compute import ComputeTargets

    targets = ComputeTargets(store.workspace)
    targets.add("cluster", "dask", "tcp://h:8786")
    assert targets.get("cluster").address == "tcp://h:8786"
    assert (store.workspace.root / "compute.json").exists()
    with pytest.raises(ExecutorError, match="--replace"):
        targets.add("cluster", "dask", "tcp://other:8786")
    targets.add("cluster", "dask", "tcp://other:8786", replace=True)
    assert targets.names() == ["cluster"]
    for bad in ("local", "dask", "9lives", "a/b"):
        with pytest.raises(ExecutorError, match="bad compute target name"):
            targets.add(bad, "dask", "tcp://h:1")
    with pytest.raises(ExecutorError, match="not supported"):
        targets.add("s3", "dask", "tcp://h:1", datastore="s3-bucket")
    targets.remove("cluster")
    with pytest.raises(NotFoundError):
        targets.get("cluster")


def test_unknown_compute_names_list_the_stored_targets(store: Store, workspace_dir: Path) -> None:
    from mlpipe_jupyter.errors import DefinitionError
    from mlpipe_jupyter.store.compute import ComputeTargets

    ComputeTargets(store.workspace).add("cluster", "dask", "tcp://h:8786")
    notebook = write_notebook(workspace_dir / "n.ipynb", [
        "%%mlstep a --output o --compute clutser\n(outputs.o / 'f').write_text('x')",
    ])
    with pytest.raises(DefinitionError, match="named targets: cluster"):
        run_notebook(notebook, store=store)


@pytest.mark.slow
@pytest.mark.dask
def test_compute_cli_and_runs_on_a_named_target(dask_cluster: SubprocessCluster,
                                                workspace_dir: Path) -> None:
    from tests.conftest import run_cli

    added = run_cli("compute", "add", "cluster", "--dask", dask_cluster.address)
    assert added.returncode == 0, added.stderr
    assert "reachable, 3 workers" in added.stdout
    assert run_cli("compute", "add", "gone", "--dask", "tcp://127.0.0.1:9").returncode == 0
    listed = run_cli("compute", "list")
    assert listed.returncode == 0, listed.stderr
    line = {row.split()[0]: row for row in listed.stdout.splitlines() if row.strip()}
    assert "reachable, 3 workers, 3 threads" in line["cluster"]
    assert "unreachable" in line["gone"]
    shown = run_cli("compute", "show", "cluster")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"w3\s+tcp://127\.0\.0\.1:\d+\s+1\s+-\s+GPU=1", shown.stdout), shown.stdout
    assert run_cli("compute", "show", "gone").returncode == 1

    notebook = write_notebook(workspace_dir / "named.ipynb", FAN_OUT[:2])
    ran = run_cli("run", str(notebook), "--compute", "cluster", "--json")
    assert ran.returncode == 0, ran.stderr
    store = Store.open()
    run_id = store.runs.list_runs()[0].id
    assert store.runs.step_run(run_id, "make").compute == "cluster"
    assert _workers(store, run_id, "make")

    failed = run_cli("run", str(notebook), "--compute", "gone", "--regenerate")
    assert failed.returncode == 1
    assert "dask scheduler tcp://127.0.0.1:9 is unreachable" in failed.stderr
    assert len(store.runs.list_runs()) == 1  # nothing was recorded for the failed start
    assert run_cli("compute", "remove", "gone").returncode == 0
    store.close()


@pytest.mark.slow
@pytest.mark.dask
def test_losing_every_worker_ends_the_run_instead_of_hanging(
        tmp_path: Path, store: Store, workspace_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import mlpipe_jupyter.executors.dask.executor as dask_executor

    monkeypatch.setattr(dask_executor, "DEFAULT_NO_WORKER_TIMEOUT", 3.0)
    cluster = SubprocessCluster(tmp_path / "cluster", (WorkerSpec("only"),)).start()
    try:
        notebook = write_notebook(workspace_dir / "alone.ipynb", SLOW_STEP)
        runner = Runner(store)
        thread, box = _run_in_thread(runner, RunRequest(notebook=notebook,
                                                        compute=cluster.compute))
        _wait_for_worker_line(store, "slow", box=box)
        cluster.kill_worker("only")
        thread.join(RUN_BOUND_SECONDS)
        assert not thread.is_alive(), "the run hung with no workers left"
        [result] = box
        assert result.status is RunStatus.FAILED
        [report] = result.failures
        # either the scheduler drops the task or our watchdog gives up waiting for a worker
        assert "has no workers" in report or "no workers left" in report, report
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.dask
def test_workers_keep_a_kernel_started_for_the_next_step_and_leave_none_behind(
        tmp_path: Path, store: Store, workspace_dir: Path) -> None:
    import psutil

    cluster = SubprocessCluster(tmp_path / "cluster").start()
    try:
        notebook = write_notebook(workspace_dir / "warm.ipynb", FAN_OUT)
        result = run_notebook(notebook, {"n": "2"}, compute=cluster.compute, store=store,
                              max_parallel=2)
        assert result.ok, result.failures
        # each worker holds a started kernel for its next step (that no step has used) ...
        def alive(process: psutil.Process) -> bool:
            try:
                return process.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:  # a step's kernel that just shut down
                return False

        deadline = time.monotonic() + 10
        while True:  # the last steps' kernels are shutting down; the spares stay
            children = [kernel for process in cluster.worker_procs.values()
                        for kernel in kernels_of(process.pid)]  # started or forked for it
            spares = [child for child in children if alive(child)]
            if len(spares) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert len(spares) == 2, children
    finally:
        cluster.stop()
    # ... and it goes away with its worker
    deadline = time.monotonic() + 15
    while any(alive(p) for p in spares):
        assert time.monotonic() < deadline, "kernels outlived their dask workers"
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.dask
@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(literal_values, min_size=40, max_size=40))
def test_parameter_values_arrive_unchanged_on_a_worker(
    dask_cluster: SubprocessCluster, store: Store, workspace_dir: Path, values: list[Any]
) -> None:
    """The values travel in the step notebook, not in the task's pickled spec."""
    run = run_overrides(store, workspace_dir, values, compute=dask_cluster.compute)
    assert _workers(store, run["run_id"], "probe")  # it ran on a worker
