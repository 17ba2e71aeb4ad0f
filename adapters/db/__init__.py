"""Legacy database integration: poll tables for messages, write results back, MO into an inbox.

Configured under ``db_sources:`` (docs/legacy-db.md); the standard tables are in
`smsgw.adapters.db.interface`. Registered as the ``db`` entry point of the
``smsgw.adapters`` group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smsgw.model import Account

if TYPE_CHECKING:
    from smsgw.adapter import AdapterContext, AdapterService


def make_services(context: AdapterContext) -> list[AdapterService]:
    """One `DbSource` per configured source; its write-back registered with the outbox worker."""
    from smsgw.adapters.db.source import DbSource

    out: list[AdapterService] = []
    for cfg in context.config.db_sources:
        account = context.accounts.get(cfg.account_name()) or Account(name=cfg.account_name(), interfaces=("db",))
        source = DbSource(cfg, context.gateway, context.store, context.validator, account, context.reactor,
                          node=context.config.node.name)
        context.outbox.add(source.kind, source.writeback, retry_for=cfg.writeback_retry)
        out.append(source)
    return out
