"""The command's entry point guesses a local run's notebook from the raw arguments
(``cli.entry.local_run_notebook``), before the argument parser is imported: whatever the
arguments, it never raises, never guesses for another command, a ``--compute`` run (or
its abbreviations) or help, and finds the notebook where a user puts it. And a path that
cannot be looked at gets the run's sentence, never a traceback from the head start."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlpipe_jupyter.cli.entry import local_run_notebook
from mlpipe_jupyter.executors import head_start
from tests.conftest import run_cli

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


@given(st.text(max_size=300))
def test_the_head_start_never_raises_whatever_the_path(text: str) -> None:
    """Paths that cannot even be looked at (too long, ``~nosuchuser``, a NUL byte) are left
    to the run, which names what is wrong; the head start just does not begin."""
    for path in (Path(text + ".ipynb"), Path("~" + text + "/x.ipynb")):
        head_start.begin(path)
        head_start.end_unused()


@pytest.mark.parametrize(("path", "said"), [
    ("x" * 300 + ".ipynb", "mlpipe: cannot read notebook xxx"),
    ("~mlpipe-no-such-user/nb.ipynb", "mlpipe: notebook ~mlpipe-no-such-user/nb.ipynb does not exist"),
], ids=["too long", "no such user"])
def test_a_path_that_cannot_be_looked_at_gets_a_sentence_not_a_traceback(
        tmp_path: Path, path: str, said: str) -> None:
    done = run_cli("run", path, cwd=tmp_path)
    assert done.returncode != 0
    assert said in done.stderr and "Traceback" not in done.stderr, done.stderr
