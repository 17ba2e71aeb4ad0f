"""systemd's notify protocol without libsystemd: readiness, status, stopping and the watchdog.

Under `Type=notify` systemd passes a datagram socket in $NOTIFY_SOCKET; the service sends
newline-separated assignments such as ``READY=1`` or ``STATUS=2 links up`` to it
(sd_notify(3)). With `WatchdogSec=` it also sets $WATCHDOG_USEC and expects ``WATCHDOG=1``
at least that often, or it kills and restarts the service (sd_watchdog_enabled(3)).

Outside systemd (a terminal, the tests) $NOTIFY_SOCKET is unset and every call is a no-op.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Callable, Mapping

import structlog
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

__all__ = ["Notifier", "WatchdogService", "watchdog_interval"]

log = structlog.get_logger("smsgw.sdnotify")

_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")


class Notifier:
    """Sends sd_notify messages to one socket address; does nothing without one.

    Args:
        address: the value of $NOTIFY_SOCKET: a path, or "@name" for the abstract
            namespace. None (or an unsupported form such as vsock:) disables the notifier.
    """

    def __init__(self, address: str | None) -> None:
        self._address: str | None = None
        if address and address[0] in "/@":
            # "@name" is Linux's abstract namespace: a leading NUL byte on the wire.
            self._address = "\0" + address[1:] if address[0] == "@" else address
        elif address:
            log.warning("notify_socket_unsupported", address=address,
                        hint="only a path or @abstract name is understood; systemd will not see READY=1")
        self._socket: socket.socket | None = None
        self._failing = False  # log a failure once, not on every watchdog ping

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """The notifier for $NOTIFY_SOCKET in `env` (default: this process's environment)."""
        return cls((os.environ if env is None else env).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (we run under systemd with Type=notify)."""
        return self._address is not None

    def notify(self, **state: str | int | bool) -> bool:
        """Send one message: notify(ready=True, status="2 links up") sends READY=1 and STATUS=….

        Keys are upper-cased into variable names (READY, STOPPING, STATUS, WATCHDOG, ERRNO,
        EXTEND_TIMEOUT_USEC, ...); True and False become 1 and 0; newlines in values become
        spaces (a newline would start another assignment).

        Returns:
            True when the datagram was sent; False without a socket or when sending failed
            (logged; never raised: a lost notification must not stop the daemon).

        Raises:
            ValueError: a key that is not a valid variable name, or no key at all.
        """
        if not state:
            raise ValueError("notify() needs at least one assignment, e.g. notify(ready=True)")
        lines = []
        for key, value in state.items():
            name = key.upper()
            if not _NAME.match(name):
                raise ValueError(f"notify(): {key!r} is not a variable name (letters, digits, _)")
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            lines.append(f"{name}={text.replace(chr(10), ' ')}")
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A full receive queue must not block the reactor: fail instead.
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(lines).encode("utf-8"), self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("notify_failed", address=self._address.replace("\0", "@"), sent=lines[0],
                            error=str(exc))
                self._failing = True
            return False
        if self._failing:
            log.info("notify_resumed", address=self._address.replace("\0", "@"))
            self._failing = False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often to send WATCHDOG=1: half of $WATCHDOG_USEC, in seconds (as systemd advises).

    Args:
        env: the environment (default: this process's).
        pid: this process's id (default: os.getpid()); $WATCHDOG_PID, when set, must equal it,
            otherwise the watchdog is meant for another process (a parent, a wrapper).

    Returns:
        The interval in seconds, or None when no watchdog is asked for.

    Raises:
        ValueError: $WATCHDOG_USEC or $WATCHDOG_PID is set but not a positive integer.
    """
    env = os.environ if env is None else env
    usec_text, pid_text = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec_text:
        return None
    usec = _positive(usec_text, "WATCHDOG_USEC")
    if pid_text and _positive(pid_text, "WATCHDOG_PID") != (os.getpid() if pid is None else pid):
        return None
    return usec / 2 / 1e6


def _positive(text: str, name: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise ValueError(f"${name} is {text!r}: systemd sets it to a positive integer; unset it or fix the unit")
    return int(text)


class WatchdogService(Service):
    """Sends WATCHDOG=1 every `interval` seconds while `healthy()` says so.

    The pings come from the reactor's own timer, so a wedged reactor stops them; a
    `healthy` that returns False (or raises) withholds them too. Either way systemd
    restarts the daemon after WatchdogSec. The first ping goes out on start.

    Args:
        notifier: where the pings go.
        clock: the reactor (a `twisted.internet.task.Clock` in tests).
        interval: seconds between pings, normally `watchdog_interval()`.
        healthy: asked before each ping.
    """

    name = "watchdog"

    def __init__(self, notifier: Notifier, clock: IReactorTime, interval: float,
                 healthy: Callable[[], bool]) -> None:
        if interval <= 0:
            raise ValueError(f"watchdog interval must be positive seconds, got {interval!r}")
        self._notifier = notifier
        self._healthy = healthy
        self._interval = interval
        self._loop = LoopingCall(self._beat)
        self._loop.clock = clock
        self._withheld = False

    def startService(self) -> None:
        Service.startService(self)
        self._loop.start(self._interval, now=True)

    def stopService(self) -> None:
        if self._loop.running:
            self._loop.stop()
        Service.stopService(self)

    def _beat(self) -> None:
        try:
            ok = bool(self._healthy())
            reason = None if ok else "unhealthy"
        except Exception as exc:  # a broken health check is a reason to be restarted, not to crash
            ok, reason = False, f"health check raised {type(exc).__name__}: {exc}"
        if not ok:
            if not self._withheld:
                log.error("watchdog_withheld", reason=reason,
                          hint="systemd restarts smsgw when no ping arrives within WatchdogSec")
                self._withheld = True
            return
        if self._withheld:
            log.warning("watchdog_resumed")
            self._withheld = False
        self._notifier.notify(watchdog=True)
