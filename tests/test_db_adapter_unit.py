"""The legacy-database adapter's parts, each alone: no daemon, no poller, no legacy server.

- `db_sources:` configuration: what loads, and every problem with its line and fix;
- `active()`: the active_hours windows;
- `Statements`: the SQL per dialect compiled without a server, and a real SQLite run;
- `rows`: driver values turned into a SendRequest or a RowError, never anything else;
- `_aggregate` / `RowState`: what a legacy row shows for its recipients;
- the store's v2 migration on SQLite, PostgreSQL and MariaDB;
- `OutboxWorker` on a real SQLite store with a fake receiver and a `Clock`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import pathlib
import re
import shutil
import tempfile
import textwrap
import time
from decimal import Decimal
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import DateTime, Engine, Integer, String, create_engine, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mssql, mysql, oracle, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import Compiled
from structlog.testing import capture_logs
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from dbs import server_url
from smsgw._config_db import ActiveWindow, DbSourceConfig
from smsgw.adapters.db import interface
from smsgw.adapters.db.engine import is_unreachable, make_source_engine
from smsgw.adapters.db.rows import RowError, epoch, flag, numbers, request
from smsgw.adapters.db.source import RowState, _aggregate, active
from smsgw.adapters.db.statements import STANDARD_COLUMNS, Statements, supports_skip_locked
from smsgw.config import ConfigError, check_config, load_config
from smsgw.model import SendRequest
from smsgw.outbox import Outcome, OutboxWorker, Refused, Unreachable
from smsgw.store import OutboxEvent, Store, make_engine, migrations, schema

R: Any = _reactor
KEY_HASH = hashlib.sha256(b"k").hexdigest()
PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<path>.+?): (?P<what>.+) — fix: (?P<fix>.+)$")


# --- configuration ---------------------------------------------------------------------------------

def base(tmp_path: pathlib.Path) -> str:
    """Nine lines: the store in tmp_path, an account that may use db and one that may not."""
    return textwrap.dedent(f"""\
        node: {{data_dir: "{tmp_path}"}}
        accounts:
          - name: app
            api_key_sha256: {KEY_HASH}
            interfaces: [rest, db]
          - name: web
            api_key_sha256: {KEY_HASH}
            interfaces: [rest]
        db_sources:
        """)


FIRST = 10  # the line of the first db_sources entry after base()

# A valid mapping; the cases below change one thing. Its lines are FIRST .. FIRST + 9.
MAPPING = """\
  - name: m
    url: "postgresql+psycopg://u@127.0.0.1/erp"
    account: app
    mapping:
      table: sms_queue
      key: id
      columns: {to: phone, text: msg}
      pending: {flag: 0}
      accepted: {flag: 1}
      rejected: {flag: 2}
"""


def write(tmp_path: pathlib.Path, sources: str) -> str:
    path = tmp_path / "smsgw.yaml"
    path.write_text(base(tmp_path) + sources, encoding="utf-8")
    return str(path)


def problems_of(tmp_path: pathlib.Path, sources: str) -> list[dict[str, str]]:
    found = check_config(write(tmp_path, sources), {})
    parsed = [PROBLEM.match(p) for p in found]
    assert all(parsed), found
    return [m.groupdict() for m in parsed if m]


def test_standard_source_and_mapping_load(tmp_path: pathlib.Path) -> None:
    """A source on the standard tables and a source with a mapping load with their defaults and values."""
    config = load_config(write(tmp_path, MAPPING + textwrap.indent(textwrap.dedent(f"""\
        - name: std
          url: "sqlite:///{tmp_path}/legacy.db"
          poll_interval: 0.2
        """), "  ")), {})
    mapped, std = config.db_sources
    assert (std.name, std.table, std.inbox, std.mapping, std.account_name()) == (
        "std", "sms_outbox", "sms_inbox", None, "std")
    assert (std.dialect(), std.interface(), std.poll_interval, std.batch_size, std.active_hours) == (
        "sqlite", "db:std", 0.2, 500, ())
    assert mapped.dialect() == "postgresql" and mapped.account_name() == "app"
    m = mapped.mapping
    assert m is not None
    assert (m.table, m.key, m.key_type, m.columns, m.pending, m.accepted, m.rejected, m.submitted) == (
        "sms_queue", "id", "integer", {"to": "phone", "text": "msg"}, {"flag": 0}, {"flag": 1}, {"flag": 2}, None)


def test_mariadb_source_uses_the_mysql_dialect(tmp_path: pathlib.Path) -> None:
    """A mariadb+pymysql URL loads and runs the MySQL statements."""
    config = load_config(write(tmp_path, '  - {name: s, url: "mariadb+pymysql://u@127.0.0.1/erp"}\n'), {})
    assert config.db_sources[0].dialect() == "mysql"


_SQLITE = '  - name: s\n    url: "sqlite:////srv/legacy/orders.db"\n    active_hours:\n'

# (entry, line relative to FIRST, path, what the problem says, what its fix says)
CASES: dict[str, tuple[str, int, str, str, str]] = {
    "scheme": ('  - {name: s, url: "db2://u@127.0.0.1/erp"}\n', 0, "db_sources[0].url",
               "the database 'db2' is not supported for a legacy source", "postgresql+psycopg://"),
    "driver": ('  - {name: s, url: "postgresql+asyncpg://u@127.0.0.1/erp"}\n', 0, "db_sources[0].url",
               "the driver 'postgresql+asyncpg' is not one smsgw knows for postgresql",
               "write postgresql+psycopg://"),
    "no to": (MAPPING.replace("to: phone, ", ""), 6, "db_sources[0].mapping.columns", "columns lacks to",
              "map to: to the column holding the mobile number(s)"),
    "role": (MAPPING.replace("text: msg", "text: msg, colour: c"), 6, "db_sources[0].mapping.columns",
             "unknown column role(s) colour", "map only to, text, send_at"),
    "both": (MAPPING.replace("      pending: {flag: 0}\n", "      pending: {flag: 0}\n      select: SELECT 1\n"),
             8, "db_sources[0].mapping.select", "with pending: or with select:, not both or neither", "pending:"),
    "neither": (MAPPING.replace("      pending: {flag: 0}\n", ""), 3, "db_sources[0].mapping",
                "with pending: or with select:, not both or neither", "pending:"),
    "accepted": (MAPPING.replace("accepted: {flag: 1}", "accepted: {done: 1}"), 8, "db_sources[0].mapping.accepted",
                 "accepted: changes none of the pending: columns", "assign one of flag in accepted:"),
    "field": (MAPPING.replace("rejected: {flag: 2}", 'rejected: {flag: 2, why: "{stat}"}'), 9,
              "db_sources[0].mapping.rejected", "why: the rejected write-back has no field {stat}", "{error}"),
    "mixed": (MAPPING.replace("rejected: {flag: 2}", 'rejected: {flag: 2, why: "failed: {error}"}'), 9,
              "db_sources[0].mapping.rejected", "mixes a {field} with other text", "write the field alone"),
    "sql bind": (MAPPING.replace("rejected: {flag: 2}",
                                 'rejected: {sql: "UPDATE q SET flag = 2 WHERE id = :key AND by = :who"}'), 9,
                 "db_sources[0].mapping.rejected", "the statement binds :who, which the rejected write-back",
                 "bind only :key, :message_id"),
    "select bind": (MAPPING.replace("      pending: {flag: 0}\n", "      select: SELECT id FROM q WHERE x = :x\n"),
                    7, "db_sources[0].mapping.select", "the select binds :x", "bind only :limit"),
    "identifier": (MAPPING.replace("table: sms_queue", 'table: "x; drop table y"'), 4, "db_sources[0].mapping.table",
                   "'x; drop table y' is not a table or column name", "values never go here"),
    "column name": (MAPPING.replace("accepted: {flag: 1}", 'accepted: {flag: 1, "a b": 2}'), 8,
                    "db_sources[0].mapping.accepted", "'a b' is not a table or column name", "letters, digits"),
    "no account": (MAPPING.replace("account: app", "account: nobody"), 2, "db_sources[0].account",
                   "no account is named 'nobody'", "add it under accounts:"),
    "no db": (MAPPING.replace("account: app", "account: web"), 2, "db_sources[0].account",
              "account 'web' may not use the db interface", "add db to that account's interfaces"),
    "from": (_SQLITE + '      - days: mon-fri\n        from: "25:00"\n', 4, "db_sources[0].active_hours[0].from",
             "'25:00' is not a time of day", "write HH:MM"),
    "to": (_SQLITE + '      - days: mon-fri\n        to: "24:01"\n', 4, "db_sources[0].active_hours[0].to",
           "'24:01' is not a time of day", '"24:00": midnight'),
    "day": (_SQLITE + "      - days: [mon, funday]\n", 3, "db_sources[0].active_hours[0]",
            "'funday' is not a day or a range of days", "mon-fri"),
    "duplicate": ('  - {name: s, url: "sqlite:////srv/a.db"}\n  - {name: s, url: "sqlite:////srv/b.db"}\n', 1,
                  "db_sources[1].name", "the name 's' is already used by db_sources[0]", "its own name"),
    "inbox": (MAPPING + "    mo_inbox: {table: mo, columns: {mobile: phone}}\n", 10, "db_sources[0].mo_inbox.columns",
              "the inbox columns lack content", "map content:"),
}


@pytest.mark.parametrize("case", CASES)
def test_each_source_problem_is_named_with_its_line_and_fix(tmp_path: pathlib.Path, case: str) -> None:
    """Every bad db_sources entry gives exactly one problem: its line, its path, what is wrong and the fix."""
    entry, line, path, what, fix = CASES[case]
    [problem] = problems_of(tmp_path, entry)
    assert (int(problem["line"]), problem["path"]) == (FIRST + line, path), problem
    assert what in problem["what"], problem
    assert fix in problem["fix"], problem
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, entry), {})


def test_a_source_on_the_store_file_is_refused(tmp_path: pathlib.Path) -> None:
    """A SQLite source that is smsgw's own store file (data_dir/smsgw.db) is a problem on its url line."""
    [problem] = problems_of(tmp_path, f'  - {{name: s, url: "sqlite:///{tmp_path}/smsgw.db"}}\n')
    assert (int(problem["line"]), problem["path"]) == (FIRST, "db_sources[0].url")
    assert "the source is smsgw's own SQLite store file" in problem["what"]
    assert "legacy system's database" in problem["fix"]


def test_a_source_on_the_store_file_is_refused_whatever_the_driver_name(tmp_path: pathlib.Path) -> None:
    """sqlite+pysqlite:///data_dir/smsgw.db is the store file too."""
    [problem] = problems_of(tmp_path, f'  - {{name: s, url: "sqlite+pysqlite:///{tmp_path}/smsgw.db"}}\n')
    assert "smsgw's own SQLite store file" in problem["what"]


def test_active_hours_days_expand(tmp_path: pathlib.Path) -> None:
    """days: mon-fri, "sat,sun" and a range across the week's end expand to the days they name."""
    config = load_config(write(tmp_path, _SQLITE + textwrap.indent(textwrap.dedent("""\
        - {days: mon-fri, from: "08:00", to: "18:00"}
        - {days: "sat,sun", from: "10:00", to: "12:00"}
        - {days: fri-mon}
        - {days: [Tue, wed-thu]}
        - {from: "22:00", to: "06:00"}
        """), "      ")), {})
    windows = config.db_sources[0].active_hours
    assert [w.days for w in windows] == [
        ("mon", "tue", "wed", "thu", "fri"), ("sat", "sun"), ("fri", "sat", "sun", "mon"), ("tue", "wed", "thu"),
        ("mon", "tue", "wed", "thu", "fri", "sat", "sun")]
    assert [(w.from_, w.to) for w in windows] == [
        ("08:00", "18:00"), ("10:00", "12:00"), ("00:00", "24:00"), ("00:00", "24:00"), ("22:00", "06:00")]


# --- active() ----------------------------------------------------------------------------------------

MONDAY = dt.date(2026, 1, 5)


def at(day: int, hhmm: str) -> dt.datetime:
    """`day` days after Monday 2026-01-05 (0: Monday, 4: Friday, 7: the next Monday) at HH:MM."""
    h, m = hhmm.split(":")
    return dt.datetime.combine(MONDAY + dt.timedelta(days=day), dt.time(int(h), int(m)))


def window(days: str = "mon-sun", start: str = "00:00", end: str = "24:00") -> ActiveWindow:
    return ActiveWindow.model_validate({"days": days, "from": start, "to": end})


def test_no_windows_is_always_active() -> None:
    """Without active_hours a source polls at every moment of every day."""
    assert all(active((), at(d, t)) for d in range(7) for t in ("00:00", "12:34", "23:59"))


def test_a_window_includes_its_start_and_excludes_its_end() -> None:
    """08:00-18:00 on weekdays: active from 08:00 up to 17:59, not at 07:59 or 18:00."""
    office = [window("mon-fri", "08:00", "18:00")]
    assert [active(office, at(0, t)) for t in ("07:59", "08:00", "12:00", "17:59", "18:00", "23:00")] == [
        False, True, True, True, False, False]


def test_a_window_applies_on_its_days_only() -> None:
    """A mon-fri window is inactive all weekend; a sat,sun one only at the weekend."""
    weekdays, weekend = [window("mon-fri", "08:00", "18:00")], [window("sat,sun", "08:00", "18:00")]
    assert [active(weekdays, at(d, "12:00")) for d in range(7)] == [True] * 5 + [False] * 2
    assert [active(weekend, at(d, "12:00")) for d in range(7)] == [False] * 5 + [True] * 2


def test_a_window_to_midnight_covers_the_last_minute() -> None:
    """to: "24:00" includes 23:59, and the next day starts outside the window."""
    evening = [window("mon", "20:00", "24:00")]
    assert [active(evening, at(0, "19:59")), active(evening, at(0, "23:59")), active(evening, at(1, "00:00"))] == [
        False, True, False]


def test_a_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    """fri 22:00-06:00 is active Friday night into Saturday morning, not Saturday night or Friday morning."""
    night = [window("fri", "22:00", "06:00")]
    assert active(night, at(4, "22:00")) and active(night, at(4, "23:59"))
    assert active(night, at(5, "00:00")) and active(night, at(5, "05:59"))
    assert not active(night, at(5, "06:00"))
    assert not active(night, at(4, "05:00"))  # Thursday's night: not in days
    assert not active(night, at(5, "23:00"))  # Saturday's night: not in days
    assert not active(night, at(4, "21:59"))


def test_any_window_makes_a_source_active() -> None:
    """With several windows a moment in any one of them is active."""
    split = [window("mon-fri", "08:00", "12:00"), window("mon-fri", "14:00", "18:00"), window("sun", "10:00", "11:00")]
    assert [active(split, at(2, t)) for t in ("09:00", "13:00", "15:00")] == [True, False, True]
    assert active(split, at(6, "10:30")) and not active(split, at(5, "10:30"))


# --- Statements: the SQL per dialect, without a server --------------------------------------------------

DIALECTS: dict[str, Dialect] = {
    "postgresql": postgresql.dialect(),  # type: ignore[no-untyped-call]
    "mysql": mysql.dialect(),
    "oracle": oracle.dialect(),  # type: ignore[no-untyped-call]
    "mssql": mssql.dialect(),  # type: ignore[no-untyped-call]
    "sqlite": sqlite.dialect(),
}
URLS = {
    "postgresql": "postgresql+psycopg://u@127.0.0.1/erp",
    "mysql": "mysql+pymysql://u@127.0.0.1/erp",
    "oracle": "oracle+oracledb://u@127.0.0.1:1521/?service_name=ERP",
    "mssql": "mssql+pyodbc://u@127.0.0.1:1433/erp?driver=ODBC+Driver+18+for+SQL+Server",
    "sqlite": "sqlite:////srv/legacy/orders.db",
}
EVENTS = ("accepted", "rejected", "submitted", "reported")
LIMIT = 4321  # a number no statement holds as text
MAPPED = {"table": "sms_queue", "key": "id", "columns": {"to": "phone", "text": "msg"},
          "pending": {"status": "NEWROW"},
          "accepted": {"status": "DONEX", "mid": "{message_id}", "taken": "{now}"},
          "rejected": {"status": "BADX", "why": "{error}"},
          "submitted": {"status": "SENTX", "ids": "{msg_ids}", "at": "{submitted_at}"},
          "reported": {"status": "ENDX", "stat": "{stat}", "at": "{done_at}"}}


def source(dialect: str, **fields: Any) -> DbSourceConfig:
    return DbSourceConfig.model_validate({"name": "erp", "url": URLS[dialect], **fields})


def compiled(stmt: Any, dialect: str) -> Compiled:
    result: Compiled = stmt.compile(dialect=DIALECTS[dialect])
    return result


def bind_types(c: Compiled) -> dict[str, type[Any]]:
    return {name: type(bind.type) for name, bind in c.binds.items()}  # type: ignore[attr-defined]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_claim_locks_with_skip_locked_and_a_limit(dialect: str) -> None:
    """PostgreSQL and MySQL claim with ORDER BY key, LIMIT and FOR UPDATE SKIP LOCKED, values bound."""
    c = compiled(Statements(source(dialect, mapping=MAPPED)).claim_select(LIMIT), dialect)
    sql = str(c)
    assert sql.rstrip().endswith("FOR UPDATE SKIP LOCKED"), sql
    assert "LIMIT" in sql and "ORDER BY sms_queue.id" in sql
    assert "NEWROW" not in sql and str(LIMIT) not in sql
    assert set(c.params.values()) == {"NEWROW", LIMIT}


class ServerDialect(NamedTuple):
    name: str
    server_version_info: tuple[int, ...]
    is_mariadb: bool = False


@pytest.mark.parametrize(("server", "skips"), [
    (ServerDialect("mysql", (8, 0, 36)), True), (ServerDialect("mysql", (5, 7, 44)), False),
    (ServerDialect("mysql", (10, 6, 16), True), True), (ServerDialect("mysql", (10, 5, 9), True), False),
    (ServerDialect("postgresql", (9, 6)), True), (ServerDialect("oracle", (12, 1)), True)])
def test_skip_locked_only_where_the_server_has_it(server: ServerDialect, skips: bool) -> None:
    """MySQL before 8.0.1 and MariaDB before 10.6 get a plain FOR UPDATE (they wait instead of skipping)."""
    conn = type("Conn", (), {"dialect": server})()
    assert supports_skip_locked(conn) is skips
    sql = str(compiled(Statements(source("mysql", mapping=MAPPED)).claim_select(LIMIT, skip_locked=skips), "mysql"))
    assert sql.rstrip().endswith("FOR UPDATE SKIP LOCKED" if skips else "FOR UPDATE"), sql


def test_oracle_claim_skips_locked_rows_without_fetch_first() -> None:
    """Oracle claims with FOR UPDATE SKIP LOCKED and no FETCH FIRST or ROWNUM (ORA-02014)."""
    c = compiled(Statements(source("oracle", mapping=MAPPED)).claim_select(LIMIT), "oracle")
    sql = str(c)
    assert sql.rstrip().endswith("FOR UPDATE SKIP LOCKED"), sql
    assert "FETCH FIRST" not in sql and "ROWNUM" not in sql and "LIMIT" not in sql
    assert "NEWROW" not in sql and c.params == {"p_status": "NEWROW"}


class FakeResult:
    """What an Oracle cursor returns to claim_rows: rows with _mapping, fetched in one fetchmany."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.fetched: list[int] = []
        self.closed = False

    def fetchmany(self, size: int) -> list[Any]:
        self.fetched.append(size)
        return [type("Row", (), {"_mapping": r})() for r in self.rows[:size]]

    def close(self) -> None:
        self.closed = True


class RecordingConnection:
    """Stands in for an Oracle connection: compiles what it is given and answers with FakeResult."""

    dialect = DIALECTS["oracle"]

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.result = FakeResult(rows)
        self.sql: list[str] = []

    def execute(self, stmt: Any) -> FakeResult:
        self.sql.append(str(compiled(stmt, "oracle")))
        return self.result


def test_oracle_claim_rows_fetches_only_the_limit() -> None:
    """On Oracle claim_rows fetches `limit` rows (locking only those) and maps the labels to roles."""
    conn = RecordingConnection([{"k": i, "c_to": f"1380013800{i}", "c_text": f"t{i}"} for i in range(5)])
    rows = Statements(source("oracle", mapping=MAPPED)).claim_rows(conn, 3)  # type: ignore[arg-type]
    assert conn.result.fetched == [3] and conn.result.closed
    assert [(r.key, r.values) for r in rows] == [(i, {"to": f"1380013800{i}", "text": f"t{i}"}) for i in range(3)]
    assert "FETCH FIRST" not in conn.sql[0]


def test_mssql_claim_uses_top_and_lock_hints() -> None:
    """SQL Server claims with TOP and WITH (UPDLOCK, READPAST, ROWLOCK), never FOR UPDATE."""
    c = compiled(Statements(source("mssql", mapping=MAPPED)).claim_select(LIMIT), "mssql")
    sql = str(c)
    assert "SELECT TOP" in sql and "WITH (UPDLOCK, READPAST, ROWLOCK)" in sql, sql
    assert "FOR UPDATE" not in sql and "LIMIT" not in sql
    assert "NEWROW" not in sql and str(LIMIT) not in sql
    assert set(c.params.values()) == {"NEWROW", LIMIT}


def test_sqlite_claim_has_a_limit_and_no_row_locks() -> None:
    """SQLite claims with LIMIT and no FOR UPDATE (BEGIN IMMEDIATE locks the file)."""
    c = compiled(Statements(source("sqlite", mapping=MAPPED)).claim_select(LIMIT), "sqlite")
    sql = str(c)
    assert "LIMIT" in sql and "FOR UPDATE" not in sql
    assert "NEWROW" not in sql and str(LIMIT) not in sql and LIMIT in c.params.values()


def test_a_select_claim_binds_the_limit() -> None:
    """A mapping's select: is sent as written with :limit bound."""
    mapping = {**MAPPED, "pending": {}, "select": "SELECT id, phone, msg FROM sms_queue WHERE status = 0 "
                                                 "ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"}
    c = compiled(Statements(source("postgresql", mapping=mapping)).claim_select(LIMIT), "postgresql")
    assert c.params == {"limit": LIMIT} and str(LIMIT) not in str(c)


def test_a_select_claim_without_a_limit_compiles() -> None:
    """A select: without :limit (fetchmany limits it) is accepted by the configuration and compiles."""
    mapping = {**MAPPED, "pending": {}, "select": "SELECT id, phone, msg FROM sms_queue WHERE status = 0 "
                                                 "ORDER BY id FOR UPDATE SKIP LOCKED"}
    compiled(Statements(source("oracle", mapping=mapping)).claim_select(LIMIT), "oracle")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_write_back_values_are_bound_never_written_into_the_sql(dialect: str) -> None:
    """Literals and {fields} of every write-back are parameters; the statement text holds names only."""
    st = Statements(source(dialect, mapping=MAPPED))
    values = {"key": 7, "message_id": "MID123", "state": "accepted", "now": dt.datetime(2026, 1, 5, 8, 0),
              "node": "n1", "error": "ERRTEXT", "msg_ids": "IDS1,IDS2", "stat": "DELIVRD",
              "submitted_at": dt.datetime(2026, 1, 5, 8, 1), "done_at": dt.datetime(2026, 1, 5, 8, 2)}
    literals = {"accepted": "DONEX", "rejected": "BADX", "submitted": "SENTX", "reported": "ENDX"}
    fields = {"accepted": "MID123", "rejected": "ERRTEXT", "submitted": "IDS1,IDS2", "reported": "DELIVRD"}
    for event in EVENTS:
        wb = getattr(st, event)
        c = compiled(wb.stmt, dialect)
        sql = str(c)
        assert sql.startswith("UPDATE sms_queue SET"), sql
        bound = c.construct_params(wb.params(values))
        assert bound is not None
        for value in (literals[event], fields[event]):
            assert value not in sql and value in bound.values(), (event, sql, bound)
        assert bound["f_key"] == 7


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("key_type", ["integer", "text"])
def test_every_write_back_compiles_with_a_typed_key(dialect: str, key_type: str) -> None:
    """The four write-backs of the standard table and of a mapping compile; the key binds as its type."""
    key_class = Integer if key_type == "integer" else String
    mapping = {**MAPPED, "key_type": key_type}
    standard = Statements(source(dialect))
    for st in (standard, Statements(source(dialect, mapping=mapping))):
        expect = Integer if st is standard else key_class
        for event in EVENTS:
            types = bind_types(compiled(getattr(st, event).stmt, dialect))
            assert types["f_key"] is expect, (event, types)
    times = {"accepted": "f_now", "rejected": "f_now", "submitted": "f_submitted_at", "reported": "f_done_at"}
    for event, name in times.items():
        assert bind_types(compiled(getattr(standard, event).stmt, dialect))[name] is DateTime
    assert standard.inbox is not None
    assert bind_types(compiled(standard.inbox.stmt, dialect))["f_received_at"] is DateTime


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sql_statements_bind_typed_fields(dialect: str) -> None:
    """In sql: statements :name becomes :f_name, times typed DateTime and the key typed as the key."""
    mapping = {**MAPPED,
               "accepted": {"sql": "UPDATE q SET status = 1, mid = :message_id, at = :now WHERE id = :key"},
               "submitted": {"sql": "UPDATE q SET ids = :msg_ids, at = :submitted_at WHERE id = :key"},
               "reported": {"sql": "UPDATE q SET stat = :stat, at = :done_at, by = :node WHERE id = :key"}}
    inbox = {"sql": "INSERT INTO mo (m, c, at, seen) VALUES (:mobile, :content, :received_at, :now)"}
    st = Statements(source(dialect, mapping=mapping, mo_inbox=inbox))
    assert st.submitted is not None and st.reported is not None and st.inbox is not None
    expected = {
        "accepted": {"f_message_id": String, "f_now": DateTime, "f_key": Integer},
        "submitted": {"f_msg_ids": String, "f_submitted_at": DateTime, "f_key": Integer},
        "reported": {"f_stat": String, "f_done_at": DateTime, "f_node": String, "f_key": Integer},
    }
    for event, types in expected.items():
        wb = getattr(st, event)
        c = compiled(wb.stmt, dialect)
        assert bind_types(c) == types, event
        assert ":key" not in str(c) and set(wb.fields) == {n[2:] for n in types}
    types = bind_types(compiled(st.inbox.stmt, dialect))
    assert types["f_received_at"] is DateTime and types["f_now"] is DateTime and "f_content" in types


def test_a_sql_write_back_the_configuration_accepts_builds() -> None:
    """A sql: write-back with a cast after a bind is refused by the configuration or builds its statement."""
    mapping = {**MAPPED, "rejected": {"sql": "UPDATE q SET status = 2 WHERE id = :key::int"}}
    try:
        src = source("postgresql", mapping=mapping)
    except ValidationError:
        return
    Statements(src)


QUOTED = {"postgresql": '"{}"', "mysql": "`{}`", "oracle": '"{}"', "mssql": "[{}]", "sqlite": '"{}"'}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_names_render_qualified_and_quoted_per_dialect(dialect: str) -> None:
    """A schema.table renders qualified; mixed-case and reserved names are quoted the dialect's way."""
    q = QUOTED[dialect].format
    mapping = {**MAPPED, "table": "erp.SMS_Queue", "key": "ID", "columns": {"to": "phone", "text": "order"}}
    st = Statements(source(dialect, mapping=mapping))
    claim = str(compiled(st.claim_select(5), dialect))
    table = f"erp.{q('SMS_Queue')}"
    assert f"FROM {table}" in claim, claim
    assert f"{table}.{q('ID')}" in claim and f"{table}.{q('order')}" in claim and f"{table}.phone" in claim
    update = str(compiled(st.accepted.stmt, dialect))
    assert update.startswith(f"UPDATE {table} SET"), update
    plain = str(compiled(Statements(source(dialect, mapping={**MAPPED, "table": "erp.sms_queue"}))
                         .claim_select(5), dialect))
    assert "FROM erp.sms_queue" in plain


# --- Statements on a real SQLite database ---------------------------------------------------------------

@pytest.fixture
def legacy(tmp_path: pathlib.Path) -> Iterator[tuple[Statements, Engine]]:
    """The standard tables in a SQLite file, with the engine a source uses (BEGIN IMMEDIATE)."""
    url = f"sqlite:///{tmp_path}/legacy.db"
    setup = create_engine(url)
    assert interface.create(setup) == ["sms_outbox", "sms_inbox"]
    setup.dispose()
    src = source("sqlite", url=url, busy_timeout=0.0)
    engine = make_source_engine(src)
    yield Statements(src), engine
    engine.dispose()


def outbox_row(engine: Engine, key: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(interface.outbox).where(interface.outbox.c.id == key)).one()


def test_claim_and_write_backs_on_sqlite(legacy: tuple[Statements, Engine]) -> None:
    """Pending rows come back in key order with their roles; write-backs store their values and datetimes."""
    st, engine = legacy
    send_at = dt.datetime(2026, 11, 22, 8, 30)
    with engine.begin() as conn:
        for row in ({"id": 30, "mobiles": "13900139000", "content": "三"},
                    {"id": 10, "mobiles": "13800138000,13800138001", "content": "一", "send_at": send_at,
                     "priority": 9, "ext": "12", "report_wanted": 0},
                    {"id": 15, "mobiles": "13700137000", "content": "taken", "state": "accepted"},
                    {"id": 20, "mobiles": "13600136000", "content": "二", "template": "t1", "params": '{"a": 1}'}):
            conn.execute(interface.outbox.insert().values(row))
    with engine.begin() as conn:
        rows = st.claim_rows(conn, 10)
        assert [r.key for r in rows] == [10, 20, 30]
        assert set(rows[0].values) == set(STANDARD_COLUMNS)
        first = rows[0].values
        assert (first["to"], first["text"], first["priority"], first["ext"], first["report"]) == (
            "13800138000,13800138001", "一", 9, "12", 0)
        assert request(first, default_priority=5, default_report=True) == SendRequest(
            ("13800138000", "13800138001"), "一", 9, send_at.timestamp(), "12", None, False)
        assert (rows[1].values["template"], rows[1].values["params"]) == ("t1", '{"a": 1}')
        now = dt.datetime(2026, 11, 22, 8, 0, 1)
        st.accepted.run(conn, [{"key": 10, "message_id": "555", "state": "accepted", "now": now, "node": "n1"}])
        st.rejected.run(conn, [{"key": 20, "message_id": None, "state": "rejected", "error": "unknown template",
                                "now": now, "node": "n1"}])
    with engine.begin() as conn:
        assert [r.key for r in st.claim_rows(conn, 10)] == [30]
    row = outbox_row(engine, 10)
    assert (row.state, row.message_id, row.taken_by, row.taken_at) == ("accepted", "555", "n1", now)
    row = outbox_row(engine, 20)
    assert (row.state, row.error, row.taken_at, row.done_at) == ("rejected", "unknown template", now, now)

    state = RowState("10", 555, "delivered", True, "0", ["A1", "A2", "B1"], "DELIVRD", None,
                     send_at.timestamp(), send_at.timestamp() + 60)
    values = {"key": 10, **state.values("n1", time.time())}
    assert st.submitted is not None and st.reported is not None
    with engine.begin() as conn:
        st.submitted.run(conn, [values])
        st.reported.run(conn, [values])
    row = outbox_row(engine, 10)
    assert (row.state, row.submit_result, row.msg_ids, row.stat, row.error) == (
        "delivered", "0", "A1,A2,B1", "DELIVRD", None)
    assert (row.submitted_at, row.done_at) == (send_at, send_at + dt.timedelta(minutes=1))


def test_inbox_insert_and_existing_ids_on_sqlite(legacy: tuple[Statements, Engine]) -> None:
    """MO rows go into sms_inbox; inbox_existing finds the mo_ids already there and only those."""
    st, engine = legacy
    assert st.inbox is not None and st.inbox_dedupe
    received = dt.datetime(2026, 11, 22, 9, 0)
    with engine.begin() as conn:
        st.inbox.run(conn, [{"mo_id": str(i), "mobile": "13800138000", "content": f"回复{i}", "dest": "1069001",
                             "ext": "01", "received_at": received} for i in (77, 78)])
    with engine.connect() as conn:
        assert st.inbox_existing(conn, ["76", "77", "78", "79"]) == {"77", "78"}
        assert st.inbox_existing(conn, []) == set()
        rows = conn.execute(select(interface.inbox).order_by(interface.inbox.c.mo_id)).all()
    assert [(r.mo_id, r.content, r.received_at, r.read_flag) for r in rows] == [
        ("77", "回复77", received, 0), ("78", "回复78", received, 0)]


def test_a_second_claim_cannot_start_while_one_is_open_on_sqlite(legacy: tuple[Statements, Engine]) -> None:
    """BEGIN IMMEDIATE: while one claim is open another cannot begin (busy_timeout 0); "busy" is an outage."""
    st, engine = legacy
    with engine.begin() as conn:
        st.claim_rows(conn, 10)
        with pytest.raises(sa_exc.OperationalError) as caught:
            with engine.begin() as other:
                st.claim_rows(other, 10)
    assert is_unreachable(caught.value)


# --- rows: driver values into a SendRequest ---------------------------------------------------------------

def test_numbers_split_on_every_separator() -> None:
    """Numbers are split on , ; blanks and the Chinese ，；、 and taken from integer and NUMBER columns."""
    assert numbers("13800138000, 13800138001;13800138002 13800138003") == (
        "13800138000", "13800138001", "13800138002", "13800138003")
    assert numbers("13800138000，13800138001；13800138002、13800138003\u300013800138004\n") == (
        "13800138000", "13800138001", "13800138002", "13800138003", "13800138004")
    assert numbers(" ;, ") == () and numbers(None) == () and numbers("") == ()
    assert numbers(13800138000) == ("13800138000",)
    assert numbers(Decimal("13800138000")) == ("13800138000",)
    assert numbers(Decimal("1.3800138E+10")) == ("13800138000",)
    assert numbers(b"13800138000,13800138001") == ("13800138000", "13800138001")


def test_numbers_refuse_what_is_no_number() -> None:
    """A fractional, infinite or NaN numeric mobile is a RowError, not a crash."""
    for bad in (Decimal("1.5"), Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), float("inf"),
                Decimal("1E+999999999")):
        with pytest.raises(RowError, match="not a whole number"):
            numbers(bad)


def test_epoch_reads_dates_times_and_iso_text() -> None:
    """DATETIME, DATE and ISO text become epoch seconds in local time; empty means now."""
    moment = dt.datetime(2026, 11, 22, 8, 30)
    assert epoch(moment) == moment.timestamp()
    assert epoch(dt.date(2026, 11, 22)) == dt.datetime(2026, 11, 22).timestamp()
    assert epoch("2026-11-22 08:30:00") == moment.timestamp()
    assert epoch(" 2026-11-22T08:30 ") == moment.timestamp()
    assert epoch("2026-11-22T00:30:00+00:00") == dt.datetime(2026, 11, 22, 0, 30, tzinfo=dt.timezone.utc).timestamp()
    assert epoch(None) is None and epoch("") is None


def test_epoch_refuses_what_is_no_time() -> None:
    """Text that is no date, a number, or a date out of range is a RowError naming the value."""
    with pytest.raises(RowError, match=r"send time 'tomorrow' is not a date and time: write it like"):
        epoch("tomorrow")
    with pytest.raises(RowError, match="send time '20261122' is not a date and time"):
        epoch(20261122)
    with pytest.raises(RowError, match="out of range"):
        epoch(dt.datetime(1, 1, 1))


def test_flag_reads_numbers_and_words() -> None:
    """report: 0/1, true/false, y/n, off... as numbers or text; NULL takes the default."""
    assert [flag(v, True) for v in (0, 1, Decimal(0), Decimal(2), 0.0, True, False)] == [
        False, True, False, True, False, True, False]
    assert [flag(v, True) for v in ("0", "n", "No", " false ", "off", "", "1", "Y", "yes", "x")] == [
        False, False, False, False, False, False, True, True, True, True]
    assert flag(None, True) is True and flag(None, False) is False


def test_request_takes_defaults_and_templates() -> None:
    """A row without priority or report gets the source's; a template row carries its JSON params."""
    assert request({"to": "13800138000", "text": "hi"}, default_priority=3, default_report=False) == SendRequest(
        ("13800138000",), "hi", 3, None, None, None, False)
    assert request({"to": 13800138000, "text": None, "priority": Decimal("7"), "ext": 12, "report": "1"},
                   default_priority=5, default_report=False) == SendRequest(
        ("13800138000",), "", 7, None, "12", None, True)
    assert request({"to": "13800138000", "template": " welcome_v2 ", "params": '{"name": "张三", "n": 2}'},
                   default_priority=5, default_report=True) == SendRequest(
        ("13800138000",), "", 5, None, None, None, True, template="welcome_v2", params={"name": "张三", "n": 2})
    assert request({"to": "13800138000", "template": "w"}, default_priority=5,
                   default_report=True).params == {}
    for bad in ('["a"]', "{not json"):
        with pytest.raises(RowError, match=r"the params column is not usable"):
            request({"to": "13800138000", "template": "w", "params": bad}, default_priority=5, default_report=True)
    with pytest.raises(RowError, match=r"priority 'high' is not a whole number"):
        request({"to": "13800138000", "priority": "high"}, default_priority=5, default_report=True)


def test_request_reads_bytes_as_utf8_text() -> None:
    """Bytes from a binary column are decoded, never sent as b'...'; undecodable bytes are a RowError."""
    req = request({"to": b"13800138000", "text": "你好".encode(), "ext": b" 12 "}, default_priority=5,
                  default_report=True)
    assert (req.to, req.text, req.ext) == (("13800138000",), "你好", "12")
    with pytest.raises(RowError, match="not UTF-8"):
        request({"to": "13800138000", "text": b"\xff\xfe"}, default_priority=5, default_report=True)


ROLES = ("to", "text", "send_at", "priority", "ext", "report", "template", "params")
DRIVER_VALUES = st.one_of(
    st.none(), st.text(max_size=40), st.integers(), st.floats(), st.binary(max_size=24), st.datetimes(),
    st.datetimes(timezones=st.just(dt.timezone.utc)), st.dates(), st.decimals(), st.booleans(),
    st.sampled_from(["sNaN", "-Infinity", "1e999999999", " 7 ", "0001-01-01", "9999-12-31T23:59:59", "  ",
                     "13800138000，13800138001"]))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(ROLES), DRIVER_VALUES))
def test_request_returns_a_request_or_a_row_error(values: dict[str, Any]) -> None:
    """Whatever a driver returns for a row, request() gives a SendRequest or raises RowError."""
    try:
        req = request(values, default_priority=5, default_report=True)
    except RowError:
        return
    assert isinstance(req, SendRequest)
    assert all(isinstance(n, str) and n for n in req.to) and isinstance(req.text, str)


# --- what a legacy row shows: _aggregate and RowState ---------------------------------------------------

class Recipient(NamedTuple):
    """The columns of a recipients row load_row_states reads."""

    id: int
    state: str
    stat: str | None = None
    error: str | None = None
    submitted_at: float | None = None
    final_at: float | None = None
    message_id: int = 1
    attempts: int = 1


T0 = 1_800_000_000.0


def test_one_recipient_delivered() -> None:
    """A delivered recipient makes the row delivered, complete, result 0, with its Msg_Ids and times."""
    state = _aggregate("k1", 1, [Recipient(11, "delivered", "DELIVRD", None, T0, T0 + 5)], {11: ["M1", "M2"]})
    assert state == RowState("k1", 1, "delivered", True, "0", ["M1", "M2"], "DELIVRD", None, T0, T0 + 5)


def test_submitted_without_a_report_yet() -> None:
    """Submitted and waiting for the report: state submitted, not complete, no stat and no done time."""
    state = _aggregate("k1", 1, [Recipient(11, "submitted", None, None, T0)], {11: ["M1"]})
    assert state == RowState("k1", 1, "submitted", False, "0", ["M1"], None, None, T0, None)


def test_still_queued_rows_show_accepted() -> None:
    """While any recipient waits to be sent the row stays accepted, even if another was submitted."""
    state = _aggregate("k1", 1, [Recipient(11, "submitted", None, None, T0), Recipient(12, "queued")], {})
    assert (state.state, state.complete, state.result) == ("accepted", False, "0")
    assert _aggregate("k1", 1, [], {}).state == "accepted"


def test_one_delivered_one_undeliverable_is_partial() -> None:
    """Two numbers, one delivered and one not: partial, with the failing one's stat and error."""
    rows = [Recipient(11, "delivered", "DELIVRD", None, T0, T0 + 5),
            Recipient(12, "undeliverable", "UNDELIV", "the carrier reported UNDELIV", T0 + 1, T0 + 9)]
    state = _aggregate("k1", 1, rows, {11: ["M1"], 12: ["M2"]})
    assert state == RowState("k1", 1, "partial", True, "0", ["M1", "M2"], "UNDELIV", "the carrier reported UNDELIV",
                             T0, T0 + 9)


def test_failed_at_submit_shows_the_carrier_result() -> None:
    """A recipient that failed at submit (SUBMIT_RESP result 13) gives result R13 and state failed."""
    rows = [Recipient(11, "failed", "R13", "carrier refused: result 13", None, T0 + 2)]
    state = _aggregate("k1", 1, rows, {})
    assert state == RowState("k1", 1, "failed", True, "R13", [], "R13", "carrier refused: result 13", None, T0 + 2)


def test_no_report_wanted_is_sent() -> None:
    """Without a status report the row ends as sent once submitted."""
    state = _aggregate("k1", 1, [Recipient(11, "sent", None, None, T0, T0)], {11: ["M1"]})
    assert (state.state, state.complete, state.result, state.stat, state.done_at) == ("sent", True, "0", None, T0)


def test_msg_ids_follow_the_recipients_in_order() -> None:
    """Msg_Ids are listed recipient by recipient, each recipient's segments in order; msg_id is the first."""
    rows = [Recipient(12, "submitted", submitted_at=T0), Recipient(11, "submitted", submitted_at=T0)]
    state = _aggregate("k1", 1, rows, {11: ["B1", "B2"], 12: ["A1", "A2"]})
    assert state.msg_ids == ["A1", "A2", "B1", "B2"]
    values = state.values("n1", T0)
    assert (values["msg_ids"], values["msg_id"]) == ("A1,A2,B1,B2", "A1")


def test_msg_ids_are_cut_at_2000_characters_on_a_comma() -> None:
    """A long list of Msg_Ids keeps whole ids only, at most 2000 characters."""
    ids = [f"{i:016X}" for i in range(200)]
    text = RowState("k", 1, "submitted", False, msg_ids=ids).values("n1", T0)["msg_ids"]
    assert len(text) <= 2000 and text == ",".join(ids[:117])
    assert RowState("k", 1, "submitted", False, msg_ids=ids[:5]).values("n1", T0)["msg_ids"] == ",".join(ids[:5])
    assert RowState("k", 1, "accepted", False).values("n1", T0)["msg_ids"] is None


def test_values_are_naive_local_times_and_text() -> None:
    """values() gives the times as naive local datetimes, the message id as text, errors cut to 500."""
    state = RowState("k", 42, "undeliverable", True, "0", ["M1"], "UNDELIV", "x" * 600, T0, T0 + 30)
    values = state.values("n1", T0 + 60)
    for name, epoch_value in (("submitted_at", T0), ("done_at", T0 + 30), ("now", T0 + 60)):
        moment = values[name]
        assert isinstance(moment, dt.datetime) and moment.tzinfo is None
        assert moment == dt.datetime.fromtimestamp(epoch_value)
    assert (values["message_id"], values["node"], len(values["error"])) == ("42", "n1", 500)
    assert RowState("k", 1, "accepted", False).values("n1", T0)["submitted_at"] is None


# --- the store's v2 migration ---------------------------------------------------------------------

def v1_store(engine: Engine) -> None:
    """A store as smsgw with schema version 1 left it, with one recipient."""
    with engine.begin() as conn:
        schema.metadata.create_all(conn, tables=[schema.schema_versions])
        migrations.MIGRATIONS[0].apply(conn)
        conn.execute(schema.schema_versions.insert().values(
            version=1, description=migrations.MIGRATIONS[0].description, applied_at=T0))
        conn.execute(schema.recipients.insert().values(
            id=1, message_id=2, phone="13800138000", link="cmcc", account="a", priority=5, state="queued",
            due_at=T0, attempts=0, segments=1, reported=0, failed=0, updated_at=T0))


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Engine]:
    dialect = request.param
    url = f"sqlite:///{tmp_path}/store.db" if dialect == "sqlite" else server_url(dialect, db="smsgw_migr")
    engine = make_engine(url, writer=True)
    schema.metadata.drop_all(engine)
    yield engine
    schema.metadata.drop_all(engine)
    engine.dispose()


def test_upgrade_from_v1_adds_notify_and_source_rows(empty_engine: Engine) -> None:
    """A v1 store upgrades to the latest: recipients.notify (NULL for old rows), source_rows (v2),
    messages.dlr_url / dlr_mask (v3), templates and messages.template (v4), review and batch columns (v5)."""
    engine = empty_engine
    v1_store(engine)
    assert "notify" not in {c["name"] for c in inspect(engine).get_columns("recipients")}
    assert not inspect(engine).has_table("source_rows")
    with pytest.raises(migrations.SchemaOutdated, match=f"schema version 1, this smsgw needs {migrations.LATEST}"):
        migrations.require_current(engine)

    assert migrations.upgrade(engine) == [2, 3, 4, 5]

    inspector = inspect(engine)
    assert "notify" in {c["name"] for c in inspector.get_columns("recipients")}
    assert inspector.has_table("source_rows")
    assert "ix_source_rows_message" in {i["name"] for i in inspector.get_indexes("source_rows")}
    assert {"dlr_url", "dlr_mask", "template"} <= {c["name"] for c in inspector.get_columns("messages")}
    assert inspector.has_table("templates")
    assert {"batch", "review", "review_rule", "review_deadline", "reviewed_by"} <= {
        c["name"] for c in inspector.get_columns("messages")}
    assert {"ix_messages_review_created", "ix_messages_batch"} <= {i["name"] for i in inspector.get_indexes("messages")}
    assert migrations.current_version(engine) == 5
    migrations.require_current(engine)
    with engine.begin() as conn:
        assert conn.execute(select(schema.recipients.c.notify)).scalar_one() is None
        conn.execute(schema.source_rows.insert().values(source="erp", row_key="10", message_id=2, created_at=T0))
        conn.execute(schema.recipients.update().values(notify="db:erp"))
        assert conn.execute(select(schema.recipients.c.notify)).scalar_one() == "db:erp"
    assert migrations.upgrade(engine) == []


# --- OutboxWorker on a real SQLite store ----------------------------------------------------------------

KIND = "db:erp"


class FakeReceiver:
    """An outbox handler that records each batch; it refuses the ids in `refuse`, or is down."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.events: list[OutboxEvent] = []
        self.down = False
        self.refuse: set[int] = set()

    def deliver(self, events: Sequence[OutboxEvent]) -> defer.Deferred[list[Outcome]]:
        self.batches.append([e.id for e in events])
        self.events.extend(events)
        if self.down:
            return defer.fail(Unreachable("erp: connection refused"))
        return defer.succeed([Refused("no such row") if e.id in self.refuse else None for e in events])


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Let the real reactor run (the store's threads report through it) until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(R, 0.002, lambda: None)


def event_row(event_id: int, *, at: float = 1000.0, kind: str = KIND, lease_owner: str | None = None,
              next_at: float | None = None, state: str = "pending") -> dict[str, Any]:
    return {"id": event_id, "kind": kind, "event": "recipient_final", "message_id": event_id * 100,
            "recipient_id": None, "payload": f'{{"state": "delivered", "n": {event_id}}}', "state": state,
            "attempts": 0, "next_at": at if next_at is None else next_at, "lease_owner": lease_owner,
            "created_at": at, "done_at": None, "last_error": None}


class OutboxWorkerTests(TestCase):
    """The worker's rounds driven by a Clock; the store and its threads are real (SQLite in a temp dir)."""

    timeout = 20

    def setUp(self) -> None:
        tmp = tempfile.mkdtemp(prefix="smsgw-outbox-")
        self.addCleanup(shutil.rmtree, tmp, True)
        self.store = Store(f"sqlite:///{tmp}/store.db", R, owner="n1")
        migrations.upgrade(self.store.engine)
        self.addCleanup(self.store.stop)
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.receiver = FakeReceiver()

    def insert(self, *rows: dict[str, Any]) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(schema.outbox.insert(), list(rows))

    def outbox(self) -> dict[int, Any]:
        with self.store.read_engine.connect() as conn:
            return {row.id: row for row in conn.execute(select(schema.outbox).order_by(schema.outbox.c.id))}

    def start(self, *, batch: int = 500, retry_for: float = 86_400.0) -> OutboxWorker:
        self.store.start()
        worker = OutboxWorker(self.store, self.clock, owner="n1", batch=batch, interval=0.5, retry_initial=5.0,
                              retry_max=600.0, pause_max=60.0)
        worker.add(KIND, self.receiver, retry_for=retry_for)
        worker.start()

        async def stop() -> None:
            await worker.stop()
            assert self.clock.getDelayedCalls() == []
        self.addCleanup(lambda: defer.ensureDeferred(stop()))
        return worker

    async def round(self, advance: float = 0.0) -> None:
        """Move the clock so that the kind's next round runs, and wait until that round has finished."""
        [timer] = self.clock.getDelayedCalls()
        assert timer.getTime() <= self.clock.seconds() + advance, (timer.getTime(), self.clock.seconds())
        self.clock.advance(advance)
        await until(lambda: bool(self.clock.getDelayedCalls()), "the round to finish")

    async def test_delivered_events_are_marked_done(self) -> None:
        """Due events go to the handler oldest first in one batch and are recorded done."""
        self.insert(event_row(3), event_row(1), event_row(2), event_row(4, kind="db:other"))
        worker = self.start()
        await self.round()
        assert self.receiver.batches == [[1, 2, 3]]
        first = self.receiver.events[0]
        assert (first.kind, first.event, first.message_id, first.attempts, first.created_at) == (
            KIND, "recipient_final", 100, 0, 1000.0)
        rows = self.outbox()
        assert [(rows[i].state, rows[i].done_at, rows[i].lease_owner) for i in (1, 2, 3)] == [
            ("done", 1000.0, None)] * 3
        assert rows[4].state == "pending"
        assert worker.delivered(KIND) == 3
        [timer] = self.clock.getDelayedCalls()
        assert timer.getTime() == 1000.5  # nothing left: the next round after the interval

    async def test_an_unreachable_receiver_pauses_the_kind_until_it_is_back(self) -> None:
        """Unreachable: events keep their attempts and wait, one alarm; once back they go out in id order."""
        self.insert(event_row(30), event_row(10), event_row(20))
        self.receiver.down = True
        with capture_logs() as logs:
            self.start(batch=2)
            await self.round()
            rows = self.outbox()
            assert [(rows[i].state, rows[i].attempts, rows[i].next_at, rows[i].lease_owner)
                    for i in (10, 20)] == [("pending", 0, 1001.0, None)] * 2
            assert rows[10].last_error == "erp: connection refused"
            assert (rows[30].next_at, rows[30].attempts) == (1000.0, 0)  # not leased, not touched
            [timer] = self.clock.getDelayedCalls()
            assert timer.getTime() == 1001.0

            await self.round(1.0)  # still down: the pause doubles, no second alarm
            assert self.outbox()[10].next_at == 1003.0
            self.receiver.down = False
            await self.round(2.0)
            await self.round(0.0)  # the full batch asks for the next one at once
        assert self.receiver.batches == [[10, 20], [10, 20], [10, 20], [30]]
        rows = self.outbox()
        assert [(rows[i].state, rows[i].attempts) for i in (10, 20, 30)] == [("done", 0)] * 3
        alarms = [e for e in logs if e.get("alarm") == "receiver_unreachable"]
        assert len(alarms) == 1
        assert (alarms[0]["kind"], alarms[0]["waiting_events"], alarms[0]["error"]) == (
            KIND, 2, "erp: connection refused")
        assert [e["event"] for e in logs if e["event"].startswith("receiver_")] == [
            "receiver_still_unreachable", "receiver_recovered"]

    async def test_a_refused_event_is_retried_then_dead(self) -> None:
        """Refused: retried with a doubling back-off, dead with an alarm after retry_for; others are done."""
        self.insert(event_row(1), event_row(2))
        self.receiver.refuse = {1}
        with capture_logs() as logs:
            self.start(retry_for=12.0)
            await self.round()
            row = self.outbox()[1]
            assert (row.state, row.attempts, row.next_at, row.last_error) == ("pending", 1, 1005.0, "no such row")
            assert self.outbox()[2].state == "done"
            await self.round(5.0)
            row = self.outbox()[1]
            assert (row.state, row.attempts, row.next_at) == ("pending", 2, 1015.0)
            await self.round(10.0)
        row = self.outbox()[1]
        assert (row.state, row.attempts, row.done_at, row.last_error) == ("dead", 3, 1015.0, "no such row")
        assert self.receiver.batches == [[1, 2], [1], [1]]
        assert [e["retry_at"] for e in logs if e["event"] == "outbox_refused"] == [1005.0, 1015.0]
        [dead] = [e for e in logs if e.get("alarm") == "notification_dead"]
        assert (dead["kind"], dead["outbox_id"], dead["attempts"], dead["error"]) == (KIND, "1", 3, "no such row")
        assert len([e for e in logs if e.get("alarm")]) == 1

    async def test_release_returns_this_owners_leased_events(self) -> None:
        """release(owner) makes its leased events due at once; another node's leases and done events stay."""
        self.insert(event_row(1, lease_owner="n1", next_at=1060.0), event_row(2, lease_owner="n2", next_at=1060.0),
                    event_row(3, lease_owner="n1", next_at=1060.0), event_row(4, state="done"))
        self.start()
        await self.store.write("release", "n1")
        rows = self.outbox()
        assert [(rows[i].lease_owner, rows[i].next_at) for i in (1, 2, 3)] == [
            (None, 0.0), ("n2", 1060.0), (None, 0.0)]
        await self.round()
        assert self.receiver.batches == [[1, 3]]
        rows = self.outbox()
        assert [rows[i].state for i in (1, 2, 3, 4)] == ["done", "pending", "done", "done"]
