"""Variables a pipeline run saved, in a real kernel: ``%mlpipe load``,
``mlpipe_jupyter.load_variable`` and interactive ``%%mlstep --use`` cells."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.runner.runner import run_notebook
from mlpipe_jupyter.store import Store
from tests.jupyter.test_kernel_magics import Kernel

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

SETUP = "%%mlsetup\nimport pandas as pd\n"
LOAD = ("%%mlstep load\n"
        "df = pd.DataFrame({'x': [3.0, None, 1.0]})\n"
        "settings = {'seed': 7, 'name': 'café'}\n")
CLEAN = "%%mlstep clean --use load.df\ndf = df.dropna()\narr = df.x.to_numpy()\n"
REPORT = ("%%mlstep report --use clean.df clean.arr load.settings --output out\n"
          "(outputs.out / 'n.txt').write_text(str(len(df) + len(arr)))\n")
CELLS = ["%load_ext mlpipe_jupyter", SETUP, LOAD, CLEAN, REPORT]


@pytest.fixture
def notebook(tmp_path: Path, write_notebook: Any) -> Path:
    return write_notebook(tmp_path / "pipe.ipynb", CELLS)  # type: ignore[no-any-return]


@pytest.fixture
def start_kernel(store: Store, tmp_path: Path, notebook: Path) -> Any:
    """``start_kernel()``: a kernel that knows its notebook (as JupyterLab tells it)."""
    started: list[Kernel] = []

    def start() -> Kernel:
        env = {**os.environ, "PYTHONPATH": str(REPO), "JPY_SESSION_NAME": notebook.name}
        manager = KernelManager(kernel_name="python3")
        manager.start_kernel(cwd=str(tmp_path), env=env)
        kernel = Kernel(manager)
        started.append(kernel)
        assert kernel.run("%load_ext mlpipe_jupyter")["status"] == "ok"
        return kernel

    yield start
    for kernel in started:
        kernel.stop()


def error_of(ran: dict[str, Any]) -> str:
    assert ran["status"] == "error", ran
    return str(ran["reply"]["evalue"])


def value_of(kernel: Kernel, expression: str) -> str:
    ran = kernel.run(expression)
    assert ran["status"] == "ok", ran["errors"]
    return str(ran["data"][-1]["text/plain"])


def test_load_variables_of_runs_into_a_kernel(
    start_kernel: Any, store: Store, notebook: Path,
) -> None:
    kernel = start_kernel()
    # nothing ran yet
    assert "no pipeline run of " in error_of(kernel.run("%mlpipe load load.df"))
    assert "no pipeline run of " in error_of(kernel.run(
        "from mlpipe_jupyter import load_variable\nload_variable('load.df')"))

    first = run_notebook(notebook, store=store)
    assert first.status is RunStatus.SUCCEEDED, first.failures

    ran = kernel.run("%mlpipe load clean.df load.settings")
    assert ran["status"] == "ok", ran["errors"]
    assert (f"loaded df: pandas.DataFrame, shape (2, 1), from step 'clean' of run "
            f"{first.run_id}\n") in ran["text"]
    assert f"loaded settings: dict, 2 items, from step 'load' of run {first.run_id}" in ran["text"]
    assert value_of(kernel, "df.x.tolist(), settings['name']") == "([3.0, 1.0], 'café')"

    # the function, from the same kernel (its notebook found as the magics find it)
    assert value_of(kernel, "load_variable('clean.arr').tolist()") == "[3.0, 1.0]"
    assert value_of(kernel, "load_variable('load.df', notebook='pipe.ipynb').shape") == "(3, 1)"

    # mistakes: each says what exists
    assert "the latest run of " in error_of(kernel.run("%mlpipe load nope.df"))
    assert "has no step 'nope' (its steps: load, clean, report)" in error_of(
        kernel.run("%mlpipe load nope.df"))
    saves_none = error_of(kernel.run("%mlpipe load report.n"))
    assert "step 'report' saves no variables" in saves_none
    assert "only variables a later step uses are saved; add `--use report.n`" in saves_none
    missing = error_of(kernel.run("%mlpipe load load.model"))
    assert "step 'load' saved no variable 'model'" in missing and "(it saved: df, settings)" in missing
    assert "is not STEP.NAME" in error_of(kernel.run("%mlpipe load df"))
    assert "no run" in error_of(kernel.run("%mlpipe load load.df --run nosuchrun"))
    # all or nothing: one bad name loads none
    assert "load.model" in error_of(kernel.run("del df\n%mlpipe load load.df load.model"))
    assert value_of(kernel, "'df' in dir()") == "False"

    # a reused step's variables are those its result's producer saved
    second = run_notebook(notebook, store=store)
    assert [s.status.value for s in store.runs.step_runs(second.run_id)] == ["reused"] * 3
    ran = kernel.run(f"%mlpipe load clean.df --run {second.run_id}")
    assert ran["status"] == "ok", ran["errors"]
    assert (f"from step 'clean' of run {second.run_id} (computed in run {first.run_id})"
            in ran["text"])
    assert value_of(kernel, f"load_variable('clean.df', run='{second.run_id}').shape") \
        == "(2, 1)"


def test_interactive_step_cells_receive_variables(
    start_kernel: Any, store: Store, notebook: Path,
) -> None:
    kernel = start_kernel()
    assert kernel.run(SETUP)["status"] == "ok"
    # no producer cell run here, no pipeline run: say what to do
    message = error_of(kernel.run(CLEAN))
    assert message.startswith("step 'clean', --use load.df: 'df' is not defined in this "
                              "kernel, and step 'load' has no saved result of ")
    assert message.endswith("run the cell of step 'load' first, or run the pipeline "
                            "(`%mlpipe run`)")

    # the producer's cell ran here: its variable is used as it is, nothing is loaded
    assert kernel.run(LOAD.replace("None", "4.0"))["status"] == "ok"
    ran = kernel.run(CLEAN)
    assert ran["status"] == "ok", ran["errors"]
    assert "loaded" not in ran["text"]
    assert value_of(kernel, "arr.tolist()") == "[3.0, 4.0, 1.0]"

    # a new kernel after a pipeline run: loaded from the producer's latest result, said once
    first = run_notebook(notebook, store=store)
    assert first.status is RunStatus.SUCCEEDED, first.failures
    fresh = start_kernel()
    assert fresh.run(SETUP)["status"] == "ok"
    ran = fresh.run(REPORT)
    assert ran["status"] == "ok", ran["errors"]
    lines = [line for line in ran["text"].splitlines() if "loaded" in line]
    assert lines == [
        "not defined in this kernel, loaded as the pipeline saved them: "
        f"df: pandas.DataFrame, shape (2, 1), from step 'clean' of run {first.run_id}; "
        f"arr: numpy.ndarray, shape (2,), from step 'clean' of run {first.run_id}; "
        f"settings: dict, 2 items, from step 'load' of run {first.run_id}"]
    assert value_of(fresh, "(outputs.out / 'n.txt').read_text()") == "'4'"
