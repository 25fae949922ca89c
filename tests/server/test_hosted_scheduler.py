"""The scheduler hosted in the Jupyter server (``c.MlpipeExtension.run_scheduler``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.store import Store


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"mlpipe_jupyter.server": True}},
        "MlpipeExtension": {"run_scheduler": True, "scheduler_tick_seconds": 0.2},
    }


async def test_the_server_hosts_a_scheduler(project: Path, jp_serverapp: Any) -> None:
    extension = jp_serverapp.web_app.settings["mlpipe_extension"]
    assert extension.run_scheduler is True and extension.scheduler is not None
    scheduler_id = extension.scheduler.id
    store = Store.open(project)
    deadline = time.time() + 20
    while True:  # the scheduler heartbeats in the workspace's store
        rows = store.workspace.query("SELECT * FROM schedulers WHERE id=?", (scheduler_id,))
        if rows and rows[0]["stopped_at"] is None:
            break
        assert time.time() < deadline, "the hosted scheduler never heartbeat"
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

