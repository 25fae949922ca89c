"""The ``mlpipe`` command as users run it: real subprocesses, signals, concurrent runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.store import Store
from tests.conftest import EXAMPLE, IRIS, run_cli, write_notebook


def test_definition_errors_exit_2_and_write_nothing(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "bad.ipynb", [
        "%%mlstep a --input x=dataset:missing --output o --param frac",
        "%%mlstep b --input x=a.nope --output o",
    ])
    done = run_cli("run", str(notebook), cwd=workspace_dir)
    assert done.returncode == 2
    assert "3 pipeline definition errors; nothing was run" in done.stderr
    assert "cell 1, step 'a', --param frac: 'frac' must be NAME=VALUE" in done.stderr
    assert "dataset 'missing' is not registered" in done.stderr
    assert "cell 2, step 'b', --input x=a.nope: step 'a' has no output 'nope'" in done.stderr
    assert not (workspace_dir / ".mlpipe").exists()


def test_bad_parameter_and_missing_notebook(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "p.ipynb", ["%%mlstep a --output o --param n=1\npass"])
    done = run_cli("run", str(notebook), "-p", "n=lots", cwd=workspace_dir)
    assert done.returncode == 2 and "parameter 'n' expects int" in done.stderr
    done = run_cli("run", str(notebook), "-p", "m=1", cwd=workspace_dir)
    assert "unknown parameter(s) m" in done.stderr
    done = run_cli("run", "nowhere.ipynb", cwd=workspace_dir)
    assert done.returncode == 2 and "notebook nowhere.ipynb does not exist" in done.stderr
    (workspace_dir / "junk.ipynb").write_text("{not json")
    done = run_cli("run", "junk.ipynb", cwd=workspace_dir)
    assert "junk.ipynb is not a Jupyter notebook" in done.stderr
    assert not (workspace_dir / ".mlpipe").exists()


def test_commands_help_and_mistakes_name_what_exists(workspace_dir: Path) -> None:
    """A command line builds only its command's parser; help, a mistyped command and an
    unknown compute target still say what there is."""
    top = run_cli("--help", cwd=workspace_dir)
    assert top.returncode == 0 and "COMMAND" in top.stdout
    run_help = run_cli("run", "--help", cwd=workspace_dir)
    assert run_help.returncode == 0 and "--max-parallel N" in run_help.stdout
    nested = run_cli("dataset", "--help", cwd=workspace_dir)
    assert nested.returncode == 0 and "register" in nested.stdout
    typo = run_cli("rnu", "x.ipynb", cwd=workspace_dir)
    assert typo.returncode == 2
    assert "invalid choice: 'rnu'" in typo.stderr
    for command in ("'run'", "'schedule'", "'secret'", "'datastore'"):
        assert command in typo.stderr
    missing = run_cli("logs", "latest", cwd=workspace_dir)
    assert missing.returncode == 2 and "usage: mlpipe logs" in missing.stderr
    notebook = write_notebook(workspace_dir / "c.ipynb", ["%%mlstep a --output o\npass"])
    wrong = run_cli("run", str(notebook), "--compute", "nowhere", cwd=workspace_dir)
    assert wrong.returncode == 2
    assert "unknown compute target 'nowhere' (known: dask, docker, local" in wrong.stderr
    assert not (workspace_dir / ".mlpipe").exists()


@pytest.mark.slow
def test_example_through_the_cli(workspace_dir: Path) -> None:
    assert run_cli("dataset", "register", "iris", str(IRIS), "--tabular").returncode == 0
    listing = run_cli("dataset", "list").stdout
    assert "iris" in listing and "tabular" in listing
    done = run_cli("run", str(EXAMPLE), "-p", "frac=0.5")
    assert done.returncode == 0, done.stderr
    for line in ("▶ prepare", "✓ prepare", "✓ train", "✓ evaluate", "succeeded in"):
        assert line in done.stdout
    again = run_cli("run", str(EXAMPLE), "-p", "frac=0.5")
    assert again.stdout.count("reused") == 3
    runs = run_cli("runs").stdout
    assert "3 reused" in runs and "3 succeeded" in runs
    show = run_cli("show", "latest").stdout
    assert "accuracy=" in show and "frac=0.5" in show
    assert "training rows" in run_cli("logs", "latest", "prepare").stdout
    why = run_cli("why", "latest", "train").stdout
    assert "reused the result of run" in why


def _wait_for(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def _store_when_created(workspace_dir: Path) -> Store:
    _wait_for(lambda: (workspace_dir / ".mlpipe" / "mlpipe.db").exists())
    return Store.open()


def _running_step(store: Store, run_id_holder: list[str]) -> bool:
    runs = store.runs.list_runs()
    if not runs:
        return False
    run_id_holder[:] = [runs[0].id]
    return any(s.status is StepStatus.RUNNING for s in store.runs.step_runs(runs[0].id))


SLOW_CHAIN = [
    "%%mlsetup\nimport time",
    "%%mlstep first --output o\n(outputs.o / 'a').write_text('a')",
    "%%mlstep slow --input i=first.o --output o\n(outputs.o / 'partial').write_text('half')\ntime.sleep(30)",
    "%%mlstep last --input i=slow.o --output o\npass",
]


@pytest.mark.slow
def test_kill_9_leaves_a_readable_store_and_no_reusable_partial_result(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "chain.ipynb", SLOW_CHAIN)
    process = subprocess.Popen([sys.executable, "-m", "mlpipe_jupyter", "run", str(notebook)],
                               cwd=workspace_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = _store_when_created(workspace_dir)
    holder: list[str] = []
    try:
        _wait_for(lambda: _running_step(store, holder)
                  and store.runs.step_run(holder[0], "slow").status is StepStatus.RUNNING)
    finally:
        process.kill()
        process.wait()
    killed = holder[0]
    # the store is readable, and the dead run is reported as such
    assert run_cli("runs").returncode == 0
    run = store.runs.get_run(killed)
    assert run.status is RunStatus.CANCELED and "stopped before the run ended" in (run.error or "")
    assert store.runs.step_run(killed, "slow").status is StepStatus.CANCELED
    # the next run reuses the finished step, re-executes the unfinished one, never the partial
    fixed = [c.replace("time.sleep(30)", "pass") for c in SLOW_CHAIN]
    fixed[2] = fixed[2].replace("'half'", "'whole'")
    write_notebook(notebook, fixed)
    done = run_cli("run", str(notebook))
    assert done.returncode == 0, done.stderr
    latest = store.runs.get_run("latest")
    statuses = {s.step: s.status for s in store.runs.step_runs(latest.id)}
    assert statuses == {"first": StepStatus.REUSED, "slow": StepStatus.SUCCEEDED,
                        "last": StepStatus.SUCCEEDED}
    slow = store.runs.step_run(latest.id, "slow")
    assert (store.results.path(slow.result_id or "", "o") / "partial").read_text() == "whole"
    assert not any(store.workspace.staging_dir.iterdir()), "leftover staging was cleaned"


@pytest.mark.slow
def test_ctrl_c_cancels_the_run(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "chain.ipynb", SLOW_CHAIN)
    process = subprocess.Popen([sys.executable, "-m", "mlpipe_jupyter", "run", str(notebook)],
                               cwd=workspace_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    store = _store_when_created(workspace_dir)
    holder: list[str] = []
    _wait_for(lambda: _running_step(store, holder)
              and store.runs.step_run(holder[0], "slow").status is StepStatus.RUNNING)
    started = time.time()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert time.time() - started < 20, "cancel must not wait for the 30 s step"
    assert process.returncode == 130, stderr
    run = store.runs.get_run(holder[0])
    assert run.status is RunStatus.CANCELED
    statuses = {s.step: s.status for s in store.runs.step_runs(run.id)}
    assert statuses == {"first": StepStatus.SUCCEEDED, "slow": StepStatus.CANCELED,
                        "last": StepStatus.CANCELED}
    assert "run " + run.id + " canceled" in stdout


@pytest.mark.slow
def test_two_runs_of_the_same_notebook_at_once(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "twice.ipynb", [
        "%%mlsetup\nimport time",
        "%%mlstep a --output o\ntime.sleep(1)\n(outputs.o / 'a').write_text('a')",
        "%%mlstep b --input i=a.o --output o\n(outputs.o / 'b').write_text((inputs.i / 'a').read_text() + 'b')",
    ])
    env = {**os.environ, "MLPIPE_HOME": os.environ["MLPIPE_HOME"]}
    processes = [
        subprocess.Popen([sys.executable, "-m", "mlpipe_jupyter", "run", str(notebook), "-q"],
                         cwd=workspace_dir, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, stderr
    store = Store.open()
    runs = store.runs.list_runs()
    assert len(runs) == 2 and all(r.status is RunStatus.SUCCEEDED for r in runs)
    for run in runs:
        b = store.runs.step_run(run.id, "b")
        assert (store.results.path(b.result_id or "", "o") / "b").read_text() == "ab"


def test_environments_are_versioned(workspace_dir: Path) -> None:
    done = run_cli("env", "create", "sk", "--pip", "scikit-learn==1.6", "pandas")
    assert done.returncode == 0 and "created environment sk@v1" in done.stdout
    again = run_cli("env", "create", "sk", "--pip", "scikit-learn==1.6", "pandas")
    assert "unchanged, already environment sk@v1" in again.stdout
    run_cli("env", "create", "sk", "--pip", "scikit-learn==1.7", "pandas", "--apt", "libgomp1")
    listing = run_cli("env", "list").stdout
    assert "sk" in listing and "v2" in listing
    shown = run_cli("env", "show", "sk").stdout
    assert "sk@v1" in shown and "sk@v2" in shown
    assert "pip install" in shown and "scikit-learn==1.7" in shown and "apt-get install" in shown
    bad = run_cli("env", "create", "Bad Name")
    assert bad.returncode == 2 and "environment name 'Bad Name' is not valid" in bad.stderr


def test_no_docker_engine_exits_1_with_its_message(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "d.ipynb", ["%%mlstep a --output o\npass"])
    done = run_cli("run", str(notebook), "--compute", "docker", cwd=workspace_dir,
                   env={"DOCKER_HOST": f"unix://{workspace_dir}/no-such-docker.sock"})
    assert done.returncode == 1, done.stderr
    assert "no Docker engine answers" in done.stderr and "Traceback" not in done.stderr


def test_output_into_a_closed_pipe_is_not_an_error(workspace_dir: Path) -> None:
    """`mlpipe runs | head -1`: the reader goes away; no traceback, no error status."""
    for _ in range(3):
        assert run_cli("dataset", "register", f"d{_}", str(IRIS)).returncode == 0
    listing = subprocess.Popen([sys.executable, "-m", "mlpipe_jupyter", "dataset", "list"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # as `head` does once it has its lines
    assert listing.wait(timeout=60) == 0
    assert "Traceback" not in listing.stderr.read().decode()
