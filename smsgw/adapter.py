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

from twisted.internet import defer

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


Factory = Callable[[AdapterContext], list[AdapterService]]


def load_factories() -> list[tuple[str, Factory]]:
    """Every installed adapter factory, by entry point name, in name order."""
    found = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    return [(ep.name, ep.load()) for ep in found]
