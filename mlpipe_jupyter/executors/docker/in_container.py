"""The command a step's container runs: papermill on a kernel that starts while papermill
is still being imported.

In a fresh container nothing is warm: importing papermill (~0.5 s) and starting the kernel
(~0.7 s) both come after ``docker start``. The kernel is another process, so starting it
first and importing papermill meanwhile overlaps the two; the kernel's client is handed to
papermill already connected (``papermill_engine``), as the local executor does. The step's
output goes to stdout/stderr, which the executor streams into the step's log.

Exit status: 0 when the notebook ran, 1 when it raised (the output notebook holds the
error) or anything else failed (the traceback is in the log). Where this package's code
cannot run in the image's Python (an image with an older Python), it falls back to the
``papermill`` command, which behaves the same apart from the overlap.

The step notebook already holds the run's parameter values (``render.render_step``).

Usage: ``python3 -m mlpipe_jupyter.executors.docker.in_container NOTEBOOK OUTPUT
KERNEL_NAME``; the working folder is the container's.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any


def _papermill_command(notebook: str, output: str, kernel: str) -> None:
    os.execvp("papermill", ["papermill", notebook, output, "-k", kernel,
                            "--no-progress-bar", "--log-output"])


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write(__doc__ or "")
        return 2
    notebook, output, kernel_name = argv
    try:
        from mlpipe_jupyter.executors.kernels import start_kernel
    except Exception:  # this package needs a newer Python than the image's
        _papermill_command(notebook, output, kernel_name)
    loaded: dict[str, Any] = {}

    def load_papermill() -> None:
        try:
            from mlpipe_jupyter.executors.local import _import_papermill

            loaded["papermill"] = _import_papermill()
        except BaseException as exc:  # reported below, in the main thread
            loaded["error"] = exc

    loader = threading.Thread(target=load_papermill, name="mlpipe-load-papermill")
    loader.start()
    kernel = start_kernel(kernel_name, Path.cwd())
    try:
        loader.join()
        if "error" in loaded:
            raise loaded["error"]
        papermill = loaded["papermill"]
        from papermill.exceptions import PapermillExecutionError

        from mlpipe_jupyter.executors.papermill_engine import ENGINE_NAME

        try:
            papermill.execute_notebook(
                notebook, output, kernel_name=kernel_name,
                engine_name=ENGINE_NAME, km=kernel.manager, kc=kernel.client,
                progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr,
            )
        except PapermillExecutionError:
            return 1  # the output notebook names the cell and the error
        except Exception:
            traceback.print_exc()
            return 1
        return 0
    finally:
        kernel.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
