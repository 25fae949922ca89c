"""The step runner of a step's container: the step, on a kernel that starts while
papermill is still being imported.

In a fresh container nothing is warm: importing papermill (~0.3 s) and starting the kernel
both come after ``docker start``. The kernel is another process, so starting it first and
importing papermill meanwhile overlaps the two; then ``run_step_notebook`` runs the step on
it, as the local executor does. The step's output goes to stdout/stderr, which the executor
streams into the step's log.

The container runs this under ``kernel_host``: this runner is a fork of a kernel template
that imported ipykernel's stack once for both, and its kernel is forked from that template
(``HOSTED_VARIABLE`` says so). Run on its own (``python3 -m``), it starts the kernel the
usual way.

The task comes as ``StepTask.to_dict`` JSON (its timeout is the container's business, so
it has none); the outcome goes, as ``StepOutcome.to_dict`` JSON, to OUTCOME_PATH. Exit
status: 0 when the notebook ran, 1 when it did not (the outcome says why; the output
notebook holds a raised cell's error). Where this package's code cannot run in the image's
Python (an image with an older Python), it falls back to the ``papermill`` command, which
behaves the same apart from the overlap and writes no outcome.

The step notebook already holds the run's parameter values (``render.render_step``). The
step's secrets come as one JSON line (``{ENV_VAR: value}``) on stdin, handed over by the
tether from the starter's attached stdin: they go into the kernel's environment when it
starts, and the step runner masks them in the log, the output notebook and the outcome.

Usage: ``python3 -m mlpipe_jupyter.executors.docker.in_container OUTCOME_PATH TASK_JSON``;
the working folder is the container's. (A lane's container runs the steps of a run in
step processes instead: ``lanes.py``.)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any


def _papermill_command(notebook: str, output: str, kernel: str,
                       secrets: dict[str, str]) -> None:
    """Run the step with the ``papermill`` command when this package can't be imported
    here; its executed notebook is masked afterwards (its log is masked by the runner).
    Exits with papermill's status."""
    command = ["papermill", notebook, output, "-k", kernel, "--no-progress-bar", "--log-output"]
    if not secrets:
        os.execvp("papermill", command)
    import subprocess

    code = subprocess.call(command, env={**os.environ, **secrets})
    _mask_file(Path(output), secrets)
    sys.exit(code)


def _mask_file(path: Path, secrets: dict[str, str]) -> None:
    """Mask ``secrets`` in the notebook at ``path``; masking.py needs only the standard
    library, so it is loaded from its file even when the package cannot be imported."""
    import importlib.util

    source = Path(__file__).resolve().parents[1] / "masking.py"
    spec = importlib.util.spec_from_file_location("mlpipe_masking", source)
    if spec is None or spec.loader is None or not path.exists():
        return
    masking = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(masking)
    nb = json.loads(path.read_text(encoding="utf-8"))
    masking.Masker(secrets.values()).notebook(nb)
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")


def _read_secrets() -> dict[str, str]:
    """The secrets line the tether passed on stdin: ``{ENV_VAR: value}``."""
    try:
        line = sys.stdin.readline()
    except (OSError, ValueError):
        return {}
    try:
        data = json.loads(line) if line.strip() else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    outcome_path, task_json = argv
    spec = json.loads(task_json)
    secrets = _read_secrets()
    try:
        from mlpipe_jupyter.executors.base import StepTask
        from mlpipe_jupyter.executors.kernels import start_kernel  # noqa: F401
        from mlpipe_jupyter.executors.step_runner import run_step_notebook  # noqa: F401
    except Exception:  # this package needs a newer Python (or a module) the image lacks
        traceback.print_exc()  # in the step's log: why the step ran the plain way
        _papermill_command(spec["step_notebook"], spec["output_notebook"], spec["kernel_name"],
                           secrets)
    task = StepTask.from_dict(spec)
    loaded = _load_papermill_in_background()
    kernel, start_error = _start_kernel(task.kernel_name, secrets)
    return _execute(task, Path(outcome_path), kernel, start_error, loaded, secrets)


def _load_papermill_in_background() -> tuple[threading.Thread, dict[str, Any]]:
    from mlpipe_jupyter.executors.step_runner import load_papermill

    loaded: dict[str, Any] = {}

    def import_papermill() -> None:
        try:
            load_papermill()
        except BaseException as exc:  # reported by _execute, in the main thread
            loaded["error"] = exc

    loader = threading.Thread(target=import_papermill, name="mlpipe-load-papermill")
    loader.start()
    return loader, loaded


def _start_kernel(kernel_name: str, secrets: dict[str, str]) -> tuple[Any, Exception | None]:
    from mlpipe_jupyter.executors.kernel_template import hosted
    from mlpipe_jupyter.executors.kernels import start_kernel

    try:  # under a kernel host (``kernel_host``), the kernel is forked from it
        return start_kernel(kernel_name, Path.cwd(), env=secrets or None, fork=hosted()), None
    except Exception as exc:
        return None, exc


def _execute(task: Any, outcome_path: Path, kernel: Any, start_error: Exception | None,
             loading: tuple[threading.Thread, dict[str, Any]], secrets: dict[str, str]) -> int:
    """The step on its kernel; the outcome written to ``outcome_path``; the exit status."""
    from mlpipe_jupyter.executors.base import StepOutcome
    from mlpipe_jupyter.executors.step_runner import run_step_notebook
    from mlpipe_jupyter.executors.stop_signal import StopSignal

    loader, loaded = loading
    try:
        loader.join()
        if "error" in loaded:
            raise loaded["error"]
        outcome = run_step_notebook(task, kernel, StopSignal(), start_error=start_error,
                                    output=sys.stdout, secrets=secrets)
    except Exception as exc:
        traceback.print_exc()
        outcome = StepOutcome(task, ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        if kernel is not None:
            kernel.shutdown()
    outcome_path.write_text(json.dumps(outcome.to_dict()), encoding="utf-8")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
