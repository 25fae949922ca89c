"""Fixtures for the Jupyter front-ends: a real IPython shell with the magics loaded, and a
fresh workspace (MLPIPE_HOME) with a tiny registered dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.testing.globalipapp import start_ipython

from mlpipe_jupyter.store import Store
from tests.conftest import write_notebook as write_notebook_file

NAMES_WE_BIND = ("inputs", "outputs", "context", "frac", "C", "__session__", "rows", "seen")


@pytest.fixture(scope="session")
def ipython() -> Any:
    shell = start_ipython()
    result = shell.run_cell("%load_ext mlpipe_jupyter")
    assert result.success
    return shell


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path / ".mlpipe"))
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "source" / "numbers"
    data.mkdir(parents=True)
    (data / "numbers.csv").write_text("x,y\n1,2\n3,4\n5,6\n")
    opened = Store.open(create=True)
    opened.datasets.register("numbers", data, tabular=True)
    yield opened
    opened.close()


@pytest.fixture
def magics(ipython: Any) -> Any:
    return ipython.magics_manager.registry["MlpipeMagics"]


@pytest.fixture
def shell(ipython: Any, magics: Any, store: Store) -> Iterator[Any]:
    """The shell with an empty registry and none of the names steps bind."""
    magics.registry.clear()
    magics.current = None
    for name in NAMES_WE_BIND:
        ipython.user_ns.pop(name, None)
    yield ipython
    if magics.current is not None and magics.current.running:
        magics.current.cancel()
        magics.current.wait(60)
    magics.current = None
    for name in NAMES_WE_BIND:
        ipython.user_ns.pop(name, None)


@pytest.fixture
def write_notebook() -> Any:
    """``write_notebook(path, [cell sources])``: a real nbformat 4 notebook file."""
    return write_notebook_file


