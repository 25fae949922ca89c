"""Published pipelines, triggers and schedules over REST (and the scheduler hosted in the
server)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.scheduling.publishing import publish, set_enabled
from mlpipe_jupyter.scheduling.schedules import create_schedule
from mlpipe_jupyter.store import Store
from tests.server.conftest import wait_for_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def published(project: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """pipe.ipynb published as ``pipe`` (v1) with an hourly schedule ``hourly``; trigger
    subprocesses import this checkout (PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    store = Store.open(project, create=True)
    publish(store, project / "pipe.ipynb", "pipe", description="the test pipeline")
    create_schedule(store, "pipe", name="hourly", every_seconds=3600)
    return store


async def test_list_and_show_published(api: Any, published: Store) -> None:
    status, body = await api("GET", "published")
    assert status == 200
    [entry] = body["published"]
    assert entry["name"] == "pipe" and entry["default_version"] == 1
    [version] = entry["versions"]
    assert version["ref"] == "pipe@v1" and version["default"] and not version["disabled"]
    assert version["parameters"] == {"n": 3}
    status, one = await api("GET", "published", "pipe")
    assert status == 200 and one == entry


async def test_nothing_published_yet(api: Any) -> None:
    assert await api("GET", "published") == (200, {"published": []})
    assert await api("GET", "schedules") == (200, {"schedules": []})
    status, body = await api("POST", "published", "pipe", "trigger", body={})
    assert status == 404 and "no published pipeline named 'pipe'" in body["message"]


@pytest.mark.parametrize(("parts", "body", "code", "message"), [
    (("published", "nope"), None, 404, "no published pipeline named 'nope'"),
    (("published", "nope", "trigger"), {}, 404, "no published pipeline named 'nope'"),
    (("published", "pipe", "trigger"), {"version": 7}, 404, "has no version 7"),
    (("published", "pipe", "trigger"), {"parameters": {"bogus": 1}}, 400, "unknown parameter"),
    (("published", "pipe", "trigger"), {"parameters": {"n": "[1,"}}, 400, "parameter 'n'"),
    (("published", "pipe", "trigger"), {"parameters": [1]}, 400, "'parameters'"),
    (("published", "pipe", "trigger"), {"version": "1"}, 400, "'version'"),
    (("published", "pipe", "trigger"), "{not json", 400, "not JSON"),
    (("schedules", "nope"), None, 404, "no schedule named 'nope'"),
    (("schedules", "nope", "pause"), {}, 404, "no schedule named 'nope'"),
])
async def test_published_errors(api: Any, published: Store, parts: tuple[str, ...],
                                body: Any, code: int, message: str) -> None:
    method = "GET" if body is None else "POST"
    status, answer = await api(method, *parts, body=body)
    assert status == code, answer
    assert answer["status"] == code and message in answer["message"]
    assert not published.runs.list_runs(None, None, None, 10, 0)  # nothing started


async def test_trigger_of_a_disabled_version_is_a_conflict(api: Any, published: Store) -> None:
    set_enabled(published, "pipe", None, False)
    status, body = await api("POST", "published", "pipe", "trigger", body={})
    assert status == 409 and "disabled" in body["message"]
    status, body = await api("GET", "published", "pipe")
    assert body["versions"][0]["disabled"] is True


async def test_trigger_needs_authentication(
    http_server_client: Any, jp_base_url: str, published: Store,
) -> None:
    response = await http_server_client.fetch(
        f"{jp_base_url}mlpipe/api/published/pipe/trigger", method="POST", raise_error=False,
        body=json.dumps({"parameters": {"n": 5}}),
    )
    assert response.code == 403
    for action in ("pause", "resume"):
        response = await http_server_client.fetch(
            f"{jp_base_url}mlpipe/api/schedules/hourly/{action}", method="POST",
            raise_error=False, body="{}")
        assert response.code == 403
    assert not published.runs.list_runs(None, None, None, 10, 0)


@pytest.mark.slow  # a real run
async def test_trigger_runs_the_published_version(api: Any, published: Store,
                                                  project: Path) -> None:
    status, body = await api("POST", "published", "pipe", "trigger",
                             body={"parameters": {"n": 5}})
    assert status == 202, body
    assert body["published"] == "pipe@v1" and body["version"] == 1
    run_id = body["run_id"]
    deadline = time.time() + 60  # the run is recorded once its process has started
    while (await api("GET", "runs", run_id))[0] == 404:
        launch_log = project / ".mlpipe" / "runs" / run_id / "launcher.log"
        assert time.time() < deadline, launch_log.read_text() if launch_log.exists() else ""
        await asyncio.sleep(0.2)
    run = await wait_for_run(api, run_id)
    assert run["status"] == "succeeded", run
    assert run["published"] == "pipe@v1" and run["experiment"] == "pipe"
    assert run["params"]["n"] == 5
    assert run["notebook"].startswith(".mlpipe/published/pipe/v1/")
    status, page = await api("GET", "runs")
    assert [r["id"] for r in page["runs"]] == [run_id]


async def test_schedules_list_pause_and_resume(api: Any, published: Store) -> None:
    status, body = await api("GET", "schedules")
    assert status == 200
    [schedule] = body["schedules"]
    assert schedule["name"] == "hourly" and schedule["pipeline"] == "pipe"
    assert schedule["paused"] is False and schedule["trigger"] == "every 1h"
    assert len(schedule["next_fire_times"]) == 3 and schedule["last_firing"] is None

    status, paused = await api("POST", "schedules", "hourly", "pause")
    assert status == 200 and paused["paused"] is True and paused["next_fire_times"] == []
    status, again = await api("GET", "schedules", str(schedule["id"]))  # by id too
    assert status == 200 and again["paused"] is True

    status, resumed = await api("POST", "schedules", "hourly", "resume")
    assert status == 200 and resumed["paused"] is False
    assert len(resumed["next_fire_times"]) == 3
