"""The `schedule:` section: quiet hours, quiet days, holidays and working days (docs/scheduling.md).

Kept apart from config.py like `review:`; `smsgw.config` re-exports it.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Iterator

from pydantic import AfterValidator, BeforeValidator, Field

from smsgw._config_db import _days
from smsgw._yaml_source import Section as _Section
from smsgw._yaml_source import SubProblem
from smsgw._yaml_source import bad as _bad
from smsgw._yaml_source import parsed_by
from smsgw.model import PRIORITY_URGENT
from smsgw.schedule import WEEKDAYS, SendWindow, _open_minutes, parse_dates, parse_range

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = ["ScheduleSection"]

_RANGE_FIX = 'write HH:MM-HH:MM, e.g. "21:00-08:00" (over midnight) or "12:00-13:30"'
_DATES_FIX = 'write a date as "2026-10-01" or a range as "2026-10-01..2026-10-07" (both days included), in quotes'


def _one_or_many(value: Any) -> Any:
    """A single "21:00-08:00" or "2026-10-01" stands for a list of one."""
    return (value,) if isinstance(value, str) else value


def _weekdays(value: Any) -> Any:
    return () if value is None else _days(value)


def _timezone(value: str) -> str:
    try:
        _zone(value)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; a path-like key a ValueError
        raise _bad(f"unknown time zone {value[:60]!r}",
                   "write an IANA name such as Asia/Shanghai (a file under /usr/share/zoneinfo: install the "
                   "tzdata package if that folder is missing), or null for the machine's local time") from None
    return value


def _zone(name: str) -> ZoneInfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


QuietRange = Annotated[str, AfterValidator(parsed_by(parse_range, _RANGE_FIX))]
Dates = Annotated[str, AfterValidator(parsed_by(parse_dates, _DATES_FIX))]
_LIST = BeforeValidator(_one_or_many)


class ScheduleSection(_Section):
    """When non-urgent messages may go out; the rest waits for the next allowed moment."""

    timezone: Annotated[str, AfterValidator(_timezone)] | None = None  # None: the machine's local time
    quiet_hours: Annotated[tuple[QuietRange, ...], _LIST] = ()  # every day, e.g. "21:00-08:00"
    quiet_days: Annotated[tuple[str, ...], BeforeValidator(_weekdays)] = ()  # whole weekdays, e.g. [sat, sun]
    holidays: Annotated[tuple[Dates, ...], _LIST] = ()  # whole dates and ranges of dates
    workdays: Annotated[tuple[Dates, ...], _LIST] = ()  # quiet weekdays that are working days (调休)
    urgent_priority: Annotated[int, Field(ge=0, le=9)] = PRIORITY_URGENT  # at or above: at any time

    def window(self) -> SendWindow:
        """The `smsgw.schedule.SendWindow` of this section (check `problems` first)."""
        return SendWindow([parse_range(r) for r in self.quiet_hours], [WEEKDAYS.index(d) for d in self.quiet_days],
                          _expand(self.holidays), _expand(self.workdays), self.tz(), self.urgent_priority)

    def tz(self) -> dt.tzinfo | None:
        return _zone(self.timezone) if self.timezone is not None else None

    def problems(self) -> Iterator[SubProblem]:
        """What the types alone cannot say: no time left to send, and contradicting dates."""
        if self.quiet_hours and not _open_minutes(parse_range(r) for r in self.quiet_hours):
            yield (("quiet_hours",), "the quiet hours cover the whole day: only urgent messages could ever go",
                   "leave some hours open, e.g. quiet_hours: [\"21:00-08:00\"]")
        if len(self.quiet_days) == len(WEEKDAYS):
            yield (("quiet_days",), "every weekday is quiet: only urgent messages could ever go",
                   "list the days nothing should go, e.g. [sat, sun]")
        holidays = _expand(self.holidays)
        quiet = {WEEKDAYS.index(d) for d in self.quiet_days}
        for i, text in enumerate(self.workdays):
            days = _dates(text)
            clash = [d for d in days if d in holidays]
            if clash:
                yield (("workdays", i), f"{clash[0].isoformat()} is also listed under holidays",
                       "a date is either a holiday or a working day: remove it from one of the two lists")
            ordinary = [d for d in days if d.weekday() not in quiet]
            if ordinary:
                shown = ", ".join(self.quiet_days) or "none"
                yield (("workdays", i), f"{ordinary[0].isoformat()} is a {WEEKDAYS[ordinary[0].weekday()]}, not "
                       f"one of quiet_days ({shown}): a working day only lifts a quiet weekday",
                       "check the date (调休 days are usually a Saturday or a Sunday), or add the weekday to "
                       "quiet_days")


def _dates(text: str) -> list[dt.date]:
    """Every day of a date or a range of dates, in order."""
    first, last = parse_dates(text)
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


def _expand(ranges: tuple[str, ...]) -> set[dt.date]:
    return {day for text in ranges for day in _dates(text)}
