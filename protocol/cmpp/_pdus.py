"""Every CMPP 3.0 / 2.0 PDU as a slotted dataclass, with its body codec.

Layouts are in the protocol notes (§4); the version-dependent widths are in
the table of §13. Two rules shape this module:

* Encoding is strict: a value that does not fit its field raises
  `CmppLocalError` naming the PDU and the field, because sending a truncated
  number or Service_Id would be our bug, silently shipped to the carrier.
* Decoding is liberal where real ISMGs deviate (§14): responses whose width
  differs between versions are decoded by their length, trailers (LinkID /
  Reserve) may be short or missing, and a report's layout follows its
  Msg_Length. Anything else that does not fit raises `CmppLocalError`, which
  the receiving boundary turns into `CmppRemoteError`.

The sequence id is not part of a PDU: it belongs to the header and to the
session that numbers its requests (`encode_pdu(pdu, seq, version)`).

PDUs are slotted dataclasses that nothing mutates, but they are not declared
`frozen=True`: a frozen 23-field dataclass costs ten times as much to build as a
plain one (figures in docs/performance.md), a third of the per-message budget.
Treat every PDU as immutable; use `dataclasses.replace`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from typing import ClassVar, TypeAlias

from smsgw.protocol.cmpp._constants import HEADER_SIZE, CommandId, Version
from smsgw.protocol.cmpp._errors import CmppLocalError

_HEADER = struct.Struct(">III")
_V30 = Version.V30


_CUT_CACHE: dict[bytes, str] = {}


def _cut(raw: bytes) -> str:
    """Decode an Octet String: up to the first NUL, trailing spaces stripped (notes §1.3).

    The same few values (service codes, SP_Ids, Stat, fee fields) repeat on
    every PDU, so decoded values are interned in a small bounded cache.
    """
    text = _CUT_CACHE.get(raw)
    if text is None:
        # latin-1 never fails: a peer's stray byte becomes a visible character
        # instead of an exception; every field we compare against is ASCII.
        text = raw.partition(b"\0")[0].rstrip(b" ").decode("latin-1")
        if len(_CUT_CACHE) >= 4096:
            _CUT_CACHE.clear()
        _CUT_CACHE[raw] = text
    return text


_OCTETS_CACHE: dict[tuple[str, int], bytes] = {}


def _octets(pdu: str, field: str, value: str, width: int) -> bytes:
    """Encode an Octet String field for sending, refusing what would be truncated."""
    raw = _OCTETS_CACHE.get((value, width))
    if raw is not None:
        return raw
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise CmppLocalError(f"{pdu}.{field}: {value!r} is not ASCII") from None
    if len(raw) > width:
        raise CmppLocalError(f"{pdu}.{field}: {value!r} is {len(raw)} bytes, the field holds {width}")
    if len(_OCTETS_CACHE) >= 4096:
        _OCTETS_CACHE.clear()
    _OCTETS_CACHE[(value, width)] = raw
    return raw


def _pack_error(pdu: Pdu | StatusReport, exc: Exception) -> CmppLocalError:
    """Name the integer field that did not fit (struct's own message does not)."""
    name = "REPORT" if isinstance(pdu, StatusReport) else pdu.command.name
    for f in fields(pdu):
        value = getattr(pdu, f.name)
        limit = _INT_LIMITS.get(f.name)
        if limit is not None and isinstance(value, int) and not 0 <= value <= limit:
            return CmppLocalError(f"{name}.{f.name}: {value} is outside 0..{limit}")
    return CmppLocalError(f"{name}: cannot encode ({exc})")


_U8, _U32, _U64 = 0xFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
_INT_LIMITS = {
    "msg_id": _U64, "pk_total": _U8, "pk_number": _U8, "registered_delivery": _U8,
    "msg_level": _U8, "fee_user_type": _U8, "fee_terminal_type": _U8, "tp_pid": _U8,
    "tp_udhi": _U8, "msg_fmt": _U8, "dest_terminal_type": _U8, "src_terminal_type": _U8,
    "version": _U8, "timestamp": _U32, "query_type": _U8, "reserved": _U8,
    "success_id": _U32, "smsc_sequence": _U32,
    "mt_tlmsg": _U32, "mt_tlusr": _U32, "mt_scs": _U32, "mt_wt": _U32, "mt_fl": _U32,
    "mo_scs": _U32, "mo_wt": _U32, "mo_fl": _U32,
}


def _need(pdu: str, body: bytes, size: int) -> None:
    if len(body) < size:
        raise CmppLocalError(f"{pdu}: body is {len(body)} bytes, its fixed part needs {size}", status=4)


def _exact(pdu: str, body: bytes, *sizes: int) -> None:
    if len(body) not in sizes:
        want = " or ".join(str(s) for s in sizes)
        raise CmppLocalError(f"{pdu}: body is {len(body)} bytes, expected {want}", status=4)


def _status_width(field: str, value: int, version: Version) -> bytes:
    """Result/Status fields are 4 bytes in 3.0 and 1 byte in 2.0; `field` is "PDU.field"."""
    if version is _V30:
        if not 0 <= value <= _U32:
            raise CmppLocalError(f"{field}: {value} is outside 0..{_U32}")
        return value.to_bytes(4, "big")
    if not 0 <= value <= _U8:
        raise CmppLocalError(f"{field}: {value} does not fit the 1-byte CMPP 2.0 field")
    return bytes((value,))


# --- connection management -------------------------------------------------


@dataclass(slots=True)
class Connect:
    """CMPP_CONNECT: the SP logs in (same body in 2.0 and 3.0)."""

    source_addr: str
    authenticator: bytes
    version: int
    timestamp: int

    command: ClassVar[CommandId] = CommandId.CONNECT
    _S: ClassVar[struct.Struct] = struct.Struct(">6s16sBI")

    def encode_body(self, version: Version) -> bytes:
        if len(self.authenticator) != 16:
            raise CmppLocalError("CONNECT.authenticator: must be the 16 raw bytes of an MD5 digest")
        src = _octets("CONNECT", "source_addr", self.source_addr, 6)
        try:
            return self._S.pack(src, self.authenticator, self.version, self.timestamp)
        except struct.error as exc:
            raise _pack_error(self, exc) from None

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> Connect:
        _exact("CONNECT", body, 27)
        src, auth, ver, ts = cls._S.unpack(body)
        return cls(_cut(src), auth, ver, ts)


@dataclass(slots=True)
class ConnectResp:
    """CMPP_CONNECT_RESP: Status is 4 bytes in 3.0 and 1 byte in 2.0; decoded by length."""

    status: int
    authenticator: bytes
    version: int

    command: ClassVar[CommandId] = CommandId.CONNECT_RESP

    def encode_body(self, version: Version) -> bytes:
        if len(self.authenticator) != 16:
            raise CmppLocalError("CONNECT_RESP.authenticator: must be 16 bytes (zeros on failure)")
        if not 0 <= self.version <= _U8:
            raise CmppLocalError(f"CONNECT_RESP.version: {self.version} is outside 0..255")
        return _status_width("CONNECT_RESP.status", self.status, version) + self.authenticator + bytes((self.version,))

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> ConnectResp:
        # A "2.0" ISMG may answer with the 3.0 width: trust the length (notes §3, §14.2).
        _exact("CONNECT_RESP", body, 21, 18)
        width = len(body) - 17
        return cls(int.from_bytes(body[:width], "big"), body[width : width + 16], body[-1])


@dataclass(slots=True)
class Terminate:
    """CMPP_TERMINATE: either side ends the session."""

    command: ClassVar[CommandId] = CommandId.TERMINATE

    def encode_body(self, version: Version) -> bytes:
        return b""

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> Terminate:
        _exact("TERMINATE", body, 0)
        return cls()


@dataclass(slots=True)
class TerminateResp:
    """CMPP_TERMINATE_RESP."""

    command: ClassVar[CommandId] = CommandId.TERMINATE_RESP

    def encode_body(self, version: Version) -> bytes:
        return b""

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> TerminateResp:
        _exact("TERMINATE_RESP", body, 0)
        return cls()


@dataclass(slots=True)
class ActiveTest:
    """CMPP_ACTIVE_TEST: link check, either direction."""

    command: ClassVar[CommandId] = CommandId.ACTIVE_TEST

    def encode_body(self, version: Version) -> bytes:
        return b""

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> ActiveTest:
        _exact("ACTIVE_TEST", body, 0)
        return cls()


@dataclass(slots=True)
class ActiveTestResp:
    """CMPP_ACTIVE_TEST_RESP: one Reserved byte; a bodiless one is accepted (notes §14.3)."""

    reserved: int = 0

    command: ClassVar[CommandId] = CommandId.ACTIVE_TEST_RESP

    def encode_body(self, version: Version) -> bytes:
        if not 0 <= self.reserved <= _U8:
            raise CmppLocalError(f"ACTIVE_TEST_RESP.reserved: {self.reserved} is outside 0..255")
        return bytes((self.reserved,))

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> ActiveTestResp:
        _exact("ACTIVE_TEST_RESP", body, 1, 0)
        return cls(body[0] if body else 0)


# --- messages ---------------------------------------------------------------


@dataclass(slots=True)
class Submit:
    """CMPP_SUBMIT: one MT message (one segment) to up to 99 destinations.

    Fields marked 3.0 are not on the wire in 2.0 (and `reserve` only is in 2.0);
    a 2.0 session sends them as absent, so leave them at their defaults there.
    """

    dest_terminal_ids: tuple[str, ...]
    msg_content: bytes
    msg_fmt: int = 0
    src_id: str = ""
    msg_src: str = ""
    service_id: str = ""
    registered_delivery: int = 0
    pk_total: int = 1
    pk_number: int = 1
    tp_udhi: int = 0
    tp_pid: int = 0
    msg_level: int = 1
    fee_user_type: int = 0
    fee_terminal_id: str = ""
    fee_type: str = "01"
    fee_code: str = "000000"
    valid_time: str = ""
    at_time: str = ""
    msg_id: int = 0
    fee_terminal_type: int = 0  # 3.0
    dest_terminal_type: int = 0  # 3.0
    link_id: str = ""  # 3.0
    reserve: str = ""  # 2.0

    command: ClassVar[CommandId] = CommandId.SUBMIT
    _HEAD30: ClassVar[struct.Struct] = struct.Struct(">QBBBB10sB32sBBBB6s2s6s17s17s21sB")
    _HEAD20: ClassVar[struct.Struct] = struct.Struct(">QBBBB10sB21sBBB6s2s6s17s17s21sB")

    def encode_body(self, version: Version) -> bytes:
        v3 = version is _V30
        width = 32 if v3 else 21
        n = len(self.dest_terminal_ids)
        if not 1 <= n <= 99:
            raise CmppLocalError(f"SUBMIT.dest_terminal_ids: {n} destinations, CMPP allows 1 to 99")
        content = self.msg_content
        if len(content) > 255:
            raise CmppLocalError(f"SUBMIT.msg_content: {len(content)} bytes, Msg_Length holds at most 255")
        key = (v3, self.service_id, self.fee_terminal_id, self.msg_src, self.fee_type, self.fee_code,
               self.valid_time, self.at_time, self.src_id)
        strs = _SUBMIT_STRS.get(key)
        if strs is None:
            strs = _submit_strs(self, width)
            if len(_SUBMIT_STRS) >= 1024:
                _SUBMIT_STRS.clear()
            _SUBMIT_STRS[key] = strs
        o = _octets
        dests = b"".join(o("SUBMIT", "dest_terminal_ids", d, width).ljust(width, b"\0") for d in self.dest_terminal_ids)
        try:
            if v3:
                head = self._HEAD30.pack(
                    self.msg_id, self.pk_total, self.pk_number, self.registered_delivery, self.msg_level,
                    strs[0], self.fee_user_type, strs[1], self.fee_terminal_type, self.tp_pid, self.tp_udhi,
                    self.msg_fmt, strs[2], strs[3], strs[4], strs[5], strs[6], strs[7], n,
                )
                tail = bytes((self.dest_terminal_type, len(content)))
                trailer = o("SUBMIT", "link_id", self.link_id, 20).ljust(20, b"\0")
            else:
                head = self._HEAD20.pack(
                    self.msg_id, self.pk_total, self.pk_number, self.registered_delivery, self.msg_level,
                    strs[0], self.fee_user_type, strs[1], self.tp_pid, self.tp_udhi,
                    self.msg_fmt, strs[2], strs[3], strs[4], strs[5], strs[6], strs[7], n,
                )
                tail = bytes((len(content),))
                trailer = o("SUBMIT", "reserve", self.reserve, 8).ljust(8, b"\0")
        except (struct.error, ValueError) as exc:
            raise _pack_error(self, exc) from None
        return b"".join((head, dests, tail, content, trailer))

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> Submit:
        v3 = version is _V30
        head = cls._HEAD30 if v3 else cls._HEAD20
        _need("SUBMIT", body, head.size)
        msg_id, pk_total, pk_number, reg, level = _SUBMIT_LEAD.unpack_from(body)
        n = body[head.size - 1]
        # Service_Id … Src_Id (strings, fee and format octets between them)
        # repeat on every SUBMIT of a link: decoded once per distinct run of bytes.
        middle = body[_SUBMIT_LEAD.size : head.size - 1]
        fixed = _SUBMIT_MIDDLE.get(middle)  # 116 bytes in 3.0, 104 in 2.0: the length tells the version
        if fixed is None:
            f = head.unpack_from(body)
            if v3:
                (_, _, _, _, _, service_id, fee_user_type, fee_tid, fee_ttype,
                 tp_pid, tp_udhi, msg_fmt, msg_src, fee_type, fee_code, valid, at, src_id, _n) = f
            else:
                (_, _, _, _, _, service_id, fee_user_type, fee_tid,
                 tp_pid, tp_udhi, msg_fmt, msg_src, fee_type, fee_code, valid, at, src_id, _n) = f
                fee_ttype = 0
            fixed = (msg_fmt, _cut(src_id), _cut(msg_src), _cut(service_id), tp_udhi, tp_pid,
                     fee_user_type, _cut(fee_tid), _cut(fee_type), _cut(fee_code), _cut(valid), _cut(at),
                     fee_ttype)
            if len(_SUBMIT_MIDDLE) >= 1024:
                _SUBMIT_MIDDLE.clear()
            _SUBMIT_MIDDLE[middle] = fixed
        width = 32 if v3 else 21
        pos = head.size
        # DestUsr_tl, then (3.0) Dest_terminal_type, then Msg_Length.
        need = pos + n * width + (2 if v3 else 1)
        if len(body) < need:
            raise CmppLocalError(f"SUBMIT: DestUsr_tl {n} needs {need} bytes before Msg_Content, body has {len(body)}", status=4)
        if n == 1:
            dests: tuple[str, ...] = (_cut(body[pos : pos + width]),)
        else:
            dests = tuple(_cut(body[pos + i * width : pos + (i + 1) * width]) for i in range(n))
        pos += n * width
        dest_type = body[pos] if v3 else 0
        pos += 1 if v3 else 0
        length = body[pos]
        pos += 1
        if pos + length > len(body):
            raise CmppLocalError(f"SUBMIT: Msg_Length {length} exceeds the {len(body) - pos} bytes left", status=4)
        content = body[pos : pos + length]
        trailer = _trailer("SUBMIT", body, pos + length, 20 if v3 else 8)
        (msg_fmt, src_id, msg_src, service_id, tp_udhi, tp_pid, fee_user_type, fee_tid, fee_type, fee_code,
         valid, at, fee_ttype) = fixed
        return cls(
            dests, content, msg_fmt, src_id, msg_src, service_id, reg, pk_total,
            pk_number, tp_udhi, tp_pid, level, fee_user_type, fee_tid, fee_type,
            fee_code, valid, at, msg_id, fee_ttype, dest_type,
            trailer if v3 else "", "" if v3 else trailer,
        )


_SubmitMiddle: TypeAlias = "tuple[int, str, str, str, int, int, int, str, str, str, str, str, int]"
#: The SUBMIT's leading Msg_Id, Pk_total, Pk_number, Registered_Delivery, Msg_level.
_SUBMIT_LEAD = struct.Struct(">QBBBB")
#: Decoded middle parts of recent SUBMITs (see `Submit.decode_body`), bounded.
_SUBMIT_MIDDLE: dict[bytes, _SubmitMiddle] = {}


#: Encoded octet-string fields of recent SUBMITs: one link sends the same ones every time.
#: Sits on top of `_octets`' own interning: one 9-tuple lookup instead of eight
#: calls saves about 1.7 µs per SUBMIT.
_SUBMIT_STRS: dict[tuple[object, ...], tuple[bytes, ...]] = {}


def _submit_strs(submit: Submit, width: int) -> tuple[bytes, ...]:
    o = _octets
    return (
        o("SUBMIT", "service_id", submit.service_id, 10),
        o("SUBMIT", "fee_terminal_id", submit.fee_terminal_id, width),
        o("SUBMIT", "msg_src", submit.msg_src, 6),
        o("SUBMIT", "fee_type", submit.fee_type, 2),
        o("SUBMIT", "fee_code", submit.fee_code, 6),
        o("SUBMIT", "valid_time", submit.valid_time, 17),
        o("SUBMIT", "at_time", submit.at_time, 17),
        o("SUBMIT", "src_id", submit.src_id, 21),
    )


def _trailer(pdu: str, body: bytes, pos: int, width: int) -> str:
    """LinkID / Reserve: tolerate a short or missing one (notes §14.1), refuse extra bytes."""
    rest = len(body) - pos
    if rest > width:
        raise CmppLocalError(f"{pdu}: {rest - width} unexpected bytes after the {width}-byte trailer", status=4)
    return _cut(body[pos:])


@dataclass(slots=True)
class SubmitResp:
    """CMPP_SUBMIT_RESP: the ISMG's Msg_Id and Result (4 bytes in 3.0, 1 in 2.0)."""

    msg_id: int
    result: int

    command: ClassVar[CommandId] = CommandId.SUBMIT_RESP

    def encode_body(self, version: Version) -> bytes:
        if not 0 <= self.msg_id <= _U64:
            raise CmppLocalError(f"SUBMIT_RESP.msg_id: {self.msg_id} is not a 64-bit unsigned value")
        return self.msg_id.to_bytes(8, "big") + _status_width("SUBMIT_RESP.result", self.result, version)

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> SubmitResp:
        _exact("SUBMIT_RESP", body, 12, 9)
        return cls(int.from_bytes(body[:8], "big"), int.from_bytes(body[8:], "big"))


@dataclass(slots=True)
class Deliver:
    """CMPP_DELIVER: an MO message, or a status report when registered_delivery == 1.

    `msg_id` is the ISMG's id for this DELIVER (echoed in DELIVER_RESP); a
    report's own Msg_Id is inside msg_content (`decode_report`).
    """

    msg_id: int
    dest_id: str
    src_terminal_id: str
    msg_content: bytes
    msg_fmt: int = 0
    registered_delivery: int = 0
    service_id: str = ""
    tp_pid: int = 0
    tp_udhi: int = 0
    src_terminal_type: int = 0  # 3.0
    link_id: str = ""  # 3.0
    reserved: str = ""  # 2.0

    command: ClassVar[CommandId] = CommandId.DELIVER
    _HEAD30: ClassVar[struct.Struct] = struct.Struct(">Q21s10sBBB32sBBB")
    _HEAD20: ClassVar[struct.Struct] = struct.Struct(">Q21s10sBBB21sBB")

    def encode_body(self, version: Version) -> bytes:
        v3 = version is _V30
        content = self.msg_content
        if len(content) > 255:
            raise CmppLocalError(f"DELIVER.msg_content: {len(content)} bytes, Msg_Length holds at most 255")
        dest = _octets("DELIVER", "dest_id", self.dest_id, 21)
        svc = _octets("DELIVER", "service_id", self.service_id, 10)
        src = _octets("DELIVER", "src_terminal_id", self.src_terminal_id, 32 if v3 else 21)
        try:
            if v3:
                head = self._HEAD30.pack(self.msg_id, dest, svc, self.tp_pid, self.tp_udhi, self.msg_fmt, src,
                                         self.src_terminal_type, self.registered_delivery, len(content))
                trailer = _octets("DELIVER", "link_id", self.link_id, 20).ljust(20, b"\0")
            else:
                head = self._HEAD20.pack(self.msg_id, dest, svc, self.tp_pid, self.tp_udhi, self.msg_fmt, src,
                                         self.registered_delivery, len(content))
                trailer = _octets("DELIVER", "reserved", self.reserved, 8).ljust(8, b"\0")
        except struct.error as exc:
            raise _pack_error(self, exc) from None
        return head + content + trailer

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> Deliver:
        v3 = version is _V30
        head = cls._HEAD30 if v3 else cls._HEAD20
        _need("DELIVER", body, head.size)
        f = head.unpack_from(body)
        length = f[-1]
        pos = head.size
        if pos + length > len(body):
            raise CmppLocalError(f"DELIVER: Msg_Length {length} exceeds the {len(body) - pos} bytes left", status=4)
        content = body[pos : pos + length]
        trailer = _trailer("DELIVER", body, pos + length, 20 if v3 else 8)
        if v3:
            msg_id, dest, svc, pid, udhi, fmt, src, src_type, reg, _l = f
            return cls(msg_id, _cut(dest), _cut(src), content, fmt, reg, _cut(svc), pid, udhi, src_type, trailer, "")
        msg_id, dest, svc, pid, udhi, fmt, src, reg, _l = f
        return cls(msg_id, _cut(dest), _cut(src), content, fmt, reg, _cut(svc), pid, udhi, 0, "", trailer)


@dataclass(slots=True)
class DeliverResp:
    """CMPP_DELIVER_RESP: echoes the DELIVER's outer Msg_Id with a Result."""

    msg_id: int
    result: int = 0

    command: ClassVar[CommandId] = CommandId.DELIVER_RESP

    def encode_body(self, version: Version) -> bytes:
        if not 0 <= self.msg_id <= _U64:
            raise CmppLocalError(f"DELIVER_RESP.msg_id: {self.msg_id} is not a 64-bit unsigned value")
        return self.msg_id.to_bytes(8, "big") + _status_width("DELIVER_RESP.result", self.result, version)

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> DeliverResp:
        _exact("DELIVER_RESP", body, 12, 9)
        return cls(int.from_bytes(body[:8], "big"), int.from_bytes(body[8:], "big"))


@dataclass(slots=True)
class StatusReport:
    """The report structure carried in a DELIVER's Msg_Content (notes §4.8): 71 bytes in 3.0, 60 in 2.0."""

    msg_id: int
    stat: str
    submit_time: str
    done_time: str
    dest_terminal_id: str
    smsc_sequence: int = 0

    _S30: ClassVar[struct.Struct] = struct.Struct(">Q7s10s10s32sI")
    _S20: ClassVar[struct.Struct] = struct.Struct(">Q7s10s10s21sI")

    def encode(self, version: Version) -> bytes:
        v3 = version is _V30
        o = _octets
        parts = (
            o("REPORT", "stat", self.stat, 7), o("REPORT", "submit_time", self.submit_time, 10),
            o("REPORT", "done_time", self.done_time, 10),
            o("REPORT", "dest_terminal_id", self.dest_terminal_id, 32 if v3 else 21),
        )
        try:
            return (self._S30 if v3 else self._S20).pack(self.msg_id, *parts, self.smsc_sequence)
        except struct.error as exc:
            raise _pack_error(self, exc) from None

    @classmethod
    def decode(cls, content: bytes) -> StatusReport:
        """Decode by length, whatever the session version: real ISMGs mix the layouts (§14.1).

        Raises:
            CmppLocalError: the content is neither 71 nor 60 bytes.
        """
        if len(content) == 71:
            f = cls._S30.unpack(content)
        elif len(content) == 60:
            f = cls._S20.unpack(content)
        else:
            raise CmppLocalError(f"DELIVER report: Msg_Length {len(content)}, a report is 71 (3.0) or 60 (2.0) bytes", status=4)
        return cls(f[0], _cut(f[1]), _cut(f[2]), _cut(f[3]), _cut(f[4]), f[5])


# --- queries and cancel -------------------------------------------------------


@dataclass(slots=True)
class Query:
    """CMPP_QUERY: ask the ISMG for a day's totals (same in 2.0 and 3.0)."""

    time: str
    query_type: int = 0
    query_code: str = ""
    reserve: str = ""

    command: ClassVar[CommandId] = CommandId.QUERY
    _S: ClassVar[struct.Struct] = struct.Struct(">8sB10s8s")

    def encode_body(self, version: Version) -> bytes:
        try:
            return self._S.pack(_octets("QUERY", "time", self.time, 8), self.query_type,
                                _octets("QUERY", "query_code", self.query_code, 10),
                                _octets("QUERY", "reserve", self.reserve, 8))
        except struct.error as exc:
            raise _pack_error(self, exc) from None

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> Query:
        _exact("QUERY", body, 27)
        t, qt, qc, r = cls._S.unpack(body)
        return cls(_cut(t), qt, _cut(qc), _cut(r))


@dataclass(slots=True)
class QueryResp:
    """CMPP_QUERY_RESP: the ISMG's counters for that day."""

    time: str
    query_type: int
    query_code: str
    mt_tlmsg: int = 0
    mt_tlusr: int = 0
    mt_scs: int = 0
    mt_wt: int = 0
    mt_fl: int = 0
    mo_scs: int = 0
    mo_wt: int = 0
    mo_fl: int = 0

    command: ClassVar[CommandId] = CommandId.QUERY_RESP
    _S: ClassVar[struct.Struct] = struct.Struct(">8sB10s8I")

    def encode_body(self, version: Version) -> bytes:
        try:
            return self._S.pack(_octets("QUERY_RESP", "time", self.time, 8), self.query_type,
                                _octets("QUERY_RESP", "query_code", self.query_code, 10),
                                self.mt_tlmsg, self.mt_tlusr, self.mt_scs, self.mt_wt,
                                self.mt_fl, self.mo_scs, self.mo_wt, self.mo_fl)
        except struct.error as exc:
            raise _pack_error(self, exc) from None

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> QueryResp:
        _exact("QUERY_RESP", body, 51)
        t, qt, qc, *counters = cls._S.unpack(body)
        return cls(_cut(t), qt, _cut(qc), *counters)


@dataclass(slots=True)
class Cancel:
    """CMPP_CANCEL: delete a message the ISMG still holds."""

    msg_id: int

    command: ClassVar[CommandId] = CommandId.CANCEL

    def encode_body(self, version: Version) -> bytes:
        if not 0 <= self.msg_id <= _U64:
            raise CmppLocalError(f"CANCEL.msg_id: {self.msg_id} is not a 64-bit unsigned value")
        return self.msg_id.to_bytes(8, "big")

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> Cancel:
        _exact("CANCEL", body, 8)
        return cls(int.from_bytes(body, "big"))


@dataclass(slots=True)
class CancelResp:
    """CMPP_CANCEL_RESP: Success_Id 0 = deleted, 1 = failed (4 bytes in 3.0, 1 in 2.0)."""

    success_id: int

    command: ClassVar[CommandId] = CommandId.CANCEL_RESP

    def encode_body(self, version: Version) -> bytes:
        return _status_width("CANCEL_RESP.success_id", self.success_id, version)

    @classmethod
    def decode_body(cls, body: bytes, version: Version) -> CancelResp:
        _exact("CANCEL_RESP", body, 4, 1)
        return cls(int.from_bytes(body, "big"))


Pdu: TypeAlias = (
    Connect | ConnectResp | Terminate | TerminateResp | Submit | SubmitResp | Deliver | DeliverResp
    | Query | QueryResp | Cancel | CancelResp | ActiveTest | ActiveTestResp
)

PDU_CLASSES: dict[int, type[Pdu]] = {
    cls.command: cls
    for cls in (Connect, ConnectResp, Terminate, TerminateResp, Submit, SubmitResp, Deliver,
                DeliverResp, Query, QueryResp, Cancel, CancelResp, ActiveTest, ActiveTestResp)
}


def encode_pdu(pdu: Pdu, seq: int, version: Version) -> bytes:
    """The whole PDU: header + body.

    Raises:
        CmppLocalError: a field does not fit, naming the PDU and the field.
    """
    body = pdu.encode_body(version)
    if not 0 <= seq <= _U32:
        raise CmppLocalError(f"{pdu.command.name}: sequence id {seq} is outside 0..{_U32}")
    return _HEADER.pack(HEADER_SIZE + len(body), pdu.command, seq) + body


def decode_body(command_id: int, body: bytes, version: Version) -> Pdu:
    """Decode one PDU body given its Command_Id.

    Raises:
        CmppLocalError: unknown Command_Id or a body that does not fit its layout;
            the receiving boundary reports it as the peer's error.
    """
    cls = PDU_CLASSES.get(command_id)
    if cls is None:
        raise CmppLocalError(f"unknown Command_Id 0x{command_id:08x}", status=2)
    return cls.decode_body(body, version)
