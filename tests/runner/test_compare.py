"""Comparing runs: parameters and metrics side by side, and which fingerprint components
of each step differ — through the library and the real ``mlpipe compare`` command."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.runner.compare import compare_runs
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import run_cli, write_notebook

pytestmark = pytest.mark.slow


def _pipeline(path: Path, train_code: str) -> Path:
    return write_notebook(path, [
        "%%mlstep load --output data --param rows=3\n"
        "(outputs.data / 'n.txt').write_text(str(rows))",
        "%%mlstep train --input data=load.data --param lr=0.1 name='é, ünïcode'\n"
        + train_code,
    ])


def test_compare_names_the_changed_parameter_and_component(store: Store,
                                                           workspace_dir: Path) -> None:
    notebook = _pipeline(workspace_dir / "nb.ipynb",
                         "context.log('loss', lr * int((inputs.data / 'n.txt').read_text()))")
    first = run_notebook(notebook, {"lr": "0.1"}, store=store)
    second = run_notebook(notebook, {"lr": "0.5"}, store=store)
    _pipeline(notebook, "context.log('loss', 2 * lr)")  # edit the code only
    third = run_notebook(notebook, {"lr": "0.5"}, store=store)
    assert first.ok and second.ok and third.ok

    comparison = compare_runs(store, [first.run_id, second.run_id, third.run_id])
    assert comparison.differing_parameters() == ["lr"]
    assert comparison.parameters["rows"] == [3, 3, 3]  # defaults count, not only overrides
    assert comparison.parameters["name"] == ["é, ünïcode"] * 3
    assert comparison.metrics["train.loss"] == [0.30000000000000004, 1.5, 1.0]
    load, train = comparison.steps
    assert load.step == "load" and not load.differs  # reused: the same result everywhere
    assert train.changed == [[], ["params"], ["code", "params"]]
    assert "parameter 'lr' changed: 0.1 -> 0.5" in train.changes[1]
    assert "the step's code changed" in train.changes[2]

    shown = run_cli("compare", first.run_id, second.run_id, cwd=workspace_dir)
    assert shown.returncode == 0, shown.stderr
    assert "*  lr" in shown.stdout and "succeeded (params changed)" in shown.stdout
    alone = run_cli("compare", first.run_id, cwd=workspace_dir)
    assert alone.returncode == 2 and "two or more runs" in alone.stderr
    unknown = run_cli("compare", first.run_id, "nope", cwd=workspace_dir)
    assert unknown.returncode == 1 and "no run 'nope'" in unknown.stderr
