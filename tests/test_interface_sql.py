"""The hand-run SQL scripts in scripts/sql/<dialect>/ against the interface tables' metadata.

interface.sql must create what `smsgw db init-interface` creates. Every script is split the way
its dialect's client splits it and compared with the metadata compiled for that dialect; on
SQLite, PostgreSQL and MariaDB the scripts also run, and the tables they make are reflected and
compared with the tables `interface.create` makes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, UniqueConstraint, create_engine, inspect, select, text
from sqlalchemy import types as sqltypes
from sqlalchemy.engine.interfaces import ReflectedColumn
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import DefaultClause

from dbs import server_url
from smsgw.adapters.db import interface

SQL_DIR = Path(__file__).resolve().parent.parent / "scripts" / "sql"
#: The script folder of each SQLAlchemy backend name.
FOLDERS = {"oracle": "oracle", "mysql": "mysql", "postgresql": "postgresql", "mssql": "sqlserver", "sqlite": "sqlite"}
LIVE = ("sqlite", "postgresql", "mysql")
DB, TWIN_DB = "smsgw_iface", "smsgw_iface_meta"
OUTBOX, INBOX = interface.OUTBOX, interface.INBOX
ROLES = ("smsgw", "legacy_app")

#: The sms_outbox columns smsgw writes back: the only ones its user may update.
RESULT_COLUMNS = ("state", "message_id", "submit_result", "msg_ids", "stat", "error", "taken_by", "taken_at",
                  "submitted_at", "done_at")
Privilege = tuple[str, str, str, str | None]  # grantee, table, privilege, column (None: the whole table)
PRIVILEGES: frozenset[Privilege] = frozenset({
    ("smsgw", OUTBOX, "SELECT", None),
    *(("smsgw", OUTBOX, "UPDATE", column) for column in RESULT_COLUMNS),
    ("smsgw", INBOX, "SELECT", None),
    ("smsgw", INBOX, "INSERT", None),
    ("legacy_app", OUTBOX, "SELECT", None),
    ("legacy_app", OUTBOX, "INSERT", None),
    ("legacy_app", INBOX, "SELECT", None),
    ("legacy_app", INBOX, "UPDATE", "read_flag"),
})


def read_script(dialect: str, name: str) -> str:
    return (SQL_DIR / FOLDERS[dialect] / name).read_text(encoding="utf-8")


# -- splitting scripts as their clients do --------------------------------------------------------

_DOLLAR_TAG = re.compile(r"\$[A-Za-z_]*\$")
# Oracle PL/SQL and T-SQL modules contain ';' and end only at the client's '/' or GO line.
_BLOCK = re.compile(r"(CREATE\s+(OR\s+REPLACE\s+)?(TRIGGER|FUNCTION|PROCEDURE|PACKAGE)|BEGIN|DECLARE)\b", re.I)
_SQLITE_TRIGGER = re.compile(r"CREATE\s+(TEMP\w*\s+)?TRIGGER\b", re.I)


def split_statements(script: str, dialect: str) -> list[str]:
    """The statements of `script` as the dialect's command-line client sends them, comments left out.

    Quoted text, comments and PostgreSQL dollar quotes are taken whole. A statement ends at the
    delimiter (';', or what MySQL's DELIMITER set) unless it is a block: an Oracle or SQL Server
    module ends at its '/' or GO line, an SQLite trigger at END;.
    """
    statements: list[str] = []
    buf, delimiter, i = "", ";", 0
    while i < len(script):
        if i == 0 or script[i - 1] == "\n":
            line_end = _line_end(script, i)
            command = script[i:line_end].strip()
            if (dialect, command.upper()) in {("oracle", "/"), ("mssql", "GO")}:
                statements.append(buf)
                buf, i = "", line_end
                continue
            if dialect == "mysql" and command.upper().startswith("DELIMITER ") and not buf.strip():
                delimiter, i = command.split()[1], line_end
                continue
        end = _quoted_end(script, i, dialect)
        if end > i:
            buf += " " if script.startswith(("--", "/*"), i) else script[i:end]
            i = end
        elif script.startswith(delimiter, i) and not _in_block(buf, dialect):
            statements.append(buf)
            buf, i = "", i + len(delimiter)
        else:
            buf, i = buf + script[i], i + 1
    return [s.strip() for s in [*statements, buf] if s.strip()]


def _line_end(script: str, i: int) -> int:
    end = script.find("\n", i)
    return len(script) if end < 0 else end


def _quoted_end(script: str, i: int, dialect: str) -> int:
    """Where the comment, string or quoted name starting at `i` ends; `i` if none starts there."""
    if script.startswith("--", i):
        return _line_end(script, i)
    if script.startswith("/*", i):
        return script.index("*/", i) + 2
    if script[i] in "'\"`":
        return script.index(script[i], i + 1) + 1  # a doubled '' is read as two strings in a row
    tag = _DOLLAR_TAG.match(script, i) if dialect == "postgresql" else None
    if tag:
        return script.index(tag.group(), tag.end()) + len(tag.group())
    return i


def _in_block(buf: str, dialect: str) -> bool:
    head = buf.lstrip()
    if dialect in ("oracle", "mssql"):
        return bool(_BLOCK.match(head))
    if dialect == "sqlite":
        return bool(_SQLITE_TRIGGER.match(head)) and not re.search(r"\bEND\s*$", head, re.I)
    return False


def _top_level_split(text_: str) -> list[str]:
    """`text_` split at the commas outside parentheses and quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text_):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "()":
            depth += 1 if ch == "(" else -1
        elif not quoted and ch == "," and depth == 0:
            parts.append(text_[start:i])
            start = i + 1
    return [p.strip() for p in [*parts, text_[start:]] if p.strip()]


def _names(text_: str) -> tuple[str, ...]:
    return tuple(name.strip().strip('"`[]').lower() for name in text_.split(","))


# -- the shape of CREATE TABLE / CREATE INDEX statements -------------------------------------------

@dataclass(frozen=True)
class ColumnShape:
    name: str
    type: str
    nullable: bool
    default: str | None
    identity: bool


@dataclass(frozen=True)
class TableShape:
    columns: tuple[ColumnShape, ...]
    primary_key: tuple[str, ...]
    unique: frozenset[tuple[str, ...]]
    indexes: frozenset[tuple[str, tuple[str, ...], bool]]  # name, columns, unique
    options: tuple[tuple[str, str], ...]  # MySQL's ENGINE=, CHARSET=


_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+(\w+)\s*\((.*)\)([^)]*)$", re.I | re.S)
_CREATE_INDEX = re.compile(r"CREATE\s+(UNIQUE\s+)?INDEX\s+(\w+)\s+ON\s+(\w+)\s*\(([^)]*)\)$", re.I | re.S)
_ATTRIBUTE = re.compile(r"\b(NOT\s+NULL|NULL|DEFAULT|GENERATED|IDENTITY|AUTO_INCREMENT|PRIMARY\s+KEY|UNIQUE)\b", re.I)
_DEFAULT = re.compile(r"\bDEFAULT\s+('(?:[^']|'')*'|\([^)]*\)|[\w.]+(?:\(\))?)", re.I)


def parse_schema(statements: list[str]) -> dict[str, TableShape]:
    """The tables and indexes the statements create; anything else is an error."""
    tables: dict[str, TableShape] = {}
    for stmt in statements:
        if m := _CREATE_TABLE.match(stmt):
            tables[m[1].lower()] = _table_shape(m[2], m[3])
        elif m := _CREATE_INDEX.match(stmt):
            table = tables[m[3].lower()]
            index = (m[2].lower(), _names(m[4]), bool(m[1]))
            tables[m[3].lower()] = replace(table, indexes=table.indexes | {index})
        else:
            raise AssertionError(f"not a CREATE TABLE or CREATE INDEX: {stmt[:80]!r}")
    return tables


def _table_shape(body: str, options: str) -> TableShape:
    columns: list[tuple[str, str]] = []
    primary_key: tuple[str, ...] = ()
    unique: set[tuple[str, ...]] = set()
    for part in _top_level_split(body):
        part = re.sub(r"^CONSTRAINT\s+\w+\s+", "", part, flags=re.I)
        inner = part[part.find("(") + 1:part.rfind(")")]
        if re.match(r"PRIMARY\s+KEY\b", part, re.I):
            primary_key = _names(inner)
        elif re.match(r"UNIQUE\b", part, re.I):
            unique.add(_names(inner))
        else:
            name, rest = part.split(None, 1)
            columns.append((name.lower(), rest))
            if re.search(r"\bPRIMARY\s+KEY\b", rest, re.I):
                primary_key = (name.lower(),)
            if re.search(r"\bUNIQUE\b", rest, re.I):
                unique.add((name.lower(),))
    shapes = tuple(_column_shape(name, rest, name in primary_key) for name, rest in columns)
    pairs = tuple(sorted((k.upper(), v.lower()) for k, v in re.findall(r"(\w+)\s*=\s*(\w+)", options)))
    return TableShape(shapes, primary_key, frozenset(unique), frozenset(), pairs)


def _column_shape(name: str, rest: str, in_primary_key: bool) -> ColumnShape:
    attribute = _ATTRIBUTE.search(rest)
    type_ = rest[:attribute.start()] if attribute else rest
    attributes = rest[len(type_):]
    default = _DEFAULT.search(re.sub(r"\bBY\s+DEFAULT\b", "", attributes, flags=re.I))  # not an identity's
    type_ = re.sub(r"\s*([(),])\s*", r"\1", re.sub(r"\s+", " ", type_.strip().upper()))
    return ColumnShape(
        name=name,
        type=type_,
        nullable=not (in_primary_key or re.search(r"\bNOT\s+NULL\b", attributes, re.I)),
        default=normalise_default(default[1]) if default else None,
        identity=bool(re.search(r"\b(IDENTITY|AUTO_INCREMENT)\b", attributes, re.I)),
    )


def normalise_default(default: str) -> str:
    """A server default without the quoting and casts that do not change it: '1', 1 and '1'::smallint are 1."""
    value = re.sub(r"::[\w ]+$", "", default.strip())
    while value.startswith("(") and value.endswith(")"):
        value = value[1:-1].strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    return value.upper()


# -- the scripts read as text (all five dialects) --------------------------------------------------

@pytest.mark.parametrize("dialect", interface.DIALECTS)
def test_interface_script_creates_what_the_metadata_compiles_to(dialect: str) -> None:
    """interface.sql creates the compiled metadata's tables, column types, keys and indexes, and nothing else."""
    shapes = parse_schema(split_statements(read_script(dialect, "interface.sql"), dialect))
    assert shapes == parse_schema(interface.ddl(dialect))
    for table in (interface.outbox, interface.inbox):
        shape = shapes[table.name]
        assert [c.name for c in shape.columns] == [c.name for c in table.columns]
        assert [c.nullable for c in shape.columns] == [c.nullable for c in table.columns]
        assert [c.default is not None for c in shape.columns] == [isinstance(c.server_default, DefaultClause)
                                                                   for c in table.columns]
        assert shape.primary_key == tuple(c.name for c in table.primary_key.columns)
        assert shape.unique == {tuple(c.name for c in u.columns) for u in table.constraints
                                if isinstance(u, UniqueConstraint)}
        assert {name for name, _, _ in shape.indexes} == {str(index.name) for index in table.indexes}


@pytest.mark.parametrize("dialect", interface.DIALECTS)
def test_interface_script_explains_itself(dialect: str) -> None:
    """interface.sql names the CLI command and the docs, lists every state, and comments every column."""
    script = read_script(dialect, "interface.sql")
    assert "smsgw db init-interface --url URL" in script
    assert "docs/legacy-db.md" in script
    for state in interface.STATES:
        assert re.search(rf"^--\s+{state}\s+\S", script, re.M), state
    names = {c.name for table in (interface.outbox, interface.inbox) for c in table.columns}
    lines = [line for line in script.splitlines() if (words := line.split()) and words[0] in names]
    assert len(lines) == len(interface.outbox.columns) + len(interface.inbox.columns)
    assert all(re.search(r"--\s*\S", line) for line in lines), [line for line in lines if "--" not in line]


_GRANT = re.compile(r"GRANT\s+(.+?)\s+ON\s+(?:OBJECT::)?(\w+)\s+TO\s+(.+)$", re.I | re.S)


def parse_grants(statements: list[str]) -> set[Privilege]:
    """(grantee, table, privilege, column) for every GRANT; anything else is an error."""
    out: set[Privilege] = set()
    for stmt in statements:
        m = _GRANT.match(stmt)
        assert m, f"not a GRANT: {stmt[:80]!r}"
        grantee = m[3].split("@")[0].strip().strip("'\"`")
        for privilege in _top_level_split(m[1]):
            name, _, columns = privilege.partition("(")
            for column in _names(columns.rstrip(") \n")) if columns else (None,):
                out.add((grantee, m[2].lower(), name.strip().upper(), column))
    return out


@pytest.mark.parametrize("dialect", ["oracle", "mysql", "postgresql", "mssql"])
def test_grants_script_gives_exactly_the_least_privileges(dialect: str) -> None:
    """grants.sql grants smsgw and legacy_app what they need on the two tables and nothing more."""
    assert parse_grants(split_statements(read_script(dialect, "grants.sql"), dialect)) == PRIVILEGES


def test_sqlite_grants_file_only_explains() -> None:
    """SQLite's grants.sql holds no statement; it points to file permissions."""
    script = read_script("sqlite", "grants.sql")
    assert split_statements(script, "sqlite") == []
    assert "file permissions" in script.lower()


@pytest.mark.parametrize(("dialect", "new_row"), [("oracle", ":NEW."), ("mssql", "i.")])
def test_example_trigger_script_without_a_server(dialect: str, new_row: str) -> None:
    """The trigger reads the new work order through the dialect's pseudo-row and writes sms_outbox."""
    script = read_script(dialect, "example-trigger.sql")
    table, trigger = split_statements(script, dialect)
    assert re.match(r"CREATE\s+TABLE\s+work_orders\b", table)
    assert re.search(r"\bid\s+(NUMBER\(19\)|BIGINT)\s.*IDENTITY.*PRIMARY\s+KEY", table)
    assert re.match(r"CREATE\s+(OR\s+REPLACE\s+)?TRIGGER\s+trg_work_orders_sms\b", trigger)
    assert re.search(r"AFTER\s+INSERT", trigger)
    assert "INSERT INTO sms_outbox (mobiles, content, ref)" in trigger
    for column in ("customer_mobile", "title", "id"):
        assert f"{new_row}{column}" in trigger
    assert "您的工单" in trigger and "已受理，编号" in trigger and "'WO-'" in trigger
    if dialect == "oracle":  # the PL/SQL block is run by the '/' line after it
        assert re.search(r"^END;\s*\n/\s*$", script, re.M)
    else:  # every row of the statement, from inserted; CREATE TRIGGER alone in its batch
        assert re.search(r"\bFROM\s+inserted\s+AS\s+i\b", trigger)
        [batch] = [b for b in re.split(r"^\s*GO\s*$", script, flags=re.M | re.I)
                   if re.search(r"^CREATE\s+TRIGGER", b, re.M)]
        assert split_statements(batch, dialect) == [trigger]


# -- the scripts run on SQLite, PostgreSQL and MariaDB -----------------------------------------------

@dataclass(frozen=True)
class Live:
    dialect: str
    engine: Engine


@contextmanager
def scratch(dialect: str, tmp_path: Path, db: str) -> Iterator[Engine]:
    """An engine on database `db`, without the interface and example tables before and after."""
    url = f"sqlite:///{tmp_path / db}.db" if dialect == "sqlite" else server_url(dialect, db=db)
    engine = create_engine(url)
    drops = [f"DROP TABLE IF EXISTS {t}" for t in ("work_orders", OUTBOX, INBOX)]
    if dialect == "postgresql":
        drops.append("DROP FUNCTION IF EXISTS work_orders_sms()")
    execute_all(engine, drops)
    try:
        yield engine
    finally:
        execute_all(engine, drops)
        engine.dispose()


@pytest.fixture(params=LIVE)
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    with scratch(request.param, tmp_path, DB) as engine:
        yield Live(request.param, engine)


def execute_all(engine: Engine, statements: list[str]) -> None:
    """Send each statement as it is (a DBAPI cursor: no parameter markers, so MySQL's '%' stays)."""
    with engine.begin() as conn:
        cursor = conn.connection.cursor()
        for stmt in statements:
            cursor.execute(stmt)
        cursor.close()


def run_script(live: Live, name: str) -> list[str]:
    statements = split_statements(read_script(live.dialect, name), live.dialect)
    execute_all(live.engine, statements)
    return statements


def reflection(engine: Engine) -> dict[str, dict[str, Any]]:
    """Everything the inspector says about the two tables, server defaults normalised."""
    insp = inspect(engine)
    return {name: {
        "columns": [_reflected_column(c, engine) for c in insp.get_columns(name)],
        "primary_key": insp.get_pk_constraint(name),
        "unique": sorted(insp.get_unique_constraints(name), key=repr),
        "indexes": sorted(insp.get_indexes(name), key=lambda ix: str(ix["name"])),
        "options": insp.get_table_options(name),
    } for name in (OUTBOX, INBOX)}


def _reflected_column(column: ReflectedColumn, engine: Engine) -> dict[str, Any]:
    out: dict[str, Any] = dict(column)
    out["type"] = column["type"].compile(dialect=engine.dialect)
    out["default"] = None if column["default"] is None else normalise_default(column["default"])
    return out


def family(type_: sqltypes.TypeEngine[Any]) -> tuple[str, int | None]:
    """A column type roughly: the kind of integer, a string with its length, or a date-time."""
    for kind in (sqltypes.SmallInteger, sqltypes.BigInteger, sqltypes.Integer, sqltypes.DateTime):
        if isinstance(type_, kind):
            return kind.__name__, None
    if isinstance(type_, sqltypes.String):
        return "String", type_.length
    return type(type_).__name__, None


def test_interface_script_tables_reflect_like_the_metadata(live: Live, tmp_path: Path) -> None:
    """The tables interface.sql makes reflect as the metadata declares them and as interface.create makes them."""
    run_script(live, "interface.sql")
    insp = inspect(live.engine)
    assert {OUTBOX, INBOX} <= set(insp.get_table_names())
    for table in (interface.outbox, interface.inbox):
        columns = insp.get_columns(table.name)
        assert [c["name"] for c in columns] == [c.name for c in table.columns]
        assert [c["nullable"] for c in columns] == [c.nullable for c in table.columns]
        assert [family(c["type"]) for c in columns] == [family(c.type.dialect_impl(live.engine.dialect))
                                                         for c in table.columns]
        assert insp.get_pk_constraint(table.name)["constrained_columns"] == ["id"]
        assert [u["column_names"] for u in insp.get_unique_constraints(table.name)] == (
            [["mo_id"]] if table is interface.inbox else [])
        assert {str(ix["name"]) for ix in insp.get_indexes(table.name) if not ix["unique"]} == {
            str(ix.name) for ix in table.indexes}
    with scratch(live.dialect, tmp_path, TWIN_DB) as twin:
        assert interface.create(twin) == [OUTBOX, INBOX]
        assert reflection(live.engine) == reflection(twin)


def test_example_trigger_queues_one_new_row_per_work_order_with_a_mobile(live: Live) -> None:
    """Inserting work orders queues 'new' sms_outbox rows for those with a mobile, Chinese text intact."""
    run_script(live, "interface.sql")
    run_script(live, "example-trigger.sql")
    orders = [("13800138000", "空调不制冷"), (None, "无手机号"), ("", "空号码"), ("13900139000", "热水器漏水（二楼）")]
    values = ", ".join(f"(:m{n}, :t{n})" for n in range(len(orders)))
    params = {k: v for n, (mobile, title) in enumerate(orders) for k, v in ((f"m{n}", mobile), (f"t{n}", title))}
    outbox = interface.outbox.c
    with live.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO work_orders (customer_mobile, title) VALUES {values}"), params)
        ids = {title: wo_id for title, wo_id in conn.execute(text("SELECT title, id FROM work_orders"))}
        rows = conn.execute(select(outbox.mobiles, outbox.content, outbox.ref, outbox.state, outbox.report_wanted,
                                   outbox.message_id).order_by(outbox.id)).all()
        created = conn.execute(select(outbox.created_at)).scalars().all()
    assert [tuple(row) for row in rows] == [
        (mobile, f"您的工单{title}已受理，编号{ids[title]}", f"WO-{ids[title]}", "new", 1, None)
        for mobile, title in orders if mobile]
    assert len(created) == 2 and all(created)


# -- grants.sql on PostgreSQL and MariaDB -----------------------------------------------------------

def revokes(grants: list[str]) -> list[str]:
    """The REVOKE undoing each GRANT (MariaDB keeps table privileges after DROP TABLE)."""
    return [re.sub(r"^GRANT\b", "REVOKE", stmt).rpartition(" TO ")[0] + " FROM " + stmt.rpartition(" TO ")[2]
            for stmt in grants]


def as_role(engine: Engine, role: str, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL ROLE {role}"))
        conn.execute(text(sql))


def test_grants_apply_on_postgresql(tmp_path: Path) -> None:
    """grants.sql applies; smsgw and legacy_app can do their part and are refused the rest."""
    with scratch("postgresql", tmp_path, DB) as engine:
        live = Live("postgresql", engine)
        with engine.begin() as conn:
            existing = set(conn.execute(text("SELECT rolname FROM pg_roles")).scalars())
            created = [role for role in ROLES if role not in existing]
            for role in created:
                conn.execute(text(f"CREATE ROLE {role} NOLOGIN"))
        try:
            run_script(live, "interface.sql")
            run_script(live, "grants.sql")
            assert postgresql_privileges(engine) == PRIVILEGES
            as_role(engine, "legacy_app", "INSERT INTO sms_outbox (mobiles, content) VALUES ('13800138000', '测试')")
            as_role(engine, "smsgw", "SELECT id FROM sms_outbox WHERE state = 'new' FOR UPDATE SKIP LOCKED")
            as_role(engine, "smsgw", "UPDATE sms_outbox SET state = 'accepted', taken_by = 'n1', taken_at = now()")
            as_role(engine, "smsgw", "INSERT INTO sms_inbox (mo_id, mobile, content, dest, ext, received_at) "
                                     "VALUES ('1', '13800138000', '好', '106900', '', now())")
            as_role(engine, "legacy_app", "UPDATE sms_inbox SET read_flag = 1 WHERE id = 1")
            for role, sql in [("smsgw", "UPDATE sms_outbox SET content = 'x'"), ("smsgw", "DELETE FROM sms_outbox"),
                              ("legacy_app", "UPDATE sms_outbox SET state = 'new'"),
                              ("legacy_app", "UPDATE sms_inbox SET content = 'x'")]:
                with pytest.raises(DBAPIError, match="permission denied"):
                    as_role(engine, role, sql)
        finally:  # a role cannot be dropped while it holds privileges on a table
            execute_all(engine, [f"DROP TABLE IF EXISTS {OUTBOX}, {INBOX}"] + [f"DROP ROLE {role}" for role in created])


def postgresql_privileges(engine: Engine) -> set[Privilege]:
    """The privileges on the two tables of the two roles; a column's when its table's does not cover it."""
    where = "WHERE grantee IN ('smsgw', 'legacy_app') AND table_name IN ('sms_outbox', 'sms_inbox')"
    select_ = "SELECT grantee, table_name, privilege_type"
    with engine.connect() as conn:
        tables = {(g, t, p, None) for g, t, p in conn.execute(text(
            f"{select_} FROM information_schema.role_table_grants {where}"))}
        columns = {(g, t, p, c) for g, t, p, c in conn.execute(text(
            f"{select_}, column_name FROM information_schema.column_privileges {where}"))
            if (g, t, p, None) not in tables}
    return tables | columns


def test_grants_apply_on_mariadb(tmp_path: Path) -> None:
    """grants.sql applies and leaves exactly the least privileges in the server's grant tables."""
    with scratch("mysql", tmp_path, DB) as engine:
        live = Live("mysql", engine)
        with engine.begin() as conn:
            existing = set(conn.execute(text("SELECT User FROM mysql.user WHERE Host = '%'")).scalars())
            created = [role for role in ROLES if role not in existing]
            for role in created:
                conn.execute(text(f"CREATE USER IF NOT EXISTS '{role}'@'%'"))
        grants: list[str] = []
        try:
            run_script(live, "interface.sql")
            grants = run_script(live, "grants.sql")
            assert mariadb_privileges(engine) == PRIVILEGES
        finally:
            execute_all(engine, revokes(grants) + [f"DROP USER '{role}'@'%'" for role in created])


def mariadb_privileges(engine: Engine) -> set[Privilege]:
    out: set[Privilege] = set()
    queries = [
        "SELECT GRANTEE, TABLE_NAME, PRIVILEGE_TYPE, NULL FROM information_schema.TABLE_PRIVILEGES "
        "WHERE TABLE_SCHEMA = :db",
        "SELECT GRANTEE, TABLE_NAME, PRIVILEGE_TYPE, COLUMN_NAME FROM information_schema.COLUMN_PRIVILEGES "
        "WHERE TABLE_SCHEMA = :db",
    ]
    with engine.connect() as conn:
        for query in queries:
            for grantee, table, privilege, column in conn.execute(text(query), {"db": DB}):
                user = grantee.split("@")[0].strip("'")
                if user in ROLES and table in (OUTBOX, INBOX):
                    out.add((user, table, privilege, column))
    return out
