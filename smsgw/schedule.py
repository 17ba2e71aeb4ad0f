"""When non-urgent messages may go out: quiet hours, quiet days, holidays (docs/scheduling.md).

A `SendWindow` answers one question: given a time a message would be due, when
may it go? Quiet hours are daily ranges of wall-clock time ("21:00-08:00" spans
midnight); quiet days are whole weekdays (e.g. Saturday and Sunday) unless a
date is listed as a working day (调休: the weekend day made a working day to
bridge a holiday); holidays are whole dates. A message whose priority is at or
above `urgent_priority` goes at any time.

The gateway calls `SendWindow.due` when it accepts a message and when a
reviewer approves a held one: the recipients' due time in the store moves to
the next allowed moment, so the store's due-time index is the schedule, and a
restart changes nothing. The dispatchers also ask `is_quiet` before claiming,
so a backlog that has not drained by the start of a quiet period waits too.

Pure: no I/O and no clock. Times are epoch seconds; days and hours are local
to `tz` (None: the machine's time zone, as `smsgw.limits` counts days). Zones
without daylight saving time (China's) behave exactly; in a zone with DST a
boundary inside the skipped hour lands where Python's `datetime` puts it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Iterable

from smsgw.model import PRIORITY_URGENT

__all__ = ["DAY", "WEEKDAYS", "SendWindow", "parse_dates", "parse_range"]

#: Minutes in a day; 1440 stands for 24:00, the midnight that ends a day.
DAY = 1440
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: A range longer than this is surely a typo in the year ("2026-10-01..2027-10-07").
MAX_RANGE_DAYS = 366

_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_HOURS = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


def parse_dates(value: str) -> tuple[dt.date, dt.date]:
    """"2026-10-01" or "2026-10-01..2026-10-07" -> (first, last) date, both included.

    Raises:
        ValueError: saying what is wrong (not a date, a date that does not exist, end before start,
            longer than a year).
    """
    text = value.strip()
    first_text, dots, last_text = text.partition("..")
    first = _date(first_text.strip(), value)
    last = _date(last_text.strip(), value) if dots else first
    if last < first:
        raise ValueError(f"{value!r} ends ({last.isoformat()}) before it starts ({first.isoformat()})")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise ValueError(f"{value!r} spans {(last - first).days + 1} days, more than a year (a typo in a year?)")
    return first, last


def _date(text: str, whole: str) -> dt.date:
    match = _DATE.fullmatch(text)
    if match is None:
        raise ValueError(f"{whole!r} is not a date or a range of dates")
    try:
        return dt.date(*(int(g) for g in match.groups()))
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the calendar") from None


def parse_range(value: str) -> tuple[int, int]:
    """"21:00-08:00" -> (1260, 480): minutes after local midnight; an end before the start spans midnight.

    "24:00" is the midnight that ends a day. Same grammar as review.notify.hours.

    Raises:
        ValueError: saying what is wrong.
    """
    match = _HOURS.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a time range")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
        raise ValueError(f"{value!r} has a time that does not exist: hours 00 to 24, minutes 00 to 59")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if not _is_range(start, end):
        raise ValueError(f"{value!r} starts and ends at the same time of day")
    return start, end


def _is_range(start: int, end: int) -> bool:
    """Two different times of day, or the whole day 00:00-24:00."""
    return 0 <= start <= DAY and 0 <= end <= DAY and (start % DAY != end % DAY or (start, end) == (0, DAY))


def _open_minutes(quiet: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The parts of an ordinary day outside every quiet range, as sorted [start, end) minute pairs."""
    closed = [False] * DAY
    for start, end in quiet:
        spans = [(start, end)] if start < end else [(start, DAY), (0, end)]
        for a, b in spans:
            closed[a:b] = [True] * (b - a)
    out: list[tuple[int, int]] = []
    for minute, shut in enumerate(closed):
        if shut:
            continue
        if out and out[-1][1] == minute:
            out[-1] = (out[-1][0], minute + 1)
        else:
            out.append((minute, minute + 1))
    return tuple(out)


class SendWindow:
    """Quiet hours, quiet days and holidays; `next_allowed` and `due` move a time out of them.

    Args:
        quiet_hours: (start, end) minutes after local midnight, every day; end < start spans midnight.
        quiet_days: weekdays quiet all day, Monday 0 ... Sunday 6.
        holidays: dates quiet all day.
        workdays: dates on a quiet weekday that are working days after all (调休).
        tz: the time zone of days and hours; None: the machine's local time.
        urgent_priority: messages at or above it go at any time.

    Raises:
        ValueError: a range outside 00:00-24:00, quiet hours covering the whole day, every weekday
            quiet, or a date both a holiday and a working day.
    """

    def __init__(self, quiet_hours: Iterable[tuple[int, int]] = (), quiet_days: Iterable[int] = (),
                 holidays: Iterable[dt.date] = (), workdays: Iterable[dt.date] = (),
                 tz: dt.tzinfo | None = None, urgent_priority: int = PRIORITY_URGENT) -> None:
        self.quiet_hours = tuple(quiet_hours)
        self.quiet_days = frozenset(quiet_days)
        self.holidays = frozenset(holidays)
        self.workdays = frozenset(workdays)
        self.tz = tz
        self.urgent_priority = urgent_priority
        for start, end in self.quiet_hours:
            if not _is_range(start, end):
                raise ValueError(f"quiet range ({start}, {end}) is not two different times of day in minutes")
        if not self.quiet_days <= set(range(7)):
            raise ValueError(f"quiet days {sorted(self.quiet_days)} are not weekdays 0 (Monday) to 6 (Sunday)")
        if len(self.quiet_days) == 7:
            raise ValueError("every weekday is quiet: nothing but urgent messages could ever go")
        both = self.holidays & self.workdays
        if both:
            raise ValueError(f"{min(both).isoformat()} is both a holiday and a working day")
        self._open = _open_minutes(self.quiet_hours)
        if not self._open:
            raise ValueError("the quiet hours cover the whole day: nothing but urgent messages could ever go")
        # Among 8 * (holidays + 1) days there are 7 in a row without a holiday, one of them not a quiet day.
        self._horizon = 8 * (len(self.holidays) + 1) + 1
        self.empty = not (self.quiet_days or self.holidays) and self._open == ((0, DAY),)

    @classmethod
    def open_between(cls, start: int, end: int, tz: dt.tzinfo | None = None) -> SendWindow:
        """Open only from `start` to `end` (minutes; end < start spans midnight) every day: e.g. the hours
        reviewer notices may go (use `next_allowed`). 00:00-24:00: always open."""
        if (start, end) == (0, DAY):
            return cls(tz=tz)
        return cls([(end, start)], tz=tz)

    def quiet_day(self, day: dt.date) -> bool:
        """`day` is quiet all day: a holiday, or a quiet weekday that is not a working day."""
        return day in self.holidays or (day.weekday() in self.quiet_days and day not in self.workdays)

    def is_quiet(self, t: float) -> bool:
        """Whether a non-urgent message may not go at `t`."""
        if self.empty:
            return False
        local = self._local(t)
        if self.quiet_day(local.date()):
            return True
        minute = local.hour * 60 + local.minute
        return not any(a <= minute < b for a, b in self._open)

    def next_allowed(self, t: float) -> float:
        """The earliest moment at or after `t` that is not quiet (`t` itself when it is allowed)."""
        if self.empty:
            return t
        day = self._local(t).date()
        for _ in range(self._horizon):
            if not self.quiet_day(day):
                for a, b in self._open:
                    if t < self._at(day, b):
                        return max(t, self._at(day, a))
            day += dt.timedelta(days=1)
        raise AssertionError("no allowed time within the horizon")  # __init__ rules this out

    def due(self, due: float, priority: int) -> float:
        """When a message due at `due` may go: unchanged for urgent priorities, else `next_allowed`."""
        return due if priority >= self.urgent_priority else self.next_allowed(due)

    def _local(self, t: float) -> dt.datetime:
        # Whole seconds: fromtimestamp rounds to microseconds, which would put 07:59:59.9999999 at 08:00.
        return dt.datetime.fromtimestamp(math.floor(t), self.tz)

    def _at(self, day: dt.date, minute: int) -> float:
        """Epoch seconds of `minute` after the local midnight starting `day` (1440: the next midnight)."""
        if minute >= DAY:
            day, minute = day + dt.timedelta(days=1), minute - DAY
        return dt.datetime.combine(day, dt.time(minute // 60, minute % 60), tzinfo=self.tz).timestamp()

    def describe(self, t: float) -> str:
        """Why `t` is quiet, for a log line: "quiet hours", "holiday" or "quiet day"."""
        day = self._local(t).date()
        if day in self.holidays:
            return "holiday"
        if self.quiet_day(day):
            return "quiet day"
        return "quiet hours"
