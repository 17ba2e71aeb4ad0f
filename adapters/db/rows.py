"""A legacy row's values, as the database driver returns them, turned into a SendRequest."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from smsgw.model import SendRequest

_SEPARATORS = re.compile(r"[\s,;，；、]+")
_NO = {"0", "n", "no", "f", "false", "off", ""}


class RowError(ValueError):
    """A row cannot be sent as it is; the message is written back to it."""


def numbers(value: Any) -> tuple[str, ...]:
    """'138..., 139...' / '138...;139...' / an integer column -> the numbers as written."""
    if value is None:
        return ()
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return (str(int(value)),)
    return tuple(part for part in _SEPARATORS.split(str(value)) if part)


def epoch(value: Any) -> float | None:
    """A send time column (DATETIME/DATE/TIMESTAMP, or text in ISO form) -> epoch seconds, local time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip()).timestamp()
        except ValueError:
            raise RowError(f"send time {value[:40]!r} is not a date and time: write it like 2026-11-22 08:30:00")
    raise RowError(f"send time {value!r} is not a date and time")


def whole(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:
        raise RowError(f"{what} {str(value)[:20]!r} is not a whole number") from None
    if number != number.to_integral_value():
        raise RowError(f"{what} {value} is not a whole number")
    return int(number)


def flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, (bool, int, Decimal)):
        return bool(value)
    return str(value).strip().lower() not in _NO


def request(values: dict[str, Any], *, default_priority: int, default_report: bool) -> SendRequest:
    """The message a row asks for. Raises RowError for what validation cannot say (unknown template...)."""
    template = values.get("template")
    if template not in (None, ""):
        raise RowError(f"unknown template {str(template)[:64]!r}: no templates are defined on this gateway; "
                       "write the text into the content column instead")
    text = values.get("text")
    priority = whole(values.get("priority"), "priority")
    ext = values.get("ext")
    ext_text = None if ext in (None, "") else (str(int(ext)) if isinstance(ext, (int, Decimal)) else str(ext).strip())
    return SendRequest(
        to=numbers(values.get("to")),
        text="" if text is None else str(text),
        priority=default_priority if priority is None else priority,
        send_at=epoch(values.get("send_at")),
        ext=ext_text,
        report=flag(values.get("report"), default_report),
    )
