"""Parameter values in the notebook: a %%mlstep cell run interactively binds its defaults,
and ``%mlpipe run -p`` overrides them, as the same Python values and types."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from mlpipe_jupyter.model.values import same_value
from mlpipe_jupyter.store import Store
from tests.jupyter.conftest import NAMES_WE_BIND
from tests.value_probe import (
    TRICKY,
    TRICKY_ARGS,
    TRICKY_DEFAULTS,
    TRICKY_OVERRIDDEN,
    assert_arrived,
    tricky_notebook,
)

pytestmark = pytest.mark.slow


def test_an_interactive_step_binds_its_defaults(shell: Any, store: Store) -> None:
    header = " ".join(shlex.quote(f"{name}={text}") for name, (text, _, _) in TRICKY.items())
    result = shell.run_cell(f"%%mlstep probe --output o --param {header}\nseen = dict(context.parameters)")
    try:
        assert result.success, result.error_in_exec
        for name, value in TRICKY_DEFAULTS.items():
            assert same_value(shell.user_ns[name], value), name
            assert same_value(shell.user_ns["seen"][name], value), name
    finally:
        for name in TRICKY:
            if name not in NAMES_WE_BIND:
                shell.user_ns.pop(name, None)


def test_mlpipe_run_p_in_the_notebook(shell: Any, magics: Any, store: Store, tmp_path: Path) -> None:
    tricky_notebook(tmp_path / "probe.ipynb")
    shell.user_ns["__session__"] = "probe.ipynb"  # what JupyterLab's kernel is told
    line = " ".join(shlex.quote(arg) for arg in TRICKY_ARGS)
    result = shell.run_cell(f"%mlpipe run --wait {line}")
    assert result.success, result.error_in_exec
    run = magics.current.result
    assert run.ok, run.failures
    assert_arrived(store, run.run_id, TRICKY_OVERRIDDEN)


def test_a_step_header_means_in_the_notebook_what_it_means_in_a_run(
    shell: Any, store: Store
) -> None:
    """IPython expands $name and {name} in magic lines; a step header must not be expanded,
    or the cell would run with values that `mlpipe run` (which reads the file) never sees."""
    shell.user_ns["rows"] = 5
    result = shell.run_cell("%%mlstep probe --output o --param 'frac=$rows'\nseen = frac")
    assert result.success, result.error_in_exec
    assert shell.user_ns["seen"] == "$rows"
