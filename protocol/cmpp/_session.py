"""One CMPP link as a sans-IO state machine, for the SP (client) and ISMG (server) roles.

The session does no I/O and never reads a clock (h11, aioquic): the owner
feeds it bytes and the current time, drains events, writes `data_to_send()`
and calls `handle_timer()` at `get_timer()`.

Theory of the states. A link is a TCP connection that must log in before it
carries anything (notes §12.2):

    client: CONNECTING --start--> LOGGING_IN --CONNECT_RESP(0)--> ESTABLISHED
    server: AWAITING_LOGIN --CONNECT--> LOGGING_IN --accept_login--> ESTABLISHED
    ESTABLISHED --terminate()--> CLOSING --TERMINATE_RESP / timeout--> CLOSED
    ESTABLISHED --TERMINATE from peer--> CLOSED (after answering it)
    any --EOF / dead link / login refused--> CLOSED
    any --peer breaks the protocol--> ERROR (the error is raised once by next_event)

Which PDU may arrive in which state is the one table `_RECEIVE` below; a PDU
not in it is the peer's protocol error. Requests we send are numbered by
`send`, wait in a FIFO queue until the sliding window, the rate limit and any
flow-control pause allow them out, and then wait for their response with a
deadline. Because the response timeout T is the same for every request, the
outstanding requests, kept in insertion order, are also in deadline order:
one timer (the earliest deadline) covers them all, and no per-request timer
exists.
"""

from __future__ import annotations

import datetime
import enum
from collections import deque
from dataclasses import dataclass
from typing import Callable

from smsgw.protocol.cmpp._auth import (
    authenticator_ismg,
    authenticator_source,
    make_timestamp,
    verify_authenticator_ismg,
)
from smsgw.protocol.cmpp._constants import (
    RESULT_FLOW_CONTROL,
    CommandId,
    Version,
    connect_status_text,
)
from smsgw.protocol.cmpp._errors import CmppLocalError, CmppRemoteError
from smsgw.protocol.cmpp._events import (
    DeliverAcknowledged,
    Event,
    FailReason,
    LateResponse,
    LinkClosed,
    LinkEstablished,
    LoginRejected,
    LoginRequested,
    MalformedRequest,
    MoReceived,
    ReportReceived,
    RequestReceived,
    ResponseReceived,
    SubmitAccepted,
    SubmitFailed,
    SubmitReceived,
)
from smsgw.protocol.cmpp._framing import FrameBuffer
from smsgw.protocol.cmpp._pdus import (
    ActiveTest,
    ActiveTestResp,
    Cancel,
    CancelResp,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Pdu,
    Query,
    QueryResp,
    StatusReport,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
    decode_body,
    encode_pdu,
)


class Role(enum.Enum):
    CLIENT = "client"  # the SP
    SERVER = "server"  # the ISMG (our simulator)


class State(enum.Enum):
    CONNECTING = "CONNECTING"
    AWAITING_LOGIN = "AWAITING_LOGIN"
    LOGGING_IN = "LOGGING_IN"
    ESTABLISHED = "ESTABLISHED"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


C, S = Role.CLIENT, Role.SERVER

#: Refilling at exactly `_queue_ready_at()` can leave 0.9999999999999998 tokens
#: (float rounding); without slack the timer fires, sends nothing and re-arms
#: at the same instant forever.
_TOKEN_SLACK = 1e-9
_EST, _CLOSING = State.ESTABLISHED, State.CLOSING
_I = CommandId


def _allow(role: Role, states: tuple[State, ...], commands: tuple[CommandId, ...],
           to: State | None = None) -> dict[tuple[Role, State, int], State]:
    return {(role, st, cmd): (to or st) for st in states for cmd in commands}


#: (role, state, received Command_Id) -> next state. Handlers may end the
#: session instead (a refused login, a TERMINATE); anything absent is an error.
_RECEIVE: dict[tuple[Role, State, int], State] = {
    **_allow(C, (State.LOGGING_IN,), (_I.CONNECT_RESP,), _EST),
    **_allow(C, (_EST, _CLOSING), (_I.SUBMIT_RESP, _I.DELIVER, _I.QUERY_RESP, _I.CANCEL_RESP,
                                   _I.ACTIVE_TEST, _I.ACTIVE_TEST_RESP)),
    **_allow(S, (State.AWAITING_LOGIN,), (_I.CONNECT,), State.LOGGING_IN),
    **_allow(S, (_EST, _CLOSING), (_I.SUBMIT, _I.DELIVER_RESP, _I.QUERY, _I.CANCEL,
                                   _I.ACTIVE_TEST, _I.ACTIVE_TEST_RESP)),
    **_allow(C, (_EST, _CLOSING), (_I.TERMINATE,), State.CLOSED),
    **_allow(S, (_EST, _CLOSING), (_I.TERMINATE,), State.CLOSED),
    **_allow(C, (_CLOSING,), (_I.TERMINATE_RESP,), State.CLOSED),
    **_allow(S, (_CLOSING,), (_I.TERMINATE_RESP,), State.CLOSED),
}

#: The same table split per (role, state), so the per-PDU lookup hashes one int.
_ALLOWED: dict[tuple[Role, State], dict[int, State]] = {(r, st): {} for r in Role for st in State}
for (_r, _st, _cmd), _to in _RECEIVE.items():
    _ALLOWED[(_r, _st)][int(_cmd)] = _to

#: What each role may hand to `send` (ACTIVE_TEST and TERMINATE are the session's own).
_SENDABLE: dict[Role, tuple[type[Pdu], ...]] = {
    Role.CLIENT: (Submit, Query, Cancel),
    Role.SERVER: (Deliver,),
}


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Timers and limits of one link (notes §12); defaults are the spec's recommendations."""

    role: Role
    version: Version = Version.V30
    sp_id: str = ""
    secret: str = ""
    pad_sp_id: bool = False
    window: int = 16  # W: requests on the wire without a response
    response_timeout: float = 60.0  # T
    attempts: int = 3  # N: first send + N-1 resends (also N unanswered ACTIVE_TESTs = dead)
    active_test_interval: float = 180.0  # C: idle seconds before an ACTIVE_TEST
    resend_on_timeout: bool = True  # a resent SUBMIT may duplicate one the ISMG took
    rate_limit: float | None = None  # submits per second on this link
    rate_burst: int = 0  # tokens the rate limiter may bank (0: rate/10, at least 1)
    flow_control_pause: float = 0.2  # first pause after Result 8, doubled while it repeats
    flow_control_pause_max: float = 5.0
    flow_control_retries: int = 30  # Result 8 answers one SUBMIT may get before it fails
    max_pdu_size: int = 4096

    def __post_init__(self) -> None:
        if self.window < 1:
            raise CmppLocalError(f"window must be at least 1, not {self.window}")
        if self.attempts < 1:
            raise CmppLocalError(f"attempts must be at least 1, not {self.attempts}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise CmppLocalError(f"rate_limit must be positive, not {self.rate_limit}")


class _Request:
    """A request of ours: queued, then on the wire awaiting its response."""

    __slots__ = ("key", "pdu", "data", "deadline", "attempts", "flow_retries", "windowed")

    def __init__(self, key: int, pdu: Pdu, data: bytes, windowed: bool) -> None:
        self.key = key  # the id `send` returned; stable across resends
        self.pdu = pdu
        self.data = data  # the encoded PDU, header included (its seq may be renumbered)
        self.deadline = 0.0
        self.attempts = 0
        self.flow_retries = 0
        self.windowed = windowed


class Session:
    """One CMPP link, seen from either side. Does no I/O and never reads a clock."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.role = config.role
        self.version = config.version
        self._state = State.CONNECTING if self.role is Role.CLIENT else State.AWAITING_LOGIN
        self._frames = FrameBuffer(config.max_pdu_size)
        self._events: deque[Event | CmppRemoteError] = deque()
        self._out: list[bytes] = []
        self._seq = 0
        self._queue: deque[_Request] = deque()
        self._outstanding: dict[int, _Request] = {}  # wire seq -> request, in deadline order
        self._in_window = 0
        self._unanswered: dict[int, int] = {}  # peer's request seq -> its Command_Id
        self._timed_out: dict[int, int] = {}  # wire seq -> key, for late responses (bounded)
        self._last_rx = 0.0
        self._active_test: _Request | None = None
        self._login_deadline: float | None = None
        self._login: tuple[Connect, int] | None = None  # server: the CONNECT awaiting a decision
        self._auth_source = b""
        self._pause_until = 0.0
        self._pause = config.flow_control_pause
        rate = config.rate_limit
        self._burst = float(config.rate_burst or max(1.0, (rate or 0) / 10))
        self._tokens = self._burst
        self._tokens_at = 0.0
        self._sendable = _SENDABLE[self.role]
        self._allowed = _ALLOWED[(self.role, self._state)]
        self._handlers: dict[int, Callable[[int, bytes, float], None]] = {
            _I.CONNECT: self._on_connect, _I.CONNECT_RESP: self._on_connect_resp,
            _I.SUBMIT: self._on_submit, _I.SUBMIT_RESP: self._on_submit_resp,
            _I.DELIVER: self._on_deliver, _I.DELIVER_RESP: self._on_deliver_resp,
            _I.QUERY: self._on_request(_I.QUERY), _I.CANCEL: self._on_request(_I.CANCEL),
            _I.QUERY_RESP: self._on_response(QueryResp), _I.CANCEL_RESP: self._on_response(CancelResp),
            _I.ACTIVE_TEST: self._on_active_test, _I.ACTIVE_TEST_RESP: self._on_active_test_resp,
            _I.TERMINATE: self._on_terminate, _I.TERMINATE_RESP: self._on_terminate_resp,
        }

    # --- public API ------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        """True once the owner should close the transport (after writing `data_to_send`)."""
        return self._state is State.CLOSED or self._state is State.ERROR

    @property
    def in_flight(self) -> int:
        """Requests on the wire awaiting a response (ACTIVE_TEST excluded)."""
        return self._in_window

    @property
    def queued(self) -> int:
        """Requests accepted by `send` but not yet written."""
        return len(self._queue)

    @property
    def can_send(self) -> bool:
        """True when `send` would put the PDU on the wire now instead of queueing it."""
        return (self._state is _EST and not self._queue
                and self._in_window < self.config.window)

    def start(self, now: float, wallclock: datetime.datetime | None = None) -> None:
        """Begin: the client sends CONNECT (stamped with `wallclock`, local time); the server arms its login timeout.

        Raises:
            CmppLocalError: called twice, or a client without `wallclock`.
        """
        self._check_not_failed()
        self._last_rx = now
        self._login_deadline = now + self.config.response_timeout
        if self.role is Role.SERVER:
            if self._state is not State.AWAITING_LOGIN:
                raise CmppLocalError(f"can't start a session in {self._state.name}")
            return
        if self._state is not State.CONNECTING or wallclock is None:
            raise CmppLocalError(f"can't start a client session in {self._state.name} without a wallclock")
        text, stamp = make_timestamp(wallclock)
        cfg = self.config
        self._auth_source = authenticator_source(cfg.sp_id, cfg.secret, text, pad_sp_id=cfg.pad_sp_id)
        self._out.append(encode_pdu(Connect(cfg.sp_id, self._auth_source, int(self.version), stamp),
                                    self._next_seq(), self.version))
        self._set_state(State.LOGGING_IN)

    def send(self, pdu: Pdu, now: float) -> int:
        """Queue a request; it goes out as soon as window, rate and flow control allow.

        Returns:
            The key every later event about this request carries as `seq`
            (also its first wire Sequence_Id).

        Raises:
            CmppLocalError: the link is not established, the role may not send
                this PDU, or a field does not fit (naming the field).
        """
        self._check_not_failed()
        if self._state is not _EST:
            raise CmppLocalError(f"can't send {pdu.command.name} in {self._state.name}")
        if not isinstance(pdu, self._sendable):
            raise CmppLocalError(f"a {self.role.value} session does not send {pdu.command.name}")
        seq = self._next_seq()
        req = _Request(seq, pdu, encode_pdu(pdu, seq, self.version), True)
        self._queue.append(req)
        if self._in_window < self.config.window:
            self._flush(now)
        return seq

    def respond(self, seq: int, pdu: Pdu) -> None:
        """Answer the peer's request `seq` (written at once: responses are never held back).

        Raises:
            CmppLocalError: no such request is waiting, or `pdu` is not its response type.
        """
        self._check_not_failed()
        cmd = self._unanswered.pop(seq, None)
        if cmd is None:
            raise CmppLocalError(f"no request with sequence id {seq} is waiting for {pdu.command.name}")
        if pdu.command != cmd | 0x80000000:
            self._unanswered[seq] = cmd
            raise CmppLocalError(f"{pdu.command.name} does not answer {CommandId(cmd).name}")
        if self._state is not State.CLOSED:
            self._out.append(encode_pdu(pdu, seq, self.version))

    def check_login(self, secret: str) -> bool:
        """(Server) whether the pending CONNECT's AuthenticatorSource matches `secret`."""
        if self._login is None:
            return False
        connect, _ = self._login
        expected = authenticator_source(connect.source_addr, secret, f"{connect.timestamp:010d}",
                                        pad_sp_id=self.config.pad_sp_id)
        return expected == connect.authenticator

    def accept_login(self, secret: str, now: float) -> None:
        """(Server) answer the pending CONNECT with Status 0 and establish the link.

        A 3.0 server also speaks 2.0 to a client that asks for it. A 2.0 server
        asked for 3.0 answers Status 4 (version too high), as the spec has it,
        and the session closes.
        """
        if self._login is not None and self._login[0].version >= 0x30 and self.config.version is Version.V20:
            self.reject_login(4, now)
            return
        connect, seq = self._take_login()
        self.version = Version.V30 if connect.version >= 0x30 else Version.V20
        width = 4 if self.version is Version.V30 else 1
        auth = authenticator_ismg(0, connect.authenticator, secret, status_width=width)
        self._unanswered.pop(seq, None)
        self._out.append(encode_pdu(ConnectResp(0, auth, int(self.config.version)), seq, self.version))
        self._set_state(_EST)
        self._login_deadline = None
        self._last_rx = now
        self._events.append(LinkEstablished(int(self.version)))

    def reject_login(self, status: int, now: float) -> None:
        """(Server) answer the pending CONNECT with a non-zero Status and close."""
        if status == 0:
            raise CmppLocalError("reject_login needs a non-zero status")
        _, seq = self._take_login()
        self._unanswered.pop(seq, None)
        self._out.append(encode_pdu(ConnectResp(status, bytes(16), int(self.config.version)), seq, self.version))
        self._finish(now, f"login rejected with status {status} ({connect_status_text(status)})", by_peer=False)

    def terminate(self, now: float) -> None:
        """Send TERMINATE: queued requests fail as not sent; answers to outstanding ones are still taken."""
        self._check_not_failed()
        if self._state in (State.CLOSING, State.CLOSED):
            return
        if self._state is not _EST:
            self._finish(now, "closed before login completed", by_peer=False)
            return
        self._fail_queued()
        self._set_state(State.CLOSING)
        req = _Request(0, Terminate(), b"", False)
        self._write_request(req, now)

    def receive_data(self, data: bytes, now: float) -> None:
        """Take bytes from the peer; b"" means the connection ended (EOF).

        Raises:
            CmppLocalError: the session already failed.
        """
        self._check_not_failed()
        if not data:
            self.connection_lost(now, "connection closed by peer")
            return
        if self._state is State.CLOSED:
            return
        self._last_rx = now
        frames = self._frames
        frames.feed(data)
        good, error = frames.frames_until_error()
        handlers = self._handlers
        for command_id, seq, body in good:
            handler = handlers.get(command_id)
            try:
                if handler is None:
                    raise CmppLocalError(f"unknown Command_Id 0x{command_id:08x} (seq {seq})", status=2)
                handler(seq, body, now)
            except CmppLocalError as exc:
                error = CmppRemoteError(exc.msg, exc.status)
                break
            if self.closed:
                break
        if error is not None:
            self._fail(error, now)
        elif self._queue and self._state is _EST:
            self._flush(now)

    def connection_lost(self, now: float, reason: str) -> None:
        """The transport is gone: everything outstanding fails (LINK_CLOSED), everything queued as NOT_SENT."""
        if self._state is State.ERROR or self._state is State.CLOSED:
            return
        if self._state is State.LOGGING_IN and self.role is Role.CLIENT:
            reason = f"{reason} before the CONNECT was answered"
        self._finish(now, reason, by_peer=True)

    def next_event(self) -> Event | None:
        """The next event, or None when drained.

        Raises:
            CmppRemoteError: once, where the peer broke the protocol; the
                events that follow it report what that closed.
        """
        if not self._events:
            return None
        event = self._events.popleft()
        if isinstance(event, CmppRemoteError):
            raise event
        return event

    def data_to_send(self) -> bytes:
        """Bytes the owner must write to the transport now."""
        if not self._out:
            return b""
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        return data

    def get_timer(self) -> float | None:
        """The earliest time `handle_timer` has work to do, or None."""
        state = self._state
        if state is State.CLOSED or state is State.ERROR:
            return None
        if self._login_deadline is not None:
            return self._login_deadline
        deadlines = []
        if self._outstanding:
            deadlines.append(next(iter(self._outstanding.values())).deadline)
        if state is _EST:
            if self._active_test is None:
                deadlines.append(self._last_rx + self.config.active_test_interval)
            if self._queue and self._in_window < self.config.window:
                deadlines.append(self._queue_ready_at())
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run what is due: login timeout, response timeouts and resends, ACTIVE_TEST, queued sends."""
        if self._state is State.CLOSED or self._state is State.ERROR:
            return
        if self._login_deadline is not None and now >= self._login_deadline:
            self._finish(now, f"no login within {self.config.response_timeout:g}s", by_peer=False)
            return
        self._expire(now)
        if self._state is not _EST:
            return
        if self._active_test is None and now >= self._last_rx + self.config.active_test_interval:
            self._active_test = _Request(0, ActiveTest(), b"", False)
            self._write_request(self._active_test, now)
        if self._queue:
            self._flush(now)

    # --- sending ---------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq + 1
        if seq > 0xFFFFFFFF:
            seq = 1
        self._seq = seq
        return seq

    def _write_request(self, req: _Request, now: float) -> None:
        """Put a control request (ACTIVE_TEST, TERMINATE) on the wire with a fresh number."""
        seq = self._next_seq()
        req.data = encode_pdu(req.pdu, seq, self.version)
        req.deadline = now + self.config.response_timeout
        req.attempts += 1
        self._outstanding[seq] = req
        self._out.append(req.data)

    def _queue_ready_at(self) -> float:
        """When the head of the queue may go out, as far as rate and flow control go."""
        ready = self._pause_until
        if self.config.rate_limit is not None and self._tokens < 1.0:
            ready = max(ready, self._tokens_at + (1.0 - self._tokens) / self.config.rate_limit)
        return ready

    def _flush(self, now: float) -> None:
        """Move queued requests onto the wire while window, rate and flow control allow."""
        if now < self._pause_until:
            return
        queue, outstanding = self._queue, self._outstanding
        window, timeout = self.config.window, self.config.response_timeout
        rate = self.config.rate_limit
        if rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
        out = self._out
        while queue and self._in_window < window:
            if rate is not None:
                if self._tokens < 1.0 - _TOKEN_SLACK:
                    return
                self._tokens -= 1.0
            req = queue.popleft()
            req.deadline = now + timeout
            req.attempts += 1
            seq = int.from_bytes(req.data[8:12], "big")
            outstanding[seq] = req
            self._in_window += 1
            out.append(req.data)

    def _requeue_front(self, req: _Request) -> None:
        """Result 8: the same request goes out again first, under a new sequence id."""
        seq = self._next_seq()
        req.data = req.data[:8] + seq.to_bytes(4, "big") + req.data[12:]
        req.attempts = 0
        self._queue.appendleft(req)

    # --- timers ----------------------------------------------------------

    def _expire(self, now: float) -> None:
        outstanding = self._outstanding
        while outstanding:
            seq, req = next(iter(outstanding.items()))
            if req.deadline > now:
                return
            del outstanding[seq]
            resend = self.config.resend_on_timeout if req.windowed else not isinstance(req.pdu, Terminate)
            if req.attempts < self.config.attempts and resend:
                # Same bytes, same sequence id: a retransmission, not a new request.
                req.deadline = now + self.config.response_timeout
                req.attempts += 1
                outstanding[seq] = req
                self._out.append(req.data)
                continue
            self._give_up(seq, req, now)
            if self._state is not _EST and self._state is not _CLOSING:
                return

    def _give_up(self, seq: int, req: _Request, now: float) -> None:
        pdu = req.pdu
        if isinstance(pdu, ActiveTest):
            self._finish(now, f"link dead: {req.attempts} ACTIVE_TESTs unanswered", by_peer=False)
            return
        if isinstance(pdu, Terminate):
            self._finish(now, "TERMINATE not answered in time; closed anyway", by_peer=False)
            return
        self._in_window -= 1
        self._remember_timed_out(seq, req.key)
        self._events.append(self._failure(req, FailReason.TIMEOUT))

    def _remember_timed_out(self, seq: int, key: int) -> None:
        self._timed_out[seq] = key
        if len(self._timed_out) > 4096:
            del self._timed_out[next(iter(self._timed_out))]

    # --- receiving ---------------------------------------------------------

    def _transition(self, command_id: int) -> State:
        to = self._allowed.get(command_id)
        if to is None:
            name = CommandId(command_id).name
            raise CmppLocalError(f"can't handle {name} in {self._state.name} ({self.role.value} role)", status=2)
        return to

    def _take_response(self, seq: int, body: bytes, expected: type[Pdu]) -> tuple[_Request | None, Pdu]:
        """Pop the request `seq` answers and decode the answer; late answers become events."""
        pdu = expected.decode_body(body, self.version)
        req = self._outstanding.pop(seq, None)
        if req is None:
            key = self._timed_out.pop(seq, seq)
            self._events.append(LateResponse(key, pdu))
            return None, pdu
        if req.pdu.command | 0x80000000 != expected.command:
            raise CmppLocalError(f"{expected.command.name} with seq {seq} answers a {req.pdu.command.name}", status=2)
        if req.windowed:
            self._in_window -= 1
        return req, pdu

    def _on_submit_resp(self, seq: int, body: bytes, now: float) -> None:
        if self.role is not Role.CLIENT or (self._state is not _EST and self._state is not _CLOSING):
            self._transition(_I.SUBMIT_RESP)
        req, resp = self._take_response(seq, body, SubmitResp)
        if req is None:
            return
        assert isinstance(resp, SubmitResp)
        if resp.result == 0:
            self._pause = self.config.flow_control_pause
            self._events.append(SubmitAccepted(req.key, resp.msg_id))
        elif resp.result == RESULT_FLOW_CONTROL and self._state is _EST:
            req.flow_retries += 1
            if req.flow_retries > self.config.flow_control_retries:
                self._events.append(SubmitFailed(req.key, FailReason.FLOW_CONTROLLED, resp.result))
                return
            if now >= self._pause_until:
                # A new episode: pause, and pause longer if the next one follows.
                # Result 8 for the rest of the window answers the same episode.
                self._pause_until = now + self._pause
                self._pause = min(self._pause * 2, self.config.flow_control_pause_max)
            self._requeue_front(req)
        else:
            self._events.append(SubmitFailed(req.key, FailReason.REJECTED, resp.result))

    def _on_deliver(self, seq: int, body: bytes, now: float) -> None:
        if self._state is not _EST or self.role is not Role.CLIENT:
            self._transition(_I.DELIVER)
        self._unanswered[seq] = _I.DELIVER
        try:
            deliver = Deliver.decode_body(body, self.version)
            report = StatusReport.decode(deliver.msg_content) if deliver.registered_delivery == 1 else None
        except CmppLocalError as exc:
            self._reject_request(seq, body, DeliverResp, exc)
            return
        if report is not None:
            self._events.append(ReportReceived(seq, deliver.msg_id, report, deliver))
        else:
            self._events.append(MoReceived(seq, deliver))

    def _on_submit(self, seq: int, body: bytes, now: float) -> None:
        if self._state is not _EST or self.role is not Role.SERVER:
            self._transition(_I.SUBMIT)
        self._unanswered[seq] = _I.SUBMIT
        try:
            submit = Submit.decode_body(body, self.version)
        except CmppLocalError as exc:
            self._reject_request(seq, body, SubmitResp, exc)
            return
        self._events.append(SubmitReceived(seq, submit))

    def _reject_request(self, seq: int, body: bytes, resp: type[SubmitResp] | type[DeliverResp],
                        exc: CmppLocalError) -> None:
        """A request whose body is malformed: answer it with an error result; the link goes on."""
        result = exc.status or 1
        msg_id = int.from_bytes(body[:8], "big") if len(body) >= 8 else 0
        self.respond(seq, resp(msg_id if resp is DeliverResp else 0, result))
        self._events.append(MalformedRequest(seq, resp.command & 0x7FFFFFFF, result, exc.msg))

    def _on_deliver_resp(self, seq: int, body: bytes, now: float) -> None:
        self._transition(_I.DELIVER_RESP)
        req, resp = self._take_response(seq, body, DeliverResp)
        if req is not None:
            assert isinstance(resp, DeliverResp)
            self._events.append(DeliverAcknowledged(req.key, resp.result))

    def _on_request(self, command_id: int) -> Callable[[int, bytes, float], None]:
        """A handler for QUERY / CANCEL from the peer: the owner answers with `respond`."""
        def handle(seq: int, body: bytes, now: float) -> None:
            self._transition(command_id)
            pdu = decode_body(command_id, body, self.version)
            self._unanswered[seq] = command_id
            self._events.append(RequestReceived(seq, pdu))
        return handle

    def _on_response(self, resp: type[QueryResp] | type[CancelResp]) -> Callable[[int, bytes, float], None]:
        """A handler for QUERY_RESP / CANCEL_RESP."""
        def handle(seq: int, body: bytes, now: float) -> None:
            self._transition(resp.command)
            req, pdu = self._take_response(seq, body, resp)
            if req is not None:
                self._events.append(ResponseReceived(req.key, pdu))
        return handle

    def _on_active_test(self, seq: int, body: bytes, now: float) -> None:
        self._transition(_I.ACTIVE_TEST)
        ActiveTest.decode_body(body, self.version)
        self._out.append(encode_pdu(ActiveTestResp(), seq, self.version))

    def _on_active_test_resp(self, seq: int, body: bytes, now: float) -> None:
        self._transition(_I.ACTIVE_TEST_RESP)
        req, _ = self._take_response(seq, body, ActiveTestResp)
        if req is not None and req is self._active_test:
            self._active_test = None

    def _on_terminate(self, seq: int, body: bytes, now: float) -> None:
        self._transition(_I.TERMINATE)
        Terminate.decode_body(body, self.version)
        self._out.append(encode_pdu(TerminateResp(), seq, self.version))
        self._finish(now, "TERMINATE from peer", by_peer=True)

    def _on_terminate_resp(self, seq: int, body: bytes, now: float) -> None:
        self._transition(_I.TERMINATE_RESP)
        self._take_response(seq, body, TerminateResp)
        self._finish(now, "terminated", by_peer=False)

    def _on_connect(self, seq: int, body: bytes, now: float) -> None:
        self._set_state(self._transition(_I.CONNECT))
        connect = Connect.decode_body(body, self.version)
        self._unanswered[seq] = _I.CONNECT
        self._login = (connect, seq)
        self._events.append(LoginRequested(connect.source_addr, connect.authenticator,
                                           connect.version, connect.timestamp))

    def _on_connect_resp(self, seq: int, body: bytes, now: float) -> None:
        next_state = self._transition(_I.CONNECT_RESP)
        resp = ConnectResp.decode_body(body, self.version)
        self._login_deadline = None
        if resp.status != 0:
            reason = connect_status_text(resp.status)
            self._events.append(LoginRejected(resp.status, reason))
            self._finish(now, f"login rejected with status {resp.status} ({reason})", by_peer=True)
            return
        ok = verify_authenticator_ismg(resp.authenticator, 0, self._auth_source, self.config.secret)
        if resp.version in (0x20, 0x21) and self.version is Version.V30:
            # The ISMG took the login but speaks 2.0 (its highest version): so do we.
            self.version = Version.V20
        self._set_state(next_state)
        self._events.append(LinkEstablished(int(self.version), ok))

    def _take_login(self) -> tuple[Connect, int]:
        if self._state is not State.LOGGING_IN or self._login is None:
            raise CmppLocalError(f"no CONNECT is waiting for an answer in {self._state.name}")
        login, self._login = self._login, None
        return login

    # --- ending --------------------------------------------------------------

    def _failure(self, req: _Request, reason: FailReason) -> Event:
        pdu = req.pdu
        if isinstance(pdu, Submit):
            return SubmitFailed(req.key, reason)
        if isinstance(pdu, Deliver):
            return DeliverAcknowledged(req.key, None)
        return ResponseReceived(req.key, None)

    def _fail_queued(self) -> None:
        while self._queue:
            self._events.append(self._failure(self._queue.popleft(), FailReason.NOT_SENT))

    def _finish(self, now: float, reason: str, *, by_peer: bool) -> None:
        """Close: every request still ours ends with an event, then LinkClosed."""
        for req in self._outstanding.values():
            if req.windowed:
                self._events.append(self._failure(req, FailReason.LINK_CLOSED))
        self._outstanding.clear()
        self._in_window = 0
        self._fail_queued()
        self._active_test = None
        self._login_deadline = None
        if self._state is not State.ERROR:
            self._set_state(State.CLOSED)
        self._events.append(LinkClosed(reason, by_peer))

    def _fail(self, error: CmppRemoteError, now: float) -> None:
        self._events.append(error)
        self._finish(now, f"protocol error: {error.msg}", by_peer=True)
        self._set_state(State.ERROR)

    def _set_state(self, state: State) -> None:
        self._state = state
        self._allowed = _ALLOWED[(self.role, state)]

    def _check_not_failed(self) -> None:
        if self._state is State.ERROR:
            raise CmppLocalError("the session failed on a protocol error; open a new one")
