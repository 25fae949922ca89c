"""The scheduler hosted in the Jupyter server (``c.MlpipeExtension.run_scheduler``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.scheduling.publishing import publish
from mlpipe_jupyter.scheduling.schedules import create_schedule
from mlpipe_jupyter.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"mlpipe_jupyter.server": True}},
        "MlpipeExtension": {"run_scheduler": True, "scheduler_tick_seconds": 0.2},
    }


@pytest.fixture
def every_second(project: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """pipe.ipynb published with a schedule firing every second; runs import this checkout."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    store = Store.open(project, create=True)
    publish(store, project / "pipe.ipynb", "pipe")
    create_schedule(store, "pipe", name="often", every_seconds=1)
    return store


@pytest.mark.slow  # a real run
async def test_the_server_hosts_a_scheduler(every_second: Store, jp_serverapp: Any) -> None:
    extension = jp_serverapp.web_app.settings["mlpipe_extension"]
    assert extension.run_scheduler is True and extension.scheduler is not None
    scheduler_id = extension.scheduler.id
    store = every_second
    deadline = time.time() + 30
    while True:  # the scheduler heartbeats in the workspace's store
        rows = store.workspace.query("SELECT * FROM schedulers WHERE id=?", (scheduler_id,))
        if rows and rows[0]["stopped_at"] is None:
            break
        assert time.time() < deadline, "the hosted scheduler never heartbeat"
        await asyncio.sleep(0.2)
    while True:  # and fires the schedule: a run of the published pipeline starts
        rows = store.workspace.query("SELECT * FROM firings WHERE run_id IS NOT NULL")
        if rows:
            break
        assert time.time() < deadline, "the hosted scheduler never fired"
        await asyncio.sleep(0.2)

    await extension.stop_extension()  # what the server does when it stops
    assert extension.scheduler is None
    [row] = store.workspace.query("SELECT stopped_at FROM schedulers WHERE id=?", (scheduler_id,))
    assert row["stopped_at"] is not None


@pytest.mark.parametrize("jp_server_config", [
    {"ServerApp": {"jpserver_extensions": {"mlpipe_jupyter.server": True}}}])
async def test_no_scheduler_by_default(project: Path, jp_serverapp: Any) -> None:
    extension = jp_serverapp.web_app.settings["mlpipe_extension"]
    assert extension.run_scheduler is False and extension.scheduler is None
    assert not (project / ".mlpipe").exists()  # nothing written by just serving

