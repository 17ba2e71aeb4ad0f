"""The carrier link survives its ISMG being killed (SIGKILL) and restarted mid-stream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from smsgw.carrier import CarrierLink, LinkConfig, LinkReport, OutboundMessage
from ports import free_port
from test_carrier_loopback import wait_for

R: Any = reactor
SP_ID, SECRET = "901234", "restart"
TOTAL = 3000
WINDOW, CONNECTIONS = 16, 2


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsgw", "--log-level", "warning", "simulate", "--listen", f"127.0.0.1:{port}",
         "--account", f"{SP_ID}:{SECRET}", "--report-delay", "0"],
        cwd="/",
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"simulator did not listen on {port}")


def kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class RestartTests(TestCase):
    timeout = 120

    async def test_every_submit_is_answered_exactly_once_across_a_kill_and_restart(self) -> None:
        """Submits keep flowing through a SIGKILL and restart: each Deferred fires once, only in-flight ones fail."""
        port = free_port()
        procs = [start_simulator(port)]
        self.addCleanup(kill_all, procs)
        reports: list[LinkReport] = []
        config = LinkConfig("restart", "127.0.0.1", port, SP_ID, SECRET, "10690001", connections=CONNECTIONS,
                            window=WINDOW, reconnect_initial=0.1, reconnect_max=0.5, response_timeout=3.0,
                            submit_wait=60.0, stop_timeout=1.0)
        link = CarrierLink(config, R, on_report=reports.append, on_mo=lambda mo: None)
        link.startService()
        self.addCleanup(link.stopService)
        await wait_for(lambda: link.live_connections == CONNECTIONS, what="both connections")

        fired: dict[int, list[str]] = {}
        sent = 0

        def feed() -> None:
            nonlocal sent
            for _ in range(25):
                if sent == TOTAL:
                    return
                i = sent
                sent += 1
                d = link.submit(OutboundMessage(("13800138000",), f"restart {i}"))
                d.addCallbacks(lambda _, i=i: fired.setdefault(i, []).append("ok"),
                               lambda f, i=i: fired.setdefault(i, []).append(f.type.__name__))
            R.callLater(0.005, feed)

        feed()
        await wait_for(lambda: len(fired) >= TOTAL // 3, what="a third answered", timeout=60)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(10)
        await wait_for(lambda: link.live_connections == 0, what="the link to notice")
        procs.append(start_simulator(port))
        await wait_for(lambda: len(fired) == TOTAL, what="every submit answered", timeout=90)

        assert all(len(outcomes) == 1 for outcomes in fired.values()), "a Deferred fired twice"
        outcomes = [o[0] for o in fired.values()]
        failures = [o for o in outcomes if o != "ok"]
        assert set(failures) <= {"LinkDown"}
        # Only what was on the wire (at most a window per connection) can end unknown.
        assert len(failures) <= WINDOW * CONNECTIONS, failures
        await wait_for(lambda: link.live_connections == CONNECTIONS, what="both connections back")
        # Messages accepted by the new simulator get their reports.
        await wait_for(lambda: len(reports) >= outcomes.count("ok") - TOTAL // 3 - WINDOW * CONNECTIONS,
                       what="reports from the restarted simulator")
