"""The carrier link against the ISMG simulator over real loopback sockets."""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any, Callable

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.internet.threads import deferToThread

from smsgw.carrier import (
    CarrierLink,
    LinkConfig,
    LinkDown,
    LinkReport,
    MoMessage,
    OutboundMessage,
    SubmitResult,
)
from smsgw.protocol.cmpp import MSG_FMT_UCS2, Version, split_text
from smsgw.simulator import IsmgSimulator, SimulatorConfig

R: Any = reactor
SP_ID, SECRET = "901234", "s3cret"
LONG_TEXT = "【政务服务】" + "您申请的居住证已制作完成，请携带本人身份证原件到派出所户政窗口领取。" * 4


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Spin the reactor until `predicate()` holds (tests must not sleep blindly)."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await deferLater(R, 0.02, lambda: None)
        waited += 0.02


class LoopbackCase(TestCase):
    """Starts a simulator on 127.0.0.1 and a link to it; both are stopped after each test."""

    timeout = 60

    def start_simulator(self, **overrides: Any) -> IsmgSimulator:
        options: dict[str, Any] = {"accounts": {SP_ID: SECRET}, "report_delay": 0.0, "seed": 7}
        options.update(overrides)
        sim = IsmgSimulator(SimulatorConfig(**options), R, listen=("127.0.0.1", 0),
                            stats_listen=("127.0.0.1", 0))
        sim.startService()
        self.addCleanup(sim.stopService)
        return sim

    def start_link(self, sim: IsmgSimulator, **overrides: Any) -> CarrierLink:
        self.reports: list[LinkReport] = []
        self.mos: list[MoMessage] = []
        options: dict[str, Any] = {"connections": 2, "reconnect_initial": 0.1, "reconnect_max": 0.5,
                                   "response_timeout": 5.0, "stop_timeout": 2.0}
        options.update(overrides)
        config = LinkConfig("test", "127.0.0.1", sim.port.getHost().port, SP_ID,
                            options.pop("secret", SECRET), "10690001", **options)
        link = CarrierLink(config, R, on_report=self.reports.append, on_mo=self.mos.append)
        link.startService()
        self.addCleanup(lambda: link.stopService() if link.running else None)
        return link


class LinkAndSimulatorTests(LoopbackCase):
    async def test_long_group_message_gets_every_msg_id_and_report(self) -> None:
        """A long message to three recipients yields a Msg_Id and a DELIVRD report per segment and recipient."""
        sim = self.start_simulator()
        link = self.start_link(sim)
        await wait_for(lambda: link.live_connections == 2, what="two logged-in connections")
        for proto in link._live:
            sock = proto.transport.getHandle()  # type: ignore[union-attr]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        # Both ends send straight to the socket (a Twisted rename would quietly turn that off).
        assert all(p._direct is p.transport for p in [*link._live, *sim._conns])
        to = ("13800138000", "13900139000", "+8613700137000")
        result: SubmitResult = await link.submit(OutboundMessage(to, LONG_TEXT))
        n = len(split_text(LONG_TEXT, MSG_FMT_UCS2))
        assert n == 3
        assert {s.pk_total for s in result.segments} == {n}
        assert {(s.to, s.pk_number) for s in result.segments} == {(t, k) for t in to for k in range(1, n + 1)}
        ids = {s.msg_id for s in result.segments}
        assert len(ids) == 3 * n
        await wait_for(lambda: len(self.reports) == 3 * n, what="a report per segment and recipient")
        assert {r.msg_id for r in self.reports} == ids
        assert {r.stat for r in self.reports} == {"DELIVRD"}
        assert sim.stats.reports_acked == 3 * n

    async def test_cmpp20_link_works_end_to_end(self) -> None:
        """A CMPP 2.0 link and a 2.0 simulator exchange submits and 60-byte reports."""
        sim = self.start_simulator(version=Version.V20)
        link = self.start_link(sim, version=Version.V20, connections=1)
        await wait_for(lambda: link.live_connections == 1)
        result = await link.submit(OutboundMessage(("13800138000",), "hello 2.0"))
        await wait_for(lambda: len(self.reports) == 1)
        assert self.reports[0].msg_id == result.segments[0].msg_id
        assert len(self.reports[0].raw.encode(Version.V20)) == 60

    async def test_cmpp20_simulator_refuses_a_30_link_with_status_4(self) -> None:
        """A 2.0-only simulator answers a 3.0 login with Status 4 and counts it as a failure."""
        sim = self.start_simulator(version=Version.V20)
        link = self.start_link(sim, connections=1)
        await wait_for(lambda: sim.stats.login_failures >= 1, what="a refused login")
        assert link.live_connections == 0
        assert sim.stats.logins == 0 and sim.stats.connections == 0

    async def test_long_mo_is_reassembled(self) -> None:
        """Long uplink messages, whose parts arrive shuffled, reach the owner whole."""
        sim = self.start_simulator(mo_rate=40.0, mo_long_ratio=1.0)
        self.start_link(sim, connections=1)
        await wait_for(lambda: len(self.mos) >= 3, what="three MO messages")
        from smsgw.simulator import _MO_TEXTS

        for mo in self.mos:
            assert mo.complete and mo.parts > 1
            assert mo.text == _MO_TEXTS[-1]
            assert mo.dest_id == "10690001"

    async def test_failure_stats_arrive_as_reports(self) -> None:
        """With --fail-ratio 1 every report carries a failure Stat code."""
        sim = self.start_simulator(fail_ratio=1.0)
        link = self.start_link(sim, connections=1)
        await wait_for(lambda: link.live_connections == 1)
        await defer.gatherResults([link.submit(OutboundMessage(("13800138000",), f"m{i}")) for i in range(20)])
        await wait_for(lambda: len(self.reports) == 20)
        assert all(r.stat != "DELIVRD" for r in self.reports)

    async def test_flow_control_result_8_backs_off_and_resends(self) -> None:
        """Above the simulator's flow limit, Result 8 answers are retried until every message is accepted."""
        sim = self.start_simulator(flow_limit=100.0)
        link = self.start_link(sim, connections=1)
        await wait_for(lambda: link.live_connections == 1)
        results = await defer.gatherResults(
            [link.submit(OutboundMessage(("13800138000",), f"n{i}", report=False)) for i in range(150)])
        assert len(results) == 150
        assert sim.stats.flow_rejects > 0
        assert sim.stats.segments == 150

    async def test_wrong_secret_is_rejected_and_submits_fail_as_link_down(self) -> None:
        """A wrong secret gets status 3; with no live connection a submit fails as LinkDown, not sent."""
        sim = self.start_simulator()
        link = self.start_link(sim, secret="wrong", connections=1, submit_wait=0.5)
        await wait_for(lambda: sim.stats.login_failures >= 2, what="repeated login failures")
        assert link.live_connections == 0
        try:
            await link.submit(OutboundMessage(("13800138000",), "x"))
        except LinkDown as exc:
            assert exc.sent is False
        else:
            raise AssertionError("submit succeeded without a login")

    async def test_dropped_connections_reconnect_and_every_submit_is_answered_once(self) -> None:
        """With the simulator dropping connections, each submit's Deferred fires exactly once."""
        sim = self.start_simulator(drop_every=50)
        link = self.start_link(sim, connections=2)
        await wait_for(lambda: link.live_connections == 2)
        fired: dict[int, int] = {}
        outcomes: list[str] = []

        def record(i: int, outcome: str) -> None:
            fired[i] = fired.get(i, 0) + 1
            outcomes.append(outcome)

        ds = []
        for i in range(400):
            d = link.submit(OutboundMessage(("13800138000",), f"d{i}", report=False))
            d.addCallbacks(lambda _, i=i: record(i, "ok"), lambda f, i=i: record(i, f.type.__name__))
            ds.append(d)
        await wait_for(lambda: len(fired) == 400, timeout=30, what="every submit answered")
        assert set(fired.values()) == {1}
        assert sim.stats.drops >= 4
        assert sim.stats.logins > 2  # reconnected
        # Only segments on the wire when a connection dropped may end unknown.
        assert outcomes.count("ok") >= 400 - sim.stats.drops * 16 * 2
        assert set(outcomes) <= {"ok", "LinkDown"}

    async def test_graceful_stop_terminates_sessions(self) -> None:
        """Stopping the link waits for answers, sends TERMINATE and leaves no connection behind."""
        sim = self.start_simulator()
        link = self.start_link(sim)
        await wait_for(lambda: link.live_connections == 2)
        d = link.submit(OutboundMessage(("13800138000",), "bye"))
        await link.stopService()
        assert d.called
        await wait_for(lambda: sim.stats.connections == 0, what="the simulator to see both sessions end")
        late = link.submit(OutboundMessage(("13800138000",), "too late"))
        self.assertFailure(late, LinkDown)
        await late

    async def test_stats_endpoint_serves_counters(self) -> None:
        """GET /stats on the stats port returns the simulator's counters as JSON."""
        sim = self.start_simulator()
        link = self.start_link(sim, connections=1)
        await wait_for(lambda: link.live_connections == 1)
        await link.submit(OutboundMessage(("13800138000",), "count me"))
        port = sim.stats_port.getHost().port

        def fetch() -> Any:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
                assert response.headers["content-type"] == "application/json"
                return json.loads(response.read())

        body = await deferToThread(fetch)
        for key in ("logins", "submits", "segments", "reports_sent", "mo_sent", "flow_rejects", "connections"):
            assert key in body
        assert body["logins"] == 1 and body["submits"] == 1 and body["connections"] == 1
