"""The dask compute target with an object-storage datastore: a real S3 server (moto) and
a real 2-worker Dask cluster on loopback, sharing no folder with the runner's outputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.errors import ExecutorError
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.compute import ComputeTargets
from mlpipe_jupyter.store.datastores import Datastores, check_url
from tests.conftest import environment, free_port, run_cli, step_output, write_notebook

pytest.importorskip("distributed")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from tests.executors.dask_cluster import SubprocessCluster  # noqa: E402

SECRET = "mlpipe-test-secret-key-9f8e7d"
BUCKET = "mlpipe-test"

PIPELINE = [
    "%%mlstep make --output o --param n=3\n(outputs.o / 'n').write_text(str(n))\n"
    "(outputs.o / 'sub').mkdir()\n(outputs.o / 'sub' / 'x.txt').write_text('deep')",
    "%%mlstep square --input i=make.o --output o --output empty\n"
    "x = int((inputs.i / 'n').read_text())\n"
    "assert (inputs.i / 'sub' / 'x.txt').read_text() == 'deep'\n"
    "(outputs.o / 'v').write_text(str(x * x))\nprint('squared', x)\n"
    "import mlpipe_jupyter\nmlpipe_jupyter.log('x', x)",
]


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SubprocessCluster]]:
    """A moto S3 server and a 2-worker dask cluster that reach it through the standard
    AWS environment variables (the workers inherit them)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    cluster = None
    try:
        with environment(env):
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
            s3fs.S3FileSystem().mkdir(BUCKET)
            cluster = SubprocessCluster(tmp_path_factory.mktemp("dask-s3")).start()
            yield f"http://127.0.0.1:{port}", cluster
    finally:
        if cluster is not None:
            cluster.stop()
        server.stop()


def _target(store: Store, cluster: SubprocessCluster, prefix: str) -> None:
    """Compute target ``cl``: the cluster, with the datastore ``objs`` at s3://BUCKET/prefix."""
    Datastores(store.workspace).add("objs", f"s3://{BUCKET}/{prefix}")
    ComputeTargets(store.workspace).add("cl", "dask", cluster.address, "objs")


def test_datastore_urls_carry_no_credentials() -> None:
    assert check_url("s3://b/p/") == "s3://b/p"
    for bad in ("s3://", "http://x/y", "s3://key:secret@b/p", "b/p", "s3://b/p?key=1"):
        with pytest.raises(ExecutorError):
            check_url(bad)


def test_compute_target_may_name_a_datastore(store: Store) -> None:
    with pytest.raises(ExecutorError, match="not supported"):
        ComputeTargets(store.workspace).add("c", "dask", "tcp://h:1", "nope")
    Datastores(store.workspace).add("objs", "s3://bucket/prefix")
    target = ComputeTargets(store.workspace).add("c", "dask", "tcp://h:1", "objs")
    assert target.datastore == "objs"
    assert Datastores(store.workspace).get("objs").url == "s3://bucket/prefix"


def test_datastore_cli(workspace_dir: Path) -> None:
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    added = run_cli("datastore", "add", "objs", "s3://bucket/prefix/", env=env)
    assert added.returncode == 0, added.stderr
    listed = run_cli("datastore", "list", env=env)
    assert "objs" in listed.stdout and "s3://bucket/prefix" in listed.stdout
    assert "s3://bucket/prefix" in run_cli("datastore", "show", "objs", env=env).stdout
    refused = run_cli("datastore", "add", "leak", "s3://AKIA:secret@bucket/p", env=env)
    assert refused.returncode != 0 and "no credentials" in refused.stderr
    target = run_cli("compute", "add", "cl", "--dask", "tcp://127.0.0.1:9", "--datastore",
                     "objs", env=env)
    assert target.returncode == 0, target.stderr
    assert run_cli("datastore", "remove", "objs", env=env).returncode == 0
    assert "objs" not in run_cli("datastore", "list", env=env).stdout


@pytest.mark.slow
@pytest.mark.dask
def test_steps_on_dask_with_an_s3_datastore(s3_cluster: tuple[str, SubprocessCluster],
                                            store: Store, workspace_dir: Path) -> None:
    import s3fs

    _, cluster = s3_cluster
    _target(store, cluster, "ws")
    notebook = write_notebook(workspace_dir / "p.ipynb", PIPELINE)
    result = run_notebook(notebook, {"n": "5"}, compute="cl", store=store)
    assert result.ok, result.failures

    square = store.runs.step_run(result.run_id, "square")
    local = store.results.path(square.result_id or "", "o")
    assert (local / "v").read_text() == "25"
    assert store.results.path(square.result_id or "", "empty").is_dir()
    assert [m["value"] for m in store.runs.metrics(result.run_id, "square")] == [5]
    log = store.runs.log_path(result.run_id, "square").read_text()
    assert "squared 5" in log and "on dask worker" in log
    assert store.runs.output_notebook(result.run_id, "square").is_file()

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    make = store.runs.step_run(result.run_id, "make")
    for step_run, files in ((make, {"o/n": "5", "o/sub/x.txt": "deep"}), (square, {"o/v": "25"})):
        prefix = f"{BUCKET}/ws/results/{step_run.result_id}"
        assert fs.exists(f"{prefix}/_COMMITTED")
        for name, text in files.items():
            assert fs.cat_file(f"{prefix}/{name}").decode() == text
    assert not fs.exists(f"{BUCKET}/ws/staging") or not fs.find(f"{BUCKET}/ws/staging")

    # the secret reaches neither the run records, the step logs, the workspace's files
    # nor the scheduler's and workers' logs
    for path in [*store.workspace.root.rglob("*"), *cluster.folder.rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

    # a re-run reuses everything
    again = run_notebook(notebook, {"n": "5"}, compute="cl", store=store)
    assert set(again.step_status.values()) == {StepStatus.REUSED}


@pytest.mark.slow
@pytest.mark.dask
def test_dataset_inputs_are_uploaded_and_results_reused_across_workspaces(
        s3_cluster: tuple[str, SubprocessCluster], store: Store, workspace_dir: Path,
        tmp_path: Path) -> None:
    """A dataset input goes up once under data/<hash>/; a second workspace (another machine)
    with the same datastore reuses the committed result (downloaded, never run again)."""
    import s3fs

    from mlpipe_jupyter.store.workspace import Workspace

    _, cluster = s3_cluster
    cells = ["%%mlstep total --input d=dataset:nums --output o\n"
             "s = sum(int(x) for x in (inputs.d / 'nums.txt').read_text().split())\n"
             "(outputs.o / 'sum').write_text(str(s))"]
    data = tmp_path / "nums"
    data.mkdir()
    (data / "nums.txt").write_text("1 2 3 4\n")

    def setup(target: Store) -> None:
        Datastores(target.workspace).add("objs", f"s3://{BUCKET}/shared-ws")
        ComputeTargets(target.workspace).add("cl", "dask", cluster.address, "objs")
        target.datasets.register("nums", data)

    setup(store)
    first = run_notebook(write_notebook(workspace_dir / "d.ipynb", cells), compute="cl",
                         store=store)
    assert first.ok, first.failures
    result_id = store.runs.step_run(first.run_id, "total").result_id
    assert (store.results.path(result_id or "", "o") / "sum").read_text() == "10"
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    uploaded = [k for k in fs.find(f"{BUCKET}/shared-ws/data") if k.endswith("nums.txt")]
    assert len(uploaded) == 1 and fs.cat_file(uploaded[0]) == b"1 2 3 4\n"

    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    other = Store(Workspace(other_dir / ".mlpipe"))
    other.workspace.ensure_created()
    try:
        setup(other)
        second = run_notebook(write_notebook(other_dir / "d.ipynb", cells), compute="cl",
                              store=other)
        assert second.ok, second.failures
        assert other.runs.step_run(second.run_id, "total").result_id == result_id
        assert (other.results.path(result_id or "", "o") / "sum").read_text() == "10"
        # planned as reused: the step never ran here
        assert second.step_status == {"total": StepStatus.REUSED}
        assert "datastore" in (other.runs.step_run(second.run_id, "total").decision or "")
    finally:
        other.close()


@pytest.mark.slow
@pytest.mark.dask
def test_workers_download_an_input_once_and_keep_it_in_their_cache(
        s3_cluster: tuple[str, SubprocessCluster], store: Store, workspace_dir: Path,
        tmp_path: Path) -> None:
    """Two steps read the same dataset one after the other: the second one's copy comes
    from the workers' input cache (the cluster's workers share one, as on one host)."""
    _, cluster = s3_cluster
    _target(store, cluster, "cached")
    data = tmp_path / "words"
    data.mkdir()
    (data / "words.txt").write_text("cache me\n")
    store.datasets.register("words", data)
    notebook = write_notebook(workspace_dir / "c.ipynb", [
        "%%mlstep first --input d=dataset:words --output o\n"
        "(outputs.o / 'n').write_text(str(len((inputs.d / 'words.txt').read_text())))",
        "%%mlstep second --input d=dataset:words --input f=first.o --output o\n"
        "(outputs.o / 'same').write_text(str((inputs.f / 'n').read_text() == "
        "str(len((inputs.d / 'words.txt').read_text()))))",
    ])
    result = run_notebook(notebook, compute="cl", store=store)
    assert result.ok, result.failures
    first = store.runs.log_path(result.run_id, "first").read_text()
    second = store.runs.log_path(result.run_id, "second").read_text()
    assert "--- mlpipe: input d: 9 B downloaded into the worker's input cache ---" in first
    assert "--- mlpipe: input d: 9 B from the worker's input cache ---" in second
    assert "--- mlpipe: input f: 1 B downloaded into the worker's input cache ---" in second
    assert (step_output(store, result.run_id, "second", "o") / "same").read_text() == "True"


@pytest.mark.slow
@pytest.mark.dask
def test_a_failing_step_commits_nothing_to_the_datastore(
        s3_cluster: tuple[str, SubprocessCluster], store: Store, workspace_dir: Path) -> None:
    import s3fs

    _, cluster = s3_cluster
    _target(store, cluster, "failing")
    notebook = write_notebook(workspace_dir / "f.ipynb", [
        "%%mlstep bad --output o\n(outputs.o / 'half').write_text('x')\nprint('about to fail')\n"
        "raise ValueError('boom')",
    ])
    result = run_notebook(notebook, compute="cl", store=store)
    assert not result.ok
    assert "ValueError: boom" in result.failures[0]
    assert "about to fail" in store.runs.log_path(result.run_id, "bad").read_text()
    assert store.runs.output_notebook(result.run_id, "bad").is_file()
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert not fs.find(f"{BUCKET}/failing/results")


@pytest.mark.slow
@pytest.mark.dask
@pytest.mark.docker
def test_env_steps_run_in_their_container_with_an_s3_datastore(
        s3_cluster: tuple[str, SubprocessCluster], store: Store, workspace_dir: Path,
        docker_engine: Any) -> None:
    """No folder shared and a container: the worker downloads the inputs, mounts its local
    copies into the step's container (read-only) and uploads what the container wrote."""
    import s3fs

    from mlpipe_jupyter.store.environments import EnvironmentSpec

    _, cluster = s3_cluster
    store.environments.create("tiny", EnvironmentSpec(pip=("six==1.16.0",)))
    _target(store, cluster, "boxed")
    notebook = write_notebook(workspace_dir / "boxed.ipynb", [
        PIPELINE[0],
        "%%mlstep boxed --input i=make.o --output o --env tiny\nimport six, sys\n"
        "(outputs.o / 'v').write_text(f\"{six.__version__} {(inputs.i / 'n').read_text()} "
        "{sys.executable}\")\ntry:\n    (inputs.i / 'n').write_text('changed')\n"
        "except OSError as exc:\n    print('inputs are read-only:', type(exc).__name__)",
    ])
    result = run_notebook(notebook, {"n": "7"}, compute="cl", store=store)
    assert result.ok, result.failures
    boxed = store.runs.step_run(result.run_id, "boxed")
    assert (store.results.path(boxed.result_id or "", "o") / "v").read_text() == \
        "1.16.0 7 /opt/venv/bin/python3"
    log = store.runs.log_path(result.run_id, "boxed").read_text()
    assert "in a container on dask worker" in log and "inputs are read-only" in log
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    assert fs.cat_file(f"{BUCKET}/boxed/results/{boxed.result_id}/o/v").decode().startswith("1.16.0")


LIVE_STEP = [
    "%%mlstep slow --output o\nimport time\nimport mlpipe_jupyter\n"
    "print('first line', flush=True)\nmlpipe_jupyter.log('progress', 1)\ntime.sleep(6)\n"
    "print('last line')\n(outputs.o / 'done').write_text('yes')",
]


@pytest.mark.slow
@pytest.mark.dask
def test_the_log_and_metrics_stream_to_the_runner_while_the_step_runs(
        s3_cluster: tuple[str, SubprocessCluster], store: Store, workspace_dir: Path) -> None:
    import threading
    import time

    _, cluster = s3_cluster
    _target(store, cluster, "live")
    notebook = write_notebook(workspace_dir / "live.ipynb", LIVE_STEP)
    box: list = []

    def run() -> None:
        try:
            box.append(run_notebook(notebook, compute="cl", store=store))
        except BaseException as exc:  # surfaced below
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    seen = None
    deadline = time.monotonic() + 90
    while seen is None and time.monotonic() < deadline and thread.is_alive():
        runs = store.runs.list_runs()
        if runs:
            log_path = store.runs.log_path(runs[0].id, "slow")
            metrics = store.workspace.step_dir(runs[0].id, "slow") / "metrics.jsonl"
            text = log_path.read_text() if log_path.exists() else ""
            if "first line" in text and metrics.exists() and "progress" in metrics.read_text():
                seen = (runs[0].id, text, metrics.read_text(),
                        store.runs.step_run(runs[0].id, "slow").status)
        time.sleep(0.1)
    thread.join(180)
    assert not thread.is_alive(), "the run hung"
    [result] = box
    assert not isinstance(result, BaseException), result
    assert result.ok, result.failures
    assert seen is not None, "the log and metrics reached the runner only when the step ended"
    run_id, live_log, live_metrics, status = seen
    assert status is StepStatus.RUNNING and "last line" not in live_log
    assert live_log.count("on dask worker") == 1
    assert [json.loads(line)["name"] for line in live_metrics.splitlines()] == ["progress"]

    log = store.runs.log_path(run_id, "slow").read_text()
    for line in ("on dask worker", "first line", "last line"):
        assert log.count(line) == 1, log
    assert log.index("first line") < log.index("last line")
    assert [m["value"] for m in store.runs.metrics(run_id, "slow")] == [1]
    step_dir = store.workspace.step_dir(run_id, "slow")
    assert (step_dir / "metrics.jsonl").read_text() == live_metrics
    assert (store.results.path(store.runs.step_run(run_id, "slow").result_id or "", "o")
            / "done").read_text() == "yes"


def test_streamed_text_is_written_once_in_order_and_the_result_fills_in(tmp_path: Path) -> None:
    """The runner's side of the live log, fed events as the scheduler delivers them:
    duplicates, overlaps, gaps, a re-run after a lost worker, late events, and the returned
    text (the truth) at the end. Off a worker, the step runs without a stream."""
    from mlpipe_jupyter.executors.base import StepTask
    from mlpipe_jupyter.executors.dask.streams import LiveLogs, start_tailer

    assert start_tailer({"run_id": "r", "step": "s", "attempt": 1},
                         {"log": tmp_path / "nothing.log"}) is None

    step_dir = tmp_path / "step"
    step_dir.mkdir()
    log_path = step_dir / "log.txt"
    log_path.write_text("attempt 1 said this\n--- mlpipe: attempt 2 ---\n")
    task = StepTask(run_id="r", step="s", attempt=2, step_notebook=step_dir / "step.ipynb",
                    output_notebook=step_dir / "output.ipynb", log_path=log_path,
                    cwd=tmp_path)
    live = LiveLogs()
    live._subscribed = True  # as if subscribed: no scheduler here
    live.follow(None, task)

    def send(key: str, file: str, offset: int, text: str, attempt: int = 2) -> None:
        live.on_event((0.0, {"run_id": "r", "step": "s", "attempt": attempt, "key": key,
                             "file": file, "offset": offset, "text": text}))

    lost_log, lost_metrics = "head lost\nhalf", '{"name": "m", "value": 0}\n'
    send("lost", "log", 0, lost_log)
    send("lost", "metrics", 0, lost_metrics)
    full_log, full_metrics = "head é\nmiddle\ntail\n", '{"name": "m", "value": 1}\n{"x": 2}\n'
    send("new", "log", 0, "head é\n")
    send("lost", "log", len(lost_log.encode()), " late\n")  # the old execution: ignored
    send("new", "log", 0, "head é\n")  # duplicate
    send("new", "log", len(b"head "), "é\nmid")  # overlap: only "mid" is new
    send("new", "log", 100, "a gap\n")  # after a gap: skipped
    send("new", "metrics", 0, full_metrics[:10])
    send("new", "log", 0, "x", attempt=1)  # an earlier attempt: not ours any more
    live.on_event((0.0, {"run_id": "other", "step": "s", "attempt": 2, "key": "new",
                         "file": "log", "offset": 0, "text": "another run's\n"}))  # not ours
    prior = "attempt 1 said this\n--- mlpipe: attempt 2 ---\n"
    assert log_path.read_text() == prior + lost_log + "head é\nmid"
    assert (step_dir / "metrics.jsonl").read_text() == full_metrics[:10]

    live.write_rest(task, {"stream_key": "new", "log_text": full_log,
                                "metrics_text": full_metrics})
    send("new", "log", len(full_log.encode()), "after the end\n")  # late: ignored
    assert log_path.read_text() == prior + lost_log + full_log
    assert (step_dir / "metrics.jsonl").read_text() == full_metrics


@pytest.mark.slow
@pytest.mark.dask
def test_variables_flow_through_an_s3_datastore(s3_cluster: tuple[str, SubprocessCluster],
                                                store: Store, workspace_dir: Path) -> None:
    """The Kale zoo hands DataFrames and a notebook class from worker to worker through the
    datastore: the same results as locally, each variable committed once."""
    import s3fs

    from tests.kale.test_kale_variables import comparable, run_metrics
    from tests.kale.zoo import zoo_notebook

    _, cluster = s3_cluster
    _target(store, cluster, "zoo")
    notebook = zoo_notebook(workspace_dir / "zoo.ipynb")
    local = run_notebook(notebook, store=store, max_parallel=2)
    remote = run_notebook(notebook, compute="cl", store=store, regenerate=True, max_parallel=2)
    assert remote.ok, remote.failures
    assert comparable(run_metrics(store, remote.run_id)) == \
        comparable(run_metrics(store, local.run_id))
    split = store.runs.step_run(remote.run_id, "split")
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    saved = fs.ls(f"{BUCKET}/zoo/results/{split.result_id}/mlpipe_variables")
    assert sorted(path.rsplit("/", 1)[1] for path in saved) == [
        "manifest.json", "test.pandas.pkl", "train.pandas.pkl"]
