"""The docker compute target against a real engine: isolation, ownership, limits, faults."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_jupyter.executors import kernel_template
from mlpipe_jupyter.executors.docker.executor import LABEL_RUN, DockerExecutor
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.runner.explain import explain_step
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.environments import EnvironmentSpec
from tests.conftest import EXAMPLE, IRIS, run_cli, step_output, write_notebook
from tests.value_probe import literal_values, run_overrides

pytestmark = [pytest.mark.slow, pytest.mark.docker]



def test_pipeline_mixing_docker_and_local_steps(docker_engine: Any, store: Store,
                                                workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "mixed.ipynb", [
        "%%mlsetup\nimport os",
        "%%mlstep make --output o --param n=3\n"
        "(outputs.o / 'n').write_text(str(n))\n"
        "(outputs.o / 'where').write_text(f'{os.getuid()}:{os.getgid()} {sorted(os.listdir(\"/sys/class/net\"))}')\n"
        "print('made', n)",
        "%%mlstep square --input i=make.o --output o --compute local\n"
        "x = int((inputs.i / 'n').read_text())\n(outputs.o / 'sq').write_text(str(x * x))",
    ])
    result = run_notebook(notebook, {"n": "4"}, compute="docker", store=store)
    assert result.ok, result.failures
    made = step_output(store, result.run_id, "make", "o")
    uid_gid, interfaces = (made / "where").read_text().split(" ", 1)
    assert uid_gid == f"{os.getuid()}:{os.getgid()}"  # ran as the host user ...
    assert (made / "n").stat().st_uid == os.getuid()  # ... so its files are the user's
    assert interfaces == "['lo']"  # no network unless the step asks
    assert (step_output(store, result.run_id, "square", "o") / "sq").read_text() == "16"
    assert store.runs.step_run(result.run_id, "make").compute == "docker"
    assert "made 4" in store.runs.log_path(result.run_id, "make").read_text()
    again = run_notebook(notebook, {"n": "4"}, compute="docker", store=store)
    assert set(again.step_status.values()) == {StepStatus.REUSED}


def test_inputs_are_read_only_and_errors_point_at_the_cell(docker_engine: Any, store: Store,
                                                          workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "ro.ipynb", [
        "%%mlstep make --output o\n(outputs.o / 'f').write_text('x')",
        "%%mlstep vandal --input i=make.o --output o\n(inputs.i / 'f').write_text('overwritten')",
    ])
    result = run_notebook(notebook, compute="docker", store=store)
    assert result.step_status["vandal"] is StepStatus.FAILED
    [report] = result.failures
    assert "step 'vandal' failed in cell 2 (the step's code)" in report
    assert "Read-only file system" in report or "Permission denied" in report
    assert (step_output(store, result.run_id, "make", "o") / "f").read_text() == "x"


def test_memory_limit_and_timeout_are_reported(docker_engine: Any, store: Store,
                                               workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "limits.ipynb", [
        "%%mlstep hog --output o --memory 64m\nblocks = [bytearray(16 * 2**20) for _ in range(64)]",
        "%%mlstep sleepy --output o --timeout 3s\nimport time\ntime.sleep(60)",
    ])
    started = time.time()
    result = run_notebook(notebook, compute="docker", store=store, max_parallel=2)
    assert time.time() - started < 50
    hog = store.runs.step_run(result.run_id, "hog")
    assert hog.status is StepStatus.FAILED
    assert "memory" in (hog.error or "") and "64 MiB" in (hog.error or "")
    assert "runner and kernel alone take" in (hog.error or "")  # a limit this small
    sleepy = store.runs.step_run(result.run_id, "sleepy")
    assert "timed out after 3 s" in (sleepy.error or "")
    assert not docker_engine.containers.list(all=True, filters={"label": f"{LABEL_RUN}={result.run_id}"})


def test_environment_image_built_once_and_rebuild_invalidates_reuse(
    docker_engine: Any, store: Store, workspace_dir: Path
) -> None:
    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.16.0",)))
    notebook = write_notebook(workspace_dir / "env.ipynb", [
        "%%mlstep uses_six --output o --env tiny\nimport six\n(outputs.o / 'v').write_text(six.__version__)",
    ])
    first = run_notebook(notebook, compute="docker", store=store)
    assert first.ok, first.failures
    assert (step_output(store, first.run_id, "uses_six", "o") / "v").read_text() == "1.16.0"
    assert run_notebook(notebook, compute="docker", store=store).step_status["uses_six"] is StepStatus.REUSED
    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.17.0",)))
    changed = run_notebook(notebook, compute="docker", store=store)
    assert changed.step_status["uses_six"] is StepStatus.SUCCEEDED
    assert (step_output(store, changed.run_id, "uses_six", "o") / "v").read_text() == "1.17.0"
    assert "the environment changed: docker:sha256:" in "\n".join(
        explain_step(store, changed.run_id, "uses_six"))


def test_a_module_missing_in_the_image_says_how_to_add_it(
        docker_engine: Any, store: Store, workspace_dir: Path) -> None:
    """The same notebook works locally, where pandas is installed; in a container only the
    image's packages are there, and the failure says how to get one in."""
    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.16.0",)))
    notebook = write_notebook(workspace_dir / "missing.ipynb", [
        "%%mlstep bare --output o\nimport pandas",
        "%%mlstep in_env --output o --env tiny\nimport six\nimport not_in_tiny.sub",
        "%%mlstep fine --output o\nimport json\n(outputs.o / 'v').write_text('ok')",
    ])
    done = run_cli("run", "-q", "--json", str(notebook), "--compute", "docker",
                   cwd=workspace_dir)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["steps"] == {"bare": "failed", "in_env": "failed",
                                                "fine": "succeeded"}
    assert ("ModuleNotFoundError: No module named 'pandas'. In a container only the image's "
            "packages are there: the step ran in mlpipe's base image, which holds only papermill "
            "and ipykernel") in done.stderr
    assert "then `--env NAME` on the run or in the step's %%mlstep line" in done.stderr
    assert ("No module named 'not_in_tiny'. In a container only the image's packages are there: "
            "the step's environment tiny does not have it; make a new version with the package "
            "that provides not_in_tiny: `mlpipe env create tiny --pip ...`") in done.stderr


def test_bad_environment_and_base_image_errors(docker_engine: Any, store: Store,
                                               workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "bad.ipynb", ["%%mlstep a --output o --env nope\npass"])
    done = run_cli("run", str(notebook), "--compute", "docker")
    assert done.returncode == 2 and "environment 'nope' is not defined" in done.stderr
    store.environments.create("elsewhere", EnvironmentSpec(image="python:3.11-slim"))
    write_notebook(notebook, ["%%mlstep a --output o --env elsewhere\npass"])
    done = run_cli("run", str(notebook), "--compute", "docker")
    assert done.returncode == 1
    assert "base image 'python:3.11-slim' is not in the Docker engine" in done.stderr
    store.environments.create("broken", EnvironmentSpec(pip=("no-such-package-mlpipe-xyz==9",)))
    write_notebook(notebook, ["%%mlstep a --output o --env broken\npass"])
    done = run_cli("run", str(notebook), "--compute", "docker")
    assert "building environment broken@v1 failed" in done.stderr
    assert "no-such-package-mlpipe-xyz" in done.stderr


def test_engine_unreachable_is_explained(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "n.ipynb", ["%%mlstep a --output o\npass"])
    done = run_cli("run", str(notebook), "--compute", "docker",
                   env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert done.returncode == 1
    assert "no Docker engine answers" in done.stderr and "install-docker" in done.stderr


def test_containers_of_a_killed_runner_stop_and_are_removed_and_ctrl_c_stops_them(
    docker_engine: Any, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "long.ipynb", [
        "%%mlstep long --output o\nimport time\ntime.sleep(120)",
    ])

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "mlpipe_jupyter", "run", str(notebook),
                                 "--compute", "docker"], cwd=workspace_dir, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def running_containers() -> list[Any]:
        return docker_engine.containers.list(filters={"label": "org.mlpipe.step=long"})

    def wait_for_container() -> None:
        deadline = time.time() + 90
        while not running_containers():
            assert time.time() < deadline, "no container started"
            time.sleep(0.5)

    runner = start()
    wait_for_container()
    runner.kill()  # kill -9: the step stops with its runner (the container is tethered) ...
    runner.wait()
    deadline = time.time() + 30
    while running_containers():
        assert time.time() < deadline, "the step's container outlived its killed runner"
        time.sleep(0.5)
    stopped = docker_engine.containers.list(all=True, filters={"label": "org.mlpipe.step=long"})
    assert stopped and "went away" in stopped[0].logs().decode()
    removed = DockerExecutor(workspace=None).remove_leftovers()  # ... and is removed at the next start
    assert removed >= 1
    assert not docker_engine.containers.list(all=True, filters={"label": "org.mlpipe.step=long"})

    runner = start()
    wait_for_container()
    stopped_at = time.time()
    runner.send_signal(signal.SIGINT)
    runner.communicate(timeout=60)
    assert time.time() - stopped_at < 20
    assert runner.returncode == 130
    assert not docker_engine.containers.list(all=True, filters={"label": "org.mlpipe.step=long"})
    store = Store.open()
    assert store.runs.get_run("latest").status is RunStatus.CANCELED


def test_leftover_cleanup_races_other_runners_containers_without_failing(docker_engine: Any) -> None:
    """Runners on one host clean up leftovers while others create and remove their own
    containers (the Dask workers of one machine do, at every container step): a container
    that ends between the listing and the removal is not an error, and live ones stay."""
    import socket
    import threading

    from mlpipe_jupyter.executors.docker.bootstrap import base_image_tag
    from mlpipe_jupyter.executors.docker.containers import (
        LABEL_HOST,
        LABEL_PID,
        remove_dead_containers,
    )

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    race = "org.mlpipe.test-race"

    def labelled(pid: str) -> Any:
        return docker_engine.containers.create(
            base_image_tag(), ["true"], network_mode="none",
            labels={LABEL_HOST: socket.gethostname(), LABEL_PID: pid, race: "1"})

    errors: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:  # another runner's containers: made and removed again and again
        try:
            while not stop.is_set():
                labelled(str(os.getpid())).remove(force=True)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    def clean() -> None:  # two runners cleaning up at once
        try:
            for _ in range(15):
                remove_dead_containers(docker_engine, [f"{race}=1"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    leftovers = [labelled(dead) for _ in range(6)]
    live = labelled(str(os.getpid()))
    workers = [threading.Thread(target=churn), threading.Thread(target=clean),
               threading.Thread(target=clean)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers[1:]:
            worker.join(timeout=120)
        stop.set()
        workers[0].join(timeout=30)
        assert not errors, errors
        remaining = {c.id for c in docker_engine.containers.list(all=True,
                                                                 filters={"label": race})}
        assert remaining == {live.id}, "dead runners' containers must go, a live one's stay"
        assert not {c.id for c in leftovers} & remaining
    finally:
        stop.set()
        for container in docker_engine.containers.list(all=True, filters={"label": race}):
            container.remove(force=True)


def test_example_gives_the_same_outputs_in_docker_and_locally(
    docker_engine: Any, store: Store, workspace_dir: Path
) -> None:
    store.datasets.register("iris", IRIS, tabular=True)
    store.environments.create("sklearn", EnvironmentSpec(pip=("pandas", "scikit-learn")))
    local = run_notebook(EXAMPLE, store=store)
    in_docker = run_notebook(EXAMPLE, compute="docker", env="sklearn", store=store)
    assert local.ok and in_docker.ok, in_docker.failures
    assert set(in_docker.step_status.values()) == {StepStatus.SUCCEEDED}  # new environment
    reports = [json.loads((step_output(store, r.run_id, "evaluate", "report") / "metrics.json").read_text())
               for r in (local, in_docker)]
    assert reports[0] == reports[1]
    prepared = [(step_output(store, r.run_id, "prepare", "clean") / "test.csv").read_text()
                for r in (local, in_docker)]
    assert prepared[0] == prepared[1]


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(literal_values, min_size=40, max_size=40))
def test_parameter_values_arrive_unchanged_in_a_container(
    docker_engine: Any, store: Store, workspace_dir: Path, values: list[Any]
) -> None:
    """The values travel in the step notebook, not through a JSON file the container reads."""
    run = run_overrides(store, workspace_dir, values, compute="docker")
    assert store.runs.step_run(run["run_id"], "probe").compute == "docker"


def _image_without_papermill(client: Any, tag: str) -> str:
    """An image of the base image's Python without papermill and ipykernel, unique to this
    test (a label with the time), built with no network at all."""
    import io

    from mlpipe_jupyter.executors.docker.bootstrap import base_image_tag

    base = client.images.get(base_image_tag()).id
    text = (f"FROM {base}\nRUN /opt/venv/bin/pip uninstall -y -q papermill ipykernel\n"
            f"LABEL org.mlpipe.test={time.time_ns()}\n")
    image, _ = client.images.build(fileobj=io.BytesIO(text.encode()), tag=tag, rm=True,
                                   forcerm=True, pull=False, network_mode="none")
    return str(image.id)


def test_step_image_gets_papermill_added_once_and_a_rebuild_reruns_the_step(
    docker_engine: Any, store: Store, workspace_dir: Path
) -> None:
    from mlpipe_jupyter.executors.docker.images import step_image_tag

    tag = f"mlpipe-test/no-papermill:{os.getpid()}"
    made = [_image_without_papermill(docker_engine, tag)]
    notebook = write_notebook(workspace_dir / "image.ipynb", [
        f"%%mlstep where --output o --image {tag}\nimport sys\n"
        "print('python', sys.executable, sys.version_info[:2])\n"
        "(outputs.o / 'python').write_text(sys.executable)",
    ])
    try:
        first = run_notebook(notebook, compute="docker", store=store)
        assert first.ok, first.failures
        assert (step_output(store, first.run_id, "where", "o") / "python").read_text() == \
            "/opt/venv/bin/python3"  # the image's Python
        assert "python /opt/venv/bin/python3" in store.runs.log_path(first.run_id, "where").read_text()
        derived = docker_engine.images.get(step_image_tag(made[0]))
        assert derived.labels["org.mlpipe.image"] == tag
        again = run_notebook(notebook, compute="docker", store=store)
        assert again.step_status["where"] is StepStatus.REUSED
        made.append(_image_without_papermill(docker_engine, tag))  # rebuilt: a new id
        rebuilt = run_notebook(notebook, compute="docker", store=store)
        assert rebuilt.step_status["where"] is StepStatus.SUCCEEDED, rebuilt.failures
        assert "the environment changed: docker:sha256:" in "\n".join(
            explain_step(store, rebuilt.run_id, "where"))
    finally:
        for image_id in made:
            for name in (step_image_tag(image_id), image_id):
                with contextlib.suppress(Exception):  # already gone
                    docker_engine.images.remove(name, force=True)


def test_step_naming_a_missing_image_fails_before_running(
    docker_engine: Any, store: Store, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "missing.ipynb", [
        "%%mlstep fine --output o\npass",
        "%%mlstep needs --output o --gpus 1 --image mlpipe-test/no-such-image:1\npass",
    ])
    done = run_cli("run", str(notebook), "--compute", "docker")
    assert done.returncode == 1
    assert "step 'needs' (cell 2): image 'mlpipe-test/no-such-image:1' is not in the Docker " \
           "engine" in done.stderr
    assert "docker load" in done.stderr and "docker pull" in done.stderr
    assert store.runs.list_runs() == []  # nothing ran, nothing was recorded
    # the same step runs locally: the image and the GPU are shown as not applied
    local = run_cli("run", str(notebook))
    assert local.returncode == 0, local.stderr
    assert "note: needs: GPU request (1) not applied" in local.stdout


def test_a_run_if_step_in_docker_runs_without_the_failed_steps_folder(
    docker_engine: Any, store: Store, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "alert.ipynb", [
        "%%mlstep train --output model --compute local\nraise RuntimeError('diverged')",
        "%%mlstep alert --input m=train.model --output report --run-if any_failed\n"
        "(outputs.report / 'r.txt').write_text(f'model: {inputs.m}')",
    ])
    result = run_notebook(notebook, compute="docker", store=store)
    assert result.status is RunStatus.FAILED
    assert result.step_status == {"train": StepStatus.FAILED, "alert": StepStatus.SUCCEEDED}
    assert (step_output(store, result.run_id, "alert", "report") / "r.txt").read_text() == \
        "model: None"
    # nothing was mounted for the failed step's output: Docker created no folder for it
    planned = store.runs.step_run(result.run_id, "train").result_id or ""
    assert not (store.workspace.results_dir / planned).exists()
    assert sorted(p.name for p in store.workspace.results_dir.iterdir()) == [
        store.runs.step_run(result.run_id, "alert").result_id]


LANE_PROBE = """
import json, os, pathlib, subprocess, sys
def sleepers():
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if open(f'/proc/{pid}/cmdline', 'rb').read().startswith(b'sleep'):
                found.append(pid)
        except OSError:
            pass
    return found
me = STEP
seen = {
    'pid': os.getpid(),
    'marker': 'lane_marker' in sys.modules,
    'env': os.environ.get('LANE_MARK'),
    'left': sorted(str(p) for folder in ('/tmp', '/var/tmp', '/run/lock', '/dev/shm')
                   for p in pathlib.Path(folder).glob('left-by-*')),
    'sleepers': sleepers(),
}
sys.modules['lane_marker'] = sys
os.environ['LANE_MARK'] = me
for folder in ('/tmp', '/var/tmp', '/run/lock', '/dev/shm'):
    pathlib.Path(folder, 'left-by-' + me).write_text('x')
subprocess.Popen(['sleep', '300'], start_new_session=True)  # a daemon, in a session of its own
try:
    (inputs.i / 'x').write_text('x') if inputs.i else None
except OSError as exc:
    seen['read_only'] = type(exc).__name__
(outputs.o / 'seen.json').write_text(json.dumps(seen))
"""


def test_a_runs_docker_steps_share_a_lane_that_leaves_nothing_of_one_step_to_the_next(
        docker_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A docker chain runs in one lane container, each step in a new step process and
    kernel; between steps the lane kills what a step left running and empties /tmp,
    /var/tmp, /run/lock and /dev/shm, but never the workspace folders mounted under /tmp (the
    workspace is put there on purpose). Inputs stay read-only; no container is left, and
    a failed run removes its lane too."""
    project = Path(tempfile.mkdtemp(prefix="mlpipe-lane-test-", dir="/tmp"))
    try:
        monkeypatch.chdir(project)
        monkeypatch.setenv("MLPIPE_HOME", str(project / ".mlpipe"))
        store = Store.open(create=True)
        cells = [f"%%mlstep s0 --output o\ninputs = type('N', (), {{'i': None}})\n"
                 f"{LANE_PROBE.replace('STEP', repr('s0'))}"]
        cells += [f"%%mlstep s{i} --input i=s{i - 1}.o --output o\n"
                  f"{LANE_PROBE.replace('STEP', repr(f's{i}'))}" for i in range(1, 4)]
        result = run_notebook(write_notebook(project / "lane.ipynb", cells), store=store,
                              compute="docker")
        assert result.ok, result.failures
        logs = [store.runs.log_path(result.run_id, f"s{i}").read_text() for i in range(4)]
        lanes = {line.split("lane container ")[1].split(",")[0]
                 for log in logs for line in log.splitlines() if "lane container" in line}
        assert len(lanes) == 1, logs  # one container served the chain
        assert "its 1st step" in logs[0] and "its 4th step" in logs[3]
        seen = [json.loads((step_output(store, result.run_id, f"s{i}", "o") / "seen.json")
                           .read_text()) for i in range(4)]
        for probe in seen:
            assert probe["marker"] is False and probe["env"] is None, probe
            assert probe["left"] == [] and probe["sleepers"] == [], probe
        assert len({probe["pid"] for probe in seen}) == 4
        assert {probe.get("read_only") for probe in seen[1:]} == {"OSError"}
        assert not docker_engine.containers.list(
            all=True, filters={"label": f"{LABEL_RUN}={result.run_id}"})

        broken = write_notebook(project / "broken.ipynb", [
            "%%mlstep a --output o\nraise ValueError('on purpose')",
            *[f"%%mlstep b{i} --input i=a.o --output o\npass" for i in range(3)],
        ])
        failed = run_notebook(broken, store=store, compute="docker")
        assert failed.status is RunStatus.FAILED
        assert not docker_engine.containers.list(
            all=True, filters={"label": f"{LABEL_RUN}={failed.run_id}"})
        store.close()
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_a_lane_survives_a_crashed_kernel_and_a_memory_limited_step_runs_alone(
        docker_engine: Any, store: Store, workspace_dir: Path) -> None:
    """One step at a time: a kernel that exits (os._exit) fails its step alone and the next
    step runs in the same lane; a step with a memory limit gets a container of its own (a
    lane's step template would count against its limit) and fits in it."""
    notebook = write_notebook(workspace_dir / "faults.ipynb", [
        "%%mlstep crash --output o\nimport os\nos._exit(3)",
        "%%mlstep after_crash --output o\n(outputs.o / 'ok').write_text('1')",
        "%%mlstep limited --output o --memory 256m\n(outputs.o / 'ok').write_text('1')",
        "%%mlstep after_limited --output o\n(outputs.o / 'ok').write_text('1')",
    ])
    result = run_notebook(notebook, store=store, compute="docker", max_parallel=1)
    status = {name: store.runs.step_run(result.run_id, name) for name in
              ("crash", "after_crash", "limited", "after_limited")}
    assert status["crash"].status is StepStatus.FAILED
    assert "kernel died" in (status["crash"].error or "")
    assert all(status[name].status is StepStatus.SUCCEEDED
               for name in ("after_crash", "limited", "after_limited"))

    def lane(name: str) -> str | None:
        text = store.runs.log_path(result.run_id, name).read_text()
        return text.split("lane container ")[1].split(",")[0] if "lane container" in text else None

    assert lane("crash") == lane("after_crash") == lane("after_limited") is not None
    assert lane("limited") is None
    assert not docker_engine.containers.list(
        all=True, filters={"label": f"{LABEL_RUN}={result.run_id}"})


def test_a_docker_fan_out_starts_a_lane_per_branch_and_the_join_reuses_one(
        docker_engine: Any, store: Store, workspace_dir: Path) -> None:
    """Four branches running at once find no free lane, so each starts its own (a lane
    runs one step at a time); the step that joins them takes one of those four, as its
    second step. Every lane is removed with the run."""
    branches = [f"%%mlstep b{i} --output o\nimport time\ntime.sleep(1.5)\n"
                f"(outputs.o / 'n').write_text('{i}')" for i in range(4)]
    join = ("%%mlstep join " + " ".join(f"--input i{i}=b{i}.o" for i in range(4)) +
            " --output o\n(outputs.o / 'sum').write_text(str(sum(int((p / 'n').read_text()) "
            "for p in (inputs.i0, inputs.i1, inputs.i2, inputs.i3))))")
    notebook = write_notebook(workspace_dir / "fan.ipynb", [*branches, join])
    result = run_notebook(notebook, store=store, compute="docker", max_parallel=4)
    assert result.ok, result.failures
    assert (step_output(store, result.run_id, "join", "o") / "sum").read_text() == "6"

    def lane(name: str) -> tuple[str, str]:
        line = next(line for line in store.runs.log_path(result.run_id, name).read_text()
                    .splitlines() if "lane container" in line)
        return line.split("lane container ")[1].split(",")[0], line.split("its ")[1].split()[0]

    lanes = [lane(f"b{i}") for i in range(4)]
    assert len({container for container, _ in lanes}) == 4
    assert {nth for _, nth in lanes} == {"1st"}
    joined, nth = lane("join")
    assert joined in {container for container, _ in lanes} and nth == "2nd"
    assert not docker_engine.containers.list(
        all=True, filters={"label": f"{LABEL_RUN}={result.run_id}"})


def test_a_notebook_kernel_runs_its_pipeline_in_a_docker_lane(
        docker_engine: Any, store: Store, workspace_dir: Path) -> None:
    """`%mlpipe run --compute docker` in a real kernel (the runner is then the kernel's
    process, as in JupyterLab): the chain runs in one lane and none is left."""
    from jupyter_client.manager import KernelManager

    from tests.jupyter.test_kernel_magics import Kernel

    notebook = write_notebook(workspace_dir / "kernel.ipynb", [
        "%load_ext mlpipe_jupyter",
        "%%mlstep a --output o\n(outputs.o / 'v').write_text('1')",
        "%%mlstep b --input i=a.o --output o\n"
        "(outputs.o / 'v').write_text(str(int((inputs.i / 'v').read_text()) + 1))",
    ])
    repo = Path(__file__).resolve().parents[2]
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(workspace_dir), env={
        **os.environ, "PYTHONPATH": str(repo), "JPY_SESSION_NAME": notebook.name})
    kernel = Kernel(manager)
    try:
        assert kernel.run("%load_ext mlpipe_jupyter")["status"] == "ok"
        ran = kernel.run("%mlpipe run --wait --compute docker", timeout=300)
        assert ran["status"] == "ok", ran["errors"]
        assert "succeeded in" in ran["text"], ran["text"]
    finally:
        kernel.stop()
    latest = store.runs.get_run("latest")
    assert (step_output(store, latest.id, "b", "o") / "v").read_text() == "2"
    logs = [store.runs.log_path(latest.id, name).read_text() for name in ("a", "b")]
    assert "its 1st step" in logs[0] and "its 2nd step" in logs[1]
    assert logs[0].split("lane container ")[1][:12] == logs[1].split("lane container ")[1][:12]
    assert not docker_engine.containers.list(
        all=True, filters={"label": f"{LABEL_RUN}={latest.id}"})


INSTALL_PROBE = """
import json, pathlib, sysconfig
site = pathlib.Path(sysconfig.get_paths()['purelib'])
fake = site / 'mlpipe_lane_probe-1.0.dist-info'
seen = fake.exists()
fake.mkdir()  # as root, the image is writable: what a pip install leaves
(outputs.o / 'seen.json').write_text(json.dumps(seen))
"""


@pytest.mark.skipif(os.getuid() != 0, reason="only root can write into the image")
def test_a_step_that_installs_into_the_image_ends_its_lane(
        docker_engine: Any, store: Store, workspace_dir: Path) -> None:
    """Root can write the image's site-packages; the lane's step template then refuses the
    next fork (the installed packages changed), so the next step gets a fresh container
    that does not see the install, and the lane is removed."""
    notebook = write_notebook(workspace_dir / "install.ipynb", [
        f"%%mlstep first --output o\n{INSTALL_PROBE}",
        f"%%mlstep second --output o --after first\n{INSTALL_PROBE}",
    ])
    result = run_notebook(notebook, store=store, compute="docker")
    assert result.ok, result.failures
    for name in ("first", "second"):  # neither saw an install before its own
        assert json.loads((step_output(store, result.run_id, name, "o") / "seen.json")
                          .read_text()) is False
    first_log = store.runs.log_path(result.run_id, "first").read_text()
    second_log = store.runs.log_path(result.run_id, "second").read_text()
    assert "lane container" in first_log
    assert first_log.split("lane container ")[1].split(",")[0] not in second_log
    assert not docker_engine.containers.list(
        all=True, filters={"label": f"{LABEL_RUN}={result.run_id}"})


HOST_PROBE = """
import json, os, sys
host = os.getppid()
command = open(f'/proc/{host}/cmdline', 'rb').read().split(b'\\0')
status = open(f'/proc/{host}/status').read()
threads = int(status.split('Threads:')[1].split()[0])
runner_modules = sorted(m for m in sys.modules
                        if m.startswith(('papermill', 'nbclient', 'mlpipe_jupyter.executors')))
(outputs.o / 'seen.json').write_text(json.dumps({
    'pid': os.getpid(), 'host': host, 'host_command': [c.decode() for c in command],
    'host_threads': threads, 'runner_modules': runner_modules,
    'host_has_secret': bool(os.environ.get('TOK')) and os.environ['TOK'].encode() in
                       open(f'/proc/{host}/environ', 'rb').read(),
    'secret': os.environ.get('TOK')}))
"""


def test_a_docker_steps_kernel_is_forked_from_a_host_that_holds_no_step(
        docker_engine: Any, store: Store, workspace_dir: Path) -> None:
    """In each step's container, the runner and the kernel are forks of one kernel host
    (``docker/kernel_host.py``) that imported a kernel's modules once: the kernel holds
    none of the runner's modules, the host runs one thread and never sees the secret."""
    from mlpipe_jupyter.store.secrets import SecretStore

    secret = "s3cr3t-\u00e9t\u00e9-value"
    SecretStore(store.workspace).set_value("tok", secret)
    notebook = write_notebook(workspace_dir / "host.ipynb", [
        f"%%mlstep holder --output o --secret tok\n{HOST_PROBE}",
        *[f"%%mlstep plain{i} --output o --after {'holder' if i == 0 else f'plain{i - 1}'}\n"
          f"{HOST_PROBE}" for i in range(3)],
    ])
    result = run_notebook(notebook, store=store, compute="docker")
    assert result.ok, result.failures
    steps = ["holder", "plain0", "plain1", "plain2"]
    seen = {step: json.loads((step_output(store, result.run_id, step, "o") / "seen.json")
                             .read_text()) for step in steps}
    for step, probe in seen.items():
        assert any(part.endswith("/kernel_host.py") for part in probe["host_command"]), probe
        assert probe["host_threads"] == 1, step
        assert probe["runner_modules"] == [], step
        assert not probe["host_has_secret"], step
        log = store.runs.log_path(result.run_id, step).read_text()
        assert "without the kernel template" not in log and "Debugger warning" not in log
    assert seen["holder"]["secret"] == secret
    assert all(seen[step]["secret"] is None for step in steps[1:])
    assert not docker_engine.containers.list(
        all=True, filters={"label": f"{LABEL_RUN}={result.run_id}"})


DEBUGGER_PROBE = """
import json, sys
info = get_ipython().kernel.kernel_info
(outputs.o / 'debugger.json').write_text(json.dumps({
    'loaded': 'debugpy' in sys.modules,
    'feature': 'debugger' in info.get('supported_features', []) or bool(info.get('debugger'))}))
"""


def test_docker_step_kernels_have_the_debugger_only_when_asked(
        docker_engine: Any, store: Store, workspace_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's kernel host imports ipykernel with debugpy hidden (~0.25 s of CPU less
    per step); MLPIPE_KERNEL_DEBUGGER=1 where the run starts reaches the container and
    keeps the debugger."""
    notebook = write_notebook(workspace_dir / "debugger.ipynb",
                              [f"%%mlstep probe --output o\n{DEBUGGER_PROBE}"])

    def seen(result: Any) -> dict[str, bool]:
        assert result.ok, result.failures
        data: dict[str, bool] = json.loads(
            (step_output(store, result.run_id, "probe", "o") / "debugger.json").read_text())
        return data

    assert seen(run_notebook(notebook, store=store, compute="docker")) == {
        "loaded": False, "feature": False}
    monkeypatch.setenv(kernel_template.DEBUGGER_VARIABLE, "1")
    assert seen(run_notebook(notebook, store=store, compute="docker", regenerate=True)) == {
        "loaded": True, "feature": True}


def test_a_kernel_host_run_outside_a_container_leaves_no_folder() -> None:
    """The host's private socket folder goes when it ends (in a container it would go with
    the container's /tmp; run on a machine it would stay)."""
    import tempfile

    from mlpipe_jupyter.executors.docker import kernel_host

    # a short folder: pytest's tmp_path can be too deep for a Unix socket's path
    with tempfile.TemporaryDirectory(prefix="mlpipe-t-", dir="/tmp") as short:
        env = {**os.environ, "TMPDIR": short,
               "PYTHONPATH": str(Path(kernel_host.__file__).resolve().parents[3])}
        done = subprocess.run(kernel_host.host_command(kernel_host.__file__, ["one-argument"]),
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr  # in_container's answer, from the runner
        assert "no kernel template" not in done.stderr  # the host did start
        assert not list(Path(short).glob("mlpipe-host-*"))


def test_where_the_kernel_host_cannot_start_the_plain_runner_takes_over(tmp_path: Path) -> None:
    """No socket for the host (here: a temporary folder too deep for a Unix socket's path,
    elsewhere an image whose Python is too old): the container's command becomes
    ``python3 -m in_container``, and says why. Run on this Python, without a container."""
    from mlpipe_jupyter.executors.docker import kernel_host

    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    env = {**os.environ, "TMPDIR": str(deep),
           "PYTHONPATH": str(Path(kernel_host.__file__).resolve().parents[3])}
    done = subprocess.run(kernel_host.host_command(kernel_host.__file__, ["only-one-argument"]),
                          capture_output=True, text=True, env=env, timeout=120)
    assert "mlpipe: no kernel template in this container (OSError" in done.stderr
    assert not list(deep.iterdir())  # its socket folder went with it
    assert "the kernel starts the usual way" in done.stderr
    assert "Usage: ``python3 -m mlpipe_jupyter.executors.docker.in_container" in done.stderr
    assert done.returncode == 2  # in_container's own answer to a wrong command line
