"""Nothing is left behind, however a local run ends: no kernel process, no kernel
connection file (it holds the kernel's HMAC key), no IPC socket folder, no temporary file.

Every run here is the real ``mlpipe run`` (or the library, for the soak) with a private
TMPDIR and Jupyter runtime folder, so what is counted is this test's alone.
"""

from __future__ import annotations

import gc
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpipe_jupyter.executors import kernels
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.runner.planning import Selection
from mlpipe_jupyter.runner.runner import Runner, RunRequest
from tests.leftovers import FAILING, QUICK, SLEEPY, Sandbox, kill_kernels, open_fds

pytestmark = pytest.mark.slow

NOTHING = {"kernels": [], "files": [], "ipc_folders": []}
EXIT_CANCELED = 130


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path)
    yield sandbox
    kill_kernels(sandbox.tmp)  # only after a failed assertion is there anything to kill
    sandbox.remove()


def test_a_run_that_succeeds_leaves_nothing(box: Sandbox) -> None:
    assert box.run(box.notebook("quick", QUICK)) == 0
    assert box.leftovers() == NOTHING


def test_a_rerun_that_reuses_every_step_leaves_nothing(box: Sandbox) -> None:
    """The command forks the first step's process as it starts (``head_start``), before it
    knows that every step will be reused: that process and its kernel, still starting,
    end with the command."""
    notebook = box.notebook("quick", QUICK)
    assert box.run(notebook) == 0
    for _ in range(3):
        assert box.run(notebook) == 0
        assert box.leftovers() == NOTHING


def test_a_run_refused_by_its_arguments_leaves_nothing(box: Sandbox) -> None:
    """The command's entry point begins the head start before the arguments are parsed
    (``cli.entry``): arguments refused then end it, and its kernel, still starting, stops
    and leaves no file. Twenty times: a process exiting while its kernel started in another
    thread left an empty IPC folder in about one run of ten (measured)."""
    notebook = box.notebook("quick", QUICK)
    for _ in range(20):
        assert box.run(notebook, "--no-such-option") == 2
        assert box.leftovers() == NOTHING


def test_a_run_whose_step_fails_leaves_nothing(box: Sandbox) -> None:
    assert box.run(box.notebook("failing", FAILING)) == 1
    assert box.leftovers() == NOTHING


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_run_stopped_by_a_signal_leaves_nothing(box: Sandbox, signum: int) -> None:
    run = box.start_run(box.notebook("sleepy", SLEEPY))
    box.wait_running(run)
    run.send_signal(signum)
    assert run.wait(timeout=120) == EXIT_CANCELED
    assert box.leftovers() == NOTHING


def test_a_run_whose_process_group_gets_sigterm_leaves_nothing(box: Sandbox) -> None:
    """systemd, `timeout` and a closing terminal signal the whole group."""
    run = box.start_run(box.notebook("sleepy", SLEEPY), new_session=True)
    box.wait_running(run)
    os.killpg(run.pid, signal.SIGTERM)
    assert run.wait(timeout=120) == EXIT_CANCELED
    assert box.leftovers() == NOTHING


def test_the_next_run_cleans_up_after_a_run_killed_with_sigkill(box: Sandbox) -> None:
    run = box.start_run(box.notebook("sleepy", SLEEPY))
    box.wait_running(run)
    run.kill()
    run.wait(timeout=30)
    # the dead runner could not clean up: its kernel folder (connection file, sockets) stays
    assert box.leftovers()["ipc_folders"]
    assert box.run(box.notebook("quick", QUICK)) == 0
    assert box.leftovers() == NOTHING


# -- soak: many runs in one long-lived process (as the Jupyter server and kernel do) --------
KILLS_ITSELF = ["%%mlstep victim\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)"]
SOAK_RUNS = 30
# After a full garbage collection the descriptors of a run (event loops, ZMQ sockets,
# log files) are all closed: measured, the count is the same after 1 and after 30 runs.
# The slack covers descriptors that a library opens once, the first time a path is taken
# (a thread pool's wake-up pipe, a lazily opened log handler) which may happen only in
# one of the later runs; a leak of one per run would exceed it many times over.
FD_SLACK = 4


def test_soak_30_runs_leave_no_kernels_files_or_descriptors(
        box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(box.tmp))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(box.runtime))
    monkeypatch.setenv("MLPIPE_HOME", str(box.project / ".mlpipe"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    monkeypatch.setattr(kernels, "_IPC_DIR", None)  # this process's folder: in box.tmp
    monkeypatch.chdir(box.project)
    notebooks = {
        "succeeded": box.notebook("quick", QUICK),
        "failed": box.notebook("failing", FAILING),
        "canceled": box.notebook("sleepy", SLEEPY),
        "kernel killed": box.notebook("victim", KILLS_ITSELF),
    }
    expected = {"succeeded": RunStatus.SUCCEEDED, "failed": RunStatus.FAILED,
                "canceled": RunStatus.CANCELED, "kernel killed": RunStatus.FAILED}

    def run(kind: str) -> None:
        runner = Runner()
        request = RunRequest(notebooks[kind], selection=Selection(regenerate=True))
        if kind == "canceled":
            (box.project / "running").unlink(missing_ok=True)

            def cancel_when_running() -> None:
                while not (box.project / "running").exists():
                    time.sleep(0.05)
                runner.cancel()

            threading.Thread(target=cancel_when_running, daemon=True).start()
        assert runner.run(request).status is expected[kind], kind

    def runner_killed() -> None:
        """A runner of its own (the CLI) killed with SIGKILL while its step runs."""
        process = box.start_run(notebooks["canceled"])
        box.wait_running(process)
        process.kill()
        process.wait(timeout=30)

    run("succeeded")  # the first run imports and opens what stays open (papermill, the store)
    gc.collect()
    fds, files = open_fds(), box.files()
    assert box.kernels() == []
    # the runner starts no kernel itself (each step's own step process does): it has no
    # kernel folder, and the step processes' folders went with them
    assert kernels._IPC_DIR is None and files == []

    started = time.monotonic()
    kinds = ["succeeded", "failed", "canceled", "kernel killed"]
    for index in range(SOAK_RUNS):
        if index % 10 == 9:
            runner_killed()  # the next run here reaps what it left
        else:
            run(kinds[index % len(kinds)])
    run("succeeded")
    took = time.monotonic() - started

    gc.collect()
    print(f"soak: {SOAK_RUNS} runs in {took:.0f} s; open fds {fds} -> {open_fds()}; "
          f"files under TMPDIR {len(files)} -> {len(box.files())}; kernels "
          f"{len(box.kernels())}")
    assert box.kernels() == []
    assert box.files() == files
    assert open_fds() <= fds + FD_SLACK
    assert not list((box.project / ".mlpipe" / "staging").glob("*"))  # nor staging folders
