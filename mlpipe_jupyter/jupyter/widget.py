"""The run DAG widget: steps drawn by layer and coloured by status, details on click.

The widget holds state only (synced traitlets); ``widget.js`` draws it. ``watch_run``
connects it to a runner's events, ``show_run`` fills it from the store for a past run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import traitlets

from mlpipe_jupyter.events import EventBus
from mlpipe_jupyter.jupyter.run_state import RunTracker, run_state
from mlpipe_jupyter.store import Store


class DagWidget(anywidget.AnyWidget):  # type: ignore[misc]
    """A pipeline run as a layered DAG. ``steps`` items are described in ``run_state``."""

    _esm = Path(__file__).with_name("widget.js")

    run_id = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    notebook = traitlets.Unicode("").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    steps = traitlets.List(traitlets.Dict()).tag(sync=True)

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the whole displayed state (one message to the browser)."""
        with self.hold_sync():
            self.run_id = state.get("run_id", "")
            self.status = state.get("status", "")
            self.notebook = state.get("notebook", "")
            self.error = state.get("error") or ""
            self.steps = list(state.get("steps", []))

    def summary(self) -> str:
        """The state as text, for consoles that cannot show widgets."""
        if not self.run_id:
            return "mlpipe run: not started"
        lines = [f"run {self.run_id}: {self.status}"]
        for step in self.steps:
            took = f" {step['duration']:.1f}s" if step.get("duration") is not None else ""
            lines.append(f"  {step['name']}: {step['status']}{took}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def watch_run(widget: DagWidget, events: EventBus, store: Any = Store.open) -> Any:
    """Keep ``widget`` up to date with the run the ``events`` bus reports. Returns the
    unsubscribe function. ``store`` opens the run's store when it is first needed."""
    return events.subscribe(RunTracker(widget.set_state, store))


def show_run(store: Store, run_ref: str = "latest") -> DagWidget:
    """A widget drawing a past (or running) run from the store."""
    widget = DagWidget()
    widget.set_state(run_state(store, run_ref))
    return widget
