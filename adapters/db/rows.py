"""A legacy row's values, as the database driver returns them, turned into a SendRequest.

Drivers return what the column type says: str, int, Decimal (NUMBER), float,
datetime/date, and sometimes bytes (VARBINARY, RAW, a latin1 connection).
Every value either becomes part of the request or is refused with a RowError
whose text is written back to the row; nothing else may escape, or one odd row
would fail the whole poll again and again.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from smsgw.model import SendRequest

_SEPARATORS = re.compile(r"[\s,;，；、]+")
_NO = {"0", "n", "no", "f", "false", "off", ""}
#: No number column holds more digits than this; a bigger value is a data error, and turning
#: Decimal("1E+999999999") into an int would take forever.
_MAX_DIGITS = 30


class RowError(ValueError):
    """A row cannot be sent as it is; the message is written back to it."""


def _text(value: Any, what: str) -> str:
    """A text value: str as it is, bytes decoded as UTF-8 (never their repr, b'...')."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise RowError(f"{what} is not UTF-8 text") from None
    return str(value)


def _integral(value: int | float | Decimal) -> int | None:
    """The whole number a numeric value holds; None for a fraction, NaN, infinity or an absurd size."""
    if isinstance(value, int):
        return value if abs(value) < 10 ** _MAX_DIGITS else None
    number = Decimal(value) if isinstance(value, float) else value
    if not number.is_finite() or number.adjusted() >= _MAX_DIGITS or number != number.to_integral_value():
        return None
    return int(number)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def numbers(value: Any) -> tuple[str, ...]:
    """'138..., 139...' / '138...;139...' / an integer column -> the numbers as written."""
    if value is None:
        return ()
    if _is_number(value):
        number = _integral(value)
        if number is None:
            raise RowError(f"mobile number {str(value)[:40]!r} is not a whole number")
        return (str(number),)
    return tuple(part for part in _SEPARATORS.split(_text(value, "the mobile number column")) if part)


def _timestamp(moment: datetime, shown: Any) -> float:
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):  # year 1, year 9999 in some zones
        raise RowError(f"send time {str(shown)[:40]!r} is out of range") from None


def epoch(value: Any) -> float | None:
    """A send time column (DATETIME/DATE/TIMESTAMP, or text in ISO form) -> epoch seconds, local time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _timestamp(value, value)
    if isinstance(value, date):
        return _timestamp(datetime(value.year, value.month, value.day), value)
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        text = _text(value, "send time").strip()
        if not text:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise RowError(f"send time {text[:40]!r} is not a date and time: "
                           "write it like 2026-11-22 08:30:00") from None
        return _timestamp(moment, text)
    raise RowError(f"send time {str(value)[:40]!r} is not a date and time")


def whole(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    if _is_number(value):
        number = _integral(value)
    else:
        text = _text(value, what).strip()
        if not text:  # a blank CHAR column: not given
            return None
        try:
            number = _integral(Decimal(text))
        except ArithmeticError:
            number = None
    if number is None:
        raise RowError(f"{what} {str(value)[:20]!r} is not a whole number")
    return number


def flag(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, (bool, int, float, Decimal)):
        return bool(value)
    return _text(value, "the report column").strip().lower() not in _NO


def _ext(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if _is_number(value):
        number = _integral(value)
        if number is None or number < 0:
            raise RowError(f"ext {str(value)[:20]!r} is not digits")
        return str(number)
    return _text(value, "ext").strip() or None  # a blank CHAR column: the account's default


def request(values: dict[str, Any], *, default_priority: int, default_report: bool) -> SendRequest:
    """The message a row asks for. Raises RowError for what validation cannot say (unknown template...)."""
    raw_template = values.get("template")
    template = None if raw_template is None else _text(raw_template, "the template column").strip() or None
    params = None
    if template is not None:
        try:
            params = params_text(values.get("params"))
        except ValueError as exc:
            raise RowError(f"the params column is not usable: {exc}") from None
    text = values.get("text")
    priority = whole(values.get("priority"), "priority")
    return SendRequest(
        to=numbers(values.get("to")),
        text="" if text is None else _text(text, "the text column"),
        priority=default_priority if priority is None else priority,
        send_at=epoch(values.get("send_at")),
        ext=_ext(values.get("ext")),
        report=flag(values.get("report"), default_report),
        template=template, params=params,
    )


def params_text(params: Any) -> dict[str, Any]:
    """A row's template parameters: a JSON object (text, or a CLOB's str) or already a mapping; none: {}."""
    if params is None or params == "":
        return {}
    if isinstance(params, dict):
        return params
    value = json.loads(str(params))
    if not isinstance(value, dict):
        raise ValueError('params must be a JSON object, e.g. {"name": "张三"}')
    return value
