"""Named compute targets of a workspace, kept in ``.mlpipe/compute.json``.

A JSON file rather than a SQLite table: targets are a handful of small records edited by
``mlpipe compute add/remove``, and a file keeps them out of the run store's schema (and
readable by hand). Writes replace the file atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mlpipe_jupyter.errors import ExecutorError, NotFoundError
from mlpipe_jupyter.store.workspace import Workspace

FILE_NAME = "compute.json"
# What a target can be named: not an executor's name, not a URL.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
RESERVED = frozenset({"local", "docker", "dask"})
DATASTORES = ("shared",)  # a shared filesystem: the same paths on every node


@dataclass(frozen=True)
class ComputeTarget:
    """One named target: which executor, where, and which datastore its workers use."""

    name: str
    kind: str  # the executor: "dask"
    address: str  # e.g. tcp://scheduler-host:8786
    datastore: str = "shared"
    created_at: float = 0.0


class ComputeTargets:
    """The workspace's named compute targets."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    @property
    def path(self) -> Path:
        return self.workspace.root / FILE_NAME

    def _load(self) -> dict[str, ComputeTarget]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ExecutorError(f"{self.path} is not valid JSON ({exc}); fix or remove it") from None
        return {name: ComputeTarget(name=name, **fields)
                for name, fields in raw.get("targets", {}).items()}

    def _save(self, targets: dict[str, ComputeTarget]) -> None:
        self.workspace.ensure_created()
        data = {"targets": {t.name: {k: v for k, v in asdict(t).items() if k != "name"}
                            for t in sorted(targets.values(), key=lambda t: t.name)}}
        handle, temporary = tempfile.mkstemp(dir=self.workspace.root, prefix=".compute-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
        os.replace(temporary, self.path)

    def names(self) -> list[str]:
        return sorted(self._load())

    def all(self) -> list[ComputeTarget]:
        return [t for _, t in sorted(self._load().items())]

    def get(self, name: str) -> ComputeTarget:
        targets = self._load()
        if name not in targets:
            raise NotFoundError(f"no compute target {name!r} (known: "
                                f"{', '.join(sorted(targets)) or 'none'}); add one with "
                                f"`mlpipe compute add {name} --dask tcp://HOST:PORT`")
        return targets[name]

    def add(self, name: str, kind: str, address: str, datastore: str = "shared",
            replace: bool = False) -> ComputeTarget:
        """Store a target; an existing name needs ``replace``."""
        if not _NAME.match(name) or name in RESERVED:
            raise ExecutorError(
                f"bad compute target name {name!r}: use letters, digits, '-' and '_', starting "
                f"with a letter, and none of {', '.join(sorted(RESERVED))}"
            )
        if datastore not in DATASTORES:
            from mlpipe_jupyter.store.datastores import Datastores, check_url

            if "://" in datastore:
                check_url(datastore)
            elif datastore not in Datastores(self.workspace).names():
                raise ExecutorError(
                    f"datastore {datastore!r} is not supported for compute targets (supported: "
                    f"{', '.join(DATASTORES)}, a datastore from `mlpipe datastore add`, or an "
                    "fsspec URL such as s3://BUCKET/PREFIX)")
        targets = self._load()
        if name in targets and not replace:
            raise ExecutorError(f"compute target {name!r} exists; use --replace to change it")
        target = ComputeTarget(name, kind, address, datastore, time.time())
        targets[name] = target
        self._save(targets)
        return target

    def remove(self, name: str) -> None:
        targets = self._load()
        self.get(name)  # NotFoundError naming the known ones
        del targets[name]
        self._save(targets)
