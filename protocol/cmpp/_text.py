"""Message text: Msg_Fmt encodings, long-message splitting and UDH parsing (notes §8, §11).

Encoding is strict (our text, our bug if it does not fit); decoding never
raises, because it handles whatever a carrier sends.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from smsgw.protocol.cmpp._errors import CmppLocalError

MSG_FMT_ASCII = 0
MSG_FMT_BINARY = 4
MSG_FMT_UCS2 = 8
MSG_FMT_GBK = 15
#: "SIM-card write" (短信写卡): binary content.
_MSG_FMT_SIM_CARD = 3

_ENCODERS: dict[int, tuple[str, str]] = {
    MSG_FMT_ASCII: ("ascii", "ASCII"),
    MSG_FMT_UCS2: ("utf-16-be", "UCS2"),
    MSG_FMT_GBK: ("gbk", "GBK"),
}
# None means binary: shown as hex. GB18030 is a superset of GBK, so it decodes
# whatever a lenient sender produced.
_DECODERS: dict[int, str | None] = {
    MSG_FMT_ASCII: "ascii",
    _MSG_FMT_SIM_CARD: None,
    MSG_FMT_BINARY: None,
    MSG_FMT_UCS2: "utf-16-be",
    MSG_FMT_GBK: "gb18030",
}
# Other values are read as a GSM TP-DCS: bits 3-2 are the alphabet (7-bit,
# 8-bit, UCS2, reserved). SMSGate sends e.g. 0x18 for a class-0 UCS2 message.
_DCS_DECODERS: tuple[str | None, ...] = ("ascii", None, "utf-16-be", None)

#: Largest Msg_Content: Msg_Length < 160 for ASCII, <= 140 otherwise (notes §8.1).
MAX_CONTENT_ASCII = 159
MAX_CONTENT = 140

_UDH_LEN_REF8 = 6
_UDH_LEN_REF16 = 7
_MAX_SEGMENTS = 255
IEI_CONCAT_REF8 = 0x00
IEI_CONCAT_REF16 = 0x08


def choose_msg_fmt(text: str, *, prefer_gbk: bool = False) -> int:
    """Pick the Msg_Fmt for a text.

    Args:
        text: the message text.
        prefer_gbk: use GBK rather than UCS2 when the text allows it.

    Returns:
        MSG_FMT_ASCII if the text is ASCII, else MSG_FMT_GBK if preferred and
        possible, else MSG_FMT_UCS2.
    """
    if text.isascii():
        return MSG_FMT_ASCII
    if prefer_gbk and _encodes(text, "gbk"):
        return MSG_FMT_GBK
    return MSG_FMT_UCS2


def _encodes(text: str, codec: str) -> bool:
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def encode_text(text: str, msg_fmt: int) -> bytes:
    """Encode a text for Msg_Content.

    Args:
        text: the message text.
        msg_fmt: MSG_FMT_ASCII, MSG_FMT_UCS2 (UTF-16-BE, no BOM) or MSG_FMT_GBK.

    Returns:
        The encoded bytes.

    Raises:
        CmppLocalError: if msg_fmt is not one of those, or naming the first
            character the format cannot represent.
    """
    codec, name = _text_codec(msg_fmt)
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        ch = text[exc.start]
        raise CmppLocalError(
            f"cannot encode {ch!r} (U+{ord(ch):04X}) at index {exc.start}"
            f" as {name} (Msg_Fmt {msg_fmt})"
        ) from None


def decode_text(data: bytes, msg_fmt: int) -> str:
    """Decode Msg_Content received from a carrier; never raises.

    Args:
        data: the content (without UDH).
        msg_fmt: the Msg_Fmt of the PDU, any value.

    Returns:
        The text, with U+FFFD for undecodable bytes; binary content (Msg_Fmt 3,
        4 or an 8-bit DCS alphabet) as lowercase hex.
    """
    if msg_fmt in _DECODERS:
        codec = _DECODERS[msg_fmt]
    else:
        codec = _DCS_DECODERS[(msg_fmt >> 2) & 3]
    if codec is None:
        return bytes(data).hex()
    return bytes(data).decode(codec, "replace")


@dataclass(frozen=True, slots=True)
class Segment:
    """One PDU's worth of a message; `content` starts with the UDH when `udhi`."""

    content: bytes
    udhi: bool
    pk_total: int
    pk_number: int


@dataclass(frozen=True, slots=True)
class FormatLimits:
    """Length limits of one Msg_Fmt: single message, segment with 8-bit / 16-bit reference UDH."""

    single: int
    segment: int
    segment16: int

    def __post_init__(self) -> None:
        # Two units hold a surrogate pair, so splitting always progresses.
        if min(self.single, self.segment, self.segment16) < 2:
            raise CmppLocalError(f"length limits must be at least 2, got {self}")


#: ASCII limits when the carrier confirmed GSM 7-bit packing (spec: Msg_Length < 160).
ASCII_GSM7_LIMITS = FormatLimits(159, 153, 151)


@dataclass(frozen=True, slots=True)
class SplitLimits:
    """Length limits per Msg_Fmt (notes §8.1).

    Units: UCS2 counts UTF-16 code units, GBK and ASCII count characters (an
    ISMG converts GBK to UCS2 on air), binary counts bytes. Independently, no
    Msg_Content ever exceeds 140 bytes (159 for ASCII), UDH included.
    """

    ucs2: FormatLimits = FormatLimits(70, 67, 66)
    gbk: FormatLimits = FormatLimits(70, 67, 66)
    ascii: FormatLimits = FormatLimits(140, 134, 133)
    binary: FormatLimits = FormatLimits(140, 134, 133)
    #: The carrier packs ASCII into GSM 7-bit: use ASCII_GSM7_LIMITS instead of `ascii`.
    ascii_gsm7: bool = False

    def for_format(self, msg_fmt: int) -> FormatLimits:
        """Look up the limits of a Msg_Fmt.

        Args:
            msg_fmt: the Msg_Fmt.

        Returns:
            The row for ASCII (GSM-7 if `ascii_gsm7`), UCS2 or GBK; the binary
            row for any other value.
        """
        if msg_fmt == MSG_FMT_ASCII:
            return ASCII_GSM7_LIMITS if self.ascii_gsm7 else self.ascii
        if msg_fmt == MSG_FMT_UCS2:
            return self.ucs2
        if msg_fmt == MSG_FMT_GBK:
            return self.gbk
        return self.binary


DEFAULT_LIMITS = SplitLimits()


def split_text(
    text: str,
    msg_fmt: int,
    *,
    reference: int = 0,
    ref16: bool = False,
    limits: SplitLimits = DEFAULT_LIMITS,
) -> list[Segment]:
    """Encode a text and split it into PDU contents.

    Args:
        text: the message text; an empty text is one empty segment.
        msg_fmt: MSG_FMT_ASCII, MSG_FMT_UCS2 or MSG_FMT_GBK.
        reference: the concatenation reference shared by all segments.
        ref16: use the 16-bit reference UDH (IEI 0x08) instead of the 8-bit one.
        limits: the length limits.

    Returns:
        One segment without UDH if the text fits a single message, else the
        segments in order, each starting with its UDH. A surrogate pair is
        never split.

    Raises:
        CmppLocalError: if msg_fmt is not a text format, the text cannot be
            encoded, the reference does not fit, or more than 255 segments are
            needed.
    """
    codec, _ = _text_codec(msg_fmt)
    encoded = encode_text(text, msg_fmt)
    _check_reference(reference, ref16)
    fmt_limits = limits.for_format(msg_fmt)
    max_bytes = MAX_CONTENT_ASCII if msg_fmt == MSG_FMT_ASCII else MAX_CONTENT
    units = len(encoded) // 2 if msg_fmt == MSG_FMT_UCS2 else len(text)
    if units <= fmt_limits.single and len(encoded) <= max_bytes:
        return [Segment(encoded, False, 1, 1)]
    udh_len = _UDH_LEN_REF16 if ref16 else _UDH_LEN_REF8
    per_segment = fmt_limits.segment16 if ref16 else fmt_limits.segment
    ucs2 = msg_fmt == MSG_FMT_UCS2
    chunks = _chunk_text(text, codec, ucs2, per_segment, max_bytes - udh_len)
    return _add_udh(chunks, reference, ref16)


def split_bytes(
    data: bytes, *, reference: int, ref16: bool = False, limits: SplitLimits = DEFAULT_LIMITS
) -> list[Segment]:
    """Split binary content (Msg_Fmt 4) into PDU contents.

    Args:
        data: the content.
        reference: the concatenation reference shared by all segments.
        ref16: use the 16-bit reference UDH.
        limits: the length limits (its `binary` row, in bytes).

    Returns:
        One segment without UDH if the data fits, else UDH-prefixed segments.

    Raises:
        CmppLocalError: if the reference does not fit or more than 255 segments
            are needed.
    """
    _check_reference(reference, ref16)
    fmt_limits = limits.binary
    if len(data) <= min(fmt_limits.single, MAX_CONTENT):
        return [Segment(bytes(data), False, 1, 1)]
    udh_len = _UDH_LEN_REF16 if ref16 else _UDH_LEN_REF8
    step = min(fmt_limits.segment16 if ref16 else fmt_limits.segment, MAX_CONTENT - udh_len)
    chunks = [bytes(data[i : i + step]) for i in range(0, len(data), step)]
    return _add_udh(chunks, reference, ref16)


def _text_codec(msg_fmt: int) -> tuple[str, str]:
    try:
        return _ENCODERS[msg_fmt]
    except KeyError:
        raise CmppLocalError(
            f"Msg_Fmt {msg_fmt} is not a text format: use 0 (ASCII), 8 (UCS2) or 15 (GBK);"
            " send binary content with split_bytes"
        ) from None


def _check_reference(reference: int, ref16: bool) -> None:
    bits = 16 if ref16 else 8
    if not 0 <= reference < 1 << bits:
        raise CmppLocalError(f"concatenation reference {reference} does not fit in {bits} bits")


def _chunk_text(
    text: str, codec: str, ucs2: bool, max_units: int, max_bytes: int
) -> list[bytes]:
    """Cut a text greedily at character boundaries, within both a unit and a byte budget."""
    chunks: list[bytes] = []
    current = bytearray()
    units = 0
    for ch in text:
        encoded = ch.encode(codec)
        # UCS2 counts code units (an astral character is two), the others characters.
        weight = len(encoded) // 2 if ucs2 else 1
        if current and (units + weight > max_units or len(current) + len(encoded) > max_bytes):
            chunks.append(bytes(current))
            current.clear()
            units = 0
        current += encoded
        units += weight
    chunks.append(bytes(current))
    return chunks


def _add_udh(chunks: list[bytes], reference: int, ref16: bool) -> list[Segment]:
    total = len(chunks)
    if total > _MAX_SEGMENTS:
        raise CmppLocalError(
            f"message needs {total} segments, more than the {_MAX_SEGMENTS} a UDH can number"
        )
    if ref16:
        head = bytes([6, IEI_CONCAT_REF16, 4, reference >> 8, reference & 0xFF, total])
    else:
        head = bytes([5, IEI_CONCAT_REF8, 3, reference, total])
    return [Segment(head + bytes([n]) + chunk, True, total, n) for n, chunk in enumerate(chunks, 1)]


class ReferenceCounter:
    """Concatenation references, one wrapping counter per destination.

    Memory is bounded: beyond `max_destinations` the least recently used
    destination is forgotten (and restarts at `start` if seen again).
    """

    __slots__ = ("_mask", "_start", "_max", "_counters")

    def __init__(
        self, *, ref16: bool = False, start: int = 0, max_destinations: int = 100_000
    ) -> None:
        """Create a counter.

        Args:
            ref16: count to 65535 instead of 255 before wrapping.
            start: the first reference handed out for a destination.
            max_destinations: how many destinations to remember.

        Raises:
            CmppLocalError: if start does not fit or max_destinations < 1.
        """
        _check_reference(start, ref16)
        if max_destinations < 1:
            raise CmppLocalError(f"max_destinations must be at least 1, got {max_destinations}")
        self._mask = 0xFFFF if ref16 else 0xFF
        self._start = start
        self._max = max_destinations
        self._counters: OrderedDict[str, int] = OrderedDict()

    def next(self, destination: str) -> int:
        """Return the next reference for a destination.

        Args:
            destination: the destination number (normalised by the caller).

        Returns:
            The reference to use for this destination's next long message.
        """
        reference = self._counters.pop(destination, self._start)
        self._counters[destination] = (reference + 1) & self._mask
        if len(self._counters) > self._max:
            self._counters.popitem(last=False)
        return reference


@dataclass(frozen=True, slots=True)
class ConcatInfo:
    """The concatenation element of a UDH: which message, how many parts, which part."""

    reference: int
    total: int
    number: int
    ref16: bool


def parse_udh(content: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split Msg_Content that starts with a UDH.

    Args:
        content: the Msg_Content of a PDU with TP_udhi set.

    Returns:
        The information elements as (IEI, data) in order, and the payload
        after the UDH.

    Raises:
        CmppLocalError: naming the problem when the UDH is malformed.
    """
    if not content:
        raise CmppLocalError("UDH missing: content is empty")
    end = 1 + content[0]
    if end > len(content):
        raise CmppLocalError(
            f"UDH length {content[0]} exceeds content of {len(content) - 1} bytes"
            " after the length byte"
        )
    elements: list[tuple[int, bytes]] = []
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise CmppLocalError(f"UDH truncated: element header at offset {pos} runs past its end")
        iei, iel = content[pos], content[pos + 1]
        if pos + 2 + iel > end:
            raise CmppLocalError(
                f"UDH element 0x{iei:02x} of length {iel} at offset {pos} runs past its end"
            )
        elements.append((iei, bytes(content[pos + 2 : pos + 2 + iel])))
        pos += 2 + iel
    return elements, bytes(content[end:])


def concat_info(elements: list[tuple[int, bytes]]) -> ConcatInfo | None:
    """Find the concatenation element among parsed UDH elements.

    Args:
        elements: as returned by `parse_udh`.

    Returns:
        The first well-formed IEI 0x00 (3 bytes) or 0x08 (4 bytes) element, or
        None if there is none or its part numbers are impossible (total or
        number 0, number above total).
    """
    for iei, data in elements:
        if iei == IEI_CONCAT_REF8 and len(data) == 3:
            info = ConcatInfo(data[0], data[1], data[2], False)
        elif iei == IEI_CONCAT_REF16 and len(data) == 4:
            info = ConcatInfo((data[0] << 8) | data[1], data[2], data[3], True)
        else:
            continue
        return info if 1 <= info.number <= info.total else None
    return None


def udhi_set(tp_udhi: int) -> bool:
    """Tell whether a TP_udhi value announces a UDH.

    Args:
        tp_udhi: the TP_udhi byte.

    Returns:
        True when bit 0x01 or 0x40 is set: many gateways send 0x40, the SMPP
        esm_class UDHI bit, instead of 1 (notes §11.3).
    """
    return bool(tp_udhi & 0x41)
