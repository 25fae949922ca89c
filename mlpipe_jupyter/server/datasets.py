"""Datasets, as the REST API of one Jupyter server sees them: each dataset with its
versions, which run and step produced each version, its files and the first rows of a
tabular one. The read model is ``runner.lineage``; this only shapes the answers. A run's
lineage (the versions it read and wrote) is in its detail, ``GET runs/{run}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlpipe_jupyter.errors import NotFoundError
from mlpipe_jupyter.runner import lineage
from mlpipe_jupyter.server.payloads import json_safe
from mlpipe_jupyter.store import Store

MAX_PREVIEW_ROWS = 200


class DatasetsService:
    """``store`` gives the server's store, or None while there is no workspace."""

    def __init__(self, store: Callable[[], Store | None]) -> None:
        self._existing = store

    def _store(self) -> Store | None:
        store = self._existing()
        if store is None or not store.workspace.db_path.exists():
            return None
        return store

    def _required(self, name: str) -> Store:
        store = self._store()
        if store is None:
            raise NotFoundError(f"no dataset named {name!r} (this server's folder has no "
                                "mlpipe workspace)")
        return store

    def list_datasets(self) -> dict[str, Any]:
        """Every dataset with its latest version (and its producer) and its version count."""
        store = self._store()
        return {"datasets": json_safe(lineage.list_datasets(store)) if store else []}

    def dataset(self, name: str) -> dict[str, Any]:
        """One dataset's versions, newest first, each with the run and step that produced it
        (``produced_by`` null: registered by hand)."""
        versions = lineage.dataset_history(self._required(name), name)
        return {"name": name, "versions": json_safe(versions)}

    def preview(self, name: str, version: int, rows: int) -> dict[str, Any]:
        """A version's files and, for a tabular one, its first ``rows`` rows."""
        store = self._required(name)
        found = lineage.preview(store, name, version, rows=max(1, min(rows, MAX_PREVIEW_ROWS)))
        return dict(json_safe(found))
