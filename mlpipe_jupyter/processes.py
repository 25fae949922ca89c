"""What is known of a process by its pid: whether it is alive (the check that the store (a
run's owner), the executors (a kernel's, a container's or a template's owner) and the
schedulers (a firing's owner) share) and the fields of ``/proc/PID/stat``. A module of its
own so that what runs beside a step (a step process, the runner or lane in a step's
container) asks without importing the store."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (another user's counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, from the state on (field 3
    of proc(5) is item 0); ``None`` when the process is gone or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    return text.rsplit(b")", 1)[-1].decode("ascii", "replace").split() or None
