"""Business-side adapters as plugins: entry points in the group ``smsgw.adapters``.

Each entry point names a factory ``make_services(context) -> list[AdapterService]``;
the daemon calls every factory once at start-up with an `AdapterContext`, starts
the services it returns after the gateway, and stops them first on shutdown
(so nothing new is taken while the rest drains). A factory with nothing
configured returns an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Protocol

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall

from smsgw.config import Config
from smsgw.model import Account
from smsgw.outbox import OutboxWorker
from smsgw.store import Store
from smsgw.validation import Validator

GROUP = "smsgw.adapters"


@dataclass(frozen=True, slots=True)
class AdapterContext:
    config: Config
    gateway: Any  # smsgw.pipeline.Gateway
    store: Store
    outbox: OutboxWorker
    validator: Validator
    accounts: dict[str, Account]
    reactor: Any
    authenticator: Any = None  # smsgw.auth.Authenticator: how every interface checks credentials


class AdapterService(Protocol):
    name: str

    def startService(self) -> None: ...

    def stop_polling(self) -> defer.Deferred[Any]:
        """Take nothing new; fires when what was being taken is committed or given back."""

    def stopService(self) -> defer.Deferred[Any] | None: ...


class Poller(Service):
    """A service that polls on a timer, one round at a time (rounds never overlap).

    A subclass implements `_poll`: start a round and return its Deferred, whose callbacks
    call `_schedule` for the next one; or schedule the next round itself and return None.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._timer: IDelayedCall | None = None
        self._round: defer.Deferred[Any] | None = None  # the round under way
        self._waiting: list[defer.Deferred[None]] = []  # stop_polling's callers, told when it ends

    def stop_polling(self) -> defer.Deferred[None]:
        """No new round; fires when the round under way (if any) has ended."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.running = False
        if self._round is None:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(waiter)
        return waiter

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._timer = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        d = self._poll()
        if d is not None:
            self._round = d
            d.addBoth(self._ended)

    def _ended(self, result: Any) -> Any:
        self._round = None
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)
        return result

    def _poll(self) -> defer.Deferred[Any] | None:
        raise NotImplementedError


Factory = Callable[[AdapterContext], list[AdapterService]]


def load_factories() -> list[tuple[str, Factory]]:
    """Every installed adapter factory, by entry point name, in name order."""
    found = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    return [(ep.name, ep.load()) for ep in found]
