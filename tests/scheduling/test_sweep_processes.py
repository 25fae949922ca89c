"""Sweeps of published pipelines, for real: ``mlpipe trigger --sweep`` and a schedule with
a sweep fired by a scheduler that starts real ``mlpipe run --sweep`` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpipe_jupyter.scheduling.publishing import publish
from mlpipe_jupyter.scheduling.scheduler import Scheduler
from mlpipe_jupyter.scheduling.schedules import create_schedule, firings, get_schedule
from mlpipe_jupyter.scheduling.triggering import wait_for_sweep
from mlpipe_jupyter.store import Store
from tests.conftest import run_cli, write_notebook
from tests.scheduling.conftest import T0, FakeClock
from tests.sweeps.helpers import executed_steps

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

CELLS = [
    "%%mlstep prep --output o --param base=10\n(outputs.o / 'b.txt').write_text(str(base))",
    "%%mlstep score --input i=prep.o --param k=1\n"
    "if k < 0:\n    raise ValueError(f'k={k} is negative')\n"
    "context.log('score', k * int((inputs.i / 'b.txt').read_text()))",
]


def _published(store: Store, workspace_dir: Path) -> None:
    publish(store, write_notebook(workspace_dir / "grid.ipynb", CELLS), "grid")




@pytest.fixture(autouse=True)
def this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triggered processes import this checkout (they inherit PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))


def test_trigger_a_sweep_from_the_command_line(store: Store, workspace_dir: Path) -> None:
    probe = subprocess.run([sys.executable, "-c", "import mlpipe_jupyter as m; print(m.__file__)"],
                           capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()).resolve().is_relative_to(REPO)

    _published(store, workspace_dir)
    done = run_cli("trigger", "grid", "--sweep", "k=1,2,3", "-p", "base=5", "--wait", "--json",
                   cwd=workspace_dir)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    sweep_id = result["sweep_id"]
    assert result["status"] == "succeeded" and result["published"] == "grid@v1"
    assert result["counts"] == {"succeeded": 3} and len(result["run_ids"]) == 3
    record = store.sweeps.get(sweep_id)
    assert record.published == "grid@v1" and record.params["base"] == 5
    for member, k in zip(record.members, (1, 2, 3), strict=True):
        run = store.runs.get_run(member.run_id)
        assert run.status.value == "succeeded" and run.published == "grid@v1"
        assert run.experiment == "grid" and run.params == {"base": 5, "k": k}
        assert run.options["sweep"] == sweep_id
    assert executed_steps(store, sweep_id) == {"prep": 1, "score": 3}  # prep shared
    # its process wrote into sweeps/ID/, never into a run's folder
    assert (store.workspace.sweep_dir(sweep_id) / "launcher.log").read_text() == ""
    assert not store.workspace.run_dir(sweep_id).exists()

    # without --wait: the id at once; a failing member fails the sweep, not the others
    started = run_cli("trigger", "grid", "--sweep", "k=-1,4", "-p", "base=5", cwd=workspace_dir)
    assert started.returncode == 0, started.stderr
    second = started.stdout.strip()
    assert second.startswith("sw-") and f"started sweep {second} of grid@v1" in started.stderr
    ended = wait_for_sweep(store, second, timeout=300)
    assert ended.status == "failed" and ended.counts() == {"failed": 1, "succeeded": 1}
    assert executed_steps(store, second) == {"score": 2}  # prep reused from the first sweep

    listing = run_cli("sweep", "list", cwd=workspace_dir)
    assert sweep_id in listing.stdout and second in listing.stdout
    shown = run_cli("sweep", "show", second, "--sort", "score", cwd=workspace_dir)
    assert shown.returncode == 0 and "failed" in shown.stdout

    # problems are found before anything starts, with the CLI's messages
    for args, message in [
        (("--sweep", "q=1,2"), "q: not a parameter of grid@v1 (its parameters: base, k)"),
        (("--sweep", "k=1,x"), "parameter 'k' expects int"),
        (("--sweep", "k=uniform(1,2)"), "--samples N"),
        (("--sweep", "k=1,2", "-p", "k=3"), "both swept and set with -p"),
    ]:
        done = run_cli("trigger", "grid", *args, cwd=workspace_dir)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(store.sweeps.list()) == 2


def test_an_every_schedule_with_a_sweep_fires_once(store: Store, workspace_dir: Path) -> None:
    _published(store, workspace_dir)
    create_schedule(store, "grid", name="nightly-grid", every_seconds=3600,
                    sweep=["k=1,2", "base=3,4"], now=T0)
    clock = FakeClock()  # the clock moves once; the sweep's process is real
    scheduler = Scheduler(store, clock=clock, tick_seconds=0.2)
    scheduler.tick()
    clock.advance(3601)
    deadline = time.time() + 300
    while True:
        scheduler.tick()
        [firing] = firings(store, get_schedule(store, "nightly-grid"), limit=10)
        if firing.status not in ("pending", "running"):
            break
        assert time.time() < deadline, firing
        time.sleep(0.3)
    assert firing.status == "succeeded", firing.error
    sweep_id = firing.run_id or ""
    assert sweep_id.startswith("sw-") and firing.run_ids == [sweep_id]
    record = store.sweeps.get(sweep_id)
    assert record.status == "succeeded" and record.schedule == "nightly-grid"
    assert record.published == "grid@v1" and len(record.members) == 4
    for member in record.members:
        run = store.runs.get_run(member.run_id)
        assert run.options["schedule"] == "nightly-grid" and run.published == "grid@v1"
    assert executed_steps(store, sweep_id) == {"prep": 2, "score": 4}

    listing = run_cli("sweep", "list", cwd=workspace_dir)
    assert listing.returncode == 0 and sweep_id in listing.stdout
    assert "4 succeeded" in listing.stdout
    shown = run_cli("schedule", "show", "nightly-grid", cwd=workspace_dir).stdout
    assert "sweep:      k=1,2 x base=3,4 (4 members), one per firing" in shown
    assert sweep_id in shown and "SWEEP" in shown
    listed = run_cli("schedule", "list", cwd=workspace_dir).stdout
    assert "k=1,2 x base=3,4 (4 members)" in listed
