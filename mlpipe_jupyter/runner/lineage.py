"""Lineage: which dataset versions a run read and wrote, which run and step produced each
version, and a look at a version's content (its files, the first rows of a table).

What the JupyterLab run view and datasets view show (through the REST API); a version's
producer is parsed from the source the runner records when it registers a step's output
("run RUN step STEP output OUT"), its readers from the step fingerprints that name it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlpipe_jupyter.store import DatasetVersion, Store
from mlpipe_jupyter.tabular import read_tabular_folder

_PRODUCED = re.compile(r"run (?P<run_id>\S+) step (?P<step>\S+) output (?P<output>\S+)")
_READ = re.compile(r"dataset:(?P<name>[^@]+)@v(?P<version>\d+)#")
PREVIEW_ROWS = 20
FILE_LIST_LIMIT = 200


def producer(version: DatasetVersion) -> dict[str, str] | None:
    """The run, step and output that registered ``version`` (None: registered by hand)."""
    match = _PRODUCED.fullmatch(version.source)
    return match.groupdict() if match else None


def version_dict(version: DatasetVersion) -> dict[str, Any]:
    return {
        "name": version.name, "version": version.version, "ref": version.ref,
        "kind": version.kind, "created_at": version.created_at, "files": version.files,
        "bytes": version.bytes, "fingerprint": version.fingerprint,
        "description": version.description, "source": version.source,
        "produced_by": producer(version),
    }


def list_datasets(store: Store) -> list[dict[str, Any]]:
    """Every dataset with its latest version and how many versions it has."""
    counts = store.datasets.versions()
    return [{**version_dict(latest), "versions": len(counts.get(latest.name, []))}
            for latest in store.datasets.all_latest()]


def dataset_history(store: Store, name: str) -> list[dict[str, Any]]:
    """A dataset's versions, newest first, each with its producer."""
    return [version_dict(v) for v in sorted(store.datasets.history(name),
                                            key=lambda v: v.version, reverse=True)]


def run_lineage(store: Store, run_ref: str) -> dict[str, list[dict[str, Any]]]:
    """The dataset versions a run's steps read (``--input NAME=dataset:DS``) and the ones
    its outputs became (``--output NAME=dataset:DS``)."""
    run = store.runs.get_run(run_ref)
    read: list[dict[str, Any]] = []
    for record in store.runs.step_runs(run.id):
        for name, identity in ((record.components or {}).get("inputs") or {}).items():
            match = _READ.match(str(identity))
            if match:
                read.append({"step": record.step, "input": name, "dataset": match["name"],
                             "version": int(match["version"])})
    written = []
    # one query, not every version of every dataset: the run view reads this on each update
    for version in store.datasets.from_source(f"run {run.id} "):
        made = producer(version)
        if made and made["run_id"] == run.id:
            written.append({"step": made["step"], "output": made["output"],
                            "dataset": version.name, "version": version.version})
    return {"read": read, "written": written}


def preview(store: Store, name: str, version: int | None = None,
            rows: int = PREVIEW_ROWS) -> dict[str, Any]:
    """A version's files (the first ``FILE_LIST_LIMIT``) and, for a tabular one, its
    first ``rows`` rows as text cells (columns and dtypes kept)."""
    found = store.datasets.get(name, version)
    files: list[dict[str, Any]] = []
    for path in sorted(p for p in Path(found.path).rglob("*") if p.is_file()):
        if len(files) >= FILE_LIST_LIMIT:
            break
        files.append({"path": path.relative_to(found.path).as_posix(),
                      "bytes": path.stat().st_size})
    table: dict[str, Any] | None = None
    if found.kind == "tabular":
        frame = read_tabular_folder(found.path, what=f"dataset {found.ref}").head(rows)
        table = {"columns": [str(c) for c in frame.columns],
                 "dtypes": [str(t) for t in frame.dtypes],
                 "rows": [[None if _missing(v) else str(v) for v in row]
                          for row in frame.itertuples(index=False)]}
    return {**version_dict(found), "file_list": files, "table": table}


def _missing(value: Any) -> bool:
    """None, NaN, NaT, pd.NA (a list or array cell is a value, never missing)."""
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


__all__ = ["dataset_history", "list_datasets", "preview", "producer", "run_lineage"]
