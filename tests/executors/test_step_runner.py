"""The step runner (executors/step_runner.py) on real kernels: every way a step ends is one
outcome with the sentence a user reads; and the executor template around it (base.py):
always an outcome, cancel before start, one serialised form for tasks and outcomes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from mlpipe_jupyter.executors.base import Executor, StepOutcome, StepTask, Submission
from mlpipe_jupyter.executors.kernels import start_kernel
from mlpipe_jupyter.executors.step_runner import run_step_notebook
from mlpipe_jupyter.executors.stop_signal import CANCELED, StopSignal
from mlpipe_jupyter.model.step import Resources


def _task(tmp_path: Path, code: str, timeout: float | None = None,
          before: tuple[object, ...] = ()) -> StepTask:
    """A step notebook of ``before``'s cells, then ``code``'s."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [*before, nbformat.v4.new_code_cell(code)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    step_dir = tmp_path / "step"
    step_dir.mkdir()
    nbformat.write(notebook, step_dir / "step.ipynb")
    return StepTask(run_id="r1", step="s", attempt=1, step_notebook=step_dir / "step.ipynb",
                    output_notebook=step_dir / "output.ipynb", log_path=step_dir / "log.txt",
                    cwd=tmp_path, timeout_seconds=timeout)


def _run(task: StepTask, stop: StopSignal | None = None) -> StepOutcome:
    kernel = start_kernel(task.kernel_name, task.cwd)
    try:
        return run_step_notebook(task, kernel, stop or StopSignal())
    finally:
        kernel.shutdown()


@pytest.mark.slow
def test_a_step_that_runs_is_ok_and_its_output_goes_to_the_log(tmp_path: Path) -> None:
    task = _task(tmp_path, "print('hello from the step')")
    outcome = _run(task)
    assert outcome.ok and outcome.error is None, outcome
    assert outcome.started_at is not None and outcome.ended_at is not None
    assert "hello from the step" in task.log_path.read_text()
    assert task.output_notebook.exists()


def _statuses(notebook: Path) -> list[str]:
    """Each cell's papermill status (but papermill's error banners, which have none)."""
    cells = json.loads(notebook.read_text())["cells"]
    return [cell["metadata"]["papermill"]["status"] for cell in cells
            if "papermill" in cell["metadata"]]


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["ok", "raises", "kernel dies"])
def test_the_output_notebook_shows_the_running_cell_and_at_the_end_every_cell(
        tmp_path: Path, ending: str) -> None:
    """papermill's saves that show nothing new are dropped (``papermill_engine``): while a
    cell runs, the output notebook still shows it running, with the cells before it done;
    at the end it shows every cell's outcome and output, however the step ends."""
    marker = tmp_path / "running"
    code = (f"import pathlib, time\nprint('first line')\npathlib.Path({str(marker)!r}).touch()\n"
            "time.sleep(2)\n")
    code += {"ok": "", "raises": "1 / 0\n",
             "kernel dies": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"}[ending]
    task = _task(tmp_path, code, before=(
        nbformat.v4.new_markdown_cell("# a title"),
        nbformat.v4.new_code_cell("", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
    ))
    seen: list[list[str]] = []

    def watch() -> None:
        while not marker.exists():
            time.sleep(0.02)
        seen.append(_statuses(task.output_notebook))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    outcome = _run(task)
    watcher.join(10)
    assert seen == [["completed", "completed", "completed", "running"]]
    assert outcome.ok is (ending == "ok")
    cells = [cell for cell in json.loads(task.output_notebook.read_text())["cells"]
             if "papermill" in cell["metadata"]]
    last = "completed" if ending != "raises" else "failed"
    assert _statuses(task.output_notebook) == ["completed", "completed", "completed", last]
    assert cells[2]["execution_count"] == 1
    printed = "".join("".join(output.get("text", "")) for output in cells[3]["outputs"])
    assert "first line" in printed


@pytest.mark.slow
def test_a_raised_cell_names_the_error(tmp_path: Path) -> None:
    outcome = _run(_task(tmp_path, "1 / 0"))
    assert not outcome.ok and not outcome.canceled and not outcome.timed_out
    assert outcome.error == "ZeroDivisionError: division by zero"


@pytest.mark.slow
def test_a_timeout_stops_the_kernel(tmp_path: Path) -> None:
    outcome = _run(_task(tmp_path, "import time\ntime.sleep(120)", timeout=1))
    assert outcome.timed_out and not outcome.ok and not outcome.canceled
    assert outcome.error == "timed out after 1 s (--timeout); the kernel was stopped"


@pytest.mark.slow
def test_a_cancel_stops_the_kernel(tmp_path: Path) -> None:
    stop = StopSignal()
    threading.Timer(1.0, stop.set, (CANCELED,)).start()
    outcome = _run(_task(tmp_path, "import time\ntime.sleep(120)", timeout=600), stop)
    assert outcome.canceled and not outcome.ok and not outcome.timed_out
    assert outcome.error == "canceled"


@pytest.mark.slow
def test_a_dead_kernel_is_reported_as_such(tmp_path: Path) -> None:
    outcome = _run(_task(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"))
    assert not outcome.ok and not outcome.canceled and not outcome.timed_out
    assert outcome.error == "the kernel died (out of memory, or the process was killed)"


def test_a_kernel_that_did_not_start_is_reported_with_where(tmp_path: Path) -> None:
    outcome = run_step_notebook(_task(tmp_path, "pass"), None, StopSignal(),
                                start_error=RuntimeError("no room"), where=" on worker w:1")
    assert not outcome.ok
    assert outcome.error == "the kernel could not start on worker w:1: no room"


def test_tasks_and_outcomes_cross_boundaries_as_json(tmp_path: Path) -> None:
    task = StepTask(run_id="r", step="s", attempt=2, step_notebook=tmp_path / "a.ipynb",
                    output_notebook=tmp_path / "b.ipynb", log_path=tmp_path / "log.txt",
                    cwd=tmp_path, input_paths={"raw": tmp_path / "raw"},
                    staging=tmp_path / "staging", env="env:2", network=True,
                    timeout_seconds=2.5, resources=Resources(cpus=1.5, memory_bytes=1 << 20),
                    result_id="abc")
    assert StepTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    outcome = StepOutcome(task, ok=False, error="x", timed_out=True, started_at=1.0,
                          ended_at=2.0)
    assert StepOutcome.from_dict(task, json.loads(json.dumps(outcome.to_dict()))) == outcome


class _Broken(Executor):
    name = "broken"

    def __init__(self) -> None:
        super().__init__()
        self.launched: list[Submission] = []

    def launch(self, submission: Submission) -> None:
        if submission.task.step == "raises":
            raise RuntimeError("no such thing")
        self.launched.append(submission)


def test_the_executor_template_always_reports_one_outcome(tmp_path: Path) -> None:
    executor = _Broken()
    seen: list[StepOutcome] = []
    base = _task(tmp_path, "pass")

    executor.submit(StepTask(**{**base.__dict__, "step": "raises"}), seen.append)
    assert seen[-1].error == "internal error: RuntimeError('no such thing')"
    assert seen[-1].ended_at is not None

    executor.submit(base, seen.append)  # launched, then canceled: the stop signal is set
    [submission] = executor.launched
    executor.cancel("r1")
    assert submission.stop.canceled
    submission.execute(lambda: StepOutcome(base, ok=True))  # too late: canceled at once
    submission.report(StepOutcome(base, ok=True))  # a second report is ignored
    assert seen[-1].canceled and len(seen) == 2

    executor.submit(base, seen.append)  # after the run was canceled: never launched
    assert seen[-1].canceled and len(executor.launched) == 1


def test_papermill_loads_without_cloud_clients_which_stay_importable() -> None:
    """A runner imports papermill once per process; the cloud store clients papermill would
    import with it (seconds when installed) are left out, and user code can still import
    them afterwards: the kernel that ran `%mlpipe run` is the user's."""
    probe = (
        "import importlib.util, json, sys\n"
        "from mlpipe_jupyter.executors.step_runner import REFUSED_AT_PAPERMILL_IMPORT, "
        "load_papermill\n"
        "papermill = load_papermill()\n"
        "from papermill.iorw import load_notebook_node\n"
        "loaded = [n for n in REFUSED_AT_PAPERMILL_IMPORT if n in sys.modules]\n"
        "installed = [n for n in ('gcsfs', 'pyarrow') if importlib.util.find_spec(n)]\n"
        "for name in installed:\n"
        "    __import__(name)\n"
        "print(json.dumps([loaded, installed, [n for n in installed if sys.modules.get(n)]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    loaded, installed, imported_after = json.loads(out)
    assert loaded == []
    assert imported_after == installed
