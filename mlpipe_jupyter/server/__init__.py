"""The Jupyter server extension: the REST API and live updates behind the JupyterLab panel.

``pip install mlpipe_jupyter`` enables it (a config file in
``etc/jupyter/jupyter_server_config.d``); the routes live under ``{base_url}mlpipe/api/``.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

from mlpipe_jupyter.server.service import PipelineService


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "mlpipe_jupyter.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Register the routes; runs started here are canceled when the server stops."""
    from mlpipe_jupyter.server.handlers import handlers

    root = Path(serverapp.root_dir)
    service = PipelineService(root)
    web_app = serverapp.web_app
    web_app.settings["mlpipe_service"] = service
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))
    atexit.register(service.shutdown)
    serverapp.log.info("mlpipe_jupyter: REST API at %smlpipe/api/ (workspace %s)",
                       web_app.settings["base_url"], service.workspace_dir)
