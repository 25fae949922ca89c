"""Comparing runs and showing sweeps in JupyterLab, end to end in headless Chromium at
1400x900: runs made by the real CLI, picked in the sidebar (mouse, keyboard, ctrl-click),
compared in a main-area tab (the changed parameter highlighted, the changed fingerprint
components named for the right step, with their sentences), and charted by JupyterLab's
own Vega renderer (an SVG with marks, not ours). A sweep run by ``mlpipe run --sweep``
shows in the sidebar; its view ranks the members, marks the best, charts a metric against
a swept parameter and compares its members. Screenshots go to docs/images/, which
docs/jupyterlab.md embeds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook
from tests.jupyter.lab import CHROMIUM, dismiss_news, mlpipe_lab, settle

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "docs" / "images"
VIEWPORT = {"width": 1400, "height": 900}

LOAD = ("%%mlstep load --output data --param rows=3\n"
        "(outputs.data / 'n.txt').write_text(str(rows))\n")
TRAIN = ("%%mlstep train --input data=load.data --param lr=0.1\n"
         "n = int((inputs.data / 'n.txt').read_text())\n"
         "context.log('loss', round(abs(lr - 0.1) * n + 0.05, 4))\n"
         "context.log('accuracy', round(0.9 - abs(lr - 0.1) / n, 4))\n")
TRAIN_EDITED = TRAIN.replace("0.9 -", "0.95 -")


@pytest.fixture
def lab(store: Store, tmp_path: Path) -> Iterator[str]:
    with mlpipe_lab(tmp_path) as url:
        yield url


def _mlpipe(folder: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlpipe_jupyter", "run", *args, "-q"], cwd=folder,
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def _sidebar(page: Any, lab: str) -> Any:
    page.goto(lab)
    tab = page.locator(".lm-TabBar-tab[data-id='mlpipe-panel']")
    tab.wait_for(timeout=90_000)
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    panel = page.locator("#mlpipe-panel")
    panel.locator(".mlpipe-run-item").first.wait_for(timeout=30_000)
    settle(page)
    dismiss_news(page)
    return panel


def _marks(chart: Any, kind: str) -> int:
    """How many items of Vega's ``mark-KIND`` groups the chart's SVG holds."""
    return int(chart.evaluate(
        f"c => c.querySelectorAll('svg g.mark-{kind}.role-mark path').length"))


def _drawn(chart: Any, kind: str, count: int) -> None:
    """Wait until the chart is an SVG (Vega's renderer, svg mode) with ``count`` marks."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    chart.locator("svg.marks").wait_for(timeout=60_000)
    try:
        chart.page.wait_for_function(
            "([c, k, n]) => c.querySelectorAll(`svg g.mark-${k}.role-mark path`).length === n",
            arg=[chart.element_handle(), kind, count], timeout=30_000)
    except PlaywrightTimeout:
        seen = chart.evaluate("""c => [...c.querySelectorAll('svg g.role-mark')].map(
            g => `${g.getAttribute('class')}: ${g.querySelectorAll('path').length}`)""")
        raise AssertionError(f"no {count} {kind} marks: {seen}") from None
    assert not chart.locator("canvas").count()  # embed_options: renderer svg


def _focused_check(page: Any) -> str | None:
    """The run id of the runs-list checkbox that has the keyboard focus (None: none has)."""
    result: str | None = page.evaluate(
        "(e => e && e.classList.contains('mlpipe-run-check') ? e.dataset.runId : null)"
        "(document.activeElement)")
    return result


def test_compare_two_runs_in_the_browser(lab: str, store: Store, tmp_path: Path) -> None:
    from playwright import sync_api as playwright

    notebook = tmp_path / "train.ipynb"
    write_notebook(notebook, [LOAD, TRAIN])
    _mlpipe(tmp_path, "train.ipynb", "-p", "lr=0.1")
    write_notebook(notebook, [LOAD, TRAIN_EDITED])  # the train step's code changes
    _mlpipe(tmp_path, "train.ipynb", "-p", "lr=0.5")
    # newest first (by start time: two runs in the same second have ids that do not sort)
    second, first = (r.id for r in store.runs.list_runs(None, None, None, 10, 0))
    IMAGES.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            panel = _sidebar(page, lab)
            item = {run: panel.locator(f".mlpipe-run-item[data-run-id='{run}']")
                    for run in (first, second)}
            check = {run: item[run].locator(".mlpipe-run-check") for run in (first, second)}
            assert check[first].get_attribute("aria-label")
            # the baseline ticked with the mouse (the run does not open) ...
            check[first].click()
            bar = panel.locator(".mlpipe-compare-bar")
            bar.wait_for(timeout=10_000)
            assert "1 selected" in bar.inner_text()
            assert bar.locator(".mlpipe-compare").is_disabled()
            assert page.locator(".mlpipe-runview").count() == 0
            # ... the other with ctrl-click, off again, then with the keyboard
            item[second].click(modifiers=["Control"])
            assert "2 selected" in bar.inner_text()
            item[second].click(modifiers=["Control"])
            assert "1 selected" in bar.inner_text()
            check[second].focus()
            page.keyboard.press("Space")
            assert "2 selected" in bar.inner_text()
            assert _focused_check(page) == second
            # a refresh of the list (as when a run starts or ends) re-renders the rows; the
            # keyboard focus stays on that run's checkbox
            rendered = check[second].element_handle()
            page.evaluate("document.querySelector('#mlpipe-panel .mlpipe-runs .mlpipe-reload').click()")
            page.wait_for_function("c => !c.isConnected", arg=rendered, timeout=10_000)
            assert _focused_check(page) == second
            assert page.locator(".mlpipe-runview").count() == 0
            bar.locator(".mlpipe-compare").click()

            view = page.locator(f".mlpipe-compareview[data-runs='{first},{second}']")
            view.locator(".mlpipe-cv-step[data-step='train']").wait_for(timeout=30_000)
            # the changed parameter, highlighted; the unchanged one not
            lr = view.locator("tr.mlpipe-cv-param[data-name='lr']")
            assert lr.get_attribute("data-differs") == "true"
            assert "mlpipe-differs" in (lr.get_attribute("class") or "")
            cells = lr.locator("td")
            assert [cells.nth(i).inner_text() for i in range(2)] == ["0.1", "0.5"]
            assert "mlpipe-changed" in (cells.nth(1).get_attribute("class") or "")
            assert view.locator("tr.mlpipe-cv-param[data-name='rows']").get_attribute(
                "data-differs") == "false"
            assert view.locator("tr.mlpipe-cv-metric[data-name='train.accuracy']"
                                ).get_attribute("data-differs") == "true"
            # the changed fingerprint components, named for the right step, explained
            train = view.locator("tr.mlpipe-cv-step[data-step='train'] td").nth(1)
            assert train.locator(".mlpipe-component").all_inner_texts() == ["code", "params"]
            why = train.locator(".mlpipe-cv-changes").inner_text()
            assert "the step's code changed" in why
            assert "parameter 'lr' changed: 0.1 -> 0.5" in why
            load = view.locator("tr.mlpipe-cv-step[data-step='load']")
            assert load.get_attribute("data-differs") == "false"
            assert load.locator(".mlpipe-component").count() == 0
            assert "same fingerprint" in load.locator("td").nth(1).inner_text()
            # the chart: JupyterLab's Vega renderer, as SVG; a bar a run, then against lr
            chart = view.locator(".mlpipe-chart")
            _drawn(chart, "rect", 2)
            assert view.locator(".mlpipe-chart-metric select").input_value() == "train.accuracy"
            view.locator(".mlpipe-chart-against select").select_option("lr")
            _drawn(chart, "symbol", 2)
            assert _marks(chart, "line") == 1
            for name in ("mlpipe-chart-metric", "mlpipe-chart-against"):
                assert view.locator(f".{name} select").get_attribute("aria-label")
            page.screenshot(path=str(IMAGES / "compare-runs.png"))

            # a run's id opens it
            view.locator(f".mlpipe-cv-run[data-run-id='{second}'] .mlpipe-link").click()
            page.locator(f".mlpipe-runview[data-run-id='{second}']").wait_for(timeout=30_000)
            # the dark theme: the table and the chart follow it
            page.locator(".lm-TabBar-tab", has_text="Compare 2 runs").click()
            page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                          "{theme: 'JupyterLab Dark'})")
            page.wait_for_function("document.body.dataset.jpThemeLight === 'false'",
                                   timeout=30_000)
            _drawn(chart, "symbol", 2)
            page.wait_for_timeout(800)
            colours = view.evaluate("""(v) => {
                const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
                return {view: rgb(getComputedStyle(v).backgroundColor),
                        cell: rgb(getComputedStyle(v.querySelector('.mlpipe-cv-value')).color)};
            }""")
            luminance = {k: sum(c) / 3 / 255 for k, c in colours.items()}
            assert luminance["view"] < 0.25 and luminance["cell"] > 0.6, colours
            page.screenshot(path=str(IMAGES / "compare-runs-dark.png"))
        finally:
            browser.close()


def test_a_sweep_in_the_panel(lab: str, store: Store, tmp_path: Path) -> None:
    from playwright import sync_api as playwright

    write_notebook(tmp_path / "train.ipynb", [LOAD, TRAIN])
    _mlpipe(tmp_path, "train.ipynb", "--sweep", "lr=0.01,0.1,1", "--sweep", "rows=3,5")
    [sweep] = store.sweeps.list()
    IMAGES.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            panel = _sidebar(page, lab)
            entry = panel.locator(f".mlpipe-sweep-item[data-sweep-id='{sweep.id}']")
            entry.wait_for(timeout=30_000)
            assert "6 runs" in entry.inner_text() and entry.get_attribute("aria-label")
            entry.focus()
            page.keyboard.press("Enter")

            view = page.locator(f".mlpipe-sweepview[data-sweep-id='{sweep.id}']")
            rows = view.locator(".mlpipe-sweep-row")
            rows.nth(5).wait_for(timeout=30_000)
            assert rows.count() == 6
            # the best member marked: the highest accuracy (the first metric)
            best = view.locator(".mlpipe-sweep-row.mlpipe-best")
            assert best.count() == 1 and best.locator(".mlpipe-sv-best").inner_text() == "★"
            table = view.evaluate("""(v) => {
                const heads = [...v.querySelectorAll('.mlpipe-sweep-table thead th')].map(t => t.textContent);
                return [...v.querySelectorAll('.mlpipe-sweep-row')].map(r => {
                  const cells = [...r.querySelectorAll('td')].map(c => c.textContent);
                  return Object.fromEntries(heads.map((h, i) => [h, cells[i]]));
                });
            }""")
            accuracy = next(k for k in table[0] if k.startswith("train.accuracy"))
            top = max(float(r[accuracy]) for r in table)
            assert float(best.locator("td").nth(7).inner_text()) == top, table
            assert best.get_attribute("data-best") == "true"
            assert float(table[[r.get("") for r in table].index("★")][accuracy]) == top
            assert "load 2×" in view.locator(".mlpipe-sv-executed").inner_text()
            # the chart: accuracy against lr, a line per rows value, as SVG
            chart = view.locator(".mlpipe-chart")
            _drawn(chart, "symbol", 6)
            assert _marks(chart, "line") == 2
            assert view.locator(".mlpipe-chart-against select").input_value() == "lr"
            view.locator(".mlpipe-chart-metric select").select_option("train.loss")
            view.locator(".mlpipe-chart-against select").select_option("rows")
            _drawn(chart, "symbol", 6)
            assert _marks(chart, "line") == 3  # a line per lr value
            view.locator(".mlpipe-chart-metric select").select_option("train.accuracy")
            view.locator(".mlpipe-chart-against select").select_option("lr")
            _drawn(chart, "symbol", 6)
            # rank by loss, lowest first: a header is a button
            loss = view.locator(".mlpipe-sort-button", has_text="train.loss")
            loss.click()
            view.locator("th[aria-sort='descending'] .mlpipe-sort-button",
                         has_text="train.loss").wait_for(timeout=10_000)
            view.locator(".mlpipe-sort-button", has_text="train.loss").click()
            view.locator("th[aria-sort='ascending'] .mlpipe-sort-button",
                         has_text="train.loss").wait_for(timeout=10_000)
            losses = [float(x) for x in view.evaluate(
                "v => [...v.querySelectorAll('.mlpipe-sweep-row td.mlpipe-sv-sorted')]"
                ".map(c => c.textContent)")]
            assert losses == sorted(losses) and len(losses) == 6
            assert view.locator(".mlpipe-sweep-row").first.get_attribute("data-best") == "true"
            assert view.locator(".mlpipe-sweep-ascending").is_checked()
            page.screenshot(path=str(IMAGES / "sweep-view.png"))

            # compare two ticked members, then all of them
            view.locator(".mlpipe-member-check").nth(0).check()
            view.locator(".mlpipe-member-check").nth(1).check()
            compare = view.locator(".mlpipe-compare-members")
            assert compare.inner_text() == "Compare 2 members"
            compare.click()
            pair = page.locator(".mlpipe-compareview")
            pair.locator(".mlpipe-cv-run").nth(1).wait_for(timeout=30_000)
            assert pair.locator(".mlpipe-cv-run").count() == 2
            page.locator(".lm-TabBar-tab", has_text=sweep.id).click()
            view.locator(".mlpipe-member-check").nth(0).uncheck()
            assert compare.inner_text() == "Compare members"
            compare.click()
            every = page.locator(".mlpipe-compareview").filter(
                has=page.locator(".mlpipe-cv-run:nth-child(7)"))
            every.locator(".mlpipe-cv-step[data-step='train']").wait_for(timeout=30_000)
            assert every.locator(".mlpipe-cv-run").count() == 6
            for name in ("lr", "rows"):
                assert every.locator(f"tr.mlpipe-cv-param[data-name='{name}']").get_attribute(
                    "data-differs") == "true"
            # members differ from the baseline in lr (params), rows (load's data: inputs)
            train = every.locator("tr.mlpipe-cv-step[data-step='train'] .mlpipe-component")
            assert set(train.all_inner_texts()) == {"params", "inputs"}
            _drawn(every.locator(".mlpipe-chart"), "rect", 6)
            page.screenshot(path=str(IMAGES / "sweep-compare.png"))
        finally:
            browser.close()
