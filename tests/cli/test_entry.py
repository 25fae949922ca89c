"""The command's entry point guesses a local run's notebook from the raw arguments
(``cli.entry.local_run_notebook``), before the argument parser is imported: whatever the
arguments, it never raises, never guesses for another command, a ``--compute`` run (or
its abbreviations) or help, and finds the notebook where a user puts it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlpipe_jupyter.cli.entry import local_run_notebook

ARGUMENT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["-q", "-p", "x=1", "--max-parallel", "8", "--step", "train", "--json",
                     "a.ipynb", "ünï cödé.ipynb", "--regenerate", "-v"]),
)


@pytest.mark.parametrize(("arguments", "expected"), [
    (["run", "train.ipynb"], "train.ipynb"),
    (["run", "-q", "--max-parallel", "8", "dir/ünï cödé.ipynb", "-p", "C=1"],
     "dir/ünï cödé.ipynb"),
    (["run", "-p", "x=1", "../up/nb.ipynb"], "../up/nb.ipynb"),
    (["run", "--compute", "local", "nb.ipynb"], None),  # ``cmd_run`` begins it
    (["run", "--comp", "docker", "nb.ipynb"], None),
    (["run", "--compute=docker", "nb.ipynb"], None),
    (["run", "--help"], None),
    (["run", "-h", "nb.ipynb"], None),
    (["check", "nb.ipynb"], None),
    (["show", "latest"], None),
    ([], None),
    (["run"], None),
])
def test_the_notebook_of_a_local_run_is_found(arguments: list[str], expected: str | None) -> None:
    found = local_run_notebook(arguments)
    assert found == (Path(expected) if expected else None)


@given(st.lists(ARGUMENT, max_size=8), st.booleans())
def test_any_arguments_give_a_notebook_path_or_none(arguments: list[str], run: bool) -> None:
    found = local_run_notebook((["run"] if run else []) + arguments)
    if found is not None:
        assert run and str(found).endswith(".ipynb")
        assert not any(arg.startswith("--c") for arg in arguments)
