"""Whether a process is alive, by pid: the check that the store (a run's owner), the
executors (a kernel's, a container's or a template's owner) and the schedulers (a firing's
owner) share. A module of its own so that what runs beside a step (a step process, the
runner in a step's container) asks without importing the store."""

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
