"""Schedule decisions as pure functions of times: fire times, missed runs, retry back-off.

Times are POSIX seconds (floats) so that the store, the scheduler and tests with a fake
clock all speak the same unit; only ``CronTimes`` turns them into wall-clock datetimes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from mlpipe_jupyter.errors import ScheduleDefinitionError
from mlpipe_jupyter.model.cron import CronExpression
from mlpipe_jupyter.model.grammar import parse_duration

SKIP = "skip"
RUN_ONCE = "run_once"
QUEUE = "queue"
MISSED_POLICIES = (SKIP, RUN_ONCE)
OVERLAP_POLICIES = (SKIP, QUEUE)

# A fire time is run "on time" if the scheduler sees it within this many seconds;
# older ones were missed (no scheduler was running) and follow the missed-run policy.
MISFIRE_GRACE_SECONDS = 60.0
RETRY_BACKOFF_FACTOR = 4  # 30 s, 2 min, 8 min, ... for the default base of 30 s
RETRY_BACKOFF_CAP_SECONDS = 3600.0


def parse_schedule_duration(text: str, option: str = "--every") -> float:
    """Seconds from a schedule option's duration (the grammar of ``parse_duration``), >= 1s."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0  # not a duration: the same answer as one too short
    if seconds < 1:
        raise ScheduleDefinitionError(
            f"{option} {text!r}: expected a duration of at least 1s such as 30s, 15m, 1h30m or 1d"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of ``parse_duration``: 5400 -> '1h30m', 90.5 -> '1m30.5s'."""
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    rest_seconds = rest + (seconds - int(seconds))
    if rest_seconds or not parts:
        parts.append(f"{rest_seconds:g}s")
    return "".join(parts)


class FireTimes(Protocol):
    """A time trigger: its fire times, strictly increasing."""

    def next_after(self, at: float) -> float: ...

    def due_between(self, after: float, until: float) -> tuple[int, float | None]:
        """(how many fire times lie in (after, until], the latest of them)."""
        ...


@dataclass(frozen=True)
class CronTimes:
    cron: CronExpression
    tz: ZoneInfo

    def next_after(self, at: float) -> float:
        instant = datetime.fromtimestamp(at, tz=UTC)
        return self.cron.next_after(instant, self.tz).timestamp()

    def due_between(self, after: float, until: float) -> tuple[int, float | None]:
        # one step per fire time, on one cron iterator: a minute-cron missed for a year is
        # half a million steps, seconds once, which is acceptable for a scheduler coming back.
        count, last = 0, None
        for fire in self.cron.fire_times(datetime.fromtimestamp(after, tz=UTC), self.tz):
            at = fire.timestamp()
            if at > until:
                break
            count, last = count + 1, at
        return count, last


@dataclass(frozen=True)
class EveryTimes:
    """Every ``seconds``, on the grid anchored at ``anchor`` (the schedule's creation)."""

    seconds: float
    anchor: float

    def next_after(self, at: float) -> float:
        return self.anchor + (math.floor((at - self.anchor) / self.seconds) + 1) * self.seconds

    def due_between(self, after: float, until: float) -> tuple[int, float | None]:
        first = self.next_after(after)
        if first > until:
            return 0, None
        count = math.floor((until - first) / self.seconds) + 1
        return count, first + (count - 1) * self.seconds


def fire_times(
    cron: str | None, timezone_name: str, every_seconds: float | None, anchor: float
) -> FireTimes:
    """The time trigger of a schedule's fields (validated: errors name the option)."""
    from mlpipe_jupyter.model.cron import load_timezone

    if cron is not None:
        return CronTimes(CronExpression.parse(cron), load_timezone(timezone_name))
    if every_seconds is None or every_seconds < 1:
        raise ScheduleDefinitionError("--every must be at least 1s")
    return EveryTimes(every_seconds, anchor)


def upcoming(times: FireTimes, after: float, count: int) -> list[float]:
    """The next ``count`` fire times after ``after``."""
    result, at = [], after
    for _ in range(count):
        at = times.next_after(at)
        result.append(at)
    return result


@dataclass(frozen=True)
class DuePlan:
    """What to do with the fire times that came due since the schedule's cursor."""

    fire: float | None  # the fire time to start a run for, if any
    late: bool  # ``fire`` was missed and runs once by the run_once policy
    missed: int  # fire times that get no run of their own (skipped or folded into ``fire``)
    cursor: float  # the schedule's new cursor: every time up to it has been decided


def plan_due(
    times: FireTimes,
    cursor: float,
    now: float,
    missed_policy: str,
    grace: float = MISFIRE_GRACE_SECONDS,
) -> DuePlan:
    """Decide the fire times in (cursor, now].

    Only the latest due time can be on time; earlier ones were missed by definition (a
    later one is already due). Missed times never each get a run: under ``skip`` they are
    dropped, under ``run_once`` the latest of them runs once, unless an on-time run covers
    them anyway.
    """
    count, last = times.due_between(cursor, now)
    if count == 0 or last is None:
        return DuePlan(None, False, 0, cursor)
    if now - last <= grace:
        return DuePlan(last, False, count - 1, last)
    if missed_policy == RUN_ONCE:
        return DuePlan(last, True, count - 1, last)
    return DuePlan(None, False, count, last)


def retry_delay(attempt: int, base_seconds: float) -> float:
    """Seconds to wait before retrying after failed attempt number ``attempt`` (1-based)."""
    delay = base_seconds * RETRY_BACKOFF_FACTOR ** max(0, attempt - 1)
    return float(min(delay, RETRY_BACKOFF_CAP_SECONDS))
