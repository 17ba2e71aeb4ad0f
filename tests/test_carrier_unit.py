"""CarrierLink and CmppProtocol with fake transports and a fake clock.

The ISMG side is our own `Session` in the server role (a real peer, not a mock);
bytes move between it and the link's protocols by hand, so races that loopback
timing hides can be staged exactly.
"""

from __future__ import annotations

import datetime
from typing import Any

from twisted.internet import defer
from twisted.internet import tcp
from twisted.internet.interfaces import IStreamClientEndpoint, ITCPTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from smsgw._cmpp_protocol import CmppProtocol
from smsgw.carrier import (
    CarrierLink,
    LinkConfig,
    LinkReport,
    MoMessage,
    MoPart,
    OutboundMessage,
    SubmitResult,
    _LinkFactory,
    part_set_id,
)
from smsgw.protocol.cmpp import (
    ActiveTest,
    CommandId,
    Deliver,
    FrameBuffer,
    LoginRequested,
    Role,
    Session,
    SessionConfig,
    StatusReport,
    SubmitReceived,
    SubmitResp,
    Version,
    decode_body,
)

SP_ID, SECRET = "901234", "abc123"


@implementer(ITCPTransport)
class TcpStringTransport(StringTransport):
    """A StringTransport that records the TCP socket options set on it."""

    nodelay = False
    keepalive = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def getTcpNoDelay(self) -> bool:
        return self.nodelay

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.keepalive = enabled

    def getTcpKeepAlive(self) -> bool:
        return self.keepalive

    def loseWriteConnection(self) -> None:
        self.loseConnection()

    def abortConnection(self) -> None:
        self.loseConnection()

    def getHandle(self) -> None:
        return None


@implementer(IStreamClientEndpoint)
class NeverConnects:
    """An endpoint whose connection attempts never complete (tests attach protocols by hand)."""

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        return defer.Deferred()


class Peer:
    """One server-side Session wired by hand to one of the link's protocols."""

    def __init__(self, proto: CmppProtocol, transport: StringTransport, clock: Clock) -> None:
        self.proto, self.transport, self.clock = proto, transport, clock
        self.server = Session(SessionConfig(Role.SERVER))
        self.server.start(clock.seconds())
        self.events: list[Any] = []

    def read_from_link(self) -> None:
        self.clock.advance(0)  # run the link's end-of-turn write
        data = self.transport.value()
        self.transport.clear()
        if data:
            self.server.receive_data(data, self.clock.seconds())
        while (event := self.server.next_event()) is not None:
            self.events.append(event)

    def write_to_link(self) -> None:
        data = self.server.data_to_send()
        if data:
            self.proto.dataReceived(data)

    def login(self) -> None:
        self.read_from_link()
        assert isinstance(self.events[-1], LoginRequested)
        assert self.server.check_login(SECRET)
        self.server.accept_login(SECRET, self.clock.seconds())
        self.server.next_event()
        self.write_to_link()


def commands_in(data: bytes) -> list[int]:
    buf = FrameBuffer()
    buf.feed(data)
    return [cmd for cmd, _, _ in buf.frames()]


def make_link(clock: Clock, connections: int = 2, **overrides: Any) -> tuple[CarrierLink, list[Any]]:
    log: list[Any] = []

    def on_report(report: LinkReport) -> None:
        log.append(("report", report.msg_id))

    def on_mo(mo: MoMessage) -> None:
        log.append(("mo", mo.text))

    config = LinkConfig("unit", "127.0.0.1", 7890, SP_ID, SECRET, "10690001", connections=connections, **overrides)
    link = CarrierLink(config, clock, on_report=on_report, on_mo=on_mo, endpoint=NeverConnects())
    link.startService()
    return link, log


def attach(link: CarrierLink, clock: Clock, index: int) -> Peer:
    proto = _LinkFactory(link, index).buildProtocol(None)
    transport = TcpStringTransport()
    proto.makeConnection(transport)
    peer = Peer(proto, transport, clock)
    peer.login()
    return peer


def report_deliver(msg_id: int) -> Deliver:
    content = StatusReport(msg_id, "DELIVRD", "2403050809", "2403050810", "13800138000", 1).encode(Version.V30)
    return Deliver(99, "10690001", "13800138000", content, 0, 1)


def test_report_before_its_submit_resp_is_held_until_the_msg_id_is_known() -> None:
    """A report that beats its SUBMIT_RESP (other connection) reaches the owner after the submit result."""
    clock = Clock()
    link, log = make_link(clock)
    a, b = attach(link, clock, 0), attach(link, clock, 1)
    assert link.live_connections == 2
    d = link.submit(OutboundMessage(("13800138000",), "race"))
    d.addCallback(lambda r: log.append(("submitted", r.segments[0].msg_id)))
    a.read_from_link()
    b.read_from_link()
    submitted = [p for p in (a, b) if any(isinstance(e, SubmitReceived) for e in p.events)]
    assert len(submitted) == 1
    carrier, other = (a, b) if submitted[0] is a else (b, a)
    msg_id = 0x32A0928003E90001
    # The report arrives first, on the other connection.
    other.server.send(report_deliver(msg_id), clock.seconds())
    other.write_to_link()
    assert log == []
    assert CommandId.DELIVER_RESP not in commands_in(other.transport.value())
    # Now the SUBMIT_RESP: the submitter hears first, then the report owner.
    event = next(e for e in carrier.events if isinstance(e, SubmitReceived))
    carrier.server.respond(event.seq, SubmitResp(msg_id, 0))
    carrier.write_to_link()
    assert log == [("submitted", msg_id), ("report", msg_id)]
    assert CommandId.DELIVER_RESP in commands_in(other.transport.value())


def test_unmatched_held_report_is_released_after_report_hold() -> None:
    """A report matching no submit is still handed over once report_hold passes."""
    clock = Clock()
    link, log = make_link(clock, report_hold=2.0)
    a, b = attach(link, clock, 0), attach(link, clock, 1)
    link.submit(OutboundMessage(("13800138000",), "pending forever"))
    b.server.send(report_deliver(12345), clock.seconds())
    a.server.send(report_deliver(12345), clock.seconds())
    b.write_to_link()
    assert log == []
    clock.advance(2.5)
    assert log == [("report", 12345)]


def test_report_with_nothing_in_flight_passes_straight_through() -> None:
    """With no submit awaiting an answer there is no race: the report goes to the owner at once."""
    clock = Clock()
    link, log = make_link(clock, connections=1)
    a = attach(link, clock, 0)
    a.server.send(report_deliver(777), clock.seconds())
    a.write_to_link()
    assert log == [("report", 777)]


def test_deliver_is_acknowledged_only_after_the_callbacks_deferred_fires() -> None:
    """A callback returning a Deferred delays the DELIVER_RESP until it fires."""
    clock = Clock()
    pending: list[defer.Deferred[None]] = []

    def on_report(report: LinkReport) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        pending.append(d)
        return d

    config = LinkConfig("unit", "127.0.0.1", 7890, SP_ID, SECRET, "10690001")
    link = CarrierLink(config, clock, on_report=on_report, on_mo=lambda mo: None, endpoint=NeverConnects())
    link.startService()
    a = attach(link, clock, 0)
    a.transport.clear()
    a.server.send(report_deliver(5), clock.seconds())
    a.write_to_link()
    assert len(pending) == 1
    assert CommandId.DELIVER_RESP not in commands_in(a.transport.value())
    pending[0].callback(None)
    assert commands_in(a.transport.value()) == [CommandId.DELIVER_RESP]


def test_connection_sets_tcp_nodelay_and_keepalive() -> None:
    """Every carrier connection disables Nagle and enables TCP keepalive."""
    clock = Clock()
    link, _ = make_link(clock, connections=1)
    a = attach(link, clock, 0)
    assert isinstance(a.transport, TcpStringTransport)
    assert a.transport.nodelay and a.transport.keepalive


def test_active_test_sent_after_idle_interval() -> None:
    """An idle established link sends ACTIVE_TEST once the interval passes, from one armed timer."""
    clock = Clock()
    link, _ = make_link(clock, connections=1, active_test_interval=30.0)
    a = attach(link, clock, 0)
    a.transport.clear()
    assert len([c for c in clock.getDelayedCalls() if getattr(c, 'func', None) == a.proto._on_timer]) == 1
    clock.advance(30.0)
    frames = FrameBuffer()
    frames.feed(a.transport.value())
    assert [decode_body(cmd, body, Version.V30) for cmd, _, body in frames.frames()] == [ActiveTest()]


def test_one_timer_covers_many_outstanding_submits() -> None:
    """Sixteen unanswered submits keep exactly one DelayedCall armed for the connection."""
    clock = Clock()
    link, _ = make_link(clock, connections=1)
    a = attach(link, clock, 0)
    for i in range(16):
        link.submit(OutboundMessage(("13800138000",), f"m{i}"))
    clock.advance(0)
    assert len([c for c in clock.getDelayedCalls() if getattr(c, 'func', None) == a.proto._on_timer]) == 1


def test_connection_lost_leaves_no_timer_behind() -> None:
    """Once the connection is gone the protocol cancels its timer."""
    clock = Clock()
    link, _ = make_link(clock, connections=1)
    a = attach(link, clock, 0)
    a.proto.connectionLost()
    assert [c for c in clock.getDelayedCalls() if getattr(c, 'func', None) == a.proto._on_timer] == []
    assert link.live_connections == 0


def test_submit_result_carries_every_recipient_of_a_group_send() -> None:
    """A group SUBMIT's single Msg_Id expands to one consecutive id per recipient."""
    clock = Clock()
    link, _ = make_link(clock, connections=1)
    a = attach(link, clock, 0)
    results: list[SubmitResult] = []
    link.submit(OutboundMessage(("13800138000", "13900139000", "13700137000"), "group")).addCallback(results.append)
    a.read_from_link()
    event = next(e for e in a.events if isinstance(e, SubmitReceived))
    assert event.submit.dest_terminal_ids == ("13800138000", "13900139000", "13700137000")
    a.server.respond(event.seq, SubmitResp(0x32A0928003E9FFFF, 0))
    a.write_to_link()
    ids = [s.msg_id for s in results[0].segments]
    # The sequence field wraps without carrying into the gateway bits (notes §9.3).
    assert ids == [0x32A0928003E9FFFF, 0x32A0928003E90000, 0x32A0928003E90001]


def test_wallclock_goes_into_connect_timestamp() -> None:
    """The CONNECT carries the reactor clock's local time as MMDDHHMMSS."""
    clock = Clock()
    stamp = datetime.datetime(2024, 3, 5, 8, 9, 10).timestamp()
    clock.advance(stamp)
    link, _ = make_link(clock, connections=1)
    proto = _LinkFactory(link, 0).buildProtocol(None)
    transport = TcpStringTransport()
    proto.makeConnection(transport)
    frames = FrameBuffer()
    frames.feed(transport.value())
    (cmd, _, body), = frames.frames()
    connect = decode_body(cmd, body, Version.V30)
    assert getattr(connect, "timestamp") == 305080910


def long_mo_part(reference: int, number: int, total: int, text: str) -> Deliver:
    udh = bytes([5, 0, 3, reference, total, number])
    return Deliver(77, "10690001", "13800138000", udh + text.encode("utf-16-be"), 8, 0, tp_udhi=1)


def test_long_mo_parts_are_acknowledged_after_the_owner_keeps_them() -> None:
    """With on_mo_part, each part's DELIVER_RESP waits for the owner; kept parts restore after a restart."""
    clock = Clock()
    kept: list[defer.Deferred[None]] = []
    parts: list[MoPart] = []
    messages: list[MoMessage] = []

    def on_mo_part(part: MoPart) -> defer.Deferred[None]:
        parts.append(part)
        d: defer.Deferred[None] = defer.Deferred()
        kept.append(d)
        return d

    config = LinkConfig("unit", "127.0.0.1", 7890, SP_ID, SECRET, "10690001")
    link = CarrierLink(config, clock, on_report=lambda r: None, on_mo=messages.append, on_mo_part=on_mo_part,
                       endpoint=NeverConnects())
    link.startService()
    a = attach(link, clock, 0)
    a.transport.clear()
    a.server.send(long_mo_part(7, 1, 2, "您好"), clock.seconds())
    a.write_to_link()
    assert CommandId.DELIVER_RESP not in commands_in(a.transport.value())
    kept[0].callback(None)
    assert commands_in(a.transport.value()) == [CommandId.DELIVER_RESP]
    # A new link (after a restart) gets part 1 back from the owner, then part 2 arrives.
    fresh: list[MoMessage] = []
    again = CarrierLink(config, clock, on_report=lambda r: None, on_mo=fresh.append, on_mo_part=lambda p: None,
                        endpoint=NeverConnects())
    again.restore_mo_part(parts[0])
    again.startService()
    b = attach(again, clock, 0)
    b.server.send(long_mo_part(7, 2, 2, "世界"), clock.seconds())
    b.write_to_link()
    assert [(m.text, m.parts, m.complete) for m in fresh] == [("您好世界", 2, True)]
    assert fresh[0].part_set == parts[0].part_set == part_set_id(parts[0].key, False, 7, 2)
    assert MoPart.kept("unit", parts[0].part_set, 1, parts[0].payload, 8, parts[0].received_at) == parts[0]
    assert messages == []
    link.stopService()
    again.stopService()


def _answer_submits(peer: Peer, first_id: int) -> int:
    """The ISMG side answers every SUBMIT it has read so far; returns how many."""
    events = [e for e in peer.events if isinstance(e, SubmitReceived)]
    peer.events.clear()
    for i, event in enumerate(events):
        peer.server.respond(event.seq, SubmitResp(first_id + i, 0))
    return len(events)


def test_a_second_window_waits_encoded_and_leaves_as_the_responses_are_read() -> None:
    """Past a full window, one more window's worth waits in the session; the read that frees
    the window writes those at once, before the submit Deferreds fire."""
    clock = Clock()
    link, _ = make_link(clock, connections=1, window=4)
    a = attach(link, clock, 0)
    a.transport.clear()
    fired: list[tuple[int, int]] = []  # (message, SUBMITs written by then)

    def note(_: SubmitResult, i: int) -> None:
        fired.append((i, len(commands_in(a.transport.value()))))

    for i in range(10):
        link.submit(OutboundMessage(("13800138000",), f"m{i}")).addCallback(note, i)
    a.read_from_link()
    assert a.proto.session.in_flight == 4 and a.proto.session.queued == 4
    assert link.pending == 6  # four queued in the session, two waiting in the link
    assert _answer_submits(a, 100) == 4
    a.write_to_link()  # no clock advance: everything below happened inside dataReceived
    assert commands_in(a.transport.value()) == [CommandId.SUBMIT] * 4
    assert [i for i, _ in fired] == [0, 1, 2, 3]
    assert {written for _, written in fired} == {4}  # the next window left before any callback ran
    assert a.proto.session.in_flight == 4 and a.proto.session.queued == 2 and link.pending == 2


def test_submits_queued_in_a_closing_session_go_out_on_another_in_their_order() -> None:
    """A connection that drops with submits queued in its session hands them back; they
    leave on the other connection in the order they were submitted, none lost, none twice."""
    clock = Clock()
    link, _ = make_link(clock, connections=2, window=2)
    a, b = attach(link, clock, 0), attach(link, clock, 1)
    results: dict[int, str] = {}

    def keep(outcome: Any, i: int) -> None:
        results[i] = "ok" if isinstance(outcome, SubmitResult) else outcome.type.__name__

    for i in range(8):  # each goes to the least loaded connection: a, b, a, b, ...
        link.submit(OutboundMessage(("13800138000",), f"m{i}")).addBoth(keep, i)
    a.read_from_link()
    b.read_from_link()

    def sent(peer: Peer) -> list[str]:
        return [e.submit.msg_content.decode() for e in peer.events if isinstance(e, SubmitReceived)]

    assert (sent(a), sent(b)) == (["m0", "m2"], ["m1", "m3"])
    assert a.proto.session.queued == 2 and b.proto.session.queued == 2  # m4, m6 on a; m5, m7 on b
    a.proto.connectionLost()  # m0 and m2 were on the wire: unknown; m4 and m6 never left
    assert results == {0: "LinkDown", 2: "LinkDown"}
    assert link.live_connections == 1 and link.pending == 4
    on_b: list[str] = []
    for round_ in range(3):
        _answer_submits(b, 200 + 10 * round_)
        b.write_to_link()
        b.read_from_link()
        on_b += sent(b)
    assert on_b == ["m5", "m7", "m4", "m6"]  # b's own queue, then a's, in submit order
    _answer_submits(b, 300)
    b.write_to_link()
    assert results == {0: "LinkDown", 2: "LinkDown", **{i: "ok" for i in (1, 3, 4, 5, 6, 7)}}
    assert link.pending == 0


class _TcpConnection(tcp.Connection):
    """A Twisted TCP connection without a socket: writeSomeData takes what the test allows."""

    def __init__(self, takes: list[int]) -> None:  # no super().__init__: no socket, no reactor
        self.connected, self.disconnecting, self.TLS = 1, False, False
        self.dataBuffer, self.offset, self._tempDataBuffer, self._tempDataLen = b"", 0, [], 0
        self.takes = takes
        self.sent: list[bytes] = []
        self.buffered: list[bytes] = []

    def writeSomeData(self, data: bytes) -> int:
        n = min(self.takes.pop(0), len(data))
        self.sent.append(bytes(data[:n]))
        return n

    def write(self, data: bytes) -> None:
        self.buffered.append(bytes(data))
        self._tempDataLen += len(data)


def test_writes_go_straight_to_the_socket_unless_twisted_holds_bytes() -> None:
    """Bytes are sent at once while Twisted's buffer is empty; what the socket does not take,
    and everything after it until that buffer drains, goes through transport.write in order."""
    conn = _TcpConnection(takes=[10, 3])
    proto = CmppProtocol(Session(SessionConfig(Role.CLIENT, sp_id=SP_ID, secret=SECRET)), Clock(), None)  # type: ignore[arg-type]
    proto.transport, proto._direct = conn, conn
    proto._write(b"0123456789")  # all taken
    assert (conn.sent, conn.buffered) == ([b"0123456789"], [])
    proto._write(b"abcdef")  # three taken, the rest buffered
    assert (conn.sent[-1], conn.buffered) == (b"abc", [b"def"])
    proto._write(b"ghi")  # Twisted holds bytes: behind them, never around them
    assert conn.buffered == [b"def", b"ghi"] and len(conn.sent) == 2

