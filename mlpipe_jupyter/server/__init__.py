"""The Jupyter server extension: the REST API and live updates behind the JupyterLab panel.

``pip install mlpipe_jupyter`` enables it (a config file in
``etc/jupyter/jupyter_server_config.d``); the routes live under ``{base_url}mlpipe/api/``.
With ``c.MlpipeExtension.run_scheduler = True`` the server also hosts the scheduler of
its workspace (see docs/scheduling.md), started with the server and stopped with it.
"""

from __future__ import annotations

import asyncio
import atexit
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float

from mlpipe_jupyter.server.service import PipelineService


class MlpipeExtension(ExtensionApp):
    """mlpipe in a Jupyter server: the REST API, and optionally the scheduler."""

    name = "mlpipe_jupyter.server"
    load_other_extensions = True

    run_scheduler = Bool(
        False,
        help="Host the scheduler of this server's workspace: fire its schedules while the "
        "server runs (stopped with the server). Off by default: run `mlpipe scheduler` "
        "instead, or as well (several schedulers may share a workspace).",
    ).tag(config=True)
    scheduler_tick_seconds = Float(
        1.0, help="How often the hosted scheduler looks for due schedules (seconds)."
    ).tag(config=True)

    service: PipelineService | None = None
    scheduler: Any = None  # a mlpipe_jupyter.scheduling.scheduler.Scheduler when hosted

    def initialize_handlers(self) -> None:
        """Register the routes; runs started here are canceled when the server stops."""
        from mlpipe_jupyter.server.handlers import handlers

        serverapp = self.serverapp
        assert serverapp is not None
        self.service = PipelineService(Path(serverapp.root_dir))
        web_app = serverapp.web_app
        web_app.settings["mlpipe_service"] = self.service
        web_app.settings["mlpipe_extension"] = self
        web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
        atexit.register(self.service.shutdown)
        self.log.info("mlpipe_jupyter: REST API at %smlpipe/api/ (workspace %s)",
                      web_app.settings["base_url"], self.service.workspace_dir)
        if self.run_scheduler:
            self.start_scheduler()

    def start_scheduler(self) -> None:
        from mlpipe_jupyter.scheduling.scheduler import Scheduler

        assert self.service is not None
        store = self.service.store(create=True)
        assert store is not None
        store.workspace.ensure_created()
        self.scheduler = Scheduler(store, tick_seconds=self.scheduler_tick_seconds)
        self.scheduler.start()
        atexit.register(self.stop_scheduler)
        self.log.info("mlpipe_jupyter: scheduler %s running on workspace %s",
                      self.scheduler.id, store.workspace.root)

    def stop_scheduler(self) -> None:
        """Stop firing; runs in progress are canceled and their firings left pending for the
        next scheduler (see ``Scheduler.stop``)."""
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            self.log.info("mlpipe_jupyter: stopping scheduler %s", scheduler.id)
            scheduler.stop()

    async def stop_extension(self) -> None:
        """The server is stopping: stop the scheduler and cancel this server's runs (off the
        event loop: a graceful stop may wait for runs to cancel)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.stop_scheduler)
        if self.service is not None:
            await loop.run_in_executor(None, self.service.shutdown)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "mlpipe_jupyter.server", "app": MlpipeExtension}]
