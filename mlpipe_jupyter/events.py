"""Run events: what the runner tells its watchers (terminal progress, widget, panel).

Watchers that live in another process (the CLI following a run started elsewhere, the
JupyterLab panel) read the store instead; the store holds the same states.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RUN_STARTED = "run_started"
STEP_STATUS = "step_status"
RUN_FINISHED = "run_finished"


@dataclass(frozen=True)
class RunEvent:
    kind: str  # RUN_STARTED, STEP_STATUS or RUN_FINISHED
    run_id: str
    status: str  # the run's or the step's new status
    step: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


Subscriber = Callable[[RunEvent], None]


class EventBus:
    """Synchronous fan-out to subscribers; a failing subscriber never breaks a run."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def emit(self, event: RunEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("run event subscriber failed on %s", event)
