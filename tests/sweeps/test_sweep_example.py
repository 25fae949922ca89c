"""notebooks/sweep_example.ipynb as its markdown says to run it: a sweep whose deploy step
is gated on accuracy and whose summary step runs whatever happened above it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.runner.sweep_view import read_sweep
from mlpipe_jupyter.store import Store
from tests.conftest import IRIS, REPO, run_cli

pytestmark = pytest.mark.slow

SWEEP_EXAMPLE = REPO / "notebooks" / "sweep_example.ipynb"


def test_the_sweep_example_deploys_only_good_models(store: Store, workspace_dir: Path) -> None:
    store.datasets.register("iris", IRIS, tabular=True)
    result = run_cli("run", str(SWEEP_EXAMPLE), "--sweep", "C=0.01,1", "--sweep",
                     "frac=0.5,0.8", cwd=workspace_dir, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    view = read_sweep(store, "latest")
    assert view.executed == {"prepare": 2, "train": 4, "evaluate": 4, "deploy": 2,
                             "summary": 4}
    for row in view.rows:
        deploy = store.runs.step_run(row.run_id, "deploy")
        accuracy = row.metrics["evaluate.accuracy"]
        summary_log = store.runs.log_path(row.run_id, "summary").read_text()
        if accuracy >= 0.95:
            assert deploy.status is StepStatus.SUCCEEDED
            assert "released: {'run'" in summary_log
        else:
            assert deploy.status is StepStatus.SKIPPED
            assert f"is false (evaluate.accuracy = {accuracy})" in (deploy.error or "")
            assert "not released: upstream step deploy skipped" in summary_log
    assert {row.status for row in view.rows} == {"succeeded"}  # a gate is not a failure
