"""Requests a compute target cannot apply (resources, an image, other limits) are shown, not
fatal, and leave fingerprints alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.executors.base import StepTask, unapplied_sentences
from mlpipe_jupyter.executors.dask.executor import DaskExecutor
from mlpipe_jupyter.executors.docker.executor import DockerExecutor
from mlpipe_jupyter.executors.local import LocalExecutor
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.model.step import Resources, StepHeader
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import run_cli, write_notebook

REQUESTS = StepHeader(
    "train", resources=Resources(cpus=2, memory_bytes=512 * 2**20, gpus=1),
    image="python:3.12", other_limits=(("ephemeral-storage", "1Gi"),),
)


def test_what_each_target_does_not_apply() -> None:
    local = [str(u) for u in LocalExecutor().unapplied(REQUESTS)]
    assert local == [
        "GPU request (1) not applied: local compute runs steps in this machine's Python "
        "without resource limits",
        "CPU request (2) not applied: local compute runs steps in this machine's Python "
        "without resource limits",
        "memory request (512 MiB) not applied: local compute runs steps in this machine's "
        "Python without resource limits",
        "image python:3.12 not applied: local compute runs steps in this Python environment; "
        "run with --compute docker to use it",
        "limit ephemeral-storage=1Gi not applied: local compute has no such limit",
    ]
    # one sentence per reason
    assert unapplied_sentences(LocalExecutor().unapplied(REQUESTS))[0].startswith(
        "GPU request (1), CPU request (2), memory request (512 MiB) not applied: local")
    # docker applies resources (container limits) and the image; not Kubernetes limits
    assert [u.what for u in DockerExecutor().unapplied(REQUESTS)] == [
        "limit ephemeral-storage=1Gi"]
    # dask places steps by resources; a step's own image is the docker target's
    assert [u.what for u in DaskExecutor(address="tcp://127.0.0.1:1").unapplied(REQUESTS)] == [
        "image python:3.12", "limit ephemeral-storage=1Gi"]
    assert LocalExecutor().unapplied(StepHeader("plain")) == []


def test_task_round_trip_keeps_the_image(tmp_path: Path) -> None:
    task = StepTask(run_id="r", step="s", attempt=1, step_notebook=tmp_path / "a.ipynb",
                    output_notebook=tmp_path / "b.ipynb", log_path=tmp_path / "log",
                    cwd=tmp_path, image="python:3.12", resources=Resources(gpus=1))
    assert StepTask.from_dict(task.to_dict()) == task
    assert StepTask.from_dict({**task.to_dict(), "image": None}).image is None


@pytest.mark.slow
def test_local_run_shows_requests_it_did_not_apply(store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "gpu.ipynb", [
        "%%mlstep train --output o\n(outputs.o / 'f').write_text('x')",
        "%%mlstep plain --output o\npass",
    ])
    first = run_notebook(notebook, store=store)
    assert first.ok, first.failures
    plain = store.runs.step_run(first.run_id, "plain").fingerprint
    # the requests change nothing locally: the step is reused, its fingerprint unchanged
    write_notebook(notebook, [
        "%%mlstep train --output o --gpus 1 --image busybox\n(outputs.o / 'f').write_text('x')",
        "%%mlstep plain --output o\npass",
    ])
    assert run_notebook(notebook, store=store).step_status["train"] is StepStatus.REUSED

    done = run_cli("run", str(notebook), "--regenerate")
    assert done.returncode == 0, done.stderr
    assert ("note: train: GPU request (1) not applied: local compute runs steps in this "
            "machine's Python without resource limits; image busybox not applied: local "
            "compute runs steps in this Python environment; run with --compute docker to use "
            "it") in done.stdout
    assert "note: plain" not in done.stdout
    run_id = store.runs.list_runs()[0].id
    assert store.runs.step_run(run_id, "plain").fingerprint == plain
    note = "not applied on local: GPU request (1), image busybox"
    assert note in run_cli("show", "latest").stdout
    why = run_cli("why", "latest", "train").stdout
    assert f"decision: --regenerate; {note}" in why
    assert note not in run_cli("why", "latest", "plain").stdout
