"""The Kale zoo notebook, variables and all, in containers and on Dask workers: the same
results as a local run (real Docker engine, real scheduler and workers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.environments import EnvironmentSpec
from tests.kale.test_kale_variables import assert_zoo_results, comparable, run_metrics
from tests.kale.zoo import zoo_notebook

pytestmark = [pytest.mark.slow]


def frames_environment(store: Store) -> str:
    """An environment with this machine's pandas and numpy: the container's steps write and
    read the same pickles the local ones do."""
    import numpy
    import pandas

    store.environments.create("frames", EnvironmentSpec(
        pip=(f"pandas=={pandas.__version__}", f"numpy=={numpy.__version__}")))
    return "frames"


@pytest.mark.docker
def test_the_zoo_in_containers(docker_engine: Any, store: Store, workspace_dir: Path) -> None:
    notebook = zoo_notebook(workspace_dir / "zoo.ipynb")
    env = frames_environment(store)
    result = run_notebook(notebook, compute="docker", env=env, store=store, max_parallel=2)
    assert result.status is RunStatus.SUCCEEDED, result.failures
    assert_zoo_results(run_metrics(store, result.run_id))
    again = run_notebook(notebook, compute="docker", env=env, store=store)
    assert set(again.step_status.values()) == {StepStatus.REUSED}


@pytest.fixture(scope="module")
def zoo_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("distributed")
    from tests.executors.dask_cluster import SubprocessCluster, WorkerSpec

    cluster = SubprocessCluster(tmp_path_factory.mktemp("zoo-cluster"),
                                (WorkerSpec("z1"), WorkerSpec("z2"))).start()
    yield cluster
    cluster.stop()


@pytest.mark.dask
def test_the_zoo_on_dask_workers_matches_a_local_run(
    zoo_cluster: Any, store: Store, workspace_dir: Path
) -> None:
    notebook = zoo_notebook(workspace_dir / "zoo.ipynb")
    local = run_notebook(notebook, store=store, max_parallel=2)
    remote = run_notebook(notebook, compute=zoo_cluster.compute, store=store, regenerate=True,
                          max_parallel=2)
    assert remote.status is RunStatus.SUCCEEDED, remote.failures
    assert set(remote.step_status.values()) == {StepStatus.SUCCEEDED}
    assert comparable(run_metrics(store, remote.run_id)) == \
        comparable(run_metrics(store, local.run_id))
