"""Variables flow between the steps of a Kale notebook, run unchanged by mlpipe (real kernels)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.model.step import VARIABLES_OUTPUT
from mlpipe_jupyter.notebook import load_pipeline
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import run_cli, step_output
from tests.kale.helpers import kale_notebook
from tests.kale.zoo import ALPHAS, MODELS, zoo_notebook

pytestmark = pytest.mark.slow


def run_metrics(store: Store, run_id: str) -> dict[str, Any]:
    """Every metric of a run, by name (each pipeline metric is logged by one step)."""
    found: dict[str, Any] = {}
    for record in store.runs.step_runs(run_id):
        source = record.reused_from or run_id
        for metric in store.runs.metrics(source, record.step):
            found[metric["name"]] = metric["value"]
    return found


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics with the summary read back (a set's repr depends on the hash seed)."""
    return {**metrics, "summary": ast.literal_eval(metrics["summary"])}


def assert_zoo_results(metrics: dict[str, Any]) -> None:
    """What the zoo must compute wherever it runs."""
    assert set(metrics) == {"best", "best_error", "summary"}
    assert metrics["best"] in {f"ridge_{i}" for i in range(MODELS)}
    assert 0 < metrics["best_error"] < 0.1  # the noise is 0.1: the ridge fits well
    summary = ast.literal_eval(metrics["summary"])
    assert summary == {"title": "zoo ☕ café", "shape": (2, 3), "label": None,
                       "tags": {"a", "b"}, "huge": 10**30, "one": "one", "noisy": True}
    assert type(summary["shape"]) is tuple and type(summary["tags"]) is set


def test_the_zoo_runs_hands_variables_over_and_is_reused(
    store: Store, workspace_dir: Path
) -> None:
    notebook = zoo_notebook(workspace_dir / "zoo.ipynb")
    pipeline = load_pipeline(notebook)
    flows = {(f.producer, f.consumer, f.name) for f in pipeline.flows}
    # the chain: split receives raw as clean left it, not as load made it
    assert ("clean", "split", "raw") in flows and ("load", "split", "raw") not in flows
    assert ("load", "clean", "raw") in flows
    # the fan-out and the join
    for index in range(MODELS):
        assert {("split", f"ridge_{index}", "train"), ("split", f"ridge_{index}", "test"),
                (f"ridge_{index}", "pick", f"error_{index}")} <= flows
    # classes and functions of the functions cell are re-run in each step, not handed over
    assert not any(name in {"Ridge", "mse", "FEATURES", "np", "pd"} for *_, name in flows)

    result = run_notebook(notebook, store=store, max_parallel=2)
    assert result.status is RunStatus.SUCCEEDED, result.failures
    assert store.runs.get_run(result.run_id).experiment == "zoo"
    metrics = run_metrics(store, result.run_id)
    assert_zoo_results(metrics)
    # train and test are stored once, by split, for the five steps that read them
    saved = step_output(store, result.run_id, "split", VARIABLES_OUTPUT)
    assert sorted(p.name for p in saved.iterdir()) == [
        "manifest.json", "test.pandas.pkl", "train.pandas.pkl"]

    again = run_notebook(notebook, store=store)
    assert set(again.step_status.values()) == {StepStatus.REUSED}

    # a parameter only `load` uses: everything below it runs again (new data), with
    # the same shape of results
    changed = run_notebook(notebook, {"seed": "8"}, store=store, max_parallel=2)
    assert changed.step_status["load"] is StepStatus.SUCCEEDED
    assert_zoo_results(run_metrics(store, changed.run_id))
    assert run_metrics(store, changed.run_id)["best_error"] != metrics["best_error"]


def test_the_converted_zoo_gives_the_same_results(store: Store, workspace_dir: Path) -> None:
    notebook = zoo_notebook(workspace_dir / "zoo.ipynb")
    converted = workspace_dir / "zoo_mlstep.ipynb"
    done = run_cli("convert", str(notebook), "-o", str(converted), cwd=workspace_dir)
    assert done.returncode == 0, done.stderr
    text = converted.read_text()
    assert "--use split.train split.test" in text or "--use split.test split.train" in text
    kale = run_notebook(notebook, store=store, max_parallel=2)
    mlstep = run_notebook(converted, store=store, max_parallel=2)
    assert kale.ok and mlstep.ok, (kale.failures, mlstep.failures)
    assert comparable(run_metrics(store, mlstep.run_id)) == \
        comparable(run_metrics(store, kale.run_id))
    checked = run_cli("check", str(converted), cwd=workspace_dir)
    assert "variables: train from split; test from split" in checked.stdout or \
        "variables: test from split; train from split" in checked.stdout


def test_ambiguous_and_unreachable_definitions_are_errors_before_anything_runs(
    store: Store, workspace_dir: Path
) -> None:
    notebook = kale_notebook(workspace_dir / "bad.ipynb", [
        ("df = 1", ["step:left"]),
        ("df = 2", ["step:right"]),
        ("print(df)", ["step:join", "prev:left", "prev:right"]),
        ("model = 3", ["step:lonely"]),
        ("print(model)", ["step:uses_model", "prev:left"]),
    ])
    done = run_cli("run", str(notebook), cwd=workspace_dir)
    assert done.returncode == 2
    assert "cell 3, step 'join', variable df: 'df' is ambiguous: steps 'left' and 'right' " \
           "both set or change it" in done.stderr
    assert "cell 5, step 'uses_model', variable model: uses 'model', which step 'lonely' " \
           "defines, but this step does not run after it: add the tag `prev:lonely`" \
           in done.stderr
    assert store.runs.list_runs() == []


def test_alphas_match_the_notebook() -> None:
    assert len(ALPHAS) == MODELS


def test_a_data_file_a_kale_step_reads_by_path_is_part_of_its_fingerprint(
    store: Store, workspace_dir: Path
) -> None:
    (workspace_dir / "data").mkdir()
    (workspace_dir / "data" / "numbers.csv").write_text("x\n1\n2\n")
    notebook = kale_notebook(workspace_dir / "files.ipynb", [
        ("import pandas as pd", ["imports"]),
        ("numbers = pd.read_csv('data/numbers.csv')", ["step:read"]),
        ("total = int(numbers.x.sum())", ["step:add", "prev:read"]),
        ("print(total)", ["pipeline-metrics"]),
    ])
    first = run_notebook(notebook, store=store)
    assert run_metrics(store, first.run_id)["total"] == 3
    assert set(run_notebook(notebook, store=store).step_status.values()) == {StepStatus.REUSED}
    (workspace_dir / "data" / "numbers.csv").write_text("x\n1\n2\n3\n")
    changed = run_notebook(notebook, store=store)
    assert changed.step_status == {"read": StepStatus.SUCCEEDED, "add": StepStatus.SUCCEEDED}
    assert run_metrics(store, changed.run_id)["total"] == 6
    from mlpipe_jupyter.runner.explain import explain_step

    assert "file 'data/numbers.csv' changed" in "\n".join(explain_step(store, changed.run_id,
                                                                        "read"))
