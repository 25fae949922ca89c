"""Five-field cron expressions in a time zone (pure: no I/O, no clock).

``minute hour day-of-month month day-of-week``, each field ``*``, ``N``, ``A-B``, ``*/S``,
``A-B/S``, ``N/S`` or a comma list of those; month and weekday names (``jan``, ``mon``);
weekday 0 and 7 are Sunday; the macros ``@hourly @daily @midnight @weekly @monthly
@yearly @annually``. When both day fields are restricted a day matches either one, as in
Vixie cron.

Fire times are wall-clock times in the schedule's time zone. Daylight saving time:
a wall time that does not exist (the hour skipped in spring) fires at the same instant
as the wall time read with the offset before the change (02:30 -> 03:30 in Paris); a
wall time that happens twice (autumn) fires once, at its first occurrence.

Written here rather than taken from croniter so that every error names the field and its
range ("minute 61 is out of range 0-59") and DST behaviour is ours to document and test.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mlpipe_jupyter.errors import ScheduleDefinitionError

_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] means low + i


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, tuple(_MONTHS)),
    _Field("day of week", 0, 7, tuple(_DAYS)),
)

# No cron expression needs more than this many years to find its next time (Feb 29 on a
# given weekday recurs within 28 years); stop searching instead of looping on "30 2 31 2 *".
_SEARCH_YEARS = 30


def load_timezone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ScheduleDefinitionError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleDefinitionError(
            f"--timezone {name!r}: unknown time zone (use an IANA name such as "
            "'UTC' or 'Europe/Paris')"
        ) from None


@dataclass(frozen=True)
class CronExpression:
    """A parsed cron expression; ``next_after`` gives its fire times in a time zone."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse ``text``; ScheduleDefinitionError names the field at fault and its range."""
        source = text.strip()
        expanded = _MACROS.get(source.lower(), source)
        if source.startswith("@") and source.lower() not in _MACROS:
            raise ScheduleDefinitionError(
                f"cron {text!r}: unknown macro (known: {', '.join(sorted(_MACROS))})"
            )
        parts = expanded.split()
        if len(parts) != 5:
            raise ScheduleDefinitionError(
                f"cron {text!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts)}"
            )
        values = [_parse_field(text, part, spec) for part, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(0 if d == 7 else d for d in values[4])
        return cls(
            text=source,
            minutes=values[0], hours=values[1], days=values[2], months=values[3],
            weekdays=weekdays,
            days_restricted=not parts[2].startswith("*"),
            weekdays_restricted=not parts[4].startswith("*"),
        )

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, instant: datetime, tz: ZoneInfo) -> datetime:
        """The first fire time strictly after ``instant`` (aware), as an aware UTC datetime."""
        local = instant.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
        candidate = local + timedelta(minutes=1)
        limit = local.replace(day=1) + timedelta(days=366 * _SEARCH_YEARS)
        while candidate < limit:
            wall = self._next_wall_time(candidate, limit)
            if wall is None:
                break
            # fold=0: the first of a repeated wall time, the pre-change offset in a gap.
            fire = wall.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
            if fire > instant:
                return fire
            candidate = wall + timedelta(minutes=1)  # a repeated hour seen from its 2nd pass
        raise ScheduleDefinitionError(f"cron {self.text!r}: never fires (no such date)")

    def _next_wall_time(self, start: datetime, limit: datetime) -> datetime | None:
        """The first naive wall time >= ``start`` matching every field."""
        t = start
        while t < limit:
            if not self._day_matches(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                later = [h for h in self.hours if h > t.hour]
                if not later:
                    t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                else:
                    t = t.replace(hour=min(later), minute=0)
                continue
            if t.minute not in self.minutes:
                later = [m for m in self.minutes if m > t.minute]
                if not later:
                    t = (t + timedelta(hours=1)).replace(minute=0)
                else:
                    t = t.replace(minute=min(later))
                continue
            return t
        return None


def _parse_field(text: str, part: str, spec: _Field) -> frozenset[int]:
    result: set[int] = set()
    for item in part.split(","):
        if not item:
            raise ScheduleDefinitionError(f"cron {text!r}: {spec.name} has an empty list item")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleDefinitionError(
                    f"cron {text!r}: {spec.name} step {step_text!r} must be a positive integer"
                )
            step = int(step_text)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(text, first, spec), _value(text, last, spec)
            if low > high:
                raise ScheduleDefinitionError(
                    f"cron {text!r}: {spec.name} range {base} goes backwards"
                )
        else:
            low = _value(text, base, spec)
            high = spec.high if slash else low  # "5/15" means 5-59/15
        result.update(range(low, high + 1, step))
    return frozenset(result)


def _value(text: str, token: str, spec: _Field) -> int:
    lowered = token.lower()
    if lowered in spec.names:
        return spec.low + spec.names.index(lowered) if spec.name == "month" else spec.names.index(lowered)
    if not token.isdigit():
        raise ScheduleDefinitionError(
            f"cron {text!r}: {spec.name} {token!r} is not a number"
            + (f" or a name ({', '.join(spec.names)})" if spec.names else "")
        )
    number = int(token)
    if not spec.low <= number <= spec.high:
        raise ScheduleDefinitionError(
            f"cron {text!r}: {spec.name} {number} is out of range {spec.low}-{spec.high}"
        )
    return number
