"""What a `Session` tells its owner: facts, named in the past tense.

Events are slotted dataclasses nothing mutates (not declared frozen, for the
same measured reason as the PDUs: see _pdus.py and docs/performance.md).

Every request the owner hands to `Session.send` ends in exactly one of
`SubmitAccepted` / `SubmitFailed` (submits), `DeliverAcknowledged` (delivers,
server role) or `ResponseReceived` (query, cancel): also when the link dies,
so the owner never has to guess what became of a message.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from smsgw.protocol.cmpp._pdus import Deliver, Pdu, StatusReport, Submit


class FailReason(enum.Enum):
    """Why a submit ended without a Msg_Id."""

    #: The ISMG answered with a non-zero, non-retryable Result.
    REJECTED = "rejected"
    #: No SUBMIT_RESP after every attempt: the ISMG may or may not have it.
    TIMEOUT = "timeout"
    #: The link closed while the SUBMIT was on the wire: outcome unknown.
    LINK_CLOSED = "link_closed"
    #: The link closed before the SUBMIT was written: safe to send elsewhere.
    NOT_SENT = "not_sent"
    #: Result 8 kept coming back past the configured number of retries.
    FLOW_CONTROLLED = "flow_controlled"


class Event:
    """Base of all session events."""

    __slots__ = ()


@dataclass(slots=True)
class LinkEstablished(Event):
    """Login succeeded; `version` is what both sides now speak."""

    version: int
    authenticator_ok: bool = True


@dataclass(slots=True)
class LoginRequested(Event):
    """(Server role) a CONNECT arrived; answer with `accept_login` or `reject_login`."""

    source_addr: str
    authenticator: bytes
    version: int
    timestamp: int


@dataclass(slots=True)
class LoginRejected(Event):
    """(Client role) the ISMG refused the CONNECT with this Status."""

    status: int
    reason: str


@dataclass(slots=True)
class SubmitAccepted(Event):
    """The ISMG took the SUBMIT whose `send` returned `seq`, and named it `msg_id`."""

    seq: int
    msg_id: int


@dataclass(slots=True)
class SubmitFailed(Event):
    """The SUBMIT whose `send` returned `seq` ended without a Msg_Id."""

    seq: int
    reason: FailReason
    result: int | None = None


@dataclass(slots=True)
class SubmitReceived(Event):
    """(Server role) an SP submitted; answer with `respond(seq, SubmitResp(...))`."""

    seq: int
    submit: Submit


@dataclass(slots=True)
class ReportReceived(Event):
    """(Client role) a status report arrived; acknowledge with `respond(seq, DeliverResp(deliver_msg_id))`."""

    seq: int
    deliver_msg_id: int
    report: StatusReport
    deliver: Deliver


@dataclass(slots=True)
class MoReceived(Event):
    """(Client role) an uplink message arrived; acknowledge like a report."""

    seq: int
    deliver: Deliver


@dataclass(slots=True)
class DeliverAcknowledged(Event):
    """(Server role) the SP answered the DELIVER whose `send` returned `seq`.

    `result` is None when the link closed or the response timed out.
    """

    seq: int
    result: int | None


@dataclass(slots=True)
class RequestReceived(Event):
    """A QUERY or CANCEL from the peer; answer it with `respond`."""

    seq: int
    pdu: Pdu


@dataclass(slots=True)
class ResponseReceived(Event):
    """The answer to a QUERY or CANCEL we sent (`pdu` None: no answer came)."""

    seq: int
    pdu: Pdu | None


@dataclass(slots=True)
class MalformedRequest(Event):
    """A request from the peer could not be decoded; it was answered with `result` and the link goes on."""

    seq: int
    command_id: int
    result: int
    error: str


@dataclass(slots=True)
class LateResponse(Event):
    """A response for a request already given up on (timed out): log it, a message may have gone out.

    `seq` is the key `send` returned when the session still knew it, else the wire sequence id.
    """

    seq: int
    pdu: Pdu


@dataclass(slots=True)
class LinkClosed(Event):
    """The session is over; `reason` says why, for the log."""

    reason: str
    by_peer: bool = False
