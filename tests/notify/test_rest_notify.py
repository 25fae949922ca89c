"""Notifications through the REST API: ``notify``/``notify_on`` in POST /runs, and the
run detail's ``notifications`` (checked against openapi.yaml)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.notify.receivers import HttpReceiver
from tests.server.conftest import wait_for_run
from tests.server.test_rest_runs import SPEC, check, response_schema

pytestmark = pytest.mark.slow


async def test_rest_run_notifies_and_shows_its_notifications(
        api: Any, project: Path, http_receiver: HttpReceiver) -> None:
    status, body = await api("POST", "runs", body={
        "notebook": "pipe.ipynb", "notify": ["webhook:ftp://nowhere"], "notify_on": ["often"]})
    assert status == 400, body
    check(body, SPEC["components"]["schemas"]["Error"])
    assert "a webhook is an http" in body["message"] and "'often'" in body["message"]
    status, body = await api("POST", "runs", body={"notebook": "pipe.ipynb", "notify": "x"})
    assert status == 400

    status, started = await api("POST", "runs", body={
        "notebook": "pipe.ipynb", "notify": [f"webhook:{http_receiver.url()}"],
        "notify_on": ["succeeded"]})
    assert status == 202, started
    run = await wait_for_run(api, started["run_id"])
    deadline = time.time() + 30
    while not run["notifications"]:  # sent after the final status is recorded
        assert time.time() < deadline
        await asyncio.sleep(0.2)
        status, run = await api("GET", "runs", started["run_id"])
    check(run, response_schema("/runs/{run}", "GET", 200))
    (sent,) = run["notifications"]
    assert sent["channel"] == f"webhook:{http_receiver.url()}"
    assert (sent["status"], sent["run_status"], sent["source"], sent["attempts"]) == (
        "sent", "succeeded", "run", 1)
    (posted,) = http_receiver.requests
    assert posted.json["run_id"] == run["id"] and posted.json["status"] == "succeeded"
