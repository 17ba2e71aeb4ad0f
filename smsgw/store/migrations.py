"""Versioned schema migrations: `smsgw db upgrade` applies the ones a store lacks, in order.

Each migration is a function of an open connection, run in its own
transaction with its row in `smsgw_schema`. Never edit a released
migration: add the next one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Connection, Engine, inspect, select

from smsgw.store import schema


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1(conn: Connection) -> None:
    tables = [t for t in schema.metadata.sorted_tables if t is not schema.schema_versions]
    schema.metadata.create_all(conn, tables=tables)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "messages, recipients, segments, reports, MO, outbox, audit log", _v1),
)
LATEST = MIGRATIONS[-1].version


class SchemaOutdated(Exception):
    """The store's schema is older (or newer) than this smsgw: says which command fixes it."""


def current_version(engine: Engine) -> int:
    """The highest applied migration, 0 for an empty database."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(schema.schema_versions.name):
            return 0
        versions = conn.execute(select(schema.schema_versions.c.version)).scalars().all()
        return max(versions, default=0)


def upgrade(engine: Engine, now: Callable[[], float] = time.time) -> list[int]:
    """Apply every missing migration; returns the versions applied (empty: up to date)."""
    with engine.begin() as conn:
        schema.metadata.create_all(conn, tables=[schema.schema_versions])
    applied = []
    start = current_version(engine)
    if start > LATEST:
        raise SchemaOutdated(f"the store is at schema version {start}, newer than this smsgw ({LATEST}): "
                             "upgrade smsgw, or restore the backup taken before the last upgrade")
    for migration in MIGRATIONS:
        if migration.version <= start:
            continue
        with engine.begin() as conn:
            migration.apply(conn)
            conn.execute(schema.schema_versions.insert().values(
                version=migration.version, description=migration.description, applied_at=now()))
        applied.append(migration.version)
    return applied


def require_current(engine: Engine) -> None:
    """Raise SchemaOutdated unless the store is exactly at LATEST."""
    version = current_version(engine)
    if version < LATEST:
        raise SchemaOutdated(f"the store is at schema version {version}, this smsgw needs {LATEST}: "
                             "run `smsgw db upgrade -c CONFIG` (back the database up first)")
    if version > LATEST:
        raise SchemaOutdated(f"the store is at schema version {version}, newer than this smsgw ({LATEST}): "
                             "upgrade smsgw")
