"""Splitting a TCP byte stream into CMPP frames, with bounded memory.

The buffer never holds more than one incomplete frame: Total_Length is checked
as soon as its four bytes arrive, so a peer cannot make us buffer more than
`max_size` bytes (h11's `max_incomplete_event_size`). A bad length is a
protocol error naming what was read; after it the stream cannot be
resynchronised (CMPP has no frame marker), so the buffer stays broken.
"""

from __future__ import annotations

import struct

from smsgw.protocol.cmpp._constants import HEADER_SIZE, MAX_PDU_SIZE
from smsgw.protocol.cmpp._errors import CmppRemoteError

_HEADER = struct.Struct(">III")
Frame = tuple[int, int, bytes]  # (command_id, sequence_id, body)


class FrameBuffer:
    """Accumulates bytes and hands out whole frames."""

    __slots__ = ("_buf", "_max", "_error")

    def __init__(self, max_size: int = MAX_PDU_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_size
        self._error: CmppRemoteError | None = None

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if self._error is None:  # a broken stream is never read again: don't keep it
            self._buf += data

    def frames(self) -> list[Frame]:
        """Every whole frame buffered so far, in order; the rest stays buffered.

        Raises:
            CmppRemoteError: a Total_Length outside [12, max_size]. Frames before
                the bad one are lost to the caller only if it does not use
                `frames_until_error`; the session uses that.
        """
        out, err = self.frames_until_error()
        if err is not None:
            raise err
        return out

    def frames_until_error(self) -> tuple[list[Frame], CmppRemoteError | None]:
        """Like `frames`, but returns the good frames before a framing error with it."""
        if self._error is not None:
            return [], self._error
        # bytes, not bytearray: slicing then yields each body with one copy.
        buf = bytes(self._buf) if self._buf else b""
        self._buf.clear()
        size = len(buf)
        pos = 0
        out: list[Frame] = []
        unpack = _HEADER.unpack_from
        limit = self._max
        while size - pos >= 4:
            if size - pos >= 12:
                total, command_id, seq = unpack(buf, pos)
            else:
                total, command_id, seq = int.from_bytes(buf[pos : pos + 4], "big"), 0, 0
            if not HEADER_SIZE <= total <= limit:
                self._error = CmppRemoteError(
                    f"frame header: Total_Length {total} is outside {HEADER_SIZE}..{limit}"
                    f" (after {pos} bytes of this read: not a CMPP stream, or out of sync)",
                    status=4,
                )
                return out, self._error
            end = pos + total
            if end > size:
                break
            out.append((command_id, seq, buf[pos + HEADER_SIZE : end]))
            pos = end
        if pos < size:
            self._buf += buf[pos:]
        return out, None
