"""The store's hot statements (smsgw.store._fast) on SQLite and the real PostgreSQL and MariaDB servers,
and as python-oracledb would get them."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, bindparam, literal_column, select, update
from sqlalchemy.dialects import oracle

from dbs import reset, store_url
from smsgw.store import make_engine, schema
from smsgw.store._fast import IN_MAX, Fast
from smsgw.store._ops import SEGMENT_COLUMNS

DIALECTS = ["sqlite", "postgresql", "mysql"]
NOW = 1_800_000_000.0


@pytest.fixture(params=DIALECTS, scope="module")
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    url = store_url(request.param, tmp_path_factory.mktemp("fast"))
    eng = make_engine(url, writer=True)
    reset(eng)
    yield eng
    eng.dispose()


def segment(i: int) -> tuple[Any, ...]:
    return (i, 1000 + i % 7, 1, 1, 1, f"{i:016x}", "submitted", NOW)


def test_insert_update_and_fetch_round_trip(engine: Engine) -> None:
    """Rows inserted as tuples read back equal through SQLAlchemy; an update by id changes only its rows."""
    fast = Fast(engine.dialect)
    with engine.begin() as conn:
        conn.execute(schema.segments.delete())
        fast.executemany(conn, fast.insert(schema.segments, SEGMENT_COLUMNS), [segment(i) for i in range(1, 1201)])
        fast.executemany(conn, fast.update(schema.segments, ("state", "stat", "reported_at")),
                         [("delivered", "DELIVRD", NOW + 1, i) for i in range(1, 1201, 2)])
        fast.executemany(conn, fast.insert(schema.segments, SEGMENT_COLUMNS), [])  # nothing: no statement
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(schema.segments))}
    assert len(rows) == 1200
    assert rows[3].msg_id == f"{3:016x}" and rows[3].recipient_id == 1003 and rows[3].state == "delivered"
    assert rows[3].stat == "DELIVRD" and rows[3].reported_at == NOW + 1
    assert rows[4].state == "submitted" and rows[4].stat is None and rows[4].reported_at is None
    with engine.connect() as conn:
        fetched = fast.fetch_in(conn, schema.segments, ("id", "msg_id", "state"), "id", [4, 3, 3, 99999, 1200])
    assert sorted(fetched) == [(3, f"{3:016x}", "delivered"), (4, f"{4:016x}", "submitted"),
                               (1200, f"{1200:016x}", "submitted")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wanted=st.lists(st.integers(min_value=-5, max_value=1300), max_size=2 * IN_MAX + 20))
def test_fetch_in_returns_each_matching_row_once(engine: Engine, wanted: list[int]) -> None:
    """Any list of keys (repeats, misses, more than one IN list, padded lengths): each stored match once."""
    fast = Fast(engine.dialect)
    with engine.begin() as conn:
        if conn.execute(select(schema.segments.c.id).limit(1)).first() is None:
            fast.executemany(conn, fast.insert(schema.segments, SEGMENT_COLUMNS),
                             [segment(i) for i in range(1, 1201)])
    with engine.connect() as conn:
        got = [row[0] for row in fast.fetch_in(conn, schema.segments, ("id",), "id", wanted)]
    assert sorted(got) == sorted({i for i in wanted if 1 <= i <= 1200})


def test_a_statement_with_a_constant_bind_is_refused() -> None:
    """Every bind parameter must come from the row: a constant would be sent as None."""
    from sqlalchemy.dialects import sqlite
    fast = Fast(sqlite.dialect())
    s = schema.segments.c
    with pytest.raises(ValueError, match="not row columns"):
        fast.compile("bad", lambda: update(schema.segments).where(s.id == bindparam("w_id"))
                     .values(state="delivered"), ("w_id",))


class RecordingConnection:
    """Stands in for an Oracle connection: records what goes through Connection.execute."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def execute(self, stmt: Any, params: Any = None) -> list[Any]:
        self.calls.append((str(stmt.compile(dialect=oracle.dialect())), params))  # type: ignore[no-untyped-call]
        return []


def test_oracle_goes_through_sqlalchemy_with_named_binds() -> None:
    """On Oracle the hot statements run through Connection.execute (SQLAlchemy's input sizes and booleans)."""
    fast = Fast(oracle.dialect())  # type: ignore[no-untyped-call]
    assert not fast.raw
    conn: Any = RecordingConnection()
    insert = fast.insert(schema.segments, SEGMENT_COLUMNS)
    assert ":p_number" in insert.sql and insert.sql.startswith("INSERT INTO segments")
    fast.executemany(conn, insert, [segment(1), segment(2)])
    [(sql, params)] = conn.calls
    assert sql.startswith("INSERT INTO segments")
    assert params[1] == dict(zip(insert.names, segment(2)))
    assert fast.fetch_in(conn, schema.segments, ("id", "state"), "id", [5, 6, 7]) == []
    sql, params = conn.calls[-1]
    assert "IN (:k0, :k1, :k2, :k3)" in sql and params == {"k0": 5, "k1": 6, "k2": 7, "k3": 7}


def test_many_rows_in_chunks_and_the_last_update_of_a_key_wins(engine: Engine,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-row statements split at the bind limit (here forced low); an update listing one key twice
    leaves the later values, as executemany does."""
    from smsgw.store import _fast
    monkeypatch.setattr(_fast, "SQLITE_MAX_VARIABLES", 50)
    fast = Fast(engine.dialect)
    with engine.begin() as conn:
        conn.execute(schema.segments.delete())
        fast.executemany(conn, fast.insert(schema.segments, SEGMENT_COLUMNS), [segment(i) for i in range(1, 302)])
        fast.executemany(conn, fast.update(schema.segments, ("state", "stat")),
                         [("x", "FIRST", 7), ("delivered", "DELIVRD", 8), ("undeliverable", "LAST", 7)]
                         + [("expired", "EXPIRED", i) for i in range(100, 140)])
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(schema.segments))}
    assert len(rows) == 301
    assert (rows[7].state, rows[7].stat) == ("undeliverable", "LAST")
    assert (rows[8].state, rows[139].state, rows[140].state) == ("delivered", "expired", "submitted")


def test_execute_in_covers_every_value_once(engine: Engine) -> None:
    """An UPDATE … IN run for 0, 1, 3 and 600 values (padded lists, two IN lists) touches exactly those rows."""
    fast = Fast(engine.dialect)
    s = schema.segments.c

    def build(binds: list[Any]) -> Any:
        return update(schema.segments).where(s.id.in_(binds)).values(stat=bindparam("c_stat"),
                                                                     attempt=s.attempt + literal_column("1"))
    with engine.begin() as conn:
        conn.execute(schema.segments.delete())
        fast.executemany(conn, fast.insert(schema.segments, SEGMENT_COLUMNS), [segment(i) for i in range(1, 1001)])
        for label, values in (("none", []), ("one", [5]), ("three", [10, 11, 10, 12]),
                              ("many", list(range(300, 900)))):
            fast.execute_in(conn, "test_in", build, {"c_stat": label}, values)
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(schema.segments))}
    assert (rows[5].stat, rows[5].attempt) == ("one", 2)
    assert [rows[i].stat for i in (10, 11, 12, 13)] == ["three", "three", "three", None]
    assert rows[10].attempt == 2  # listed twice, updated once
    assert {rows[i].stat for i in range(300, 900)} == {"many"} and rows[900].stat is None
    assert sum(1 for row in rows.values() if row.attempt == 2) == 1 + 3 + 600
