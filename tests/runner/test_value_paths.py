"""Parameter values reach a step's code unchanged, by every path a user gives them.

Values are generated (tests/value_probe.py) and batched: one run carries dozens, so a few
runs of a real kernel cover thousands of shapes. The container and Dask round trips are
in tests/executors (test_docker.py, test_dask.py); REST, triggers, schedules and published
defaults in tests/server and tests/scheduling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.values import python_literal
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from tests.conftest import run_cli
from tests.value_probe import (
    TRICKY_ARGS,
    TRICKY_DEFAULTS,
    TRICKY_OVERRIDDEN,
    assert_arrived,
    bare_words,
    literal_defaults,
    literal_values,
    parameter_names,
    probe_notebook,
    tricky_notebook,
)

pytestmark = pytest.mark.slow

BATCH = 30  # values per run
# A real kernel runs each example: few examples, many values each.
few_runs = settings(max_examples=4, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@few_runs
@given(st.lists(literal_values, min_size=BATCH, max_size=BATCH),
       st.lists(bare_words, min_size=3, max_size=3))
def test_header_defaults_arrive_as_written(store: Store, workspace_dir: Path,
                                           values: list[Any], words: list[str]) -> None:
    sent = dict(zip(parameter_names(BATCH), values, strict=True))
    headers = literal_defaults(sent)
    for index, word in enumerate(words):  # --param w0=rf: a bare word is a string
        headers[f"w{index}"] = word
        sent[f"w{index}"] = word
    notebook = probe_notebook(workspace_dir / "defaults.ipynb", headers)
    result = run_notebook(notebook, store=store)
    assert result.status is RunStatus.SUCCEEDED, result.failures
    assert_arrived(store, result.run_id, sent)


@few_runs
@given(st.lists(literal_values, min_size=BATCH, max_size=BATCH))
def test_run_overrides_arrive_as_given(store: Store, workspace_dir: Path,
                                       values: list[Any]) -> None:
    """-p NAME=LITERAL over a None default (which takes any literal), and over a default of
    the value's own type (which must accept it unchanged)."""
    sent = dict(zip(parameter_names(BATCH), values, strict=True))
    defaults = {name: ("None" if index % 2 else python_literal(value))
                for index, (name, value) in enumerate(sent.items())}
    notebook = probe_notebook(workspace_dir / "overrides.ipynb", defaults)
    overrides = {name: python_literal(value) for name, value in sent.items()}
    result = run_notebook(notebook, overrides, store=store)
    assert result.status is RunStatus.SUCCEEDED, result.failures
    assert_arrived(store, result.run_id, sent)


def test_cli_run_p_from_a_terminal(store: Store, workspace_dir: Path) -> None:
    notebook = tricky_notebook(workspace_dir / "cli.ipynb")
    done = run_cli("run", str(notebook), *TRICKY_ARGS, "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = store.runs.list_runs()
    assert_arrived(store, run.id, TRICKY_OVERRIDDEN)
    # the run record keeps the values typed, for `mlpipe show` and re-runs
    assert run.params["shape"] == (3,) and run.params["use_gpu"] is False
    shown = run_cli("show", "latest").stdout
    assert "use_gpu=False" in shown and "shape=(3,)" in shown
    # and the defaults, as the header wrote them
    done = run_cli("run", str(notebook), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_arrived(store, store.runs.list_runs()[0].id, TRICKY_DEFAULTS)


def test_cli_refuses_a_boolean_it_cannot_read_before_running(workspace_dir: Path) -> None:
    notebook = probe_notebook(workspace_dir / "b.ipynb", {"flag": "True"})
    done = run_cli("run", str(notebook), "-p", "flag=yes")
    assert done.returncode == 2
    assert "parameter 'flag' is a boolean (default True): write flag=True or flag=False" in (
        done.stderr)
    assert not (workspace_dir / ".mlpipe" / "runs").exists() or not any(
        (workspace_dir / ".mlpipe" / "runs").iterdir())


def test_an_unbalanced_quote_is_reported_at_its_cell(workspace_dir: Path) -> None:
    from tests.conftest import write_notebook

    notebook = write_notebook(workspace_dir / "q.ipynb", [
        "x = 1", "%%mlstep s --output o --param 'name=it's'\nprint(name)"])
    done = run_cli("run", str(notebook))
    assert done.returncode == 2
    assert "cell 2, step 's': quoting error in the %%mlstep line: no closing quotation" in (
        done.stderr)
    assert "no %%mlstep cells" not in done.stderr
