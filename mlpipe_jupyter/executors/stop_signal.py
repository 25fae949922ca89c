"""The one way a running step is told to stop: a ``StopSignal`` with a reason.

A cancel (from the runner, or a Dask cancel event) and a timeout (the step runner's timer)
both set the same signal; the first reason wins, so an outcome says what really stopped
the step. Setting it runs the stop actions registered by whoever holds the step's process
(a kernel's ``kill``, a container's ``stop``), from the setting thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

CANCELED = "canceled"
TIMED_OUT = "timed_out"

StopAction = Callable[[], None]


class StopSignal:
    """Set once, from any thread, with a reason (``CANCELED`` or ``TIMED_OUT``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._actions: list[StopAction] = []
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        """Stop the step for ``reason``; a second call changes nothing."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            self._event.set()
            actions = list(self._actions)
        for action in actions:
            _call(action)

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    @property
    def canceled(self) -> bool:
        return self.reason == CANCELED

    @property
    def timed_out(self) -> bool:
        return self.reason == TIMED_OUT

    @contextmanager
    def watch(self, action: StopAction) -> Iterator[None]:
        """Run ``action`` when the signal is set while the block runs (at once when it is
        set already): how the holder of a kernel or a container gets it stopped."""
        with self._lock:
            already = self.reason is not None
            if not already:
                self._actions.append(action)
        if already:
            _call(action)
        try:
            yield
        finally:
            with self._lock:
                if action in self._actions:
                    self._actions.remove(action)


def _call(action: StopAction) -> None:
    try:
        action()
    except Exception:  # stopping something that ended already
        log.debug("a stop action failed", exc_info=True)
