"""An ISMG simulator: a CMPP server built on the same `Session`, in the server role.

It verifies logins, answers SUBMIT with real Msg_Ids, sends a status report per
segment and recipient when one is requested, injects MO messages (long ones
too), answers Result 8 above a submit rate, and can drop connections to
exercise reconnects. `GET /stats` on the stats port returns its counters.
Tests, benchmarks and `make run` all use it.
"""

from __future__ import annotations

import datetime
import json
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import structlog
import yaml
from twisted.application.service import MultiService
from twisted.internet.defer import gatherResults
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from smsgw._cmpp_protocol import CmppProtocol
from smsgw.protocol.cmpp import (
    CmppError,
    Deliver,
    DeliverAcknowledged,
    Event,
    LinkClosed,
    LinkEstablished,
    LoginRequested,
    MalformedRequest,
    MsgIdGenerator,
    RequestReceived,
    Role,
    Session,
    SessionConfig,
    StatusReport,
    Submit,
    SubmitReceived,
    SubmitResp,
    Version,
    msg_id_range,
    split_text,
)
from smsgw.protocol.cmpp import MSG_FMT_ASCII, MSG_FMT_UCS2, CancelResp, Query, QueryResp

log = structlog.get_logger("smsgw.simulator")

#: Failure Stat codes a real ISMG sends, drawn from when --fail-ratio hits.
FAIL_STATS = ("UNDELIV", "EXPIRED", "REJECTD", "MK:0001", "MI:0013", "MB:0008", "DB:0008", "IC:0015")

_MO_TEXTS = (
    "TD", "1", "查询", "收到，谢谢", "请问办理进度如何？",
    "您好，我想咨询一下关于个人所得税年度汇算的问题：去年有两份工资收入，其中一份已经预扣预缴，"
    "另一份没有，请问汇算时需要补税吗？如果需要，应该在什么时间之前完成申报？谢谢！",
)


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulated ISMG behaves. Accounts map SP_Id to shared secret."""

    accounts: dict[str, str] = field(default_factory=dict)
    version: Version = Version.V30
    report_delay: float = 0.5
    fail_ratio: float = 0.0
    mo_rate: float = 0.0  # MO messages per second, spread over logged-in connections
    mo_long_ratio: float = 0.2
    mo_dest: str = "10690001"
    flow_limit: float | None = None  # submits/s (all connections) above which Result 8 is answered
    drop_every: int = 0  # close a connection (no TERMINATE) after every N submits on it
    gateway: int = 1001
    window: int = 16
    response_timeout: float = 60.0
    active_test_interval: float = 180.0
    seed: int | None = None


def load_accounts(path: str) -> dict[str, str]:
    """Read `{sp_id: secret}` pairs from a YAML file (a mapping, or a list of {sp_id, secret}).

    Raises:
        ValueError: the file is not one of those shapes, saying which entry is wrong.
    """
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if isinstance(data, dict) and "accounts" in data:
        data = data["accounts"]
    if isinstance(data, dict):
        return {_text(path, "sp_id", k): _text(path, f"secret of {k}", v) for k, v in data.items()}
    if isinstance(data, list):
        out = {}
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "sp_id" not in item or "secret" not in item:
                raise ValueError(f"{path}: accounts[{i}] needs sp_id and secret, got {item!r}")
            out[_text(path, f"accounts[{i}].sp_id", item["sp_id"])] = _text(path, f"accounts[{i}].secret", item["secret"])
        return out
    raise ValueError(f"{path}: expected a mapping of sp_id: secret or a list of {{sp_id, secret}}")


def _text(path: str, what: str, value: object) -> str:
    """YAML reads 001234 as the number 668: insist on quoted strings for ids and secrets."""
    if isinstance(value, str):
        return value
    raise ValueError(f"{path}: {what} is {value!r} ({type(value).__name__}); quote it, e.g. \"001234\"")


@dataclass(slots=True)
class Stats:
    """Counters served as JSON on GET /stats."""

    logins: int = 0
    login_failures: int = 0
    connections: int = 0  # logged in now
    connections_total: int = 0
    submits: int = 0
    segments: int = 0
    flow_rejects: int = 0
    reports_sent: int = 0
    reports_acked: int = 0
    mo_sent: int = 0
    drops: int = 0
    malformed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Conn:
    """Per-connection state the simulator keeps beside the session."""

    __slots__ = ("proto", "sp_id", "logged_in", "submits", "src_id", "reports")

    def __init__(self, proto: CmppProtocol) -> None:
        self.proto = proto
        self.sp_id = ""
        self.logged_in = False
        self.submits = 0
        self.src_id = ""
        self.reports: dict[int, Deliver] = {}  # session key -> report DELIVER awaiting its answer


class IsmgSimulator(MultiService):
    """The simulated ISMG: owner of every server-side CmppProtocol."""

    def __init__(self, config: SimulatorConfig, reactor: Any, *, listen: tuple[str, int],
                 stats_listen: tuple[str, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.stats = Stats()
        self._reactor: Any = reactor
        self._clock: IReactorTime = reactor
        self._listen = listen
        self._stats_listen = stats_listen
        self._rng = random.Random(config.seed)
        self._ids = MsgIdGenerator(config.gateway, self._rng.randrange(65536))
        self._conns: dict[CmppProtocol, _Conn] = {}
        self._undelivered: dict[str, deque[Deliver]] = {}  # sp_id -> reports whose connection died
        self._tokens = float(config.flow_limit or 0)
        self._tokens_at = 0.0
        self._session_config = SessionConfig(
            Role.SERVER, config.version, window=config.window,
            response_timeout=config.response_timeout, active_test_interval=config.active_test_interval,
        )
        self._handlers: dict[type[Event], Callable[[CmppProtocol, Any], None]] = {
            SubmitReceived: self._on_submit, DeliverAcknowledged: self._on_deliver_ack,
            LoginRequested: self._on_login, LinkEstablished: self._on_established,
            LinkClosed: self._on_closed, RequestReceived: self._on_request, MalformedRequest: self._on_malformed,
        }
        self._mo_loop: LoopingCall | None = None
        self.port: Any = None
        self.stats_port: Any = None
        self._wallclock_second = -1.0
        self._wallclock = datetime.datetime.now()
        self._stamp = self._wallclock.strftime("%y%m%d%H%M")

    # --- service lifecycle -------------------------------------------------

    def startService(self) -> None:
        super().startService()
        reactor: IReactorTCP = self._reactor
        host, port = self._listen
        self.port = reactor.listenTCP(port, _SimFactory(self), interface=host)
        addr = self.port.getHost()
        stats_addr = None
        if self._stats_listen is not None:
            root = Resource()
            root.putChild(b"stats", _StatsResource(self.stats))
            site: Any = Site(root)
            self.stats_port = reactor.listenTCP(self._stats_listen[1], site, interface=self._stats_listen[0])
            stats_addr = f"{self.stats_port.getHost().host}:{self.stats_port.getHost().port}"
        if self.config.mo_rate > 0:
            self._mo_loop = LoopingCall(self._inject_mo)
            self._mo_loop.clock = self._clock
            self._mo_loop.start(max(0.02, 1.0 / self.config.mo_rate), now=False)
        log.info("simulator_listening", listen=f"{addr.host}:{addr.port}", stats=stats_addr,
                 version=self.config.version.text, accounts=len(self.config.accounts))

    def stopService(self) -> Any:
        if self._mo_loop is not None and self._mo_loop.running:
            self._mo_loop.stop()
        for conn in list(self._conns.values()):
            transport = conn.proto.transport
            if transport is not None:
                transport.loseConnection()
        waits = [p.stopListening() for p in (self.port, self.stats_port) if p is not None]
        super().stopService()
        return gatherResults([w for w in waits if w is not None])

    # --- CmppOwner -------------------------------------------------------------

    def cmpp_connected(self, proto: CmppProtocol) -> None:
        self._conns[proto] = _Conn(proto)
        self.stats.connections_total += 1

    def cmpp_protocol_error(self, proto: CmppProtocol, error: CmppError) -> None:
        log.warning("simulator_protocol_error", peer=proto.peer, error=error.msg)

    def cmpp_read(self, proto: CmppProtocol) -> None:
        pass

    def cmpp_event(self, proto: CmppProtocol, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(proto, event)

    def _on_established(self, proto: CmppProtocol, event: LinkEstablished) -> None:
        conn = self._conns[proto]
        conn.logged_in = True
        self.stats.logins += 1
        self.stats.connections += 1
        log.info("simulator_login", sp_id=conn.sp_id, peer=proto.peer, version=Version(event.version).text)
        self._flush_undelivered(conn)

    def _on_closed(self, proto: CmppProtocol, event: LinkClosed) -> None:
        conn = self._conns.pop(proto, None)
        if conn is None:
            return
        if not conn.logged_in:
            if conn.sp_id:  # accepted by us, refused by the session (version too high)
                self.stats.login_failures += 1
                log.info("simulator_login_rejected", sp_id=conn.sp_id, reason=event.reason)
            return
        self.stats.connections -= 1
        # DeliverAcknowledged(None) already re-queued what was on the wire.
        if conn.reports:
            self._undelivered.setdefault(conn.sp_id, deque()).extend(conn.reports.values())

    def _on_malformed(self, proto: CmppProtocol, event: MalformedRequest) -> None:
        self.stats.malformed += 1

    def _on_login(self, proto: CmppProtocol, event: LoginRequested) -> None:
        session = proto.session
        now = self._clock.seconds()
        secret = self.config.accounts.get(event.source_addr)
        if secret is None:
            self.stats.login_failures += 1
            log.info("simulator_login_rejected", sp_id=event.source_addr, status=2, reason="unknown SP_Id")
            session.reject_login(2, now)
        elif not session.check_login(secret):
            self.stats.login_failures += 1
            log.info("simulator_login_rejected", sp_id=event.source_addr, status=3, reason="authentication error")
            session.reject_login(3, now)
        else:
            # The session may still refuse (Status 4 when a 2.0 simulator is asked
            # for 3.0); LinkEstablished / LinkClosed say how it ended.
            self._conns[proto].sp_id = event.source_addr
            session.accept_login(secret, now)

    def _on_submit(self, proto: CmppProtocol, event: SubmitReceived) -> None:
        stats = self.stats
        stats.submits += 1
        session = proto.session
        now = self._clock.seconds()
        if self.config.flow_limit is not None and not self._take_token(now):
            stats.flow_rejects += 1
            session.respond(event.seq, SubmitResp(0, 8))
            return
        submit = event.submit
        dests = submit.dest_terminal_ids
        wall = self._now_wallclock(now)
        first = self._ids.reserve(wall, len(dests)) if len(dests) > 1 else self._ids.next(wall)
        session.respond(event.seq, SubmitResp(first, 0))
        stats.segments += 1
        conn = self._conns[proto]
        conn.src_id = submit.src_id
        if submit.registered_delivery == 1:
            self._schedule_reports(conn, submit, first, wall)
        conn.submits += 1
        if self.config.drop_every and conn.submits % self.config.drop_every == 0:
            stats.drops += 1
            self._clock.callLater(0, self._drop, proto)

    def _drop(self, proto: CmppProtocol) -> None:
        if proto.transport is not None:
            log.info("simulator_drop", peer=proto.peer)
            proto.transport.loseConnection()

    def _schedule_reports(self, conn: _Conn, submit: Submit, first: int, wall: datetime.datetime) -> None:
        stamp = self._stamp
        ids = [first] if len(submit.dest_terminal_ids) == 1 else msg_id_range(first, len(submit.dest_terminal_ids))
        reports = []
        for dest, mid in zip(submit.dest_terminal_ids, ids):
            stat = "DELIVRD"
            if self.config.fail_ratio and self._rng.random() < self.config.fail_ratio:
                stat = self._rng.choice(FAIL_STATS)
            content = StatusReport(mid, stat, stamp, stamp, dest, mid & 0xFFFF).encode(conn.proto.session.version)
            reports.append(Deliver(0, submit.src_id, dest, content, 0, 1))
        if self.config.report_delay <= 0:
            self._send_reports(conn, reports)
        else:
            self._clock.callLater(self.config.report_delay, self._send_reports, conn, reports)

    def _send_reports(self, conn: _Conn, reports: list[Deliver]) -> None:
        proto = conn.proto
        if proto not in self._conns or proto.session.closed:
            self._undelivered.setdefault(conn.sp_id, deque()).extend(reports)
            return
        now = self._clock.seconds()
        wall = self._now_wallclock(now)
        send = proto.session.send
        next_id = self._ids.next
        for r in reports:
            # A fresh outer Msg_Id per DELIVER attempt, as an ISMG does.
            deliver = Deliver(next_id(wall), r.dest_id, r.src_terminal_id, r.msg_content, r.msg_fmt,
                              r.registered_delivery, r.service_id, r.tp_pid, r.tp_udhi)
            key = send(deliver, now)
            conn.reports[key] = deliver
            self.stats.reports_sent += 1
        if proto.transport is not None:
            proto.pump()

    def _on_deliver_ack(self, proto: CmppProtocol, event: DeliverAcknowledged) -> None:
        conn = self._conns.get(proto)
        deliver = conn.reports.pop(event.seq, None) if conn is not None else None
        if deliver is None:
            return
        if event.result == 0:
            if deliver.registered_delivery == 1:
                self.stats.reports_acked += 1
        elif conn is not None:
            # Not taken (or the link died): deliver it again later, as an ISMG does.
            self._undelivered.setdefault(conn.sp_id, deque()).append(deliver)

    def _flush_undelivered(self, conn: _Conn) -> None:
        queue = self._undelivered.pop(conn.sp_id, None)
        if queue:
            log.info("simulator_redeliver", sp_id=conn.sp_id, count=len(queue))
            self._send_reports(conn, list(queue))

    def _on_request(self, proto: CmppProtocol, event: RequestReceived) -> None:
        if isinstance(event.pdu, Query):
            q = event.pdu
            proto.session.respond(event.seq, QueryResp(q.time, q.query_type, q.query_code,
                                                       self.stats.submits, self.stats.segments,
                                                       self.stats.segments, 0, 0, self.stats.mo_sent))
        else:
            proto.session.respond(event.seq, CancelResp(1))

    def _take_token(self, now: float) -> bool:
        limit = self.config.flow_limit or 0.0
        self._tokens = min(limit, self._tokens + (now - self._tokens_at) * limit)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _now_wallclock(self, now: float) -> datetime.datetime:
        # One datetime per second: building one per PDU costs more than the PDU.
        second = float(int(now))
        if second != self._wallclock_second:
            self._wallclock_second = second
            self._wallclock = datetime.datetime.fromtimestamp(second)
            self._stamp = self._wallclock.strftime("%y%m%d%H%M")
        return self._wallclock

    # --- MO injection --------------------------------------------------------

    def _inject_mo(self) -> None:
        live = [c for c in self._conns.values() if c.logged_in and not c.proto.session.closed]
        if not live:
            return
        conn = self._rng.choice(live)
        now = self._clock.seconds()
        wall = self._now_wallclock(now)
        src = f"1380013{self._rng.randrange(10000):04d}"
        dest = (conn.src_id or self.config.mo_dest)
        if self._rng.random() < self.config.mo_long_ratio:
            text = _MO_TEXTS[-1]
        else:
            text = self._rng.choice(_MO_TEXTS[:-1])
        fmt = MSG_FMT_ASCII if text.isascii() else MSG_FMT_UCS2
        segments = split_text(text, fmt, reference=self._rng.randrange(256))
        parts = [Deliver(self._ids.next(wall), dest[:21], src, seg.content, fmt, 0,
                         tp_udhi=1 if seg.udhi else 0) for seg in segments]
        self._rng.shuffle(parts)  # parts of a long MO may arrive in any order
        for deliver in parts:
            key = conn.proto.session.send(deliver, now)
            conn.reports[key] = deliver
        self.stats.mo_sent += 1
        conn.proto.pump()


class _SimFactory(ServerFactory):
    def __init__(self, sim: IsmgSimulator) -> None:
        self._sim = sim

    def buildProtocol(self, addr: Any) -> CmppProtocol:
        return CmppProtocol(Session(self._sim._session_config), self._sim._clock, self._sim)


class _StatsResource(Resource):
    isLeaf = True

    def __init__(self, stats: Stats) -> None:
        super().__init__()
        self._stats = stats

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self._stats.as_dict()).encode()


def make_service(config: SimulatorConfig, reactor: Any, listen: tuple[str, int],
                 stats_listen: tuple[str, int] | None = None) -> IsmgSimulator:
    """The simulator as a service, ready to `startService()` or attach to a parent."""
    return IsmgSimulator(config, reactor, listen=listen, stats_listen=stats_listen)


__all__ = ["FAIL_STATS", "IsmgSimulator", "SimulatorConfig", "Stats", "load_accounts", "make_service"]
