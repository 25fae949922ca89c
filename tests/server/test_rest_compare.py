"""Comparing runs over REST: ``GET compare?runs=A,B,C`` (parameters and metrics side by
side, and per step which fingerprint components differ from the first run, with the
sentences that explain them) and ``GET compare/chart`` (a Vega-Lite spec the panel renders).
Every JSON answer is checked against the shipped OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlpipe_jupyter.server.handlers import openapi_document
from tests.conftest import write_notebook
from tests.server.conftest import STEPS, wait_for_run

SPEC = openapi_document()


def check(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(instance, {**schema, "components": SPEC["components"]})


def response_schema(path: str, status: int) -> dict[str, Any]:
    answer = SPEC["paths"][path]["get"]["responses"][str(status)]
    if "$ref" in answer:
        answer = SPEC["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    return dict(answer["content"]["application/json"]["schema"])


async def test_compare_needs_two_runs_and_a_workspace(api: Any, project: Path) -> None:
    for params in ({"runs": "latest"}, {"runs": "a, "}):
        status, body = await api("GET", "compare", params=params)
        assert status == 400, body
        check(body, response_schema("/compare", 400))
        assert "compare needs two or more runs" in body["message"]
    status, body = await api("GET", "compare")
    assert status == 400 and "query argument 'runs' is required" in body["message"]
    status, body = await api("GET", "compare", "chart", params={"runs": "a"})
    assert status == 400 and "two or more runs" in body["message"]
    status, body = await api("GET", "compare", params={"runs": ",".join(["a"] * 101)})
    assert status == 400 and "at most 100 runs" in body["message"]
    status, body = await api("GET", "compare", params={"runs": "a,b"})
    assert status == 404 and "no mlpipe workspace" in body["message"]
    assert not (project / ".mlpipe").exists()


@pytest.mark.slow  # real kernels
async def test_compare_runs_over_rest(api: Any, project: Path) -> None:
    ids = []
    for n in (3, 5):
        status, started = await api("POST", "runs", body={"notebook": "pipe.ipynb",
                                                          "parameters": {"n": n}})
        assert status == 202, started
        ids.append((await wait_for_run(api, started["run_id"]))["id"])
    # the counting step's code changes; n stays 5
    write_notebook(project / "pipe.ipynb", [STEPS[0], STEPS[1].replace("n * 2", "n * 3")])
    status, started = await api("POST", "runs", body={"notebook": "pipe.ipynb",
                                                      "parameters": {"n": 5}})
    assert status == 202, started
    ids.append((await wait_for_run(api, started["run_id"]))["id"])

    status, body = await api("GET", "compare", params={"runs": ",".join(ids)})
    assert status == 200, body
    check(body, response_schema("/compare", 200))
    assert [r["run_id"] for r in body["runs"]] == ids
    assert {r["notebook"] for r in body["runs"]} == {"pipe.ipynb"}
    assert body["parameters"] == {"n": ["3", "5", "5"]}
    assert body["differing_parameters"] == ["n"]
    assert body["metrics"] == {"count.n": [3, 5, 5]} and body["differing_metrics"] == ["count.n"]
    make, count = body["steps"]
    assert make["step"] == "make" and make["changed"] == [[], ["params"], ["params"]]
    assert "parameter 'n' changed: 3 -> 5" in make["changes"][1]
    assert count["step"] == "count" and count["differs"]
    assert "code" not in count["changed"][1] and "code" in count["changed"][2]
    assert "the step's code changed" in count["changes"][2]
    assert make["statuses"] == ["succeeded", "succeeded", "reused"]

    # the same two runs (prefixes and 'latest' work): only the code differs
    status, body = await api("GET", "compare", params={"runs": f"{ids[1][:17]},latest"})
    assert status == 200, body
    assert body["differing_parameters"] == [] and body["steps"][1]["changed"] == [[], ["code"]]
    assert not body["steps"][0]["differs"]

    status, body = await api("GET", "compare", params={"runs": f"{ids[0]},nope"})
    assert status == 404 and "no run 'nope'" in body["message"], body
    check(body, response_schema("/compare", 404))

    # the chart: across the runs by default, or against a parameter
    status, chart = await api("GET", "compare", "chart", params={"runs": ",".join(ids)})
    assert status == 200, chart
    check(chart, response_schema("/compare/chart", 200))
    assert chart["mark"]["type"] == "bar" and chart["encoding"]["y"]["title"] == "count.n"
    assert [(v["x"], v["y"]) for v in chart["data"]["values"]] == [
        (f"{i + 1}. {run}", y) for i, (run, y) in enumerate(zip(ids, (3, 5, 5), strict=True))]
    status, against = await api("GET", "compare", "chart", params={
        "runs": ",".join(ids), "metric": "n", "parameter": "n"})
    assert status == 200, against
    assert against["encoding"]["x"]["title"] == "n"
    assert against["encoding"]["x"]["type"] == "quantitative"
    assert against["mark"]["type"] == "point"  # two runs share n=5: no line
    assert [(v["x"], v["y"], v["run"]) for v in against["data"]["values"]] == [
        (3, 3, ids[0]), (5, 5, ids[1]), (5, 5, ids[2])]
    status, body = await api("GET", "compare", "chart", params={"runs": ",".join(ids),
                                                                "metric": "acc"})
    assert status == 404 and "their metrics: count.n" in body["message"], body
    status, body = await api("GET", "compare", "chart", params={"runs": ",".join(ids),
                                                                "parameter": "k"})
    assert status == 404 and "their parameters: n" in body["message"], body
