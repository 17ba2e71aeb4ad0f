"""The SQL one legacy source runs, built once from its configuration, per dialect.

Every value is a bound parameter; only table and column names (checked as
identifiers when the configuration is loaded, and quoted by SQLAlchemy where
needed) are part of the statement text.

Claiming rows (`Statements.claim_rows`) locks what it selects so that two
smsgw nodes polling one table never take the same row:

- PostgreSQL, MySQL 8 / MariaDB 10.6+: ``SELECT ... FOR UPDATE SKIP LOCKED``
- Oracle: ``FOR UPDATE SKIP LOCKED`` without ``FETCH FIRST`` (Oracle refuses
  the two together); the rows lock as they are fetched, and only ``limit``
  of them are fetched
- SQL Server: ``SELECT TOP (n) ... WITH (UPDLOCK, READPAST, ROWLOCK)``
- SQLite: the transaction starts with ``BEGIN IMMEDIATE`` (the engine does
  that), which locks the file for other writers
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import (
    Connection,
    DateTime,
    Integer,
    String,
    TextClause,
    Unicode,
    and_,
    bindparam,
    column,
    insert,
    select,
    table,
    text,
    update,
)
from sqlalchemy.sql.expression import ColumnClause, TableClause
from sqlalchemy.types import TypeEngine

from smsgw._config_db import (
    BIND,
    INBOX_FIELDS,
    TIME_FIELDS,
    WRITEBACK_FIELDS,
    DbSourceConfig,
    InboxMapping,
    TableMapping,
)
from smsgw.store import chunks

#: The built-in mapping of the standard sms_outbox table.
STANDARD_COLUMNS = {"to": "mobiles", "text": "content", "send_at": "send_at", "priority": "priority", "ext": "ext",
                    "report": "report_wanted", "template": "template", "params": "params"}
_STANDARD_RESULT = {"state": "{state}", "error": "{error}"}


def standard_mapping(table_name: str) -> TableMapping:
    """sms_outbox (or a table of the same shape under another name) as a mapping."""
    return TableMapping(
        table=table_name, key="id", key_type="integer", columns=STANDARD_COLUMNS, pending={"state": "new"},
        accepted={"state": "{state}", "message_id": "{message_id}", "taken_by": "{node}", "taken_at": "{now}"},
        rejected={**_STANDARD_RESULT, "taken_by": "{node}", "taken_at": "{now}", "done_at": "{now}"},
        submitted={**_STANDARD_RESULT, "submit_result": "{result}", "msg_ids": "{msg_ids}",
                   "submitted_at": "{submitted_at}"},
        reported={**_STANDARD_RESULT, "submit_result": "{result}", "msg_ids": "{msg_ids}", "stat": "{stat}",
                  "done_at": "{done_at}"},
    )


def standard_inbox(table_name: str) -> InboxMapping:
    return InboxMapping(table=table_name, columns={
        "mo_id": "mo_id", "mobile": "mobile", "content": "content", "dest": "dest", "ext": "ext",
        "received_at": "received_at"})


def _field_type(name: str) -> TypeEngine[Any]:
    if name in TIME_FIELDS:
        return DateTime()
    if name in ("content", "error"):
        return Unicode()
    return String()


def _table(name: str, columns: Sequence[str]) -> TableClause:
    schema, _, bare = name.rpartition(".")
    return table(bare, *[column(c) for c in dict.fromkeys(columns)], schema=schema or None)


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row as the claim SELECT returned it: the key and the mapped columns by role."""

    key: Any
    values: dict[str, Any]


class WriteBack:
    """One write-back (accepted, rejected, submitted, reported, or the MO insert) as a statement."""

    def __init__(self, stmt: Any, fields: tuple[str, ...], literals: dict[str, Any]) -> None:
        self.stmt = stmt
        self.fields = fields
        self._literals = literals

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        """The bound values: the event's fields (times as naive local datetimes) and the literals."""
        out = {f"f_{name}": values.get(name) for name in self.fields}
        out.update(self._literals)
        return out

    def run(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(self.stmt, [self.params(r) for r in rows])


class Statements:
    """What one source runs against its database."""

    def __init__(self, source: DbSourceConfig) -> None:
        self.dialect = source.dialect()
        self.mapping = source.mapping or standard_mapping(source.table)
        m = self.mapping
        self.key_type: TypeEngine[Any] = Integer() if m.key_type == "integer" else String()
        self._table = t = _table(m.table, [m.key, *m.columns.values(), *m.pending])
        # The rows to take (none with a select: mapping, where the select says).
        self._pending = and_(*[t.c[c] == bindparam(f"p_{c}", v) for c, v in m.pending.items()]) if m.pending else None
        self.accepted = self._writeback("accepted", m.accepted)
        self.rejected = self._writeback("rejected", m.rejected)
        self.submitted = self._writeback("submitted", m.submitted) if m.submitted else None
        self.reported = self._writeback("reported", m.reported) if m.reported else None
        inbox_map = source.mo_inbox or (standard_inbox(source.inbox) if source.inbox else None)
        self.inbox = self._inbox(inbox_map) if inbox_map is not None else None
        self.inbox_dedupe = inbox_map is not None and inbox_map.sql is None and "mo_id" in inbox_map.columns
        self._inbox_mo_id: ColumnClause[Any] | None = None  # to skip MO already in the inbox
        if self.inbox_dedupe and inbox_map is not None and inbox_map.table is not None:
            col = inbox_map.columns["mo_id"]
            self._inbox_mo_id = _table(inbox_map.table, [col]).c[col]

    # --- claiming ----------------------------------------------------------------

    def claim_select(self, limit: int, *, skip_locked: bool = True) -> Any:
        """The locking SELECT of up to `limit` pending rows, oldest key first.

        `skip_locked` False (MySQL before 8.0.1, MariaDB before 10.6): a plain FOR UPDATE,
        so a second node waits for the first one's rows instead of skipping them.
        """
        m = self.mapping
        if m.select is not None:
            # :limit is optional (Oracle cannot LIMIT a FOR UPDATE select; fetchmany caps it).
            chosen = text(_escape_casts(m.select))
            return chosen.bindparams(limit=limit) if ":limit" in m.select else chosen
        t = self._table
        cols = [t.c[m.key].label("k")] + [t.c[c].label(f"c_{role}") for role, c in m.columns.items()]
        assert self._pending is not None  # the configuration has pending: without select:
        stmt = select(*cols).where(self._pending).order_by(t.c[m.key])
        if self.dialect == "mssql":
            return stmt.limit(limit).with_hint(t, "WITH (UPDLOCK, READPAST, ROWLOCK)", "mssql")
        if self.dialect == "oracle":
            return stmt.with_for_update(skip_locked=True)  # fetchmany(limit), see claim_rows
        if self.dialect in ("postgresql", "mysql"):
            return stmt.limit(limit).with_for_update(skip_locked=skip_locked)
        return stmt.limit(limit)  # sqlite: BEGIN IMMEDIATE holds the file

    def claim_rows(self, conn: Connection, limit: int) -> list[RawRow]:
        """Run the claim SELECT in the caller's transaction."""
        result = conn.execute(self.claim_select(limit, skip_locked=supports_skip_locked(conn)))
        rows = result.fetchmany(limit)
        result.close()
        m = self.mapping
        out = []
        if m.select is not None:
            for row in rows:
                data = row._mapping
                out.append(RawRow(data[m.key], {role: data.get(col) for role, col in m.columns.items()}))
        else:
            for row in rows:
                data = row._mapping
                out.append(RawRow(data["k"], {role: data[f"c_{role}"] for role in m.columns}))
        return out

    def still_pending(self, conn: Connection, keys: list[Any]) -> list[Any]:
        """Which of `keys` still match `pending:` (with a select: mapping there is no telling: none)."""
        if not keys or self._pending is None:
            return []
        t, key = self._table, self._table.c[self.mapping.key]
        found: list[Any] = []
        for chunk in chunks(keys, 500):
            # A locking read: a row a poll holds right now is waited for, then seen as taken.
            stmt = select(key).where(self._pending, key.in_(chunk))
            if self.dialect == "mssql":
                stmt = stmt.with_hint(t, "WITH (UPDLOCK, ROWLOCK)", "mssql")
            elif self.dialect != "sqlite":
                stmt = stmt.with_for_update()
            found += conn.execute(stmt).scalars().all()
        return found

    def key_value(self, text_key: str) -> Any:
        return int(text_key) if self.mapping.key_type == "integer" else text_key

    # --- write-backs ------------------------------------------------------------------

    def _writeback(self, event: str, spec: dict[str, Any]) -> WriteBack:
        fields = WRITEBACK_FIELDS[event]
        if set(spec) == {"sql"}:
            return self._text(str(spec["sql"]), fields)
        m = self.mapping
        t = _table(m.table, [m.key, *spec])
        values: dict[str, Any] = {}
        literals: dict[str, Any] = {}
        used = []
        for col, v in spec.items():
            name = v[1:-1] if isinstance(v, str) and v.startswith("{") and v.endswith("}") else None
            if name is not None:
                values[col] = bindparam(f"f_{name}", type_=_field_type(name))
                used.append(name)
            else:
                literals[f"l_{col}"] = v
                values[col] = bindparam(f"l_{col}")
        stmt = update(t).where(t.c[m.key] == bindparam("f_key", type_=self.key_type)).values(values)
        return WriteBack(stmt, tuple(dict.fromkeys(["key", *used])), literals)

    def _text(self, sql: str, fields: tuple[str, ...]) -> WriteBack:
        # :name in the configured text becomes :f_name, typed, so times bind as datetimes everywhere.
        names = [n for n in dict.fromkeys(BIND.findall(sql)) if n in fields]
        renamed = BIND.sub(lambda mt: f":f_{mt.group(1)}" if mt.group(1) in fields else mt.group(0), sql)
        clause: TextClause = text(_escape_casts(renamed)).bindparams(
            *[bindparam(f"f_{n}", type_=self.key_type if n == "key" else _field_type(n)) for n in names])
        return WriteBack(clause, tuple(names), {})

    def _inbox(self, spec: InboxMapping) -> WriteBack:
        if spec.sql is not None:
            return self._text(spec.sql, INBOX_FIELDS)
        assert spec.table is not None
        t = _table(spec.table, list(spec.columns.values()))
        stmt = insert(t).values({col: bindparam(f"f_{f}", type_=_field_type(f)) for f, col in spec.columns.items()})
        return WriteBack(stmt, tuple(spec.columns), {})

    def inbox_existing(self, conn: Connection, mo_ids: list[str]) -> set[str]:
        """MO ids already in the inbox (a write whose commit was not recorded): not inserted twice."""
        col = self._inbox_mo_id
        if col is None or not mo_ids:
            return set()
        found: set[str] = set()
        for chunk in chunks(mo_ids, 500):
            found.update(str(v) for v in conn.execute(select(col).where(col.in_(chunk))).scalars())
        return found


def _escape_casts(sql: str) -> str:
    """PostgreSQL's `:key::int` casts: `::` is not a bind marker for SQLAlchemy's text()."""
    return sql.replace("::", "\\:\\:")


def supports_skip_locked(conn: Connection) -> bool:
    """SKIP LOCKED exists in PostgreSQL 9.5+, Oracle, MySQL 8.0.1+ and MariaDB 10.6+."""
    dialect = conn.dialect
    if dialect.name != "mysql":
        return True
    version = tuple(dialect.server_version_info or ())
    return version >= ((10, 6) if getattr(dialect, "is_mariadb", False) else (8, 0, 1))


def local_time(epoch: float | None) -> datetime | None:
    """Legacy tables keep local wall-clock time without a zone."""
    return None if epoch is None else datetime.fromtimestamp(epoch)
