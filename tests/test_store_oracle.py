"""The Oracle path without an Oracle server: the DDL and the claim SQL as python-oracledb would get them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.dialects import oracle
from sqlalchemy.schema import CreateIndex, CreateTable

from smsgw.store import ClaimArgs, IdGenerator, dialect_of, schema
from smsgw.store._ops import Ops


def test_oracle_url_selects_the_oracle_dialect_and_driver() -> None:
    """An oracle+oracledb URL makes an engine on python-oracledb without connecting."""
    engine = create_engine("oracle+oracledb://smsgw:pw@127.0.0.1:1521/?service_name=ORCLPDB1")
    assert dialect_of(str(engine.url)) == "oracle"
    assert engine.dialect.driver == "oracledb"


def test_every_table_and_index_compiles_for_oracle() -> None:
    """The schema's DDL renders for Oracle with 64-bit ids and double-precision times."""
    dialect: Any = oracle.dialect()  # type: ignore[no-untyped-call]
    for table in schema.metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=dialect))
        assert "CREATE TABLE" in ddl
        for index in table.indexes:
            assert str(CreateIndex(index).compile(dialect=dialect)).startswith("CREATE INDEX")
    recipients = str(CreateTable(schema.recipients).compile(dialect=dialect))
    assert "id NUMBER(19) NOT NULL" in recipients
    assert "due_at DOUBLE PRECISION" in recipients or "due_at BINARY_DOUBLE" in recipients


class RecordingConnection:
    """Stands in for an Oracle connection: records statements compiled for Oracle, returns no rows."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.fetched: list[int] = []

    def execute(self, stmt: Any, *args: Any) -> "RecordingConnection":
        self.sql.append(str(stmt.compile(dialect=oracle.dialect())))  # type: ignore[no-untyped-call]
        return self

    def fetchmany(self, size: int) -> list[Any]:
        self.fetched.append(size)
        return []

    def close(self) -> None:
        pass


def test_claim_locks_with_skip_locked_and_fetchmany_instead_of_fetch_first() -> None:
    """The Oracle claim is FOR UPDATE SKIP LOCKED without FETCH FIRST (ORA-02014), limited by fetchmany."""
    conn = RecordingConnection()
    ops = Ops("oracle", IdGenerator(0))
    assert ops.claim(conn, [ClaimArgs("cmcc", "a", 50, 1.0, "node", 61.0)]) == [[]]  # type: ignore[arg-type]
    [sql] = conn.sql
    assert sql.rstrip().endswith("FOR UPDATE SKIP LOCKED")
    assert "FETCH FIRST" not in sql and "ROWNUM" not in sql
    assert conn.fetched == [50]
