"""A papermill engine that executes on a kernel we started (and connected to) ahead of time.

papermill's own nbclient engine accepts a running kernel manager but always makes a new
kernel client, which waits ~0.2 s for the kernel to answer before the first cell. Handing
over the already-connected client removes that wait; everything else (parameter injection,
autosave, output notebook, error cells) is papermill's. ``mask_notebook`` (a step with
secrets, ``masking.Masker.notebook``) masks the notebook each time papermill saves it.

papermill writes the output notebook at the start and end of every cell: 11 writes for a
step notebook of four cells (its title, the parameters, mlpipe's context and the step's
code), ~2.5 ms of CPU each. Six of them show nothing new (``_saves_that_show``): the end
of a cell is saved by the start of the next or by the notebook's end, which follow at once,
and a cell that does not execute (markdown, an empty parameters cell) has nothing to show.
What a reader of a running step's output notebook sees stays the same: the cell that is
running, and the outputs that papermill's autosave writes during a long cell.
"""

from __future__ import annotations

from typing import Any

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines

ENGINE_NAME = "mlpipe_warm_kernel"


class _ConnectedClient(PapermillNotebookClient):  # type: ignore[misc]
    def __init__(self, nb_man: Any, km: Any, kc: Any, **kwargs: Any) -> None:
        super().__init__(nb_man, km=km, **kwargs)
        self.kc = kc  # nbclient resets kc in __init__; set it after


class WarmKernelEngine(NBClientEngine):  # type: ignore[misc]
    @classmethod
    def execute_managed_notebook(  # type: ignore[override]
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: float = 60,
        execution_timeout: float | None = None,
        km: Any = None,
        kc: Any = None,
        mask_notebook: Any = None,
        **_unused: Any,
    ) -> Any:
        if mask_notebook is not None:  # secrets: every save writes a masked notebook
            save = nb_man.save

            def masked_save(**kwargs: Any) -> Any:
                mask_notebook(nb_man.nb)
                return save(**kwargs)

            nb_man.save = masked_save
        _saves_that_show(nb_man)
        client = _ConnectedClient(
            nb_man,
            km=km,
            kc=kc,
            kernel_name=kernel_name,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            startup_timeout=start_timeout,
            timeout=execution_timeout,
        )
        return client.execute()


def _saves_that_show(nb_man: Any) -> None:
    """Drop the saves of a cell's end, and of the start of a cell that does not execute
    (nbclient's test: not code, or only blanks); every other save is papermill's."""
    save, cell_start, cell_complete = nb_man.save, nb_man.cell_start, nb_man.cell_complete
    quiet = [False]

    def save_unless_quiet(**kwargs: Any) -> Any:
        return None if quiet[0] else save(**kwargs)

    def quietly(method: Any, cell: Any, *args: Any, skip: bool, **kwargs: Any) -> Any:
        quiet[0] = skip
        try:
            return method(cell, *args, **kwargs)
        finally:
            quiet[0] = False

    nb_man.save = save_unless_quiet
    nb_man.cell_start = lambda cell, *args, **kwargs: quietly(
        cell_start, cell, *args, skip=not _executes(cell), **kwargs)
    nb_man.cell_complete = lambda cell, *args, **kwargs: quietly(
        cell_complete, cell, *args, skip=True, **kwargs)


def _executes(cell: Any) -> bool:
    return bool(cell.cell_type == "code" and cell.source.strip())


papermill_engines.register(ENGINE_NAME, WarmKernelEngine)
