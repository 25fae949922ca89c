"""Five-field cron expressions in a time zone (pure: no I/O, no clock).

``minute hour day-of-month month day-of-week``, each field ``*``, ``N``, ``A-B``, ``*/S``,
``A-B/S``, ``N/S`` or a comma list of those; month and weekday names (``jan``, ``mon``);
weekday 0 and 7 are Sunday; the macros ``@hourly @daily @midnight @weekly @monthly
@yearly @annually``. When both day fields are restricted (neither starts with ``*``) a day
matches either one, as in Vixie cron.

Fire times are wall-clock times in the schedule's time zone. Daylight saving time:
a wall time that does not exist (the hour skipped in spring) fires at the same instant
as the wall time read with the offset before the change (02:30 -> 03:30 in Paris); a
wall time that happens twice (autumn) fires once, at its first occurrence.

Which wall times match is computed by cronsim, chosen over croniter because it follows
Debian/Vixie cron field for field (the day-of-month/day-of-week rule above, ``N/S``, ``7``
= Sunday), is typed and has no dependencies; croniter treats ``*/2`` day fields, ``A-A``
ranges and weekday 7 in steps differently. Two things stay here. Errors: each field is
checked first so that an error names the field and its range ("minute 61 is out of range
0-59") and cronsim's extensions (``L``, ``W``, ``#``, seconds) are refused like any other
typo. DST: cronsim is given naive wall times, and the mapping to instants is ours, because
its Debian behaviour differs from the documented one above (it fires a skipped 02:30 at
03:00, and runs frequent jobs in both passes of a repeated hour).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

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
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, low, high, names): names[i] means low + i for months, i for weekdays
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


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
    """A checked cron expression; ``next_after`` gives its fire times in a time zone."""

    text: str
    fields: str  # the five fields as cronsim reads them (macro expanded)

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Check ``text``; ScheduleDefinitionError names the field at fault and its range."""
        source = text.strip()
        if source.startswith("@") and source.lower() not in _MACROS:
            raise ScheduleDefinitionError(
                f"cron {text!r}: unknown macro (known: {', '.join(sorted(_MACROS))})"
            )
        parts = _MACROS.get(source.lower(), source).split()
        if len(parts) != 5:
            raise ScheduleDefinitionError(
                f"cron {text!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts)}"
            )
        checked = (_check_field(text, part, spec) for part, spec in zip(parts, _FIELDS, strict=True))
        fields = " ".join(checked)
        try:
            CronSim(fields, datetime(2000, 1, 1))
        except CronSimError as exc:  # only a day no month has passes the checks above
            raise ScheduleDefinitionError(f"cron {text!r}: never fires (no such date)") from exc
        return cls(text=source, fields=fields)

    def next_after(self, instant: datetime, tz: ZoneInfo) -> datetime:
        """The first fire time strictly after ``instant`` (aware), as an aware UTC datetime."""
        return next(self.fire_times(instant, tz))

    def fire_times(self, after: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """The fire times strictly after ``after`` (aware), in order, as aware UTC datetimes.

        The same as repeated ``next_after``, with one cronsim iterator for all of them.
        """
        last, floor = after, after.astimezone(tz).replace(tzinfo=None)
        for wall in CronSim(self.fields, floor):
            # fold=0 reads a repeated wall time as its first pass, and one in a gap with the
            # offset before the change. A repeated hour's second pass maps to instants
            # already past; walls up to the last fire's own wall time were passed over.
            fire = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
            if fire > last and wall > floor:
                yield fire
                last, floor = fire, fire.astimezone(tz).replace(tzinfo=None)
        raise ScheduleDefinitionError(f"cron {self.text!r}: never fires (no such date)")


def _check_field(text: str, part: str, spec: tuple[str, int, int, tuple[str, ...]]) -> str:
    """``part`` as cronsim should read it; ScheduleDefinitionError naming what is wrong."""
    name = spec[0]
    items = []
    for item in part.split(","):
        if not item:
            raise ScheduleDefinitionError(f"cron {text!r}: {name} has an empty list item")
        base, slash, step = item.partition("/")
        if slash and (not _is_number(step) or int(step) == 0):
            raise ScheduleDefinitionError(
                f"cron {text!r}: {name} step {step!r} must be a positive integer"
            )
        if base != "*":
            first, dash, last = base.partition("-")
            low = _value(text, first, spec)
            high = _value(text, last, spec) if dash else low
            if low > high:
                raise ScheduleDefinitionError(f"cron {text!r}: {name} range {base} goes backwards")
            if dash and low == high:
                item = first  # cronsim reads "A-A/S" as "A/S" (A to the field's end)
        items.append(item)
    return ",".join(items)


def _value(text: str, token: str, spec: tuple[str, int, int, tuple[str, ...]]) -> int:
    name, low, high, names = spec
    if token.lower() in names:
        return names.index(token.lower()) + (1 if name == "month" else 0)
    if not _is_number(token):
        raise ScheduleDefinitionError(
            f"cron {text!r}: {name} {token!r} is not a number"
            + (f" or a name ({', '.join(names)})" if names else "")
        )
    if not low <= int(token) <= high:
        raise ScheduleDefinitionError(
            f"cron {text!r}: {name} {int(token)} is out of range {low}-{high}"
        )
    return int(token)


def _is_number(token: str) -> bool:
    return token.isascii() and token.isdigit()  # not "¹" or "٣", which isdigit() accepts
