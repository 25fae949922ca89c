"""The state the DAG widget shows: the run read model (``runner.view``) as the widget syncs it.

Plain dictionaries, JSON-ready: the DAG widget syncs them to the browser as they are. One
step's state::

    {"name", "status", "duration", "reused", "reused_from", "upstream", "layer", "error",
     "decision", "run_if", "condition", "condition_result", "log_tail", "metrics",
     "output_notebook"}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlpipe_jupyter.runner.view import RunFollower, RunView, StepView, read_run
from mlpipe_jupyter.store import Store

LOG_TAIL_LINES = 20


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a step's log ('' when there is none yet)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def step_state(step: StepView) -> dict[str, Any]:
    """One step's display state. The widget shows the log tail and executed notebook of
    steps that executed in this run only (a reused step's are its source run's)."""
    log = step.log_path if not step.reused else None
    return {
        "name": step.name,
        "status": step.status,
        "duration": step.duration,
        "reused": step.reused,
        "reused_from": step.reused_from,
        "upstream": list(step.upstream),
        "variables": {producer: list(names) for producer, names in step.variables.items()},
        "layer": step.layer,
        "error": step.error,
        "decision": step.decision,
        "run_if": step.run_if,
        "condition": step.condition,
        "condition_result": step.condition_result,
        "log_tail": log_tail(log) if log is not None else "",
        "metrics": dict(step.metrics),
        "output_notebook": str(step.output_notebook) if step.has_output else None,
    }


def view_state(view: RunView) -> dict[str, Any]:
    """A whole run's display state: {"run_id", "status", "notebook", "error", "steps"}."""
    return {
        "run_id": view.run_id,
        "status": view.status,
        "notebook": view.notebook,
        "error": view.error or "",
        "steps": [step_state(s) for s in view.steps],
    }


def run_state(store: Store, run_ref: str) -> dict[str, Any]:
    """A past (or running) run's display state, from the store."""
    return view_state(read_run(store, run_ref))


class RunTracker(RunFollower):
    """Follows one run's events and calls ``on_change(state)`` with the whole new display
    state (a ``RunFollower`` whose views are turned into widget state)."""

    def __init__(
        self,
        on_change: Callable[[dict[str, Any]], None],
        store: Callable[[], Store] = Store.open,
    ) -> None:
        super().__init__(lambda view: on_change(view_state(view)), store)
