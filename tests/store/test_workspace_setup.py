"""A new workspace opened by several processes at the same moment (two first runs started
together, a scheduler and a run): each one gets a working database, none fails."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from mlpipe_jupyter.store.workspace import Workspace

OPENERS = 12


def _open_and_write(root: str, barrier: Any, results: Any, index: int) -> None:
    barrier.wait()
    try:
        workspace = Workspace(Path(root))
        with workspace.transaction() as db:
            db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (f"k{index}", "v"))
        mode = str(workspace.query("PRAGMA journal_mode")[0][0])
        workspace.close()
    except Exception as exc:  # reported to the test
        mode = f"{type(exc).__name__}: {exc}"
    results.put(mode)


def test_processes_opening_a_new_workspace_together_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for attempt in range(20):  # the race is a matter of microseconds: try it a few times
        root = tmp_path / f"w{attempt}" / ".mlpipe"
        Workspace(root).ensure_created()
        barrier, results = context.Barrier(OPENERS), context.Queue()
        processes = [context.Process(target=_open_and_write, args=(str(root), barrier, results, i))
                     for i in range(OPENERS)]
        for process in processes:
            process.start()
        modes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        assert modes == ["wal"] * OPENERS, modes
        keys = {row[0] for row in Workspace(root).query("SELECT key FROM settings")}
        assert keys == {f"k{i}" for i in range(OPENERS)}
