"""Kannel's sendsms parameters to a `SendRequest`: bytes in, model objects or `SendsmsError` out.

No Twisted here. The query string (and a form body) is split and percent-decoded as
bytes, because `text` may be GBK or UTF-16BE and only `charset` says which; every
other value must be UTF-8. Anything a client can send either comes out as a
`SendRequest` or raises `SendsmsError` carrying Kannel's answer where Kannel has one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import unquote_to_bytes

from smsgw._api_codec import MAX_EPOCH, ApiError, parse_time
from smsgw.model import PRIORITY_NAMES as _PRIORITY_NAMES
from smsgw.model import PRIORITY_NORMAL, PRIORITY_URGENT, Account, Problem, SendRequest

__all__ = ["KANNEL_PRIORITY", "Params", "SendsmsError", "one", "parse_form", "send_request", "utf8", "wants_json"]

#: Kannel's priority 0..3 (SMPP priority_flag) onto smsgw's 0..9. Kannel clients that always
#: send 0 must not land below REST traffic, so 0 is "normal" and 3 is "urgent".
KANNEL_PRIORITY = {0: PRIORITY_NORMAL, 1: PRIORITY_NORMAL + 1, 2: PRIORITY_NORMAL + 2, 3: PRIORITY_URGENT}

#: charset names (upper case, without "-" and "_") -> Python codec. GB2312 is read as GBK:
#: systems that say GB2312 routinely send GBK characters, and GBK is a superset.
_CHARSETS = {
    "UTF8": "utf-8", "GBK": "gbk", "GB2312": "gbk", "CP936": "gbk", "GB18030": "gb18030",
    "UTF16BE": "utf-16-be", "UCS2": "utf-16-be", "UCS2BE": "utf-16-be", "UTF16": "utf-16",
    "ISO88591": "latin-1", "LATIN1": "latin-1", "ASCII": "ascii", "USASCII": "ascii",
}
_CHARSET_LIST = "UTF-8, GBK, GB2312, GB18030, UTF-16BE (UCS-2), UTF-16, ISO-8859-1"
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_SEPARATORS = re.compile(r"[\s,;]+")
_EPOCH = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
_JSON_FORMAT = re.compile(rb"(?:^|&)format=json(?:&|$)")
_EXT_DIGITS = 12  # as AccountConfig.default_ext


class SendsmsError(ApiError):
    """A request the interface refuses: `text` is the plain answer (Kannel's wording where it has one);
    with format=json the answer is the REST API's error object of `code` and the same text."""

    @property
    def text(self) -> str:
        return self.message


def _bad(text: str, code: str = "bad_request") -> SendsmsError:
    return SendsmsError(400, code, text)


# -- the query string -----------------------------------------------------------------------

Params = dict[str, list[bytes]]


def parse_form(raw: bytes, source: str, into: Params | None = None) -> Params:
    """Split an application/x-www-form-urlencoded string into {name: [raw value bytes]}.

    `+` is a space and `%XX` a byte; a `%` not followed by two hex digits is an
    error (browsers and curl never send one: it means the client forgot to escape).

    Raises:
        SendsmsError: 400 naming the offset of a malformed escape or a name that is not UTF-8.
    """
    params: Params = {} if into is None else into
    if not raw:
        return params
    offset = 0
    for pair in raw.split(b"&"):
        bad = _BAD_ESCAPE.search(pair)
        if bad is not None:
            at = offset + bad.start()
            raise _bad(f"Malformed {source}, rejected: '%' at offset {at} is not followed by two hex digits "
                       f"(got {_show_bytes(raw[at:at + 3])}); escape a literal % as %25", "malformed_query")
        offset += len(pair) + 1
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        try:
            key = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise _bad(f"Malformed {source}, rejected: a parameter name is not UTF-8",
                       "malformed_query") from None
        params.setdefault(key, []).append(unquote_to_bytes(value.replace(b"+", b" ")))
    return params


def wants_json(*raw: bytes) -> bool:
    """Whether a request asked for JSON answers, read from the raw bytes (for answers to unparsable requests)."""
    return any(_JSON_FORMAT.search(part) for part in raw)


def _show_bytes(raw: bytes) -> str:
    return repr(raw.decode("latin-1"))


def one(params: Params, *names: str) -> bytes | None:
    """The value of the first of `names` present (Kannel's aliases, e.g. username/user); None if absent.

    Raises:
        SendsmsError: 400 when the parameter is given more than once.
    """
    for name in names:
        values = params.get(name)
        if values is None:
            continue
        if len(values) > 1:
            raise _bad(f"Parameter {name} is given {len(values)} times, rejected: give it once", "repeated")
        return values[0]
    return None


def utf8(params: Params, *names: str) -> str | None:
    """`one` decoded as UTF-8; None when absent or empty (Kannel treats an empty value as none)."""
    raw = one(params, *names)
    if not raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(f"Parameter {names[0]} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}), "
                   "rejected: only text may be in another charset", "bad_encoding") from None


# -- the message ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Context:
    now: float
    service_codes: tuple[str, ...]  # longest first
    body_charset: str | None  # the charset of a form body's Content-Type


def send_request(params: Params, account: Account, now: float, service_codes: Sequence[str] = (),
                 body_charset: str | None = None) -> SendRequest:
    """The message a sendsms request asks for, for an authenticated `account`.

    Args:
        params: from `parse_form`.
        account: who sends (its max_priority caps a Kannel priority).
        now: epoch seconds, for Kannel's `deferred` minutes.
        service_codes: the carriers' service codes: a numeric `from` that starts with one
            names the extension after it.
        body_charset: charset of a POST body's Content-Type, used when `charset` is absent.

    Raises:
        SendsmsError: 400 with Kannel's answer for a missing or malformed parameter.
    """
    ctx = _Context(now, tuple(sorted(service_codes, key=len, reverse=True)), body_charset)
    to = _recipients(params)
    if one(params, "udh"):
        raise _bad("UDH field is not supported, rejected: send the whole text; smsgw splits long messages "
                   "itself", "unsupported")
    coding = _coding(params)
    template = utf8(params, "template")
    text = _text(params, coding, ctx) if template is None or one(params, "text") is not None else ""
    dlr_url = utf8(params, "dlr-url", "dlrurl")
    if dlr_url is not None and not dlr_url.lower().startswith(("http://", "https://")):
        raise _bad("DLR-URL field misformed, rejected: it must start with http:// or https://", "bad_dlr_url")
    return SendRequest(
        to=to, text=text, priority=_priority(params, account), send_at=_send_at(params, ctx),
        ext=_ext(params, ctx), ref=utf8(params, "ref"), report=_report(params),
        dlr_url=dlr_url, dlr_mask=_dlr_mask(params) if dlr_url is not None else 0,
        template=template, params=_template_params(params),
    )


def _template_params(params: Params) -> dict[str, Any] | None:
    """Native `params`: the template's parameters as a JSON object, e.g. params={"code":"1234"}."""
    raw = utf8(params, "params")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise _bad('Params field misformed, rejected: params is a JSON object such as {"code":"123456"} '
                   "(URL-encoded)", "bad_params")
    return value


def _recipients(params: Params) -> tuple[str, ...]:
    values = params.get("to")
    if values is None:
        raise _bad("Missing receiver number, rejected", "required")
    numbers: list[str] = []
    for raw in values:  # Kannel takes the first `to`; dropping the rest silently would lose recipients
        try:
            numbers.extend(n for n in _SEPARATORS.split(raw.decode("utf-8")) if n)
        except UnicodeDecodeError:
            raise _bad("Parameter to is not valid UTF-8, rejected: write the numbers in digits",
                       "bad_encoding") from None
    if not numbers:
        raise _bad("Empty receiver number not allowed, rejected", "no_recipients")
    return tuple(numbers)


def _coding(params: Params) -> int:
    value = utf8(params, "coding")
    if value is None:
        return 0
    if value not in ("0", "1", "2"):
        raise _bad(f"Coding field misformed, rejected: {value[:20]!r} is not 0 (text), 2 (UCS-2)", "bad_coding")
    if value == "1":
        raise _bad("Coding field misformed, rejected: coding=1 (8-bit binary data) is not supported; send "
                   "text with coding 0, or 2 for UCS-2", "bad_coding")
    return int(value)


def _text(params: Params, coding: int, ctx: _Context) -> str:
    raw = one(params, "text")
    if raw is None:
        raise _bad("Missing text, rejected", "required")
    name = utf8(params, "charset") or ctx.body_charset
    if name is None:
        name = "UTF-16BE" if coding == 2 else "UTF-8"  # Kannel's defaults
    codec = _CHARSETS.get(name.upper().replace("-", "").replace("_", ""))
    if codec is None:
        raise _bad(f"Charset or body misformed, rejected: unknown charset {name[:40]!r}; use one of "
                   f"{_CHARSET_LIST}", "bad_charset")
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as e:
        hint = "; add charset=GBK if it is GBK" if codec == "utf-8" else ""
        if codec == "utf-16-be" and len(raw) % 2:
            reason = f"an odd number of bytes ({len(raw)}) cannot be {name}"
        else:
            reason = f"byte 0x{raw[e.start]:02x} at offset {e.start} is not valid {name}"
        raise _bad(f"Charset or body misformed, rejected: text is not {name}: {reason}{hint}",
                   "bad_charset") from None


def _priority(params: Params, account: Account) -> int:
    value = utf8(params, "priority")
    if value is None:
        return PRIORITY_NORMAL
    if value in _PRIORITY_NAMES:
        return _PRIORITY_NAMES[value]  # native names: checked against max_priority like the REST API
    if len(value) == 1 and value in "0123":
        return min(KANNEL_PRIORITY[int(value)], account.max_priority)  # Kannel clients cannot know our cap
    raise _bad(f"Priority field misformed, rejected: {value[:20]!r} is not 0 to 3 (Kannel) or bulk, normal, "
               "urgent", "bad_priority")


def _send_at(params: Params, ctx: _Context) -> float | None:
    send_at, deferred = utf8(params, "send_at"), utf8(params, "deferred")
    if send_at is not None and deferred is not None:
        raise _bad("Parameters send_at and deferred are both given, rejected: give one", "conflict")
    if deferred is not None:
        if not (deferred.isascii() and deferred.isdigit() and len(deferred) <= 9):
            raise _bad(f"Deferred field misformed, rejected: {deferred[:20]!r} is not a number of minutes",
                       "bad_time")
        return ctx.now + int(deferred) * 60
    if send_at is None:
        return None
    if _EPOCH.fullmatch(send_at):
        if float(send_at) <= MAX_EPOCH:
            return float(send_at)
        raise _bad(f"Send_at field misformed, rejected: {send_at[:20]} is after the year 9999", "bad_time")
    problems: list[Problem] = []
    when = parse_time(send_at, "send_at", problems)
    if when is None:
        raise _bad(f"Send_at field misformed, rejected: {problems[0].message}", "bad_time")
    return when


def _ext(params: Params, ctx: _Context) -> str | None:
    """`ext`, else the extension a numeric `from` names, else None (the account's default_ext)."""
    ext = utf8(params, "ext")
    if ext is not None:
        return ext  # the validator checks it
    sender = utf8(params, "from")
    if sender is None or not (sender.isascii() and sender.isdigit()):
        return None  # alphanumeric senders do not exist in CMPP: Kannel clients often send one anyway
    for code in ctx.service_codes:
        if sender.startswith(code):
            return sender[len(code):]
    return sender if len(sender) <= _EXT_DIGITS else None


def _report(params: Params) -> bool:
    value = utf8(params, "report")
    if value is None:
        return True
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise _bad(f"Report field misformed, rejected: {value[:20]!r} is not 0 or 1", "bad_report")


def _dlr_mask(params: Params) -> int:
    value = utf8(params, "dlr-mask", "dlrmask")
    if value is None or value == "-1":  # -1 is Kannel's "undefined"
        return 0
    if not (value.isascii() and value.isdigit() and int(value) <= 63):
        raise _bad(f"DLR-Mask field misformed, rejected: {value[:20]!r} is not 0 to 63", "bad_dlr_mask")
    return int(value) & 31  # 32 (SMSC intermediate notification) never happens with CMPP
