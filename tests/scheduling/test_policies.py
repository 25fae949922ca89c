"""The pure schedule decisions: durations, grids, missed fire times, back-off."""

from __future__ import annotations

import pytest

from mlpipe_jupyter.errors import ScheduleDefinitionError
from mlpipe_jupyter.model.schedule_policies import (
    EveryTimes,
    format_duration,
    parse_schedule_duration,
    plan_due,
    retry_delay,
)


def test_durations() -> None:
    # the grammar of model.grammar.parse_duration, at least 1s, errors naming the option
    assert parse_schedule_duration("15m") == 900 and parse_schedule_duration("1h30m") == 5400
    assert parse_schedule_duration("2d") == 172800 and parse_schedule_duration("15") == 15
    assert parse_schedule_duration("1h 30m") == 5400 and parse_schedule_duration("1.5min") == 90
    for bad in ("m", "0s", "0.5s", "1w", "-5m"):
        with pytest.raises(ScheduleDefinitionError, match=f"--every '{bad}': expected a duration"):
            parse_schedule_duration(bad)
    with pytest.raises(ScheduleDefinitionError, match="--timeout 'soon': expected a duration"):
        parse_schedule_duration("soon", "--timeout")
    assert format_duration(5400) == "1h30m" and format_duration(90.5) == "1m30.5s"
    assert format_duration(0) == "0s" and format_duration(86400 + 4) == "1d4s"


def test_every_grid() -> None:
    times = EveryTimes(60, anchor=1000)
    assert times.next_after(1000) == 1060 and times.next_after(1059.5) == 1060
    assert times.due_between(1000, 1000 + 60 * 5 + 30) == (5, 1300)
    assert times.due_between(1000, 1059) == (0, None)


def test_plan_due() -> None:
    times = EveryTimes(100, anchor=0)
    assert plan_due(times, 0, 30, "skip").fire is None  # nothing due yet
    on_time = plan_due(times, 0, 101, "skip")
    assert (on_time.fire, on_time.late, on_time.missed, on_time.cursor) == (100, False, 0, 100)
    back = plan_due(times, 0, 600 + 10, "skip")  # five missed, the latest on time
    assert (back.fire, back.missed) == (600, 5)
    late_skip = plan_due(times, 0, 600 + 61, "skip")  # the latest is past the 60 s grace
    assert (late_skip.fire, late_skip.missed, late_skip.cursor) == (None, 6, 600)
    late_once = plan_due(times, 0, 600 + 61, "run_once")
    assert (late_once.fire, late_once.late, late_once.missed) == (600, True, 5)


def test_retry_delay() -> None:
    assert [retry_delay(n, 30) for n in (1, 2, 3)] == [30, 120, 480]
    assert retry_delay(10, 30) == 3600
