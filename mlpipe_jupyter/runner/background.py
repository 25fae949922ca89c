"""A pipeline run (or a sweep) in a background thread, so that its caller stays usable
while it runs: the kernel that ran ``%mlpipe run``, or the Jupyter server that answered a
REST request."""

from __future__ import annotations

import threading
import time

from mlpipe_jupyter.events import RUN_FINISHED, RUN_STARTED, EventBus, RunEvent
from mlpipe_jupyter.model.sweep import SweepSpec
from mlpipe_jupyter.runner.runner import Runner, RunRequest, RunResult
from mlpipe_jupyter.runner.sweep import SweepRequest, SweepResult, run_sweep
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.sweeps import new_sweep_id

# How long ``start`` waits for the run to pass validation and planning, so that definition
# errors show in the cell that asked for the run rather than vanish in the thread.
START_TIMEOUT_SECONDS = 30.0


class BackgroundRun:
    """One ``Runner.run`` (or, given ``sweep``, one sweep) in a daemon thread, with its
    events, outcome and cancel. A sweep's id is known before it starts (``sweep_id``);
    ``run_id`` is the run that started or ended last."""

    def __init__(self, request: RunRequest, store: Store | None = None,
                 events: EventBus | None = None, sweep: SweepSpec | None = None,
                 yes: bool = False) -> None:
        self.request = request
        self.runner = Runner(store, events or EventBus())
        self.events = self.runner.events
        self.run_id: str | None = None
        self.sweep = sweep
        self.sweep_id = new_sweep_id() if sweep is not None else None
        self._yes = yes
        self.result: RunResult | None = None
        self.sweep_result: SweepResult | None = None
        self.error: BaseException | None = None
        self.started_at = time.time()
        self._started = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mlpipe-run", daemon=True)
        self.events.subscribe(self._follow)

    def _follow(self, event: RunEvent) -> None:
        if event.kind == RUN_STARTED:
            self.run_id = event.run_id
            self._started.set()
        elif event.kind == RUN_FINISHED:
            self.run_id = event.run_id

    def _work(self) -> None:
        try:
            if self.sweep is not None:
                self.sweep_result = run_sweep(
                    SweepRequest(self.request, self.sweep, self._yes, self.sweep_id),
                    self.runner)
            else:
                self.result = self.runner.run(self.request)
        except BaseException as exc:  # reported by the front-end that started the run
            self.error = exc
        finally:
            self._finished.set()
            self._started.set()

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start, and return once the run is recorded (or failed before it could be).

        Check ``error`` afterwards: a definition or parameter error is set by then."""
        self._thread.start()
        self._started.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends (True) or ``timeout`` seconds pass (False)."""
        return self._finished.wait(timeout)

    def cancel(self) -> None:
        """Ask the runner to stop; kernels are stopped and the run is marked canceled."""
        self.runner.cancel()
