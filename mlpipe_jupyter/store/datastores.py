"""Named object-storage datastores of a workspace, kept in ``.mlpipe/datastores.json``.

A datastore is only a name and an fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``abfs://...``). Credentials and endpoints are never stored here: fsspec and the cloud SDKs
take them from their standard places (``AWS_ACCESS_KEY_ID``/``AWS_ENDPOINT_URL``, config
files, instance roles), on the runner and on every worker. A compute target names a
datastore with ``mlpipe compute add NAME --dask ADDR --datastore DATASTORE``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass

from mlpipe_jupyter.errors import ExecutorError, NotFoundError
from mlpipe_jupyter.store.workspace import Workspace

FILE_NAME = "datastores.json"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
RESERVED = frozenset({"shared"})
SCHEMES = ("s3", "gs", "gcs", "abfs", "az", "memory", "file")


@dataclass(frozen=True)
class Datastore:
    name: str
    url: str  # e.g. s3://bucket/prefix, no credentials
    created_at: float = 0.0


def check_url(url: str) -> str:
    """The URL without a trailing slash; ExecutorError when it cannot be a datastore."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES or not rest.strip("/"):
        raise ExecutorError(f"bad datastore URL {url!r}: use an fsspec URL such as "
                            f"s3://BUCKET/PREFIX ({', '.join(s + '://' for s in SCHEMES)})")
    if "@" in rest.split("/", 1)[0] or "?" in rest:
        raise ExecutorError(f"datastore URL {scheme}://...: put no credentials or options in "
                            "it; they come from the environment and config files")
    return url.rstrip("/")


class Datastores:
    """The workspace's named datastores."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    @property
    def path(self) -> os.PathLike[str]:
        return self.workspace.root / FILE_NAME

    def _load(self) -> dict[str, Datastore]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                raw = json.load(handle)
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ExecutorError(f"{self.path} is not valid JSON ({exc}); fix or remove it") from None
        return {name: Datastore(name=name, **fields)
                for name, fields in raw.get("datastores", {}).items()}

    def _save(self, stores: dict[str, Datastore]) -> None:
        self.workspace.ensure_created()
        data = {"datastores": {s.name: {k: v for k, v in asdict(s).items() if k != "name"}
                               for s in sorted(stores.values(), key=lambda s: s.name)}}
        handle, temporary = tempfile.mkstemp(dir=self.workspace.root, prefix=".datastores-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
        os.replace(temporary, self.path)

    def names(self) -> list[str]:
        return sorted(self._load())

    def all(self) -> list[Datastore]:
        return [s for _, s in sorted(self._load().items())]

    def get(self, name: str) -> Datastore:
        stores = self._load()
        if name not in stores:
            raise NotFoundError(f"no datastore {name!r} (known: "
                                f"{', '.join(sorted(stores)) or 'none'}); add one with "
                                f"`mlpipe datastore add {name} s3://BUCKET/PREFIX`")
        return stores[name]

    def add(self, name: str, url: str, replace: bool = False) -> Datastore:
        if not _NAME.match(name) or name in RESERVED:
            raise ExecutorError(f"bad datastore name {name!r}: use letters, digits, '-' and '_', "
                                "starting with a letter, and not 'shared'")
        stores = self._load()
        if name in stores and not replace:
            raise ExecutorError(f"datastore {name!r} exists; use --replace to change it")
        store = Datastore(name, check_url(url), time.time())
        stores[name] = store
        self._save(stores)
        return store

    def remove(self, name: str) -> None:
        stores = self._load()
        self.get(name)
        del stores[name]
        self._save(stores)


def resolve_datastore(workspace: Workspace | None, datastore: str | None) -> str | None:
    """The object-store URL a compute target's datastore means (None: shared filesystem)."""
    if datastore in (None, "", "shared"):
        return None
    assert datastore is not None
    if "://" in datastore:
        return check_url(datastore)
    if workspace is None:
        raise ExecutorError(f"datastore {datastore!r}: no workspace to look its URL up in")
    return Datastores(workspace).get(datastore).url
