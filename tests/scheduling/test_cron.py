"""Cron expressions: parsing errors name the field; fire times in time zones and across DST."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mlpipe_jupyter.errors import ScheduleDefinitionError
from mlpipe_jupyter.model.cron import CronExpression, load_timezone

UTC = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _fires(expr: str, start: datetime, count: int, tz: ZoneInfo = UTC) -> list[datetime]:
    cron = CronExpression.parse(expr)
    times, at = [], start
    for _ in range(count):
        at = cron.next_after(at, tz)
        times.append(at)
    return times


@pytest.mark.parametrize("expr, message", [
    ("61 * * * *", "cron '61 \\* \\* \\* \\*': minute 61 is out of range 0-59"),
    ("* 24 * * *", "hour 24 is out of range 0-23"),
    ("* * 0 * *", "day of month 0 is out of range 1-31"),
    ("* * * 13 *", "month 13 is out of range 1-12"),
    ("* * * * 8", "day of week 8 is out of range 0-7"),
    ("* * * *", "expected 5 fields"),
    ("*/0 * * * *", "minute step '0' must be a positive integer"),
    ("5-1 * * * *", "minute range 5-1 goes backwards"),
    ("x * * * *", "minute 'x' is not a number"),
    ("@sometimes", "unknown macro"),
    ("0 0 31 2 *", "never fires"),
    # cronsim's extensions are not our grammar
    ("0 0 L * *", "day of month 'L' is not a number"),
    ("0 0 * * 5#2", "day of week '5#2' is not a number or a name"),
    ("0 0 0 * * *", "expected 5 fields"),
])
def test_bad_cron_names_the_field(expr: str, message: str) -> None:
    with pytest.raises(ScheduleDefinitionError, match=message):
        _fires(expr, _utc(2026, 1, 1), 1)


def test_unknown_time_zone() -> None:
    with pytest.raises(ScheduleDefinitionError, match="--timezone 'Mars/Olympus': unknown time zone"):
        load_timezone("Mars/Olympus")


def test_basic_fire_times() -> None:
    assert _fires("0 6 * * *", _utc(2026, 1, 1, 6, 0), 2) == [_utc(2026, 1, 2, 6), _utc(2026, 1, 3, 6)]
    assert _fires("*/15 * * * *", _utc(2026, 1, 1, 0, 7), 3) == [
        _utc(2026, 1, 1, 0, 15), _utc(2026, 1, 1, 0, 30), _utc(2026, 1, 1, 0, 45)]
    # weekdays by name, month names, 7 = Sunday; 2026-01-05 is a Monday
    assert _fires("30 9 * jan mon-fri", _utc(2026, 1, 2, 10), 2) == [
        _utc(2026, 1, 5, 9, 30), _utc(2026, 1, 6, 9, 30)]
    assert _fires("0 0 * * 7", _utc(2026, 1, 1), 1) == [_utc(2026, 1, 4)]
    assert _fires("@monthly", _utc(2026, 1, 15), 1) == [_utc(2026, 2, 1)]
    # both day fields restricted: either matches (the 13th, or any Friday)
    assert _fires("0 0 13 * fri", _utc(2026, 1, 1), 3) == [
        _utc(2026, 1, 2), _utc(2026, 1, 9), _utc(2026, 1, 13)]
    assert _fires("0 0 29 2 *", _utc(2026, 1, 1), 1) == [_utc(2028, 2, 29)]
    # a day field starting with "*" is unrestricted for that rule: */10 AND Friday
    assert _fires("0 0 */10 * fri", _utc(2026, 1, 1), 2) == [_utc(2026, 5, 1), _utc(2026, 7, 31)]
    # "A-A/S" is just A ("N/S" would run to the field's end); "N/S" is N-max/S
    assert _fires("5-5/10 * * * *", _utc(2026, 1, 1), 2) == [_utc(2026, 1, 1, 0, 5), _utc(2026, 1, 1, 1, 5)]
    assert _fires("50/5 0 * * *", _utc(2026, 1, 1), 3) == [
        _utc(2026, 1, 1, 0, 50), _utc(2026, 1, 1, 0, 55), _utc(2026, 1, 2, 0, 50)]


def test_time_zone_and_dst() -> None:
    # 06:00 in Paris is 05:00 UTC in winter and 04:00 UTC in summer
    assert _fires("0 6 * * *", _utc(2026, 3, 28, 12), 2, PARIS) == [
        _utc(2026, 3, 29, 4), _utc(2026, 3, 30, 4)]
    # 2026-03-29 02:30 does not exist in Paris: fires at 01:30 UTC (= 03:30 CEST)
    assert _fires("30 2 * * *", _utc(2026, 3, 28, 12), 2, PARIS) == [
        _utc(2026, 3, 29, 1, 30), _utc(2026, 3, 30, 0, 30)]
    # 2026-10-25 02:30 happens twice in Paris: fires once, at the first (00:30 UTC)
    assert _fires("30 2 * * *", _utc(2026, 10, 24, 12), 2, PARIS) == [
        _utc(2026, 10, 25, 0, 30), _utc(2026, 10, 26, 1, 30)]
    # asked from inside the repeated hour's second pass: its wall times already fired on the
    # first pass, so the next time is 03:00 CET, never one in the past
    at = _utc(2026, 10, 25, 1, 10)  # 02:10 CET
    assert CronExpression.parse("*/20 * * * *").next_after(at, PARIS) == _utc(2026, 10, 25, 2, 0)


@pytest.mark.parametrize("start", [_utc(2026, 3, 28, 23), _utc(2026, 10, 24, 23)])
def test_fire_times_is_repeated_next_after(start: datetime) -> None:
    cron = CronExpression.parse("*/20 1-3 * * *")
    streamed = list(itertools.islice(cron.fire_times(start, PARIS), 12))
    assert streamed == _fires("*/20 1-3 * * *", start, 12, PARIS)
