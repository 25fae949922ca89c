"""The magics and the DAG widget in real JupyterLab, in headless Chromium.

Needs Debian's chromium (`apt-get install -y chromium`) and Python playwright; playwright
cannot download its own browser here, so it is pointed at /usr/bin/chromium.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.store import Store
from tests.jupyter.lab import CHROMIUM, running_lab

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# the widget in the notebook's output, not the sidebar panel (which draws the same classes)
WIDGET = ".jp-OutputArea .mlpipe-dag"


def run_all_cells(page: Any, url: str) -> None:
    """Open the notebook at ``url`` and run all its cells once its kernel is idle."""
    page.goto(url)
    # clicks before the kernel is idle are dropped
    page.locator("text=/\\bIdle\\b/ >> visible=true").first.wait_for(timeout=90_000)
    select = page.locator(".jp-Dialog button:has-text('Select')")
    if select.count():
        select.first.click()
    page.click(".jp-Notebook")
    page.locator("li.lm-MenuBar-item:has-text('Run')").click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


@pytest.fixture
def lab(store: Store, tmp_path: Path, write_notebook: Any) -> Iterator[str]:
    """JupyterLab serving tmp_path (with pipe.ipynb); yields the notebook's URL."""
    write_notebook(tmp_path / "pipe.ipynb", [
        "%load_ext mlpipe_jupyter",
        "%%mlstep prepare --input raw=dataset:numbers --output clean\n"
        "import shutil\nshutil.copy(inputs.raw / 'numbers.csv', outputs.clean)\n",
        "%%mlstep count --input data=prepare.clean --output report\n"
        "n = len((inputs.data / 'numbers.csv').read_text().splitlines())\n"
        "context.log('lines', n)\n"
        "(outputs.report / 'n.txt').write_text(str(n))\n",
        "%mlpipe run --wait",
    ])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with running_lab(tmp_path, env, stop_seconds=20) as running:
        yield f"{running.base}/lab/tree/pipe.ipynb?token={running.token}"


def test_run_all_draws_the_live_dag(lab: str, store: Store) -> None:
    from playwright import sync_api as playwright  # the `test` extra installs it
    assert Path(CHROMIUM).exists(), "apt-get install -y chromium"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            run_all_cells(page, lab)

            done = page.locator(f"{WIDGET} .mlpipe-step[data-status='succeeded']")
            done.nth(1).wait_for(timeout=120_000)
            assert done.count() == 2
            head = page.locator(f"{WIDGET} .mlpipe-head").first.inner_text()
            assert "succeeded" in head and "pipe.ipynb" in head

            page.locator(f"{WIDGET} .mlpipe-step[data-step='count']").click()
            details = page.locator(f"{WIDGET} .mlpipe-details").first
            details.wait_for(timeout=10_000)
            text = details.inner_text()
            assert "count: succeeded" in text and "lines" in text
            # kept for humans: what the widget looked like (test-artifacts/ is git-ignored)
            artifacts = REPO / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            page.locator(WIDGET).first.screenshot(path=str(artifacts / "dag-widget.png"))
        finally:
            browser.close()
    run = store.runs.get_run("latest")
    assert run.status.value == "succeeded" and run.notebook.endswith("pipe.ipynb")


def test_the_widget_names_the_variables_along_its_edges() -> None:
    """widget.js alone (as anywidget loads it) in Chromium, with a fake model: the edges
    that carry variables are labelled, and a step's details list what it receives."""
    from playwright import sync_api as playwright

    def step(name: str, layer: int, upstream: list[str],
             variables: dict[str, list[str]]) -> dict[str, Any]:
        return {"name": name, "status": "succeeded", "duration": 0.5, "reused": False,
                "reused_from": None, "upstream": upstream, "variables": variables,
                "layer": layer, "error": None, "decision": "no previous result",
                "log_tail": "", "metrics": {}, "output_notebook": None}

    state = {"run_id": "r1", "status": "succeeded", "notebook": "flow.ipynb", "error": "",
             "steps": [step("load", 0, [], {}),
                       step("clean", 1, ["load"], {"load": ["raw"]}),
                       step("other", 1, ["load"], {}),
                       step("report", 2, ["clean", "load"],
                            {"clean": ["df", "arr", "feature_matrix"],
                             "load": ["settings"]})]}
    source = (REPO / "mlpipe_jupyter" / "jupyter" / "widget.js").read_text()
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 400})
            page.set_content("<div id='root' style='padding: 8px'></div>")
            page.evaluate("""async ([source, state]) => {
                const url = URL.createObjectURL(new Blob([source], {type: "text/javascript"}));
                const widget = (await import(url)).default;
                const model = {get: (key) => state[key], on() {}, off() {}};
                widget.render({model, el: document.getElementById("root")});
            }""", [source, state])
            labels = page.locator(".mlpipe-edge-label")
            shown = {(labels.nth(i).get_attribute("data-from"),
                      labels.nth(i).get_attribute("data-to")):
                     labels.nth(i).locator("text").text_content()
                     for i in range(labels.count())}
            assert shown["load", "clean"] == "raw" and shown["load", "report"] == "settings"
            assert shown["clean", "report"].startswith("df, arr, fea")
            assert shown["clean", "report"].endswith("…")
            assert ("load", "other") not in shown  # no variables: no label
            page.locator(".mlpipe-step[data-step='report']").click()
            receives = page.locator(".mlpipe-details tr", has_text="receives").locator("td")
            assert receives.inner_text() == ("df (from clean), arr (from clean), "
                                             "feature_matrix (from clean), settings (from load)")
            page.screenshot(path=str(artifacts / "widget-variables-dag.png"))
        finally:
            browser.close()


def test_a_sweep_draws_its_table_and_vega_chart(store: Store, tmp_path: Path,
                                                write_notebook: Any) -> None:
    """``%mlpipe run --sweep`` in real JupyterLab: the members' table with the best row
    marked, and the chart drawn by JupyterLab's own Vega renderer. The screenshot is the
    one docs/workflows.md shows."""
    from playwright import sync_api as playwright

    write_notebook(tmp_path / "sweep.ipynb", [
        "%load_ext mlpipe_jupyter",
        "%%mlstep prepare --output clean --param frac=0.5\n"
        "(outputs.clean / 'rows.txt').write_text(str(int(100 * frac)))\n",
        "%%mlstep fit --input data=prepare.clean --param k=1\n"
        "rows = int((inputs.data / 'rows.txt').read_text())\n"
        "context.log('score', round(1 - 1 / (k * rows), 4))\n",
        "%mlpipe run --sweep frac=0.5,1.0 --sweep k=1,2,4 --wait",
    ])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with running_lab(tmp_path, env, stop_seconds=20) as running, \
            playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            run_all_cells(page, f"{running.base}/lab/tree/sweep.ipynb?token={running.token}")
            page.locator(".jp-OutputArea :text('succeeded, 6 members')").first.wait_for(
                timeout=180_000)
            table = page.locator(".jp-OutputArea .mlpipe-sweep table").first
            assert table.locator("tr").count() == 7  # the header and 6 members
            best = table.locator("tr.mlpipe-best")
            assert best.count() == 1 and "★" in best.inner_text()
            assert "4" in best.inner_text() and "1.0" in best.inner_text()  # k=4, frac=1.0
            chart = page.locator(".jp-OutputArea .vega-embed svg, "
                                 ".jp-OutputArea .vega-embed canvas").first
            chart.wait_for(timeout=30_000)
            box = chart.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100
            marks = page.locator(".jp-OutputArea .vega-embed .mark-line path, "
                                 ".jp-OutputArea .vega-embed .mark-symbol path")
            assert marks.count() >= 3 + 6  # a line per k, a point per member
            news = page.locator(".jp-toast-button:has-text('No')")
            if news.count():  # "get notified about Jupyter news?" must not cover the widget
                news.first.click()
                page.locator(".Toastify__toast").first.wait_for(state="detached", timeout=5_000)
            images = REPO / "docs" / "images"
            images.mkdir(exist_ok=True)
            widget = page.locator(".jp-OutputArea .mlpipe-sweep-widget").first
            widget.scroll_into_view_if_needed()
            widget.screenshot(path=str(images / "sweep-widget.png"))
        finally:
            browser.close()
    sweep = store.sweeps.get("latest")
    assert sweep.status == "succeeded" and len(sweep.members) == 6
