"""Parameter values through the REST API (the panel's run dialog and re-run button), type for
type: a notebook's defaults come back as ``-p`` texts, a run takes overrides as such texts
or as JSON values, and the step sees the Python values they mean, also when re-run.
Every JSON answer is checked against the shipped OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.model.values import python_literal, same_value
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.workspace import Workspace
from tests.server.conftest import wait_for_run
from tests.server.test_rest_runs import SPEC, check, response_schema
from tests.value_probe import PROBE_STEP, assert_arrived, probe_notebook

pytestmark = pytest.mark.slow

LABEL = 'naïve "q"\nline'  # non-ASCII, a quote and a newline
# NAME -> the default's value (the header declares its Python literal)
DEFAULTS: dict[str, Any] = {
    "flag": True,
    "strict": True,
    "seed": None,
    "shape": (1, 2),
    "mapping": {1: "a", 2: "b"},
    "label": LABEL,
    "big": float("inf"),  # 1e999
    "layers": [64, 32],
    "cap": 0.5,
    "tag": "0",
    "word": "rf",
}
# What the notebook description shows: strings as they are, the rest as Python literals.
DEFAULT_TEXTS = {
    "flag": "True", "strict": "True", "seed": "None", "shape": "(1, 2)",
    "mapping": "{1: 'a', 2: 'b'}", "label": LABEL, "big": "1e999", "layers": "[64, 32]",
    "cap": "0.5", "tag": "0", "word": "rf",
}
# Overrides as the run dialog sends them (texts), and as JSON values.
OVERRIDES: dict[str, Any] = {
    "flag": "false",
    "shape": "(3,)",
    "mapping": "{2: None}",
    "label": "'x\\ny'",  # a quoted literal: the string x<newline>y
    "tag": "1",  # a string parameter: "1" stays the string "1"
    "strict": False,
    "cap": None,
    "layers": [1, 2],
}
EXPECTED = {
    **DEFAULTS,
    "flag": False, "shape": (3,), "mapping": {2: None}, "label": "x\ny", "tag": "1",
    "strict": False, "cap": None, "layers": [1, 2],
}
# A run records (and shows) the overrides it was given; the step sees the defaults too.
OVERRIDE_TEXTS = {
    "flag": "False", "shape": "(3,)", "mapping": "{2: None}", "label": "x\ny", "tag": "1",
    "strict": "False", "cap": "None", "layers": "[1, 2]",
}


def strict_json(text: str) -> Any:
    """JSON as a browser's JSON.parse reads it: no bare Infinity or NaN."""
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON (JSON.parse rejects the answer)")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def values_notebook(project: Path) -> str:
    # the workspace the server finds from its root is this one, even when a folder above
    # the test's temporary folder holds a stray .mlpipe/ (runs from /tmp make /tmp/.mlpipe)
    (project / ".mlpipe").mkdir()
    probe_notebook(project / "values.ipynb",
                   {name: python_literal(value) for name, value in DEFAULTS.items()})
    return "values.ipynb"


async def test_values_round_trip_through_rest(
    api: Any, project: Path, values_notebook: str,
) -> None:
    status, text = await api("GET", "notebooks", values_notebook, raw=True)
    assert status == 200, text
    described = strict_json(text)
    check(described, response_schema("/notebooks/{path}", "GET", 200))
    assert described["error"] is None
    assert described["parameter_texts"] == DEFAULT_TEXTS
    # the lossy JSON view, beside it
    assert described["parameters"]["shape"] == [1, 2] and described["parameters"]["big"] == "inf"

    status, started = await api("POST", "runs", body={"notebook": values_notebook,
                                                      "parameters": OVERRIDES})
    assert status == 202, started
    run = await wait_for_run(api, started["run_id"])
    assert run["status"] == "succeeded", run
    check(run, response_schema("/runs/{run}", "GET", 200))
    assert run["param_texts"] == OVERRIDE_TEXTS
    status, text = await api("GET", "runs", run["id"], raw=True)
    strict_json(text)  # the run detail (a 1e999 parameter) is JSON a browser can parse

    store = Store(Workspace(project / ".mlpipe"))
    try:
        recorded = store.runs.get_run(run["id"]).params
        assert all(same_value(recorded[name], EXPECTED[name]) for name in OVERRIDES), recorded
        assert_arrived(store, run["id"], EXPECTED)

        # the panel's re-run button: the same typed values, "1" still a string, (3,) a tuple
        status, again = await api("POST", "runs", run["id"], "steps", PROBE_STEP, "rerun")
        assert status == 202, again
        rerun = await wait_for_run(api, again["run_id"])
        assert rerun["status"] == "succeeded", rerun
        assert [s["status"] for s in rerun["steps"]] == ["succeeded"]
        assert rerun["param_texts"] == OVERRIDE_TEXTS
        assert_arrived(store, rerun["id"], EXPECTED)
    finally:
        store.close()

    status, page = await api("GET", "runs", params={"notebook": values_notebook})
    check(page, response_schema("/runs", "GET", 200))
    assert [r["param_texts"] for r in page["runs"]] == [OVERRIDE_TEXTS, OVERRIDE_TEXTS]


async def test_a_bad_boolean_text_is_a_400_naming_the_parameter(
    api: Any, values_notebook: str,
) -> None:
    status, body = await api("POST", "runs", body={"notebook": values_notebook,
                                                   "parameters": {"flag": "yes"}})
    assert status == 400, body
    check(body, SPEC["components"]["schemas"]["Error"])
    message = body["message"]
    assert "'flag'" in message and "'yes'" in message, message
    assert all(spelling in message for spelling in ("True", "False", "true", "false")), message
    # nothing was started
    status, page = await api("GET", "runs", params={"notebook": values_notebook})
    assert page["runs"] == []
