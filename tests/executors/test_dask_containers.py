"""Steps that name an environment (``--env``) on the dask compute target: they run in the
environment's container on workers that have a Docker engine. A real Docker engine and a
real cluster on loopback: two workers with the engine, one whose DOCKER_HOST answers not."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.errors import ExecutorError
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.runner.explain import explain_step
from mlpipe_jupyter.runner.runner import Runner, RunRequest, run_notebook
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.environments import EnvironmentSpec
from tests.conftest import run_cli, step_output, write_notebook

pytest.importorskip("distributed")

from tests.executors.dask_cluster import SubprocessCluster, WorkerSpec  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.dask, pytest.mark.docker]
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
RUN_BOUND_SECONDS = 240
STEP_LABEL = "org.mlpipe.step"


@pytest.fixture(scope="module")
def cluster(docker_engine: Any, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[SubprocessCluster]:
    cluster = SubprocessCluster(tmp_path_factory.mktemp("dask-docker"), (
        WorkerSpec("d1"), WorkerSpec("d2"), WorkerSpec("plain", env=NO_ENGINE),
    )).start()
    yield cluster
    cluster.stop()


def _where(store: Store, run_id: str, step: str) -> list[tuple[str, str]]:
    """(how, worker name) of each attempt, from the step's log: how is 'in a container' or ''."""
    text = store.runs.log_path(run_id, step).read_text()
    return [(how.strip(), name) for how, name in
            re.findall(r"--- mlpipe: step \S+ (in a container )?on dask worker \S+ \((\S+),", text)]



def _start_until_sleeping(store: Store, notebook: Path, cluster: SubprocessCluster
                          ) -> tuple[Runner, threading.Thread, list[Any], str]:
    """Start a run of the notebook in a thread; return once step 'slow' printed 'sleeping'."""
    runner = Runner(store)
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(
        runner.run(RunRequest(notebook=notebook, compute=cluster.compute))), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while True:
        runs = store.runs.list_runs()
        log = store.runs.log_path(runs[0].id, "slow") if runs else None
        if log is not None and log.exists() and "sleeping" in log.read_text():
            return runner, thread, box, runs[0].id
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.2)


ENV_PIPELINE = [
    "%%mlsetup\nimport os, sys, time",
    "%%mlstep make --output o --param n=3\n(outputs.o / 'n').write_text(str(n))",
    "%%mlstep boxed_a --input i=make.o --output o --env tiny\nimport six\ntime.sleep(2)\n"
    "(outputs.o / 'v').write_text(f\"{six.__version__} {int((inputs.i / 'n').read_text())}\")\n"
    "(outputs.o / 'who').write_text(f'{os.getuid()} {sorted(os.listdir(\"/sys/class/net\"))}')\n"
    "import mlpipe_jupyter\nmlpipe_jupyter.log('n', int((inputs.i / 'n').read_text()))",
    "%%mlstep boxed_b --input i=make.o --output o --env tiny\nimport six\ntime.sleep(2)\n"
    "(outputs.o / 'v').write_text(six.__version__)\nprint('six', six.__version__)",
    "%%mlstep plain --input a=boxed_a.o --input b=boxed_b.o --output o\n"
    "(outputs.o / 'v').write_text((inputs.a / 'v').read_text() + ' ' + sys.executable)",
]


def test_env_steps_run_in_containers_on_workers_with_docker(
        cluster: SubprocessCluster, store: Store, workspace_dir: Path, docker_engine: Any) -> None:
    import os

    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.16.0",)))
    notebook = write_notebook(workspace_dir / "envs.ipynb", ENV_PIPELINE)
    result = run_notebook(notebook, {"n": "5"}, compute=cluster.compute, store=store,
                          max_parallel=3)
    assert result.ok, result.failures
    run_id = result.run_id
    a, b = _where(store, run_id, "boxed_a"), _where(store, run_id, "boxed_b")
    # in containers, at once, on the two workers that have Docker
    assert [how for how, _ in a + b] == ["in a container", "in a container"]
    assert {a[0][1], b[0][1]} == {"d1", "d2"}
    sa, sb = store.runs.step_run(run_id, "boxed_a"), store.runs.step_run(run_id, "boxed_b")
    assert sa.started_at < sb.ended_at and sb.started_at < sa.ended_at
    # the step's package came from the environment, with the container's isolation
    assert (step_output(store, run_id, "boxed_a", "o") / "v").read_text() == "1.16.0 5"
    assert (step_output(store, run_id, "boxed_a", "o") / "who").read_text() == f"{os.getuid()} ['lo']"
    assert [m["value"] for m in store.runs.metrics(run_id, "boxed_a")] == [5]
    assert "six 1.16.0" in store.runs.log_path(run_id, "boxed_b").read_text()
    # a step without --env runs in the worker's own Python
    [(how, _)] = _where(store, run_id, "plain")
    assert how == ""
    assert "/opt/venv" not in (step_output(store, run_id, "plain", "o") / "v").read_text()
    assert not docker_engine.containers.list(all=True, filters={"label": f"org.mlpipe.run={run_id}"})

    again = run_notebook(notebook, {"n": "5"}, compute=cluster.compute, store=store)
    assert set(again.step_status.values()) == {StepStatus.REUSED}

    # a new version of the environment is a change: its steps run again, and `why` says so
    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.17.0",)))
    changed = run_notebook(notebook, {"n": "5"}, compute=cluster.compute, store=store)
    assert changed.ok, changed.failures
    assert changed.step_status["boxed_b"] is StepStatus.SUCCEEDED
    assert (step_output(store, changed.run_id, "boxed_b", "o") / "v").read_text() == "1.17.0"
    assert "the environment changed: env:" in "\n".join(
        explain_step(store, changed.run_id, "boxed_b"))


def test_a_module_missing_in_the_workers_container_says_how_to_add_it(
        cluster: SubprocessCluster, store: Store, workspace_dir: Path) -> None:
    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.16.0",)))
    notebook = write_notebook(workspace_dir / "missing.ipynb", [
        "%%mlstep boxed --output o --env tiny\nimport six\nimport pandas",
    ])
    result = run_notebook(notebook, compute=cluster.compute, store=store)
    assert result.step_status == {"boxed": StepStatus.FAILED}
    error = store.runs.step_run(result.run_id, "boxed").error or ""
    assert ("ModuleNotFoundError: No module named 'pandas'. In a container only the image's "
            "packages are there: the step's environment tiny does not have it") in error, error


def test_a_worker_killed_mid_step_stops_its_container_and_the_step_moves(
        cluster: SubprocessCluster, store: Store, workspace_dir: Path, docker_engine: Any) -> None:
    import docker.errors

    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.16.0",)))
    notebook = write_notebook(workspace_dir / "kill.ipynb", [
        "%%mlstep slow --output o --env tiny\nimport time\n(outputs.o / 'partial').write_text('x')\n"
        "print('sleeping', flush=True)\ntime.sleep(8)\n(outputs.o / 'done').write_text('yes')",
    ])
    _, thread, box, run_id = _start_until_sleeping(store, notebook, cluster)
    [(_, first)] = _where(store, run_id, "slow")
    [container] = docker_engine.containers.list(filters={"label": f"{STEP_LABEL}=slow"})
    cluster.kill_worker(first)
    # the killed worker's container stops by itself (it is tethered to the worker) ...
    deadline = time.monotonic() + 30
    while True:
        try:
            container.reload()
        except docker.errors.NotFound:
            break  # stopped, and already removed by the worker that took the step over
        if container.status != "running":
            break
        assert time.monotonic() < deadline, "the dead worker's container kept running"
        time.sleep(0.5)
    # ... and the step runs again on the other worker with Docker, never on 'plain'
    thread.join(RUN_BOUND_SECONDS)
    assert not thread.is_alive(), "the run hung after its worker was killed"
    [result] = box
    assert result.ok, result.failures
    where = _where(store, run_id, "slow")
    assert [name for _, name in where][0] == first and len(where) == 2
    assert where[1][1] in {"d1", "d2"} - {first}
    assert sorted(p.name for p in step_output(store, run_id, "slow", "o").iterdir()) == \
        ["done", "partial"]
    cluster.add_worker(WorkerSpec(first))  # for the tests after this one
    cluster.wait_for_workers(3)


def test_cancel_stops_a_container_step_on_a_worker(
        cluster: SubprocessCluster, store: Store, workspace_dir: Path, docker_engine: Any) -> None:
    from mlpipe_jupyter.model.status import RunStatus

    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.16.0",)))
    notebook = write_notebook(workspace_dir / "cancel.ipynb", [
        "%%mlstep slow --output o --env tiny\nimport time\nprint('sleeping', flush=True)\n"
        "time.sleep(60)",
    ])
    runner, thread, box, run_id = _start_until_sleeping(store, notebook, cluster)
    canceled_at = time.monotonic()
    runner.cancel()
    thread.join(RUN_BOUND_SECONDS)
    [result] = box
    assert result.status is RunStatus.CANCELED
    assert store.runs.step_run(run_id, "slow").status is StepStatus.CANCELED
    # the container is stopped and removed by its worker soon after, not left sleeping
    deadline = canceled_at + 20
    while docker_engine.containers.list(all=True, filters={"label": f"{STEP_LABEL}=slow",
                                                          "status": "running"}):
        assert time.monotonic() < deadline, "the canceled step's container kept running"
        time.sleep(0.5)


def test_compute_show_says_which_workers_have_docker(
        cluster: SubprocessCluster, workspace_dir: Path) -> None:
    assert run_cli("compute", "add", "boxes", "--dask", cluster.address).returncode == 0
    shown = run_cli("compute", "show", "boxes")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"d1\s+tcp://\S+\s+1\s+-\s+-\s+yes", shown.stdout), shown.stdout
    assert re.search(r"plain\s+tcp://\S+\s+1\s+-\s+-\s+no", shown.stdout), shown.stdout
    assert "plain: no Docker engine answers at unix:///nonexistent/docker.sock" in shown.stdout


def test_env_without_any_docker_worker_fails_before_anything_runs(
        tmp_path: Path, store: Store, workspace_dir: Path) -> None:
    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.16.0",)))
    lonely = SubprocessCluster(tmp_path / "cluster", (WorkerSpec("plain", env=NO_ENGINE),)).start()
    try:
        notebook = write_notebook(workspace_dir / "nodocker.ipynb", [
            "%%mlstep boxed --output o --env tiny\nimport six",
        ])
        with pytest.raises(ExecutorError, match=r"--env tiny: .* no worker of the dask cluster .* "
                           r"has a Docker engine \(tcp://[\d.:]+: no Docker engine answers at "
                           r"unix:///nonexistent/docker.sock\)"):
            run_notebook(notebook, compute=lonely.compute, store=store)
        assert store.runs.list_runs() == []
    finally:
        lonely.stop()
