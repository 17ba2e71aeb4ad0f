"""`smsgw demo` (what `make run` starts): the simulator plus a carrier link that sends a few messages.

Every step shows up as one structured log line: the link logging in, each
message's Msg_Ids, each status report, each uplink message (the simulator
injects a few, some of them long).
"""

from __future__ import annotations

from typing import Any

import structlog
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.python.failure import Failure

from smsgw.carrier import CarrierLink, LinkConfig, LinkReport, MoMessage, OutboundMessage, SubmitResult
from smsgw.protocol.cmpp import Version, stat_text
from smsgw.simulator import IsmgSimulator, SimulatorConfig

log = structlog.get_logger("smsgw.demo")

SP_ID, SECRET = "901234", "demo-secret"

DEMO_MESSAGES = (
    OutboundMessage(("13800138000",), "Your verification code is 493021. It expires in 5 minutes."),
    OutboundMessage(("13900139000", "+8613700137000"), "【税务热线】您的工单 WO-2024-0815 已受理，处理结果将以短信通知。"),
    OutboundMessage(("13600136000",), "【政务服务】尊敬的市民：您申请的居住证已制作完成，请携带本人身份证原件及受理回执，"
                    "于工作日 9:00-17:00 到户籍所在地派出所户政窗口领取。逾期三个月未领取的证件将退回制证中心。"
                    "如有疑问请回复本短信或拨打 12345 咨询。", ext="01"),
)


class DemoService(MultiService):
    """The simulator on loopback, a link to it, a few messages, and a log of what comes back."""

    def __init__(self, reactor: Any, *, port: int = 0, version: str = "3.0",
                 exit_after: float | None = None) -> None:
        super().__init__()
        self._reactor = reactor
        self._version = Version.parse(version)
        self._exit_after = exit_after
        self.reports: list[LinkReport] = []
        self.mos: list[MoMessage] = []
        self.simulator = IsmgSimulator(
            SimulatorConfig(accounts={SP_ID: SECRET}, version=self._version, report_delay=1.0,
                            mo_rate=0.2, seed=None),
            reactor, listen=("127.0.0.1", port))
        self.simulator.setServiceParent(self)
        self.link: CarrierLink | None = None

    def startService(self) -> None:
        super().startService()  # the simulator listens first, so its port is known
        port = self.simulator.port.getHost().port
        config = LinkConfig("demo", "127.0.0.1", port, SP_ID, SECRET, "10690001",
                            service_id="DEMO", version=self._version, connections=2)
        self.link = CarrierLink(config, self._reactor, on_report=self._on_report, on_mo=self._on_mo)
        self.link.setServiceParent(self)
        self._reactor.callLater(1.0, self._send_all)
        if self._exit_after is not None:
            self._reactor.callLater(self._exit_after, self._reactor.stop)

    def stopService(self) -> defer.Deferred[None]:
        """Stop the link first (it TERMINATEs its sessions), then the simulator."""
        self.running = False
        d: defer.Deferred[Any] = defer.maybeDeferred(self.link.stopService) if self.link else defer.succeed(None)
        d.addCallback(lambda _: self.simulator.stopService())
        return d

    def _send_all(self) -> None:
        assert self.link is not None
        for message in DEMO_MESSAGES:
            d = self.link.submit(message)
            d.addCallbacks(self._sent, self._failed, callbackArgs=(message,), errbackArgs=(message,))

    def _sent(self, result: SubmitResult, message: OutboundMessage) -> None:
        for seg in result.segments:
            log.info("demo_submitted", to=seg.to, part=f"{seg.pk_number}/{seg.pk_total}", msg_id=seg.msg_id_text)

    def _failed(self, failure: Failure, message: OutboundMessage) -> None:
        log.error("demo_submit_failed", to=list(message.to), error=failure.getErrorMessage())

    def _on_report(self, report: LinkReport) -> defer.Deferred[None] | None:
        self.reports.append(report)
        log.info("demo_report", msg_id=f"{report.msg_id:016x}", to=report.dest, stat=report.stat,
                 meaning=stat_text(report.stat))
        return None

    def _on_mo(self, mo: MoMessage) -> None:
        self.mos.append(mo)
        log.info("demo_mo", src=mo.src, dest=mo.dest_id, text=mo.text, parts=mo.parts, complete=mo.complete)
