"""What a run leaves behind: kernel processes, files under a private TMPDIR and Jupyter
runtime folder, ``mlpipe-ipc-*`` folders. Used by the leftover tests, and runnable as a
measurement (``python -m tests.leftovers``) that ends ``mlpipe run`` each way and prints
what each ending left.

Every process started for a measurement gets its own ``TMPDIR`` and ``JUPYTER_RUNTIME_DIR``
(inherited by its kernels), so the kernels and files counted are that test's alone, even
while other tests or users run kernels on the same machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.conftest import write_notebook

SLEEPY = [
    "%%mlsetup\nimport pathlib, time",
    # the marker says the step's code runs (a signal now reaches a run with a busy kernel)
    "%%mlstep nap --output o --param seconds=60\n"
    "pathlib.Path('running').write_text('1')\ntime.sleep(seconds)",
]
QUICK = ["%%mlstep quick --output o\n(outputs.o / 'v').write_text('1')"]
FAILING = ["%%mlstep broken\nraise ValueError('on purpose')"]


@dataclass
class Sandbox:
    """A project folder with its workspace, and the private temporary folders of the
    processes started in it."""

    root: Path
    tmp: Path = field(init=False)  # the private TMPDIR

    def __post_init__(self) -> None:
        for folder in (self.project, self.runtime):
            folder.mkdir(parents=True, exist_ok=True)
        # short, as TMPDIRs are: kernels' socket paths must stay under ~100 characters
        self.tmp = Path(tempfile.mkdtemp(prefix="mlt-", dir="/tmp"))

    @property
    def project(self) -> Path:
        return self.root / "project"

    def remove(self) -> None:
        """Remove the private TMPDIR (it lives outside ``root``)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def runtime(self) -> Path:
        return self.root / "runtime"

    def env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.tmp), "JUPYTER_RUNTIME_DIR": str(self.runtime),
                "MLPIPE_HOME": str(self.project / ".mlpipe"),
                "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def notebook(self, name: str, cells: list[str]) -> Path:
        return write_notebook(self.project / f"{name}.ipynb", cells)

    def start_run(self, notebook: Path, *args: str, new_session: bool = False
                  ) -> subprocess.Popen[bytes]:
        """``mlpipe run NOTEBOOK`` in the background (in a process group of its own with
        ``new_session``, as a shell job or a systemd unit)."""
        (self.project / "running").unlink(missing_ok=True)
        return subprocess.Popen(
            [sys.executable, "-m", "mlpipe_jupyter", "run", str(notebook), "-q", *args],
            cwd=self.project, env=self.env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=new_session)

    def run(self, notebook: Path, *args: str, timeout: float = 180) -> int:
        process = self.start_run(notebook, *args)
        return process.wait(timeout=timeout)

    def wait_running(self, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
        """Until the SLEEPY step's code runs in its kernel."""
        deadline = time.monotonic() + timeout
        while not (self.project / "running").exists():
            if process.poll() is not None:
                raise AssertionError(f"the run ended ({process.returncode}) before its step ran")
            if time.monotonic() > deadline:
                raise AssertionError("the step did not start")
            time.sleep(0.05)

    # -- what is left ----------------------------------------------------------------------
    def kernels(self) -> list[psutil.Process]:
        return kernel_processes(self.tmp)

    def files(self) -> list[str]:
        """Everything under the private TMPDIR and runtime folder (relative names)."""
        found = []
        for base in (self.tmp, self.runtime):
            for path in sorted(base.rglob("*")):
                found.append(f"{base.name}/{path.relative_to(base)}")
        return found

    def leftovers(self) -> dict[str, list[str]]:
        return {
            "kernels": [f"{p.pid} {' '.join(p.cmdline()[-3:])}" for p in self.kernels()],
            "files": self.files(),
            "ipc_folders": [p.name for p in self.tmp.glob("mlpipe-ipc-*")],
        }

    def wait_clean(self, timeout: float = 30) -> dict[str, list[str]]:
        """What is left once nothing changes any more (kernels of a dead owner exit within
        a few seconds on their own, when they do): returns as soon as nothing is left."""
        deadline = time.monotonic() + timeout
        left = self.leftovers()
        while any(left.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.leftovers()
        return left


def kernel_processes(tmpdir: Path) -> list[psutil.Process]:
    """Live kernel processes started with this TMPDIR (inherited from their runner), and
    kernels forked from a kernel template for a runner with this TMPDIR: those carry the
    template's command line and environment, but their sockets are in the runner's
    ``mlpipe-ipc-*`` folder under that TMPDIR."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(process.cmdline())
            if "ipykernel" in command:
                if process.environ().get("TMPDIR") == str(tmpdir):
                    found.append(process)
            elif "kernel_template" in command and _has_socket_under(process, tmpdir):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _has_socket_under(process: psutil.Process, folder: Path) -> bool:
    prefix = f"{folder}{os.sep}"
    return any(path.startswith(prefix) for path in _unix_sockets(process))


def _unix_sockets(process: psutil.Process) -> list[str]:
    listing = getattr(process, "net_connections", None) or process.connections
    return [c.laddr for c in listing(kind="unix") if isinstance(c.laddr, str)]


def kernels_of(requester: int) -> list[psutil.Process]:
    """The live kernels that process ``requester`` started: its ipykernel children, and
    kernels forked for it from a kernel template (their sockets are in its
    ``mlpipe-ipc-PID-*`` folder)."""
    def alive(process: psutil.Process) -> bool:
        return process.status() != psutil.STATUS_ZOMBIE

    found = []
    for process in psutil.Process(requester).children(recursive=True):
        try:
            if alive(process) and "ipykernel" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    marker = f"{os.sep}mlpipe-ipc-{requester}-"
    for process in psutil.process_iter():
        try:
            if (alive(process) and "kernel_template" in " ".join(process.cmdline())
                    and any(marker in path for path in _unix_sockets(process))):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not: it ended, unreaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition: Callable[[], object], timeout: float = 30) -> None:
    """Wait until ``condition()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def kill_kernels(tmpdir: Path) -> None:
    """Tidy up after a test that failed (never part of what a test checks)."""
    for process in kernel_processes(tmpdir):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the measurement ----------------------------------------------------------------------------
def _signal_ending(signum: int, group: bool = False) -> Callable[[Sandbox], None]:
    def end(box: Sandbox) -> None:
        process = box.start_run(box.notebook("sleepy", SLEEPY), new_session=group)
        box.wait_running(process)
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        process.wait(timeout=120)
    return end


def _kill9_ending(box: Sandbox) -> None:
    _signal_ending(signal.SIGKILL)(box)


ENDINGS: dict[str, Callable[[Sandbox], None]] = {
    "normal": lambda box: box.run(box.notebook("quick", QUICK)) and None,
    "failed step": lambda box: box.run(box.notebook("failing", FAILING)) and None,
    "SIGINT": _signal_ending(signal.SIGINT),
    "SIGTERM": _signal_ending(signal.SIGTERM),
    "SIGHUP": _signal_ending(signal.SIGHUP),
    "process-group SIGTERM": _signal_ending(signal.SIGTERM, group=True),
    "process-group SIGINT": _signal_ending(signal.SIGINT, group=True),
    "kill -9": _kill9_ending,
}


def _report(label: str, left: dict[str, list[str]]) -> None:
    print(f"{label}: {len(left['kernels'])} kernels, {len(left['files'])} files, "
          f"{len(left['ipc_folders'])} ipc folders")
    for kind, items in left.items():
        for item in items:
            print(f"    {kind}: {item}")


def measure(root: Path) -> None:
    for index, (name, end) in enumerate(ENDINGS.items()):
        box = Sandbox(root / f"e{index}")
        end(box)
        time.sleep(3)  # what a dead owner's kernels do on their own, they have done by now
        _report(name, box.leftovers())
        if name == "kill -9":
            box.run(box.notebook("quick", QUICK))
            time.sleep(1)
            _report("  after the next run", box.leftovers())
        kill_kernels(box.tmp)


if __name__ == "__main__":
    measure(Path(tempfile.mkdtemp(prefix="mlpipe-leftovers-")))
