"""Versioned schema migrations: `smsgw db upgrade` applies the ones a store lacks, in order.

Each migration is a function of an open connection, run in its own
transaction with its row in `smsgw_schema`. Never edit a released
migration: add the next one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import Column, Connection, Engine, Index, MetaData, Table, inspect, select, text
from sqlalchemy.sql.elements import UnaryExpression

from smsgw.store import schema


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


_V5_COLUMNS = ("batch", "review", "review_rule", "review_deadline", "review_expiry", "reviewed_by", "reviewed_at",
               "review_comment")
_V5_INDEXES = ("ix_messages_review_created", "ix_messages_batch")

# v1 as released: the tables of schema.py less what later versions added.
_V1_TABLES = ("messages", "recipients", "segments", "reports", "mo_messages", "mo_parts", "outbox", "audit_log")
_ADDED_COLUMNS = {("recipients", "notify"), ("messages", "dlr_url"), ("messages", "dlr_mask"),
                  ("messages", "template"), *(("messages", c) for c in _V5_COLUMNS)}  # by later ones


def _v1(conn: Connection) -> None:
    for name in _V1_TABLES:
        table = schema.metadata.tables[name]
        kept = [Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, autoincrement=c.autoincrement)
                for c in table.columns if (name, c.name) not in _ADDED_COLUMNS]
        v1 = Table(name, MetaData(), *kept)
        for index in table.indexes:
            if index.name in _V5_INDEXES:
                continue
            Index(index.name, *[_rebind(expr, v1) for expr in index.expressions])
        v1.create(conn)


def _rebind(expr: Any, table: Table) -> Any:
    """An index expression (a column, or a column .desc()) on `table` instead of its own."""
    if isinstance(expr, Column):
        return table.c[expr.name]
    if isinstance(expr, UnaryExpression) and isinstance(expr.element, Column):
        return table.c[expr.element.name].desc()
    raise TypeError(f"cannot copy index expression {expr!r}")


def _add_column(conn: Connection, table: Table, column: Column[Any]) -> None:
    type_sql = column.type.compile(dialect=conn.dialect)
    if conn.dialect.name == "oracle":
        conn.execute(text(f"ALTER TABLE {table.name} ADD ({column.name} {type_sql})"))
    else:
        conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {type_sql}"))


def _v2(conn: Connection) -> None:
    _add_column(conn, schema.recipients, schema.recipients.c.notify)
    schema.source_rows.create(conn)


def _v3(conn: Connection) -> None:
    _add_column(conn, schema.messages, schema.messages.c.dlr_url)
    _add_column(conn, schema.messages, schema.messages.c.dlr_mask)


def _v4(conn: Connection) -> None:
    _add_column(conn, schema.messages, schema.messages.c.template)
    schema.templates.create(conn)


def _v5(conn: Connection) -> None:
    for name in _V5_COLUMNS:
        _add_column(conn, schema.messages, schema.messages.c[name])
    for index in schema.messages.indexes:
        if index.name in _V5_INDEXES:
            index.create(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "messages, recipients, segments, reports, MO, outbox, audit log", _v1),
    Migration(2, "legacy database sources: source_rows; recipients.notify", _v2),
    Migration(3, "per-message report URLs: messages.dlr_url, messages.dlr_mask", _v3),
    Migration(4, "message templates: templates; messages.template", _v4),
    Migration(5, "review queue and batches: messages.batch, messages.review*", _v5),
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
