"""systemd integration: the notify protocol over a real datagram socket, the watchdog service, the unit file."""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import socket
import subprocess
import uuid
from typing import Iterator

import pytest
import structlog
from structlog.testing import capture_logs
from twisted.internet.task import Clock

from smsgw.sdnotify import Notifier, WatchdogService, watchdog_interval

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "smsgw.service"


@pytest.fixture(autouse=True)
def every_level() -> Iterator[None]:
    """capture_logs sees info lines even if an earlier test module left the level at warning."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(**saved)


@pytest.fixture
def listener(tmp_path: pathlib.Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, and the $NOTIFY_SOCKET value naming it."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return messages


def test_ready_and_status_arrive_as_one_datagram(listener: tuple[socket.socket, str]) -> None:
    """notify(ready=True, status=…) sends READY=1 and STATUS=… in one newline-separated datagram."""
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.notify(ready=True, status="2 条链路已连接") is True
    assert notifier.notify(stopping=True) is True
    notifier.close()
    assert received(sock) == ["READY=1\nSTATUS=2 条链路已连接", "STOPPING=1"]


def test_abstract_namespace_addresses_are_understood() -> None:
    """A $NOTIFY_SOCKET starting with @ names a socket in Linux's abstract namespace."""
    name = f"smsgw-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        notifier = Notifier(f"@{name}")
        assert notifier.notify(watchdog=True)
        notifier.close()
        assert received(sock) == ["WATCHDOG=1"]


def test_values_are_spelled_as_systemd_expects(listener: tuple[socket.socket, str]) -> None:
    """Booleans become 1/0, numbers text, and a newline in a value becomes a space."""
    sock, path = listener
    notifier = Notifier(path)
    notifier.notify(status="line one\nline two", extend_timeout_usec=45_000_000, ready=False)
    notifier.close()
    assert received(sock) == ["STATUS=line one line two\nEXTEND_TIMEOUT_USEC=45000000\nREADY=0"]


def test_without_notify_socket_nothing_is_sent() -> None:
    """Outside systemd ($NOTIFY_SOCKET unset) notify() does nothing and returns False."""
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.notify(ready=True) is False


def test_an_unsupported_address_disables_the_notifier_with_a_warning() -> None:
    """A vsock: (or other) address is not understood: the notifier is off and says so."""
    with capture_logs() as logs:
        notifier = Notifier("vsock:2:9999")
    assert not notifier.enabled and notifier.notify(ready=True) is False
    assert [e["event"] for e in logs] == ["notify_socket_unsupported"]


def test_bad_keys_are_refused() -> None:
    """A key that is not a variable name, or no key at all, raises ValueError."""
    notifier = Notifier(None)
    with pytest.raises(ValueError, match="not a variable name"):
        notifier.notify(**{"status text": "x"})
    with pytest.raises(ValueError, match="at least one assignment"):
        notifier.notify()


def test_a_vanished_socket_returns_false_and_logs_once(tmp_path: pathlib.Path) -> None:
    """Sending to a socket that is gone returns False, logs one warning, and logs again on recovery."""
    path = str(tmp_path / "notify")
    notifier = Notifier(path)
    with capture_logs() as logs:
        assert notifier.notify(watchdog=True) is False
        assert notifier.notify(watchdog=True) is False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            assert notifier.notify(watchdog=True) is True
    notifier.close()
    assert [e["event"] for e in logs] == ["notify_failed", "notify_resumed"]
    assert logs[0]["sent"] == "WATCHDOG=1" and "No such file" in logs[0]["error"]


def test_a_full_socket_queue_does_not_block() -> None:
    """When systemd does not read, notify() returns False instead of blocking the reactor."""
    name = f"smsgw-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier("@" + name)
        results = [notifier.notify(status="x" * 1000) for _ in range(5000)]
        notifier.close()
    assert results[0] is True and results[-1] is False


@pytest.mark.parametrize(("env", "interval"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_PID": "4242"}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(env: dict[str, str],
                                                                   interval: float | None) -> None:
    """The ping interval is half of $WATCHDOG_USEC, and none when $WATCHDOG_PID names another process."""
    assert watchdog_interval(env, pid=4242) == interval


def test_watchdog_interval_uses_this_process_by_default() -> None:
    """Without pid, $WATCHDOG_PID is compared with os.getpid()."""
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0


@pytest.mark.parametrize("env", [{"WATCHDOG_USEC": "soon"}, {"WATCHDOG_USEC": "0"},
                                 {"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "-1"}])
def test_malformed_watchdog_variables_are_reported(env: dict[str, str]) -> None:
    """A $WATCHDOG_USEC or $WATCHDOG_PID that is not a positive integer raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"\$WATCHDOG_(USEC|PID) is"):
        watchdog_interval(env)


# --- the watchdog service ----------------------------------------------------------------------

class Health:
    def __init__(self) -> None:
        self.ok = True
        self.error: Exception | None = None

    def __call__(self) -> bool:
        if self.error:
            raise self.error
        return self.ok


def started_watchdog(path: str, health: Health) -> tuple[WatchdogService, Clock, Notifier]:
    clock, notifier = Clock(), Notifier(path)
    service = WatchdogService(notifier, clock, 15.0, health)
    service.startService()
    return service, clock, notifier


def test_watchdog_pings_on_start_and_every_interval(listener: tuple[socket.socket, str]) -> None:
    """A healthy daemon sends WATCHDOG=1 at start and once per interval; stopping leaves no timer."""
    sock, path = listener
    service, clock, notifier = started_watchdog(path, Health())
    assert received(sock) == ["WATCHDOG=1"]
    clock.advance(14.9)
    assert received(sock) == []
    clock.advance(0.1)
    clock.advance(15)
    assert received(sock) == ["WATCHDOG=1", "WATCHDOG=1"]
    service.stopService()
    notifier.close()
    assert clock.getDelayedCalls() == []
    assert not service.running


def test_an_unhealthy_daemon_gets_no_pings_until_it_recovers(listener: tuple[socket.socket, str]) -> None:
    """While healthy() is False no ping is sent; one error line says so, one warning when pings resume."""
    sock, path = listener
    health = Health()
    with capture_logs() as logs:
        service, clock, notifier = started_watchdog(path, health)
        received(sock)
        health.ok = False
        clock.pump([15.0] * 3)
        assert received(sock) == []
        health.ok = True
        clock.advance(15)
        assert received(sock) == ["WATCHDOG=1"]
    service.stopService()
    notifier.close()
    assert [(e["event"], e["log_level"]) for e in logs] == [("watchdog_withheld", "error"),
                                                          ("watchdog_resumed", "warning")]
    assert logs[0]["reason"] == "unhealthy"


def test_a_health_check_that_raises_counts_as_unhealthy(listener: tuple[socket.socket, str]) -> None:
    """An exception from healthy() withholds the ping (and is logged) instead of stopping the loop."""
    sock, path = listener
    health = Health()
    health.error = RuntimeError("store gone")
    with capture_logs() as logs:
        service, clock, notifier = started_watchdog(path, health)
        health.error = None
        clock.advance(15)
    service.stopService()
    notifier.close()
    assert received(sock) == ["WATCHDOG=1"]
    assert logs[0]["reason"] == "health check raised RuntimeError: store gone"


def test_the_watchdog_needs_a_positive_interval() -> None:
    """A zero interval is refused at construction."""
    with pytest.raises(ValueError, match="positive seconds"):
        WatchdogService(Notifier(None), Clock(), 0, lambda: True)


# --- the unit file ---------------------------------------------------------------------------

def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a systemd unit: key -> every value given (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def test_the_unit_is_a_hardened_notify_service() -> None:
    """systemd/smsgw.service is Type=notify with the watchdog, layout, timeouts and hardening of docs/deploy.md."""
    service = unit_settings(UNIT.read_text(encoding="utf-8"))["Service"]
    expected = {
        "Type": "notify", "NotifyAccess": "main", "User": "smsgw", "Group": "smsgw",
        "ExecStart": "/opt/smsgw/venv/bin/smsgw run -c /etc/smsgw/smsgw.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID", "EnvironmentFile": "-/etc/smsgw/smsgw.env",
        "WorkingDirectory": "/var/lib/smsgw", "StateDirectory": "smsgw", "LogsDirectory": "smsgw",
        "ConfigurationDirectory": "smsgw", "Restart": "on-failure", "RestartSec": "2s", "WatchdogSec": "30s",
        "TimeoutStopSec": "45s", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
        "UMask": "0027", "ReadWritePaths": "/var/lib/smsgw /var/log/smsgw",
    }
    assert {key: service.get(key, [None])[-1] for key in expected} == expected
    assert "@system-service" in service["SystemCallFilter"]


def test_the_stop_timeout_outlasts_the_drain_timeout() -> None:
    """TimeoutStopSec leaves the 30 s drain time plus margin before systemd sends SIGKILL."""
    service = unit_settings(UNIT.read_text(encoding="utf-8"))["Service"]
    assert int(service["TimeoutStopSec"][-1].rstrip("s")) >= 30 + 10


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: pathlib.Path) -> None:
    """systemd-analyze verify finds no unknown key or bad value (ExecStart pointed at a stand-in program)."""
    program = tmp_path / "smsgw"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / "smsgw.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/opt/smsgw/venv/bin/smsgw", str(program)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
