"""Tests for long MO message reassembly (protocol notes §11.3)."""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.protocol.cmpp._errors import CmppLocalError
from smsgw.protocol.cmpp._reassembly import ReassembledMessage, Reassembler
from smsgw.protocol.cmpp._text import (
    MSG_FMT_ASCII,
    MSG_FMT_BINARY,
    MSG_FMT_GBK,
    MSG_FMT_UCS2,
    ConcatInfo,
    Segment,
    concat_info,
    decode_text,
    parse_udh,
    split_bytes,
    split_text,
)

KEY = ("link-1", "13800138000", "106900001")


def _parts(segments: list[Segment]) -> list[tuple[ConcatInfo, bytes]]:
    """Recover (concatenation info, payload) from each segment as a receiver would."""
    parts = []
    for segment in segments:
        elements, payload = parse_udh(segment.content)
        info = concat_info(elements)
        assert info is not None
        parts.append((info, payload))
    return parts


def _info(number: int, total: int = 3, reference: int = 9) -> ConcatInfo:
    return ConcatInfo(reference=reference, total=total, number=number, ref16=False)


def _reassemble_shuffled(segments: list[Segment], msg_fmt: int, data: st.DataObject) -> str:
    """Feed all parts in a random order with duplicates; return the text of the one result."""
    if len(segments) == 1 and not segments[0].udhi:
        return decode_text(segments[0].content, msg_fmt)
    parts = _parts(segments)
    order = data.draw(st.permutations(range(len(parts))))
    duplicates = data.draw(st.lists(st.sampled_from(order[:-1]), max_size=len(parts)))
    early = data.draw(st.permutations([*order[:-1], *duplicates]))
    reassembler = Reassembler()
    for i in early:
        assert reassembler.add(KEY, parts[i][0], parts[i][1], msg_fmt, 0.0) is None
    message = reassembler.add(KEY, parts[order[-1]][0], parts[order[-1]][1], msg_fmt, 1.0)
    assert message is not None and message.complete and message.missing == ()
    assert message.parts == len(segments) and message.key == KEY
    assert len(reassembler) == 0 and reassembler.next_deadline() is None
    return message.text


def _texts(alphabet: st.SearchStrategy[str], long_size: int) -> st.SearchStrategy[str]:
    """Texts of any size, plus texts long enough to need several segments."""
    return st.one_of(
        st.text(alphabet), st.text(alphabet, min_size=long_size, max_size=4 * long_size)
    )


def _gbk_symbols() -> list[str]:
    """The GBK-encodable BMP characters outside ASCII and the main CJK block."""
    found = []
    for cp in range(0x80, 0x10000):
        if 0x4E00 <= cp <= 0x9FA5 or 0xD800 <= cp <= 0xDFFF:
            continue
        if chr(cp).encode("gbk", "ignore"):
            found.append(chr(cp))
    return found


ascii_chars = st.characters(codec="ascii")
gbk_chars = st.one_of(
    ascii_chars,
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5),
    st.sampled_from(_gbk_symbols()),
)
ascii_texts = _texts(ascii_chars, 130)
gbk_texts = _texts(gbk_chars, 60)
any_texts = _texts(st.characters(codec="utf-8"), 60)  # all but lone surrogates


@given(any_texts, st.booleans(), st.data())
def test_ucs2_round_trip_any_text(text: str, ref16: bool, data: st.DataObject) -> None:
    """Any text, astral characters included, survives UCS2 splitting and reassembly."""
    segments = split_text(text, MSG_FMT_UCS2, reference=0xBEEF if ref16 else 0xA7, ref16=ref16)
    assert _reassemble_shuffled(segments, MSG_FMT_UCS2, data) == text


@given(gbk_texts, st.booleans(), st.data())
def test_gbk_round_trip(text: str, ref16: bool, data: st.DataObject) -> None:
    """GBK-encodable text survives GBK splitting and reassembly."""
    segments = split_text(text, MSG_FMT_GBK, reference=3, ref16=ref16)
    assert _reassemble_shuffled(segments, MSG_FMT_GBK, data) == text


@given(ascii_texts, st.booleans(), st.data())
def test_ascii_round_trip(text: str, ref16: bool, data: st.DataObject) -> None:
    """ASCII text survives ASCII splitting and reassembly."""
    segments = split_text(text, MSG_FMT_ASCII, reference=3, ref16=ref16)
    assert _reassemble_shuffled(segments, MSG_FMT_ASCII, data) == text


@given(st.binary(max_size=800), st.data())
def test_binary_round_trip(payload: bytes, data: st.DataObject) -> None:
    """Binary content comes back as the hex of the original bytes."""
    segments = split_bytes(payload, reference=3)
    assert _reassemble_shuffled(segments, MSG_FMT_BINARY, data) == payload.hex()


def test_raw_bytes_are_joined_before_decoding() -> None:
    """A character split across two parts by the sender still decodes whole."""
    reassembler = Reassembler()
    assert reassembler.add(KEY, _info(1, total=2), b"\x4e", MSG_FMT_UCS2, 0.0) is None
    message = reassembler.add(KEY, _info(2, total=2), b"\x2d", MSG_FMT_UCS2, 0.0)
    assert message == ReassembledMessage(KEY, "中", MSG_FMT_UCS2, 2, (), True)


def test_duplicate_part_keeps_first_copy() -> None:
    """A repeated part number is ignored, keeping the copy that came first."""
    reassembler = Reassembler()
    reassembler.add(KEY, _info(1, total=2), b"a", MSG_FMT_ASCII, 0.0)
    assert reassembler.add(KEY, _info(1, total=2), b"X", MSG_FMT_ASCII, 0.0) is None
    message = reassembler.add(KEY, _info(2, total=2), b"b", MSG_FMT_ASCII, 0.0)
    assert message is not None and message.text == "ab"


@pytest.mark.parametrize(
    ("key", "info"),
    [
        (("link-2", "13800138000", "106900001"), _info(2)),
        (KEY, _info(2, reference=10)),
        (KEY, _info(2, total=4)),
        (KEY, ConcatInfo(reference=9, total=3, number=2, ref16=True)),
    ],
)
def test_parts_of_different_messages_do_not_mix(key: Hashable, info: ConcatInfo) -> None:
    """Sender context, reference, total and reference width all separate messages."""
    reassembler = Reassembler()
    reassembler.add(KEY, _info(1), b"a", MSG_FMT_ASCII, 0.0)
    reassembler.add(key, info, b"b", MSG_FMT_ASCII, 0.0)
    assert reassembler.add(KEY, _info(3), b"c", MSG_FMT_ASCII, 0.0) is None
    assert len(reassembler) == 2


def test_single_part_set_completes_at_once() -> None:
    """A message announced as 1 of 1 completes with its only part."""
    message = Reassembler().add(KEY, _info(1, total=1), b"hi", MSG_FMT_ASCII, 0.0)
    assert message == ReassembledMessage(KEY, "hi", MSG_FMT_ASCII, 1, (), True)


def test_incomplete_set_expires_after_timeout() -> None:
    """An incomplete set surfaces after the timeout with the text so far and the missing numbers."""
    reassembler = Reassembler(timeout=60.0)
    reassembler.add(KEY, _info(1, total=4), b"one ", MSG_FMT_ASCII, 100.0)
    reassembler.add(KEY, _info(3, total=4), b"three", MSG_FMT_ASCII, 130.0)
    assert reassembler.next_deadline() == 160.0
    assert reassembler.expire(159.9) == []
    assert reassembler.expire(160.0) == [
        ReassembledMessage(KEY, "one three", MSG_FMT_ASCII, 4, (2, 4), False)
    ]
    assert len(reassembler) == 0 and reassembler.next_deadline() is None


def test_expiry_decodes_each_run_separately() -> None:
    """Bytes on either side of a missing part are not joined into one character."""
    reassembler = Reassembler(timeout=1.0)
    reassembler.add(KEY, _info(1), b"\x4e", MSG_FMT_UCS2, 0.0)
    reassembler.add(KEY, _info(3), b"\x2d", MSG_FMT_UCS2, 0.0)
    [message] = reassembler.expire(1.0)
    assert message.text == "\ufffd\ufffd" and message.missing == (2,)


def test_expiry_counts_from_the_first_part() -> None:
    """Later parts do not extend a set's deadline, and sets expire oldest first."""
    reassembler = Reassembler(timeout=10.0)
    reassembler.add("a", _info(1), b"a", MSG_FMT_ASCII, 0.0)
    reassembler.add("b", _info(1), b"b", MSG_FMT_ASCII, 5.0)
    reassembler.add("a", _info(2), b"a", MSG_FMT_ASCII, 9.0)
    assert [m.key for m in reassembler.expire(10.0)] == ["a"]
    assert reassembler.next_deadline() == 15.0
    assert [m.key for m in reassembler.expire(20.0)] == ["b"]


def test_eviction_keeps_the_oldest_set_for_expire() -> None:
    """Exceeding max_sets expires the oldest set early, and expire returns it."""
    reassembler = Reassembler(timeout=600.0, max_sets=2)
    for n, key in enumerate(["a", "b", "c"]):
        reassembler.add(key, _info(1, total=2), key.encode(), MSG_FMT_ASCII, float(n))
    assert len(reassembler) == 2
    assert reassembler.next_deadline() == 2.0
    assert reassembler.expire(2.0) == [ReassembledMessage("a", "a", MSG_FMT_ASCII, 2, (2,), False)]
    assert reassembler.next_deadline() == 601.0


@pytest.mark.parametrize(("number", "total"), [(0, 2), (3, 2), (1, 0)])
def test_add_rejects_impossible_part_numbers(number: int, total: int) -> None:
    """A hand-made ConcatInfo with impossible numbers is caller misuse."""
    with pytest.raises(CmppLocalError):
        Reassembler().add(KEY, _info(number, total=total), b"", MSG_FMT_ASCII, 0.0)


@pytest.mark.parametrize(("timeout", "max_sets"), [(-1.0, 1), (1.0, 0)])
def test_rejects_bad_settings(timeout: float, max_sets: int) -> None:
    """A negative timeout or a capacity below one is rejected."""
    with pytest.raises(CmppLocalError):
        Reassembler(timeout=timeout, max_sets=max_sets)
