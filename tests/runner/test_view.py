"""The run read model (runner.view) from store records and from run events (no kernels)."""

from __future__ import annotations

from typing import Any

import pytest

from mlpipe_jupyter.errors import NotFoundError
from mlpipe_jupyter.events import RUN_FINISHED, RUN_STARTED, STEP_STATUS, EventBus, RunEvent
from mlpipe_jupyter.model.status import RunStatus, StepStatus
from mlpipe_jupyter.runner.view import RunFollower, RunView, read_run, read_step, step_counts
from mlpipe_jupyter.store import Store
from mlpipe_jupyter.store.runs import PlannedStep


def planned(step: str, position: int, status: StepStatus, upstream: list[str],
            reused_from: str | None = None) -> PlannedStep:
    return PlannedStep(step, position, status, position, upstream, f"fp-{step}", None,
                       reused_from, "because", None, "local")


def record_run(store: Store, run_id: str, steps: list[PlannedStep]) -> None:
    store.runs.create_run(run_id, "exp", "/nb.ipynb", {"frac": 0.5}, {}, {}, steps)


def produce(store: Store, run_id: str, step: str, log: str, metric: Any) -> None:
    """The step ran in ``run_id``: times, a log, a metric and an executed notebook."""
    store.runs.update_step(run_id, step, status=StepStatus.SUCCEEDED, started_at=10.0,
                           ended_at=12.5)
    store.runs.add_metric(run_id, step, "score", metric, 11.0)
    store.runs.log_path(run_id, step).parent.mkdir(parents=True, exist_ok=True)
    store.runs.log_path(run_id, step).write_text(log)
    store.runs.output_notebook(run_id, step).write_text("{}")


@pytest.fixture
def two_runs(store: Store) -> Store:
    """Run r1 executes a -> b; run r2 reuses a (from r1) and executes b again."""
    record_run(store, "r1", [planned("a", 0, StepStatus.QUEUED, []),
                             planned("b", 1, StepStatus.QUEUED, ["a"])])
    produce(store, "r1", "a", "a in r1\n", 1)
    produce(store, "r1", "b", "b in r1\n", 2)
    store.runs.finish_run("r1", RunStatus.SUCCEEDED)
    record_run(store, "r2", [planned("a", 0, StepStatus.REUSED, [], reused_from="r1"),
                             planned("b", 1, StepStatus.QUEUED, ["a"])])
    produce(store, "r2", "b", "b in r2\n", 3)
    store.runs.finish_run("r2", RunStatus.SUCCEEDED)
    return store


def test_a_reused_steps_metrics_log_and_notebook_are_its_sources(two_runs: Store) -> None:
    view = read_run(two_runs, "r2")
    assert view.run_id == "r2" and view.status == "succeeded" and view.record is not None
    a, b = view.steps
    assert (a.name, a.layer, b.name, b.layer, b.upstream) == ("a", 0, "b", 1, ("a",))
    assert a.reused and a.source_run_id == "r1" and a.duration is None
    assert dict(a.metrics) == {"score": 1}
    assert a.log_path is not None and a.log_path.read_text() == "a in r1\n"
    assert a.output_notebook == two_runs.runs.output_notebook("r1", "a")
    assert not a.has_output  # it did not execute in r2
    assert not b.reused and b.source_run_id == "r2" and b.duration == 2.5
    assert dict(b.metrics) == {"score": 3} and b.has_output
    assert b.log_path is not None and b.log_path.read_text() == "b in r2\n"
    assert view.step_counts() == step_counts(two_runs, "r2") == {"reused": 1, "succeeded": 1}


def test_read_step_names_what_is_missing(two_runs: Store) -> None:
    assert read_step(two_runs, "r2", "a").source_run_id == "r1"
    assert read_step(two_runs, "r2", "b").layer == 1
    with pytest.raises(NotFoundError, match="nope"):
        read_step(two_runs, "r2", "nope")


def test_the_follower_ends_like_the_store(two_runs: Store) -> None:
    views: list[RunView] = []
    events = EventBus()
    events.subscribe(RunFollower(views.append, store=lambda: two_runs))
    events.emit(RunEvent(RUN_STARTED, "r2", "running", detail={
        "notebook": "/nb.ipynb", "steps": ["a", "b"], "upstream": {"a": [], "b": ["a"]}}))
    events.emit(RunEvent(STEP_STATUS, "r2", "reused", "a", {"reused_from": "r1"}))
    events.emit(RunEvent(STEP_STATUS, "r2", "running", "b", {"started_at": 10.0}))
    running = views[-1]
    assert [(s.name, s.status) for s in running.steps] == [("a", "reused"), ("b", "running")]
    assert dict(running.steps[0].metrics) == {"score": 1}  # read once the step ended
    assert running.steps[1].log_path is None  # still known from events only
    events.emit(RunEvent(STEP_STATUS, "r2", "succeeded", "b", {"ended_at": 12.5}))
    assert views[-1].steps[1].duration == 2.5 and dict(views[-1].steps[1].metrics) == {"score": 3}
    events.emit(RunEvent(RUN_FINISHED, "r2", "succeeded"))
    assert views[-1] == read_run(two_runs, "r2")

