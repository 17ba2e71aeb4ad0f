"""Request validation and number routing: pure functions, no I/O, no clock.

What a business system hands in (`smsgw.model.SendRequest`) is checked here in
one pass and turned into `PreparedMessage`s, the exact form the store persists:
numbers normalised and de-duplicated, the segment count computed by the very
splitter the carrier link uses. Every problem of every request is reported at
once (`smsgw.model.RequestRejected`), so a caller fixes a batch in one round.

`Router` then maps each normalised number to a carrier link by prefix.

Speed matters: the daemon aims at 10,000 messages/s on two cores, so the
common case (an already clean 11-digit number) takes a fast path of a few
C-level string checks and one set lookup; see scripts/bench/validation.py.
"""

from __future__ import annotations

import math
from collections import abc
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from smsgw.model import Account, Problem, RequestRejected, SendRequest
from smsgw.templates import Template, render
from smsgw.protocol.cmpp._errors import CmppLocalError
from smsgw.protocol.cmpp._text import (
    ASCII_GSM7_LIMITS,
    DEFAULT_LIMITS,
    choose_msg_fmt,
    encode_text,
    split_text,
)

if TYPE_CHECKING:
    from smsgw.filters import Filters, Hold

__all__ = [
    "MAINLAND_PREFIXES", "NumberError", "PreparedMessage", "Router", "Validator", "clean_number", "count_segments",
    "normalise_number",
]

# Mainland China mobile segments (号段) open to ordinary subscribers, 2025/2026.
# Left out on purpose (an operator can add them in validation.number_prefixes):
#   140-144, 146, 148  IoT / data-only numbers (物联网, many of them 13 digits)
#   1349, 174          satellite phones (1349 and 1740x Tiantong, 1749 maritime)
#   154, 160, 161, 163, 164, 168, 169, 179, 194  not assigned
#   100-129            not mobile (10xxx/12xxx service numbers)
MAINLAND_PREFIXES: tuple[str, ...] = (
    # 13x: 1349 is satellite, so 134 is listed digit by digit
    "130", "131", "132", "133", *(f"134{d}" for d in "012345678"),
    "135", "136", "137", "138", "139",
    # 14x data-card segments with 11-digit numbers that receive SMS
    "145", "147", "149",
    "150", "151", "152", "153", "155", "156", "157", "158", "159",
    # 16x: 162/165/167 virtual operators (MVNO), 166 China Unicom
    "162", "165", "166", "167",
    # 17x: 170/171 virtual operators
    "170", "171", "172", "173", "175", "176", "177", "178",
    "180", "181", "182", "183", "184", "185", "186", "187", "188", "189",
    # 192 is China Broadnet (中国广电)
    "190", "191", "192", "193", "195", "196", "197", "198", "199",
)

_SECONDS_AHEAD = 366 * 86400  # send_at may be at most this far in the future
_MAX_REF = 64
_MAX_BATCH = 48  # stored with the account's name in front (messages.batch is 64 characters)
_EXAMPLE = "e.g. 13800138000 or +86 138 0013 8000"
_YAML_ALLOW_OTHER = "validation.allow_other_numbers"

# Separators people type in numbers, dropped; full-width digits and plus, mapped.
_CLEAN = str.maketrans(
    {
        **{chr(0xFF10 + i): str(i) for i in range(10)},
        "\uff0b": "+",
        **dict.fromkeys("-.()\uff0d\uff0e\uff08\uff09\u2010\u2011\u2012\u2013\u2014\u2212", None),
    }
)


class NumberError(ValueError):
    """A recipient number is not acceptable; `code` is short snake_case, the message says how to fix it.

    Codes: empty, bad_characters, wrong_length, unknown_segment, not_mainland, bad_country_code.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- prefixes --------------------------------------------------------------------------------


def _compile(
    prefixes: Sequence[str], what: str, *, allow_plus: bool = False
) -> tuple[frozenset[str], tuple[int, ...]]:
    """Check a prefix list and return (set, distinct lengths shortest first); ValueError naming the bad entry."""
    if isinstance(prefixes, str):
        raise ValueError(f"{what} must be a list of prefixes, got the single string {prefixes!r}")
    for i, p in enumerate(prefixes):
        digits = p[1:] if allow_plus and isinstance(p, str) and p.startswith("+") else p
        if not isinstance(p, str) or not p or not (digits == "" or (digits.isascii() and digits.isdigit())):
            hint = "digits, optionally after a leading +" if allow_plus else "ASCII digits"
            raise ValueError(f"{what}[{i}] is {p!r}: a prefix is a non-empty string of {hint}, e.g. \"138\"")
        if not allow_plus and (not p.startswith("1") or len(p) > 11):
            raise ValueError(
                f"{what}[{i}] is {p!r}: mainland mobile prefixes start with 1 and have at most 11 digits"
            )
    return frozenset(prefixes), tuple(sorted({len(p) for p in prefixes}))


@lru_cache(maxsize=32)
def _matcher(prefixes: tuple[str, ...]) -> Callable[[str], bool]:
    """A predicate telling whether an 11-digit number starts with one of the prefixes."""
    if not prefixes:
        raise ValueError("validation.number_prefixes is empty: every number would be refused")
    known, lengths = _compile(prefixes, "validation.number_prefixes")
    if len(lengths) == 1:  # the usual case: one slice, one set lookup
        k = lengths[0]
        return lambda number: number[:k] in known

    def match(number: str) -> bool:
        for k in lengths:
            if number[:k] in known:
                return True
        return False

    return match


_MAINLAND_MATCH = _matcher(MAINLAND_PREFIXES)


# --- numbers ---------------------------------------------------------------------------------


def normalise_number(raw: str, prefixes: Sequence[str] = MAINLAND_PREFIXES, allow_other: bool = False) -> str:
    """Normalise a recipient number.

    Spaces, dashes, dots and parentheses are dropped, full-width digits and plus
    are read as ASCII, and a +86 / 0086 / 86 country code is removed when what
    follows is a mobile number (1 then 10 digits).

    Args:
        raw: the number as the caller wrote it.
        prefixes: the mobile segments accepted (3- or 4-digit prefixes, any
            length up to 11 works).
        allow_other: also accept numbers outside mainland mobiles, written in
            international form (+44..., 0044..., or bare digits with the country
            code such as 447700900123; not starting with 0).

    Returns:
        The 11-digit mainland number, e.g. "13800138000"; with `allow_other`,
        any other number as "+" and 7 to 15 digits with its country code, e.g.
        "+447700900123" (the "+" keeps it apart from mainland numbers, and
        normalising a result again returns it unchanged).

    Raises:
        NumberError: with `code` empty, bad_characters, wrong_length,
            unknown_segment, not_mainland or bad_country_code.
        ValueError: if `prefixes` is malformed or empty.
    """
    match = _MAINLAND_MATCH if prefixes is MAINLAND_PREFIXES else _matcher(tuple(prefixes))
    if len(raw) == 11 and raw.isdigit() and raw.isascii() and match(raw):
        return raw
    return _normalise_slow(raw, match, allow_other)


def clean_number(raw: str) -> str:
    """`raw` without the separators people type in numbers (spaces, dashes, dots, parentheses),
    full-width digits and plus read as ASCII; nothing else is checked."""
    return "".join(raw.split()).translate(_CLEAN)


def _quote(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:37] + "...")


def _normalise_slow(raw: object, match: Callable[[str], bool], allow_other: bool) -> str:
    if not isinstance(raw, str):
        raise NumberError("bad_characters", f"a number must be a string of digits ({_EXAMPLE}), got {raw!r}")
    cleaned = clean_number(raw)
    if not cleaned:
        raise NumberError("empty", f"the number is empty: give a mainland mobile number, {_EXAMPLE}")
    plus = cleaned[0] == "+"
    digits = cleaned[1:] if plus else cleaned
    if not digits:
        raise NumberError("wrong_length", f"{_quote(raw)} has no digits: give a number, {_EXAMPLE}")
    if not (digits.isascii() and digits.isdigit()):
        bad = next((ch for ch in digits if not ("0" <= ch <= "9")), "+")
        raise NumberError(
            "bad_characters",
            f"{_quote(raw)} contains {bad!r}: write digits only ({_EXAMPLE}); spaces, dashes, dots,"
            " parentheses and a leading + are allowed",
        )
    if plus:
        return _international(raw, digits, match, allow_other)
    if digits.startswith("00"):
        return _international(raw, digits[2:], match, allow_other)
    if digits[0] == "1":
        return _mainland(raw, digits, match)
    if digits[0] == "0":
        raise NumberError(
            "not_mainland",
            f"{_quote(raw)} is a landline or national number: SMS goes to mobile numbers ({_EXAMPLE})"
            + (", or write other numbers in international form, e.g. +86 755 ..." if allow_other else ""),
        )
    return _international(raw, digits, match, allow_other)  # bare, with country code


def _international(raw: str, intl: str, match: Callable[[str], bool], allow_other: bool) -> str:
    """Digits after + or 00 (or bare with a country code): a +86 mobile, or another number."""
    if intl.startswith("86") and intl[2:3] == "1" and intl[3:4] != "0":  # +86 10... is a Beijing landline
        if len(intl) == 13:
            return _mainland(raw, intl[2:], match)
        raise NumberError(
            "wrong_length",
            f"{_quote(raw)} has {len(intl) - 2} digits after the country code 86:"
            f" a mainland mobile number has 11 ({_EXAMPLE})",
        )
    if not allow_other:
        raise NumberError(
            "not_mainland",
            f"{_quote(raw)} is not a mainland China mobile number: only 11-digit mobile numbers are accepted"
            f" ({_EXAMPLE}); the operator can accept others with {_YAML_ALLOW_OTHER}",
        )
    if intl[:1] == "0":
        raise NumberError("bad_country_code", f"{_quote(raw)}: a country code never starts with 0 (e.g. +44 ...)")
    if not 7 <= len(intl) <= 15:
        raise NumberError(
            "wrong_length",
            f"{_quote(raw)} has {len(intl)} digits: an international number has 7 to 15, country code included",
        )
    return "+" + intl


def _mainland(raw: str, number: str, match: Callable[[str], bool]) -> str:
    if len(number) != 11:
        raise NumberError(
            "wrong_length",
            f"{_quote(raw)} has {len(number)} digits: a mainland mobile number has 11, starting with 1"
            f" ({_EXAMPLE})",
        )
    if not match(number):
        raise NumberError(
            "unknown_segment",
            f"{_quote(raw)} does not start with a known mainland mobile segment ({number[:3]}, {number[:4]});"
            " check the number,"
            " or ask the operator to add the segment to validation.number_prefixes",
        )
    return number


# --- text ------------------------------------------------------------------------------------


def count_segments(text: str, *, prefer_gbk: bool = False, ref16: bool = False) -> tuple[int, int]:
    """Count the segments a text takes per recipient, exactly as the carrier link splits it.

    Args:
        text: the message text.
        prefer_gbk: the link's `prefer_gbk` (GBK rather than UCS2 when possible).
        ref16: the link's `ref16` (16-bit concatenation references, one unit less per segment).

    Returns:
        (segments, msg_fmt): msg_fmt is 0 (ASCII), 8 (UCS2) or 15 (GBK).

    Raises:
        CmppLocalError: if the text cannot be encoded (e.g. a lone surrogate) or
            needs more than 255 segments.
    """
    msg_fmt = choose_msg_fmt(text, prefer_gbk=prefer_gbk)
    return len(split_text(text, msg_fmt, ref16=ref16)), msg_fmt


# --- requests --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A validated request, as the store persists it."""

    to: tuple[str, ...]  # normalised, duplicates removed, order kept
    duplicates: tuple[str, ...]  # normalised numbers dropped as duplicates, each once, in order
    text: str
    segments: int  # per recipient, exactly as the carrier link will split it
    msg_fmt: int  # 0, 8 or 15
    priority: int
    send_at: float | None
    ext: str
    ref: str | None
    report: bool
    dlr_url: str | None = None
    dlr_mask: int = 0
    template: str | None = None  # the named template `text` was rendered from
    pre_approved: bool = False  # rendered from a template marked pre-approved (review rules may pass it)
    batch: str | None = None  # the caller's batch name (stored as "<account>:<batch>")
    batch_size: int | None = None  # the caller's declared recipients in the whole batch
    hold: Hold | None = None  # a sensitive-word rule holds it for review whatever the review rules say
    positions: tuple[int, ...] | None = None  # each of `to`'s index in the caller's list; None: the same


class Validator:
    """Checks `SendRequest`s against the operator's limits; one instance serves the whole daemon."""

    def __init__(
        self,
        *,
        max_recipients: int = 1000,
        max_segments: int = 10,
        prefixes: Sequence[str] | None = None,
        allow_other: bool = False,
        prefer_gbk: bool = False,
        ref16: bool = False,
        max_ext_len: int = 12,
        templates: Mapping[str, Template] | None = None,
        filters: Filters | None = None,
    ) -> None:
        """Set the limits.

        Args:
            max_recipients: most distinct recipients per message.
            max_segments: most segments per recipient (at most 255, the UDH limit).
            prefixes: mobile segments accepted; None: MAINLAND_PREFIXES.
            allow_other: accept non-mainland numbers (see `normalise_number`).
            prefer_gbk: as the carrier links' `prefer_gbk`, so segment counts match.
            ref16: as the carrier links' `ref16`, so segment counts match.
            max_ext_len: longest extension (digits appended to the service code).
            templates: the named templates requests may use, by name (the gateway's live registry:
                changes to the mapping take effect at once).
            filters: the administrator's blacklists, sensitive words and segment rules
                (`smsgw.filters`), checked for every message; None: none.

        Raises:
            ValueError: naming the setting when a limit or the prefix list is unusable.
        """
        if max_recipients < 1:
            raise ValueError(f"validation.max_recipients must be at least 1, got {max_recipients}")
        if not 1 <= max_segments <= 255:
            raise ValueError(f"validation.max_segments must be 1 to 255 (the UDH limit), got {max_segments}")
        if max_ext_len < 0:
            raise ValueError(f"max_ext_len must be at least 0, got {max_ext_len}")
        self.max_recipients = max_recipients
        self.max_segments = max_segments
        self.allow_other = allow_other
        self.prefer_gbk = prefer_gbk
        self.ref16 = ref16
        self.max_ext_len = max_ext_len
        self.templates: Mapping[str, Template] = {} if templates is None else templates
        self.filters = filters
        self._match = _MAINLAND_MATCH if prefixes is None else _matcher(tuple(prefixes))
        rows = (DEFAULT_LIMITS.ascii, DEFAULT_LIMITS.ucs2, DEFAULT_LIMITS.gbk, ASCII_GSM7_LIMITS)
        self._max_chars = max(max(r.single, max_segments * r.segment) for r in rows)

    def prepare(self, account: Account, requests: Sequence[SendRequest], now: float, *,
                interface: str = "") -> list[PreparedMessage]:
        """Validate requests and turn them into what the store persists.

        Args:
            account: the sending account (its max_priority and default_ext apply).
            requests: the batch; each is checked in full.
            now: the current time, epoch seconds (for send_at).
            interface: what it came through (rest, url, db:<source>...), for the filters.

        Returns:
            One PreparedMessage per request, in order.

        Raises:
            RequestRejected: listing every problem of every request; `where` is
                like "[0].to[2]", "[1].text" (the index into `requests`).
        """
        if not requests:
            raise RequestRejected([Problem("", "no_messages", "the request holds no messages: send at least one")])
        problems: list[Problem] = []
        out: list[PreparedMessage] = []
        for i, request in enumerate(requests):
            prepared = self._prepare_one(f"[{i}]", account, request, now, problems, interface)
            if prepared is not None:
                out.append(prepared)
        if problems:
            raise RequestRejected(problems)
        return out

    def prepare_one(self, account: Account, request: SendRequest, now: float, *,
                    interface: str = "") -> PreparedMessage | list[Problem]:
        """Validate one message on its own (an adapter's row): the prepared message, or its problems.

        `where` in the problems is relative to the message: "to[2]", "text", "priority"...
        """
        problems: list[Problem] = []
        prepared = self._prepare_one("", account, request, now, problems, interface)
        if prepared is None:
            return [replace(p, where=p.where.lstrip(".")) for p in problems]
        return prepared

    def _prepare_one(
        self, where: str, account: Account, request: SendRequest, now: float, problems: list[Problem],
        interface: str = "",
    ) -> PreparedMessage | None:
        before = len(problems)
        seen, duplicates = self._recipients(where, request.to, problems)
        to = tuple(seen)
        text: str | None = request.text
        pre_approved = False
        if request.template is not None or request.params is not None:
            text, pre_approved = self._render(where, request, problems) or (None, False)
        segments, msg_fmt = self._text(where, text, problems) if text is not None else (0, 0)
        hold = None
        if self.filters is not None:  # blacklists, segment rules, sensitive words (smsgw.filters)
            hold = self.filters.check(where, account.name, interface, seen,
                                      text if isinstance(text, str) else None, problems)
        priority = request.priority
        if type(priority) is not int or not 0 <= priority <= account.max_priority:
            problems.append(Problem(
                f"{where}.priority", "bad_priority",
                f"priority is {priority!r}: use a whole number from 0 (bulk) to {account.max_priority}"
                f" (the most account {account.name!r} may use)",
            ))
        ext = self._ext(where, request.ext, account, problems)
        send_at = self._send_at(where, request.send_at, now, problems)
        batch, batch_size = request.batch, request.batch_size
        if batch is not None and (not isinstance(batch, str) or not batch or len(batch) > _MAX_BATCH
                                  or not batch.isprintable()):
            problems.append(Problem(f"{where}.batch", "bad_batch",
                                    f"batch is {_describe(batch)}: use a name of 1 to {_MAX_BATCH} printable "
                                    "characters (e.g. notice-2026-11), or leave it out"))
        if batch_size is not None and (type(batch_size) is not int or not 1 <= batch_size <= 100_000_000):
            problems.append(Problem(f"{where}.batch_size", "bad_batch_size",
                                    f"batch_size is {_describe(batch_size)}: the number of recipients in the whole "
                                    "batch, a whole number from 1, or leave it out"))
        ref = request.ref
        if ref is not None and (not isinstance(ref, str) or len(ref) > _MAX_REF):
            what = f"{len(ref)} characters long" if isinstance(ref, str) else _describe(ref)
            problems.append(Problem(
                f"{where}.ref", "bad_ref",
                f"ref is {what}: use a string of at most {_MAX_REF} characters, or leave it out",
            ))
        dlr_url, dlr_mask = request.dlr_url, request.dlr_mask
        if dlr_url is not None and (not isinstance(dlr_url, str) or len(dlr_url) > 1000
                                    or not dlr_url.startswith(("http://", "https://"))):
            problems.append(Problem(f"{where}.dlr_url", "bad_dlr_url",
                                    "dlr_url must be an http:// or https:// URL of at most 1000 characters"))
        if type(dlr_mask) is not int or not 0 <= dlr_mask <= 31:
            problems.append(Problem(f"{where}.dlr_mask", "bad_dlr_mask",
                                    "dlr_mask is a sum of 1 (delivered), 2 (undeliverable), 4 (buffered), "
                                    "8 (submitted), 16 (rejected): 0 to 31"))
        if len(problems) > before:
            return None
        assert text is not None
        return PreparedMessage(to, duplicates, text, segments, msg_fmt, priority, send_at, ext, ref,
                               bool(request.report), dlr_url, dlr_mask if dlr_url else 0, request.template,
                               pre_approved, batch, batch_size, hold,
                               tuple(seen.values()) if duplicates else None)

    def _render(self, where: str, request: SendRequest, problems: list[Problem]) -> tuple[str, bool] | None:
        """(the text of a request naming a template, whether that template is pre-approved),
        or None after adding its problems."""
        name, params = request.template, request.params
        given: object = params  # whatever a decoder handed in, typed or not
        if name is None:
            problems.append(Problem(f"{where}.params", "params_without_template",
                                    "params are given but no template: name the template, or leave params out"))
            return None
        if not isinstance(name, str) or not name:
            problems.append(Problem(f"{where}.template", "bad_template",
                                    f"template is {_describe(name)}: give a template's name"))
            return None
        template = self.templates.get(name)
        if template is None:
            problems.append(Problem(f"{where}.template", "unknown_template",
                                    f"unknown template {name[:64]!r}: there is no template of that name; "
                                    "`smsgw template list` or GET /api/v1/templates shows them"))
            return None
        if isinstance(request.text, str) and request.text:
            problems.append(Problem(f"{where}.text", "text_and_template",
                                    "give either text or a template, not both: the template makes the text"))
            return None
        if given is not None and not isinstance(given, abc.Mapping):
            problems.append(Problem(f"{where}.params", "bad_params",
                                    f"params is {_describe(params)}: give an object of name: value, "
                                    'e.g. {"code": "123456"}'))
            return None
        rendered = render(template, params, where)
        if isinstance(rendered, list):
            problems.extend(rendered)
            return None
        return rendered, template.pre_approved

    def _recipients(
        self, where: str, numbers: Sequence[str], problems: list[Problem]
    ) -> tuple[dict[str, int], tuple[str, ...]]:
        """(each distinct valid number with its index in `numbers`, the numbers given more than once)."""
        if type(numbers) not in (tuple, list) and (
            isinstance(numbers, (str, bytes)) or not isinstance(numbers, abc.Sequence)
        ):
            problems.append(Problem(
                f"{where}.to", "no_recipients",
                f"to must be a list of numbers, got {_describe(numbers)}: e.g. [\"13800138000\"]",
            ))
            return {}, ()
        if not numbers:
            problems.append(Problem(f"{where}.to", "no_recipients", "no recipients: give at least one number in to"))
            return {}, ()
        match, allow_other = self._match, self.allow_other
        seen: dict[str, int] = {}
        duplicates: dict[str, None] = {}
        for j, raw in enumerate(numbers):
            # The fast path of normalise_number, inlined: most numbers arrive clean.
            if type(raw) is str and len(raw) == 11 and raw.isdigit() and raw.isascii() and match(raw):
                number = raw
            else:
                try:
                    number = _normalise_slow(raw, match, allow_other)
                except NumberError as exc:
                    problems.append(Problem(f"{where}.to[{j}]", exc.code, exc.message))
                    continue
            if number in seen:
                duplicates[number] = None
            else:
                seen[number] = j
        if len(seen) > self.max_recipients:
            problems.append(Problem(
                f"{where}.to", "too_many_recipients",
                f"{len(seen)} distinct recipients, at most {self.max_recipients} per message:"
                " split them over several messages",
            ))
        return seen, tuple(duplicates)

    def _text(self, where: str, text: str, problems: list[Problem]) -> tuple[int, int]:
        if not isinstance(text, str) or not text.strip():
            problems.append(Problem(f"{where}.text", "empty_text", "text is empty or only spaces: write the message"))
            return 0, 0
        # Texts that cannot fit whatever the encoding are refused without splitting them.
        if len(text) > self._max_chars:
            problems.append(self._too_long(where, text, None, choose_msg_fmt(text, prefer_gbk=self.prefer_gbk)))
            return 0, 0
        msg_fmt = choose_msg_fmt(text, prefer_gbk=self.prefer_gbk)
        try:
            segments = len(split_text(text, msg_fmt, ref16=self.ref16))
        except CmppLocalError:
            # Either a character the encoding cannot carry, or more than the 255 segments a UDH numbers.
            try:
                encode_text(text, msg_fmt)
            except CmppLocalError as exc:
                problems.append(Problem(
                    f"{where}.text", "unencodable_text",
                    f"text cannot be sent: {exc.msg}; remove or replace that character",
                ))
            else:
                problems.append(self._too_long(where, text, None, msg_fmt))
            return 0, 0
        if segments > self.max_segments:
            problems.append(self._too_long(where, text, segments, msg_fmt))
        return segments, msg_fmt

    def _too_long(self, where: str, text: str, segments: int | None, msg_fmt: int) -> Problem:
        limits = DEFAULT_LIMITS.for_format(msg_fmt)
        per = limits.segment16 if self.ref16 else limits.segment
        name = {0: "ASCII", 8: "UCS2", 15: "GBK"}.get(msg_fmt, str(msg_fmt))
        needs = f"needs {segments} segments" if segments is not None else f"is {len(text)} characters long"
        return Problem(
            f"{where}.text", "too_many_segments",
            f"text {needs}, at most {self.max_segments} allowed: a long {name} message carries"
            f" {per} characters per segment, so keep it under about {per * self.max_segments} characters",
        )

    def _ext(self, where: str, ext: str | None, account: Account, problems: list[Problem]) -> str:
        if ext is None:
            return account.default_ext
        if not isinstance(ext, str) or not (ext == "" or (ext.isascii() and ext.isdigit())):
            problems.append(Problem(
                f"{where}.ext", "bad_ext",
                f"ext is {_describe(ext)}: an extension is digits only (e.g. \"01\"), or leave it out",
            ))
        elif len(ext) > self.max_ext_len:
            problems.append(Problem(
                f"{where}.ext", "ext_too_long",
                f"ext has {len(ext)} digits, at most {self.max_ext_len}: use a shorter extension",
            ))
        return ext if isinstance(ext, str) else ""

    def _send_at(self, where: str, send_at: float | None, now: float, problems: list[Problem]) -> float | None:
        if send_at is None:
            return None
        try:
            value = float(send_at) if type(send_at) in (int, float) else math.nan
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            problems.append(Problem(
                f"{where}.send_at", "bad_send_at",
                f"send_at is {_describe(send_at)}: give epoch seconds (a finite number), or leave it out to send now",
            ))
            return None
        if value > now + _SECONDS_AHEAD:
            days = (value - now) / 86400
            problems.append(Problem(
                f"{where}.send_at", "send_at_too_far",
                f"send_at is {days:.0f} days ahead, at most 366: schedule it later, closer to the date",
            ))
        return value


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- routing ---------------------------------------------------------------------------------


class Router:
    """Maps a normalised number to a carrier link name: longest matching prefix wins, else the default."""

    __slots__ = ("_table", "_lengths", "default")

    def __init__(self, rules: Sequence[tuple[str, Sequence[str]]], default: str) -> None:
        """Build the lookup table.

        Args:
            rules: (link, prefixes) pairs; a prefix is digits, or "+" and digits
                for numbers outside the mainland (see `normalise_number`).
            default: the link for numbers no rule matches.

        Raises:
            ValueError: if a prefix is malformed or two rules claim the same prefix.
        """
        table: dict[str, str] = {}
        for i, (link, prefixes) in enumerate(rules):
            _compile(prefixes, f"routing.rules[{i}].prefixes", allow_plus=True)
            for prefix in prefixes:
                other = table.setdefault(prefix, link)
                if other != link:
                    raise ValueError(
                        f"routing.rules[{i}]: prefix {prefix!r} already routes to link {other!r};"
                        f" list it under one link only"
                    )
        self._table = table
        self._lengths = tuple(sorted({len(p) for p in table}, reverse=True))
        self.default = default

    def route(self, number: str) -> str:
        """Return the link for a normalised number.

        Args:
            number: as returned by `normalise_number`.

        Returns:
            The link of the longest prefix that matches, else the default.
        """
        table = self._table
        for k in self._lengths:
            link = table.get(number[:k])
            if link is not None:
                return link
        return self.default
