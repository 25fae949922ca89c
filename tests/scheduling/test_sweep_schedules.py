"""Schedules and triggers that carry a sweep, without real runs: what is stored, what is
refused (every problem at once), the command a firing starts, and how a firing settles
when its id is a sweep's."""

from __future__ import annotations

import pytest

from mlpipe_jupyter.errors import ParameterError, ScheduleDefinitionError
from mlpipe_jupyter.model.status import RunStatus
from mlpipe_jupyter.model.sweep import parse_sweep
from mlpipe_jupyter.scheduling.publishing import PublishedPipeline
from mlpipe_jupyter.scheduling.scheduler import Scheduler
from mlpipe_jupyter.scheduling.schedules import (
    create_schedule,
    delete_schedule,
    firings,
    get_schedule,
    list_schedules,
)
from mlpipe_jupyter.scheduling.triggering import launch_log, prepare_run, started_status
from mlpipe_jupyter.store import Store
from tests.scheduling.conftest import T0, FakeClock, FakeLauncher


def test_a_schedule_keeps_its_sweep(store: Store, published: PublishedPipeline) -> None:
    grid = create_schedule(store, "pipe", name="grid", every_seconds=900, params={"label": "a"},
                           sweep=["n=1,2,3"], now=T0)
    sampled = create_schedule(store, "pipe", name="random", every_seconds=900,
                              sweep=["n=randint(1,9)"], samples=4, seed=7, now=T0)
    plain = create_schedule(store, "pipe", name="plain", every_seconds=900, now=T0)
    assert grid.sweep == {"sweep": ["n=1,2,3"]} and plain.sweep is None
    assert sampled.sweep == {"sweep": ["n=randint(1,9)"], "samples": 4, "seed": 7}
    assert get_schedule(store, "grid").sweep_spec() == parse_sweep(["n=1,2,3"])
    assert grid.describe_sweep() == "n=1,2,3 (3 members)"
    assert sampled.describe_sweep() == "n=randint(1,9) (4 samples, seed 7)"
    assert plain.describe_sweep() == ""
    assert grid.to_dict()["sweep"] == {"sweep": ["n=1,2,3"]}
    assert {s.name: s.sweep for s in list_schedules(store)} == {
        "grid": grid.sweep, "plain": None, "random": sampled.sweep}
    delete_schedule(store, "grid")
    assert [r["schedule_id"] for r in store.workspace.query(
        "SELECT schedule_id FROM schedule_sweeps")] == [get_schedule(store, "random").id]


def test_a_schedules_sweep_is_checked_with_everything_else(
    store: Store, published: PublishedPipeline
) -> None:
    with pytest.raises(ScheduleDefinitionError) as caught:
        create_schedule(store, "pipe", cron="61 * * * *", params={"m": 1},
                        sweep=["n=1,,2", "label=a", "label=b"])
    text = str(caught.value)
    for part in ("minute 61 is out of range", "unknown parameter(s) m", "value 2 of n is empty",
                 "the parameter is swept twice"):
        assert part in text, text
    cases = [
        (dict(sweep=["x=1,2"]), "x: not a parameter of pipe@v1 (its parameters: label, n)"),
        (dict(sweep=["n=1,many"]), "parameter 'n' expects int (default 1), got 'many'"),
        (dict(sweep=["n=1,2"], params={"n": 3}), "both swept and set with -p"),
        (dict(sweep=["n=uniform(1,2)"]), "--samples N"),
        (dict(samples=3), "a sweep needs at least one --sweep"),
        (dict(sweep=["n=" + ",".join(str(i) for i in range(501))]), "this sweep has 501 members"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
            create_schedule(store, "pipe", every_seconds=60, **kwargs)  # type: ignore[arg-type]
    assert list_schedules(store) == []
    big = create_schedule(store, "pipe", every_seconds=60, yes=True,
                          sweep=["n=" + ",".join(str(i) for i in range(501))])
    assert big.sweep_spec() is not None and big.sweep_spec().size() == 501  # type: ignore[union-attr]


def test_a_firing_starts_the_sweep_and_holds_its_id(store: Store,
                                                    published: PublishedPipeline) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="grid", every_seconds=900, params={"label": "z"},
                    sweep=["n=1,2"], now=T0)
    scheduler = Scheduler(store, clock=clock, launcher=launcher)
    scheduler.tick()
    clock.advance(901)
    scheduler.tick()
    [(prepared, handle)] = launcher.launched
    sweep_id = prepared.run_id
    assert prepared.sweep_id == sweep_id and sweep_id.startswith("sw-")
    assert prepared.member_run_ids == [f"{sweep_id[3:]}-m001", f"{sweep_id[3:]}-m002"]
    command = prepared.command()
    assert "--run-id" not in command
    tail = command[command.index("--schedule"):]
    assert tail == ["--schedule", "grid", "--sweep", "n=1,2", "--yes", "--sweep-id", sweep_id]
    assert ["-p", "label=z"] == command[command.index("-p"):command.index("-p") + 2]
    [firing] = firings(store, get_schedule(store, "grid"))
    assert firing.status == "running" and firing.run_id == sweep_id
    assert firing.run_ids == [sweep_id]
    handle.code = 0
    scheduler.tick()
    assert firings(store, get_schedule(store, "grid"))[0].status == "succeeded"


def _recorded_sweep(store: Store, sweep_id: str, outcomes: list[tuple[RunStatus, str | None]]
                    ) -> None:
    """A sweep as its process would have left it: members' runs ended as ``outcomes``."""
    run_ids = [f"{sweep_id[3:]}-m{n:03d}" for n in range(1, len(outcomes) + 1)]
    store.sweeps.create(sweep_id, "nb.ipynb", "pipe", {"sweep": ["n=1,2"]}, {},
                        [(run_id, {"n": str(n)}) for n, run_id in enumerate(run_ids, start=1)],
                        published="pipe@v1", schedule="grid")
    for run_id, (status, error) in zip(run_ids, outcomes, strict=True):
        store.runs.create_run(run_id, "pipe", "nb.ipynb", {}, {"sweep": sweep_id}, {}, [])
        store.runs.finish_run(run_id, status, error)
    store.sweeps.finish(sweep_id)


def test_a_failed_sweep_firing_says_which_member_failed_and_retries(
    store: Store, published: PublishedPipeline
) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="grid", every_seconds=900, sweep=["n=1,2"],
                    max_retries=1, retry_backoff=10, now=T0)
    scheduler = Scheduler(store, clock=clock, launcher=launcher)
    clock.advance(901)
    scheduler.tick()
    [(prepared, handle)] = launcher.launched
    _recorded_sweep(store, prepared.run_id, [(RunStatus.SUCCEEDED, None),
                                             (RunStatus.FAILED, "step 'prep' failed: boom")])
    assert started_status(store, prepared.run_id) is RunStatus.FAILED
    handle.code = 1  # the sweep process: some member failed
    scheduler.tick()
    [firing] = firings(store, get_schedule(store, "grid"))
    assert firing.status == "retry_wait", firing
    second = f"{prepared.run_id[3:]}-m002"
    assert firing.error == (f"sweep {prepared.run_id} failed: 1 failed of 2 members; "
                            f"run {second}: step 'prep' failed: boom")
    clock.advance(11)
    scheduler.tick()  # the retry is a new sweep (its members reuse what the first one did)
    assert len(launcher.launched) == 2
    retry, retry_handle = launcher.launched[1]
    assert retry.run_id != prepared.run_id and retry.sweep is not None
    retry_handle.code = 130
    scheduler.tick()
    [firing] = firings(store, get_schedule(store, "grid"))
    assert firing.status == "canceled" and firing.error == f"sweep {retry.run_id} was canceled"
    assert firing.run_ids == [prepared.run_id, retry.run_id]


def test_a_sweep_that_never_started_names_its_launcher_log(
    store: Store, published: PublishedPipeline
) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="grid", every_seconds=900, sweep=["n=1,2"], now=T0)
    scheduler = Scheduler(store, clock=clock, launcher=launcher)
    clock.advance(901)
    scheduler.tick()
    [(prepared, handle)] = launcher.launched
    log = launch_log(store.workspace, prepared.run_id)
    assert log == store.workspace.root / "sweeps" / prepared.run_id / "launcher.log"
    log.parent.mkdir(parents=True)
    log.write_text("mlpipe: the kernel could not start\n")
    handle.code = 1
    scheduler.tick()
    [firing] = firings(store, get_schedule(store, "grid"))
    assert firing.status == "failed"
    assert firing.error == (f"sweep {prepared.run_id} did not start: "
                            "mlpipe: the kernel could not start")


def test_a_trigger_checks_its_sweep_against_the_published_version(
    store: Store, published: PublishedPipeline
) -> None:
    with pytest.raises(ParameterError) as caught:
        prepare_run(store, "pipe", None, {"zz": 1}, sweep=parse_sweep(["n=1,x", "q=2"]))
    assert "unknown parameter(s) zz" in str(caught.value)
    assert "q: not a parameter of pipe@v1" in str(caught.value)
    too_big = parse_sweep(["n=" + ",".join(str(i) for i in range(600))])
    with pytest.raises(ParameterError, match="this sweep has 600 members"):
        prepare_run(store, "pipe", sweep=too_big)
    prepared = prepare_run(store, "pipe", sweep=too_big, yes=True)
    assert prepared.sweep_id is not None and len(prepared.member_run_ids) == 600
    assert not (store.workspace.root / "sweeps").exists()  # preparing starts nothing
