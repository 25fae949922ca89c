"""The package keeps the layers of DESIGN.md: ``lint-imports`` checks the contracts that
``pyproject.toml`` declares (``[tool.importlinter]``), on the source tree of this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def lint_imports() -> str:
    """The ``lint-imports`` of this Python (the ``test`` extra installs it)."""
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.is_file() else shutil.which("lint-imports")
    assert found, "lint-imports is missing: pip install -e '.[test]' (import-linter)"
    return found


def test_imports_keep_the_layers() -> None:
    # this checkout's package, whatever is installed; no cache folder in the repository
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    checked = subprocess.run(
        [lint_imports(), "--no-cache", "--no-logo"], cwd=REPO, env=env,
        capture_output=True, text=True, check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 broken" in checked.stdout
