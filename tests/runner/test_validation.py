"""One validation pass per request: every problem at once, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.errors import (
    DefinitionError,
    ExecutorError,
    ParameterError,
    TargetUnavailableError,
    exit_code,
    http_status,
)
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.scheduling.publishing import publish
from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook

THREE_PROBLEMS = [
    "%%mlstep a --output o --param n=1 --hash-paths conf.yaml --env sk\npass",
]


def _nothing_written(store: Store) -> None:
    assert store.runs.list_runs(None, None, None, 10, 0) == []
    assert not any(store.workspace.runs_dir.iterdir())
    assert not store.workspace.staging_dir.exists() or not any(store.workspace.staging_dir.iterdir())


def test_a_run_reports_every_problem_at_once_and_writes_nothing(
    store: Store, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "three.ipynb", THREE_PROBLEMS)
    with pytest.raises(DefinitionError) as caught:
        run_notebook(notebook, {"n": "lots"}, store=store)
    error = caught.value
    assert len(error.issues) == 3, error
    text = str(error)
    assert "3 pipeline definition errors; nothing was run" in text
    assert "--hash-paths conf.yaml: matches no file under" in text
    assert "--env sk: environment 'sk' is not defined" in text
    assert "parameter 'n' expects int" in text
    _nothing_written(store)


def test_without_a_workspace_nothing_is_created(workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "three.ipynb", THREE_PROBLEMS)
    with pytest.raises(DefinitionError, match="3 pipeline definition errors"):
        run_notebook(notebook, {"n": "lots"})
    assert not (workspace_dir / ".mlpipe").exists()


def test_only_parameter_problems_are_a_parameter_error(store: Store, workspace_dir: Path) -> None:
    notebook = write_notebook(workspace_dir / "p.ipynb", [
        "%%mlstep a --output o --param n=1 --param f=0.5\npass"])
    with pytest.raises(ParameterError) as caught:
        run_notebook(notebook, {"n": "lots", "f": "x", "m": "1"}, store=store)
    assert len(caught.value.issues) == 3  # the unknown name and both bad values
    assert "unknown parameter(s) m" in str(caught.value)
    _nothing_written(store)


def test_hash_paths_outside_the_project_are_refused(store: Store, workspace_dir: Path) -> None:
    (workspace_dir.parent / "secret.txt").write_text("x")
    (workspace_dir / "conf.yaml").write_text("a: 1")
    notebook = write_notebook(workspace_dir / "out.ipynb", [
        "%%mlstep a --output o --hash-paths ../secret.txt --hash-paths conf.yaml\npass"])
    with pytest.raises(DefinitionError, match=r"--hash-paths \.\./secret\.txt: matches files "
                                              r"outside the notebook's folder"):
        run_notebook(notebook, store=store)
    _nothing_written(store)


def test_publish_reports_every_problem_at_once_and_stores_nothing(
    store: Store, workspace_dir: Path
) -> None:
    notebook = write_notebook(workspace_dir / "three.ipynb", [
        "%%mlstep a --input r=dataset:nope --output o --hash-paths conf.yaml --env sk\npass"])
    with pytest.raises(DefinitionError) as caught:
        publish(store, notebook, "no good")
    text = str(caught.value)
    assert len(caught.value.issues) == 4, text
    for part in ("published pipeline name 'no good' is not valid", "dataset 'nope' is not registered",
                 "environment 'sk' is not defined", "--hash-paths conf.yaml: matches no file"):
        assert part in text
    assert store.published.names() == []
    _nothing_written(store)


def test_the_error_table() -> None:
    unreachable = TargetUnavailableError("no Docker engine answers")
    assert (exit_code(unreachable), http_status(unreachable)) == (1, 503)
    assert (exit_code(ExecutorError("x")), http_status(ExecutorError("x"))) == (1, 503)
    assert (exit_code(DefinitionError([])), http_status(DefinitionError([]))) == (2, 400)
    assert (exit_code(RuntimeError("x")), http_status(RuntimeError("x"))) == (1, 500)
