"""Reassembly of long MO messages from their UDH-numbered parts (protocol notes §11.3).

Sans I/O: the caller passes `now` (a monotonic clock, in seconds) and arms one
timer at `next_deadline()`. Parts are stored as raw bytes and decoded once
when the set is complete, because a sender may split a multi-byte character
across segments.

Known limitation: a duplicate part arriving *after* its set completed starts a
new set, which later expires as incomplete. Retransmitted DELIVERs carry the
same Msg_Id, so the caller is the place to drop those.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from smsgw.protocol.cmpp._errors import CmppLocalError
from smsgw.protocol.cmpp._text import ConcatInfo, decode_text


@dataclass(frozen=True, slots=True)
class ReassembledMessage:
    """A long message, whole or (after expiry) with the parts that arrived.

    `parts` is the announced total; `missing` lists the part numbers that never
    arrived, and is empty exactly when `complete`.
    """

    key: Hashable
    text: str
    msg_fmt: int
    parts: int
    missing: tuple[int, ...]
    complete: bool


class _PartialSet:
    """The parts received so far for one (sender context, reference, total)."""

    __slots__ = ("key", "msg_fmt", "total", "deadline", "parts")

    def __init__(self, key: Hashable, msg_fmt: int, total: int, deadline: float) -> None:
        self.key = key
        # The first part's Msg_Fmt wins: all parts of one message should agree.
        self.msg_fmt = msg_fmt
        self.total = total
        self.deadline = deadline
        self.parts: dict[int, bytes] = {}

    def to_message(self) -> ReassembledMessage:
        """Decode what has arrived, one contiguous run of parts at a time."""
        runs: list[bytes] = []
        run = bytearray()
        missing: list[int] = []
        for number in range(1, self.total + 1):
            part = self.parts.get(number)
            if part is None:
                missing.append(number)
                # Don't join bytes across a gap: they were never adjacent.
                if run:
                    runs.append(bytes(run))
                    run.clear()
            else:
                run += part
        if run:
            runs.append(bytes(run))
        text = "".join(decode_text(r, self.msg_fmt) for r in runs)
        return ReassembledMessage(
            self.key, text, self.msg_fmt, self.total, tuple(missing), not missing
        )


class Reassembler:
    """Collect the parts of long MO messages and hand them back whole or expired."""

    __slots__ = ("_timeout", "_max_sets", "_sets", "_evicted", "_evicted_at")

    def __init__(self, *, timeout: float = 600.0, max_sets: int = 10_000) -> None:
        """Create an empty reassembler.

        Args:
            timeout: seconds from a set's first part until it expires incomplete.
            max_sets: incomplete sets kept at most; beyond that the oldest is
                expired early (and returned by the next `expire` call).

        Raises:
            CmppLocalError: if timeout is negative or max_sets < 1.
        """
        if timeout < 0:
            raise CmppLocalError(f"reassembly timeout must not be negative, got {timeout}")
        if max_sets < 1:
            raise CmppLocalError(f"max_sets must be at least 1, got {max_sets}")
        self._timeout = timeout
        self._max_sets = max_sets
        # Insertion order is first-part order, so with a monotonic `now` the
        # first entry is always the next to expire.
        self._sets: dict[tuple[Hashable, bool, int, int], _PartialSet] = {}
        self._evicted: list[ReassembledMessage] = []
        self._evicted_at: float | None = None

    def __len__(self) -> int:
        """Return the number of sets still collecting parts (not counting evicted ones)."""
        return len(self._sets)

    def add(
        self, key: Hashable, info: ConcatInfo, payload: bytes, msg_fmt: int, now: float
    ) -> ReassembledMessage | None:
        """Store one part.

        Args:
            key: the sender context (link, normalised source number, Dest_Id),
                built by the caller; the reference and total are added here.
            info: the part's concatenation element, from `concat_info`.
            payload: the content after the UDH.
            msg_fmt: the part's Msg_Fmt.
            now: the current monotonic time.

        Returns:
            The complete message when this part completes its set, else None.
            A duplicate part number is ignored (the first copy is kept).

        Raises:
            CmppLocalError: if info has impossible part numbers.
        """
        if not 1 <= info.number <= info.total:
            raise CmppLocalError(f"part {info.number} of {info.total} is impossible")
        full_key = (key, info.ref16, info.reference, info.total)
        partial = self._sets.get(full_key)
        if partial is None:
            if len(self._sets) >= self._max_sets:
                self._evict_oldest(now)
            partial = _PartialSet(key, msg_fmt, info.total, now + self._timeout)
            self._sets[full_key] = partial
        partial.parts.setdefault(info.number, bytes(payload))
        if len(partial.parts) < partial.total:
            return None
        del self._sets[full_key]
        return partial.to_message()

    def expire(self, now: float) -> list[ReassembledMessage]:
        """Give up on sets whose timeout has passed.

        Args:
            now: the current monotonic time.

        Returns:
            Incomplete messages (``complete=False``) for sets evicted since the
            last call and for sets whose first part is older than the timeout,
            oldest first, each with the text that arrived and the missing numbers.
        """
        expired, self._evicted, self._evicted_at = self._evicted, [], None
        while self._sets:
            full_key, partial = next(iter(self._sets.items()))
            if partial.deadline > now:
                break
            del self._sets[full_key]
            expired.append(partial.to_message())
        return expired

    def next_deadline(self) -> float | None:
        """Return when `expire` next has something to return, or None if never.

        Returns:
            The earliest expiry time; the time of an eviction if one is waiting
            (already due).
        """
        if self._evicted_at is not None:
            return self._evicted_at
        oldest = next(iter(self._sets.values()), None)
        return None if oldest is None else oldest.deadline

    def _evict_oldest(self, now: float) -> None:
        """Make room by expiring the oldest set early, keeping it for `expire`."""
        full_key = next(iter(self._sets))
        self._evicted.append(self._sets.pop(full_key).to_message())
        if self._evicted_at is None:
            self._evicted_at = now
