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

from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Column, Connection, Table, bindparam, select, update
from sqlalchemy.engine import Dialect

# IN lists are padded (repeating the last value) to one of these sizes, so a
# statement is compiled for ten list lengths instead of one per length.
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 500)
IN_MAX = _SIZES[-1]


class Statement:
    """One compiled statement: its SQL, how a row tuple becomes the driver's parameters, and its construct."""

    __slots__ = ("sql", "_convert", "construct", "names")

    def __init__(self, sql: str, convert: Callable[[Sequence[Any]], Any], construct: Any,
                 names: Sequence[str]) -> None:
        self.sql = sql
        self._convert = convert
        self.construct = construct
        self.names = tuple(names)

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
        names = [f"p_{c}" for c in columns]
        return self.compile(("insert", table.name, tuple(columns)),
                            lambda: table.insert().values({c: bindparam(n) for c, n in zip(columns, names)}), names)

    def update(self, table: Table, columns: Sequence[str], key: str = "id") -> Statement:
        """UPDATE table SET columns WHERE key = ?; a row is (*values, key value)."""
        names = [f"p_{c}" for c in columns] + ["w_key"]
        return self.compile(
            ("update", table.name, tuple(columns), key),
            lambda: update(table).where(table.c[key] == bindparam("w_key"))
            .values({c: bindparam(n) for c, n in zip(columns, names)}), names)

    def select_in(self, table: Table, columns: Sequence[str], key: str, size: int, *,
                  lock: bool = False) -> Statement:
        """SELECT columns FROM table WHERE key IN (size values) [FOR UPDATE]."""
        names = [f"k{i}" for i in range(size)]

        def build() -> Any:
            stmt = select(*(table.c[c] for c in columns)).where(table.c[key].in_([bindparam(n) for n in names]))
            return stmt.with_for_update() if lock else stmt
        return self.compile(("select_in", table.name, tuple(columns), key, size, lock), build, names)

    # --- running -------------------------------------------------------------------

    def executemany(self, conn: Connection, statement: Statement, rows: Iterable[Sequence[Any]]) -> None:
        if not self.raw:
            named = [statement.named(row) for row in rows]
            if named:
                conn.execute(statement.construct, named)
            return
        params = [statement.params(row) for row in rows]
        if not params:
            return
        cursor = conn.connection.cursor()
        try:
            if len(params) == 1:
                cursor.execute(statement.sql, params[0])
            else:
                cursor.executemany(statement.sql, params)
        finally:
            cursor.close()

    def fetch_in(self, conn: Connection, table: Table, columns: Sequence[str], key: str, values: Iterable[Any],
                 *, lock: bool = False) -> list[tuple[Any, ...]]:
        """Rows (tuples of `columns`) whose `key` is one of `values`, fetched in IN lists of at most IN_MAX."""
        wanted = sorted(set(values))
        out: list[tuple[Any, ...]] = []
        if not wanted:
            return out
        cursor = conn.connection.cursor() if self.raw else None
        try:
            for start in range(0, len(wanted), IN_MAX):
                chunk = wanted[start:start + IN_MAX]
                size = next(s for s in _SIZES if s >= len(chunk))
                padded = chunk + [chunk[-1]] * (size - len(chunk))
                statement = self.select_in(table, columns, key, size, lock=lock)
                if cursor is None:
                    out.extend(tuple(row) for row in conn.execute(statement.construct, statement.named(padded)))
                else:
                    cursor.execute(statement.sql, statement.params(padded))
                    out.extend(cursor.fetchall())
        finally:
            if cursor is not None:
                cursor.close()
        return out


def columns_of(table: Table) -> tuple[str, ...]:
    """Every column of `table`, in its order (the row layout for `Fast.insert(table, columns_of(table))`)."""
    return tuple(c.name for c in table.columns if isinstance(c, Column))
