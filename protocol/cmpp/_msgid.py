"""Msg_Id: the 64-bit message id, its bit layout and its text forms (protocol notes §9).

For matching, a Msg_Id is an opaque 8-byte key: many ISMGs do not follow the
layout. The canonical text form (logs, database, APIs) is therefore the 16
lowercase hex digits of the wire bytes; the 22-digit decimal form decodes the
layout and is for display only.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from smsgw.protocol.cmpp._errors import CmppLocalError

#: (field, shift, width) from the most significant bits down, as in notes §9.1.
_LAYOUT: tuple[tuple[str, int, int], ...] = (
    ("month", 60, 4),
    ("day", 55, 5),
    ("hour", 50, 5),
    ("minute", 44, 6),
    ("second", 38, 6),
    ("gateway", 16, 22),
    ("sequence", 0, 16),
)

MAX_MSG_ID = (1 << 64) - 1
MAX_GATEWAY = (1 << 22) - 1
SEQUENCE_MASK = 0xFFFF

_HEX_FORM = re.compile(r"[0-9a-fA-F]{16}")
_DISPLAY_FORM = re.compile(r"[0-9]{22}")
#: MM DD HH MM SS, gateway (7 digits), sequence (5 digits).
_DISPLAY_SLICES = ((0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 17), (17, 22))


@dataclass(frozen=True, slots=True)
class MsgIdFields:
    """The fields of a Msg_Id laid out per the spec (time is the ISMG's local time)."""

    month: int
    day: int
    hour: int
    minute: int
    second: int
    gateway: int
    sequence: int


def pack_msg_id(f: MsgIdFields) -> int:
    """Pack fields into a Msg_Id.

    Only bit widths are checked, not calendar ranges: ids from the wire may
    carry any value, and packing must round-trip them.

    Args:
        f: the fields.

    Returns:
        The Msg_Id as an unsigned 64-bit integer.

    Raises:
        CmppLocalError: if a field is negative or too wide for its bits.
    """
    value = 0
    for name, shift, width in _LAYOUT:
        field = getattr(f, name)
        if not 0 <= field < 1 << width:
            raise CmppLocalError(f"Msg_Id {name} {field} does not fit in {width} bits")
        value |= field << shift
    return value


def unpack_msg_id(v: int) -> MsgIdFields:
    """Split a Msg_Id into its fields.

    Args:
        v: the Msg_Id, 0 <= v < 2**64.

    Returns:
        The fields; any 64-bit value unpacks.

    Raises:
        CmppLocalError: if v is outside the 64-bit range.
    """
    _check_range(v)
    return MsgIdFields(*((v >> shift) & ((1 << width) - 1) for _, shift, width in _LAYOUT))


def msg_id_to_text(v: int) -> str:
    """Format a Msg_Id in the canonical text form.

    Args:
        v: the Msg_Id.

    Returns:
        16 lowercase hex digits of the 8 big-endian wire bytes.

    Raises:
        CmppLocalError: if v is outside the 64-bit range.
    """
    _check_range(v)
    return f"{v:016x}"


def msg_id_display(v: int) -> str:
    """Format a Msg_Id as the 22-digit decimal display form (SMSGate style).

    Args:
        v: the Msg_Id.

    Returns:
        MMDDHHMMSS, the gateway code in 7 digits and the sequence in 5 digits.

    Raises:
        CmppLocalError: if v is outside the 64-bit range.
    """
    f = unpack_msg_id(v)
    return (
        f"{f.month:02d}{f.day:02d}{f.hour:02d}{f.minute:02d}{f.second:02d}"
        f"{f.gateway:07d}{f.sequence:05d}"
    )


def msg_id_from_text(s: str) -> int:
    """Parse a Msg_Id from either of its text forms.

    Args:
        s: 16 hex digits (canonical form) or the 22-digit decimal display form;
            surrounding whitespace is ignored.

    Returns:
        The Msg_Id.

    Raises:
        ValueError: for any other text, or a display form whose fields do not
            fit the bit layout.
    """
    text = s.strip()
    if _HEX_FORM.fullmatch(text):
        return int(text, 16)
    if _DISPLAY_FORM.fullmatch(text):
        parts = [int(text[i:j]) for i, j in _DISPLAY_SLICES]
        try:
            return pack_msg_id(MsgIdFields(*parts))
        except CmppLocalError as exc:
            raise ValueError(f"bad Msg_Id {s!r}: {exc.msg}") from None
    raise ValueError(
        f"bad Msg_Id {s!r}: expected 16 hex digits (e.g. 32a0928003e90001) or "
        "22 decimal digits MMDDHHMMSS + 7-digit gateway + 5-digit sequence"
    )


def msg_id_range(first: int, count: int) -> list[int]:
    """List the Msg_Ids of a group send.

    The ISMG answers a group send with one id standing for `count` ids; per the
    spec the sequence field wraps to 0 without carrying into the gateway bits.

    Args:
        first: the Msg_Id of the SUBMIT_RESP.
        count: the number of destinations.

    Returns:
        `count` ids, one per destination in order.

    Raises:
        CmppLocalError: if first is outside the 64-bit range or count is negative.
    """
    _check_range(first)
    if count < 0:
        raise CmppLocalError(f"Msg_Id range count must not be negative, got {count}")
    base, seq = first & ~SEQUENCE_MASK, first & SEQUENCE_MASK
    return [base | ((seq + i) & SEQUENCE_MASK) for i in range(count)]


class MsgIdGenerator:
    """Allocate Msg_Ids the way an ISMG does (used by the simulator).

    The sequence is 16 bits and wraps, so more than 65536 ids within one
    second repeat: that is a property of the format, not of this class.
    """

    __slots__ = ("_gateway", "_sequence", "_second", "_time_part")

    def __init__(self, gateway: int, start_sequence: int = 0) -> None:
        """Create a generator.

        Args:
            gateway: the ISMG code as an integer (``"001001"`` -> 1001), 22 bits.
            start_sequence: the first sequence number to hand out, 16 bits.

        Raises:
            CmppLocalError: if either value does not fit its bits.
        """
        if not 0 <= gateway <= MAX_GATEWAY:
            raise CmppLocalError(f"Msg_Id gateway {gateway} does not fit in 22 bits")
        if not 0 <= start_sequence <= SEQUENCE_MASK:
            raise CmppLocalError(f"Msg_Id sequence {start_sequence} does not fit in 16 bits")
        self._gateway = gateway << 16
        self._sequence = start_sequence
        # The packed time part is cached per second: the big shifts cost more
        # than comparing the five small fields.
        self._second: tuple[int, int, int, int, int] | None = None
        self._time_part = 0

    def next(self, now: datetime.datetime) -> int:
        """Allocate one Msg_Id.

        Args:
            now: the current local time.

        Returns:
            The new Msg_Id.
        """
        seq = self._sequence
        self._sequence = (seq + 1) & SEQUENCE_MASK
        return self._base(now) | seq

    def reserve(self, now: datetime.datetime, count: int) -> int:
        """Allocate `count` consecutive sequences for a group send.

        Args:
            now: the current local time.
            count: the number of ids, 1 to 65536.

        Returns:
            The first Msg_Id; `msg_id_range(first, count)` lists them all.

        Raises:
            CmppLocalError: if count is outside 1 to 65536.
        """
        if not 1 <= count <= SEQUENCE_MASK + 1:
            raise CmppLocalError(f"can reserve 1 to 65536 Msg_Ids, not {count}")
        seq = self._sequence
        self._sequence = (seq + count) & SEQUENCE_MASK
        return self._base(now) | seq

    def _base(self, now: datetime.datetime) -> int:
        """Return the time and gateway bits for `now`, recomputed once per second."""
        second = (now.second, now.minute, now.hour, now.day, now.month)
        if second != self._second:
            self._second = second
            self._time_part = (
                (now.month << 60) | (now.day << 55) | (now.hour << 50)
                | (now.minute << 44) | (now.second << 38) | self._gateway
            )
        return self._time_part


def _check_range(v: int) -> None:
    if not 0 <= v <= MAX_MSG_ID:
        raise CmppLocalError(f"Msg_Id {v} is outside the unsigned 64-bit range")
