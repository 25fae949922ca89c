"""Parameter values through publishing: a published version's defaults, ``mlpipe trigger
-p`` and a schedule's parameters reach the step as the same Python values and types."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpipe_jupyter.scheduling.schedules import firings, get_schedule
from mlpipe_jupyter.store import Store
from tests.conftest import run_cli
from tests.value_probe import (
    TRICKY_ARGS,
    TRICKY_DEFAULTS,
    TRICKY_OVERRIDDEN,
    assert_arrived,
    tricky_notebook,
)

pytestmark = pytest.mark.slow


def test_published_defaults_and_trigger_overrides(store: Store, workspace_dir: Path) -> None:
    notebook = tricky_notebook(workspace_dir / "probe.ipynb")
    assert run_cli("publish", str(notebook), "--name", "probe").returncode == 0
    shown = json.loads(run_cli("published", "show", "probe", "--json").stdout)
    assert shown["parameter_texts"]["use_gpu"] == "True"
    assert shown["parameter_texts"]["shape"] == "(1, 2)"
    assert shown["parameter_texts"]["grid"] == "{'C': [0.1, 1], 2: (True,)}"
    assert "use_gpu=True" in run_cli("published", "list").stdout

    done = run_cli("trigger", "probe", "--wait")
    assert done.returncode == 0, done.stderr
    assert_arrived(store, done.stdout.split()[1], TRICKY_DEFAULTS)

    done = run_cli("trigger", "probe", *TRICKY_ARGS, "--wait")
    assert done.returncode == 0, done.stderr
    assert_arrived(store, done.stdout.split()[1], TRICKY_OVERRIDDEN)


def test_schedule_parameters(store: Store, workspace_dir: Path) -> None:
    notebook = tricky_notebook(workspace_dir / "probe.ipynb")
    assert run_cli("publish", str(notebook), "--name", "probe").returncode == 0
    done = run_cli("schedule", "create", "probe", "--name", "often", "--every", "3s",
                   *TRICKY_ARGS)
    assert done.returncode == 0, done.stderr
    assert "use_gpu=false" in run_cli("schedule", "show", "often").stdout
    log = (workspace_dir / "scheduler.log").open("wb")
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "mlpipe_jupyter", "scheduler", "--tick", "0.3"],
        cwd=workspace_dir, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not any(f.status == "succeeded"
                      for f in firings(store, get_schedule(store, "often"))):
            assert time.monotonic() < deadline, (workspace_dir / "scheduler.log").read_text()
            time.sleep(0.3)
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=60)
    done = [f for f in firings(store, get_schedule(store, "often")) if f.status == "succeeded"]
    assert_arrived(store, done[0].run_ids[-1], TRICKY_OVERRIDDEN)
