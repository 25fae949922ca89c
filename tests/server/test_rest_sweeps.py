"""Sweeps over REST: started from ``POST runs`` and from a trigger, read back as a table and
a chart, and refused (400, nothing started) when malformed. Every JSON answer is checked
against the shipped OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlpipe_jupyter.scheduling.publishing import publish
from mlpipe_jupyter.scheduling.scheduler import Scheduler
from mlpipe_jupyter.scheduling.schedules import create_schedule
from mlpipe_jupyter.server.handlers import openapi_document
from mlpipe_jupyter.store import Store
from tests.scheduling.conftest import T0, FakeClock, FakeLauncher

REPO = Path(__file__).resolve().parents[2]
SPEC = openapi_document()


def check(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(instance, {**schema, "components": SPEC["components"]})


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    answer = SPEC["paths"][path][method.lower()]["responses"][str(status)]
    if "$ref" in answer:
        answer = SPEC["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return dict(answer["content"]["application/json"]["schema"])


async def wait_for_sweep(api: Any, sweep_id: str, timeout: float = 180) -> dict[str, Any]:
    """The sweep's table once it has ended (404 until its process has recorded it)."""
    deadline = time.time() + timeout
    while True:
        status, sweep = await api("GET", "sweeps", sweep_id)
        if status == 200 and sweep["status"] != "running" and sweep["ended_at"]:
            return dict(sweep)
        assert status in (200, 404), sweep
        assert time.time() < deadline, sweep
        await asyncio.sleep(0.3)


def _nothing_started(project: Path) -> None:
    workspace = project / ".mlpipe"
    if not (workspace / "mlpipe.db").exists():
        return
    store = Store.open(project)
    assert store.runs.list_runs(None, None, None, 10, 0) == []
    assert store.sweeps.list() == []


@pytest.mark.parametrize(("sweep", "message"), [
    ({"sweep": ["n="]}, "no values for n"),
    ({"sweep": ["bogus=1,2"]}, "bogus: not a parameter of"),
    ({"sweep": ["n=1,oops"]}, "parameter 'n' expects int"),
    ({"sweep": ["n=uniform(1,5)"]}, "--samples N"),
    ({"sweep": ["n=" + ",".join(str(i) for i in range(1, 502))]}, "this sweep has 501 members"),
    ({"sweep": []}, "a sweep needs at least one --sweep"),
    ({"sweep": "n=1,2"}, "field 'sweep.sweep' must be a list of strings"),
    ({"sweep": ["n=1,2"], "samples": "3"}, "field 'sweep.samples' must be an integer"),
    ({"sweep": ["n=1,2"], "yes": "y"}, "field 'sweep.yes' must be a boolean"),
    ({"sweep": ["n=1,2"], "grid": True}, "unknown keys grid"),
])
async def test_a_bad_sweep_is_a_400_and_starts_nothing(api: Any, project: Path,
                                                       sweep: Any, message: str) -> None:
    status, body = await api("POST", "runs", body={"notebook": "pipe.ipynb", "sweep": sweep})
    assert status == 400, body
    check(body, SPEC["components"]["schemas"]["Error"])
    assert message in body["message"], body
    _nothing_started(project)


async def test_a_sweep_and_a_parameter_problem_are_reported_together(api: Any,
                                                                      project: Path) -> None:
    status, body = await api("POST", "runs", body={
        "notebook": "pipe.ipynb", "parameters": {"n": 1, "zz": 2},
        "sweep": {"sweep": ["n=1,2", "yy=1"]}})
    assert status == 400, body
    assert len(body["issues"]) == 3, body
    assert any("unknown parameter(s) zz" in i for i in body["issues"])
    assert any("yy: not a parameter" in i for i in body["issues"])
    assert any("both swept and set with -p" in i for i in body["issues"])
    _nothing_started(project)


async def test_sweeps_before_any_workspace(api: Any, project: Path) -> None:
    assert await api("GET", "sweeps") == (200, {"sweeps": [], "limit": 20})
    status, body = await api("GET", "sweeps", "latest")
    assert status == 404 and "no mlpipe workspace" in body["message"]
    status, body = await api("GET", "sweeps", params={"limit": "0"})
    assert status == 400 and "limit" in body["message"]
    assert not (project / ".mlpipe").exists()


@pytest.mark.slow  # real kernels
async def test_a_sweep_from_rest_its_table_chart_and_events(
    api: Any, project: Path, http_server_client: Any, jp_base_url: str, jp_auth_header: Any,
) -> None:
    events: list[tuple[str, Any]] = []
    buffer = [""]

    def on_chunk(data: bytes) -> None:
        buffer[0] += data.decode()
        while "\n\n" in buffer[0]:
            block, buffer[0] = buffer[0].split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            events.append((fields.get("event", ""), json.loads(fields.get("data", "null"))))

    stream = http_server_client.fetch(
        f"{jp_base_url}mlpipe/api/events", headers=jp_auth_header, streaming_callback=on_chunk,
        request_timeout=300, raise_error=False,
    )
    try:
        status, started = await api("POST", "runs", body={
            "notebook": "pipe.ipynb", "sweep": {"sweep": ["n=1,2,3"]}})
        assert status == 202, started
        check(started, response_schema("/runs", "POST", 202))
        sweep_id = started["sweep_id"]
        assert sweep_id.startswith("sw-") and started["members"] == 3
        assert started["run_ids"] == [f"{sweep_id[3:]}-m00{i}" for i in (1, 2, 3)]

        sweep = await wait_for_sweep(api, sweep_id)
        check(sweep, response_schema("/sweeps/{sweep}", "GET", 200))
        assert sweep["status"] == "succeeded" and sweep["counts"] == {"succeeded": 3}
        assert sweep["notebook"] == "pipe.ipynb" and sweep["parameters"] == ["n"]
        assert sweep["metrics"] == ["count.n"] and sweep["sort"] == "count.n"
        assert sweep["executed"] == {"make": 3, "count": 3}
        assert [(r["params"]["n"], r["metrics"]["count.n"], r["best"]) for r in sweep["rows"]] \
            == [(1, 1, False), (2, 2, False), (3, 3, True)]  # member order; best marked
        assert [r["run_id"] for r in sweep["rows"]] == started["run_ids"]

        # ranked, lowest first; a metric named without its step
        status, ranked = await api("GET", "sweeps", sweep_id[:12],
                                   params={"sort": "n", "ascending": "true"})
        assert status == 200, ranked
        assert [r["params"]["n"] for r in ranked["rows"]] == [1, 2, 3]
        assert ranked["rows"][0]["best"] and ranked["ascending"] is True
        status, body = await api("GET", "sweeps", sweep_id, params={"sort": "loss"})
        assert status == 404 and "its metrics: count.n" in body["message"]
        status, body = await api("GET", "sweeps", sweep_id, params={"ascending": "maybe"})
        assert status == 400 and "'ascending'" in body["message"]

        status, listing = await api("GET", "sweeps", params={"notebook": "pipe.ipynb"})
        check(listing, response_schema("/sweeps", "GET", 200))
        [summary] = listing["sweeps"]
        assert summary["id"] == sweep_id and summary["members"] == 3
        assert summary["spec"] == {"sweep": ["n=1,2,3"]} and summary["status"] == "succeeded"
        status, other = await api("GET", "sweeps", params={"notebook": "sub/slow.ipynb"})
        assert other["sweeps"] == []

        status, chart = await api("GET", "sweeps", "latest", "chart")
        assert status == 200, chart
        check(chart, response_schema("/sweeps/{sweep}/chart", "GET", 200))
        assert chart["encoding"]["x"]["title"] == "n" and chart["encoding"]["y"]["title"] == "count.n"
        assert sorted((v["x"], v["y"]) for v in chart["data"]["values"]) == [(1, 1), (2, 2), (3, 3)]
        status, same = await api("GET", "sweeps", sweep_id, "chart",
                                 params={"metric": "n", "parameter": "n"})
        assert status == 200 and same == chart
        status, body = await api("GET", "sweeps", sweep_id, "chart", params={"metric": "acc"})
        assert status == 404 and "its metrics: count.n" in body["message"]
        status, body = await api("GET", "sweeps", sweep_id, "chart", params={"parameter": "k"})
        assert status == 404 and "its swept parameters: n" in body["message"]

        # members are runs: in the run list, each naming its sweep, and on the live stream
        status, page = await api("GET", "runs")
        assert sorted(r["id"] for r in page["runs"]) == started["run_ids"]
        assert {r["sweep"] for r in page["runs"]} == {sweep_id}
        deadline = time.time() + 30
        while not {d["id"] for e, d in events if e == "run"} >= set(started["run_ids"]):
            assert time.time() < deadline, events
            await asyncio.sleep(0.2)
        for kind, data in events:
            if kind == "run":
                check(data, SPEC["components"]["schemas"]["RunSummary"])
                assert data["sweep"] == sweep_id
    finally:
        http_server_client.close()
        del stream


@pytest.fixture
def published(project: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """pipe.ipynb published as ``pipe``; trigger subprocesses import this checkout."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    store = Store.open(project, create=True)
    publish(store, project / "pipe.ipynb", "pipe")
    return store


async def test_a_bad_triggered_sweep_is_a_400(api: Any, published: Store) -> None:
    for sweep, message in [({"sweep": ["m=1,2"]}, "m: not a parameter of pipe@v1"),
                           ({"sweep": ["n=1,,2"]}, "value 2 of n is empty")]:
        status, body = await api("POST", "published", "pipe", "trigger", body={"sweep": sweep})
        assert status == 400 and message in body["message"], body
    assert published.sweeps.list() == []
    assert not (published.workspace.root / "sweeps").exists()  # no process was started


@pytest.mark.slow  # a real sweep process
async def test_trigger_a_sweep_of_a_published_pipeline(api: Any, published: Store,
                                                       project: Path) -> None:
    status, started = await api("POST", "published", "pipe", "trigger",
                                body={"sweep": {"sweep": ["n=4,5"]}})
    assert status == 202, started
    check(started, response_schema("/published/{name}/trigger", "POST", 202))
    assert started["published"] == "pipe@v1" and started["members"] == 2
    sweep = await wait_for_sweep(api, started["sweep_id"])
    launch_log = project / ".mlpipe" / "sweeps" / started["sweep_id"] / "launcher.log"
    assert sweep["status"] == "succeeded", launch_log.read_text()
    assert sweep["published"] == "pipe@v1"
    assert [r["metrics"]["count.n"] for r in sweep["rows"]] == [4, 5]
    assert not (project / ".mlpipe" / "runs" / started["sweep_id"]).exists()
    for run_id in started["run_ids"]:
        status, run = await api("GET", "runs", run_id)
        assert status == 200 and run["status"] == "succeeded", run
        assert run["published"] == "pipe@v1" and run["experiment"] == "pipe"
        assert run["sweep"] == started["sweep_id"]


async def test_a_schedule_with_a_sweep_over_rest(api: Any, published: Store) -> None:
    create_schedule(published, "pipe", name="grid", every_seconds=60, sweep=["n=1,2"], now=T0)
    clock, launcher = FakeClock(), FakeLauncher()
    scheduler = Scheduler(published, clock=clock, launcher=launcher)
    scheduler.tick()
    clock.advance(61)
    scheduler.tick()  # fires: a sweep (not started for real: the fake launcher records it)
    [(prepared, _)] = launcher.launched
    status, schedule = await api("GET", "schedules", "grid")
    assert status == 200, schedule
    check(schedule, response_schema("/schedules/{schedule}", "GET", 200))
    assert schedule["sweep"] == {"sweep": ["n=1,2"]}
    assert schedule["last_firing"]["sweep_id"] == prepared.sweep_id
    assert schedule["last_firing"]["run_id"] is None
    assert schedule["last_firing"]["status"] == "running"
