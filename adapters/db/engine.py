"""Connections to a legacy database, and telling "it is down" from "it refused this"."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy import exc as sa_exc

from smsgw._config_db import DbSourceConfig
from smsgw.store._engine import begin_with, server_options


def make_source_engine(source: DbSourceConfig) -> Engine:
    """An engine with its own pool for one source.

    SQLite: every transaction begins with BEGIN IMMEDIATE (the claim's lock);
    the file's journal mode is left as the legacy system set it.
    MySQL/MariaDB: READ COMMITTED, so SKIP LOCKED skips only the rows another
    node holds (REPEATABLE READ's gap locks would make it skip more).
    """
    url = source.plain_url()
    dialect = source.dialect()
    kwargs: dict[str, Any] = server_options(dialect, source.pool_size)
    if dialect == "sqlite":
        kwargs["creator"] = _sqlite_opener(url, source.busy_timeout)
    # A database that does not answer must not hold a poll forever.
    if dialect == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    elif dialect == "mysql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": 120, "write_timeout": 120}
    elif dialect == "oracle":
        kwargs["connect_args"] = {"tcp_connect_timeout": CONNECT_TIMEOUT}
    if dialect == "oracle" and source.oracle_client is not None:
        # Thick mode (servers older than 12.1): python-oracledb loads the Oracle Client libraries once per process.
        kwargs["thick_mode"] = {} if source.oracle_client == "system" else {"lib_dir": source.oracle_client}
    engine = create_engine(url, **kwargs)
    if dialect == "sqlite":
        begin_with(engine, "BEGIN IMMEDIATE")
    return engine


CONNECT_TIMEOUT = 10


class SourceFileMissing(Exception):
    """A SQLite source's file is not there (a typo, or a mount that is not up): never created empty."""


def _sqlite_opener(url: str, timeout: float) -> Any:
    import os
    import sqlite3

    from sqlalchemy.engine import make_url

    path = make_url(url).database or ""

    def connect() -> sqlite3.Connection:
        if not os.path.exists(path):
            raise SourceFileMissing(f"the SQLite file {path} does not exist: check the source's url")
        # isolation_level None: no implicit BEGIN of pysqlite's own, the engine begins (BEGIN IMMEDIATE).
        return sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=None)
    return connect


def is_unreachable(error: BaseException) -> bool:
    """True when the database could not be reached or the connection broke (try again later);
    False when it answered and refused the statement (a mapping or data problem)."""
    if isinstance(error, (sa_exc.TimeoutError, SourceFileMissing)):  # no connection from the pool in time
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if isinstance(error, sa_exc.InterfaceError):
            return True
        if isinstance(error, sa_exc.OperationalError):
            text = str(error.orig).lower()
            # SQLite reports a held lock as OperationalError too: that is "busy", not a mapping problem.
            refused = ("no such table", "no such column", "syntax error", "unknown column", "doesn't exist")
            return not any(r in text for r in refused)
    return False


def short_error(error: BaseException) -> str:
    """The database's own message, one line, without SQLAlchemy's statement dump."""
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
