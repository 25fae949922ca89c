"""%mlpipe run / runs / status / why / show, with real step kernels; and the widget's state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.events import EventBus
from mlpipe_jupyter.jupyter.run_state import RunTracker
from mlpipe_jupyter.jupyter.widget import DagWidget, show_run, watch_run
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store

pytestmark = pytest.mark.slow

SETUP = "%%mlsetup\nimport pandas as pd\n"
PREPARE = (
    "%%mlstep prepare --input raw=dataset:numbers --output clean --param frac=1.0\n"
    "df = pd.read_csv(inputs.raw / 'numbers.csv').sample(frac=frac, random_state=0)\n"
    "df.to_csv(outputs.clean / 'clean.csv', index=False)\n"
)
TRAIN = (
    "%%mlstep train --input data=prepare.clean --output model\n"
    "df = pd.read_csv(inputs.data / 'clean.csv')\n"
    "(outputs.model / 'total.txt').write_text(str(int(df.x.sum())))\n"
    "context.log('total', int(df.x.sum()))\n"
)
CELLS = ["%load_ext mlpipe_jupyter", SETUP, PREPARE, TRAIN]


def statuses(widget: DagWidget) -> list[tuple[str, str]]:
    return [(s["name"], s["status"]) for s in widget.steps]


def test_run_wait_on_the_saved_notebook_then_reuse(
    shell: Any, magics: Any, store: Store, tmp_path: Path, write_notebook: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    notebook = write_notebook(tmp_path / "pipe.ipynb", CELLS)
    shell.user_ns["__session__"] = "pipe.ipynb"  # what JupyterLab's kernel is told

    result = shell.run_cell("%mlpipe run --wait")
    assert result.success, result.error_in_exec
    out = capsys.readouterr().out
    assert f"running the saved notebook {notebook}" in out
    first = magics.current.result
    assert first.ok and first.run_id in out and "succeeded in" in out
    run = store.runs.get_run(first.run_id)
    assert run.notebook == str(notebook)
    assert [(s.step, s.status.value) for s in store.runs.step_runs(run.id)] == [
        ("prepare", "succeeded"), ("train", "succeeded")]

    widget = magics.widget
    assert widget.run_id == first.run_id and widget.status == "succeeded"
    assert statuses(widget) == [("prepare", "succeeded"), ("train", "succeeded")]
    train = widget.steps[1]
    assert train["upstream"] == ["prepare"] and train["layer"] == 1
    assert train["metrics"] == {"total": 9} and train["duration"] > 0
    assert Path(train["output_notebook"]).is_file()

    assert shell.run_cell("%mlpipe run --wait").success
    second = magics.widget
    assert second.run_id != first.run_id
    assert statuses(second) == [("prepare", "reused"), ("train", "reused")]
    assert all(s["reused"] and s["reused_from"] == first.run_id for s in second.steps)
    assert second.steps[1]["metrics"] == {"total": 9}  # from the run that produced it

    capsys.readouterr()
    assert shell.run_cell("%mlpipe runs").success
    listing = capsys.readouterr().out
    assert first.run_id in listing and "2 reused" in listing
    assert shell.run_cell("%mlpipe why train").success
    assert "reused the result of run " + first.run_id in capsys.readouterr().out
    assert shell.run_cell("%mlpipe status").success
    assert "from run " + first.run_id in capsys.readouterr().out

    # an interactive downstream cell now reads the committed result of `prepare`
    assert shell.run_cell(SETUP).success
    assert shell.run_cell(TRAIN).success
    committed = store.runs.step_run(first.run_id, "prepare").result_id
    assert Path(shell.user_ns["inputs"].data) == store.results.path(committed, "clean")


def test_run_in_background_from_registered_cells(
    shell: Any, magics: Any, store: Store, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for cell in (SETUP, PREPARE, TRAIN):
        assert shell.run_cell(cell).success
    result = shell.run_cell("%mlpipe run -p frac=0.5")
    assert result.success, result.error_in_exec
    out = capsys.readouterr().out
    generated = tmp_path / ".mlpipe-interactive.ipynb"
    assert f"running the steps registered in this kernel (prepare, train), written to {generated}" in out
    assert "goes on in the background" in out
    # the kernel is free meanwhile
    assert shell.run_cell("busy = 1 + 1").success
    assert magics.current.wait(120)
    assert magics.current.result.ok
    run = store.runs.get_run(magics.current.run_id)
    assert run.notebook == str(generated) and run.params == {"frac": 0.5}
    assert magics.widget.status == "succeeded"

    capsys.readouterr()
    assert shell.run_cell(f"%mlpipe show {run.id}").success
    shown = capsys.readouterr().out
    assert f"run {run.id}: succeeded" in shown and "train: succeeded" in shown


def test_cancel_a_background_run(shell: Any, magics: Any, store: Store) -> None:
    slow = "%%mlstep nap --output out --no-run\nimport time\ntime.sleep(60)\n"
    assert shell.run_cell(slow).success
    assert shell.run_cell("%mlpipe run").success
    assert shell.run_cell("%mlpipe run").error_in_exec is not None  # one run at a time
    assert shell.run_cell("%mlpipe cancel").success
    assert magics.current.wait(60)
    assert magics.current.result.status.value == "canceled"


def test_tracker_reports_statuses_in_order(tmp_path: Path, store: Store, write_notebook: Any) -> None:
    notebook = write_notebook(tmp_path / "pipe.ipynb", CELLS)
    seen: list[dict[str, Any]] = []
    events = EventBus()
    events.subscribe(RunTracker(seen.append))
    widget = DagWidget()
    watch_run(widget, events)
    result = run_notebook(notebook, store=store, events=events)
    assert result.ok

    def history(step: str) -> list[str]:
        trail: list[str] = []
        for state in seen:
            for item in state["steps"]:
                if item["name"] == step and (not trail or trail[-1] != item["status"]):
                    trail.append(item["status"])
        return trail

    assert [s["name"] for s in seen[0]["steps"]] == ["prepare", "train"]
    assert history("prepare") == ["queued", "running", "succeeded"]
    assert history("train") == ["queued", "running", "succeeded"]
    # live state ends exactly as the store draws the same run
    assert widget.steps == show_run(store, result.run_id).steps


def test_run_a_saved_kale_notebook_then_load_its_variable(
    shell: Any, magics: Any, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`%mlpipe run` in a Kale notebook's kernel runs its tagged cells as the pipeline; the
    widget labels the edge with the variable; `%mlpipe load` brings the result back."""
    from tests.kale.helpers import kale_notebook

    kale_notebook(tmp_path / "kale.ipynb", [
        "%load_ext mlpipe_jupyter",
        ("import pandas as pd", ["imports"]),
        ("frame = pd.DataFrame({'x': [1, 2, 3]})", ["step:make"]),
        ("frame = frame.assign(y=frame.x * 10)", ["step:grow", "prev:make"]),
        ("frame['z'] = frame.y + 1", ["step:finish", "prev:grow"]),
        ("total = int(frame.z.sum())", ["step:count", "prev:finish"]),
    ])
    shell.user_ns["__session__"] = "kale.ipynb"
    result = shell.run_cell("%mlpipe run --wait")
    assert result.success, result.error_in_exec
    run = magics.current.result
    assert run.ok, run.failures
    widget = magics.widget
    assert [s["name"] for s in widget.steps] == ["make", "grow", "finish", "count"]
    assert widget.steps[1]["variables"] == {"make": ["frame"]}
    assert shell.run_cell("%mlpipe load finish.frame").success
    assert "loaded frame: pandas.DataFrame, shape (3, 3)" in capsys.readouterr().out
    assert shell.user_ns["frame"]["z"].tolist() == [11, 21, 31]


def test_a_sweep_from_the_notebook_shows_its_table_and_chart(
    shell: Any, magics: Any, store: Store, tmp_path: Path, write_notebook: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlpipe_jupyter.jupyter.sweep_widget import VEGA_LITE, SweepWidget

    write_notebook(tmp_path / "sweep.ipynb", CELLS)
    shell.user_ns["__session__"] = "sweep.ipynb"
    result = shell.run_cell("%mlpipe run --sweep frac=0.5,1.0 --max-parallel 2 --wait")
    assert result.success, result.error_in_exec
    out = capsys.readouterr().out
    sweep = magics.current.sweep_result
    assert sweep.ok and f"sweep {sweep.sweep_id} succeeded" in out
    widget = magics.widget
    assert isinstance(widget, SweepWidget) and widget.view is not None
    assert [row.status for row in widget.view.rows] == ["succeeded", "succeeded"]
    assert "★" in widget.table.value and "train.total" in widget.table.value
    assert widget.metric.value == "train.total" and widget.parameter.value == "frac"
    (chart,) = widget.chart.outputs
    assert chart["data"][VEGA_LITE]["encoding"]["x"]["title"] == "frac"

    # a bad sweep is the cell's error, and nothing runs
    runs_before = len(store.runs.list_runs(limit=100))
    bad = shell.run_cell("%mlpipe run --sweep nope=1,2")
    assert not bad.success and "nope: not a parameter" in str(bad.error_in_exec)
    assert len(store.runs.list_runs(limit=100)) == runs_before

    shown = shell.run_cell("%mlpipe sweep --sort total")
    assert shown.success, shown.error_in_exec
