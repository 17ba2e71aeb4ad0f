"""JSON in and out of the REST API: bodies to `SendRequest`s, model views to JSON.

No Twisted here: everything a client can send passes through these functions,
which either return model objects or raise `ApiError` (never anything else, which
the hypothesis tests hold them to). They run once per request on the hot path, so
they check exact types (`type(v) is str`: json only builds exact types) and
build the model objects directly instead of going through a schema library.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
from typing import Any, Mapping, Sequence

from smsgw.model import (
    PRIORITY_NAMES,
    PRIORITY_NORMAL,
    AcceptedMessage,
    GatewayStatus,
    MessageView,
    MoPage,
    Problem,
    SendRequest,
)
from smsgw.templates import Template

SEND_FIELDS = ("to", "text", "template", "params", "priority", "send_at", "ext", "ref", "report", "batch",
               "batch_size")
TEMPLATE_FIELDS = ("text", "pre_approved")
MO_LIMIT_DEFAULT, MO_LIMIT_MAX = 100, 1000
MAX_EPOCH = 253402300799.0  # 9999-12-31T23:59:59Z: the last second datetime can show
# A 4 MiB body can hold a million bad items: name the first few of a kind, and cap the list,
# so a refusal costs neither much CPU nor a huge answer.
PER_FIELD_MAX, PROBLEMS_MAX = 20, 200
_FIELD_SET = frozenset(SEND_FIELDS)
_MISSING: Any = object()


class ApiError(Exception):
    """A request the API refuses: becomes `{"error": {code, message, details}}` with `status`."""

    def __init__(self, status: int, code: str, message: str,
                 details: Sequence[Mapping[str, str]] = (),
                 headers: Mapping[bytes, bytes] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})


def rejected(problems: Sequence[Problem | dict[str, str]]) -> ApiError:
    """The 422 for a request that is well-formed JSON but not a valid request (at most PROBLEMS_MAX listed)."""
    details = [p.as_dict() if isinstance(p, Problem) else p for p in problems[:PROBLEMS_MAX]]
    if len(problems) == 1:
        message = "the request was not accepted: 1 problem, listed in details"
    elif len(problems) <= PROBLEMS_MAX:
        message = f"the request was not accepted: {len(problems)} problems, listed in details"
    else:
        message = f"the request was not accepted: {len(problems)} problems, the first {PROBLEMS_MAX} listed in details"
    return ApiError(422, "validation_failed", message, details)


# -- request bodies ---------------------------------------------------------------------------

class _NotJson(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def decode_json(body: bytes) -> Any:
    """Parse a request body: strict UTF-8, then strict JSON (no NaN or Infinity).

    Raises:
        ApiError: 400 bad_request naming the offending byte, or the line and column.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "bad_request", f"the body is not UTF-8: byte 0x{body[e.start]:02x} at offset "
                       f"{e.start} is not valid UTF-8; send JSON encoded as UTF-8") from None
    if not text.strip():
        raise ApiError(400, "bad_request", "the body is empty: send a JSON object (one message) "
                       "or an array of them")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise ApiError(400, "bad_request",
                       f"the body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except _NotJson as e:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "bad_request", "the body nests arrays or objects too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ApiError(400, "bad_request", f"the body is not usable JSON: {e}") from None


def parse_send_body(value: Any, max_batch: int) -> tuple[list[SendRequest], bool]:
    """Turn a decoded body (one object or an array of them) into `SendRequest`s.

    Returns:
        The requests, and whether the body was a single object (problem
        locations then have no `[i].` prefix).

    Raises:
        ApiError: 422 validation_failed listing every problem found.
    """
    problems: list[Problem] = []
    if type(value) is dict:
        one = _send_request(value, "", problems)
        if one is None:
            raise rejected(problems)
        return [one], True
    if type(value) is not list:
        raise rejected([Problem("", "wrong_type", "the body must be a JSON object (one message) or an "
                                f"array of them, not {_kind(value)}")])
    if not value:
        raise rejected([Problem("", "no_messages", "the array is empty: send at least one message")])
    if len(value) > max_batch:
        raise rejected([Problem("", "too_many_messages", f"the array has {len(value)} messages; at most "
                                f"{max_batch} are allowed per request: split it")])
    requests = []
    for i, item in enumerate(value):
        one = _send_request(item, f"[{i}]", problems)
        if one is not None:
            requests.append(one)
    if problems:
        raise rejected(problems)
    return requests, False


def _send_request(obj: Any, prefix: str, problems: list[Problem]) -> SendRequest | None:
    if type(obj) is not dict:
        problems.append(Problem(prefix, "wrong_type", 'each message must be a JSON object like '
                                f'{{"to": "13800138000", "text": "…"}}, not {_kind(obj)}'))
        return None
    before = len(problems)
    if not obj.keys() <= _FIELD_SET:
        _unknown_fields(obj, prefix, problems)
    to = _recipients(obj.get("to", _MISSING), prefix, problems)
    template = obj.get("template")
    params = obj.get("params")
    if template is not None and (type(template) is not str or not _encodable(template)):
        _string_problem(template, at(prefix, "template"), "a template's name, or null", problems)
    if params is not None:
        params = _params(params, prefix, problems)
    text = obj.get("text", "" if template is not None else _MISSING)
    if type(text) is not str or not _encodable(text):
        _string_problem(text, at(prefix, "text"), "a string (or name a template)", problems, required=True)
    priority = obj.get("priority", PRIORITY_NORMAL)
    if type(priority) is not int or not 0 <= priority <= 9:
        priority = _priority(priority, prefix, problems)
    send_at = obj.get("send_at")
    if send_at is not None:
        send_at = _send_at(send_at, prefix, problems)
    ext = obj.get("ext")
    if ext is not None and (type(ext) is not str or not _encodable(ext)):
        _string_problem(ext, at(prefix, "ext"), "a string of digits, or null", problems)
    ref = obj.get("ref")
    if ref is not None and (type(ref) is not str or not _encodable(ref)):
        _string_problem(ref, at(prefix, "ref"), "a string, or null", problems)
    report = obj.get("report", True)
    if type(report) is not bool:
        problems.append(Problem(at(prefix, "report"), "wrong_type",
                                f"report must be true or false, not {_kind(report)}"))
    batch = obj.get("batch")
    if batch is not None and (type(batch) is not str or not _encodable(batch)):
        _string_problem(batch, at(prefix, "batch"), "a batch name, or null", problems)
    batch_size = obj.get("batch_size")
    if batch_size is not None and type(batch_size) is not int:
        problems.append(Problem(at(prefix, "batch_size"), "wrong_type",
                                f"batch_size must be a whole number of recipients, not {_kind(batch_size)}"))
    if len(problems) > before:
        return None
    return SendRequest(to, text, priority, send_at, ext, ref, report, template=template, params=params,
                       batch=batch, batch_size=batch_size)


def _params(value: Any, prefix: str, problems: list[Problem]) -> dict[str, Any] | None:
    where = at(prefix, "params")
    if type(value) is not dict:
        problems.append(Problem(where, "wrong_type", 'params must be an object of name: value, e.g. '
                                f'{{"code": "123456"}}, not {_kind(value)}'))
        return None
    bad = [k for k, v in value.items() if not _encodable(k) or not (
        (type(v) is str and _encodable(v)) or type(v) in (int, float))]
    for name in bad[:PER_FIELD_MAX]:
        problems.append(Problem(at(where, _safe(name)), "wrong_type",
                                f"a parameter must be a string or a number, not {_kind(value[name])}"))
    return None if bad else value


def parse_template_body(value: Any) -> tuple[str, bool]:
    """The text and pre_approved flag of a PUT /api/v1/templates/{name} body.

    Raises:
        ApiError: 422 listing every problem.
    """
    problems: list[Problem] = []
    if type(value) is not dict:
        raise rejected([Problem("", "wrong_type", 'the body must be an object like {"text": "Your code is '
                                f'{{code}}", "pre_approved": false}}, not {_kind(value)}')])
    for name in sorted(value.keys() - set(TEMPLATE_FIELDS))[:PER_FIELD_MAX]:
        problems.append(Problem(_safe(name), "unknown_field", f"unknown field {_show(name)}: the fields are "
                                + ", ".join(TEMPLATE_FIELDS)))
    text = value.get("text", _MISSING)
    if type(text) is not str or not _encodable(text):
        _string_problem(text, "text", "a string with {parameter} placeholders", problems, required=True)
    pre_approved = value.get("pre_approved", False)
    if type(pre_approved) is not bool:
        problems.append(Problem("pre_approved", "wrong_type",
                                f"pre_approved must be true or false, not {_kind(pre_approved)}"))
    if problems:
        raise rejected(problems)
    return text, pre_approved


def template_json(template: Template) -> dict[str, Any]:
    return {"name": template.name, "text": template.text, "params": list(template.params),
            "pre_approved": template.pre_approved, "updated_at": iso_utc(template.updated_at),
            "updated_by": template.updated_by}


def _unknown_fields(obj: dict[str, Any], prefix: str, problems: list[Problem]) -> None:
    unknown = sorted(obj.keys() - _FIELD_SET)
    for name in unknown[:PER_FIELD_MAX]:
        close = difflib.get_close_matches(name, SEND_FIELDS, n=1)
        hint = f"did you mean {_show(close[0])}? " if close else ""
        problems.append(Problem(at(prefix, _safe(name)), "unknown_field", f"unknown field {_show(name)}: "
                                f"{hint}the fields are {', '.join(SEND_FIELDS)}"))
    if len(unknown) > PER_FIELD_MAX:
        problems.append(Problem(prefix, "unknown_field", f"and {len(unknown) - PER_FIELD_MAX} more unknown "
                                "fields"))


def _recipients(to: Any, prefix: str, problems: list[Problem]) -> tuple[str, ...]:
    if type(to) is str and _encodable(to):
        return (to,)
    if type(to) is list and to and all(type(n) is str and _encodable(n) for n in to):
        return tuple(to)
    where = at(prefix, "to")
    if to is _MISSING:
        problems.append(Problem(where, "required", 'to is required: a mobile number like "13800138000" '
                                "or an array of them"))
    elif type(to) is list and not to:
        problems.append(Problem(where, "no_recipients", "to is an empty array: name at least one recipient"))
    elif type(to) is list:
        bad = [i for i, n in enumerate(to) if type(n) is not str or not _encodable(n)]
        for i in bad[:PER_FIELD_MAX]:
            _string_problem(to[i], f"{where}[{i}]", 'a string like "13800138000"', problems)
        if len(bad) > PER_FIELD_MAX:
            problems.append(Problem(where, "wrong_type", f"and {len(bad) - PER_FIELD_MAX} more items of to "
                                    "are not strings"))
    else:
        problems.append(Problem(where, "wrong_type", 'to must be a string like "13800138000" or an array of '
                                f"them, not {_kind(to)}"))
    return ()


def _priority(value: Any, prefix: str, problems: list[Problem]) -> int:
    if type(value) is str and value in PRIORITY_NAMES:
        return PRIORITY_NAMES[value]
    where = at(prefix, "priority")
    if type(value) is int:
        problems.append(Problem(where, "out_of_range", f"priority must be from 0 (bulk) to 9 (urgent), "
                                f"not {value}"))
    else:
        problems.append(Problem(where, "wrong_type", 'priority must be an integer from 0 to 9 or one of '
                                f'"urgent", "normal", "bulk", not {_show(value)}'))
    return PRIORITY_NORMAL


def _send_at(value: Any, prefix: str, problems: list[Problem]) -> float | None:
    where = at(prefix, "send_at")
    if type(value) is str:
        return parse_time(value, where, problems)
    if type(value) is int or type(value) is float:
        if math.isfinite(value) and 0 <= value <= MAX_EPOCH:
            return float(value)
        problems.append(Problem(where, "out_of_range", f"send_at {_show(value)} is not a time: epoch seconds "
                                "run from 0 (1970) to 253402300799 (year 9999)"))
        return None
    problems.append(Problem(where, "wrong_type", "send_at must be an ISO-8601 time with a UTC offset "
                            f'("2024-03-05T08:00:00+08:00") or epoch seconds, not {_kind(value)}'))
    return None


def parse_time(value: str, where: str, problems: list[Problem]) -> float | None:
    """An ISO-8601 time with a UTC offset (or Z) as epoch seconds; a naive time is refused."""
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        problems.append(Problem(where, "bad_time", f"{where.rpartition('.')[2]} {_show(value)} is not an "
                                'ISO-8601 time: write it like "2024-03-05T08:00:00+08:00" or send '
                                "epoch seconds"))
        return None
    if when.tzinfo is None:
        problems.append(Problem(where, "bad_time", f"{where.rpartition('.')[2]} {_show(value)} has no UTC "
                                "offset, so the server cannot tell which clock it means: add one, e.g. "
                                '"2024-03-05T08:00:00+08:00" (China) or "2024-03-05T00:00:00Z" (UTC), '
                                "or send epoch seconds"))
        return None
    stamp = when.timestamp()
    if not 0 <= stamp <= MAX_EPOCH:
        problems.append(Problem(where, "bad_time", f"{where.rpartition('.')[2]} {_show(value)} is outside "
                                "the years 1970 to 9999"))
        return None
    return stamp


def _string_problem(value: Any, where: str, wanted: str, problems: list[Problem],
                    required: bool = False) -> None:
    name = where.rpartition(".")[2]
    if value is _MISSING and required:
        problems.append(Problem(where, "required", f"{name} is required: {wanted}"))
    elif type(value) is str:
        problems.append(Problem(where, "unencodable_text", f"{name} contains an unpaired UTF-16 surrogate "
                                "(a lone \\ud800-\\udfff escape): send real characters"))
    else:
        problems.append(Problem(where, "wrong_type", f"{name} must be {wanted}, not {_kind(value)}"))


def rebase(problems: Sequence[Problem], single: bool) -> list[dict[str, str]]:
    """The gateway's problems with `where` made relative to the body the client sent.

    The gateway locates problems in the request list (`[0].to[2]`); for a body
    that was a single object the `[0]` goes (`to[2]`), so every location is a
    path into what the client wrote.
    """
    out = []
    for p in problems:
        d = p.as_dict()
        if single and d["where"].startswith("[0]"):
            d["where"] = d["where"][3:].removeprefix(".")
        out.append(d)
    return out


def parse_mo_query(args: Mapping[bytes, Sequence[bytes]]) -> tuple[str | None, int]:
    """`cursor` and `limit` of `GET /api/v1/mo` from the query string.

    Raises:
        ApiError: 422 naming an unknown, repeated or invalid parameter.
    """
    problems: list[Problem] = []
    values: dict[str, str] = {}
    for raw, vals in args.items():
        name = raw.decode("utf-8", "replace")
        if name not in ("cursor", "limit"):
            problems.append(Problem(_safe(name), "unknown_field", f"unknown query parameter {_show(name)}: "
                                    "the parameters are cursor and limit"))
        elif len(vals) != 1:
            problems.append(Problem(name, "repeated", f"{name} is given {len(vals)} times: give it once"))
        else:
            try:
                values[name] = vals[0].decode("utf-8")
            except UnicodeDecodeError:
                problems.append(Problem(name, "wrong_type", f"{name} is not UTF-8 text"))
    limit = MO_LIMIT_DEFAULT
    if "limit" in values:
        text = values["limit"]
        if text.isascii() and text.isdigit() and 1 <= int(text) <= MO_LIMIT_MAX:
            limit = int(text)
        else:
            problems.append(Problem("limit", "out_of_range", f"limit must be an integer from 1 to "
                                    f"{MO_LIMIT_MAX}, not {_show(text)}"))
    if problems:
        raise rejected(problems)
    return values.get("cursor") or None, limit


def at(prefix: str, name: str) -> str:
    """The location of `name` inside `prefix` ("[0].to"), or `name` alone at the top."""
    return f"{prefix}.{name}" if prefix else name


def _encodable(text: str) -> bool:
    """False for strings holding lone surrogates (from `\\ud800` escapes): they are not text."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _safe(text: str) -> str:
    return text if _encodable(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _kind(value: Any) -> str:
    if value is _MISSING:
        return "missing"
    return _KINDS.get(type(value), type(value).__name__)


_KINDS: dict[type, str] = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
                           int: "a number", float: "a number", type(None): "null"}


def _show(value: Any, limit: int = 40) -> str:
    """A value as JSON for a message, shortened (messages echo what the client sent)."""
    text = json.dumps(_safe(value) if type(value) is str else value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


# -- responses --------------------------------------------------------------------------------

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON; strings the gateway handed back with lone surrogates come out escaped."""
    try:
        return _ENCODER.encode(obj).encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(obj).encode("ascii")


def error_body(code: str, message: str, details: Sequence[Mapping[str, str]] = ()) -> bytes:
    return encode({"error": {"code": code, "message": message, "details": list(details)}})


def iso_utc(when: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds: "2024-03-05T00:00:00.000Z"."""
    if when is None:
        return None
    stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    return stamp.isoformat(timespec="milliseconds")[:-6] + "Z"


def accepted_json(accepted: Sequence[AcceptedMessage]) -> dict[str, Any]:
    return {"messages": [{"id": a.id, "ref": a.ref, "recipients": a.recipients, "segments": a.segments,
                          "dropped_duplicates": list(a.dropped_duplicates), "repeated": a.repeated,
                          "held": a.held, "batch": a.batch} for a in accepted]}


def message_json(view: MessageView) -> dict[str, Any]:
    return {
        "id": view.id, "account": view.account, "interface": view.interface, "ref": view.ref,
        "text": view.text, "priority": view.priority, "send_at": iso_utc(view.send_at),
        "state": view.state, "created_at": iso_utc(view.created_at), "updated_at": iso_utc(view.updated_at),
        "recipients": [{
            "to": r.to, "state": r.state, "link": r.link, "attempts": r.attempts, "error": r.error,
            "stat": r.stat, "updated_at": iso_utc(r.updated_at),
            "segments": [{
                "number": s.number, "total": s.total, "msg_id": s.msg_id, "state": s.state, "stat": s.stat,
                "submitted_at": iso_utc(s.submitted_at), "reported_at": iso_utc(s.reported_at),
            } for s in r.segments],
        } for r in view.recipients],
    }


def mo_page_json(page: MoPage) -> dict[str, Any]:
    return {"items": [{"id": m.id, "link": m.link, "src": m.src, "dest": m.dest, "ext": m.ext, "text": m.text,
                       "consumer": m.consumer, "received_at": iso_utc(m.received_at), "parts": m.parts,
                       "complete": m.complete} for m in page.items],
            "next_cursor": page.next_cursor}


def status_json(status: GatewayStatus) -> dict[str, Any]:
    return {"node": status.node, "accepting": status.accepting, "links": [dict(link) for link in status.links],
            "queues": dict(status.queues), "rates": dict(status.rates)}
