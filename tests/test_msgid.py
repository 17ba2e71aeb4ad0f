"""Tests for Msg_Id layout, text forms and generation (protocol notes §9)."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.protocol.cmpp._errors import CmppLocalError
from smsgw.protocol.cmpp._msgid import (
    MsgIdFields,
    MsgIdGenerator,
    msg_id_display,
    msg_id_from_text,
    msg_id_range,
    msg_id_to_text,
    pack_msg_id,
    unpack_msg_id,
)

# The worked example of notes §9.1.
GOLDEN = 0x32A0928003E90001
GOLDEN_FIELDS = MsgIdFields(month=3, day=5, hour=8, minute=9, second=10, gateway=1001, sequence=1)
NOW = datetime.datetime(2024, 3, 5, 8, 9, 10)

u64 = st.integers(min_value=0, max_value=2**64 - 1)


def test_pack_golden() -> None:
    """The worked example's fields pack to the documented value."""
    assert pack_msg_id(GOLDEN_FIELDS) == GOLDEN
    assert GOLDEN.to_bytes(8, "big").hex() == "32a0928003e90001"


def test_unpack_golden() -> None:
    """The documented value unpacks to the worked example's fields."""
    assert unpack_msg_id(GOLDEN) == GOLDEN_FIELDS


def test_generator_golden() -> None:
    """A generator for gateway 1001 starting at sequence 1 yields the documented id."""
    assert MsgIdGenerator(1001, start_sequence=1).next(NOW) == GOLDEN


def test_text_forms_golden() -> None:
    """The canonical form is the wire bytes in hex; the display form is 22 digits."""
    assert msg_id_to_text(GOLDEN) == "32a0928003e90001"
    assert msg_id_display(GOLDEN) == "0305080910" + "0001001" + "00001"


@given(u64)
def test_unpack_then_pack_round_trips(v: int) -> None:
    """Any 64-bit value survives unpacking and packing again."""
    assert pack_msg_id(unpack_msg_id(v)) == v


@given(u64)
def test_text_forms_round_trip(v: int) -> None:
    """Any 64-bit value survives both text forms."""
    text = msg_id_to_text(v)
    assert len(text) == 16 and text == text.lower()
    assert msg_id_from_text(text) == v
    display = msg_id_display(v)
    assert len(display) == 22 and display.isdigit()
    assert msg_id_from_text(display) == v


@pytest.mark.parametrize(
    ("field", "value"),
    [("month", 16), ("day", 32), ("hour", 32), ("minute", 64), ("second", 64),
     ("gateway", 2**22), ("sequence", 2**16), ("sequence", -1)],
)
def test_pack_rejects_fields_too_wide(field: str, value: int) -> None:
    """A field outside its bit width raises a local error naming it."""
    with pytest.raises(CmppLocalError, match=field):
        pack_msg_id(dataclasses.replace(GOLDEN_FIELDS, **{field: value}))


@pytest.mark.parametrize("v", [-1, 2**64])
def test_out_of_range_ids_are_rejected(v: int) -> None:
    """Values outside the unsigned 64-bit range raise a local error."""
    with pytest.raises(CmppLocalError):
        unpack_msg_id(v)
    with pytest.raises(CmppLocalError):
        msg_id_to_text(v)


def test_from_text_is_lenient_about_case_and_whitespace() -> None:
    """Uppercase hex and surrounding whitespace are accepted."""
    assert msg_id_from_text(" 32A0928003E90001\n") == GOLDEN


@pytest.mark.parametrize(
    "text",
    ["", "32a0928003e9001", "32a0928003e900011", "0x32a0928003e900", "+32a0928003e9001",
     "32a0_928003e9001", "g2a0928003e90001", "030509100001001000010", "٠٣٠٥٠٨٠٩١٠٠٠٠١٠٠١٠٠٠٠١"],
)
def test_from_text_rejects_other_forms(text: str) -> None:
    """Anything but 16 hex digits or 22 decimal digits raises ValueError explaining both."""
    with pytest.raises(ValueError, match="16 hex digits.*22 decimal digits"):
        msg_id_from_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "1605080910" "0001001" "00001",  # month 16
        "0305080910" "9999999" "00001",  # gateway above 22 bits
        "0305080910" "0001001" "99999",  # sequence above 16 bits
    ],
)
def test_from_text_rejects_display_fields_too_wide(text: str) -> None:
    """A display form whose month, gateway or sequence does not fit raises ValueError."""
    with pytest.raises(ValueError, match="does not fit"):
        msg_id_from_text(text)


def test_range_counts_up_in_the_sequence_field() -> None:
    """Group-send ids follow the first one by sequence."""
    assert msg_id_range(GOLDEN, 3) == [GOLDEN, GOLDEN + 1, GOLDEN + 2]
    assert msg_id_range(GOLDEN, 0) == []


def test_range_wraps_without_carry_into_the_gateway() -> None:
    """Overflowing the 16-bit sequence wraps to 0 and keeps the gateway bits."""
    first = (GOLDEN & ~0xFFFF) | 0xFFFE
    ids = msg_id_range(first, 4)
    assert [unpack_msg_id(i).sequence for i in ids] == [0xFFFE, 0xFFFF, 0, 1]
    assert {unpack_msg_id(i).gateway for i in ids} == {1001}


def test_range_rejects_negative_count() -> None:
    """A negative count is caller misuse."""
    with pytest.raises(CmppLocalError):
        msg_id_range(GOLDEN, -1)


def test_generator_counts_and_wraps() -> None:
    """The sequence increases by one per id and wraps from 65535 to 0."""
    gen = MsgIdGenerator(1001, start_sequence=0xFFFE)
    assert [unpack_msg_id(gen.next(NOW)).sequence for _ in range(4)] == [0xFFFE, 0xFFFF, 0, 1]


def test_generator_follows_the_clock() -> None:
    """Ids carry the time they were made, including a change of hour alone."""
    gen = MsgIdGenerator(79101)
    later = [NOW, NOW.replace(microsecond=500), NOW.replace(second=11), NOW.replace(hour=9)]
    fields = [unpack_msg_id(gen.next(t)) for t in later]
    assert [(f.hour, f.second, f.sequence) for f in fields] == [
        (8, 10, 0), (8, 10, 1), (8, 11, 2), (9, 10, 3)
    ]
    assert {f.gateway for f in fields} == {79101}


def test_reserve_allocates_a_block() -> None:
    """Reserve returns the first id of a block and the next id follows the block."""
    gen = MsgIdGenerator(1001, start_sequence=0xFFFE)
    first = gen.reserve(NOW, 3)
    assert [unpack_msg_id(i).sequence for i in msg_id_range(first, 3)] == [0xFFFE, 0xFFFF, 0]
    assert unpack_msg_id(gen.next(NOW)).sequence == 1


@pytest.mark.parametrize("count", [0, -1, 65537])
def test_reserve_rejects_impossible_counts(count: int) -> None:
    """A block must hold 1 to 65536 ids."""
    with pytest.raises(CmppLocalError):
        MsgIdGenerator(1).reserve(NOW, count)


@pytest.mark.parametrize(("gateway", "start"), [(-1, 0), (2**22, 0), (1, 65536), (1, -1)])
def test_generator_rejects_fields_too_wide(gateway: int, start: int) -> None:
    """A gateway or start sequence outside its bits raises a local error."""
    with pytest.raises(CmppLocalError):
        MsgIdGenerator(gateway, start_sequence=start)
