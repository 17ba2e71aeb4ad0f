"""Exceptions of the CMPP core.

The split follows h11: the error says whose fault it is. Inside the core only
`CmppLocalError` is raised; where input came from the peer, the one boundary
that handles it (`Session.receive_data` / `FrameBuffer`) converts it into a
`CmppRemoteError`. Anything else escaping the core is a bug.
"""

from __future__ import annotations


class CmppError(Exception):
    """Abstract base: raise a subclass."""

    def __init__(self, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        #: The CMPP result/status code that best describes the problem, when
        #: one applies (1 structure error, 2 command id error, 4 length error...).
        self.status = status


class CmppLocalError(CmppError):
    """We tried something CMPP forbids: our bug, or the caller's misuse."""


class CmppRemoteError(CmppError):
    """The peer sent something CMPP forbids (or we could not make sense of it)."""
