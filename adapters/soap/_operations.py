"""The three operations: an operation's element to a typed call, the gateway's answer to a response element.

No Twisted here. Reading follows the schema in `_wsdl` and is lenient only where
clients differ harmlessly: child elements may come in any order and may be
written unqualified (hand-written clients often leave the namespace off), and
``xsi:nil="true"`` on an optional element counts as leaving it out. Everything
else that does not fit is a problem; every problem of a request is reported at
once, in one Client fault, each with ``where`` (the element, with a 0-based index
among its repeats: ``mobile[2]``), a code and a message.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Literal

from lxml import etree

from smsgw._api_codec import MAX_EPOCH, at, iso_utc
from smsgw.adapters.soap._codec import XSI, SoapFault, close_match, rejected, response, sub
from smsgw.adapters.soap._wsdl import NAMESPACE
from smsgw.model import PRIORITY_NORMAL, AcceptedMessage, MessageView, MoPage, Problem, RecipientView, SendRequest

__all__ = ["Call", "Credentials", "FetchMo", "MO_LIMIT_DEFAULT", "MO_LIMIT_MAX", "QuerySms", "SendSms",
           "fetch_mo_response", "not_found", "query_sms_response", "read_call", "send_sms_response", "soap_where"]

MO_LIMIT_DEFAULT, MO_LIMIT_MAX = 100, 1000
_NIL = f"{{{XSI}}}nil"
_INT = re.compile(r"[+-]?[0-9]{1,12}")
_DATETIME = re.compile(r"(-?[0-9]{4,})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
                       r"(Z|[+-][0-9]{2}:[0-9]{2})?")
#: the gateway's names for a message's fields (problem locations) -> this interface's element names
_SOAP_NAMES = {"to": "mobile", "text": "content", "send_at": "sendTime", "params": "param"}


# -- the calls -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Credentials:
    account: str
    password: str

    def __repr__(self) -> str:  # a call may end up in a log line: never with the key
        return f"Credentials(account={self.account!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class SendSms:
    credentials: Credentials
    request: SendRequest


@dataclass(frozen=True, slots=True)
class QuerySms:
    credentials: Credentials
    message_id: str


@dataclass(frozen=True, slots=True)
class FetchMo:
    credentials: Credentials
    cursor: str | None
    limit: int


Call = SendSms | QuerySms | FetchMo

_Kind = Literal["string", "token", "int", "boolean", "dateTime", "param"]


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: _Kind
    required: bool = False
    repeated: bool = False


_CREDENTIALS = (_Field("account", "string", True), _Field("password", "string", True))
_SCHEMAS: dict[str, tuple[_Field, ...]] = {
    "sendSms": (*_CREDENTIALS, _Field("mobile", "token", True, True), _Field("content", "string"),
                _Field("template", "token"), _Field("param", "param", repeated=True), _Field("sendTime", "dateTime"),
                _Field("ext", "token"), _Field("ref", "string"), _Field("priority", "int"),
                _Field("report", "boolean")),
    "querySms": (*_CREDENTIALS, _Field("messageId", "token", True)),
    "fetchMo": (*_CREDENTIALS, _Field("cursor", "token"), _Field("limit", "int")),
}
_PARAM = (_Field("name", "token", True), _Field("value", "string", True))

_Value = str | int | bool | float | dict[str, str] | None


def read_call(operation: str, element: etree._Element) -> Call:
    """The call `element` (an operation's wrapper, from `read_envelope`) asks for.

    Raises:
        SoapFault: Client, listing every problem: unknown, missing, repeated or
            mistyped elements, and values outside their range.
    """
    problems: list[Problem] = []
    values = _read(element, _SCHEMAS[operation], "", problems)
    credentials = Credentials(_str(values, "account"), _str(values, "password"))
    call: Call
    if operation == "sendSms":
        call = SendSms(credentials, _send_request(values, problems))
    elif operation == "querySms":
        call = QuerySms(credentials, _str(values, "messageId"))
    else:
        call = FetchMo(credentials, _opt(values, "cursor"), _limit(values, problems))
    if problems:
        raise rejected(operation, problems)
    return call


def soap_where(where: str) -> str:
    """A gateway problem location ("to[1]", "send_at") in this interface's element names ("mobile[1]", "sendTime")."""
    head = re.match(r"[A-Za-z_]+", where)
    if head is None or head.group() not in _SOAP_NAMES:
        return where
    return _SOAP_NAMES[head.group()] + where[head.end():]


# -- reading elements ----------------------------------------------------------------------------

def _read(element: etree._Element, fields: tuple[_Field, ...], prefix: str,
          problems: list[Problem]) -> dict[str, list[_Value]]:
    """{field name: [value per occurrence]} of `element`'s children, each converted to its kind."""
    known = {f.name: f for f in fields}
    found: dict[str, list[etree._Element]] = {}
    for child in element:
        if not isinstance(child.tag, str):
            problems.append(Problem(prefix, "malformed", "an entity reference stands where an element should: "
                                    "write the value itself"))
            continue
        q = etree.QName(child)
        if q.localname not in known:
            problems.append(Problem(at(prefix, q.localname), "unknown_element", f"unknown element "
                                    f"{q.localname!r}: {close_match(q.localname, list(known))}the elements are "
                                    f"{', '.join(known)}"))
        elif q.namespace not in (NAMESPACE, None):
            problems.append(Problem(at(prefix, q.localname), "wrong_namespace", f"{q.localname} is in the "
                                    f"namespace {q.namespace}: write it in {NAMESPACE} (or in none)"))
        else:
            found.setdefault(q.localname, []).append(child)
    values: dict[str, list[_Value]] = {}
    for field in fields:
        elements = [e for e in found.get(field.name, ()) if not (_is_nil(e) and not field.repeated)]
        if field.repeated:
            where = [f"{at(prefix, field.name)}[{i}]" for i in range(len(elements))]
        else:
            where = [at(prefix, field.name)] * len(elements)
            if len(elements) > 1:
                problems.append(Problem(where[0], "repeated", f"{field.name} is given {len(elements)} times: give "
                                        "it once"))
                elements = elements[:1]
        if field.required and not elements:
            problems.append(Problem(at(prefix, field.name), "required", f"{field.name} is required"))
        values[field.name] = [_value(e, field.kind, w, problems) for e, w in zip(elements, where)]
    return values


def _is_nil(element: etree._Element) -> bool:
    return element.get(_NIL, "").strip() in ("true", "1")


def _value(element: etree._Element, kind: _Kind, where: str, problems: list[Problem]) -> _Value:
    if kind == "param":
        fields = _read(element, _PARAM, where, problems)
        name, value = fields["name"], fields["value"]
        return {str(name[0]): str(value[0])} if name and value and None not in (name[0], value[0]) else None
    if len(element) or _is_nil(element):
        what = "nil" if _is_nil(element) else "elements"
        problems.append(Problem(where, "wrong_type", f"{where.rpartition('.')[2]} must hold text, not {what}"))
        return None
    text = element.text or ""
    if kind == "string":
        return text
    text = text.strip()
    if kind == "token":
        return text
    if kind == "int":
        return _int(text, where, problems)
    if kind == "boolean":
        if text in ("true", "1", "false", "0"):
            return text in ("true", "1")
        problems.append(Problem(where, "wrong_type", f"{_name(where)} must be true or false, not {_quote(text)}"))
        return None
    return _datetime(text, where, problems)


def _int(text: str, where: str, problems: list[Problem]) -> int | None:
    if _INT.fullmatch(text) and -2**31 <= int(text) < 2**31:
        return int(text)
    problems.append(Problem(where, "wrong_type", f"{_name(where)} must be a whole number (xs:int), not "
                            f"{_quote(text)}"))
    return None


def _datetime(text: str, where: str, problems: list[Problem]) -> float | None:
    """An xs:dateTime as epoch seconds; without a UTC offset it is the daemon's local time."""
    when = _parse_datetime(text)
    if when is None:
        problems.append(Problem(where, "bad_time", f"{_name(where)} {_quote(text)} is not an xs:dateTime: write "
                                "it like 2024-03-05T08:00:00+08:00, or 2024-03-05T08:00:00 for the gateway's "
                                "local time"))
        return None
    try:
        stamp = when.timestamp()  # a naive time: the local time zone's (mktime)
    except (OverflowError, OSError, ValueError):
        stamp = -1.0
    if not 0 <= stamp <= MAX_EPOCH:
        problems.append(Problem(where, "bad_time", f"{_name(where)} {_quote(text)} is outside the years 1970 to "
                                "9999"))
        return None
    return stamp


def _parse_datetime(text: str) -> datetime.datetime | None:
    m = _DATETIME.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, dot_fraction, zone = m.groups()
    fraction = (dot_fraction or ".")[1:]
    end_of_day = hour == "24"  # xs:dateTime allows 24:00:00, the midnight that ends the day
    if end_of_day and (minute, second, fraction.strip("0")) != ("00", "00", ""):
        return None
    try:
        when = datetime.datetime(int(year), int(month), int(day), 0 if end_of_day else int(hour), int(minute),
                                 int(second), int(fraction[:6].ljust(6, "0")), tzinfo=_zone(zone))
        return when + datetime.timedelta(days=1) if end_of_day else when
    except (ValueError, OverflowError):
        return None


def _zone(zone: str | None) -> datetime.tzinfo | None:
    if zone is None:
        return None
    if zone == "Z":
        return datetime.timezone.utc
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError("xs:dateTime offsets run from -14:00 to +14:00")
    return datetime.timezone((-1 if zone[0] == "-" else 1) * datetime.timedelta(hours=hours, minutes=minutes))


def _name(where: str) -> str:
    return where.rpartition(".")[2].partition("[")[0]


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _str(values: dict[str, list[_Value]], name: str) -> str:
    got = values.get(name)
    return got[0] if got and isinstance(got[0], str) else ""


def _opt(values: dict[str, list[_Value]], name: str) -> str | None:
    got = values.get(name)
    return got[0] if got and isinstance(got[0], str) and got[0] != "" else None


# -- the calls' own rules --------------------------------------------------------------------------

def _send_request(values: dict[str, list[_Value]], problems: list[Problem]) -> SendRequest:
    content, template = _opt(values, "content"), _opt(values, "template")
    params = _params(values["param"], problems)
    if template is None:
        if not values["content"]:
            problems.append(Problem("content", "required", "content is required: the message's text (or give "
                                    "template and its param elements instead)"))
        if values["param"]:
            problems.append(Problem("param[0]", "not_allowed", "param fills a template: give template too, or "
                                    "leave the param elements out"))
    elif content is not None:
        problems.append(Problem("template", "conflict", "give content or template, not both"))
    priority = _first(values, "priority", PRIORITY_NORMAL)
    if isinstance(priority, int) and not 0 <= priority <= 9:
        problems.append(Problem("priority", "out_of_range", f"priority must be from 0 (bulk) to 9 (urgent), "
                                f"not {priority}"))
    send_at = _first(values, "sendTime", None)
    return SendRequest(
        to=tuple(str(m) for m in values["mobile"]),
        text="" if template is not None else _str(values, "content"),
        priority=priority if isinstance(priority, int) and 0 <= priority <= 9 else PRIORITY_NORMAL,
        send_at=send_at if isinstance(send_at, float) else None,
        ext=_opt(values, "ext"), ref=_opt(values, "ref"), report=_first(values, "report", True) is not False,
        template=template, params=params if template is not None else None,
    )


def _first(values: dict[str, list[_Value]], name: str, default: _Value) -> _Value:
    got = values[name]
    return got[0] if got and got[0] is not None else default


def _params(items: list[_Value], problems: list[Problem]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue  # its problem is listed already
        [(name, value)] = item.items()
        if name in out:
            problems.append(Problem(f"param[{i}].name", "repeated", f"the parameter {name!r} is given twice: "
                                    "give each once"))
        out[name] = value
    return out


def _limit(values: dict[str, list[_Value]], problems: list[Problem]) -> int:
    got = values["limit"]
    if not got or got[0] is None:
        return MO_LIMIT_DEFAULT
    limit = got[0]
    if isinstance(limit, int) and 1 <= limit <= MO_LIMIT_MAX:
        return limit
    problems.append(Problem("limit", "out_of_range", f"limit must be from 1 to {MO_LIMIT_MAX}, not {limit}"))
    return MO_LIMIT_DEFAULT


# -- answers -----------------------------------------------------------------------------------

def send_sms_response(accepted: AcceptedMessage) -> etree._Element:
    wrapper, result = response("sendSms")
    sub(result, "messageId", accepted.id)
    sub(result, "ref", accepted.ref)
    sub(result, "recipients", accepted.recipients)
    sub(result, "segments", accepted.segments)
    for number in accepted.dropped_duplicates:
        sub(result, "droppedDuplicate", number)
    sub(result, "repeated", accepted.repeated)
    return wrapper


def query_sms_response(view: MessageView) -> etree._Element:
    wrapper, result = response("querySms")
    sub(result, "messageId", view.id)
    sub(result, "ref", view.ref)
    sub(result, "state", view.state)
    sub(result, "content", view.text)
    sub(result, "priority", view.priority)
    sub(result, "sendTime", iso_utc(view.send_at))
    sub(result, "createdTime", iso_utc(view.created_at))
    sub(result, "updatedTime", iso_utc(view.updated_at))
    for recipient in view.recipients:
        _recipient(etree.SubElement(result, f"{{{NAMESPACE}}}recipient"), recipient)
    return wrapper


def _recipient(element: etree._Element, r: RecipientView) -> None:
    """One recipient; its times are those of its last segment submitted and its last report."""
    sub(element, "mobile", r.to)
    sub(element, "state", r.state)
    sub(element, "stat", r.stat)
    sub(element, "error", r.error)
    sub(element, "attempts", r.attempts)
    for segment in r.segments:
        sub(element, "msgId", segment.msg_id)
    submitted = [s.submitted_at for s in r.segments if s.submitted_at is not None]
    reported = [s.reported_at for s in r.segments if s.reported_at is not None]
    sub(element, "submittedTime", iso_utc(max(submitted)) if submitted else None)
    sub(element, "reportedTime", iso_utc(max(reported)) if reported else None)
    sub(element, "updatedTime", iso_utc(r.updated_at))


def fetch_mo_response(page: MoPage) -> etree._Element:
    wrapper, result = response("fetchMo")
    for mo in page.items:
        message = etree.SubElement(result, f"{{{NAMESPACE}}}message")
        sub(message, "id", mo.id)
        sub(message, "mobile", mo.src)
        sub(message, "destination", mo.dest)
        sub(message, "ext", mo.ext)
        sub(message, "content", mo.text)
        sub(message, "receivedTime", iso_utc(mo.received_at))
    sub(result, "nextCursor", page.next_cursor)
    return wrapper


def not_found(message_id: str) -> SoapFault:
    return SoapFault("not_found", f"no message {message_id[:40]!r} for this account: give the messageId sendSms "
                     "answered")
