"""Publishing, triggering and scheduling from JupyterLab, and the datasets view, in headless
Chromium at 1400x900 against a real ``jupyter lab`` and a real ``mlpipe scheduler``.

End to end: publish the notebook from its toolbar, trigger the published version with a
parameter and see its run; a schedule form with a bad cron shows the error at the cron
field; an every-N schedule made in the form fires (the scheduler runs as a subprocess) and
its run appears; edit, pause, resume and delete it. The datasets view lists versions with
the run and step that produced each and previews a table's first rows. Screenshots go to
docs/images/, which docs/jupyterlab.md embeds.
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
from tests.jupyter.lab import CHROMIUM, dismiss_news, mlpipe_lab

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "docs" / "images"
VIEWPORT = {"width": 1400, "height": 900}

PIPE = [
    "%%mlstep make --output data --param n=3 --param label='nightly'\n"
    "(outputs.data / 'n.txt').write_text(str(n))\nprint('made', n, label)\n",
    "%%mlstep count --input d=make.data --output report\n"
    "context.log('n', int((inputs.d / 'n.txt').read_text()))\n",
]
LINEAGE = [
    "%%mlstep clean --input raw=dataset:flowers --output table=dataset:clean_flowers\n"
    "import pandas as pd\n"
    "frame = pd.read_csv(inputs.raw / 'flowers.csv')\n"
    "frame[frame.petal > 1].to_csv(outputs.table / 'clean.csv', index=False)\n",
    "%%mlstep count --input t=clean.table --output report\n"
    "(outputs.report / 'n.txt').write_text('ok')\n",
]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture
def lab(store: Store, tmp_path: Path) -> Iterator[str]:
    write_notebook(tmp_path / "pipe.ipynb", PIPE)
    with mlpipe_lab(tmp_path) as url:
        yield url


@pytest.fixture
def scheduler(lab: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``mlpipe scheduler`` on the lab's workspace, as a user would run it."""
    log = (tmp_path / "scheduler.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_jupyter", "scheduler", "--tick", "0.3"], cwd=tmp_path,
        env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _browser(p: Any) -> Any:
    assert Path(CHROMIUM).exists(), "apt-get install -y chromium"
    return p.chromium.launch(executable_path=CHROMIUM, headless=True)


def _open_notebook(page: Any, lab: str, name: str) -> None:
    page.goto(lab.replace("/lab?", f"/lab/tree/{name}?"))
    page.locator("text=/\\bIdle\\b/ >> visible=true").first.wait_for(timeout=90_000)
    select = page.locator(".jp-Dialog button:has-text('Select')")
    if select.count():
        select.first.click()
    dismiss_news(page)


def _theme(page: Any, theme: str) -> None:
    """Switch JupyterLab's theme with its own command and wait until it applies."""
    page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', "
                  f"{{theme: '{theme}'}})")
    light = "false" if "Dark" in theme else "true"
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{light}'", timeout=30_000)
    page.wait_for_timeout(500)  # the theme's stylesheet applies


def test_publish_trigger_and_schedule_from_the_ui(
    lab: str, store: Store, tmp_path: Path, scheduler: subprocess.Popen[bytes],
) -> None:
    from playwright import sync_api as playwright

    IMAGES.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            _open_notebook(page, lab, "pipe.ipynb")

            # publish from the notebook's toolbar: name and description
            page.locator(".mlpipe-publish-button").first.click()
            dialog = page.locator(".jp-Dialog .mlpipe-publish-form")
            dialog.wait_for(timeout=30_000)
            name = dialog.locator(".mlpipe-field-name input")
            assert name.input_value() == "pipe"  # from the file name
            name.fill("bad name!")
            dialog.locator(".mlpipe-field-description textarea").fill("count to n, nightly")
            page.locator(".jp-Dialog button:has-text('Publish')").click()
            # refused: the dialog comes back with the problem at the name field
            error = page.locator(".jp-Dialog .mlpipe-field-name .mlpipe-field-error")
            error.wait_for(timeout=30_000)
            assert "is not valid" in error.inner_text()
            assert page.locator(".jp-Dialog .mlpipe-field-description textarea").input_value() \
                == "count to n, nightly"
            page.locator(".jp-Dialog .mlpipe-field-name input").fill("pipe")
            page.screenshot(path=str(IMAGES / "publish-dialog.png"))
            page.locator(".jp-Dialog button:has-text('Publish')").click()

            # the published view opens at the pipeline: v1, the default
            view = page.locator(".mlpipe-pubview")
            version = view.locator(".mlpipe-pv-pipeline[data-name='pipe'] "
                                   ".mlpipe-version[data-version='1']")
            version.wait_for(timeout=30_000)
            assert "default" in version.inner_text()
            assert "count to n, nightly" in version.inner_text()
            published = store.published.get("pipe")
            assert published.version == 1 and published.description == "count to n, nightly"

            # trigger it with a parameter: the dialog is prefilled with the defaults
            version.locator(".mlpipe-trigger").click()
            trigger = page.locator(".jp-Dialog .mlpipe-trigger-form")
            trigger.wait_for(timeout=30_000)
            assert trigger.locator("input[name='n']").input_value() == "3"
            assert trigger.locator("input[name='label']").input_value() == "nightly"
            trigger.locator("input[name='n']").fill("many")
            page.locator(".jp-Dialog button:has-text('Trigger')").click()
            bad = page.locator(".jp-Dialog .mlpipe-parameters .mlpipe-field-error",
                               has_text="parameter 'n'")
            bad.wait_for(timeout=30_000)  # the problem at the parameter's input
            page.locator(".jp-Dialog input[name='n']").fill("5")
            page.screenshot(path=str(IMAGES / "trigger-dialog.png"))
            page.locator(".jp-Dialog button:has-text('Trigger')").click()
            # the run opens once the detached process has recorded it
            run_view = page.locator(".mlpipe-runview[data-status='succeeded']")
            run_view.wait_for(timeout=120_000)
            triggered = store.runs.get_run(run_view.get_attribute("data-run-id") or "")
            assert triggered.published == "pipe@v1" and triggered.params == {"n": 5}

            # a schedule with a bad cron: the error shows at the cron field
            page.locator(".lm-TabBar-tab", has_text="Published pipelines").click()
            view.locator(".mlpipe-new-schedule").click()
            form = view.locator(".mlpipe-schedule-form")
            form.wait_for(timeout=10_000)
            form.locator(".mlpipe-field-trigger select").select_option("cron")
            form.locator(".mlpipe-field-cron input").fill("61 * * * *")
            form.locator(".mlpipe-field-timezone input").fill("Europe/Paris")
            form.locator(".mlpipe-form-save").click()
            cron_error = form.locator(".mlpipe-field-cron .mlpipe-field-error")
            cron_error.wait_for(timeout=10_000)
            assert "minute 61 is out of range 0-59" in cron_error.inner_text()
            cron_input = form.locator(".mlpipe-field-cron input")
            assert cron_input.get_attribute("aria-invalid") == "true"
            assert cron_input.evaluate("i => document.activeElement === i")  # focused
            assert form.locator(".mlpipe-field-timezone .mlpipe-field-error").inner_text() == ""
            # (playwright scrolled the form to each field it filled: the top for the docs)
            view.locator(".mlpipe-pv-form").evaluate("f => { f.scrollTop = 0; }")
            assert cron_error.is_visible()
            page.screenshot(path=str(IMAGES / "schedule-form-error.png"))
            assert not store.workspace.query("SELECT * FROM schedules")

            # an every-N schedule with a parameter and policies; the scheduler fires it
            form.locator(".mlpipe-field-trigger select").select_option("every")
            form.locator(".mlpipe-field-every input").fill("5")
            form.locator(".mlpipe-field-every select").select_option("s")
            form.locator(".mlpipe-field-name input").fill("often")
            form.locator("input[name='n']").fill("7")
            form.locator(".mlpipe-field-retries input").fill("1")
            form.locator(".mlpipe-field-timeout input").fill("10m")
            form.locator(".mlpipe-form-save").click()
            row = view.locator(".mlpipe-schedule-row[data-schedule='often']")
            row.wait_for(timeout=30_000)
            assert form.count() == 0  # the form closed
            assert row.locator(".mlpipe-next-time").count() == 3
            assert "every 5s" in row.inner_text() and "n=7" in row.inner_text()
            last_run = row.locator(".mlpipe-last-run")
            last_run.wait_for(timeout=90_000)  # it fired, and its run is linked
            row.locator(".mlpipe-last-status", has_text="succeeded").wait_for(timeout=120_000)
            page.screenshot(path=str(IMAGES / "published-view.png"))
            fired = last_run.inner_text()
            run = store.runs.get_run(fired)
            assert run.options.get("schedule") == "often" and run.params == {"n": 7}
            # the fired run appears in the sidebar and opens in its view
            page.locator(".lm-TabBar-tab[data-id='mlpipe-panel']").click()
            page.locator(f"#mlpipe-panel .mlpipe-run-item[data-run-id='{fired}']").wait_for(
                timeout=30_000)
            last_run.click()
            page.locator(f".mlpipe-runview[data-run-id='{fired}']").wait_for(timeout=30_000)

            # pause and resume
            page.locator(".lm-TabBar-tab", has_text="Published pipelines").click()
            row.locator(".mlpipe-schedule-pause").click()
            paused = view.locator(".mlpipe-schedule-row[data-schedule='often'][data-paused='true']")
            paused.wait_for(timeout=30_000)
            assert "paused" in paused.locator(".mlpipe-next-times").inner_text()
            assert store.schedules.find("often").paused
            paused.locator(".mlpipe-schedule-resume").click()
            view.locator(".mlpipe-schedule-row[data-schedule='often'][data-paused='false']"
                         ).wait_for(timeout=30_000)

            # edit: the form is filled from the schedule; saving replaces it (same name)
            old_id = store.schedules.find("often").id
            row.locator(".mlpipe-schedule-edit").click()
            form.wait_for(timeout=10_000)
            assert form.locator(".mlpipe-replace-note").count() == 1
            assert form.locator(".mlpipe-field-every input").input_value() == "5"
            assert form.locator("input[name='n']").input_value() == "7"
            assert form.locator(".mlpipe-field-retries input").input_value() == "1"
            assert form.locator(".mlpipe-field-timeout input").input_value() == "10m"
            # the dark theme: the form and the tables follow JupyterLab's colours
            _theme(page, "JupyterLab Dark")
            colours = view.evaluate("""(v) => {
                const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
                const input = v.querySelector('.mlpipe-field-every input');
                return {view: rgb(getComputedStyle(v).backgroundColor),
                        input: rgb(getComputedStyle(input).backgroundColor),
                        text: rgb(getComputedStyle(input).color),
                        cell: rgb(getComputedStyle(v.querySelector('.mlpipe-grid td')).color)};
            }""")
            luminance = {k: sum(c) / 3 / 255 for k, c in colours.items()}
            assert luminance["view"] < 0.25 and luminance["input"] < 0.35, colours
            assert luminance["text"] > 0.6 and luminance["cell"] > 0.6, colours
            page.screenshot(path=str(IMAGES / "schedule-form-dark.png"))
            _theme(page, "JupyterLab Light")
            form.locator(".mlpipe-field-every input").fill("2")
            form.locator(".mlpipe-field-every select").select_option("h")
            form.locator(".mlpipe-form-save").click()
            view.locator(".mlpipe-schedule-row[data-schedule='often']",
                         has_text="every 2h").wait_for(timeout=30_000)
            edited = store.schedules.find("often")
            assert edited.id != old_id and edited.every_seconds == 7200
            assert edited.params == {"n": "7"} and edited.max_retries == 1

            # delete, after confirming
            row.locator(".mlpipe-schedule-delete").click()
            page.locator(".jp-Dialog button:has-text('Delete')").click()
            row.wait_for(state="detached", timeout=30_000)
            assert store.schedules.find("often") is None
        finally:
            browser.close()


def test_the_datasets_view(lab: str, store: Store, tmp_path: Path) -> None:
    """Datasets with their versions: the run and step that produced each (a link to its
    run view), size and files, and the first rows of a tabular one."""
    from playwright import sync_api as playwright

    source = tmp_path / "flowers"
    source.mkdir()
    rows = ["name,petal,sepal,colour"] + [
        f"flower_{i},{0.5 + i * 0.25:.2f},{3 + i * 0.1:.1f},{['red', 'blue', ''][i % 3]}"
        for i in range(30)]
    (source / "flowers.csv").write_text("\n".join(rows) + "\n")
    store.datasets.register("flowers", source, tabular=True, description="field notes")
    write_notebook(tmp_path / "lineage.ipynb", LINEAGE)
    done = subprocess.run([sys.executable, "-m", "mlpipe_jupyter", "run", "lineage.ipynb", "-q"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run_id = store.runs.get_run("latest").id
    IMAGES.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(lab)
            tab = page.locator(".lm-TabBar-tab[data-id='mlpipe-panel']")
            tab.wait_for(timeout=90_000)
            if "lm-mod-current" not in (tab.get_attribute("class") or ""):
                tab.click()
            dismiss_news(page)
            page.locator("#mlpipe-panel .mlpipe-open-datasets").click()
            view = page.locator(".mlpipe-dsview")
            items = view.locator(".mlpipe-ds-item")
            items.first.wait_for(timeout=30_000)
            # by name (the fixture's store registers "numbers" too)
            assert [items.nth(i).get_attribute("data-dataset") for i in range(items.count())] \
                == ["clean_flowers", "flowers", "numbers"]

            # the produced dataset: its version names the run and step; a table preview
            view.locator(".mlpipe-ds-item[data-dataset='clean_flowers']").click()
            version = view.locator(".mlpipe-ds-version[data-version='1']")
            version.wait_for(timeout=30_000)
            producer = version.locator(".mlpipe-ds-producer")
            assert run_id in producer.inner_text() and "step clean" in producer.inner_text()
            assert "output table" in producer.inner_text()
            preview = view.locator(".mlpipe-ds-preview[data-ref='clean_flowers@v1']")
            preview.wait_for(timeout=30_000)
            headers = preview.locator(".mlpipe-ds-rows thead th")
            assert [headers.nth(i).locator("div").first.inner_text()
                    for i in range(headers.count())] == ["name", "petal", "sepal", "colour"]
            body = preview.locator(".mlpipe-ds-rows tbody tr")
            assert body.count() == 20  # the first rows
            first = body.first.locator("td")
            assert first.nth(0).inner_text() == "flower_3"  # petal > 1: from flower_3 on
            assert "clean.csv" in preview.locator(".mlpipe-ds-files").inner_text()
            page.screenshot(path=str(IMAGES / "datasets-view.png"))

            # a version registered by hand, selected with the keyboard
            flowers = view.locator(".mlpipe-ds-item[data-dataset='flowers']")
            flowers.focus()
            page.keyboard.press("Enter")
            hand = view.locator(".mlpipe-ds-version[data-version='1'] .mlpipe-ds-producer",
                                has_text="registered by hand")
            hand.wait_for(timeout=30_000)
            assert "field notes" in view.locator(".mlpipe-ds-version[data-version='1']").inner_text()
            view.locator(".mlpipe-ds-preview[data-ref='flowers@v1'] .mlpipe-ds-rows td",
                         has_text="—").first.wait_for(timeout=30_000)  # a missing value

            # the producer's link opens its run view, whose lineage links back here
            view.locator(".mlpipe-ds-item[data-dataset='clean_flowers']").click()
            view.locator(".mlpipe-ds-run").click()
            run_view = page.locator(f".mlpipe-runview[data-run-id='{run_id}']")
            run_view.wait_for(timeout=30_000)
            link = run_view.locator(".mlpipe-dataset-link", has_text="flowers@v1").first
            link.wait_for(timeout=30_000)
            link.click()
            view.locator(".mlpipe-ds-preview[data-ref='flowers@v1']").wait_for(timeout=30_000)
            assert view.locator(".mlpipe-ds-item.mlpipe-selected").get_attribute(
                "data-dataset") == "flowers"
        finally:
            browser.close()
