"""The REST API driving real runs: start, follow, inspect, re-run, cancel, live events.
Every JSON answer is checked against the shipped OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlpipe_jupyter.server.handlers import openapi_document
from tests.server.conftest import wait_for_run

pytestmark = pytest.mark.slow

SPEC = openapi_document()


def check(instance: Any, schema: dict[str, Any]) -> None:
    """``instance`` matches ``schema`` (which may $ref the document's components)."""
    jsonschema.validate(instance, {**schema, "components": SPEC["components"]})


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    answer = SPEC["paths"][path][method.lower()]["responses"][str(status)]
    if "$ref" in answer:
        answer = SPEC["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return dict(answer["content"]["application/json"]["schema"])


async def test_run_lifecycle(api: Any, project: Path) -> None:
    status, started = await api("POST", "runs", body={"notebook": "pipe.ipynb",
                                                      "parameters": {"n": 5}})
    assert status == 202, started
    check(started, response_schema("/runs", "POST", 202))
    run = await wait_for_run(api, started["run_id"])
    check(run, response_schema("/runs/{run}", "GET", 200))
    assert run["status"] == "succeeded" and run["notebook"] == "pipe.ipynb"
    assert run["params"] == {"n": 5} and "git" in run
    make, count = run["steps"]
    assert (make["name"], make["layer"], count["layer"]) == ("make", 0, 1)
    assert count["metrics"] == {"n": 5} and count["fingerprint"] and count["duration"] > 0
    assert "no earlier result" in make["decision"] or make["decision"]

    status, page = await api("GET", "runs", params={"notebook": "pipe.ipynb",
                                                    "status": "succeeded", "limit": "5"})
    check(page, response_schema("/runs", "GET", 200))
    assert [r["id"] for r in page["runs"]] == [run["id"]]
    assert page["runs"][0]["step_counts"] == {"succeeded": 2}
    status, page = await api("GET", "runs", params={"experiment": "other"})
    assert page["runs"] == []
    status, page = await api("GET", "runs", params={"offset": "1"})
    assert page["runs"] == []

    status, step = await api("GET", "runs", run["id"], "steps", "count")
    check(step, response_schema("/runs/{run}/steps/{step}", "GET", 200))
    assert step["why"][0].startswith("step 'count'")

    status, chunk = await api("GET", "runs", run["id"], "steps", "make", "log",
                              params={"tail": "50"})
    check(chunk, response_schema("/runs/{run}/steps/{step}/log", "GET", 200))
    assert "made 5" in chunk["text"] and chunk["final"]
    status, rest = await api("GET", "runs", run["id"], "steps", "make", "log",
                             params={"offset": str(chunk["offset"])})
    assert rest["text"] == "" and rest["offset"] == chunk["offset"]

    status, link = await api("GET", "runs", run["id"], "steps", "count", "output")
    check(link, response_schema("/runs/{run}/steps/{step}/output", "GET", 200))
    assert link["path"].startswith(".mlpipe/runs/") and link["openable"] is False
    status, html = await api("GET", "runs", run["id"], "steps", "count", "output.html", raw=True)
    assert status == 200 and "<html" in html.lower()

    # cancel a finished run: a conflict
    status, body = await api("POST", "runs", run["id"], "cancel")
    assert status == 409 and "already ended" in body["message"]
    check(body, SPEC["components"]["schemas"]["Error"])

    # re-run make and its downstream steps with the same parameters
    status, again = await api("POST", "runs", run["id"], "steps", "make", "rerun")
    assert status == 202
    rerun = await wait_for_run(api, again["run_id"])
    assert [s["status"] for s in rerun["steps"]] == ["succeeded", "succeeded"]
    assert rerun["params"] == {"n": 5} and rerun["options"]["steps"] == ["make"]
    # and a rerun of count alone leaves make reused
    status, again = await api("POST", "runs", run["id"], "steps", "count", "rerun")
    last = await wait_for_run(api, again["run_id"])
    assert [s["status"] for s in last["steps"]] == ["reused", "succeeded"]
    assert last["steps"][0]["reused_from"]


async def test_cancel_a_run_started_here(api: Any, project: Path) -> None:
    status, started = await api("POST", "runs", body={"notebook": "sub/slow.ipynb"})
    assert status == 202
    await _wait_step_running(api, started["run_id"])
    status, body = await api("POST", "runs", started["run_id"], "cancel")
    assert status == 202 and body["status"] == "canceling"
    run = await wait_for_run(api, started["run_id"], timeout=60)
    assert run["status"] == "canceled" and run["steps"][0]["status"] == "canceled"


async def _wait_step_running(api: Any, run_id: str) -> None:
    deadline = time.time() + 90
    while True:
        status, run = await api("GET", "runs", run_id)
        if status == 200 and run["steps"][0]["status"] == "running":
            return
        assert time.time() < deadline, run
        await asyncio.sleep(0.3)


async def test_cancel_a_cli_run_and_follow_it_live(
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
    cli = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_jupyter", "run", "sub/slow.ipynb", "-q"], cwd=project,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        deadline = time.time() + 90
        while not any(e == "run" for e, _ in events):
            assert time.time() < deadline and cli.poll() is None, events
            await asyncio.sleep(0.2)
        run_id = next(d["id"] for e, d in events if e == "run")
        check(next(d for e, d in events if e == "run"), SPEC["components"]["schemas"]["RunSummary"])
        await _wait_step_running(api, run_id)

        # the step's log, followed live
        log_events: list[str] = []
        log_stream = http_server_client.fetch(
            f"{jp_base_url}mlpipe/api/runs/{run_id}/steps/wait/log/stream",
            headers=jp_auth_header, request_timeout=300, raise_error=False,
            streaming_callback=lambda data: log_events.append(data.decode()),
        )
        while "waiting" not in "".join(log_events):
            assert time.time() < deadline, log_events
            await asyncio.sleep(0.2)

        status, body = await api("POST", "runs", run_id, "cancel")
        assert status == 202, body
        assert cli.wait(60) == 130  # the CLI took SIGTERM as a cancel
        while not any(e == "run" and d["id"] == run_id and d["status"] == "canceled"
                      for e, d in events):
            assert time.time() < deadline + 30, events
            await asyncio.sleep(0.2)
        await asyncio.wait_for(log_stream, 30)  # the log stream ends with the step
        assert "event: end" in "".join(log_events)
    finally:
        if cli.poll() is None:
            cli.kill()
        http_server_client.close()
        del stream


async def test_a_kale_notebook_runs_from_rest_with_its_variables(api: Any, project: Path) -> None:
    """The panel's "Run as pipeline" on a Kale notebook: its steps, the variables on its
    edges, and its pipeline parameter overridden."""
    from tests.kale.helpers import kale_notebook

    kale_notebook(project / "kale.ipynb", [
        ("import json", ["imports"]),
        ("n = 3", ["pipeline-parameters"]),
        ("numbers = list(range(n))", ["step:make"]),
        ("total = sum(numbers)", ["step:add", "prev:make"]),
        ("print(total)", ["pipeline-metrics"]),
    ])
    # the panel lists it and previews its steps and the variables along its edges
    status, listing = await api("GET", "notebooks")
    check(listing, response_schema("/notebooks", "GET", 200))
    [kale] = [n for n in listing["notebooks"] if n["path"] == "kale.ipynb"]
    assert kale["kind"] == "kale" and kale["error"] is None
    assert [(s["name"], s["upstream"], s["variables"]) for s in kale["steps"]] == [
        ("make", [], {}), ("add", ["make"], {"make": ["numbers"]})]
    assert kale["parameter_texts"] == {"n": "3"}
    status, started = await api("POST", "runs", body={"notebook": "kale.ipynb",
                                                      "parameters": {"n": 5}})
    assert status == 202, started
    run = await wait_for_run(api, started["run_id"])
    check(run, response_schema("/runs/{run}", "GET", 200))
    assert run["status"] == "succeeded", run
    make, add = run["steps"]
    assert add["variables"] == {"make": ["numbers"]} and make["variables"] == {}
    assert add["metrics"] == {"total": 10}
