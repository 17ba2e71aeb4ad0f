"""Real database servers for tests: PostgreSQL and MariaDB on 127.0.0.1, SQLite in a temp dir.

Tests that need a server call `server_url("postgresql")`: on a machine without
that server the test is skipped with the reason, except in CI
(SMSGW_REQUIRE_DBS=1), where a missing server fails the test.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import Engine, create_engine, text

from smsgw.store import migrations, schema

_SERVERS = {
    "postgresql": ("postgresql+psycopg://postgres@127.0.0.1:5432/{db}", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mysql": ("mysql+pymysql://root@127.0.0.1:3306/{db}?charset=utf8mb4", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
DB_NAME = "smsgw_test"
_ready: dict[str, str] = {}


def server_url(dialect: str, db: str = DB_NAME) -> str:
    """URL of a scratch database `db` on the local server (created on first use)."""
    key = f"{dialect}/{db}"
    if key in _ready:
        return _ready[key]
    template, admin_url = _SERVERS[dialect]
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if dialect == "postgresql":
                exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": db}).first()
                if not exists:
                    conn.execute(text(f'CREATE DATABASE "{db}"'))
            else:
                conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4"))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001 - turned into a skip or a failure
        reason = f"{dialect} server on 127.0.0.1 not reachable ({str(exc).splitlines()[0]})"
        if os.environ.get("SMSGW_REQUIRE_DBS") == "1":
            pytest.fail(f"CI requires it: {reason}")
        pytest.skip(reason)
    _ready[key] = template.format(db=db)
    return _ready[key]


def reset(engine: Engine) -> None:
    """Drop every smsgw table, then apply the migrations afresh."""
    schema.metadata.drop_all(engine)
    migrations.upgrade(engine)


def store_url(dialect: str, tmp_path: object) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return server_url(dialect)
