"""Secrets by reference on every compute target (docs/secrets.md), with real kernels, a real
Docker engine and a real Dask cluster: a step reads its secret from its environment, and the
value is found nowhere: not in the workspace, the logs, the output notebooks, the run store,
``docker inspect`` of the step's container, or the Dask scheduler's and workers' logs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.errors import DefinitionError
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.secrets import SecretStore
from tests.conftest import environment, step_output, write_notebook

VALUE = "s3cr3t-Zq8-value-4d1f"  # what must never be written anywhere
ROTATED = "r0tated-Kx2-value-9b7e"

# prints the value (masked), uses it (its length is an output), and ends with it as the
# cell's result (masked in the output notebook)
STEP = ("%%mlstep use --secret db.password --output o{extra}\n"
        "import os, time\n"
        "value = os.environ['DB_PASSWORD']\n"
        "print('the value is', value)\n"
        "os.system('echo from a subprocess: $DB_PASSWORD')\n"
        "time.sleep({sleep})\n"
        "(outputs.o / 'length').write_text(str(len(value)))\n"
        "value")

slow = pytest.mark.slow


@pytest.fixture(autouse=True)
def own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret registry of these tests, outside the project folder; no OS keyring."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("MLPIPE_KEYRING", "0")


def assert_nowhere(*folders: Path, values: tuple[str, ...] = (VALUE, ROTATED)) -> None:
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for value in values:
                    assert value.encode() not in data, path


def assert_masked(store: Store, run_id: str, step: str = "use") -> None:
    log = store.runs.log_path(run_id, step).read_text()
    assert "the value is ***" in log, log
    output = json.loads(store.runs.output_notebook(run_id, step).read_text())
    texts = json.dumps(output["cells"])
    assert "the value is ***" in texts and "'***'" in texts


@slow
def test_a_local_step_reads_its_secret_and_it_is_written_nowhere(store: Store,
                                                                 workspace_dir: Path) -> None:
    SecretStore(store.workspace).set_value("db.password", VALUE)
    notebook = write_notebook(workspace_dir / "s.ipynb", [STEP.format(extra="", sleep=0)])
    result = run_notebook(notebook, {}, store=store)
    assert result.ok, result.failures
    assert (step_output(store, result.run_id, "use", "o") / "length").read_text() == str(len(VALUE))
    assert_masked(store, result.run_id)
    run = store.runs.step_run(result.run_id, "use")
    assert "db.password" in json.dumps(run.components)  # the name, never the value
    assert_nowhere(workspace_dir)

    # rotating the value re-runs nothing: the fingerprint has the name, not the value
    SecretStore(store.workspace).set_value("db.password", ROTATED)
    again = run_notebook(notebook, {}, store=store)
    assert again.step_status == {"use": StepStatus.REUSED}
    # ... and the environment variable MLPIPE_SECRET_<NAME> wins over the registry
    with environment({"MLPIPE_SECRET_DB_PASSWORD": VALUE}):
        assert SecretStore(store.workspace).resolve("db.password") == VALUE
    assert_nowhere(workspace_dir)


@slow
def test_a_failing_step_masks_the_secret_in_its_error(store: Store, workspace_dir: Path) -> None:
    SecretStore(store.workspace).set_value("tok", VALUE)
    notebook = write_notebook(workspace_dir / "f.ipynb", [
        "%%mlstep boom --secret tok\nimport os\nraise ValueError('bad token ' + os.environ['TOK'])"])
    result = run_notebook(notebook, {}, store=store)
    assert not result.ok
    assert "bad token ***" in str(result.failures)
    assert "bad token ***" in (store.runs.step_run(result.run_id, "boom").error or "")
    assert_nowhere(workspace_dir)


def test_a_missing_secret_is_a_definition_error_before_anything_runs(
        store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "m.ipynb", [
        "%%mlstep first --secret api-key --secret other.one=OTHER\n1",
        "%%mlstep second --secret api-key --compute docker\n1"])
    with pytest.raises(DefinitionError) as raised:
        run_notebook(notebook, {}, store=store)
    message = str(raised.value)
    assert "step 'first'" in message and "step 'second'" in message
    assert "--secret api-key" in message and "--secret other.one" in message
    assert "MLPIPE_SECRET_API_KEY" in message and "mlpipe secret set api-key" in message
    assert not list(store.workspace.runs_dir.glob("*"))  # no run record, nothing written


# -- docker ------------------------------------------------------------------------------------
@pytest.mark.docker
@slow
def test_a_docker_step_gets_its_secret_without_docker_inspect_showing_it(
        docker_engine: Any, store: Store, workspace_dir: Path) -> None:
    from mlpipe_jupyter.executors.docker.containers import LABEL_STEP

    SecretStore(store.workspace).set_value("db.password", VALUE)
    notebook = write_notebook(workspace_dir / "d.ipynb",
                              [STEP.format(extra=" --compute docker", sleep=4)])
    inspected: list[str] = []
    done = threading.Event()

    def inspect_while_running() -> None:
        while not done.is_set():
            for container in docker_engine.containers.list(filters={"label": f"{LABEL_STEP}=use"}):
                inspected.append(json.dumps(docker_engine.api.inspect_container(container.id)))
                image = docker_engine.api.inspect_image(container.attrs["Image"])
                inspected.append(json.dumps(image))
            time.sleep(0.3)

    watcher = threading.Thread(target=inspect_while_running, daemon=True)
    watcher.start()
    try:
        result = run_notebook(notebook, {}, store=store)
    finally:
        done.set()
        watcher.join()
    assert result.ok, result.failures
    assert inspected, "the step's container was never seen running"
    assert not any(VALUE in text for text in inspected)
    assert (step_output(store, result.run_id, "use", "o") / "length").read_text() == str(len(VALUE))
    assert_masked(store, result.run_id)
    # what the kernel's own process writes (a subprocess) is masked too
    assert "from a subprocess: ***" in store.runs.log_path(result.run_id, "use").read_text()
    assert_nowhere(workspace_dir)


# -- dask --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secret_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two workers: ``has`` holds the secret in its own environment, ``lacks`` does not."""
    pytest.importorskip("distributed")
    from tests.executors.dask_cluster import SubprocessCluster, WorkerSpec

    folder = tmp_path_factory.mktemp("dask-secrets")
    empty = str(folder / "no-config")
    cluster = SubprocessCluster(folder, workers=(
        WorkerSpec("has", resources="GPU=1",
                   env={"MLPIPE_SECRET_DB_PASSWORD": VALUE, "XDG_CONFIG_HOME": empty}),
        WorkerSpec("lacks", env={"XDG_CONFIG_HOME": empty}),
    )).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.dask
@slow
def test_a_dask_worker_resolves_the_secret_from_its_own_sources(
        secret_cluster: Any, store: Store, workspace_dir: Path) -> None:
    # the runner has no such secret (not checked before the run: the workers' sources are
    # theirs); the worker `has` has it in its own environment (--gpus 1 pins the step there)
    notebook = write_notebook(workspace_dir / "k.ipynb", [
        STEP.format(extra=" --gpus 1", sleep=0),
        "%%mlstep absent --secret nobody.has.it\n1"])
    result = run_notebook(notebook, {}, store=store, compute=secret_cluster.compute)
    assert result.step_status["use"] == StepStatus.SUCCEEDED, result.failures
    assert (step_output(store, result.run_id, "use", "o") / "length").read_text() == str(len(VALUE))
    assert_masked(store, result.run_id)
    # a worker that cannot resolve a secret fails the step naming it and the places looked
    assert result.step_status["absent"] == StepStatus.FAILED
    error = store.runs.step_run(result.run_id, "absent").error or ""
    assert "secret 'nobody.has.it' not found" in error
    assert "MLPIPE_SECRET_NOBODY_HAS_IT" in error and "on worker" in error
    # nowhere: the workspace, the logs, the scheduler's and the workers' logs
    assert_nowhere(workspace_dir, secret_cluster.folder)


@slow
def test_a_published_pipeline_triggered_later_resolves_its_secret(store: Store,
                                                                   workspace_dir: Path) -> None:
    from mlpipe_jupyter.model.status import RunStatus
    from mlpipe_jupyter.scheduling.publishing import publish
    from mlpipe_jupyter.scheduling.triggering import trigger_published, wait_for_run

    SecretStore(store.workspace).set_value("db.password", VALUE)
    notebook = write_notebook(workspace_dir / "p.ipynb", [STEP.format(extra="", sleep=0)])
    publish(store, notebook, "nightly")
    run_id = trigger_published(store, "nightly")
    record = wait_for_run(store, run_id, timeout=120)
    assert record.status == RunStatus.SUCCEEDED, record.error
    assert_masked(store, run_id)
    # the snapshot, the run records, the logs: only the name
    assert_nowhere(workspace_dir)


def test_a_task_carries_secret_names_never_values(tmp_path: Path) -> None:
    from mlpipe_jupyter.executors.base import StepTask

    task = StepTask(run_id="r", step="s", attempt=1, step_notebook=tmp_path / "n.ipynb",
                    output_notebook=tmp_path / "o.ipynb", log_path=tmp_path / "log",
                    cwd=tmp_path, secrets=(("db.password", "DB_PASSWORD"),))
    data = task.to_dict()
    assert data["secrets"] == [["db.password", "DB_PASSWORD"]]
    assert StepTask.from_dict(json.loads(json.dumps(data))) == task


def test_masking_catches_a_value_split_across_writes() -> None:
    import io

    from mlpipe_jupyter.executors.masking import Masker, MaskingWriter

    out = io.StringIO()
    writer = MaskingWriter(out, Masker([VALUE]))
    writer.write("start " + VALUE[:5])
    writer.write(VALUE[5:] + " end\nrepr: " + repr(VALUE) + "\nlast " + VALUE)
    writer.flush()
    assert out.getvalue() == "start *** end\nrepr: '***'\nlast ***"


def test_what_runs_inside_a_container_imports_without_the_runners_extras() -> None:
    """in_container falls back to the bare papermill command when this package can't be
    imported in the image; a runner-only dependency (simpleeval) must not cause that."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['simpleeval'] = None\n"
            "from mlpipe_jupyter.executors.base import StepTask\n"
            "from mlpipe_jupyter.executors.kernels import start_kernel\n"
            "from mlpipe_jupyter.executors.step_runner import run_step_notebook\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
