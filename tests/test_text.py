"""Tests for Msg_Fmt encodings, splitting and UDH parsing (protocol notes §8, §11)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.protocol.cmpp._errors import CmppLocalError
from smsgw.protocol.cmpp._text import (
    MSG_FMT_ASCII,
    MSG_FMT_BINARY,
    MSG_FMT_GBK,
    MSG_FMT_UCS2,
    ConcatInfo,
    ReferenceCounter,
    Segment,
    SplitLimits,
    choose_msg_fmt,
    concat_info,
    decode_text,
    encode_text,
    parse_udh,
    split_bytes,
    split_text,
    udhi_set,
)

CHINESE_80 = "中" * 80


def _gbk_encodable(ch: str) -> bool:
    try:
        ch.encode("gbk")
    except UnicodeEncodeError:
        return False
    return True


def _payloads(segments: list[Segment]) -> list[bytes]:
    if len(segments) == 1 and not segments[0].udhi:
        return [segments[0].content]
    return [parse_udh(s.content)[1] for s in segments]


# --- choosing and encoding ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prefer_gbk", "expected"),
    [
        ("hello", False, MSG_FMT_ASCII),
        ("", True, MSG_FMT_ASCII),
        ("你好", False, MSG_FMT_UCS2),
        ("你好", True, MSG_FMT_GBK),
        ("你好😀", True, MSG_FMT_UCS2),
    ],
)
def test_choose_msg_fmt(text: str, prefer_gbk: bool, expected: int) -> None:
    """ASCII text stays ASCII; other text is UCS2 unless GBK is preferred and possible."""
    assert choose_msg_fmt(text, prefer_gbk=prefer_gbk) == expected


def test_ucs2_is_big_endian_without_bom() -> None:
    """UCS2 encodes as UTF-16-BE with no byte-order mark, astral characters as pairs."""
    assert encode_text("中a😀", MSG_FMT_UCS2) == bytes.fromhex("4e2d0061d83dde00")


def test_gbk_encoding() -> None:
    """GBK encodes Chinese in two bytes and ASCII in one."""
    assert encode_text("中a", MSG_FMT_GBK) == bytes.fromhex("d6d061")


@pytest.mark.parametrize(
    ("text", "msg_fmt", "needle"),
    [
        ("abcé", MSG_FMT_ASCII, "U+00E9"),
        ("中😀", MSG_FMT_GBK, "U+1F600"),
        ("a\ud800", MSG_FMT_UCS2, "U+D800"),
    ],
)
def test_encode_names_the_unencodable_character(text: str, msg_fmt: int, needle: str) -> None:
    """A character the format cannot hold raises a local error naming it and its index."""
    with pytest.raises(CmppLocalError, match=re.escape(needle)) as info:
        encode_text(text, msg_fmt)
    assert f"index {len(text) - 1}" in str(info.value)


@pytest.mark.parametrize("msg_fmt", [MSG_FMT_BINARY, 3, 24, 99])
def test_encode_rejects_non_text_formats(msg_fmt: int) -> None:
    """Binary and unknown formats cannot encode text."""
    with pytest.raises(CmppLocalError, match="not a text format"):
        encode_text("x", msg_fmt)


# --- decoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "msg_fmt", "expected"),
    [
        (b"hi", MSG_FMT_ASCII, "hi"),
        (b"h\xe9", MSG_FMT_ASCII, "h\ufffd"),
        (bytes.fromhex("4e2d"), MSG_FMT_UCS2, "中"),
        (bytes.fromhex("4e2d00"), MSG_FMT_UCS2, "中\ufffd"),
        (bytes.fromhex("d6d061"), MSG_FMT_GBK, "中a"),
        (bytes.fromhex("9439fc36"), MSG_FMT_GBK, "😀"),  # GB18030 four-byte form
        (bytes.fromhex("d6"), MSG_FMT_GBK, "\ufffd"),
        (b"\x01\xff", MSG_FMT_BINARY, "01ff"),
        (b"\x01\xff", 3, "01ff"),
        (bytes.fromhex("4e2d"), 0x18, "中"),
        (b"hi", 0xF0, "hi"),
        (b"hi", 0xF4, "6869"),
    ],
)
def test_decode_text(data: bytes, msg_fmt: int, expected: str) -> None:
    """Each Msg_Fmt decodes as documented, with DCS alphabets for unknown values."""
    assert decode_text(data, msg_fmt) == expected


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=255))
def test_decode_never_raises(data: bytes, msg_fmt: int) -> None:
    """Any bytes decode to a string under any Msg_Fmt."""
    assert isinstance(decode_text(data, msg_fmt), str)


# --- splitting -----------------------------------------------------------------


def test_split_golden_8bit_reference() -> None:
    """80 Chinese characters split into 140 and 32 bytes with the 8-bit UDH (notes §11.2)."""
    segments = split_text(CHINESE_80, MSG_FMT_UCS2, reference=0xA7)
    assert [len(s.content) for s in segments] == [140, 32]
    assert segments[0].content.startswith(bytes.fromhex("050003a70201"))
    assert segments[1].content.startswith(bytes.fromhex("050003a70202"))
    assert [(s.udhi, s.pk_total, s.pk_number) for s in segments] == [(True, 2, 1), (True, 2, 2)]


def test_split_golden_16bit_reference() -> None:
    """The 16-bit reference variant gives 139 and 35 bytes (notes §11.2)."""
    segments = split_text(CHINESE_80, MSG_FMT_UCS2, reference=0x1234, ref16=True)
    assert [len(s.content) for s in segments] == [139, 35]
    assert segments[0].content.startswith(bytes.fromhex("06080412340201"))
    assert segments[1].content.startswith(bytes.fromhex("06080412340202"))


@pytest.mark.parametrize(
    ("text", "msg_fmt", "limits", "sizes"),
    [
        ("中" * 70, MSG_FMT_UCS2, SplitLimits(), [70]),
        ("中" * 71, MSG_FMT_UCS2, SplitLimits(), [67, 4]),
        ("中" * 70, MSG_FMT_GBK, SplitLimits(), [70]),
        ("a" * 71, MSG_FMT_GBK, SplitLimits(), [67, 4]),
        ("a" * 140, MSG_FMT_ASCII, SplitLimits(), [140]),
        ("a" * 141, MSG_FMT_ASCII, SplitLimits(), [134, 7]),
        ("a" * 159, MSG_FMT_ASCII, SplitLimits(ascii_gsm7=True), [159]),
        ("a" * 160, MSG_FMT_ASCII, SplitLimits(ascii_gsm7=True), [153, 7]),
    ],
)
def test_split_limits_count_characters(
    text: str, msg_fmt: int, limits: SplitLimits, sizes: list[int]
) -> None:
    """Texts split at the per-format character limits of notes §8.1."""
    codec = "utf-16-be" if msg_fmt == MSG_FMT_UCS2 else "gbk"
    segments = split_text(text, msg_fmt, limits=limits)
    assert [len(p.decode(codec)) for p in _payloads(segments)] == sizes


def test_split_empty_text_is_one_empty_segment() -> None:
    """An empty text is a single empty segment, not an error."""
    assert split_text("", MSG_FMT_UCS2) == [Segment(b"", False, 1, 1)]


def test_split_never_cuts_a_surrogate_pair() -> None:
    """An emoji that would straddle the segment limit moves whole to the next segment."""
    segments = split_text("x" * 66 + "😀" * 3, MSG_FMT_UCS2)
    assert [p.decode("utf-16-be") for p in _payloads(segments)] == ["x" * 66, "😀" * 3]


def test_split_rejects_more_than_255_segments() -> None:
    """A text needing 256 segments raises a local error with the count."""
    with pytest.raises(CmppLocalError, match="256 segments"):
        split_text("a" * (134 * 255 + 1), MSG_FMT_ASCII)


@pytest.mark.parametrize(("reference", "ref16"), [(256, False), (-1, False), (65536, True)])
def test_split_rejects_references_too_wide(reference: int, ref16: bool) -> None:
    """A reference outside 8 or 16 bits raises a local error."""
    with pytest.raises(CmppLocalError, match="reference"):
        split_text("x", MSG_FMT_ASCII, reference=reference, ref16=ref16)


def test_split_text_rejects_binary_format() -> None:
    """Binary content goes through split_bytes, not split_text."""
    with pytest.raises(CmppLocalError, match="split_bytes"):
        split_text("x", MSG_FMT_BINARY)


def test_split_bytes() -> None:
    """Binary content fits 140 bytes whole, else 134 (or 133) bytes per segment."""
    assert split_bytes(bytes(140), reference=1) == [Segment(bytes(140), False, 1, 1)]
    segments = split_bytes(bytes(range(141)), reference=1)
    assert [len(s.content) for s in segments] == [140, 13]
    assert b"".join(_payloads(segments)) == bytes(range(141))
    assert [len(s.content) for s in split_bytes(bytes(141), reference=1, ref16=True)] == [140, 15]


ascii_chars = st.characters(codec="ascii")
# ASCII plus the CJK Unified Ideographs block, all of which GBK encodes.
gbk_chars = ascii_chars | st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)
# (text, Msg_Fmt) pairs the format can encode, often long enough for several segments.
encodable = st.one_of(
    st.tuples(st.text(ascii_chars), st.just(MSG_FMT_ASCII)),
    st.tuples(st.text(ascii_chars, min_size=130, max_size=600), st.just(MSG_FMT_ASCII)),
    st.tuples(st.text(min_size=60, max_size=300), st.just(MSG_FMT_UCS2)),
    st.tuples(st.text(), st.just(MSG_FMT_UCS2)),
    st.tuples(st.text(gbk_chars, min_size=60, max_size=300), st.just(MSG_FMT_GBK)),
)


@given(encodable, st.booleans(), st.booleans())
def test_split_invariants(pair: tuple[str, int], ref16: bool, gsm7: bool) -> None:
    """Every segment fits its PDU, decodes whole, and the payloads rebuild the encoding."""
    text, msg_fmt = pair
    encoded = encode_text(text, msg_fmt)
    limits = SplitLimits(ascii_gsm7=gsm7)
    segments = split_text(text, msg_fmt, reference=7, ref16=ref16, limits=limits)
    cap = 159 if msg_fmt == MSG_FMT_ASCII and gsm7 else 140
    assert all(len(s.content) <= cap for s in segments)
    assert [s.pk_number for s in segments] == list(range(1, len(segments) + 1))
    payloads = _payloads(segments)
    assert b"".join(payloads) == encoded
    if msg_fmt == MSG_FMT_UCS2:
        for p in payloads:
            p.decode("utf-16-be")  # strict: raises on a split surrogate pair


# --- reference counter ---------------------------------------------------------


def test_reference_counter_is_per_destination() -> None:
    """Each destination counts on its own from the start value."""
    refs = ReferenceCounter(start=5)
    assert [refs.next("a"), refs.next("a"), refs.next("b"), refs.next("a")] == [5, 6, 5, 7]


@pytest.mark.parametrize(("ref16", "top"), [(False, 255), (True, 65535)])
def test_reference_counter_wraps(ref16: bool, top: int) -> None:
    """The counter wraps to 0 after 255 (or 65535 with 16-bit references)."""
    refs = ReferenceCounter(ref16=ref16, start=top)
    assert [refs.next("a"), refs.next("a")] == [top, 0]


def test_reference_counter_forgets_least_recently_used() -> None:
    """Beyond its capacity the counter forgets the destination used longest ago."""
    refs = ReferenceCounter(max_destinations=2)
    refs.next("a"), refs.next("b"), refs.next("a"), refs.next("c")
    assert (refs.next("a"), refs.next("b")) == (2, 0)


def test_reference_counter_rejects_bad_start() -> None:
    """A start value outside the reference width raises a local error."""
    with pytest.raises(CmppLocalError):
        ReferenceCounter(start=256)


# --- UDH parsing ----------------------------------------------------------------


def test_parse_udh_generic_elements() -> None:
    """Every information element is returned in order, and the payload follows the UDH."""
    content = bytes.fromhex("0b 05 04 0b84 23f0 00 03 a7 02 01") + b"hi"
    elements = [(5, bytes.fromhex("0b8423f0")), (0, bytes.fromhex("a70201"))]
    assert parse_udh(content) == (elements, b"hi")


def test_parse_udh_empty_header() -> None:
    """A UDH of length 0 has no elements."""
    assert parse_udh(b"\x00ab") == ([], b"ab")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (bytes.fromhex("09 00 03 a7 02"), "UDH length 9 exceeds content of 4 bytes"),
        (bytes.fromhex("03 00 03 a7"), "element 0x00 of length 3"),
        (bytes.fromhex("01 00"), "truncated"),
    ],
)
def test_parse_udh_rejects_malformed(content: bytes, message: str) -> None:
    """A malformed UDH raises a local error saying what is wrong."""
    with pytest.raises(CmppLocalError, match=message):
        parse_udh(content)


@given(st.binary(max_size=200))
def test_parse_udh_on_any_bytes(content: bytes) -> None:
    """Any bytes either parse into elements plus payload or raise a local error."""
    try:
        elements, payload = parse_udh(content)
    except CmppLocalError:
        return
    assert payload == content[1 + content[0] :]
    assert sum(2 + len(data) for _, data in elements) == content[0]


@pytest.mark.parametrize(
    ("elements", "expected"),
    [
        ([(0, b"\xa7\x02\x01")], ConcatInfo(0xA7, 2, 1, False)),
        ([(5, b"\x0b\x84\x23\xf0"), (8, b"\x12\x34\x03\x03")], ConcatInfo(0x1234, 3, 3, True)),
        ([(0, b"\xa7\x02"), (0, b"\x01\x02\x02")], ConcatInfo(1, 2, 2, False)),
        ([], None),
        ([(5, b"\x0b\x84\x23\xf0")], None),
        ([(0, b"\x01\x00\x00")], None),
        ([(0, b"\x01\x02\x00")], None),
        ([(0, b"\x01\x02\x03")], None),
    ],
)
def test_concat_info(elements: list[tuple[int, bytes]], expected: ConcatInfo | None) -> None:
    """The first well-formed concatenation element is found and checked for sane numbers."""
    assert concat_info(elements) == expected


@pytest.mark.parametrize(
    ("tp_udhi", "expected"), [(0, False), (1, True), (0x40, True), (0x41, True), (0x02, False)]
)
def test_udhi_set(tp_udhi: int, expected: bool) -> None:
    """Both the CMPP bit 0x01 and the SMPP esm_class bit 0x40 announce a UDH."""
    assert udhi_set(tp_udhi) is expected
