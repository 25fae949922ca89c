"""What a run records about its source: a copy of the notebook and the git state."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_info(folder: Path) -> dict[str, Any]:
    """Commit, branch and dirty state of the repository holding ``folder`` ({} outside git)."""
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return {}
    branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "branch": branch, "dirty": bool(status)}


def snapshot_notebook(notebook: Path, run_dir: Path) -> Path:
    """Copy the source notebook into the run's folder (the source itself is never touched)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / f"snapshot-{notebook.name}"
    shutil.copy2(notebook, target)
    return target
