"""Warm kernels of a Dask worker process (executors/dask/warm.py), exercised in this
process with real kernels: a step gets a started kernel, a spare waits for the next one,
and spares nobody uses are shut down."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from mlpipe_jupyter.executors.dask import warm
from mlpipe_jupyter.executors.kernels import WarmKernel
from tests.leftovers import kernels_of

pytestmark = pytest.mark.slow


def _kernels() -> list[psutil.Process]:
    """This process's live kernel processes (started or forked for it)."""
    return kernels_of(os.getpid())


def _wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_steps_get_started_kernels_and_idle_spares_are_shut_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "IDLE_SECONDS", 1.0)
    monkeypatch.setattr(warm, "REAP_INTERVAL_SECONDS", 0.2)
    try:
        warm.prewarm("python3", str(tmp_path))
        _wait_for(lambda: len(_kernels()) == 1)  # started before any step asked

        seen: list[int] = []

        def step(kernel: WarmKernel | None, error: Exception | None) -> None:
            assert kernel is not None, error
            seen.append(kernel.manager.provisioner.process.pid)

        warm.run_with_kernel("python3", tmp_path, step)
        warm.run_with_kernel("python3", tmp_path, step)
        assert len(set(seen)) == 2  # each step had a kernel of its own ...
        _wait_for(lambda: {p.pid for p in _kernels()}.isdisjoint(seen))  # ... shut down after
        _wait_for(lambda: len(_kernels()) == 1)  # and a spare waits for the next step
        _wait_for(lambda: not _kernels())  # until nobody used it for IDLE_SECONDS
    finally:
        warm.close_all()
