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


# What papermill imports at its own import that a step never needs: ~2 s of a runner's
# start-up when installed, paid before its first step can execute.
# Refused while papermill imports (each only when not imported already, so nothing loaded
# is hidden), importable again afterwards (the kernel that ran `%mlpipe run` is the user's):
# - papermill.iorw imports the client of every cloud store it can write to (gcsfs, pyarrow's
#   HDFS, Azure blob and data lake, boto3, PyGithub). Steps read and write local files
#   only, so its handlers for gs://, hdfs://, abs://, adl://, s3:// and GitHub stay off.
# - nbformat imports jsonschema, which imports a checker for each string format it knows
#   when installed (jupyter-events brings them; rfc3987_syntax builds a grammar: ~2 s).
#   Notebook validation checks no formats; nbformat validates with fastjsonschema anyway.
CLOUD_STORE_CLIENTS = ("gcsfs", "pyarrow", "azure", "boto3", "botocore", "github")
FORMAT_CHECKERS = ("rfc3987_syntax", "rfc3986_validator", "rfc3987", "rfc3339_validator",
                   "fqdn", "webcolors", "jsonpointer", "uri_template", "isoduration")
REFUSED_AT_PAPERMILL_IMPORT = CLOUD_STORE_CLIENTS + FORMAT_CHECKERS


def _import_papermill() -> Any:
    if "papermill" in sys.modules:
        import papermill
    else:
        papermill = _import_papermill_lean()

    import mlpipe_jupyter.executors.papermill_engine  # noqa: F401  (registers the engine)

    logging.getLogger("papermill").setLevel(logging.WARNING)
    _compile_notebook_validator()
    return papermill


def _compile_notebook_validator() -> None:
    """Compile nbformat's validator for step notebooks now, once. nbformat compiles it at
    first use and caches it without a lock: the steps of a fan-out, starting together, each
    compiled it (~0.1 s of this process's CPU apiece, before their first cell)."""
    from nbformat import v4
    from nbformat.validator import get_validator

    get_validator(4, v4.nbformat_minor)


def _import_papermill_lean() -> Any:
    refused = [name for name in REFUSED_AT_PAPERMILL_IMPORT if name not in sys.modules
               and not (name in FORMAT_CHECKERS and "jsonschema" in sys.modules)]
    for name in refused:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` fail
    try:
        import papermill
    finally:
        for name in refused:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
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
