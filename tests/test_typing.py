"""The package type-checks: mypy with pyproject.toml's settings (strict on model/, runner/
and store/), on the source tree of this checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mypy_passes() -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "mlpipe_jupyter"], cwd=REPO,
        capture_output=True, text=True, check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
