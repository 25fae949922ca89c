"""The scheduler driven by a fake clock and a fake launcher: hours of schedule, no sleeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe_jupyter.errors import (
    ConflictError,
    ParameterError,
    PublishedPipelineNotFoundError,
    ScheduleDefinitionError,
)
from mlpipe_jupyter.scheduling.publishing import PublishedPipeline, set_enabled
from mlpipe_jupyter.scheduling.scheduler import Scheduler
from mlpipe_jupyter.scheduling.schedules import (
    create_schedule,
    delete_schedule,
    firings,
    get_schedule,
    iso,
    list_schedules,
    set_paused,
)
from mlpipe_jupyter.store import Store
from tests.scheduling.conftest import T0, FakeClock, FakeLauncher, register_nums

HOUR = 3600.0


def _scheduler(store: Store, clock: FakeClock, launcher: FakeLauncher) -> Scheduler:
    return Scheduler(store, clock=clock, launcher=launcher)


def _statuses(store: Store, name: str) -> list[tuple[str, str]]:
    return [(f.fire_key, f.status) for f in reversed(firings(store, get_schedule(store, name)))]


def test_every_fires_on_its_grid(store: Store, published: PublishedPipeline) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="q", every_seconds=900, params={"n": 5}, now=T0)
    scheduler = _scheduler(store, clock, launcher)
    scheduler.tick()
    clock.advance(899)
    scheduler.tick()
    assert launcher.launched == []
    clock.advance(2)
    scheduler.tick()
    assert len(launcher.launched) == 1
    prepared, handle = launcher.launched[0]
    assert prepared.parameters == {"n": "5"} and prepared.published.ref == "pipe@v1"
    assert "--published" in prepared.command() and "pipe@v1" in prepared.command()
    assert _statuses(store, "q") == [(iso(T0 + 900), "running")]
    handle.code = 0
    clock.advance(5)
    scheduler.tick()
    assert _statuses(store, "q") == [(iso(T0 + 900), "succeeded")]
    clock.advance(900)
    scheduler.tick()
    assert [k for k, _ in _statuses(store, "q")] == [iso(T0 + 900), iso(T0 + 1800)]


def test_cron_in_a_time_zone(store: Store, published: PublishedPipeline) -> None:
    clock, launcher = FakeClock(T0 + 4 * HOUR), FakeLauncher()
    schedule = create_schedule(store, "pipe", name="daily", cron="0 6 * * *",
                               timezone_name="Europe/Paris", now=clock.now())
    # 06:00 in Paris in January is 05:00 UTC
    assert schedule.next_fire_times(clock.now(), 2) == [T0 + 5 * HOUR, T0 + 29 * HOUR]
    scheduler = _scheduler(store, clock, launcher)
    clock.advance(HOUR - 1)
    scheduler.tick()
    assert launcher.launched == []
    clock.advance(2)
    scheduler.tick()
    assert _statuses(store, "daily") == [("2026-01-01T05:00:00Z", "running")]


@pytest.mark.parametrize("missed, expected_keys, late", [
    ("skip", [], None),
    ("run_once", [iso(T0 + 5 * HOUR)], True),
])
def test_missed_fire_times_policy(store: Store, published: PublishedPipeline, missed: str,
                                  expected_keys: list[str], late: bool | None) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="h", every_seconds=HOUR, missed=missed, now=T0)
    clock.advance(5 * HOUR + 600)  # no scheduler ran through five fire times
    _scheduler(store, clock, launcher).tick()
    assert [k for k, _ in _statuses(store, "h")] == expected_keys
    schedule = get_schedule(store, "h")
    if late is not None:
        assert firings(store, schedule)[0].late is late
    assert schedule.missed_total == (5 if missed == "skip" else 4)
    # the next fire time is on time again
    clock.advance(HOUR - 600 + 1)
    _scheduler(store, clock, launcher).tick()
    assert _statuses(store, "h")[-1][0] == iso(T0 + 6 * HOUR)


def test_a_restart_within_the_grace_fires_the_latest_time_once(
    store: Store, published: PublishedPipeline
) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="h", every_seconds=HOUR, now=T0)
    clock.advance(3 * HOUR + 10)
    _scheduler(store, clock, launcher).tick()
    assert _statuses(store, "h") == [(iso(T0 + 3 * HOUR), "running")]
    assert get_schedule(store, "h").missed_total == 2


def test_overlap_skip(store: Store, published: PublishedPipeline) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="o", every_seconds=600, overlap="skip", now=T0)
    scheduler = _scheduler(store, clock, launcher)
    clock.advance(600)
    scheduler.tick()
    clock.advance(600)
    scheduler.tick()  # the first run is still going
    assert _statuses(store, "o") == [(iso(T0 + 600), "running"), (iso(T0 + 1200), "skipped")]
    assert len(launcher.launched) == 1


def test_overlap_queue(store: Store, published: PublishedPipeline) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="o", every_seconds=600, overlap="queue", now=T0)
    scheduler = _scheduler(store, clock, launcher)
    clock.advance(600)
    scheduler.tick()
    clock.advance(600)
    scheduler.tick()
    assert _statuses(store, "o") == [(iso(T0 + 600), "running"), (iso(T0 + 1200), "pending")]
    launcher.handles[0].code = 0
    clock.advance(1)
    scheduler.tick()
    assert _statuses(store, "o") == [(iso(T0 + 600), "succeeded"), (iso(T0 + 1200), "running")]
    assert len(launcher.launched) == 2


def test_retries_with_back_off_then_failed(store: Store, published: PublishedPipeline) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="r", every_seconds=HOUR, max_retries=2,
                    retry_backoff=30, now=T0)
    scheduler = _scheduler(store, clock, launcher)
    clock.advance(HOUR)
    scheduler.tick()
    launcher.handles[-1].code = 1
    scheduler.tick()
    firing = firings(store, get_schedule(store, "r"))[0]
    assert firing.status == "retry_wait" and firing.next_attempt_at == clock.now() + 30
    clock.advance(29)
    scheduler.tick()
    assert len(launcher.launched) == 1
    clock.advance(2)
    scheduler.tick()
    assert len(launcher.launched) == 2
    launcher.handles[-1].code = 1
    scheduler.tick()
    firing = firings(store, get_schedule(store, "r"))[0]
    assert firing.next_attempt_at == clock.now() + 120  # 30 s, then 4x: 2 min
    clock.advance(121)
    scheduler.tick()
    launcher.handles[-1].code = 1
    scheduler.tick()
    firing = firings(store, get_schedule(store, "r"))[0]
    assert firing.status == "failed" and firing.attempt == 3 and len(firing.run_ids) == 3
    assert "did not start" in (firing.error or "")  # the fake launcher records no run


def test_timeout_stops_the_run_and_counts_as_a_failure(
    store: Store, published: PublishedPipeline
) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="t", every_seconds=HOUR, timeout=60, now=T0)
    scheduler = _scheduler(store, clock, launcher)
    clock.advance(HOUR)
    scheduler.tick()
    clock.advance(59)
    scheduler.tick()
    assert not launcher.handles[0].terminated
    clock.advance(2)
    scheduler.tick()
    assert launcher.handles[0].terminated
    launcher.handles[0].code = 130  # the CLI cancels on SIGTERM
    scheduler.tick()
    firing = firings(store, get_schedule(store, "t"))[0]
    assert firing.status == "failed" and "timed out after 60.0 s" in (firing.error or "")


def test_two_schedulers_fire_once(store: Store, published: PublishedPipeline) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="d", every_seconds=60, overlap="queue", now=T0)
    other_store = Store.open()  # its own connection, as another process would have
    first, second = _scheduler(store, clock, launcher), _scheduler(other_store, clock, launcher)
    for _ in range(5):
        clock.advance(60)
        first.tick()
        second.tick()
        for handle in launcher.handles:
            handle.code = 0
    first.tick()
    second.tick()
    assert len(launcher.launched) == 5
    assert len({p.run_id for p, _ in launcher.launched}) == 5
    assert [s for _, s in _statuses(store, "d")] == ["succeeded"] * 5
    assert all(len(f.run_ids) == 1 for f in firings(store, get_schedule(store, "d")))
    other_store.close()


def test_a_dead_schedulers_run_is_taken_over_not_repeated(
    store: Store, published: PublishedPipeline
) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="k", every_seconds=HOUR, now=T0)
    dead = _scheduler(store, clock, launcher)
    clock.advance(HOUR)
    dead.tick()  # starts a run, then never ticks again (as if killed)
    heir = _scheduler(Store.open(), clock, launcher)
    clock.advance(10)
    heir.tick()
    assert launcher.adopted == []  # the owner's lease has not run out yet
    clock.advance(60)
    heir.tick()
    assert launcher.adopted == [launcher.handles[0].run_id]
    launcher.handles[0].code = 0
    heir.tick()
    assert _statuses(store, "k") == [(iso(T0 + HOUR), "succeeded")]
    assert len(launcher.launched) == 1


def test_dataset_trigger_pins_the_new_version(
    store: Store, published: PublishedPipeline, workspace_dir: Path
) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="ds", on_dataset="nums", now=T0)
    scheduler = _scheduler(store, clock, launcher)
    scheduler.tick()
    assert launcher.launched == []
    version = register_nums(store, workspace_dir / "data", "4 5 6")
    clock.advance(1)
    scheduler.tick()
    assert _statuses(store, "ds") == [(f"nums@v{version}", "running")]
    prepared = launcher.launched[0][0]
    assert prepared.dataset_versions == {"nums": version}
    assert f"nums@v{version}" in prepared.command()
    assert firings(store, get_schedule(store, "ds"))[0].dataset_version == version


def test_pause_resume_delete(store: Store, published: PublishedPipeline) -> None:
    clock, launcher = FakeClock(), FakeLauncher()
    create_schedule(store, "pipe", name="p", every_seconds=600, now=T0)
    scheduler = _scheduler(store, clock, launcher)
    set_paused(store, "p", True, now=clock.now())
    clock.advance(3000)
    scheduler.tick()
    assert launcher.launched == [] and get_schedule(store, "p").next_fire_times() == []
    set_paused(store, "p", False, now=clock.now())
    scheduler.tick()
    assert launcher.launched == []  # resuming does not catch up
    assert get_schedule(store, "p").next_fire_times(clock.now(), 1) == [T0 + 3600]
    delete_schedule(store, "p")
    assert list_schedules(store) == []


def test_bad_schedules_are_refused_and_store_nothing(
    store: Store, published: PublishedPipeline
) -> None:
    cases = [
        (dict(cron="61 * * * *"), ScheduleDefinitionError, "minute 61 is out of range 0-59"),
        (dict(cron="0 6 * * *", timezone_name="Europe/Pariss"), ScheduleDefinitionError,
         "--timezone 'Europe/Pariss': unknown time zone"),
        (dict(every_seconds=900, params={"m": 1}), ParameterError, "unknown parameter"),
        (dict(every_seconds=900, params={"n": "many"}), ParameterError, "expects int"),
        (dict(on_dataset="other"), ScheduleDefinitionError, "reads no such dataset"),
        (dict(every_seconds=900, missed="sometimes"), ScheduleDefinitionError, "--missed"),
        (dict(every_seconds=900, version=7), PublishedPipelineNotFoundError, "no version 7"),
        (dict(), ScheduleDefinitionError, "exactly one of"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            create_schedule(store, "pipe", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(PublishedPipelineNotFoundError, match="no published pipeline named 'nope'"):
        create_schedule(store, "nope", every_seconds=60)
    set_enabled(store, "pipe", None, False)
    with pytest.raises(ConflictError, match="disabled"):
        create_schedule(store, "pipe", every_seconds=60)
    assert list_schedules(store) == []


def test_a_schedule_reports_every_problem_at_once(
    store: Store, published: PublishedPipeline
) -> None:
    with pytest.raises(ScheduleDefinitionError) as caught:
        create_schedule(store, "pipe", name="bad name", cron="61 * * * *",
                        timezone_name="Europe/Pariss", params={"m": 1, "n": "many"},
                        missed="sometimes", max_retries=-1)
    text = str(caught.value)
    assert "7 schedule errors; nothing was stored" in text, text
    for part in ("minute 61 is out of range 0-59", "--timezone 'Europe/Pariss': unknown time zone",
                 "unknown parameter(s) m", "parameter 'n' expects int", "--missed 'sometimes'",
                 "--retries -1", "schedule name 'bad name' is not valid"):
        assert part in text, part
    # the schedule's own problems come before an unknown pipeline, which cannot be checked
    with pytest.raises(ScheduleDefinitionError, match="2 schedule errors") as caught:
        create_schedule(store, "nope", cron="61 * * * *", missed="sometimes")
    assert list_schedules(store) == []
