"""Real schedulers, real runs: two scheduler processes, kill -9 and restart, a dataset
trigger end to end. Each runs real kernels for some seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mlpipe_jupyter.scheduling.publishing import publish
from mlpipe_jupyter.scheduling.scheduler import Scheduler
from mlpipe_jupyter.scheduling.schedules import Firing, create_schedule, firings, get_schedule
from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook
from tests.scheduling.conftest import register_nums

pytestmark = pytest.mark.slow

SLEEPY = [
    "%%mlstep nap --output out --param secs=1 --no-reuse\n"
    "import time\n"
    "time.sleep(secs)\n"
    "(outputs.out / 'done.txt').write_text('ok')",
]


def _wait(predicate: Callable[[], bool], timeout: float = 120, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout} s")


def _scheduler_process(workspace_dir: Path, log_name: str) -> subprocess.Popen[bytes]:
    log = (workspace_dir / log_name).open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "mlpipe_jupyter", "scheduler", "--tick", "0.3"],
        cwd=workspace_dir, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
    )


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def _all_firings(store: Store, name: str) -> list[Firing]:
    return firings(store, get_schedule(store, name), limit=1000)


def _published_runs(store: Store) -> list[str]:
    rows = store.workspace.query("SELECT id FROM runs WHERE published IS NOT NULL")
    return sorted(r["id"] for r in rows)


def test_two_scheduler_processes_one_run_per_fire_time(store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "nap.ipynb", SLEEPY)
    publish(store, notebook, "nap")
    create_schedule(store, "nap", name="often", every_seconds=3, overlap="queue",
                    params={"secs": 0})
    first = _scheduler_process(workspace_dir, "first.log")
    second = _scheduler_process(workspace_dir, "second.log")
    try:
        _wait(lambda: sum(f.status == "succeeded" for f in _all_firings(store, "often")) >= 3,
              what="three succeeded firings")
    finally:
        codes = [_stop(first), _stop(second)]
    assert codes == [0, 0]
    done = _all_firings(store, "often")
    run_ids = [r for f in done for r in f.run_ids]
    assert len(run_ids) == len(set(run_ids))  # no run serves two firings
    for firing in done:
        if firing.status == "succeeded":
            assert len(firing.run_ids) == 1, firing  # each fire time ran exactly once
    recorded = _published_runs(store)
    assert set(recorded) <= set(run_ids)  # every published run belongs to a firing
    logs = (workspace_dir / "first.log").read_text() + (workspace_dir / "second.log").read_text()
    assert "started run" in logs and "stopped" in logs


def test_kill_9_and_restart_neither_loses_nor_repeats_a_firing(
    store: Store, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "nap.ipynb", SLEEPY)
    publish(store, notebook, "nap")
    create_schedule(store, "nap", name="slow", every_seconds=4, overlap="skip",
                    params={"secs": 6})
    first = _scheduler_process(workspace_dir, "first.log")
    try:
        _wait(lambda: any(f.status == "running" and f.pid for f in _all_firings(store, "slow")),
              what="a running firing")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    victim = next(f for f in _all_firings(store, "slow") if f.status == "running")
    restarted = _scheduler_process(workspace_dir, "second.log")
    try:
        _wait(lambda: next(f for f in _all_firings(store, "slow")
                           if f.fire_key == victim.fire_key).status == "succeeded",
              what="the killed scheduler's firing to succeed")
    finally:
        _stop(restarted)
    after = next(f for f in _all_firings(store, "slow") if f.fire_key == victim.fire_key)
    assert after.run_ids == victim.run_ids  # watched to its end, not started again
    assert store.runs.get_run(victim.run_id or "").status.value == "succeeded"
    assert "is gone; watching run" in (workspace_dir / "second.log").read_text()
    run_ids = [r for f in _all_firings(store, "slow") for r in f.run_ids]
    assert len(run_ids) == len(set(run_ids))


DATASET_READER = [
    "%%mlstep read --input raw=dataset:nums --output out --param tag='t'\n"
    "text = (inputs.raw / 'nums.txt').read_text()\n"
    "(outputs.out / 'seen.txt').write_text(f'{tag}:{text}')",
]


def test_dataset_trigger_end_to_end(store: Store, workspace_dir: Path) -> None:
    register_nums(store, workspace_dir / "data", "first")
    notebook = write_notebook(workspace_dir / "reader.ipynb", DATASET_READER)
    publish(store, notebook, "reader")
    create_schedule(store, "reader", name="on-nums", on_dataset="nums", params={"tag": "new"})
    scheduler = Scheduler(store, tick_seconds=0.2)
    scheduler.start()
    try:
        time.sleep(0.5)
        assert _all_firings(store, "on-nums") == []  # the version seen at creation fires nothing
        version = register_nums(store, workspace_dir / "data", "second")
        register_nums(store, workspace_dir / "data", "second")  # unchanged: no new version
        _wait(lambda: any(f.status in ("succeeded", "failed") for f in _all_firings(store, "on-nums")),
              what="the dataset firing to end")
    finally:
        scheduler.stop()
    [firing] = _all_firings(store, "on-nums")
    assert firing.status == "succeeded", firing.error
    assert firing.fire_key == f"nums@v{version}" and firing.dataset_version == version
    run = store.runs.get_run(firing.run_id or "")
    assert run.published == "reader@v1" and run.options["dataset_versions"] == {"nums": version}
    [step] = store.runs.step_runs(run.id)
    assert step.result_id is not None
    seen = store.results.path(step.result_id, "out") / "seen.txt"
    assert seen.read_text() == "new:second"
