"""Shared fixtures: a fresh workspace per test and a way to write real notebooks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlpipe_jupyter.store import Store

# jp_fetch, jp_serverapp ... for the REST tests (tests/server); it runs async tests itself:
# no pytest-asyncio auto mode.
pytest_plugins = ["pytest_jupyter.jupyter_server"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "notebooks" / "example.ipynb"
IRIS = REPO / "notebooks" / "data" / "iris"


def write_notebook(path: Path, cells: Sequence[str]) -> Path:
    """A real nbformat-4 notebook file whose code cells are ``cells``."""
    notebook = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
             "outputs": [], "source": source}
            for i, source in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook, indent=1))
    return path


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_the_processes_tests_start() -> None:
    """Tests press Ctrl-C (SIGINT) on the runners they start. A suite started in the
    background by a non-interactive shell (`cmd &`, as CI wrappers do) has SIGINT ignored,
    and an ignored signal stays ignored in every child: the runners would never see the
    Ctrl-C the test sends. Give this process Python's own handler, which children reset to
    the default."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def no_stray_workspace_above_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A ``.mlpipe`` folder above pytest's temporary folder would be found by every test
    that looks for a workspace from its folder (the REST server does): say so up front."""
    from mlpipe_jupyter.store.workspace import WORKSPACE_DIRNAME

    base = tmp_path_factory.getbasetemp().resolve()
    for folder in base.parents:
        if (folder / WORKSPACE_DIRNAME).is_dir():
            pytest.exit(f"a stray workspace {folder / WORKSPACE_DIRNAME} lies above the tests' "
                        f"temporary folder {base}: remove it, or run with --basetemp elsewhere",
                        returncode=4)


@pytest.fixture(scope="session", autouse=True)
def kernel_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' own runtime folder for kernel templates (fork-started local kernels), so
    that every template a test starts (here or in an ``mlpipe`` subprocess) is stopped at
    the end and none is shared with the user's."""
    from mlpipe_jupyter.executors.fork_provisioner import stop_all

    folder = tmp_path_factory.getbasetemp() / "rt"
    folder.mkdir(mode=0o700)
    saved = {key: os.environ.get(key) for key in ("MLPIPE_RUNTIME_DIR",
                                                   "MLPIPE_KERNEL_TEMPLATE_IDLE")}
    os.environ["MLPIPE_RUNTIME_DIR"] = str(folder)
    os.environ["MLPIPE_KERNEL_TEMPLATE_IDLE"] = "120"
    try:
        yield folder
    finally:
        stop_all(folder)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def workspace_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder with its own workspace (MLPIPE_HOME), as the cwd."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLPIPE_HOME", str(project / ".mlpipe"))
    return project


@pytest.fixture
def store(workspace_dir: Path) -> Iterator[Store]:
    opened = Store.open(create=True)
    yield opened
    opened.close()


def step_output(store: Store, run_id: str, step: str, output: str) -> Path:
    """The committed folder of one output of a step of a run."""
    return store.results.path(store.runs.step_run(run_id, step).result_id or "", output)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real ``mlpipe`` command in a subprocess (as a user would run it)."""
    return subprocess.run(
        [sys.executable, "-m", "mlpipe_jupyter", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})}, check=False,
    )


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in os.environ for the block (for module-scoped fixtures, which can't
    use monkeypatch), then the previous values back."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
