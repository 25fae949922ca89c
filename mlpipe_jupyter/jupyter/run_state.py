"""The state a run display shows, built from run events (live) and from the store (past runs).

Plain dictionaries, JSON-ready: the DAG widget syncs them to the browser as they are. One
step's state::

    {"name", "status", "duration", "reused", "reused_from", "upstream", "layer", "error",
     "decision", "log_tail", "metrics", "output_notebook"}
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlpipe_jupyter.events import RUN_FINISHED, RUN_STARTED, STEP_STATUS, RunEvent
from mlpipe_jupyter.store import StepRunRecord, Store

LOG_TAIL_LINES = 20
_FINAL = ("succeeded", "failed", "reused", "skipped", "canceled")


def layers_of(upstream: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each step's depth (longest path from a root), as ``Pipeline.layers`` draws it."""
    depth: dict[str, int] = {}

    def visit(name: str, trail: frozenset[str]) -> int:
        if name not in depth:
            parents = [u for u in upstream.get(name, ()) if u in upstream and u not in trail]
            depth[name] = 1 + max((visit(u, trail | {name}) for u in parents), default=-1)
        return depth[name]

    for name in upstream:
        visit(name, frozenset())
    return depth


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a step's log ('' when there is none yet)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def step_state(store: Store, record: StepRunRecord, layer: int) -> dict[str, Any]:
    """One step's display state from its record, log, metrics and output notebook."""
    reused = record.status.value == "reused"
    # a reused step's metrics are those of the run that produced the result
    metrics_run = record.reused_from if reused and record.reused_from else record.run_id
    metrics = {m["name"]: m["value"] for m in store.runs.metrics(metrics_run, record.step)}
    notebook = store.runs.output_notebook(record.run_id, record.step)
    return {
        "name": record.step,
        "status": record.status.value,
        "duration": None if reused else record.duration,
        "reused": reused,
        "reused_from": record.reused_from,
        "upstream": list(record.upstream),
        "layer": layer,
        "error": record.error,
        "decision": record.decision,
        "log_tail": log_tail(store.runs.log_path(record.run_id, record.step)),
        "metrics": metrics,
        "output_notebook": str(notebook) if notebook.exists() else None,
    }


def run_state(store: Store, run_ref: str) -> dict[str, Any]:
    """A whole run's display state: {"run_id", "status", "notebook", "error", "steps"}."""
    run = store.runs.get_run(run_ref)
    records = store.runs.step_runs(run.id)
    layers = layers_of({r.step: r.upstream for r in records})
    return {
        "run_id": run.id,
        "status": run.status.value,
        "notebook": run.notebook,
        "error": run.error or "",
        "steps": [step_state(store, r, layers.get(r.step, 0)) for r in records],
    }


def _empty_step(name: str, upstream: Sequence[str], layer: int) -> dict[str, Any]:
    return {
        "name": name, "status": "queued", "duration": None, "reused": False,
        "reused_from": None, "upstream": list(upstream), "layer": layer, "error": None,
        "decision": None, "log_tail": "", "metrics": {}, "output_notebook": None,
    }


class RunTracker:
    """Follows one run's events and calls ``on_change(state)`` with the whole new state.

    Subscribe it to the runner's EventBus. Events carry statuses; everything else (errors,
    metrics, log tails, output notebooks) is read from the store when a step finishes, so a
    live display ends up exactly like ``run_state`` of the same run.
    """

    def __init__(
        self,
        on_change: Callable[[dict[str, Any]], None],
        store: Callable[[], Store] = Store.open,
    ) -> None:
        self._on_change = on_change
        self._open_store = store
        self._store: Store | None = None
        self._lock = threading.Lock()
        self.state: dict[str, Any] = {"run_id": "", "status": "", "notebook": "", "error": "",
                                      "steps": []}
        self._started: dict[str, float] = {}

    def store(self) -> Store:
        if self._store is None:  # the workspace may only exist once the run has started
            self._store = self._open_store()
        return self._store

    def __call__(self, event: RunEvent) -> None:
        with self._lock:
            if event.kind == RUN_STARTED:
                self._start(event)
            elif event.kind == STEP_STATUS and event.step:
                self._step(event)
            elif event.kind == RUN_FINISHED:
                self.state = run_state(self.store(), event.run_id)
            else:
                return
            state = self.state
        self._on_change(state)

    def _start(self, event: RunEvent) -> None:
        upstream: dict[str, list[str]] = event.detail.get("upstream", {})
        steps = event.detail.get("steps", list(upstream))
        layers = layers_of({name: upstream.get(name, []) for name in steps})
        self.state = {
            "run_id": event.run_id, "status": event.status,
            "notebook": event.detail.get("notebook", ""), "error": "",
            "steps": [_empty_step(n, upstream.get(n, []), layers.get(n, 0)) for n in steps],
        }

    def _step(self, event: RunEvent) -> None:
        steps = [dict(s) for s in self.state["steps"]]  # a new list: traitlets sees a change
        for index, item in enumerate(steps):
            if item["name"] != event.step:
                continue
            item["status"] = event.status
            item["reused"] = event.status == "reused"
            item["reused_from"] = event.detail.get("reused_from", item["reused_from"])
            item["error"] = event.detail.get("error", item["error"])
            item["decision"] = event.detail.get("reason", item["decision"])
            if event.status == "running":
                self._started[item["name"]] = event.detail.get("started_at", event.at)
            elif event.status in _FINAL:
                started = self._started.get(item["name"])
                if started is not None:
                    item["duration"] = event.detail.get("ended_at", event.at) - started
                try:
                    record = self.store().runs.step_run(event.run_id, item["name"])
                except Exception:  # a display never breaks a run; the status still shows
                    record = None
                if record is not None:
                    steps[index] = step_state(self.store(), record, item["layer"])
                    if steps[index]["duration"] is None and not item["reused"]:
                        steps[index]["duration"] = item["duration"]
            break
        self.state = {**self.state, "steps": steps}
