"""Variables flow between %%mlstep steps (``--use STEP.NAME``): real kernels, real runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.errors import DefinitionError
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.model.step import VARIABLES_OUTPUT
from mlpipe_jupyter.runner.explain import explain_step
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import step_output, write_notebook

pytestmark = pytest.mark.slow

CHAIN = [
    "%%mlsetup\nimport pandas as pd",
    "%%mlstep load\n"
    "df = pd.DataFrame({'x': [3.0, None, 1.0], 'when': pd.to_datetime(['2026-01-01', "
    "'2026-01-02', '2026-01-03']).tz_localize('Europe/Paris'), 'kind': pd.Categorical(['a', "
    "'b', 'a'])}, index=pd.Index([10, 20, 30], name='row'))\n"
    "settings = {'seed': None, 'flag': True, 'name': 'café', 'nested': ((1, 2), {3: 'x'})}",
    "%%mlstep clean --use load.df\ndf = df.dropna()",
    "%%mlstep enrich --use clean.df load.settings\n"
    "df = df.assign(y=df.x * 2)\n"
    "df.attrs['source'] = settings['name']",
    "%%mlstep report --use enrich.df load.settings --output out\n"
    "import json\n"
    "(outputs.out / 'report.json').write_text(json.dumps({'rows': len(df), 'y': df.y.tolist(),"
    " 'dtypes': {c: str(t) for c, t in df.dtypes.items()}, 'index': df.index.name,"
    " 'attrs': df.attrs, 'settings': repr(settings)}))",
]


def test_a_dataframe_changed_step_by_step(store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "chain.ipynb", CHAIN)
    result = run_notebook(notebook, store=store)
    assert result.status is RunStatus.SUCCEEDED, result.failures
    import json

    report = json.loads((step_output(store, result.run_id, "report", "out") /
                         "report.json").read_text())
    assert report["rows"] == 2 and report["y"] == [6.0, 2.0]
    import pandas as pd

    when = pd.to_datetime(["2026-01-01"]).tz_localize("Europe/Paris").dtype  # unit: pandas'
    assert report["dtypes"] == {"x": "float64", "when": str(when), "kind": "category",
                                "y": "float64"}
    assert report["index"] == "row" and report["attrs"] == {"source": "café"}
    assert report["settings"] == repr({"seed": None, "flag": True, "name": "café",
                                       "nested": ((1, 2), {3: "x"})})
    # each variable is saved once, by the step that defined it last
    saved = {step: sorted(p.name for p in step_output(store, result.run_id, step,
                                                      VARIABLES_OUTPUT).iterdir())
             for step in ("load", "clean", "enrich")}
    assert saved == {"load": ["df.pandas.pkl", "manifest.json", "settings.pkl"],
                     "clean": ["df.pandas.pkl", "manifest.json"],
                     "enrich": ["df.pandas.pkl", "manifest.json"]}

    again = run_notebook(notebook, store=store)
    assert set(again.step_status.values()) == {StepStatus.REUSED}

    # editing the middle step re-runs it and what receives its df, not the first step
    edited = CHAIN[:2] + ["%%mlstep clean --use load.df\ndf = df.fillna(0)"] + CHAIN[3:]
    write_notebook(notebook, edited)
    third = run_notebook(notebook, store=store)
    assert third.step_status == {"load": StepStatus.REUSED, "clean": StepStatus.SUCCEEDED,
                                 "enrich": StepStatus.SUCCEEDED, "report": StepStatus.SUCCEEDED}
    why = explain_step(store, third.run_id, "enrich")
    assert "the variables it receives from step 'clean' changed" in "\n".join(why)


def test_undeclared_and_ambiguous_uses_are_definition_errors(
    store: Store, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "bad.ipynb", [
        "%%mlstep a\ndf = 1\nimport numpy as np",
        "%%mlstep b\nprint(df)",
        "%%mlstep c --use a.nope a.np\nx = np.zeros(1)",
    ])
    with pytest.raises(DefinitionError) as raised:
        run_notebook(notebook, store=store)
    text = str(raised.value)
    assert "cell 2, step 'b', variable df: uses 'df', which step 'a' defines: to receive it, " \
           "add `--use a.df` to this step's %%mlstep line" in text
    assert "step 'a' neither sets nor changes 'nope' at its top level (it sets or changes: df)" in text
    assert "step 'a' imports 'np': modules are not handed over" in text
    assert store.runs.list_runs() == []  # nothing ran, nothing was recorded


def test_a_value_that_cannot_be_saved_fails_its_step_naming_it(
    store: Store, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "socket.ipynb", [
        "%%mlstep open\nimport socket\nconn = socket.socket()",
        "%%mlstep use --use open.conn\nprint(conn)",
    ])
    result = run_notebook(notebook, store=store)
    assert result.step_status == {"open": StepStatus.FAILED, "use": StepStatus.SKIPPED}
    [report] = result.failures
    assert "while saving its variables for later steps" in report
    assert "'conn'" in report and "step 'open'" in report
