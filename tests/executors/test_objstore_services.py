"""The dask compute target with the other object stores the datastore URLs name: Azure Blob
Storage (``abfs://``, ``az://``) against Azurite, Microsoft's emulator, and Google Cloud
Storage (``gs://``, ``gcs://``) against gcp-storage-emulator, each a real server started
here with a real 2-worker Dask cluster on loopback. The S3 cases in test_objstore.py cover
the datastore's logic in depth; these prove the same code works through adlfs and gcsfs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.compute import ComputeTargets
from mlpipe_jupyter.store.datastores import Datastores
from mlpipe_jupyter.store.workspace import Workspace
from tests.conftest import environment, free_port, run_cli, step_output, write_notebook

pytest.importorskip("distributed")

from tests.executors.dask_cluster import SubprocessCluster  # noqa: E402
from tests.executors.test_objstore import PIPELINE  # noqa: E402

AZURITE_DIR = Path(os.environ.get("MLPIPE_AZURITE_DIR",
                                  Path.home() / ".cache" / "mlpipe" / "azurite"))
AZURE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key: not a secret, but a test that it leaks nowhere
# stands for a real one.
AZURE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
             "K1SZFPTOtr/KBHBeksoGMGw==")
BUCKET = "mlpipe-test"


@dataclass(frozen=True)
class Service:
    """A running object store: its URL schemes and the standard environment variables that
    point fsspec at it (set in this process, inherited by the cluster's processes)."""

    scheme: str
    alias: str
    env: dict[str, str]
    secret: str | None = None

    def filesystem(self) -> Any:
        """fsspec's filesystem as a user's code would get it: configured from the environment."""
        import fsspec

        return fsspec.filesystem(self.scheme, skip_instance_cache=True)


@contextmanager
def _server(command: list[str], port: int, log: Path) -> Iterator[None]:
    """Run ``command`` until the block ends; wait until it listens on ``port``."""
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited with {server.returncode}:\n"
                                       f"{log.read_text()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} did not listen on {port}") from None
                time.sleep(0.2)
        yield
    finally:
        server.terminate()
        server.wait(30)


@contextmanager
def azurite(folder: Path) -> Iterator[Service]:
    blob = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not blob.exists():
        pytest.skip(f"Azurite is not installed in {AZURITE_DIR}: run scripts/install-test-deps")
    pytest.importorskip("adlfs")
    port = free_port()
    command = [str(blob), "--blobHost", "127.0.0.1", "--blobPort", str(port),
               "--location", str(folder / "data"), "--skipApiVersionCheck", "--silent",
               "--disableTelemetry"]
    with _server(command, port, folder / "azurite.log"):
        yield Service("abfs", "az", {"AZURE_STORAGE_CONNECTION_STRING": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURE_ACCOUNT};")}, secret=AZURE_KEY)


@contextmanager
def gcs_emulator(folder: Path) -> Iterator[Service]:
    pytest.importorskip("gcsfs")
    pytest.importorskip("gcp_storage_emulator")
    port = free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
               "--port", str(port), "--in-memory"]
    with _server(command, port, folder / "gcs.log"):
        # The emulator needs no credentials; gcsfs's bucket-type probe (zonal and
        # hierarchical buckets) would ask Google for real ones, so it is turned off.
        yield Service("gs", "gcs", {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
                                    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})


SERVICES = {"azure": azurite, "gcs": gcs_emulator}


@pytest.fixture(scope="module", params=sorted(SERVICES))
def service_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[tuple[Service, SubprocessCluster]]:
    """One object store with the bucket BUCKET, and a 2-worker dask cluster that reaches it
    through the standard environment variables."""
    folder = tmp_path_factory.mktemp(request.param)
    with SERVICES[request.param](folder) as service, environment(service.env):
        service.filesystem().mkdir(BUCKET)
        cluster = SubprocessCluster(tmp_path_factory.mktemp("dask")).start()
        try:
            yield service, cluster
        finally:
            cluster.stop()


def _target_and_notebook(store: Store, cluster: SubprocessCluster, url: str,
                         folder: Path) -> Path:
    """Compute target ``cl``: the cluster with the datastore ``objs`` at ``url``; and the
    PIPELINE notebook to run on it."""
    Datastores(store.workspace).add("objs", url)
    ComputeTargets(store.workspace).add("cl", "dask", cluster.address, "objs")
    return write_notebook(folder / "p.ipynb", PIPELINE)


@pytest.mark.slow
@pytest.mark.dask
def test_steps_run_and_are_reused_across_workspaces(
        service_cluster: tuple[Service, SubprocessCluster], store: Store,
        workspace_dir: Path) -> None:
    service, cluster = service_cluster
    notebook = _target_and_notebook(store, cluster, f"{service.scheme}://{BUCKET}/ws",
                                    workspace_dir)
    result = run_notebook(notebook, {"n": "6"}, compute="cl", store=store)
    assert result.ok, result.failures

    assert (step_output(store, result.run_id, "square", "o") / "v").read_text() == "36"
    assert [m["value"] for m in store.runs.metrics(result.run_id, "square")] == [6]
    log = store.runs.log_path(result.run_id, "square").read_text()
    assert "squared 6" in log and "on dask worker" in log

    fs = service.filesystem()
    for step, files in (("make", {"o/n": "6", "o/sub/x.txt": "deep"}), ("square", {"o/v": "36"})):
        prefix = f"{BUCKET}/ws/results/{store.runs.step_run(result.run_id, step).result_id}"
        assert fs.exists(f"{prefix}/_COMMITTED")
        for name, text in files.items():
            assert fs.cat_file(f"{prefix}/{name}").decode() == text
    assert not fs.exists(f"{BUCKET}/ws/staging") or not fs.find(f"{BUCKET}/ws/staging")

    if service.secret:  # in no workspace file, and in no scheduler or worker log
        for path in [*store.workspace.root.rglob("*"), *cluster.folder.rglob("*")]:
            if path.is_file():
                assert service.secret.encode() not in path.read_bytes(), path

    # another workspace (another machine), set up through the CLI with the other spelling
    # of the same bucket, reuses both results: downloaded, never run again
    other = workspace_dir.parent / "elsewhere"
    other.mkdir()
    env = {"MLPIPE_HOME": str(other / ".mlpipe")}
    for command in (("datastore", "add", "objs", f"{service.alias}://{BUCKET}/ws"),
                    ("compute", "add", "cl", "--dask", cluster.address, "--datastore", "objs")):
        done = run_cli(*command, cwd=other, env=env)
        assert done.returncode == 0, done.stderr
    copy = write_notebook(other / "p.ipynb", PIPELINE)
    again = run_cli("run", str(copy), "--compute", "cl", "-p", "n=6", cwd=other, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    elsewhere = Store(Workspace(other / ".mlpipe"))
    try:
        [run] = elsewhere.runs.list_runs()
        assert {r.step: r.status for r in elsewhere.runs.step_runs(run.id)} == \
            {"make": StepStatus.REUSED, "square": StepStatus.REUSED}
        assert (step_output(elsewhere, run.id, "square", "o") / "v").read_text() == "36"
    finally:
        elsewhere.close()


@pytest.mark.slow
@pytest.mark.dask
def test_a_missing_bucket_is_reported_before_anything_runs(
        service_cluster: tuple[Service, SubprocessCluster], store: Store,
        workspace_dir: Path) -> None:
    service, cluster = service_cluster
    url = f"{service.scheme}://no-such-bucket/ws"
    notebook = _target_and_notebook(store, cluster, url, workspace_dir)
    done = run_cli("run", str(notebook), "--compute", "cl", cwd=workspace_dir)
    assert done.returncode != 0
    assert f"datastore {url}: the bucket or container 'no-such-bucket' does not exist" \
        in done.stderr, done.stderr
    assert store.runs.list_runs() == []
