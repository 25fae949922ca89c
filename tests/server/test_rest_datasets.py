"""Datasets over REST: each dataset with its versions, the run and step that produced each,
its files, and the first rows of a tabular one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook
from tests.server.conftest import wait_for_run
from tests.server.test_rest_lineage import LINEAGE
from tests.server.test_rest_runs import check, response_schema

pytestmark = pytest.mark.slow


async def test_datasets_versions_producers_and_previews(api: Any, project: Path) -> None:
    assert await api("GET", "datasets") == (200, {"datasets": []})  # no workspace yet
    status, body = await api("GET", "datasets", "numbers")
    assert status == 404 and "numbers" in body["message"]

    source = project / "source"
    source.mkdir()
    (source / "numbers.csv").write_text("x,y,label\n1,2,a\n3,,b\n5,6,c\n")
    store = Store.open(project, create=True)
    store.datasets.register("numbers", source, tabular=True, description="by hand")
    write_notebook(project / "lineage.ipynb", LINEAGE)
    status, started = await api("POST", "runs", body={"notebook": "lineage.ipynb"})
    assert status == 202, started
    run = await wait_for_run(api, started["run_id"])
    assert run["status"] == "succeeded", run["error"]
    (source / "numbers.csv").write_text("x,y,label\n7,8,d\n")
    store.datasets.register("numbers", source, tabular=True)

    status, listed = await api("GET", "datasets")
    assert status == 200
    check(listed, response_schema("/datasets", "GET", 200))
    by_name = {d["name"]: d for d in listed["datasets"]}
    assert set(by_name) == {"numbers", "number_rows"}
    assert (by_name["numbers"]["version"], by_name["numbers"]["versions"]) == (2, 2)
    assert by_name["number_rows"]["produced_by"] == {
        "run_id": run["id"], "step": "copy", "output": "rows"}

    status, numbers = await api("GET", "datasets", "numbers")
    check(numbers, response_schema("/datasets/{dataset}", "GET", 200))
    assert [v["ref"] for v in numbers["versions"]] == ["numbers@v2", "numbers@v1"]
    assert [v["produced_by"] for v in numbers["versions"]] == [None, None]
    assert numbers["versions"][1]["description"] == "by hand"
    assert numbers["versions"][1]["files"] == 1 and numbers["versions"][1]["bytes"] > 0

    status, preview = await api("GET", "datasets", "numbers", "versions", "1", "preview")
    assert status == 200, preview
    check(preview, response_schema("/datasets/{dataset}/versions/{version}/preview", "GET", 200))
    assert preview["file_list"] == [{"path": "numbers.csv", "bytes": preview["bytes"]}]
    table = preview["table"]
    assert table["columns"] == ["x", "y", "label"]
    assert table["rows"][0] == ["1", "2.0", "a"] and table["rows"][1][1] is None
    status, two = await api("GET", "datasets", "numbers", "versions", "1", "preview",
                            params={"rows": "2"})
    assert len(two["table"]["rows"]) == 2

    status, body = await api("GET", "datasets", "numbers", "versions", "9", "preview")
    assert status == 404 and "has no version 9" in body["message"]
    status, body = await api("GET", "datasets", "nope")
    assert status == 404 and "no dataset named 'nope'" in body["message"]
    status, body = await api("GET", "datasets", "numbers", "versions", "1", "preview",
                             params={"rows": "many"})
    assert status == 400 and "rows" in body["message"]
    store.close()
