"""The carrier link: K long-lived CMPP connections to one ISMG account.

`CarrierLink` is a Twisted service. It keeps `connections` logged-in CMPP
sessions (each a `ClientService` that reconnects with jittered exponential
back-off), spreads submits over the live ones, and offers one call:

    link.submit(OutboundMessage(to=("13800138000",), text="..."))
        -> Deferred firing with a SubmitResult (every segment's Msg_Id per
           recipient) or failing with a SubmitError subclass.

Status reports and uplink (MO) messages go to callbacks the owner provides;
a callback may return a Deferred, and the DELIVER is acknowledged only once
it fires (the daemon persists before it acknowledges).

Report/response race. With several connections, a report can arrive on one
connection before the SUBMIT_RESP carrying its Msg_Id is read on another. A
report whose Msg_Id is unknown while submits are still unanswered is held
(up to `report_hold` seconds) until the SUBMIT_RESP that names it has been
handed to the submitter, so the owner always learns a Msg_Id before its report.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import structlog
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IDelayedCall, IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from smsgw._cmpp_protocol import CmppProtocol
from smsgw.protocol.cmpp import (
    CmppError,
    CmppLocalError,
    ConcatInfo,
    DeliverResp,
    Event,
    FailReason,
    LateResponse,
    LinkClosed,
    LinkEstablished,
    LoginRejected,
    MalformedRequest,
    MoReceived,
    Reassembler,
    ReferenceCounter,
    ReportReceived,
    Role,
    Session,
    SessionConfig,
    State,
    StatusReport,
    Submit,
    SubmitAccepted,
    SubmitFailed,
    Version,
    choose_msg_fmt,
    concat_info,
    decode_text,
    msg_id_range,
    msg_id_to_text,
    parse_udh,
    split_text,
    submit_result_text,
    udhi_set,
)

log = structlog.get_logger("smsgw.carrier")


# --- configuration and results ------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """One ISMG account. Timer defaults follow the spec (notes §12)."""

    name: str
    host: str
    port: int
    sp_id: str
    secret: str
    service_code: str  # Src_Id base (特服号); a message's extension is appended
    service_id: str = ""
    version: Version = Version.V30
    connections: int = 1
    window: int = 16
    response_timeout: float = 60.0
    attempts: int = 3
    active_test_interval: float = 180.0
    resend_on_timeout: bool = True
    rate_limit: float | None = None  # submits/s per connection
    fee_user_type: int = 2
    fee_type: str = "01"
    fee_code: str = "000000"
    msg_level: int = 1
    prefer_gbk: bool = False
    ref16: bool = False
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    submit_wait: float = 30.0  # how long a submit may wait for a live connection
    stop_timeout: float = 10.0  # graceful stop: bound on waiting for answers
    report_hold: float = 5.0
    max_pending: int = 100_000  # segments waiting for a connection before submit() refuses more
    pad_sp_id: bool = False  # NUL-pad a short SP_Id in AuthenticatorSource (some ISMGs want it)
    mo_reassembly_timeout: float = 600.0

    def session_config(self) -> SessionConfig:
        return SessionConfig(
            Role.CLIENT, self.version, self.sp_id, self.secret, pad_sp_id=self.pad_sp_id, window=self.window,
            response_timeout=self.response_timeout, attempts=self.attempts,
            active_test_interval=self.active_test_interval,
            resend_on_timeout=self.resend_on_timeout, rate_limit=self.rate_limit,
        )


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What the owner submits: text for one or many recipients (long text is split)."""

    to: tuple[str, ...]
    text: str
    ext: str = ""  # appended to the service code (MO replies come back to it)
    report: bool = True
    msg_fmt: int | None = None  # None: ASCII / UCS2 (or GBK when the link prefers it)


@dataclass(slots=True)
class SegmentResult:
    """One segment's Msg_Id for one recipient."""

    to: str
    pk_number: int
    pk_total: int
    msg_id: int

    @property
    def msg_id_text(self) -> str:
        return msg_id_to_text(self.msg_id)


@dataclass(slots=True)
class SubmitResult:
    """Every segment of a message accepted by the ISMG."""

    segments: tuple[SegmentResult, ...]


class SubmitError(Exception):
    """A message (or some of its segments) did not get a Msg_Id; `accepted` lists those that did."""

    def __init__(self, msg: str, accepted: tuple[SegmentResult, ...] = ()) -> None:
        super().__init__(msg)
        self.accepted = accepted


class SubmitRejected(SubmitError):
    """The ISMG answered with a non-zero Result."""

    def __init__(self, msg: str, result: int, accepted: tuple[SegmentResult, ...] = ()) -> None:
        super().__init__(msg, accepted)
        self.result = result


class SubmitInvalid(SubmitError):
    """The message cannot be encoded as CMPP (nothing was sent): the reason names the field."""


class SubmitTimedOut(SubmitError):
    """No SUBMIT_RESP after every attempt: the ISMG may or may not have the segment."""


class LinkDown(SubmitError):
    """No live connection took the segment (`sent` False: it never left us)."""

    def __init__(self, msg: str, sent: bool, accepted: tuple[SegmentResult, ...] = ()) -> None:
        super().__init__(msg, accepted)
        self.sent = sent


@dataclass(slots=True)
class LinkReport:
    """A status report as the link hands it to its owner."""

    link: str
    msg_id: int
    stat: str
    dest: str
    submit_time: str
    done_time: str
    raw: StatusReport


@dataclass(frozen=True, slots=True)
class MoMessage:
    """An uplink message, reassembled when it came in parts."""

    link: str
    src: str
    dest_id: str
    text: str
    service_id: str
    link_id: str
    parts: int = 1
    complete: bool = True
    missing: tuple[int, ...] = ()
    part_set: str = ""  # for a long message: `part_set_id` of its parts (the owner may have kept them)


def part_set_id(key: tuple[str, str, str, str], ref16: bool, reference: int, total: int) -> str:
    """A text id for the parts of one long MO message (stable across restarts)."""
    return "|".join((*key, "16" if ref16 else "8", str(reference), str(total)))


@dataclass(frozen=True, slots=True)
class MoPart:
    """One part of a long MO message, for an owner that keeps parts durable until the set is whole."""

    link: str
    key: tuple[str, str, str, str]  # (src, dest_id, service_id, link_id)
    info: ConcatInfo
    payload: bytes
    msg_fmt: int
    received_at: float

    @property
    def part_set(self) -> str:
        """The id of the long message this part belongs to (`MoMessage.part_set` once whole)."""
        return part_set_id(self.key, self.info.ref16, self.info.reference, self.info.total)

    @classmethod
    def kept(cls, link: str, part_set: str, number: int, payload: bytes, msg_fmt: int,
             received_at: float) -> MoPart:
        """Rebuild a part the owner stored under its `part_set` id."""
        head, bits, reference, total = part_set.rsplit("|", 3)
        src, dest_id, service_id, link_id = head.split("|", 3)
        info = ConcatInfo(int(reference), int(total), number, bits == "16")
        return cls(link, (src, dest_id, service_id, link_id), info, payload, msg_fmt, received_at)


ReportCallback = Callable[[LinkReport], Any]
MoPartCallback = Callable[[MoPart], Any]
MoCallback = Callable[[MoMessage], Any]


# --- bookkeeping for one submit() call -------------------------------------------


class _Message:
    """A submitted message: its PDUs, and what became of each."""

    __slots__ = ("deferred", "remaining", "results", "error", "deadline")

    def __init__(self, count: int) -> None:
        self.deferred: defer.Deferred[SubmitResult] = defer.Deferred()
        self.remaining = count
        self.results: list[SegmentResult] = []
        self.error: SubmitError | None = None
        self.deadline = 0.0


class _Pdu:
    """One SUBMIT PDU of a message, and the recipients it covers."""

    __slots__ = ("message", "submit", "order")

    def __init__(self, message: _Message, order: int, submit: Submit) -> None:
        self.message = message
        self.submit = submit
        self.order = order  # the link's running count: puts an unsent PDU back in its place


class CarrierLink(MultiService):
    """A service per configured ISMG account that keeps `connections` CMPP sessions."""

    def __init__(self, config: LinkConfig, clock: IReactorTime, *,
                 on_report: ReportCallback, on_mo: MoCallback, on_mo_part: MoPartCallback | None = None,
                 endpoint: IStreamClientEndpoint | None = None) -> None:
        super().__init__()
        self.config = config
        self.name = config.name
        self._clock = clock
        self._on_report = on_report
        self._on_mo = on_mo
        self._on_mo_part = on_mo_part
        self._session_config = config.session_config()
        if endpoint is None:
            assert IReactorTCP.providedBy(clock), "a reactor with TCP is needed without an endpoint"
            endpoint = TCP4ClientEndpoint(clock, config.host, config.port, timeout=10)
        self._endpoint = endpoint
        self._live: list[CmppProtocol] = []
        self._inflight: dict[tuple[int, int], _Pdu] = {}  # (id(proto), key) -> pdu
        self._pending: deque[_Pdu] = deque()  # waiting for a connection with room
        self._order = itertools.count()
        self._accepting = False
        self._refs = ReferenceCounter(ref16=config.ref16, start=random.randrange(256))
        self._reassembler = Reassembler(timeout=config.mo_reassembly_timeout)
        self._completed: dict[tuple[Any, ...], float] = {}  # MO sets handed over -> until when to drop repeats
        self._recent_ids: dict[int, None] = {}
        self._held: dict[int, list[tuple[float, LinkReport, CmppProtocol, int, int]]] = {}
        self._timer: IDelayedCall | None = None
        self._halted = False
        self._stopped: defer.Deferred[None] | None = None
        self._clients: list[ClientService] = []
        self._closing_time = config.response_timeout
        # Twisted's ClientService cannot take a connection that closes after a
        # failed prepareConnection (automat NoTransition), so a refused login is
        # not reported through it: the retry policy adds the slot's consecutive
        # refused logins to ClientService's own count of failed connects, and the
        # back-off grows for both.
        self._login_failures = [0] * config.connections
        backoff = backoffPolicy(initialDelay=config.reconnect_initial, maxDelay=config.reconnect_max, factor=2.0)
        for index in range(config.connections):
            client = ClientService(
                endpoint, _LinkFactory(self, index),
                retryPolicy=self._retry_policy(backoff, index),
                clock=clock,
            )
            client.setServiceParent(self)
            self._clients.append(client)
        self._established: set[int] = set()
        self._handlers: dict[type[Event], Callable[[CmppProtocol, Any], None]] = {
            SubmitAccepted: self._accepted, ReportReceived: self._report, SubmitFailed: self._failed,
            MoReceived: self._mo, LinkEstablished: self._up, LinkClosed: self._down,
            LoginRejected: self._login_rejected, LateResponse: self._late_response,
            MalformedRequest: self._malformed,
        }

    def _retry_policy(self, backoff: Callable[[int], float], index: int) -> Callable[[int], float]:
        def policy(failed_connects: int) -> float:
            return backoff(failed_connects + self._login_failures[index])
        return policy

    # --- public API --------------------------------------------------------

    @property
    def live_connections(self) -> int:
        return len(self._live)

    @property
    def pending(self) -> int:
        """Segments not on the wire yet: waiting for a connection, or queued in a session for its window."""
        return len(self._pending) + sum(p.session.queued for p in self._live)

    def submit(self, message: OutboundMessage) -> defer.Deferred[SubmitResult]:
        """Send a message (one or many recipients, any length).

        Returns:
            A Deferred firing with every segment's Msg_Id per recipient, or
            failing with SubmitInvalid (nothing sent), SubmitRejected,
            SubmitTimedOut or LinkDown (each carrying the segments that were
            accepted).
        """
        if not self._accepting:
            return defer.fail(LinkDown(f"link {self.name} is not running", sent=False))
        if len(self._pending) >= self.config.max_pending:
            return defer.fail(LinkDown(f"link {self.name} has {len(self._pending)} segments waiting "
                                       f"(max_pending); try later", sent=False))
        try:
            pdus = self._build(message)
        except CmppError as exc:
            return defer.fail(SubmitInvalid(f"cannot encode: {exc.msg}"))
        msg = pdus[0].message
        msg.deadline = self._clock.seconds() + self.config.submit_wait
        self._pending.extend(pdus)
        self._dispatch()
        if self._pending:
            self._arm_timer()
        return msg.deferred

    # --- service lifecycle ---------------------------------------------------

    def startService(self) -> None:
        self._accepting = True
        self._halted = False
        log.info("link_starting", link=self.name, host=self.config.host, port=self.config.port,
                 connections=self.config.connections, version=self.config.version.text)
        super().startService()

    def stopService(self) -> defer.Deferred[None]:
        """Stop taking submits, wait (bounded) for answers, TERMINATE every session, close."""
        return self.stop()

    def stop(self, budget: float | None = None) -> defer.Deferred[None]:
        """Like stopService, but done within `budget` seconds when given.

        Answers are awaited for at most `stop_timeout` (and 70% of the budget),
        the TERMINATE_RESP for at most `response_timeout` (and the rest of the
        budget, at least 0.5 s); a connection still open then is aborted.
        """
        self._accepting = False
        self._fail_pending(LinkDown(f"link {self.name} stopping", sent=False))
        d: defer.Deferred[None] = defer.Deferred()
        self._stopped = d
        answers = self.config.stop_timeout
        closing = self.config.response_timeout
        if budget is not None:
            answers = min(answers, budget * 0.7)
            closing = min(closing, max(0.5, budget - answers))
        self._closing_time = closing
        self._wait_drained(self._clock.seconds() + answers)
        d.addCallback(self._stop_children)
        return d

    def _stop_children(self, _: None) -> defer.Deferred[None]:
        self._halted = True  # data still arriving while the connections close arms no timer
        self._cancel_timer()
        stopped: defer.Deferred[None] = defer.maybeDeferred(super().stopService)
        return stopped

    def _wait_drained(self, deadline: float) -> None:
        if self._inflight and self._clock.seconds() < deadline:
            self._clock.callLater(0.05, self._wait_drained, deadline)
            return
        closing = [p for p in self._live]
        for proto in closing:
            proto.session.terminate(self._clock.seconds())
            proto.pump()
        self._wait_closed(closing, self._clock.seconds() + self._closing_time)

    def _wait_closed(self, protos: list[CmppProtocol], deadline: float) -> None:
        if any(p in self._live for p in protos) and self._clock.seconds() < deadline:
            self._clock.callLater(0.05, self._wait_closed, protos, deadline)
            return
        for proto in protos:
            if proto in self._live and proto.transport is not None:
                log.warning("link_aborted", link=self.name, conn=proto.label,
                            reason="no TERMINATE_RESP in time; connection aborted")
                proto.transport.abortConnection()  # type: ignore[attr-defined]
        log.info("link_stopped", link=self.name, unanswered=len(self._inflight))
        assert self._stopped is not None
        self._stopped.callback(None)

    # --- connections ---------------------------------------------------------

    def cmpp_connected(self, proto: CmppProtocol) -> None:
        log.info("link_connected", link=self.name, conn=proto.label, peer=proto.peer)

    def cmpp_protocol_error(self, proto: CmppProtocol, error: CmppError) -> None:
        log.error("link_protocol_error", link=self.name, conn=proto.label, peer=proto.peer, error=error.msg)

    def cmpp_read(self, proto: CmppProtocol) -> None:
        if self._pending:
            self._dispatch()

    def cmpp_event(self, proto: CmppProtocol, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(proto, event)

    def _login_rejected(self, proto: CmppProtocol, event: LoginRejected) -> None:
        log.error("login_rejected", link=self.name, conn=proto.label, status=event.status,
                  reason=event.reason, hint="check sp_id, secret, version and the allowed IP with the carrier")

    def _late_response(self, proto: CmppProtocol, event: LateResponse) -> None:
        log.warning("late_response", link=self.name, conn=proto.label, seq=event.seq, pdu=repr(event.pdu))

    def _malformed(self, proto: CmppProtocol, event: MalformedRequest) -> None:
        log.warning("malformed_request", link=self.name, conn=proto.label, error=event.error)

    def _up(self, proto: CmppProtocol, event: LinkEstablished) -> None:
        self._live.append(proto)
        self._established.add(id(proto))
        self._login_failures[proto.slot] = 0
        log.info("link_up", link=self.name, conn=proto.label, peer=proto.peer,
                 authenticator_ok=event.authenticator_ok, live=len(self._live))
        self._dispatch()

    def _down(self, proto: CmppProtocol, event: LinkClosed) -> None:
        if proto in self._live:
            self._live.remove(proto)
        # A TERMINATE we asked for (graceful stop) is routine; anything else is worth a warning.
        level = log.info if not event.by_peer and event.reason == "terminated" else log.warning
        level("link_down", link=self.name, conn=proto.label, reason=event.reason,
              by_peer=event.by_peer, live=len(self._live))
        if id(proto) in self._established:
            self._established.discard(id(proto))
        else:
            self._login_failures[proto.slot] += 1  # never logged in: back off further

    # --- submits -------------------------------------------------------------

    def _build(self, message: OutboundMessage) -> list[_Pdu]:
        """Split the text once, then one SUBMIT per (recipient group, segment)."""
        to = message.to
        if not to:
            raise CmppLocalError("a message needs at least one recipient")
        cfg = self.config
        text = message.text
        fmt = message.msg_fmt if message.msg_fmt is not None else choose_msg_fmt(text, prefer_gbk=cfg.prefer_gbk)
        segments = split_text(text, fmt, ref16=cfg.ref16)
        if len(segments) > 1:
            # Only long messages need a concatenation reference (one counter per recipient).
            segments = split_text(text, fmt, reference=self._refs.next(to[0]), ref16=cfg.ref16)
        msg = _Message(0)
        order = self._order.__next__
        out = []
        src_id = cfg.service_code + message.ext if message.ext else cfg.service_code
        report = 1 if message.report else 0
        groups = [to] if len(to) <= 99 else [tuple(to[i : i + 99]) for i in range(0, len(to), 99)]
        for group in groups:
            for seg in segments:
                out.append(_Pdu(msg, order(), Submit(
                    group, seg.content, fmt, src_id, cfg.sp_id, cfg.service_id,
                    report, seg.pk_total, seg.pk_number, 1 if seg.udhi else 0,
                    0, cfg.msg_level, cfg.fee_user_type, "", cfg.fee_type, cfg.fee_code,
                )))
        msg.remaining = len(out)
        return out

    def _dispatch(self) -> None:
        """Hand pending PDUs to the live connections with the most room.

        First every connection's window fills; then each takes a second
        window's worth into its session's queue. The session sends those
        (already encoded) the moment responses free the window, before this
        side handles the responses' events, so the peer works while we do.
        """
        pending = self._pending
        live = self._live
        if not pending or not live:
            return
        window = self.config.window
        if len(live) > 1:
            live = sorted(live, key=lambda p: p.session.in_flight + p.session.queued)
            depths: tuple[int, ...] = (window, 2 * window)
        else:  # one pass: this runs for every submit and every answer
            depths = (2 * window,)
        for depth in depths:
            for proto in live:
                session = proto.session
                room = depth - session.in_flight - session.queued
                if room > 0 and session.state is State.ESTABLISHED:  # else full, or closing
                    self._hand(proto, room)
                    if not pending:
                        return

    def _hand(self, proto: CmppProtocol, room: int) -> None:
        pending = self._pending
        inflight = self._inflight
        session = proto.session
        send = session.send
        pid = id(proto)
        now = self._clock.seconds()
        while pending and room > 0:
            pdu = pending.popleft()
            try:
                key = send(pdu.submit, now)
            except CmppError as exc:
                self._settle(pdu, SubmitInvalid(f"cannot encode: {exc.msg}"))
                continue
            inflight[(pid, key)] = pdu
            room -= 1
        proto.request_pump()  # one write per reactor turn, however many submits it took

    def _accepted(self, proto: CmppProtocol, event: SubmitAccepted) -> None:
        pdu = self._inflight.pop((id(proto), event.seq))
        submit = pdu.submit
        dests = submit.dest_terminal_ids
        results = pdu.message.results
        recent = self._recent_ids
        if len(dests) == 1:
            ids = [event.msg_id]
            results.append(SegmentResult(dests[0], submit.pk_number, submit.pk_total, event.msg_id))
            recent[event.msg_id] = None
        else:
            ids = msg_id_range(event.msg_id, len(dests))
            for dest, mid in zip(dests, ids):
                results.append(SegmentResult(dest, submit.pk_number, submit.pk_total, mid))
                recent[mid] = None
        if len(recent) > 200_000:
            for stale in list(recent)[:50_000]:
                del recent[stale]
        self._settle(pdu, None)
        if self._held:
            for mid in ids:
                for _, report, hproto, seq, dmid in self._held.pop(mid, ()):
                    self._deliver_report(report, hproto, seq, dmid)
        # No dispatch here: answers come from a read, and `cmpp_read` refilled the sessions before
        # their events were handed over.

    def _failed(self, proto: CmppProtocol, event: SubmitFailed) -> None:
        pdu = self._inflight.pop((id(proto), event.seq))
        reason = event.reason
        if reason is FailReason.NOT_SENT and self._accepting:
            # Never left us: safe to try again on another connection, in the
            # order it was submitted (a closing session fails its queue in order,
            # and older PDUs may already be back at the front).
            pending = self._pending
            i = 0
            while i < len(pending) and pending[i].order < pdu.order:
                i += 1
            pending.insert(i, pdu)
            self._dispatch()
            self._arm_timer()
            return
        err: SubmitError
        if reason is FailReason.REJECTED or reason is FailReason.FLOW_CONTROLLED:
            result = event.result or 0
            err = SubmitRejected(f"ISMG result {result} ({submit_result_text(result)})", result)
        elif reason is FailReason.TIMEOUT:
            err = SubmitTimedOut(f"no SUBMIT_RESP after {self.config.attempts} attempt(s)")
        else:
            err = LinkDown(f"connection {proto.label} closed with the SUBMIT unanswered", sent=reason is not FailReason.NOT_SENT)
        self._settle(pdu, err)
        if self._pending:
            self._dispatch()

    def _settle(self, pdu: _Pdu, error: SubmitError | None) -> None:
        msg = pdu.message
        if error is not None and msg.error is None:
            msg.error = error
        msg.remaining -= 1
        if msg.remaining:
            return
        if msg.error is None:
            msg.deferred.callback(SubmitResult(tuple(msg.results)))
        else:
            msg.error.accepted = tuple(msg.results)
            msg.deferred.errback(Failure(msg.error))

    def _fail_pending(self, error: SubmitError) -> None:
        while self._pending:
            self._settle(self._pending.popleft(), error)

    # --- reports and MO ------------------------------------------------------

    def _report(self, proto: CmppProtocol, event: ReportReceived) -> None:
        r = event.report
        report = LinkReport(self.config.name, r.msg_id, r.stat, r.dest_terminal_id, r.submit_time, r.done_time, r)
        if r.msg_id not in self._recent_ids and self._inflight:
            # Its SUBMIT_RESP may still be unread on another connection: hold it briefly.
            self._held.setdefault(r.msg_id, []).append(
                (self._clock.seconds() + self.config.report_hold, report, proto, event.seq, event.deliver_msg_id))
            self._arm_timer()
            return
        self._deliver_report(report, proto, event.seq, event.deliver_msg_id)

    def _deliver_report(self, report: LinkReport, proto: CmppProtocol, seq: int, deliver_msg_id: int) -> None:
        self._acknowledge(proto, seq, deliver_msg_id, self._on_report, report)

    def _mo(self, proto: CmppProtocol, event: MoReceived) -> None:
        d = event.deliver
        info: ConcatInfo | None = None
        payload = d.msg_content
        if udhi_set(d.tp_udhi):
            try:
                elements, payload = parse_udh(d.msg_content)
                info = concat_info(elements)
            except CmppError as exc:
                log.warning("mo_bad_udh", link=self.name, src=d.src_terminal_id, error=exc.msg)
                payload = d.msg_content
        src = _normalise(d.src_terminal_id)
        if info is None or info.total == 1:
            mo = MoMessage(self.config.name, src, d.dest_id, decode_text(payload, d.msg_fmt),
                           d.service_id, d.link_id)
            self._acknowledge(proto, event.seq, d.msg_id, self._on_mo, mo)
            return
        key = (src, d.dest_id, d.service_id, d.link_id)
        now = self._clock.seconds()
        set_id = (key, info.ref16, info.reference, info.total)
        if self._completed.get(set_id, 0.0) > now:
            # a repeated part of a message already handed over
            proto.session.respond(event.seq, DeliverResp(d.msg_id, 0))
            proto.pump()
            return
        if self._on_mo_part is not None:
            # The owner makes the part durable first; the DELIVER is answered once it has.
            part = MoPart(self.config.name, key, info, payload, d.msg_fmt, now)
            self._acknowledge(proto, event.seq, d.msg_id, self._on_mo_part, part,
                              then=lambda: self._add_part(key, set_id, info, payload, d.msg_fmt, now))
            return
        # Without an owner that keeps parts, they live in memory until the set is whole.
        proto.session.respond(event.seq, DeliverResp(d.msg_id, 0))
        proto.pump()
        self._add_part(key, set_id, info, payload, d.msg_fmt, now)

    def restore_mo_part(self, part: MoPart) -> None:
        """Put back a part the owner kept durable across a restart (before the link starts)."""
        set_id = (part.key, part.info.ref16, part.info.reference, part.info.total)
        self._add_part(part.key, set_id, part.info, part.payload, part.msg_fmt, part.received_at)

    def _add_part(self, key: Any, set_id: Any, info: ConcatInfo, payload: bytes, msg_fmt: int, now: float) -> None:
        if self._completed.get(set_id, 0.0) > now:
            return
        done = self._reassembler.add((key, info.ref16, info.reference), info, payload, msg_fmt, now)
        if done is not None:
            self._completed[set_id] = now + self.config.mo_reassembly_timeout
            if len(self._completed) > 10_000:
                for stale in [k for k, t in self._completed.items() if t <= now][:5_000] or list(self._completed)[:1]:
                    del self._completed[stale]
            self._emit_mo(done.key, done.text, done.parts, True, ())
        else:
            self._arm_timer()

    def _emit_mo(self, full_key: Any, text: str, parts: int, complete: bool, missing: tuple[int, ...]) -> None:
        key, ref16, reference = full_key
        src, dest_id, service_id, link_id = key
        mo = MoMessage(self.config.name, src, dest_id, text, service_id, link_id, parts, complete, missing,
                       part_set_id(key, ref16, reference, parts))
        try:
            self._on_mo(mo)
        except Exception:
            log.exception("mo_callback_failed", link=self.name, src=src)

    def _acknowledge(self, proto: CmppProtocol, seq: int, deliver_msg_id: int,
                     callback: Callable[[Any], Any], item: Any, then: Callable[[], None] | None = None) -> None:
        """Run the owner's callback; answer the DELIVER once it (or its Deferred) succeeded, then `then()`."""
        try:
            outcome = callback(item)
        except Exception:
            log.exception("deliver_callback_failed", link=self.name)
            self._answer(proto, seq, deliver_msg_id, 9)  # non-zero: the ISMG keeps it and retries
            return

        def succeeded(_: Any = None) -> None:
            self._answer(proto, seq, deliver_msg_id, 0)
            if then is not None:
                then()
        if isinstance(outcome, defer.Deferred):
            outcome.addCallbacks(succeeded, lambda f: self._callback_failed(f, proto, seq, deliver_msg_id))
        else:
            succeeded()

    def _callback_failed(self, failure: Failure, proto: CmppProtocol, seq: int, deliver_msg_id: int) -> None:
        log.error("deliver_callback_failed", link=self.name, error=failure.getErrorMessage())
        self._answer(proto, seq, deliver_msg_id, 9)

    def _answer(self, proto: CmppProtocol, seq: int, deliver_msg_id: int, result: int) -> None:
        session = proto.session
        if session.closed:
            return  # the ISMG will deliver it again on a new connection
        session.respond(seq, DeliverResp(deliver_msg_id, result))
        proto.pump()  # a no-op while that connection is already pumping

    # --- the link's own timer: waiting submits, held reports, MO expiry --------------

    def _arm_timer(self) -> None:
        if self._halted:
            return
        if self._timer is not None and self._timer.active():
            return
        self._timer = self._clock.callLater(0.5, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        while self._pending and self._pending[0].message.deadline <= now:
            pdu = self._pending.popleft()
            self._settle(pdu, LinkDown(f"not sent within {self.config.submit_wait:g}s on link {self.name} "
                                       f"({len(self._live)} live connection(s), all full or down)", sent=False))
        for mid in [m for m, items in self._held.items() if items[0][0] <= now]:
            for _, report, proto, seq, dmid in self._held.pop(mid):
                self._deliver_report(report, proto, seq, dmid)
        for partial in self._reassembler.expire(now):
            log.warning("mo_incomplete", link=self.name, missing=list(partial.missing))
            self._emit_mo(partial.key, partial.text, partial.parts, False, partial.missing)
        if self._pending or self._held or len(self._reassembler):
            self._arm_timer()


def _normalise(number: str) -> str:
    """Drop the +86 / 86 / 0086 prefixes carriers put on mainland numbers."""
    for prefix in ("+86", "0086", "86"):
        if number.startswith(prefix) and len(number) - len(prefix) == 11:
            return number[len(prefix):]
    return number


class _LinkFactory(Factory):
    """Builds one CmppProtocol (with a fresh Session) per TCP connection of a link."""

    def __init__(self, link: CarrierLink, index: int) -> None:
        self._link = link
        self._index = index

    def buildProtocol(self, addr: Any) -> CmppProtocol:
        link = self._link
        proto = CmppProtocol(Session(link._session_config), link._clock, link)
        proto.label = f"{link.name}#{self._index}"
        proto.slot = self._index
        return proto


__all__ = [
    "CarrierLink", "LinkConfig", "LinkDown", "LinkReport", "MoMessage", "OutboundMessage",
    "SegmentResult", "SubmitError", "SubmitRejected", "SubmitResult", "SubmitTimedOut",
]
