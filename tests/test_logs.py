"""The daemon's logging: JSON lines, the log file through logrotate, masking, levels."""

from __future__ import annotations

import grp
import io
import json
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import sys
from typing import Any, Iterator

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from smsgw import logs

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put structlog back as it was: other test modules log through the same configuration."""
    saved = structlog.get_config()
    processors = list(saved["processors"])
    target, loud = logs._output.target, logs._output.loud_target
    yield
    for sink in logs._open_files:
        sink.close()
    logs._open_files.clear()
    logs._output.retarget(target, loud)
    saved["processors"][:] = processors
    structlog.configure(**saved)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def log_to_string(**options: Any) -> io.StringIO:
    out = io.StringIO()
    logs.configure_daemon(options.pop("level", "info"), None, fmt="json", stream=out, **options)
    return out


def test_a_line_is_one_json_object_with_timestamp_level_event_then_fields() -> None:
    """A log call becomes one JSON line: timestamp, level, event first, then the fields, Chinese as is."""
    out = log_to_string()
    structlog.get_logger().info("message_accepted", msg_id=7, account="crm", dest="13800138000", note="收到")
    line = out.getvalue()
    assert line.count("\n") == 1 and "收到" in line
    record = json.loads(line)
    assert list(record) == ["timestamp", "level", "event", "msg_id", "account", "dest", "note"]
    assert record["level"] == "info" and record["event"] == "message_accepted" and record["msg_id"] == 7
    assert record["timestamp"][-6] in "+-" and record["timestamp"][19] == "."


def test_values_json_cannot_hold_are_written_as_text() -> None:
    """bytes, datetimes and sets are written with str(); None, bools, floats and lists as JSON."""
    import datetime

    out = log_to_string()
    when = datetime.datetime(2024, 3, 5, 8, 9, 10)
    structlog.get_logger().info("x", raw=b"\x01", when=when, flags={1}, none=None, ok=True, rate=0.5, ids=[1, "a"])
    record = json.loads(out.getvalue())
    assert record["raw"] == "b'\\x01'" and record["when"] == str(when) and record["flags"] == "{1}"
    assert (record["none"], record["ok"], record["rate"], record["ids"]) == (None, True, 0.5, [1, "a"])


def test_fields_named_like_the_fixed_keys_do_not_repeat_them() -> None:
    """A field called level or timestamp is kept as _level / _timestamp instead of a duplicate key."""
    out = log_to_string()
    structlog.get_logger().warning("alarm", level="critical", timestamp="yesterday")
    line = out.getvalue()
    assert line.count('"level"') == 1
    record = json.loads(line)
    assert (record["level"], record["_level"], record["_timestamp"]) == ("warning", "critical", "yesterday")


def test_context_variables_and_bound_values_are_included() -> None:
    """Values bound to the logger and structlog context variables appear as fields."""
    out = log_to_string()
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        structlog.get_logger().bind(link="cmcc-1").info("link_up")
    structlog.get_logger().info("after")
    first, second = records(out.getvalue())
    assert (first["link"], first["request_id"]) == ("cmcc-1", "r-1")
    assert "request_id" not in second


def test_exceptions_are_rendered_as_a_traceback_field() -> None:
    """exc_info=True adds the formatted traceback under exception."""
    out = log_to_string()
    try:
        raise RuntimeError("store unreachable")
    except RuntimeError:
        structlog.get_logger().exception("store_failed")
    record = json.loads(out.getvalue())
    assert record["level"] == "error"
    assert "RuntimeError: store unreachable" in record["exception"]


def test_the_level_drops_lower_lines() -> None:
    """At level warning, info and debug lines are dropped and warning lines kept."""
    out = log_to_string(level="warning")
    log = structlog.get_logger()
    log.debug("a")
    log.info("b")
    log.warning("c")
    assert [r["event"] for r in records(out.getvalue())] == ["c"]


def test_unknown_level_and_format_are_refused_with_the_valid_ones() -> None:
    """An unknown level or format raises ValueError listing what is accepted."""
    with pytest.raises(ValueError, match="use one of debug, info, warning, error"):
        logs.configure_daemon("verbose", None)
    with pytest.raises(ValueError, match="use one of auto, json, console"):
        logs.configure_daemon("info", None, fmt="xml")


def test_console_format_with_a_file_is_refused(tmp_path: pathlib.Path) -> None:
    """Asking for console lines together with a log file is refused: with a file everything is JSON."""
    with pytest.raises(ValueError, match="cannot be used with a log file"):
        logs.configure_daemon("info", str(tmp_path / "smsgw.log"), fmt="console")


def test_auto_format_is_console_on_a_terminal_and_json_elsewhere() -> None:
    """fmt=auto writes console lines to a TTY and JSON otherwise; fmt=json forces JSON on a TTY."""
    tty = Tty()
    logs.configure_daemon("info", None, stream=tty)
    structlog.get_logger().info("link_up", link="cmcc-1")
    assert "link_up" in tty.getvalue() and not tty.getvalue().startswith("{")
    tty = Tty()
    logs.configure_daemon("info", None, fmt="json", stream=tty)
    structlog.get_logger().info("link_up")
    assert json.loads(tty.getvalue())["event"] == "link_up"


def test_the_tools_configure_still_writes_json_to_its_stream() -> None:
    """configure() (simulator, demo) writes JSON to the given stream and masks secrets too."""
    out = io.StringIO()
    logs.configure("info", out, json=True)
    structlog.get_logger().info("demo_mo", text="收到，谢谢", secret="abc")
    record = json.loads(out.getvalue())
    assert (record["text"], record["secret"]) == ("收到，谢谢", "***")


def test_a_cached_logger_follows_a_later_configuration(tmp_path: pathlib.Path) -> None:
    """A logger used under one configuration writes where a later configuration says."""
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    log = structlog.get_logger()
    logs.configure_daemon("info", str(first))
    log.info("one")
    logs.configure_daemon("info", str(second))
    log.info("two")
    assert [r["event"] for r in records(first.read_text(encoding="utf-8"))] == ["one"]
    assert [r["event"] for r in records(second.read_text(encoding="utf-8"))] == ["two"]


# --- masking ----------------------------------------------------------------------------------

def test_secret_fields_are_always_masked() -> None:
    """Keys that are or end with secret, password, token... become *** whatever their case or dashes."""
    out = log_to_string()
    structlog.get_logger().info(
        "config_loaded", secret="s1", db_password="p1", PASSWD="p2", api_key="k1", X_ApiKey="k2",
        **{"X-Api-Key": "k3"}, access_token="t1", Authorization="Bearer t2", shared_secret=None,
        key="kept", tokens=3, sp_id="901234")
    record = json.loads(out.getvalue())
    masked = ("secret", "db_password", "PASSWD", "api_key", "X_ApiKey", "X-Api-Key", "access_token",
              "Authorization")
    assert {k: record[k] for k in masked} == dict.fromkeys(masked, "***")
    assert (record["shared_secret"], record["key"], record["tokens"], record["sp_id"]) == (None, "kept", 3, "901234")


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://smsgw:pw@db:5432/smsgw", "postgresql://smsgw:***@db:5432/smsgw"),
    ("mysql+pymysql://u:p@ss@db/smsgw?charset=utf8mb4", "mysql+pymysql://u:***@db/smsgw?charset=utf8mb4"),
    ("oracle+oracledb://sms:s3cr%40t@10.0.0.5:1521/?service_name=ORCL",
     "oracle+oracledb://sms:***@10.0.0.5:1521/?service_name=ORCL"),
    ("sms/s3cret@10.0.0.5:1521/ORCL", "sms/***@10.0.0.5:1521/ORCL"),
    ("http://127.0.0.1:8080/hook?user=a&password=b&x=1", "http://127.0.0.1:8080/hook?user=a&password=***&x=1"),
    ("postgresql://smsgw@db/smsgw", "postgresql://smsgw@db/smsgw"),
    ("sqlite:////var/lib/smsgw/smsgw.db", "sqlite:////var/lib/smsgw/smsgw.db"),
    ("http://example.com/a:b@c", "http://example.com/a:b@c"),
])
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    """mask_url replaces the password of a URL, an Oracle user/pw@ DSN or a query parameter with ***."""
    assert logs.mask_url(url) == masked


@given(user=st.text("abcdefgh0123", min_size=1),
       password=st.text(st.characters(exclude_characters="/?#", exclude_categories=["Cs"]), min_size=1),
       host=st.text("abcdefgh0123.-", min_size=1))
def test_mask_url_never_shows_a_password(user: str, password: str, host: str) -> None:
    """Any password, even one holding @ or :, is replaced as a whole in scheme://user:pw@host/db."""
    assert logs.mask_url(f"postgresql://{user}:{password}@{host}/db") == f"postgresql://{user}:***@{host}/db"


def test_dsn_and_url_fields_keep_their_value_without_the_password() -> None:
    """A dsn, url, *_dsn or *_url field is logged with its password masked."""
    out = log_to_string()
    structlog.get_logger().info("store_connected", dsn="postgresql://u:pw@h/db", url="http://h/x",
                                store_url="mysql://u:pw@h/db", callback_url=None)
    record = json.loads(out.getvalue())
    assert (record["dsn"], record["url"], record["store_url"], record["callback_url"]) == (
        "postgresql://u:***@h/db", "http://h/x", "mysql://u:***@h/db", None)


def test_nested_dicts_are_masked_one_level_deep_without_changing_the_callers_dict() -> None:
    """A dict field has its own secret keys masked; a dict inside it is left alone, the original untouched."""
    out = log_to_string(mask_content=True)
    settings = {"password": "pw", "host": "db", "text": "hi", "inner": {"password": "deep"}}
    structlog.get_logger().info("config_loaded", store=settings)
    record = json.loads(out.getvalue())
    assert record["store"] == {"password": "***", "host": "db", "text": "«masked 2 chars»",
                               "inner": {"password": "deep"}}
    assert settings["password"] == "pw"


def test_message_text_is_masked_only_when_asked() -> None:
    """With mask_content, text/content/message_text/body become «masked N chars», N counting characters."""
    fields = {"text": "您的验证码是493021", "content": "abc", "message_text": "", "body": b"\x00\x01", "dest": "138"}
    out = log_to_string(mask_content=True)
    structlog.get_logger().info("message_accepted", **fields)
    record = json.loads(out.getvalue())
    assert {k: record[k] for k in fields} == {
        "text": "«masked 12 chars»", "content": "«masked 3 chars»", "message_text": "«masked 0 chars»",
        "body": "«masked 2 bytes»", "dest": "138"}
    out = log_to_string(mask_content=False)
    structlog.get_logger().info("message_accepted", text="您的验证码是493021")
    assert json.loads(out.getvalue())["text"] == "您的验证码是493021"


def test_console_lines_are_masked_too() -> None:
    """The console renderer gets the same masking as JSON lines."""
    tty = Tty()
    logs.configure_daemon("info", None, fmt="console", stream=tty, mask_content=True)
    structlog.get_logger().info("x", password="hunter2", text="hello there")
    assert "hunter2" not in tty.getvalue() and "hello there" not in tty.getvalue()
    assert "«masked 11 chars»" in tty.getvalue()


plain_keys = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
    lambda k: logs._field(k).kind == 0 and k not in ("timestamp", "level", "event", "exc_info"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(plain_keys, inner, max_size=3),
    max_leaves=8)


@given(event=st.text(), fields=st.dictionaries(plain_keys, json_values, max_size=8))
def test_json_line_renders_what_json_loads_back(event: str, fields: dict[str, Any]) -> None:
    """Any event name and JSON-able fields come back from json.loads as logged."""
    line = logs.json_line()(None, "info", {"event": event, **fields})
    assert isinstance(line, str) and "\n" not in line
    record = json.loads(line)
    assert record.pop("level") == "info" and record.pop("event") == event
    record.pop("timestamp")
    assert record == fields


# --- the log file -----------------------------------------------------------------------------

def test_a_log_file_is_created_with_its_folders_and_appended_to(tmp_path: pathlib.Path) -> None:
    """The file and its parent folders are created; lines are appended after what was there."""
    path = tmp_path / "log" / "smsgw" / "smsgw.log"
    logs.configure_daemon("info", str(path))
    structlog.get_logger().info("first")
    logs.configure_daemon("info", str(path))
    structlog.get_logger().info("second", text="短信")
    assert [r["event"] for r in records(path.read_text(encoding="utf-8"))] == ["first", "second"]
    assert "短信" in path.read_text(encoding="utf-8")


def test_with_a_file_stdout_keeps_only_warnings_and_errors(tmp_path: pathlib.Path) -> None:
    """With a log file every line goes to the file and warnings and errors to stdout as well."""
    path, out = tmp_path / "smsgw.log", io.StringIO()
    logs.configure_daemon("debug", str(path), stream=out)
    log = structlog.get_logger()
    log.debug("a")
    log.info("b")
    log.warning("c")
    log.error("d")
    log.exception("e")
    log.critical("f")
    assert [r["event"] for r in records(path.read_text(encoding="utf-8"))] == ["a", "b", "c", "d", "e", "f"]
    assert [r["event"] for r in records(out.getvalue())] == ["c", "d", "e", "f"]


def test_lines_follow_a_renamed_file_after_the_check_interval(tmp_path: pathlib.Path) -> None:
    """After logrotate renames the file, lines land in the old file until the next check, then in a new one."""
    path, rotated = tmp_path / "smsgw.log", tmp_path / "smsgw.log.1"
    clock = ManualClock()
    sink = logs.ReopeningFile(str(path), check_interval=1.0, clock=clock)
    sink.msg("before")
    path.rename(rotated)
    path.write_text("")  # logrotate's create
    sink.msg("just after")
    clock.now = 1.0
    sink.msg("later")
    sink.close()
    assert rotated.read_text() == "before\njust after\n"
    assert path.read_text() == "later\n"


def test_a_removed_file_is_created_again(tmp_path: pathlib.Path) -> None:
    """When the log file is deleted, the next check creates it again."""
    path = tmp_path / "smsgw.log"
    clock = ManualClock()
    sink = logs.ReopeningFile(str(path), clock=clock)
    sink.msg("a")
    path.unlink()
    clock.now = 5.0
    sink.msg("b")
    sink.close()
    assert path.read_text() == "b\n"


def test_the_path_is_not_checked_between_intervals(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines within one check interval do not stat the path."""
    sink = logs.ReopeningFile(str(tmp_path / "smsgw.log"), clock=ManualClock())
    calls: list[object] = []
    real_stat = os.stat

    def counting_stat(*args: Any, **kwargs: Any) -> os.stat_result:
        calls.append(args)
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    for _ in range(100):
        sink.msg("x")
    sink.close()
    assert calls == []


def test_reopen_log_files_switches_at_once(tmp_path: pathlib.Path) -> None:
    """reopen_log_files (the SIGHUP action) sends the very next line to the new file."""
    path, rotated = tmp_path / "smsgw.log", tmp_path / "smsgw.log.1"
    logs.configure_daemon("info", str(path))
    log = structlog.get_logger()
    log.info("before")
    path.rename(rotated)
    logs.reopen_log_files()
    log.info("after")
    assert [r["event"] for r in records(rotated.read_text(encoding="utf-8"))] == ["before"]
    assert [r["event"] for r in records(path.read_text(encoding="utf-8"))] == ["after"]


def test_copytruncate_keeps_writing_from_the_start(tmp_path: pathlib.Path) -> None:
    """After logrotate's copytruncate empties the file, the next line starts at offset 0 (no hole)."""
    path = tmp_path / "smsgw.log"
    logs.configure_daemon("info", str(path))
    log = structlog.get_logger()
    log.info("before", pad="x" * 200)
    shutil.copyfile(path, tmp_path / "smsgw.log.1")
    os.truncate(path, 0)
    log.info("after")
    data = path.read_bytes()
    assert data.startswith(b'{"timestamp"') and b"\x00" not in data
    assert [r["event"] for r in records(data.decode())] == ["after"]


def test_a_failed_reopen_keeps_writing_to_the_old_file(tmp_path: pathlib.Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """When the path cannot be reopened, lines still go to the open file and stderr says why, once."""
    folder = tmp_path / "log"
    path = folder / "smsgw.log"
    clock = ManualClock()
    sink = logs.ReopeningFile(str(path), clock=clock)
    path.rename(tmp_path / "kept.log")
    folder.rmdir()
    for second in (1.0, 2.0):
        clock.now = second
        sink.msg(f"at {second}")
    sink.close()
    assert (tmp_path / "kept.log").read_text() == "at 1.0\nat 2.0\n"
    assert capfd.readouterr().err.count(f"smsgw: cannot reopen log file {path}:") == 1


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_shipped_logrotate_config_rotates_and_the_daemon_follows(tmp_path: pathlib.Path) -> None:
    """Our logrotate file, run for real, renames the log; its postrotate SIGHUP sends new lines to a new file."""
    conf = (ROOT / "conf" / "logrotate.d" / "smsgw").read_text(encoding="utf-8")
    for original in ("/var/log/smsgw/*.log", "create 0640 smsgw smsgw", "systemctl kill -s HUP smsgw.service"):
        assert original in conf
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    conf = (conf.replace("/var/log/smsgw/*.log", f"{tmp_path}/log/*.log")
                .replace("create 0640 smsgw smsgw", f"create 0640 {me} {group}")
                .replace("systemctl kill -s HUP smsgw.service", f"kill -HUP {os.getpid()}"))
    (tmp_path / "logrotate.conf").write_text(conf, encoding="utf-8")
    path = tmp_path / "log" / "smsgw.log"
    logs.configure_daemon("info", str(path))
    log = structlog.get_logger()
    log.info("before")
    old = signal.signal(signal.SIGHUP, lambda signo, frame: logs.reopen_log_files())
    try:
        done = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "logrotate.conf")],
                              capture_output=True, text=True, timeout=30)
    finally:
        signal.signal(signal.SIGHUP, old)
    assert done.returncode == 0, done.stderr
    log.info("after")
    assert [r["event"] for r in records((tmp_path / "log" / "smsgw.log.1").read_text(encoding="utf-8"))] == ["before"]
    assert [r["event"] for r in records(path.read_text(encoding="utf-8"))] == ["after"]
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_the_benchmark_prints_the_figure_per_line(tmp_path: pathlib.Path) -> None:
    """scripts/bench/log_lines.py runs and prints log_line_us among its figures."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "log_lines.py"), "--lines", "2000",
                           "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    figures = dict(line.split("=") for line in done.stdout.split())
    assert float(figures["log_line_us"]) > 0
    assert figures["lines_written"] == str(2000 * 3)
