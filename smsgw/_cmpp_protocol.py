"""Thin Twisted glue around the sans-IO CMPP `Session` (STYLE.md §4).

The protocol object owns no protocol logic: it feeds bytes and the reactor's
time into the session, hands every event to its owner, writes what the session
wants written, closes when the session is closed, and keeps exactly one
DelayedCall armed at the session's earliest deadline.
"""

from __future__ import annotations

import datetime
from typing import Protocol as TypingProtocol

import structlog
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.python.failure import Failure

from smsgw.protocol.cmpp import CmppError, CmppRemoteError, Event, Session

log = structlog.get_logger("smsgw.cmpp")


class CmppOwner(TypingProtocol):
    """What a CmppProtocol reports to: the carrier link (client) or the simulator (server)."""

    def cmpp_connected(self, proto: CmppProtocol) -> None: ...
    def cmpp_event(self, proto: CmppProtocol, event: Event) -> None: ...
    def cmpp_read(self, proto: CmppProtocol) -> None:
        """Bytes were just read, their events not yet handed over: the moment to
        give the session requests for the room its responses made (they leave
        before the owner works through the events)."""
    def cmpp_protocol_error(self, proto: CmppProtocol, error: CmppError) -> None: ...


class CmppProtocol(Protocol):
    """One TCP connection carrying one CMPP session."""

    def __init__(self, session: Session, clock: IReactorTime, owner: CmppOwner) -> None:
        self.session = session
        self._clock = clock
        self._owner = owner
        self._timer: IDelayedCall | None = None
        self._timer_at = 0.0
        self._pumping = False
        self._pump_call: IDelayedCall | None = None
        self.peer = "?"
        self.label = ""  # set by the owner for log lines (link name / connection index)
        self.slot = 0  # which of its owner's connections this is
        self._direct: Connection | None = None  # a plain TCP transport we may send on at once

    # Twisted hooks -------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        if ITCPTransport.providedBy(transport):
            # A peer that delays its ACKs stalls a Nagle-enabled sender at a few
            # hundred PDUs/s; every PDU here is small and latency-bound.
            transport.setTcpNoDelay(True)
            transport.setTcpKeepAlive(True)
        handle: object = transport  # typed as an interface: mypy would call the isinstance unreachable
        if isinstance(handle, Connection) and not handle.TLS:
            self._direct = handle
        peer = transport.getPeer() if transport is not None else None
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        now = self._clock.seconds()
        self.session.start(now, datetime.datetime.fromtimestamp(now))
        self._owner.cmpp_connected(self)
        self.pump()

    def dataReceived(self, data: bytes) -> None:
        session = self.session
        try:
            session.receive_data(data, self._clock.seconds())
        except CmppError as exc:  # the session had already failed: nothing more to read
            log.warning("cmpp_data_after_error", link=self.label, peer=self.peer, error=exc.msg)
            return
        if not self._pumping:
            # What the session wrote while reading (answers it gives itself, the
            # queued requests the responses made room for) leaves before the
            # owner works through the events, so the peer works while we do.
            out = session.data_to_send()
            if out:
                self._write(out)
            self._pumping = True
            try:
                self._owner.cmpp_read(self)
            finally:
                self._pumping = False
        self.pump()

    def _write(self, data: bytes) -> None:
        """Write now when the transport has nothing buffered; else through its buffer.

        `transport.write` only buffers: the bytes leave on the reactor's next
        turn, after everything this turn does, and cost two epoll_ctl calls.
        Sending at once lets the peer start on them while this side goes on.
        """
        direct = self._direct
        if direct is not None and not direct._tempDataLen and direct.offset == len(direct.dataBuffer) \
                and direct.connected and not direct.disconnecting:
            sent = direct.writeSomeData(data)
            if isinstance(sent, int):
                if sent == len(data):
                    return
                data = data[sent:]
        transport = self.transport
        if transport is not None:
            transport.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError("closed"))) -> None:
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        self.session.connection_lost(self._clock.seconds(), reason.getErrorMessage())
        self.pump()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # driving the session -------------------------------------------------

    def request_pump(self) -> None:
        """Pump soon: at the end of this reactor turn, once for every request made in it.

        Owners that hand the session many requests in a row (a burst of
        submits) call this instead of `pump`, so the burst leaves in one write.
        """
        if self._pumping or self._pump_call is not None:
            return  # the running pump, or the one already scheduled, writes it
        self._pump_call = self._clock.callLater(0, self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_call = None
        self.pump()

    def pump(self) -> None:
        """Dispatch events, write pending bytes, close if done, re-arm the timer.

        Owners answer events from inside `cmpp_event` (respond, send) and may
        call `pump` again from there: that nested call returns at once, since
        the running loop drains the new events and writes the new bytes too.
        """
        if self._pumping:
            return
        self._pumping = True
        session = self.session
        owner = self._owner
        try:
            while True:
                try:
                    event = session.next_event()
                except CmppRemoteError as exc:
                    owner.cmpp_protocol_error(self, exc)
                    continue
                if event is None:
                    break
                owner.cmpp_event(self, event)
        finally:
            self._pumping = False
        data = session.data_to_send()
        transport = self.transport
        if transport is None:
            return
        if data:
            self._write(data)
        if session.closed:
            transport.loseConnection()
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            return
        self._arm_timer()

    def _arm_timer(self) -> None:
        at = self.session.get_timer()
        timer = self._timer
        if at is None:
            if timer is not None and timer.active():
                timer.cancel()
            self._timer = None
            return
        if timer is not None and timer.active():
            if self._timer_at <= at:
                return  # fires early, finds nothing due, re-arms: cheaper than resetting per PDU
            timer.cancel()
        self._timer_at = at
        self._timer = self._clock.callLater(max(0.0, at - self._clock.seconds()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.session.handle_timer(self._clock.seconds())
        self.pump()


__all__ = ["CmppOwner", "CmppProtocol"]
