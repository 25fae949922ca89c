"""A run's lineage in its REST detail: the dataset versions its steps read and wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook
from tests.server.conftest import wait_for_run
from tests.server.test_rest_runs import check, response_schema

pytestmark = pytest.mark.slow

LINEAGE = [
    "%%mlstep copy --input raw=dataset:numbers --output rows=dataset:number_rows\n"
    "import shutil\nshutil.copy(inputs.raw / 'numbers.csv', outputs.rows / 'rows.csv')\n",
    "%%mlstep count --input rows=copy.rows --output report\n"
    "(outputs.report / 'n.txt').write_text('3')\n",
]


async def test_run_detail_lists_datasets_read_and_written(api: Any, jp_fetch: Any,
                                                          project: Path) -> None:
    source = project / "source"
    source.mkdir()
    (source / "numbers.csv").write_text("x,y\n1,2\n3,4\n")
    store = Store.open(project, create=True)
    store.datasets.register("numbers", source, tabular=True)
    write_notebook(project / "lineage.ipynb", LINEAGE)

    status, started = await api("POST", "runs", body={"notebook": "lineage.ipynb"})
    assert status == 202, started
    run = await wait_for_run(api, started["run_id"])
    check(run, response_schema("/runs/{run}", "GET", 200))
    assert run["status"] == "succeeded", run["error"]
    assert run["datasets"] == {
        "read": [{"step": "copy", "input": "raw", "dataset": "numbers", "version": 1}],
        "written": [{"step": "copy", "output": "rows", "dataset": "number_rows", "version": 1}]}

    # the output notebook as a page (HTML, not JSON), in the dark theme when asked
    page = await jp_fetch("mlpipe", "api", "runs", run["id"], "steps", "copy", "output.html",
                          params={"theme": "dark"})
    assert page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]  # its own styles apply; no script runs
    assert "style-src 'unsafe-inline'" in policy and "script-src" not in policy
    assert "default-src 'none'" in policy
    assert "<html" in page.body.decode().lower()
    status, body = await api("GET", "runs", run["id"], "steps", "copy", "output.html",
                             params={"theme": "sepia"})
    assert status == 400 and "theme" in body["message"]

    # a second run reuses copy: it read the same version and registered none
    status, again = await api("POST", "runs", body={"notebook": "lineage.ipynb"})
    second = await wait_for_run(api, again["run_id"])
    assert [s["status"] for s in second["steps"]] == ["reused", "reused"]
    assert second["datasets"] == {"read": run["datasets"]["read"], "written": []}
    store.close()
