"""The mlpipe sidebar and run view in a real JupyterLab, driven by headless Chromium.

Needs Debian's chromium and Python playwright (see test_browser.py), and the built
labextension (``pip install -e .`` or ``jlpm build`` builds it into
mlpipe_jupyter/labextension). Screenshots are kept in test-artifacts/. The run view's
layout (fit, clipping, dark theme, a 200-step run) is checked in test_runview_browser.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.model.values import python_literal
from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook as write_notebook_file
from tests.jupyter.lab import BUILT, CHROMIUM, mlpipe_lab
from tests.value_probe import PROBE_STEP, assert_arrived, probe_notebook

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

PIPE = [
    "%%mlstep make --output data --param n=3\nimport time\ntime.sleep(2)\n"
    "(outputs.data / 'n.txt').write_text(str(n))\nprint('made', n)\n",
    "%%mlstep count --input d=make.data --output report\n"
    "context.log('n', int((inputs.d / 'n.txt').read_text()))\n",
]
SLOW = ["%%mlstep wait --output out\nimport time\nprint('waiting', flush=True)\ntime.sleep(300)\n"]


@pytest.fixture
def lab(store: Store, tmp_path: Path, write_notebook: Any) -> Iterator[str]:
    """JupyterLab with this checkout's server extension and panel; yields the lab URL."""
    write_notebook(tmp_path / "pipe.ipynb", PIPE)
    write_notebook(tmp_path / "slow.ipynb", SLOW)
    with mlpipe_lab(tmp_path) as url:
        yield url


def _cli_run(folder: Path, notebook: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlpipe_jupyter", "run", notebook, "-q"], cwd=folder,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def test_panel_follows_cli_runs_opens_logs_and_cancels(
    lab: str, store: Store, tmp_path: Path,
) -> None:
    from playwright import sync_api as playwright  # the `test` extra installs it

    assert Path(CHROMIUM).exists(), "apt-get install -y chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    runs: list[subprocess.Popen[bytes]] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(lab)
            tab = page.locator(".lm-TabBar-tab[data-id='mlpipe-panel']")
            tab.wait_for(timeout=90_000)
            tab.click()
            panel = page.locator("#mlpipe-panel")
            panel.locator("text=No runs yet").wait_for(timeout=30_000)

            # a run started from the CLI shows up, and its status follows live to succeeded
            runs.append(_cli_run(tmp_path, "pipe.ipynb"))
            item = panel.locator(".mlpipe-run-item").first
            item.wait_for(timeout=60_000)
            panel.locator(".mlpipe-run-item[data-status='running']").wait_for(timeout=60_000)
            first = item.get_attribute("data-run-id")
            item.click()  # opens the run in the main area
            view = page.locator(f".mlpipe-runview[data-run-id='{first}']")
            view.locator(".mlpipe-step[data-step='make']").wait_for(timeout=30_000)
            panel.locator(".mlpipe-run-item[data-status='succeeded']").wait_for(timeout=120_000)
            assert runs[0].wait(60) == 0
            view.locator(".mlpipe-step[data-step='count'][data-status='succeeded']").wait_for(
                timeout=30_000)
            assert view.get_attribute("data-status") == "succeeded"

            # a step's details and log
            view.locator(".mlpipe-step[data-step='make']").click()
            detail = view.locator(".mlpipe-rv-step[data-step='make']")
            detail.wait_for(timeout=10_000)
            assert "Step make" in detail.inner_text() and "succeeded" in detail.inner_text()
            view.locator(".mlpipe-log", has_text="made 3").wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "panel-succeeded.png"))

            # a long run, canceled from the panel
            runs.append(_cli_run(tmp_path, "slow.ipynb"))
            running = panel.locator(".mlpipe-run-item[data-status='running']")
            running.wait_for(timeout=60_000)
            second = running.get_attribute("data-run-id")
            running.click()
            view = page.locator(f".mlpipe-runview[data-run-id='{second}']")
            view.locator(".mlpipe-step[data-step='wait'][data-status='running']").wait_for(
                timeout=90_000)
            view.locator(".mlpipe-step[data-step='wait']").click()
            view.locator(".mlpipe-log", has_text="waiting").wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "panel-running.png"))
            view.locator(".mlpipe-cancel").click()
            panel.locator(".mlpipe-run-item[data-status='canceled']").wait_for(timeout=60_000)
            view.locator(".mlpipe-run-state", has_text="canceled").wait_for(timeout=30_000)
            assert runs[1].wait(60) == 130
            page.screenshot(path=str(ARTIFACTS / "panel-canceled.png"))
        finally:
            browser.close()
            for run in runs:
                if run.poll() is None:
                    run.kill()
    latest = store.runs.list_runs(limit=2)
    assert [r.status.value for r in latest] == ["canceled", "succeeded"]


def test_run_as_pipeline_from_the_notebook_toolbar(lab: str, store: Store) -> None:
    from playwright import sync_api as playwright

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(lab.replace("/lab?", "/lab/tree/pipe.ipynb?"))
            page.locator("text=/\\bIdle\\b/ >> visible=true").first.wait_for(timeout=90_000)
            select = page.locator(".jp-Dialog button:has-text('Select')")
            if select.count():
                select.first.click()
            page.locator(".mlpipe-run-button").first.click()
            dialog = page.locator(".jp-Dialog")
            dialog.locator("input[name='n']").fill("7")
            dialog.locator("button:has-text('Run')").click()
            panel = page.locator("#mlpipe-panel")
            panel.locator(".mlpipe-run-item[data-status='succeeded']").wait_for(timeout=120_000)
            # the run opened in the main area by itself
            page.locator(".mlpipe-runview .mlpipe-step[data-step='count'][data-status='succeeded']"
                         ).wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "panel-run-from-toolbar.png"))
        finally:
            browser.close()
    run = store.runs.get_run("latest")
    assert run.status.value == "succeeded" and run.params == {"n": 7}


def test_run_dialog_shows_and_sends_python_values(
    lab: str, store: Store, tmp_path: Path,
) -> None:
    """The dialog shows defaults as -p texts (True, (1, 2), None, a multi-line string), sends
    only what was changed, and the step sees Python values of the defaults' types."""
    from playwright import sync_api as playwright

    label = 'say "hi"\nthen go'
    probe_notebook(tmp_path / "values.ipynb", {
        "flag": "True", "shape": "(1, 2)", "seed": "None", "label": python_literal(label)})
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(lab.replace("/lab?", "/lab/tree/values.ipynb?"))
            page.locator("text=/\\bIdle\\b/ >> visible=true").first.wait_for(timeout=90_000)
            select = page.locator(".jp-Dialog button:has-text('Select')")
            if select.count():
                select.first.click()
            page.locator(".mlpipe-run-button").first.click()
            dialog = page.locator(".jp-Dialog .mlpipe-parameters")
            dialog.wait_for(timeout=30_000)
            flag = dialog.locator("[name='flag']")
            assert flag.input_value() == "True"  # not JSON's true
            assert dialog.locator("[name='shape']").input_value() == "(1, 2)"  # not [1,2]
            assert dialog.locator("[name='seed']").input_value() == "None"  # not null
            assert dialog.locator("textarea[name='label']").input_value() == label
            flag.fill("false")
            page.screenshot(path=str(ARTIFACTS / "panel-run-dialog-values.png"))
            page.locator(".jp-Dialog button:has-text('Run')").click()
            panel = page.locator("#mlpipe-panel")
            panel.locator(".mlpipe-run-item[data-status='succeeded']").wait_for(timeout=120_000)
            view = page.locator(".mlpipe-runview[data-status='succeeded']")
            view.wait_for(timeout=30_000)
            params = view.locator(".mlpipe-params tr")
            params.first.wait_for(timeout=30_000)
            # only what was changed, as the -p text
            assert [params.nth(i).inner_text().split() for i in range(params.count())] == [
                ["flag", "False"]]
            view.locator(f".mlpipe-step[data-step='{PROBE_STEP}'][data-status='succeeded']"
                         ).click()
            view.locator(f".mlpipe-rv-step[data-step='{PROBE_STEP}']").wait_for(timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "panel-run-detail-values.png"))
        finally:
            browser.close()
    run = store.runs.get_run("latest")
    assert run.status.value == "succeeded" and run.params == {"flag": False}
    assert_arrived(store, run.id, {"flag": False, "shape": (1, 2), "seed": None, "label": label})


def test_built_panel_is_compatible_with_this_jupyterlab(tmp_path: Path) -> None:
    """The shared @jupyterlab packages the panel was built against match the installed
    JupyterLab (otherwise JupyterLab disables it with a warning)."""
    (tmp_path / "labextensions").mkdir()
    (tmp_path / "labextensions" / "mlpipe-jupyter").symlink_to(BUILT)
    listing = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list", "--verbose"],
        env={**os.environ, "JUPYTER_PATH": str(tmp_path)}, capture_output=True, text=True,
        check=True,
    )
    text = listing.stdout + listing.stderr
    line = next(row for row in text.splitlines() if "mlpipe-jupyter v" in row)
    assert "OK" in line and "not compatible" not in text, text


def test_panel_shows_published_pipelines_and_pauses_a_schedule(
    lab: str, store: Store, tmp_path: Path,
) -> None:
    from playwright import sync_api as playwright

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for command in (["publish", "pipe.ipynb", "--name", "pipe"],
                    ["schedule", "create", "pipe", "--cron", "0 6 * * *", "--name", "daily"]):
        subprocess.run([sys.executable, "-m", "mlpipe_jupyter", *command], cwd=tmp_path,
                       env=env, check=True, capture_output=True)
    [schedule] = store.workspace.query("SELECT * FROM schedules")
    assert schedule["name"] == "daily" and not schedule["paused"]
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(lab)
            tab = page.locator(".lm-TabBar-tab[data-id='mlpipe-panel']")
            tab.wait_for(timeout=90_000)
            tab.click()
            panel = page.locator("#mlpipe-panel")
            item = panel.locator(".mlpipe-published-item[data-name='pipe']")
            item.wait_for(timeout=30_000)
            assert "v1" in item.inner_text()
            row = panel.locator(".mlpipe-schedule[data-schedule='daily'][data-paused='false']")
            row.wait_for(timeout=30_000)
            next_fire = row.locator(".mlpipe-schedule-next").inner_text()
            assert next_fire != "paused" and any(c.isdigit() for c in next_fire), next_fire
            assert row.locator(".mlpipe-schedule-last").inner_text() == "—"
            pause_box = row.locator(".mlpipe-schedule-pause").bounding_box()
            panel_box = panel.bounding_box()
            assert pause_box and panel_box  # the button is whole inside the ~250 px sidebar
            assert pause_box["x"] + pause_box["width"] <= panel_box["x"] + panel_box["width"]
            page.screenshot(path=str(ARTIFACTS / "panel-published.png"))

            row.locator(".mlpipe-schedule-pause").click()
            paused = panel.locator(".mlpipe-schedule[data-schedule='daily'][data-paused='true']")
            paused.wait_for(timeout=30_000)
            assert paused.locator(".mlpipe-schedule-next").inner_text() == "paused"
            paused.locator(".mlpipe-schedule-resume").wait_for(timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "panel-schedule-paused.png"))
        finally:
            browser.close()
    [schedule] = store.workspace.query("SELECT * FROM schedules")
    assert schedule["paused"] == 1


FLOW = [
    "%%mlsetup\nimport numpy as np\n",
    "%%mlstep load\nraw = np.array([3.0, np.nan, 1.0])\nsettings = {'seed': 7}\n",
    "%%mlstep clean --use load.raw\n"
    "df = raw[~np.isnan(raw)]\narr = df * 2\nfeature_matrix = np.vstack([df, arr])\n",
    "%%mlstep report --use clean.df clean.arr clean.feature_matrix load.settings "
    "--output out\n"
    "(outputs.out / 'n.txt').write_text(str(len(df) + feature_matrix.shape[1]))\n",
]


def test_the_dag_names_the_variables_along_its_edges(lab: str, store: Store,
                                                     tmp_path: Path) -> None:
    """A --use pipeline: each edge that carries variables is labelled with their names (cut
    with … when long, all of them in its tooltip), the step detail lists what a step
    receives, and mlpipe's own variable folders show nowhere."""
    from playwright import sync_api as playwright

    write_notebook_file(tmp_path / "flow.ipynb", FLOW)
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(lab)
            tab = page.locator(".lm-TabBar-tab[data-id='mlpipe-panel']")
            tab.wait_for(timeout=90_000)
            tab.click()
            panel = page.locator("#mlpipe-panel")
            panel.locator("text=No runs yet").wait_for(timeout=30_000)

            assert _cli_run(tmp_path, "flow.ipynb").wait(180) == 0
            panel.locator(".mlpipe-run-item[data-status='succeeded']").first.click()
            view = page.locator(".mlpipe-runview")
            view.locator(".mlpipe-step[data-step='report'][data-status='succeeded']").wait_for(
                timeout=30_000)
            view.locator(".mlpipe-dag-view").screenshot(
                path=str(ARTIFACTS / "panel-variables-dag-closeup.png"))
            labels = view.locator(".mlpipe-edge-label")
            texts = {(labels.nth(i).get_attribute("data-from"),
                      labels.nth(i).get_attribute("data-to")): labels.nth(i)
                     for i in range(labels.count())}
            assert set(texts) == {("load", "clean"), ("clean", "report"), ("load", "report")}
            assert texts["load", "clean"].locator("text").text_content() == "raw"
            assert texts["load", "report"].locator("text").text_content() == "settings"
            long = texts["clean", "report"]
            shown = long.locator("text").text_content() or ""
            assert shown.startswith("df, arr, feat") and shown.endswith("…")
            assert long.locator("title").text_content() == \
                "df, arr, feature_matrix (from clean to report)"
            for label in texts.values():
                label.scroll_into_view_if_needed()
                assert label.is_visible()
            # no label touches a step; labels side by side are a line apart (the boxes are
            # the font's whole line boxes, taller than its glyphs)
            boxes = [label.locator("text").bounding_box() for label in texts.values()]
            steps = [view.locator(f".mlpipe-step[data-step='{name}']").bounding_box()
                     for name in ("load", "clean", "report")]
            font = float(texts["load", "clean"].locator("text").evaluate(
                "node => parseFloat(getComputedStyle(node).fontSize)"))
            assert 9 <= font <= 12  # --jp-ui-font-size0
            for i, one in enumerate(boxes):
                assert not any(_overlap(one, step) for step in steps), (one, steps)
                for other in boxes[i + 1:]:
                    assert abs(one["y"] - other["y"]) >= font or not _overlap(one, other)

            view.locator(".mlpipe-step[data-step='report']").click()
            detail = view.locator(".mlpipe-rv-step[data-step='report']")
            detail.wait_for(timeout=10_000)
            detail.locator(".mlpipe-tab-details").click()
            receives = detail.locator("tr", has_text="receives").locator("td").inner_text()
            assert receives == ("df (from clean), arr (from clean), feature_matrix (from "
                                "clean), settings (from load)")
            assert "mlpipe_variables" not in view.inner_text()
            assert "mlpipe_variables" not in panel.inner_text()
            page.screenshot(path=str(ARTIFACTS / "panel-variables-dag.png"))
        finally:
            browser.close()


def _overlap(a: Any, b: Any) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def test_the_run_detail_lists_its_notifications(lab: str, store: Store, tmp_path: Path) -> None:
    """A run whose webhook is down: the run succeeded, and its detail shows the failed
    notification with its attempts and error."""
    from playwright import sync_api as playwright

    from tests.conftest import free_port

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for key, value in (("notify-attempts", "1"), ("notify-timeout", "2")):
        subprocess.run([sys.executable, "-m", "mlpipe_jupyter", "config", "set", key, value],
                       cwd=tmp_path, env=env, check=True, capture_output=True)
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(lab)
            tab = page.locator(".lm-TabBar-tab[data-id='mlpipe-panel']")
            tab.wait_for(timeout=90_000)
            tab.click()
            panel = page.locator("#mlpipe-panel")
            panel.locator("text=No runs yet").wait_for(timeout=30_000)
            done = subprocess.run(
                [sys.executable, "-m", "mlpipe_jupyter", "run", "pipe.ipynb", "-q",
                 "--notify", f"webhook:http://127.0.0.1:{free_port()}/hook",
                 "--notify-on", "all"], cwd=tmp_path, env=env, capture_output=True,
                timeout=180)
            assert done.returncode == 0, done.stderr
            panel.locator(".mlpipe-run-item[data-status='succeeded']").first.click()
            failed = page.locator(".mlpipe-runview .mlpipe-notification-failed")
            failed.wait_for(timeout=30_000)
            text = failed.inner_text()
            assert "webhook:http://127.0.0.1:" in text, text
            assert failed.is_visible()
            page.screenshot(path=str(ARTIFACTS / "panel-notifications.png"))
        finally:
            browser.close()
