"""The daemon's subcommands (check-config, db upgrade, run refusing bad config, hash-key) as real subprocesses."""

from __future__ import annotations

import hashlib
import pathlib
import sqlite3

from test_cli import ROOT, smsgw


def bad_config(tmp_path: pathlib.Path) -> pathlib.Path:
    text = (ROOT / "conf" / "smsgw.yaml").read_text(encoding="utf-8")
    text = text.replace("port: 8080", "port: 80800", 1).replace("node:", "node:\n  colour: blue", 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def good_config(tmp_path: pathlib.Path) -> pathlib.Path:
    text = (ROOT / "conf" / "smsgw.yaml").read_text(encoding="utf-8")
    path = tmp_path / "smsgw.yaml"
    path.write_text(text.replace("data_dir: var", f"data_dir: {tmp_path / 'var'}", 1), encoding="utf-8")
    return path


def test_check_config_prints_every_problem_with_its_line_and_exits_1(tmp_path: pathlib.Path) -> None:
    """check-config names each bad key with file, line and a fix, and fails."""
    out = smsgw("check-config", "-c", str(bad_config(tmp_path)))
    assert out.returncode == 1
    assert "node.colour" in out.stderr and "api.port" in out.stderr
    assert out.stderr.count("fix:") >= 2
    assert f"{tmp_path / 'bad.yaml'}:" in out.stderr


def test_run_refuses_the_same_problems_with_the_same_messages(tmp_path: pathlib.Path) -> None:
    """`smsgw run` on a bad file starts nothing and prints what check-config prints."""
    path = bad_config(tmp_path)
    check = smsgw("check-config", "-c", str(path))
    run = smsgw("run", "-c", str(path))
    assert run.returncode == 2
    problems = [line.strip() for line in check.stderr.splitlines()[1:]]
    assert problems and all(problem in run.stderr for problem in problems)


def test_check_config_accepts_the_shipped_example() -> None:
    """The example configuration is valid."""
    out = smsgw("check-config", "-c", str(ROOT / "conf" / "smsgw.yaml"))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


def test_db_upgrade_creates_the_schema_once(tmp_path: pathlib.Path) -> None:
    """db upgrade creates the SQLite store under data_dir; a second run finds it up to date."""
    path = good_config(tmp_path)
    first = smsgw("db", "upgrade", "-c", str(path))
    assert first.returncode == 0, first.stderr
    assert "applied migration(s) 1" in first.stdout
    second = smsgw("db", "upgrade", "-c", str(path))
    assert "up to date" in second.stdout
    tables = {row[0] for row in sqlite3.connect(tmp_path / "var" / "smsgw.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"messages", "recipients", "segments", "reports", "mo_messages", "outbox", "audit_log"} <= tables


def test_run_without_schema_says_to_upgrade(tmp_path: pathlib.Path) -> None:
    """`smsgw run` on an empty store refuses to start and names `smsgw db upgrade`."""
    out = smsgw("run", "-c", str(good_config(tmp_path)), timeout=60)
    assert out.returncode == 1
    assert "smsgw db upgrade" in out.stderr


def test_hash_key_prints_the_sha256_to_configure() -> None:
    """hash-key prints the api_key_sha256 value of a key."""
    out = smsgw("hash-key", "demo-key")
    assert out.stdout.strip() == hashlib.sha256(b"demo-key").hexdigest()


def test_db_init_interface_creates_the_standard_tables_once(tmp_path: pathlib.Path) -> None:
    """init-interface --url creates sms_outbox and sms_inbox, and leaves existing ones alone."""
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    first = smsgw("db", "init-interface", "--url", url)
    assert first.returncode == 0, first.stderr
    assert "created sms_outbox, sms_inbox" in first.stdout
    again = smsgw("db", "init-interface", "--url", url)
    assert again.returncode == 0 and "exist already; nothing changed" in again.stdout
    with sqlite3.connect(tmp_path / "legacy.db") as conn:
        conn.execute("INSERT INTO sms_outbox (mobiles, content) VALUES ('13800138000', '你好')")
        assert conn.execute("SELECT state, report_wanted FROM sms_outbox").fetchone() == ("new", 1)


def test_db_init_interface_prints_a_dialects_ddl_without_connecting() -> None:
    """--dialect D --print shows the DDL; --dialect alone is refused with the fix."""
    out = smsgw("db", "init-interface", "--dialect", "mssql", "--print")
    assert out.returncode == 0
    assert "CREATE TABLE sms_outbox" in out.stdout and "NVARCHAR(2000)" in out.stdout and "DATETIME2" in out.stdout
    refused = smsgw("db", "init-interface", "--dialect", "oracle")
    assert refused.returncode == 2 and "add --print" in refused.stderr


def test_db_init_interface_takes_a_configured_source(tmp_path: pathlib.Path) -> None:
    """--source NAME -c FILE uses that db_sources entry's URL; an unknown name lists the known ones."""
    path = good_config(tmp_path)
    legacy = tmp_path / "erp.db"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "db_sources: []", f"db_sources:\n  - {{name: erp, url: 'sqlite:///{legacy}'}}"), encoding="utf-8")
    out = smsgw("db", "init-interface", "--source", "erp", "-c", str(path))
    assert out.returncode == 0, out.stderr
    assert legacy.exists()
    unknown = smsgw("db", "init-interface", "--source", "crm", "-c", str(path))
    assert unknown.returncode == 2 and "no db_sources entry named 'crm'" in unknown.stderr and "erp" in unknown.stderr
    bad = smsgw("db", "init-interface", "--url", "nonsense")
    assert bad.returncode == 2 and "not a database URL" in bad.stderr
