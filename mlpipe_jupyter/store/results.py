"""Committed step results: immutable output folders, found by fingerprint.

A step writes into a staging folder; only when it succeeds is the folder renamed into
``results/<result_id>`` (one atomic rename on the same file system) and indexed. A crash at
any moment leaves either no result or a whole one, never a partial folder that could be
reused. Result ids are the step fingerprint for ordinary executions, and the fingerprint
plus the run id for forced ones (``--no-reuse``, ``--regenerate``, ``--step``).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from mlpipe_jupyter.processes import process_alive
from mlpipe_jupyter.store.datasets import make_read_only
from mlpipe_jupyter.store.workspace import Workspace


class ResultStore:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def path(self, result_id: str, output: str | None = None) -> Path:
        folder = self.workspace.results_dir / result_id
        return folder / output if output else folder

    def find(self, fingerprint: str) -> str | None:
        """The newest committed result with this fingerprint whose folder exists."""
        rows = self.workspace.query(
            "SELECT result_id FROM results WHERE fingerprint=? ORDER BY committed_at DESC",
            (fingerprint,),
        )
        for row in rows:
            if self.path(row["result_id"]).is_dir():
                return str(row["result_id"])
        return None

    def exists(self, result_id: str) -> bool:
        return self.path(result_id).is_dir()

    def new_staging(self, run_id: str, step: str, outputs: list[str]) -> Path:
        """A fresh folder for one attempt of a step, with an empty sub-folder per output.

        The name carries the host and pid so that leftovers of a killed runner can be told
        from the folders of a runner still at work.
        """
        name = "~".join((run_id, step, socket.gethostname(), str(os.getpid()), str(time.time_ns())))
        folder = self.workspace.staging_dir / name
        for output in outputs:
            (folder / output).mkdir(parents=True)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def commit(self, staging: Path, result_id: str, fingerprint: str, run_id: str, step: str) -> str:
        """Make a staging folder the committed result ``result_id``. Idempotent under races:
        when another run committed the same result first, ours is discarded and theirs kept."""
        target = self.path(result_id)
        make_read_only(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            discard(staging)
        with self.workspace.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO results (result_id, fingerprint, run_id, step, "
                "committed_at) VALUES (?,?,?,?,?)",
                (result_id, fingerprint, run_id, step, time.time()),
            )
        return result_id

    def clean_stale_staging(self) -> int:
        """Remove staging folders left by runners of this host that are no longer alive."""
        removed = 0
        host = socket.gethostname()
        if not self.workspace.staging_dir.is_dir():
            return 0
        for folder in self.workspace.staging_dir.iterdir():
            parts = folder.name.split("~")
            if len(parts) != 5 or parts[2] != host or not parts[3].isdigit():
                continue
            if not process_alive(int(parts[3])):
                discard(folder)
                removed += 1
        return removed


def discard(folder: Path) -> None:
    """Delete a folder even where make_read_only took write permission away."""

    def allow_and_retry(function, path, _exc_info):  # type: ignore[no-untyped-def]
        os.chmod(os.path.dirname(path), 0o755)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o755)
        function(path)

    # onerror is deprecated from 3.12 in favour of onexc, but is the one 3.10+ all accept
    shutil.rmtree(folder, onerror=allow_and_retry)
