"""A papermill engine that executes on a kernel we started (and connected to) ahead of time.

papermill's own nbclient engine accepts a running kernel manager but always makes a new
kernel client, which waits ~0.2 s for the kernel to answer before the first cell. Handing
over the already-connected client removes that wait; everything else (parameter injection,
autosave, output notebook, error cells) is papermill's. ``mask_notebook`` (a step with
secrets, ``masking.Masker.notebook``) masks the notebook each time papermill saves it.
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


papermill_engines.register(ENGINE_NAME, WarmKernelEngine)
