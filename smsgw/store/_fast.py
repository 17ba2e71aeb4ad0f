"""The store's hot statements, compiled once per dialect and run on the DB-API cursor.

SQLAlchemy Core builds every statement here (so each dialect gets its own SQL and
placeholders), but only once: `Connection.execute` would compile-or-look-up the
statement and process each row's parameters on every call, which measured a sixth
of the writer thread's time under load (`_init_compiled`, `construct_params`).
Rows are plain tuples in the statement's column order, handed to the driver's
`executemany`; results are plain tuples.

The values must already be what the driver takes: ints, floats, str, bool and
None (the store's columns hold nothing else). On Oracle the same statements go
through `Connection.execute` instead: python-oracledb needs SQLAlchemy's input
sizes for NCLOB content and its 0/1 for booleans (no SQL BOOLEAN before 23ai),
and that path cannot be measured here without an Oracle server.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.engine import Dialect

# IN lists are padded (repeating the last value) to one of these sizes, so a
# statement is compiled for ten list lengths instead of one per length.
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 500)
IN_MAX = _SIZES[-1]


# SQLite's limit on bind parameters per statement (SQLITE_MAX_VARIABLE_NUMBER: 999 before 3.32).
SQLITE_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
SQLITE_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)


class Statement:
    """One compiled statement: its SQL, how a row tuple becomes the driver's parameters, and its construct.

    On SQLite an INSERT also keeps its SQL cut around the row's `(?, ?, …)` group (`head`, `group`,
    `tail`), so that many rows go as one multi-row INSERT; an UPDATE by key becomes
    `UPDATE … FROM (VALUES (…), (…)) AS v WHERE key = v.columnN` (see `Fast.executemany`).
    """

    __slots__ = ("sql", "_convert", "construct", "names", "head", "group", "tail", "by_key", "as_is")

    def __init__(self, sql: str, convert: Callable[[Sequence[Any]], Any], construct: Any,
                 names: Sequence[str]) -> None:
        self.sql = sql
        self._convert = convert
        self.construct = construct
        self.names = tuple(names)
        self.head = ""
        self.group = ""
        self.tail = ""
        self.by_key = False  # an UPDATE whose rows end with the key: its multi-row form takes rows as they are
        self.as_is = convert is tuple  # positional binds in row order: a row is its own parameters

    def params(self, row: Sequence[Any]) -> Any:
        return self._convert(row)

    def named(self, row: Sequence[Any]) -> dict[str, Any]:
        return dict(zip(self.names, row))


class Fast:
    """Compiles statements for one dialect on first use and runs them on a connection's cursor."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._cache: dict[Any, Statement] = {}
        self.raw = dialect.name != "oracle"  # Oracle: through Connection.execute (see the module's note)
        # SQLite: one multi-row INSERT instead of executemany. The sqlite3 module releases and retakes the
        # GIL for every row of an executemany; while the reactor thread is busy each retake waits, and an
        # accept of 100 rows measured 3.5x slower in the daemon than alone (docs/performance.md).
        self.multirow = dialect.name == "sqlite" and dialect.paramstyle == "qmark"
        self.multirow_update = self.multirow and SQLITE_UPDATE_FROM

    # --- building ----------------------------------------------------------------

    def compile(self, key: Any, build: Callable[[], Any], names: Sequence[str]) -> Statement:
        """The statement `build()` makes, whose bind parameters are exactly `names` (in row order)."""
        found = self._cache.get(key)
        if found is not None:
            return found
        construct = build()
        compiled = construct.compile(dialect=self._dialect)
        binds = list(compiled.positiontup or ()) if self._dialect.positional else list(compiled.params)
        unknown = set(binds) - set(names)
        if unknown:
            raise ValueError(f"statement {key!r}: bind parameters {sorted(unknown)} are not row columns")
        index = {name: i for i, name in enumerate(names)}
        convert: Callable[[Sequence[Any]], Any]
        if self._dialect.positional:
            order = [index[name] for name in binds]
            if order == list(range(len(names))):
                convert = tuple
            else:
                def convert(row: Sequence[Any]) -> Any:
                    return tuple(row[i] for i in order)
        else:
            pairs = list(index.items())

            def convert(row: Sequence[Any]) -> Any:
                return {name: row[i] for name, i in pairs}
        statement = Statement(str(compiled), convert, construct, names)
        self._cache[key] = statement
        return statement

    def insert(self, table: Table, columns: Sequence[str]) -> Statement:
        key = ("insert", table.name, tuple(columns))
        statement = self._cache.get(key)
        if statement is not None:
            return statement
        names = [f"p_{c}" for c in columns]
        statement = self.compile(key, lambda: table.insert().values({c: bindparam(n) for c, n in zip(columns, names)}),
                                 names)
        if self.multirow:
            cut = statement.sql.rindex(" VALUES (") + len(" VALUES ")
            statement.head, statement.group = statement.sql[:cut], statement.sql[cut:]
        return statement

    def update(self, table: Table, columns: Sequence[str], key: str = "id") -> Statement:
        """UPDATE table SET columns WHERE key = ?; a row is (*values, key value).

        Several rows for one key: the last one wins, as with executemany.
        """
        cache_key = ("update", table.name, tuple(columns), key)
        statement = self._cache.get(cache_key)
        if statement is not None:
            return statement
        names = [f"p_{c}" for c in columns] + ["w_key"]
        statement = self.compile(
            cache_key, lambda: update(table).where(table.c[key] == bindparam("w_key"))
            .values({c: bindparam(n) for c, n in zip(columns, names)}), names)
        if self.multirow_update:
            quote = self._dialect.identifier_preparer.quote
            name = quote(table.name)
            sets = ", ".join(f"{quote(c)} = v.column{i + 1}" for i, c in enumerate(columns))
            statement.head = f"UPDATE {name} SET {sets} FROM (VALUES "
            statement.group = "(" + ", ".join("?" * len(names)) + ")"
            statement.tail = f") AS v WHERE {name}.{quote(key)} = v.column{len(names)}"
            statement.by_key = True
        return statement

    def select_in(self, table: Table, columns: Sequence[str], key: str, size: int, *,
                  lock: bool = False, present: str | None = None) -> Statement:
        """SELECT columns FROM table WHERE key IN (size values) [AND present IS NOT NULL] [FOR UPDATE]."""
        names = [f"k{i}" for i in range(size)]

        def build() -> Any:
            stmt = select(*(table.c[c] for c in columns)).where(table.c[key].in_([bindparam(n) for n in names]))
            if present is not None:
                stmt = stmt.where(table.c[present].is_not(None))
            return stmt.with_for_update() if lock else stmt
        return self.compile(("select_in", table.name, tuple(columns), key, size, lock, present), build, names)

    # --- running -------------------------------------------------------------------

    def execute_in(self, conn: Connection, key: str, build: Callable[[list[Any]], Any], fixed: dict[str, Any],
                   values: Iterable[Any]) -> None:
        """Run `build(binds)`, a statement with `… IN (binds)` and bind parameters `fixed`, for `values`
        in padded IN lists of at most IN_MAX."""
        for size, padded in _in_lists(values):
            binds = [f"k{i}" for i in range(size)]
            statement = self.compile((key, size), lambda: build([bindparam(b) for b in binds]), [*fixed, *binds])
            self.executemany(conn, statement, [(*fixed.values(), *padded)])

    def executemany(self, conn: Connection, statement: Statement, rows: Iterable[Sequence[Any]]) -> None:
        if not self.raw:
            named = [statement.named(row) for row in rows]
            if named:
                conn.execute(statement.construct, named)
            return
        if statement.by_key:
            # In the names' order (the VALUES list is ours); one row per key, the last.
            params = list({row[-1]: row for row in rows}.values())
        elif statement.as_is:
            params = rows if isinstance(rows, list) else list(rows)
        else:
            params = [statement.params(row) for row in rows]
        if not params:
            return
        cursor = conn.connection.cursor()
        try:
            if len(params) == 1:
                cursor.execute(statement.sql, statement.params(params[0]) if statement.by_key else params[0])
            elif statement.group:
                per = max(1, SQLITE_MAX_VARIABLES // len(statement.names))
                for start in range(0, len(params), per):
                    chunk = params[start:start + per]
                    cursor.execute(statement.head + ", ".join([statement.group] * len(chunk)) + statement.tail,
                                   [value for row in chunk for value in row])
            else:
                cursor.executemany(statement.sql, params)
        finally:
            cursor.close()

    def fetch_in(self, conn: Connection, table: Table, columns: Sequence[str], key: str, values: Iterable[Any],
                 *, lock: bool = False, present: str | None = None) -> list[tuple[Any, ...]]:
        """Rows (tuples of `columns`) whose `key` is one of `values` (and, given `present`, whose column
        `present` is not NULL), fetched in IN lists of at most IN_MAX."""
        lists = _in_lists(values)
        out: list[tuple[Any, ...]] = []
        if not lists:
            return out
        cursor = conn.connection.cursor() if self.raw else None
        try:
            for size, padded in lists:
                statement = self.select_in(table, columns, key, size, lock=lock, present=present)
                if cursor is None:
                    out.extend(tuple(row) for row in conn.execute(statement.construct, statement.named(padded)))
                else:
                    cursor.execute(statement.sql, statement.params(padded))
                    out.extend(cursor.fetchall())
        finally:
            if cursor is not None:
                cursor.close()
        return out


def chunks(values: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """`values` in slices of at most `size` (an IN list stays within every database's limit)."""
    return [values[i:i + size] for i in range(0, len(values), size)]


def _in_lists(values: Iterable[Any]) -> list[tuple[int, list[Any]]]:
    """The distinct `values` in IN lists of at most IN_MAX, each padded to a length in _SIZES by repeating
    its last value (a repeated value in an IN list changes nothing): (length, list) pairs."""
    wanted = sorted(set(values))
    out = []
    for chunk in chunks(wanted, IN_MAX):
        size = next(s for s in _SIZES if s >= len(chunk))
        out.append((size, [*chunk, *[chunk[-1]] * (size - len(chunk))]))
    return out
