"""A lane's step template: in a container that serves a run's docker steps one after another.

A docker step used to pay for a whole container of its own: the engine's work, a Python,
ipykernel's and papermill's imports (~0.7 s of CPU on a 2-core machine, most of a docker
step's cost beyond a local one). A lane pays that once. Its container runs ``kernel_host``
with ``--lane SOCKET``: the kernel host imports a kernel's modules and forks this module,
which imports what a step process needs (``step_process.prepare_template``) and serves,
on SOCKET (in a folder of the runner's, mounted into the container), the step processes of
the run's steps, exactly as the per-user step template serves local ones. Each step still
gets a new step process and a new kernel (forked from the kernel host), so no module,
variable or environment change of one step reaches the next.

What a container adds to a process, a step could leave behind for the next one: files in
its writable folders (``/tmp``, ``/var/tmp``, ``/run/lock``, ``/dev/shm``: the rest of the
image is the root user's, and the steps run as the starting user) and processes (a server
a step started). So a lane runs **one step at a time**, and when a step's process has ended,
before its runner hears of it, every process but the lane's own (the init, the tether, the
kernel host, this template) is killed and those folders are emptied: the next step finds
the container as a fresh one would be, apart from the imports held by its templates.

One thing this does not undo: when the starting user is root (uid 0; capabilities are
dropped, but root owns the image's files), a step can write into the image itself, and a
later step of the same lane would see it. Installing packages is the likely case, and it
is caught: a step template refuses to fork once the installed packages changed
(``Template._check_environment``), so the next step gets a container of its own and the
lane is removed. Making the image read-only (``--read-only`` with /tmp as tmpfs) would
close the rest, at the price of temporary files in memory instead of on disk. The
step processes and kernels are the first the OOM killer picks (``oom_score_adj``), so
memory pressure ends a step, not the templates that serve the next ones.

The cleaning runs only inside a lane's container (``in_lane_container``: the variable the
lane sets, Docker's ``/.dockerenv``, and PID 1 started as a lane through the tether): run
anywhere else, it would kill the user's processes.

Usage (by ``kernel_host``, as its first fork): ``main([SOCKET])``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from mlpipe_jupyter.executors.docker.kernel_host import LANE_FLAG, LANE_VARIABLE
from mlpipe_jupyter.executors.kernel_template import (
    STEP,
    Template,
    _Connection,
    first_to_kill_for_memory,
)
from mlpipe_jupyter.processes import stat_fields

LANE_KEY = "lane"  # the only template a lane's socket leads to: no other key to tell apart
# where a step running as a user other than root can write in a Debian image (``find / -xdev
# -type d -perm -0002`` in the base image), and Docker's /dev/shm
WRITABLE_FOLDERS = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm")
KILL_ROUNDS = 50  # a process may fork while the others are killed: look again, this often


def main(argv: list[str]) -> int:
    from mlpipe_jupyter.executors.step_process import prepare_template

    socket_path = argv[0]
    prepare_template()
    gc.collect()
    gc.freeze()  # shared with the step processes, as in the per-user template
    lane = LaneTemplate(socket_path, LANE_KEY, idle_seconds=float("inf"), flavor=STEP)
    lane.bind()
    with contextlib.suppress(SystemExit):  # SIGTERM: the container is being stopped
        lane.serve()
    return 0


class LaneTemplate(Template):
    """A step template that forks one step process at a time and cleans the container
    after each."""

    def _fork(self, connection: _Connection, request: Any, fds: list[int]) -> None:
        if self.children:
            for fd in fds:
                os.close(fd)
            self._reply(connection, {"error": "the lane runs one step at a time"})
            return
        super()._fork(connection, request, fds)

    def prepare_child(self) -> None:
        first_to_kill_for_memory()  # the step process; the template serves on

    def exit_report(self, pid: int, code: int) -> dict[str, Any]:
        return {**super().exit_report(pid, code), **clean_container()}


@functools.cache  # none of it changes while the process lives: looked at once, not per step
def in_lane_container() -> bool:
    """Whether this process runs in a lane's container, where cleaning is safe: the
    variable the lane's container sets, and the container's first process (Docker's init)
    started as a lane, through the tether. Anywhere else (a machine that is itself a
    container, with the variable exported by mistake), PID 1 is another program."""
    if os.environ.get(LANE_VARIABLE) != "1" or not os.path.exists("/.dockerenv"):
        return False
    try:
        command = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(part.endswith(b"/tether.py") for part in command) and LANE_FLAG.encode() in command


def clean_container() -> dict[str, Any]:
    """Kill every process but the lane's own and empty the writable folders (but for the
    kernel host's runtime folder); what was done. Nothing outside a lane."""
    if not in_lane_container():
        return {"cleaned": False}
    killed, left = _kill_others()
    removed = _empty_folders(keep=_runtime_folder())
    # processes that outlived every round (forking faster than killed): not clean
    return {"cleaned": not left, "killed": killed, "left": left, "removed": removed}


def _lane_pids() -> set[int]:
    """PID 1, this process and its ancestors (the tether, the kernel host)."""
    keep = {1, os.getpid()}
    pid = os.getpid()
    while pid > 1:
        pid = _parent(pid)
        keep.add(pid)
    return keep


def _parent(pid: int) -> int:
    fields = stat_fields(pid)
    return int(fields[1]) if fields and len(fields) > 1 else 0  # field 4 of proc(5): ppid


def _alive_others(keep: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        fields = stat_fields(int(entry))
        if fields is None:
            continue  # gone meanwhile
        if fields[0] not in ("Z", "X"):  # a zombie is dead already; its parent reaps it
            found.append(int(entry))
    return found


def _kill_others() -> tuple[int, int]:
    """SIGKILL every process but the lane's, until none is left (or ``KILL_ROUNDS``);
    how many were killed, how many are still there."""
    keep = _lane_pids()
    killed: set[int] = set()
    others = _alive_others(keep)
    for _ in range(KILL_ROUNDS):
        if not others:
            break
        for pid in others:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.001)
        # a killed process runs until the kernel has delivered the signal: look again
        others = _alive_others(keep)
    return len(killed), len(others)


def _runtime_folder() -> str:
    """The kernel host's runtime folder (its kernel template's socket): kept."""
    return os.path.realpath(os.environ.get("MLPIPE_RUNTIME_DIR", "/nonexistent"))


def _empty_folders(keep: str) -> int:
    """Empty the writable folders, never touching what is mounted into them (the
    workspace's folders are, when they live under /tmp on the host): a folder holding a
    mount is emptied around it."""
    mounts = _mount_points()
    return sum(_empty(folder, mounts | {keep}) for folder in WRITABLE_FOLDERS)


def _empty(folder: str, kept: set[str]) -> int:
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        path = os.path.realpath(entry.path) if not entry.is_symlink() else entry.path
        if path in kept:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if any(other.startswith(path + os.sep) for other in kept):
                    removed += _empty(path, kept)  # a mount (or the runtime folder) inside
                    continue
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass  # not the step's to leave (the image's own): it was there before
    return removed


def _mount_points() -> set[str]:
    """Every mount point in this container."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
            return mount_points_in(mountinfo.read())
    except OSError:
        return set()


def mount_points_in(mountinfo: str) -> set[str]:
    """The mount points (fifth field) of ``/proc/self/mountinfo``'s text; a space, tab,
    newline or backslash in a path comes as an octal escape."""
    points = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points
