"""What the JupyterLab forms ask of the REST API: publish a notebook, create, edit and
delete schedules; validation errors name the request field of each problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.errors import PARAMETER, SCHEDULE, DefinitionIssue
from mlpipe_jupyter.scheduling.publishing import publish
from mlpipe_jupyter.server.errors import issue_field
from mlpipe_jupyter.store import Store
from tests.server.test_rest_runs import check, response_schema


async def _publish(api: Any, **body: Any) -> tuple[int, Any]:
    return await api("POST", "published", body={"notebook": "pipe.ipynb", "name": "pipe",
                                                 **body})


def _fields(body: dict[str, Any]) -> dict[str | None, str]:
    return {d["field"]: d["message"] for d in body["details"]}


async def test_publish_a_notebook(api: Any, project: Path) -> None:
    status, body = await _publish(api, description="the test pipeline")
    assert status == 201, body
    check(body, response_schema("/published", "POST", 201))
    assert body["created"] and body["version"]["ref"] == "pipe@v1"
    assert body["version"]["description"] == "the test pipeline"
    assert body["published"]["default_version"] == 1
    # the same content again creates nothing
    status, again = await _publish(api)
    assert status == 200 and not again["created"] and again["version"]["version"] == 1
    # a changed notebook is v2, the default unless told to keep it
    text = (project / "pipe.ipynb").read_text().replace("n=3", "n=4")
    (project / "pipe.ipynb").write_text(text)
    status, second = await _publish(api, keep_default=True)
    assert status == 201 and second["version"]["ref"] == "pipe@v2"
    assert second["published"]["default_version"] == 1
    status, listed = await api("GET", "published")
    assert [v["version"] for v in listed["published"][0]["versions"]] == [1, 2]


@pytest.mark.parametrize(("body", "code", "text"), [
    ({"name": "bad name!"}, 400, "is not valid"),
    ({"notebook": "../outside.ipynb"}, 403, "outside"),
    ({"notebook": "missing.ipynb"}, 404, "does not exist"),
    ({"notebook": "plain.ipynb"}, 400, ""),
    ({"name": ""}, 400, "'name'"),
    ({"colour": "red"}, 400, "'colour'"),
    ({"notify": ["pager:123"]}, 400, "expected webhook:URL"),
])
async def test_publish_refuses(api: Any, body: dict[str, Any], code: int, text: str) -> None:
    status, answer = await _publish(api, **body)
    assert status == code, answer
    check(answer, response_schema("/published", "POST", code))
    assert text in answer["message"]
    if "name" in body and body["name"]:
        assert _fields(answer).get("name"), answer
    if "notify" in body:
        assert "notify" in _fields(answer), answer


@pytest.fixture
def published(project: Path) -> str:
    store = Store.open(project, create=True)
    publish(store, project / "pipe.ipynb", "pipe")
    store.close()
    return "pipe"


async def test_create_edit_and_delete_a_schedule(api: Any, published: str, project: Path
                                                 ) -> None:
    status, made = await api("POST", "schedules", body={
        "pipeline": "pipe", "name": "often", "every": "15m", "parameters": {"n": 5},
        "missed": "run_once", "overlap": "queue", "retries": 2, "retry_backoff": "1m",
        "timeout": 3600, "notify": ["webhook:https://user:pw@hooks.example.org/a/b?key=s3"],
        "notify_on": ["failed"]})
    assert status == 201, made
    check(made, response_schema("/schedules", "POST", 201))
    assert (made["name"], made["kind"], made["every_seconds"]) == ("often", "every", 900)
    assert made["params"] == {"n": "5"} and made["missed"] == "run_once"
    assert (made["max_retries"], made["retry_backoff"], made["timeout"]) == (2, 60, 3600)
    assert len(made["next_fire_times"]) == 3
    [target] = made["notify"]
    assert target["on"] == ["failed"] and "pw" not in target["channel"]
    assert "s3" not in target["channel"] and "hooks.example.org" in target["channel"]

    # a cron schedule in a time zone, and one on a dataset the pipeline does not read
    status, cron = await api("POST", "schedules", body={
        "pipeline": "pipe", "cron": "0 6 * * 1-5", "timezone": "Europe/Paris"})
    assert status == 201 and cron["name"] == "pipe-cron" and cron["timezone"] == "Europe/Paris"
    status, body = await api("POST", "schedules", body={"pipeline": "pipe", "on_dataset": "x"})
    assert status == 400 and _fields(body)["on_dataset"].startswith("--on-dataset x")

    # edit: checked first, then replaced under the same name; the target is kept by id
    status, edited = await api("PUT", "schedules", "often", body={
        "pipeline": "pipe", "cron": "30 7 * * *", "timezone": "UTC",
        "keep_notify": [target["id"]], "notify": ["email:ops@example.org"],
        "notify_on": ["failed", "canceled"]})
    assert status == 200, edited
    check(edited, response_schema("/schedules/{schedule}", "PUT", 200))
    assert (edited["name"], edited["kind"], edited["cron"]) == ("often", "cron", "30 7 * * *")
    assert edited["id"] != made["id"] and edited["params"] == {}
    assert [t["channel"] for t in edited["notify"]] == [
        target["channel"], "email:ops@example.org"]
    assert all(t["on"] == ["failed", "canceled"] for t in edited["notify"])
    store = Store.open(project)
    specs = [t.spec for t in store.notify.targets("schedule", "often")]
    assert specs[0] == "webhook:https://user:pw@hooks.example.org/a/b?key=s3"  # kept whole
    store.close()

    # an edit with problems changes nothing
    status, body = await api("PUT", "schedules", "often", body={
        "pipeline": "pipe", "cron": "61 * * * *"})
    assert status == 400 and "cron" in _fields(body)
    status, same = await api("GET", "schedules", "often")
    assert same["id"] == edited["id"] and same["cron"] == "30 7 * * *"
    status, body = await api("PUT", "schedules", "often", body={
        "pipeline": "pipe", "every": 60, "keep_notify": [12345]})
    assert status == 400 and "12345" in body["message"]
    status, body = await api("PUT", "schedules", "often", body={
        "pipeline": "pipe", "every": 60, "name": "pipe-cron"})
    assert status == 409, body

    # pause, resume, delete
    status, paused = await api("POST", "schedules", "often", "pause")
    assert paused["paused"] and paused["next_fire_times"] == []
    status, deleted = await api("DELETE", "schedules", "often")
    assert status == 200 and deleted["name"] == "often"
    check(deleted, response_schema("/schedules/{schedule}", "DELETE", 200))
    assert (await api("GET", "schedules", "often"))[0] == 404
    assert (await api("DELETE", "schedules", "often"))[0] == 404
    status, listed = await api("GET", "schedules")
    assert [s["name"] for s in listed["schedules"]] == ["pipe-cron"]


async def test_every_problem_of_a_schedule_names_its_field(api: Any, published: str) -> None:
    status, body = await api("POST", "schedules", body={
        "pipeline": "pipe", "cron": "61 * * * *", "timezone": "Mars/Olympus",
        "parameters": {"n": "many", "bogus": 1}, "missed": "never", "overlap": "both",
        "retries": -1, "retry_backoff": "soon", "timeout": "0s", "name": "bad name!",
        "notify": ["pager:1"], "notify_on": ["sometimes"]})
    assert status == 400, body
    check(body, response_schema("/schedules", "POST", 400))
    fields = _fields(body)
    assert fields["cron"].startswith("cron '61 * * * *': minute 61")
    assert "unknown time zone" in fields["timezone"]
    assert "expects int" in fields["parameters.n"]
    assert "bogus" in fields["parameters"]
    for name in ("missed", "overlap", "retries", "retry_backoff", "timeout", "name",
                 "notify", "notify_on"):
        assert name in fields, (name, fields)
    assert None not in fields, fields
    assert body["issues"] == [d["message"] for d in body["details"]]

    status, body = await api("POST", "schedules", body={"pipeline": "pipe"})
    assert status == 400 and "trigger" in _fields(body)
    status, body = await api("POST", "schedules", body={
        "pipeline": "pipe", "every": "soon", "sweep": {"sweep": ["nope=1,2"]}})
    assert status == 400 and {"every", "sweep"} <= set(_fields(body)), body
    status, body = await api("POST", "schedules", body={"pipeline": "nope", "every": "1h"})
    assert status == 404 and "no published pipeline named 'nope'" in body["message"]
    status, body = await api("POST", "schedules", body={"pipeline": "nope", "every": "x"})
    assert status == 400 and "every" in _fields(body)  # its own fields first
    status, body = await api("POST", "schedules", body={"pipeline": "pipe", "every": "1h",
                                                        "name": "twice"})
    assert status == 201
    status, body = await api("POST", "schedules", body={"pipeline": "pipe", "every": "1h",
                                                        "name": "twice"})
    assert status == 409, body


@pytest.mark.parametrize(("body", "text"), [
    ({"every": True}, "'every'"),
    ({"every": "1h", "retries": "2"}, "'retries'"),
    ({"every": "1h", "colour": 1}, "'colour'"),
    ({"every": "1h", "keep_notify": [1]}, "PUT"),
    ({"every": "1h", "sweep": {"grid": 1}}, "grid"),
    ({"every": "1h", "notify": "webhook:x"}, "'notify'"),
])
async def test_malformed_schedule_requests(api: Any, published: str, body: dict[str, Any],
                                           text: str) -> None:
    status, answer = await api("POST", "schedules", body={"pipeline": "pipe", **body})
    assert status == 400 and text in answer["message"], answer


def test_issue_fields() -> None:
    assert issue_field(DefinitionIssue("x", field="--notify-on", kind=SCHEDULE)) == "notify_on"
    assert issue_field(DefinitionIssue("--retry-backoff 'x': expected", kind=SCHEDULE)) == \
        "retry_backoff"
    assert issue_field(DefinitionIssue("parameter 'a b': bad", kind=PARAMETER)) == \
        "parameters.a b"
    assert issue_field(DefinitionIssue("bad value (sweep member 2)", field="--sweep",
                                       kind=PARAMETER)) == "sweep"
    assert issue_field(DefinitionIssue("step 'x' reads nothing", step="x", cell=2)) is None
