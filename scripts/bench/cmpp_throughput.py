#!/usr/bin/env python3
"""CMPP throughput: the carrier link in this process, the ISMG simulator in another.

    python scripts/bench/cmpp_throughput.py --count 200000 --connections 1 --reports off

Submits N single-segment messages (225-byte SUBMITs in 3.0: 30 ASCII chars to one
recipient) through `CarrierLink.submit`, keeping the link's windows full, and
prints one line:

    submits_per_s=… reports_per_s=… cpu_client_s=… cpu_server_s=…

submits_per_s counts SUBMIT_RESPs (every submit Deferred fired) over the time from
the first submit to the last answer; reports_per_s counts status reports handed to
the owner over the time from the first submit to the last report.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from typing import Any

from _bench import cpu_of, free_port, wait_port
from twisted.internet import reactor as _reactor
from twisted.internet import defer

from smsgw.carrier import CarrierLink, LinkConfig, LinkReport, MoMessage, OutboundMessage, SubmitResult
from smsgw.protocol.cmpp import Version

R: Any = _reactor
SP_ID, SECRET = "901234", "bench"
TEXT = "Your code is 493021 (5 min)..."  # 30 ASCII chars: a 225-byte CMPP 3.0 SUBMIT


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Bench:
    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.args = args
        self.count = args.count
        self.reports_wanted = args.reports == "on"
        self.sent = 0
        self.answered = 0
        self.failed = 0
        self.reports = 0
        self.t0 = 0.0
        self.t_submits = 0.0
        self.t_reports = 0.0
        self.done: defer.Deferred[None] = defer.Deferred()
        config = LinkConfig("bench", "127.0.0.1", port, SP_ID, SECRET, "10690001",
                            version=Version.parse(args.version), connections=args.connections,
                            window=args.window, active_test_interval=3600.0)
        self.link = CarrierLink(config, R, on_report=self.on_report, on_mo=self.on_mo)
        self.message = OutboundMessage(("13800138000",), TEXT, report=self.reports_wanted)
        # Enough submits queued in the link to keep every window full, no more.
        self.max_outstanding = args.connections * args.window * 4

    def on_report(self, report: LinkReport) -> None:
        self.reports += 1
        if self.reports == self.count:
            self.t_reports = time.perf_counter()
            self.check_done()

    def on_mo(self, mo: MoMessage) -> None:
        pass

    def start(self) -> None:
        self.link.startService()
        self.wait_live()

    def wait_live(self) -> None:
        if self.link.live_connections < self.args.connections:
            R.callLater(0.01, self.wait_live)
            return
        self.cpu0 = self_cpu()
        self.t0 = time.perf_counter()
        self.fill()

    def fill(self) -> None:
        submit = self.link.submit
        message = self.message
        while self.sent < self.count and self.sent - self.answered < self.max_outstanding:
            self.sent += 1
            submit(message).addCallbacks(self.on_answer, self.on_fail)

    def on_answer(self, result: SubmitResult) -> None:
        self.answered += 1
        if self.answered == self.count:
            self.t_submits = time.perf_counter()
            self.check_done()
        elif self.sent < self.count and self.sent - self.answered < self.max_outstanding // 2:
            self.fill()

    def on_fail(self, failure: Any) -> None:
        self.failed += 1
        self.on_answer(None)  # type: ignore[arg-type]

    def check_done(self) -> None:
        if self.answered == self.count and (not self.reports_wanted or self.reports == self.count):
            self.cpu1 = self_cpu()
            if not self.done.called:
                self.done.callback(None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--version", default="3.0", choices=("3.0", "2.0"))
    parser.add_argument("--reports", default="off", choices=("on", "off"))
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--port", type=int, default=0, help="simulator port (0: a free one)")
    args = parser.parse_args()
    port = args.port or free_port()

    sim = subprocess.Popen(
        [sys.executable, "-m", "smsgw", "--log-level", "warning", "simulate",
         "--listen", f"127.0.0.1:{port}", "--account", f"{SP_ID}:{SECRET}", "--version", args.version,
         "--report-delay", "0", "--window", str(args.window)],
        cwd="/",  # never import smsgw from a source checkout by accident
    )
    try:
        wait_port(port)
        from smsgw import logs
        logs.configure("warning")
        bench = Bench(args, port)
        server_cpu0 = cpu_of(sim.pid)
        R.callWhenRunning(bench.start)
        bench.done.addCallback(lambda _: R.stop())
        R.run()
        server_cpu = cpu_of(sim.pid) - server_cpu0
    finally:
        sim.terminate()
        sim.wait(10)
    elapsed_submits = bench.t_submits - bench.t0
    line = f"submits_per_s={bench.count / elapsed_submits:.0f}"
    if bench.reports_wanted:
        line += f" reports_per_s={bench.count / (bench.t_reports - bench.t0):.0f}"
    else:
        line += " reports_per_s=0"
    line += f" cpu_client_s={bench.cpu1 - bench.cpu0:.2f} cpu_server_s={server_cpu:.2f}"
    if bench.failed:
        line += f" failed={bench.failed}"
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
