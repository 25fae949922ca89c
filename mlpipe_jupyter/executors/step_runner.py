"""The step runner: one rendered step notebook, executed by papermill on a started kernel,
ended as one ``StepOutcome``.

Every place that runs a step notebook in a Python process calls ``run_step_notebook``: the
local executor (on a kernel from its pool), a Dask worker (on a kernel of its own pool or
a fresh one) and a step's container (``docker/in_container.py``). It owns how a step ends:
the timeout and a cancel both set the step's ``StopSignal``, which kills the kernel; a
raised cell, a kernel that could not start or died, a timeout and a cancel each become one
outcome with the sentence a user reads. papermill drives the kernel through the
``papermill_engine`` (handed the connected client), so the executed notebook is exactly
what the ``papermill`` command would have written.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from mlpipe_jupyter.executors.base import StepOutcome, StepTask, canceled_outcome
from mlpipe_jupyter.executors.kernels import WarmKernel
from mlpipe_jupyter.executors.masking import Masker, MaskingWriter
from mlpipe_jupyter.executors.stop_signal import CANCELED, TIMED_OUT, StopSignal

log = logging.getLogger(__name__)

_papermill_lock = threading.Lock()
_papermill: Any = None


def load_papermill() -> Any:
    """papermill, imported once per process (with our engine registered); thread-safe, so
    it can be imported in the background while kernels start."""
    global _papermill
    with _papermill_lock:
        if _papermill is None:
            _papermill = _import_papermill()
        return _papermill


# Imports papermill makes at its own import and that a step never needs, refused while it
# imports (each only when not imported already, so nothing loaded is hidden):
# - jsonschema imports rfc3987_syntax when installed (jupyter-events brings it), which builds
#   a grammar at import time: ~2 s, for an IRI format check notebooks never use;
# - papermill.iorw imports the client of every cloud store it can write to (gcsfs, pyarrow's
#   HDFS, Azure blob and data lake, boto3, PyGithub): ~2 s when they are installed. Steps
#   read and write local files only, so its handlers for gs://, hdfs://, abs://, adl://,
#   s3:// and GitHub URLs stay off.
# Afterwards the names are importable again: a kernel that ran `%mlpipe run` can still
# import gcsfs itself.
REFUSED_AT_PAPERMILL_IMPORT = ("rfc3987_syntax", "gcsfs", "pyarrow", "azure", "boto3",
                               "botocore", "github")


def _import_papermill() -> Any:
    refused = [name for name in REFUSED_AT_PAPERMILL_IMPORT
               if name not in sys.modules and "papermill" not in sys.modules
               and not (name == "rfc3987_syntax" and "jsonschema" in sys.modules)]
    for name in refused:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        import papermill
    finally:
        for name in refused:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]

    import mlpipe_jupyter.executors.papermill_engine  # noqa: F401  (registers the engine)

    logging.getLogger("papermill").setLevel(logging.WARNING)
    return papermill


def stopped_outcome(task: StepTask, reason: str, stopped: str = "the kernel") -> StepOutcome:
    """The outcome of a step its stop signal ended: ``stopped`` names what was stopped."""
    if reason == TIMED_OUT:
        return StepOutcome(task, ok=False, timed_out=True,
                           error=f"timed out after {task.timeout_seconds:g} s (--timeout); "
                                 f"{stopped} was stopped")
    return canceled_outcome(task)


def run_step_notebook(task: StepTask, kernel: WarmKernel | None, stop: StopSignal, *,
                      start_error: BaseException | None = None, output: TextIO | None = None,
                      where: str = "", secrets: Mapping[str, str] | None = None) -> StepOutcome:
    """Execute ``task.step_notebook`` on ``kernel`` into ``task.output_notebook``.

    ``kernel`` is None when it could not start (``start_error`` says why). The step's
    output is appended to ``output``, or to ``task.log_path``. ``task.timeout_seconds``,
    when set, is enforced here; setting ``stop`` (a cancel) kills the kernel. ``where``
    (" on worker ADDRESS") goes into the messages about the kernel. Never raises for a
    failing step: the caller shuts the kernel down. ``secrets``: the values the kernel's
    environment holds (``{ENV_VAR: value}``, set by whoever started it); they are masked as
    ``***`` in the log, the executed notebook and the error.
    """
    started = time.time()
    masker = Masker((secrets or {}).values())

    def ended(**fields: Any) -> StepOutcome:
        if masker and fields.get("error"):
            fields["error"] = masker.text(str(fields["error"]))
        return StepOutcome(task, started_at=started, ended_at=time.time(), **fields)

    if kernel is None:
        return ended(ok=False, error=f"the kernel could not start{where}: {start_error}")
    if stop.reason is not None:
        return stopped_outcome(task, stop.reason)
    papermill = load_papermill()
    from papermill.exceptions import PapermillExecutionError

    from mlpipe_jupyter.executors.papermill_engine import ENGINE_NAME

    timer = None
    if task.timeout_seconds:
        timer = threading.Timer(task.timeout_seconds, stop.set, (TIMED_OUT,))
        timer.daemon = True
        timer.start()
    try:
        with stop.watch(kernel.kill), _step_output(task, output, masker) as out:
            if kernel.note:
                out.write(f"mlpipe: the kernel was started without the kernel template "
                          f"(not forked): {kernel.note}\n")
            papermill.execute_notebook(
                str(task.step_notebook), str(task.output_notebook),
                kernel_name=task.kernel_name, engine_name=ENGINE_NAME,
                km=kernel.manager, kc=kernel.client,
                progress_bar=False, stdout_file=out, stderr_file=out,
                mask_notebook=masker.notebook if masker else None,
            )
        return ended(ok=True)
    except PapermillExecutionError as exc:  # the output notebook names the cell
        return ended(ok=False, error=f"{exc.ename}: {exc.evalue}")
    except Exception as exc:
        reason = stop.reason
        if reason in (TIMED_OUT, CANCELED):
            outcome = stopped_outcome(task, str(reason))
            return ended(ok=False, error=outcome.error, canceled=outcome.canceled,
                         timed_out=outcome.timed_out)
        name = type(exc).__name__
        if name == "DeadKernelError":
            return ended(ok=False, error=f"the kernel died{where} (out of memory, or the "
                                        "process was killed)")
        return ended(ok=False, error=f"{name}: {exc}")
    finally:
        if timer is not None:
            timer.cancel()


@contextlib.contextmanager
def _step_output(task: StepTask, output: TextIO | None, masker: Masker) -> Iterator[TextIO]:
    with contextlib.ExitStack() as stack:
        if output is None:
            task.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = stack.enter_context(task.log_path.open("a", encoding="utf-8"))
        if not masker:
            yield output
            return
        writer = MaskingWriter(output, masker)
        try:
            yield writer  # type: ignore[misc]
        finally:
            writer.flush()
