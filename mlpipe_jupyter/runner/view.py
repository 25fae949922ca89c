"""The read model of a run: what every front-end shows of it, in one place.

A ``RunView`` is a run with its steps as the store holds them (``read_run``), or as the
runner's events report them while it runs (``RunFollower``). The rules that every display
shares live here and nowhere else:

- a step's layer in the DAG is ``model.pipeline.layers_of`` its recorded upstream steps;
- a reused step did not run in this run: it has no duration of its own, and its metrics,
  log and executed notebook are those of the run that produced its result (its *source*).

The widget (``jupyter``), the REST API (``server``) and the ``mlpipe`` command (``cli``)
turn views into their own formats; none of them reads step records directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlpipe_jupyter.errors import NotFoundError
from mlpipe_jupyter.events import RUN_FINISHED, RUN_STARTED, STEP_STATUS, RunEvent
from mlpipe_jupyter.model.pipeline import layers_of
from mlpipe_jupyter.model.status import StepStatus
from mlpipe_jupyter.store import RunRecord, StepRunRecord, Store


@dataclass(frozen=True)
class StepView:
    """One step of a run. Fields the events do not carry (metrics, paths, fingerprint...)
    are filled once the step is read from the store."""

    run_id: str  # the run this step is part of
    name: str
    status: str  # a StepStatus value
    layer: int = 0
    upstream: tuple[str, ...] = ()
    # the variables it receives, by the upstream step that saved them (the DAG's edge labels)
    variables: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cell: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    duration: float | None = None  # None for a reused step: it did not run in this run
    attempts: int = 0
    fingerprint: str | None = None
    reused_from: str | None = None  # the run that produced a reused step's result
    decision: str | None = None  # why it was reused, executed or skipped
    error: str | None = None
    compute: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)  # the source run's
    log_path: Path | None = None  # the source run's log; None until read from the store
    output_notebook: Path | None = None  # the source run's executed notebook (may not exist)
    has_output: bool = False  # the step executed in this run and its notebook exists
    run_if: str | None = None  # its --run-if rule, when not the default (all_succeeded)
    condition: str | None = None  # its --if condition
    # "condition evaluate.accuracy >= 0.9 is true (evaluate.accuracy = 0.93)", once decided
    condition_result: str | None = None

    @property
    def reused(self) -> bool:
        return self.status == StepStatus.REUSED.value

    @property
    def source_run_id(self) -> str:
        """The run whose result, metrics, log and notebook these are: the producer for a
        reused step, else this run."""
        return (self.reused_from if self.reused and self.reused_from else None) or self.run_id

    @property
    def is_final(self) -> bool:
        return self.status not in (StepStatus.QUEUED.value, StepStatus.RUNNING.value)


@dataclass(frozen=True)
class RunView:
    """A run and its steps in notebook order. ``record`` is the store's record of the run
    (None while the run is known from its events only)."""

    run_id: str
    status: str  # a RunStatus value
    notebook: str
    error: str | None
    steps: tuple[StepView, ...]
    record: RunRecord | None = None

    def step(self, name: str) -> StepView:
        for step in self.steps:
            if step.name == name:
                return step
        raise NotFoundError(f"run {self.run_id} has no step {name!r}")

    def step_counts(self) -> dict[str, int]:
        """How many steps are in each status."""
        return count_statuses(s.status for s in self.steps)


def count_statuses(statuses: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


def step_counts(store: Store, run_id: str) -> dict[str, int]:
    """How many of the run's steps are in each status (without reading metrics or logs)."""
    return count_statuses(r.status.value for r in store.runs.step_runs(run_id))


def condition_result(decision: str | None, error: str | None = None) -> str | None:
    """The sentence that says how a step's ``--if`` condition came out: a line of its own
    in the recorded decision (or the error of a step that could not evaluate it)."""
    for line in (decision or "").splitlines()[1:]:
        if line.startswith("condition "):
            return line
    if error and "its condition could not be evaluated" in error:
        return error.splitlines()[0]
    return None


def step_view(store: Store, record: StepRunRecord, layer: int) -> StepView:
    """A step as the store holds it, its metrics, log and notebook resolved to its source."""
    reused = record.status is StepStatus.REUSED
    source = (record.reused_from if reused and record.reused_from else None) or record.run_id
    own_notebook = store.runs.output_notebook(record.run_id, record.step)
    settings = (record.components or {}).get("settings", {})
    return StepView(
        run_id=record.run_id,
        name=record.step,
        status=record.status.value,
        layer=layer,
        upstream=tuple(record.upstream),
        variables=received_variables(settings.get("receives", [])),
        cell=record.cell,
        started_at=record.started_at,
        ended_at=record.ended_at,
        duration=None if reused else record.duration,
        attempts=record.attempts,
        fingerprint=record.fingerprint,
        reused_from=record.reused_from,
        decision=record.decision,
        error=record.error,
        compute=record.compute,
        metrics={m["name"]: m["value"] for m in store.runs.metrics(source, record.step)},
        log_path=store.runs.log_path(source, record.step),
        output_notebook=store.runs.output_notebook(source, record.step),
        has_output=own_notebook.exists(),
        run_if=settings.get("run_if"),
        condition=settings.get("condition"),
        condition_result=condition_result(record.decision, record.error),
    )


def received_variables(received: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``["prepare.df", "train.model"]`` (a fingerprint's ``receives``) by producer."""
    by_producer: dict[str, list[str]] = {}
    for item in received:
        producer, _, name = item.partition(".")
        by_producer.setdefault(producer, []).append(name)
    return {producer: tuple(names) for producer, names in by_producer.items()}


def _layers(records: Sequence[StepRunRecord]) -> dict[str, int]:
    return layers_of({r.step: r.upstream for r in records})


def read_run(store: Store, run_ref: str) -> RunView:
    """A run (id, prefix or 'latest') and all its steps, from the store."""
    run = store.runs.get_run(run_ref)
    records = store.runs.step_runs(run.id)
    layers = _layers(records)
    return RunView(
        run_id=run.id,
        status=run.status.value,
        notebook=run.notebook,
        error=run.error,
        steps=tuple(step_view(store, r, layers.get(r.step, 0)) for r in records),
        record=run,
    )


def read_step(store: Store, run_ref: str, step: str) -> StepView:
    """One step of a run, from the store (a NotFoundError names an unknown run or step)."""
    run = store.runs.get_run(run_ref)
    record = store.runs.step_run(run.id, step)
    layers = _layers(store.runs.step_runs(run.id))
    return step_view(store, record, layers.get(step, 0))


class RunFollower:
    """Keeps a ``RunView`` of the run a runner's events report; calls ``on_change(view)``
    with the whole new view after each event. Subscribe it to the runner's ``EventBus``.

    Events carry statuses; the rest of a step (metrics, log, notebook, errors as recorded)
    is read from the store when the step ends, and the whole run when it ends, so that a
    followed run ends up exactly like ``read_run`` of it. The store is opened only then:
    the workspace may not exist before the run starts.
    """

    def __init__(
        self,
        on_change: Callable[[RunView], None],
        store: Callable[[], Store] = Store.open,
    ) -> None:
        self._on_change = on_change
        self._open_store = store
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}
        self.view: RunView | None = None

    def store(self) -> Store:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def __call__(self, event: RunEvent) -> None:
        with self._lock:
            if event.kind == RUN_STARTED:
                self.view = self._started_view(event)
            elif event.kind == STEP_STATUS and event.step and self.view is not None:
                self.view = self._step(self.view, event)
            elif event.kind == RUN_FINISHED:
                self.view = read_run(self.store(), event.run_id)
            else:
                return
            view = self.view
        self._on_change(view)

    @staticmethod
    def _started_view(event: RunEvent) -> RunView:
        upstream: dict[str, list[str]] = event.detail.get("upstream", {})
        variables: dict[str, list[str]] = event.detail.get("variables", {})
        steps = event.detail.get("steps", list(upstream))
        layers = layers_of({name: upstream.get(name, []) for name in steps})
        return RunView(
            run_id=event.run_id, status=event.status, notebook=event.detail.get("notebook", ""),
            error=None,
            steps=tuple(StepView(event.run_id, n, StepStatus.QUEUED.value, layers.get(n, 0),
                                 tuple(upstream.get(n, [])),
                                 received_variables(variables.get(n, [])))
                        for n in steps),
        )

    def _step(self, view: RunView, event: RunEvent) -> RunView:
        steps = list(view.steps)
        for index, item in enumerate(steps):
            if item.name != event.step:
                continue
            item = replace(
                item,
                status=event.status,
                reused_from=event.detail.get("reused_from", item.reused_from),
                error=event.detail.get("error", item.error),
                decision=event.detail.get("reason", item.decision),
            )
            if event.status == StepStatus.RUNNING.value:
                self._started[item.name] = event.detail.get("started_at", event.at)
            elif item.is_final:
                started = self._started.get(item.name)
                if started is not None:
                    ended = event.detail.get("ended_at", event.at)
                    item = replace(item, duration=ended - started)
                item = self._recorded(item, event.run_id)
            steps[index] = item
            break
        return replace(view, steps=tuple(steps))

    def _recorded(self, item: StepView, run_id: str) -> StepView:
        """The ended step as the store holds it; as the events told when it cannot be read
        (a display never breaks a run: the status still shows)."""
        try:
            record = self.store().runs.step_run(run_id, item.name)
            recorded = step_view(self.store(), record, item.layer)
        except Exception:
            return item
        if recorded.duration is None and not item.reused:
            recorded = replace(recorded, duration=item.duration)
        return recorded
