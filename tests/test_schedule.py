"""Quiet hours, quiet days and holidays (smsgw.schedule) and the `schedule:` section that configures them."""

from __future__ import annotations

import datetime as dt
import pathlib
import time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.config import load_config
from smsgw.model import PRIORITY_BULK, PRIORITY_NORMAL, PRIORITY_URGENT
from smsgw.schedule import SendWindow, parse_dates, parse_range
from test_config import BASE, problems_of, where, write

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str, tz: dt.tzinfo = SHANGHAI) -> float:
    """Epoch seconds of "2026-10-09 22:00" (or with seconds) in `tz`."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def shown(t: float, tz: dt.tzinfo = SHANGHAI) -> str:
    return dt.datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M:%S")


NIGHTS = SendWindow([parse_range("21:00-08:00")], tz=SHANGHAI)
#: Nights, weekends, National Day 2026 and one Saturday made a working day (调休).
OFFICE = SendWindow([parse_range("21:00-08:00"), parse_range("12:00-13:00")], quiet_days=[5, 6],
                    holidays=[dt.date(2026, 10, d) for d in range(1, 8)], workdays=[dt.date(2026, 10, 10)],
                    tz=SHANGHAI)


# --- the pure window ------------------------------------------------------------------------------

@pytest.mark.parametrize(("given_at", "allowed"), [
    ("2026-10-08 12:00", "2026-10-08 12:00:00"),  # open: unchanged
    ("2026-10-08 20:59:59", "2026-10-08 20:59:59"),
    ("2026-10-08 21:00", "2026-10-09 08:00:00"),  # the quiet range starts: next morning
    ("2026-10-08 23:30", "2026-10-09 08:00:00"),
    ("2026-10-09 03:00", "2026-10-09 08:00:00"),  # after midnight, same morning
    ("2026-10-09 07:59:30", "2026-10-09 08:00:00"),
])
def test_overnight_quiet_hours_move_a_time_to_the_next_morning(given_at: str, allowed: str) -> None:
    """Inside "21:00-08:00" a time moves to 08:00 of the morning ending it; outside it stays."""
    assert shown(NIGHTS.next_allowed(at(given_at))) == allowed


@pytest.mark.parametrize(("given_at", "allowed"), [
    ("2026-10-09 20:30", "2026-10-09 20:30:00"),  # a Friday evening, open
    ("2026-10-09 12:30", "2026-10-09 13:00:00"),  # the lunch range
    ("2026-09-30 22:00", "2026-10-08 08:00:00"),  # the eve of National Day: after the holidays
    ("2026-10-09 21:30", "2026-10-10 08:00:00"),  # Friday night: Saturday the 10th is a working day
    ("2026-10-10 21:30", "2026-10-12 08:00:00"),  # Saturday night: Sunday is quiet, Monday morning
    ("2026-10-11 10:00", "2026-10-12 08:00:00"),
])
def test_quiet_days_holidays_and_working_days(given_at: str, allowed: str) -> None:
    """Weekends and holidays are quiet all day; a listed working day on a weekend is not; nights stay quiet."""
    assert shown(OFFICE.next_allowed(at(given_at))) == allowed


def test_urgent_priorities_pass_and_others_wait() -> None:
    """`due` leaves an urgent message alone and moves normal and bulk ones out of a quiet period."""
    night = at("2026-10-08 23:00")
    assert NIGHTS.due(night, PRIORITY_URGENT) == night
    assert NIGHTS.due(night, PRIORITY_NORMAL) == NIGHTS.due(night, PRIORITY_BULK) == at("2026-10-09 08:00")
    relaxed = SendWindow([(1260, 480)], tz=SHANGHAI, urgent_priority=PRIORITY_NORMAL)
    assert relaxed.due(night, PRIORITY_NORMAL) == night and relaxed.due(night, PRIORITY_BULK) > night


def test_quiet_until_midnight_ends_at_the_next_day() -> None:
    """A range ending at 24:00 opens again at the midnight ending the day."""
    window = SendWindow([parse_range("20:00-24:00")], tz=SHANGHAI)
    assert shown(window.next_allowed(at("2026-10-08 22:00"))) == "2026-10-09 00:00:00"


def test_an_empty_window_never_moves_anything() -> None:
    """No quiet hours, days or holidays: every time is allowed, as it is."""
    window = SendWindow()
    assert window.empty and window.next_allowed(12345.5) == 12345.5 and not window.is_quiet(0.0)


@pytest.mark.parametrize(("hours", "given_at", "opens"), [
    ((480, 1200), "2026-10-08 20:30", "2026-10-09 08:00:00"),
    ((480, 1200), "2026-10-08 07:00", "2026-10-08 08:00:00"),
    ((480, 1200), "2026-10-08 10:00", "2026-10-08 10:00:00"),
    ((1200, 480), "2026-10-08 10:00", "2026-10-08 20:00:00"),  # open overnight
    ((1200, 480), "2026-10-09 02:00", "2026-10-09 02:00:00"),
    ((0, 1440), "2026-10-08 03:00", "2026-10-08 03:00:00"),  # always
])
def test_open_between_is_a_daily_window(hours: tuple[int, int], given_at: str, opens: str) -> None:
    """`open_between` allows only its hours: e.g. review.notify.hours."""
    window = SendWindow.open_between(*hours, tz=SHANGHAI)
    assert shown(window.next_allowed(at(given_at))) == opens


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"quiet_days": range(7)}, "every weekday is quiet"),
    ({"quiet_hours": [(0, 720), (720, 1440)]}, "cover the whole day"),
    ({"quiet_hours": [(1260, 480), (420, 1290)]}, "cover the whole day"),
    ({"quiet_hours": [(600, 600)]}, "not two different times"),
    ({"quiet_days": [7]}, "not weekdays"),
    ({"holidays": [dt.date(2026, 10, 1)], "workdays": [dt.date(2026, 10, 1)]}, "both a holiday and a working day"),
])
def test_a_window_that_leaves_no_time_is_refused(kwargs: dict[str, object], message: str) -> None:
    """Construction fails, saying why, when nothing non-urgent could ever go or the dates contradict."""
    with pytest.raises(ValueError, match=message):
        SendWindow(**kwargs)  # type: ignore[arg-type]


def test_a_time_a_hair_before_a_boundary_is_still_on_its_side() -> None:
    """07:59:59.9999998 is quiet and moves to 08:00 (local times are taken in whole seconds, not rounded up)."""
    morning = at("2026-10-09 08:00")
    assert NIGHTS.is_quiet(morning - 2e-7) and NIGHTS.next_allowed(morning - 2e-7) == morning


# --- properties -----------------------------------------------------------------------------------

ZONES = [ZoneInfo("UTC"), SHANGHAI, ZoneInfo("Asia/Kolkata"), ZoneInfo("Asia/Kathmandu")]
if not time.daylight:  # the machine's own zone, when it has no daylight saving time
    ZONES.append(None)  # type: ignore[arg-type]

minutes = st.integers(0, 1440)
dates = st.dates(dt.date(2025, 1, 1), dt.date(2027, 12, 31))


@st.composite
def windows(draw: st.DrawFn) -> SendWindow:
    quiet = draw(st.lists(st.tuples(minutes, minutes).filter(lambda r: r[0] % 1440 != r[1] % 1440), max_size=3))
    days = draw(st.sets(st.integers(0, 6), max_size=6))
    holidays = draw(st.sets(dates, max_size=40))
    workdays = draw(st.sets(dates, max_size=10)) - holidays
    try:
        return SendWindow(quiet, days, holidays, workdays, draw(st.sampled_from(ZONES)), draw(st.integers(0, 10)))
    except ValueError:  # quiet hours covering the day
        return SendWindow(tz=SHANGHAI)


times = st.floats(at("2025-01-01 00:00"), at("2027-12-31 00:00"), allow_nan=False)


@given(windows(), times)
def test_next_allowed_is_never_earlier_never_quiet_and_idempotent(window: SendWindow, t: float) -> None:
    """The result is at or after the input, not in a quiet period, and a fixed point."""
    allowed = window.next_allowed(t)
    assert allowed >= t
    assert not window.is_quiet(allowed)
    assert window.next_allowed(allowed) == allowed


@given(windows(), times)
def test_next_allowed_is_the_earliest_allowed_moment(window: SendWindow, t: float) -> None:
    """An allowed time is kept; a quiet one moves to the end of its quiet period, not later."""
    allowed = window.next_allowed(t)
    if not window.is_quiet(t):
        assert allowed == t
    else:
        assert window.is_quiet(max(t, allowed - 0.5))  # boundaries are whole minutes


@given(windows(), times, st.integers(0, 9))
def test_due_passes_urgent_and_moves_the_rest(window: SendWindow, t: float, priority: int) -> None:
    """At or above urgent_priority `due` is the identity, below it `next_allowed`."""
    expected = t if priority >= window.urgent_priority else window.next_allowed(t)
    assert window.due(t, priority) == expected


# --- parsers --------------------------------------------------------------------------------------

def test_parse_dates_takes_a_date_or_an_inclusive_range() -> None:
    """One date is a range of one day; "a..b" includes both ends; spaces around are ignored."""
    assert parse_dates("2026-10-01") == (dt.date(2026, 10, 1),) * 2
    assert parse_dates(" 2026-10-01 .. 2026-10-07 ") == (dt.date(2026, 10, 1), dt.date(2026, 10, 7))
    assert parse_dates("2026-2-3") == (dt.date(2026, 2, 3),) * 2


@pytest.mark.parametrize(("text", "message"), [
    ("2026-02-30", "not a day of the calendar"),
    ("2026-10-07..2026-10-01", "ends (2026-10-01) before it starts (2026-10-07)"),
    ("2026-10-01..2027-10-07", "more than a year"),
    ("10/01/2026", "not a date or a range of dates"),
    ("2026-10-01..", "not a date or a range of dates"),
    ("", "not a date or a range of dates"),
])
def test_parse_dates_says_what_is_wrong(text: str, message: str) -> None:
    """Bad dates, reversed and over-long ranges are refused with a reason."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_dates(text)


@pytest.mark.parametrize(("text", "minutes_"), [
    ("21:00-08:00", (1260, 480)), ("8:00 - 20:30", (480, 1230)), ("00:00-24:00", (0, 1440)),
    ("20:00-24:00", (1200, 1440)), ("24:00-06:00", (1440, 360)),
])
def test_parse_range_gives_minutes_after_midnight(text: str, minutes_: tuple[int, int]) -> None:
    """HH:MM-HH:MM becomes a pair of minutes; 24:00 is 1440."""
    assert parse_range(text) == minutes_


@pytest.mark.parametrize(("text", "message"), [
    ("25:00-08:00", "does not exist"), ("21:60-08:00", "does not exist"), ("24:30-08:00", "does not exist"),
    ("21:00-21:00", "same time of day"), ("24:00-00:00", "same time of day"), ("9pm-8am", "not a time range"),
])
def test_parse_range_says_what_is_wrong(text: str, message: str) -> None:
    """Impossible times, empty ranges and other notations are refused with a reason."""
    with pytest.raises(ValueError, match=message):
        parse_range(text)


@given(st.text(max_size=40))
def test_garbage_never_crashes_the_parsers(text: str) -> None:
    """Any text parses or raises ValueError, nothing else."""
    for parse in (parse_dates, parse_range):
        try:
            parse(text)
        except ValueError:
            pass


@given(st.from_regex(r"\d{4}-\d{1,2}-\d{1,2}(\.\.\d{4}-\d{1,2}-\d{1,2})?", fullmatch=True))
def test_dates_of_the_right_shape_parse_or_say_why(text: str) -> None:
    """Anything shaped like a date or range parses to first <= last or raises ValueError."""
    try:
        first, last = parse_dates(text)
    except ValueError:
        return
    assert first <= last


# --- the schedule: section ------------------------------------------------------------------------

def test_schedule_section_builds_the_window(tmp_path: pathlib.Path) -> None:
    """Single values stand for lists, weekday ranges expand, and the window follows the section."""
    config = load_config(write(tmp_path, BASE + """\
schedule:
  timezone: Asia/Shanghai
  quiet_hours: 21:00-08:00
  quiet_days: sat-sun
  holidays: ["2026-10-01..2026-10-07", "2027-01-01"]
  workdays: "2026-10-10"
  urgent_priority: 8
"""), {})
    s = config.schedule
    assert s.quiet_hours == ("21:00-08:00",) and s.quiet_days == ("sat", "sun") and s.workdays == ("2026-10-10",)
    window = s.window()
    assert window.tz == SHANGHAI and window.urgent_priority == 8 and window.quiet_days == {5, 6}
    assert len(window.holidays) == 8 and window.workdays == {dt.date(2026, 10, 10)}
    assert shown(window.next_allowed(at("2026-09-30 22:00"))) == "2026-10-08 08:00:00"


def test_default_schedule_is_empty(tmp_path: pathlib.Path) -> None:
    """Without a schedule: section nothing is ever quiet."""
    assert load_config(write(tmp_path, BASE), {}).schedule.window().empty


@pytest.mark.parametrize(("section", "line", "path", "what"), [
    ('  holidays: ["2026-10-01", "2026-02-30"]\n', 12, "schedule.holidays[1]", "'2026-02-30' is not a day"),
    ('  holidays:\n    - "2026-10-07..2026-10-01"\n', 13, "schedule.holidays[0]", "ends (2026-10-01) before"),
    ('  workdays: ["20261010"]\n', 12, "schedule.workdays[0]", "is not a date or a range of dates"),
    ("  quiet_hours: [21:00-08:00, 25:00-06:00]\n", 12, "schedule.quiet_hours[1]", "does not exist"),
    ("  quiet_hours: 21:00-21:00\n", 12, "schedule.quiet_hours", "same time of day"),  # a single value
    ("  quiet_days: [sat, sunday]\n", 12, "schedule.quiet_days", "'sunday' is not a day"),
    ("  timezone: Asia/Shangai\n", 12, "schedule.timezone", "unknown time zone 'Asia/Shangai'"),
    ("  urgent_priority: 10\n", 12, "schedule.urgent_priority", "less than or equal to 9"),
    ("  quiet_hours: [00:00-12:00, 12:00-24:00]\n", 12, "schedule.quiet_hours", "cover the whole day"),
    ("  quiet_days: mon-sun\n", 12, "schedule.quiet_days", "every weekday is quiet"),
    ('  quiet_days: [sat, sun]\n  holidays: ["2026-10-01..2026-10-11"]\n  workdays: ["2026-10-10"]\n', 14,
     "schedule.workdays[0]", "2026-10-10 is also listed under holidays"),
    ('  quiet_days: [sat, sun]\n  workdays: ["2026-10-10..2026-10-12"]\n', 13,
     "schedule.workdays[0]", "2026-10-12 is a mon, not one of quiet_days (sat, sun)"),
    ('  workdays: ["2026-10-10"]\n', 12, "schedule.workdays[0]", "not one of quiet_days (none)"),
])
def test_schedule_problems_name_their_line_and_key(tmp_path: pathlib.Path, section: str, line: int, path: str,
                                                   what: str) -> None:
    """Each bad value in schedule: is one problem at its own line, saying what is wrong and how to fix it."""
    found = problems_of(tmp_path, BASE + "schedule:\n" + section)
    assert where(found) == [(line, path)], found
    assert what in found[0]["what"] and found[0]["fix"]


def test_reviewer_notice_text_may_use_only_its_placeholders(tmp_path: pathlib.Path) -> None:
    """review.notify.text with an unknown or formatted placeholder is a problem; the known ones load."""
    base = BASE + "review:\n  notify:\n    text: "
    found = problems_of(tmp_path, base + "'{count} waiting'\n")
    assert where(found) == [(13, "review.notify.text")] and "{count}" in found[0]["what"]
    found = problems_of(tmp_path, base + "'{messages!r} {oldest:>5}'\n")
    assert where(found) == [(13, "review.notify.text")]
    found = problems_of(tmp_path, base + "'{messages'\n")
    assert where(found) == [(13, "review.notify.text")] and "not a usable template" in found[0]["what"]
    assert problems_of(tmp_path, base + "'{messages} ({recipients}) since {oldest}, {{literal}}'\n") == []

