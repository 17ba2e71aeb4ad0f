"""The standard interface tables a legacy system writes to and reads from.

``sms_outbox``: the legacy system inserts one row per message (one or several
numbers, the text, optional send time, priority, extension, whether a status
report is wanted, its own reference); smsgw fills in the result columns
(state, message id, submit result, carrier Msg_Ids, final Stat, error text,
times). ``sms_inbox``: smsgw inserts one row per uplink (MO) message; the
consumer sets ``read_flag`` when it has taken a row.

The same DDL, per dialect, is in ``scripts/sql/<dialect>/interface.sql`` for
DBAs who create tables by hand (tests keep the two equal); ``smsgw db
init-interface --url URL`` creates them from here. See docs/legacy-db.md.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Unicode,
    func,
    text,
)
from sqlalchemy.dialects.mssql import DATETIME2
from sqlalchemy.dialects.oracle import NVARCHAR2
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

#: The dialects the interface tables (and the polling adapter) support, by SQLAlchemy backend name.
DIALECTS = ("oracle", "mysql", "postgresql", "mssql", "sqlite")

#: Row states in sms_outbox.state, in the order a row moves through them.
STATES = ("new", "accepted", "submitted", "sent", "delivered", "undeliverable", "failed", "expired",
          "partial", "rejected", "cancelled")

OUTBOX = "sms_outbox"
INBOX = "sms_inbox"

metadata = MetaData()

# SQLite autoincrements only an INTEGER PRIMARY KEY (its rowid), not a BIGINT one.
_Id = BigInteger().with_variant(Integer(), "sqlite")
# Oracle: national character columns, so Chinese text survives a ZHS16GBK database charset.
_Text2000 = Unicode(2000).with_variant(NVARCHAR2(2000), "oracle")
_Text500 = Unicode(500).with_variant(NVARCHAR2(500), "oracle")
# SQL Server: DATETIME2 (DATETIME rounds to 3.33 ms).
_Time = DateTime().with_variant(DATETIME2(), "mssql")  # type: ignore[no-untyped-call]

outbox = Table(
    OUTBOX, metadata,
    Column("id", _Id, Identity(), primary_key=True),
    # written by the legacy system
    Column("mobiles", String(2000), nullable=False),  # one or several numbers: , ; or blanks between them
    Column("content", _Text2000, nullable=False),
    Column("send_at", _Time),  # not before this (local time); NULL: at once
    Column("priority", SmallInteger),  # 0 (bulk) .. 9 (urgent); NULL: 5
    Column("ext", String(12)),  # extension appended to the service number
    Column("report_wanted", SmallInteger, nullable=False, server_default=text("1")),  # 0: no status report
    Column("ref", String(64)),  # the legacy system's own reference; smsgw leaves it alone
    Column("template", String(64)),  # a named template instead of content (see docs/legacy-db.md)
    Column("params", _Text2000),  # the template's parameters, JSON object
    Column("created_at", _Time, nullable=False, server_default=func.current_timestamp()),
    # written by smsgw
    Column("state", String(16), nullable=False, server_default="new"),
    Column("message_id", String(20)),  # smsgw's message id (REST: GET /api/v1/messages/{id})
    Column("submit_result", String(64)),  # 0: the carrier took it; else the code, e.g. R13
    Column("msg_ids", String(2000)),  # the carrier's Msg_Id(s), comma-separated
    Column("stat", String(16)),  # the final report's Stat, e.g. DELIVRD
    Column("error", _Text500),  # why it failed or was rejected, in words
    Column("taken_by", String(64)),  # the smsgw node that took the row
    Column("taken_at", _Time),
    Column("submitted_at", _Time),
    Column("done_at", _Time),
    mysql_engine="InnoDB", mysql_charset="utf8mb4",
    # Never reuse the id of a deleted row: smsgw remembers (source, id) and would not send it again.
    sqlite_autoincrement=True,
)
Index("ix_sms_outbox_state_id", outbox.c.state, outbox.c.id)

inbox = Table(
    INBOX, metadata,
    Column("id", _Id, Identity(), primary_key=True),
    Column("mo_id", String(20), nullable=False, unique=True),  # smsgw's MO id: a repeated write is recognised
    Column("mobile", String(32), nullable=False),  # who sent it
    Column("content", _Text2000, nullable=False),
    Column("dest", String(32), nullable=False),  # the full destination: service number + extension
    Column("ext", String(21), nullable=False),  # the extension alone (which business it is for)
    Column("received_at", _Time, nullable=False),
    Column("read_flag", SmallInteger, nullable=False, server_default=text("0")),  # set by the consumer
    mysql_engine="InnoDB", mysql_charset="utf8mb4", sqlite_autoincrement=True,
)
Index("ix_sms_inbox_read_id", inbox.c.read_flag, inbox.c.id)


def dialect_for(name: str) -> Dialect:
    """A SQLAlchemy dialect object by backend name, without its driver."""
    from sqlalchemy.dialects import mssql, mysql, oracle, postgresql, sqlite

    modules = {"oracle": oracle, "mysql": mysql, "mariadb": mysql, "postgresql": postgresql, "mssql": mssql,
               "sqlite": sqlite}
    if name not in modules:
        raise ValueError(f"unsupported database {name!r}: use one of {', '.join(DIALECTS)}")
    return modules[name].dialect()  # type: ignore[no-any-return]


def ddl(dialect: str | Dialect) -> list[str]:
    """The CREATE TABLE and CREATE INDEX statements of both tables, for one dialect."""
    d = dialect_for(dialect) if isinstance(dialect, str) else dialect
    out = []
    for table in (outbox, inbox):
        out.append(str(CreateTable(table).compile(dialect=d)).strip())
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            out.append(str(CreateIndex(index).compile(dialect=d)).strip())
    return out


def create(engine: Engine) -> list[str]:
    """Create the tables that do not exist yet; returns the names created."""
    from sqlalchemy import inspect

    with engine.begin() as conn:
        existing = set(inspect(conn).get_table_names())
        missing = [t for t in (outbox, inbox) if t.name not in existing]
        metadata.create_all(conn, tables=missing)
    return [t.name for t in missing]
