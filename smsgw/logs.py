"""Structured logging: one JSON line per lifecycle step, pretty console on a TTY (STYLE.md §8).

Two entry points:

- `configure` for the tools (simulator, demo): JSON to stdout unless it is a TTY.
- `configure_daemon` for `smsgw run`: stdout (journald) or an appended JSON-lines file that
  survives logrotate; secrets always masked, message text masked on request.

The line format, the masking rules and the event names are the contract in docs/logging.md.
"""

from __future__ import annotations

import datetime
import json
import json.encoder
import logging
import os
import re
import sys
import threading
import time
from typing import Any, Callable, MutableMapping, TextIO

import structlog

__all__ = ["ReopeningFile", "configure", "configure_daemon", "json_line", "mask_fields", "mask_url",
           "reopen_log_files"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_FORMATS = ("auto", "json", "console")
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}  # as structlog's add_log_level


class _LocalClock:
    """ISO 8601 local time with microseconds and UTC offset, e.g. 2024-03-05T08:09:10.123456+08:00.

    `datetime.now().astimezone().isoformat()` costs several µs; date, time and offset change
    at most once a second, so only the microseconds are formatted per line.
    """

    def __init__(self) -> None:
        self._second = -1
        self._head = ""
        self._offset = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            stamp = datetime.datetime.fromtimestamp(second).astimezone()
            self._head = stamp.strftime("%Y-%m-%dT%H:%M:%S")
            self._offset = stamp.isoformat()[19:]  # "+08:00"
            self._second = second
        return f"{self._head}.{int((t - second) * 1e6):06d}{self._offset}"


_clock = _LocalClock()


def _timestamp(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Local time with its UTC offset (a front-end server's log is read in local time)."""
    event["timestamp"] = _clock.now()
    return event


# ---------------------------------------------------------------------------------------------
# Masking. Each key is classified once and remembered: the same few dozen keys repeat forever.

_PLAIN, _SECRET, _URL, _CONTENT = 0, 1, 2, 3
_SECRET_SUFFIXES = ("secret", "password", "passwd", "api_key", "apikey", "token", "authorization")
_CONTENT_KEYS = frozenset({"text", "content", "message_text", "body"})
_RESERVED = frozenset({"timestamp", "level", "event"})
_CACHE_MAX = 4096  # keys come from code; the cap only guards against keys built from data

# scheme://user:PASSWORD@host — the password runs to the last "@" before the path.
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^/?#:@]*:)([^/?#]*)(@)")
# Oracle's user/PASSWORD@host:port/service
_SLASH_PASSWORD = re.compile(r"^([^/@:\s]+/)([^@\s]+)(@)")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd|secret|token)=)([^&#]*)", re.I)

_escape = json.encoder.encode_basestring  # the C version when available: "text" -> '"text"'
# ensure_ascii=False: operators read Chinese message text in the log as it is.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


class _Field:
    """What we know about a key: how to mask it and its rendered prefix ', "key": '."""

    __slots__ = ("kind", "prefix")

    def __init__(self, key: Any) -> None:
        name = key if isinstance(key, str) else str(key)
        k = name.lower().replace("-", "_")
        if k.endswith(_SECRET_SUFFIXES):
            self.kind = _SECRET
        elif k in ("dsn", "url") or k.endswith(("_dsn", "_url")):
            self.kind = _URL
        elif k in _CONTENT_KEYS:
            self.kind = _CONTENT
        else:
            self.kind = _PLAIN
        # A field called timestamp or level would repeat a key of the line: it is kept as _level.
        self.prefix = f", {_escape('_' + name if name in _RESERVED else name)}: "


_FIELDS: dict[Any, _Field] = {}


def _field(key: Any) -> _Field:
    found = _FIELDS.get(key)
    if found is None:
        found = _Field(key)
        if len(_FIELDS) < _CACHE_MAX:
            _FIELDS[key] = found
    return found


def mask_url(url: str) -> str:
    """Hide the password in a URL or DSN: postgresql://u:pw@h/db -> postgresql://u:***@h/db.

    Also handles Oracle's user/pw@host and password=… query parameters; anything else
    comes back unchanged.
    """
    masked = _URL_PASSWORD.sub(r"\1***\3", url, count=1)
    if masked == url:
        masked = _SLASH_PASSWORD.sub(r"\1***\3", url, count=1)
    return _QUERY_PASSWORD.sub(r"\1***", masked)


def _mask_value(kind: int, value: Any, mask_content: bool) -> Any:
    if value is None:
        return None
    if kind == _SECRET:
        return "***"
    if kind == _URL:
        return mask_url(value if isinstance(value, str) else str(value))
    if kind == _CONTENT and mask_content:
        if isinstance(value, (bytes, bytearray)):
            return f"«masked {len(value)} bytes»"
        return f"«masked {len(value if isinstance(value, str) else str(value))} chars»"
    return value


def _masked_copy(fields: dict[Any, Any], mask_content: bool) -> dict[Any, Any]:
    """One level down only (a dict of settings, a request's headers); copied, because the
    caller still owns it. Dicts inside it are not inspected."""
    copy = {}
    for key, value in fields.items():
        kind = _field(key).kind
        copy[key] = _mask_value(kind, value, mask_content) if kind else value
    return copy


def mask_fields(mask_content: bool = False) -> structlog.typing.Processor:
    """A structlog processor that masks secrets always and message text when asked.

    Secret: a key that is or ends with secret, password, passwd, api_key, apikey, token or
    authorization (case-insensitive, "-" counts as "_") becomes "***". A key dsn or url (or
    ending in _dsn/_url) keeps its value with the password replaced by ***. With
    `mask_content`, the keys text, content, message_text and body become
    "«masked N chars»". Values that are dicts are masked one level deep. `json_line`
    does the same as part of rendering; this one is for the console renderer.
    """
    def processor(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            kind = _field(key).kind
            if kind:
                event[key] = _mask_value(kind, value, mask_content)
            elif type(value) is dict:
                event[key] = _masked_copy(value, mask_content)
        return event

    return processor


# structlog keeps the context variables it created in this dict. Reading it directly skips
# copy_context() on every line (about 1 µs); if a structlog release renames it, fall back to
# its merge_contextvars processor.
_STRUCTLOG_VARS: dict[str, Any] | None = getattr(structlog.contextvars, "_CONTEXT_VARS", None)
_VAR_PREFIX_LEN = len(structlog.contextvars.STRUCTLOG_KEY_PREFIX)


def json_line(mask_content: bool = False) -> structlog.typing.Processor:
    """The whole JSON pipeline in one processor: context, level, timestamp, masking, rendering.

    One pass over the fields instead of five processors keeps a line cheap (docs/logging.md
    has the figures). Output: {"timestamp": …, "level": …, "event": …, then the fields in
    the order logged}; ensure_ascii=False; values JSON cannot hold are written as str().
    """
    now = _clock.now
    encode = _ENCODER.encode
    escape = _escape
    fields = _FIELDS
    format_exc_info = structlog.processors.format_exc_info
    variables = _STRUCTLOG_VARS

    def render(logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        if variables:
            for var_name, var in tuple(variables.items()):
                value = var.get(Ellipsis)
                if value is not Ellipsis:
                    event.setdefault(var_name[_VAR_PREFIX_LEN:], value)
        if "exc_info" in event:
            event = format_exc_info(logger, name, event)
        text = event.pop("event", None)
        out = [f'{{"timestamp": "{now()}", "level": "{_LEVEL_NAMES.get(name, name)}", "event": '
               f'{escape(text) if type(text) is str else encode(text)}']
        for key, value in event.items():
            field = fields.get(key) or _field(key)
            if field.kind:
                value = _mask_value(field.kind, value, mask_content)
            kind = type(value)
            if kind is str:
                out.append(field.prefix + escape(value))
            elif kind is int:
                out.append(field.prefix + int.__repr__(value))
            elif kind is dict:
                out.append(field.prefix + encode(_masked_copy(value, mask_content)))
            else:
                out.append(field.prefix + encode(value))
        out.append("}")
        return "".join(out)

    return render


# ---------------------------------------------------------------------------------------------
# The file sink.

class ReopeningFile:
    """Appends log lines to a path and follows it when logrotate moves it away.

    Every `check_interval` seconds (by `clock`), and after `request_reopen`, the path is
    stat()ed and compared with the open file's device and inode; when the path is gone or
    names another file, it is reopened (logrotate's create mode). The file is opened with
    O_APPEND, so copytruncate works too: each line is one write() at the current end.
    Because the check runs per interval, not per line, lines written in the first second
    after a rotation may still land in the rotated file, none is lost.

    structlog calls its methods (`msg`, `info`, `error`, ...) with the rendered line.
    Thread-safe: Twisted's thread pool may log too.
    """

    def __init__(self, path: str, *, check_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = os.path.abspath(path)
        self._interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._reopen_pending = False
        self._troubles: set[str] = set()  # what stderr has been told about, until it works again
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._fd, self._identity = self._open()
        self._next_check = clock() + check_interval

    def _open(self) -> tuple[int, tuple[int, int]]:
        # 0o640 before the umask: the smsgw group (operators) may read the log.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        st = os.fstat(fd)
        return fd, (st.st_dev, st.st_ino)

    def msg(self, message: str) -> None:
        data = (message + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            if self._reopen_pending or self._clock() >= self._next_check:
                self._follow_path()
            try:
                written = os.write(self._fd, data)
                while written < len(data):  # a full disk or a signal: rare
                    data = data[written:]
                    written = os.write(self._fd, data)
                if self._troubles:
                    self._troubles.discard("write")
            except OSError as exc:
                self._complain("write", f"cannot write log file {self.path}: {exc}")
                self._reopen_pending = True

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def request_reopen(self) -> None:
        """Reopen the path now, or before the next line if a line is being written.

        Safe to call from a signal handler: it never waits for the lock.
        """
        self._reopen_pending = True
        if self._lock.acquire(blocking=False):
            try:
                self._follow_path()
            finally:
                self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self._reopen_pending = True  # a line logged after close reopens the path

    def _follow_path(self) -> None:
        """Reopen when asked to, or when the path no longer names the open file."""
        self._next_check = self._clock() + self._interval
        if not self._reopen_pending:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                pass
            else:
                if (st.st_dev, st.st_ino) == self._identity:
                    return
        try:
            fd, identity = self._open()
        except OSError as exc:
            # Keep writing to the old file (a rotated name still receives lines); retry at
            # the next check.
            self._complain("reopen", f"cannot reopen log file {self.path}: {exc}; "
                           "check the directory exists and the smsgw user may write it")
            return
        self._reopen_pending = False
        self._troubles.discard("reopen")
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._identity = fd, identity

    def _complain(self, trouble: str, text: str) -> None:
        # stderr reaches journald even when the log file cannot be written; once per
        # trouble, not once per line or per check.
        if trouble not in self._troubles:
            self._troubles.add(trouble)
            print(f"smsgw: {text}", file=sys.stderr, flush=True)


_open_files: list[ReopeningFile] = []


def reopen_log_files() -> None:
    """Reopen the log file configured by `configure_daemon` (SIGHUP; logrotate's postrotate).

    Safe to call from a signal handler. Does nothing when logging goes to stdout.
    """
    for sink in _open_files:
        sink.request_reopen()


# ---------------------------------------------------------------------------------------------
# Configuration.

def _check_level(level: str) -> int:
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}")
    return _LEVELS[level]


def _processors(as_json: bool, mask_content: bool) -> list[structlog.typing.Processor]:
    if as_json:
        merge = [] if _STRUCTLOG_VARS is not None else [structlog.contextvars.merge_contextvars]
        return [*merge, json_line(mask_content)]
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
        mask_fields(mask_content),
        structlog.processors.format_exc_info,
        structlog.dev.ConsoleRenderer(),
    ]


class _Output:
    """The one logger object structlog is given; it hands lines to the current sink.

    With cache_logger_on_first_use a logger keeps what it got on first use. Handing out this
    object and one processor list (changed in place, as structlog.testing.capture_logs
    does too) lets a later configure() still reach cached loggers: only their level filter
    stays as it was on first use.
    """

    _QUIET = ("msg", "log", "debug", "info")
    _LOUD = ("warn", "warning", "fatal", "failure", "err", "error", "critical", "exception")

    target: Callable[[str], None]
    loud_target: Callable[[str], None]

    def __init__(self) -> None:
        self.retarget(structlog.WriteLogger(sys.stdout).msg)

    def retarget(self, target: Callable[[str], None], loud: Callable[[str], None] | None = None) -> None:
        """Send lines to `target`; warnings and errors to `loud` (default: `target` too)."""
        self.target, self.loud_target = target, loud or target
        # Instance attributes, not a forwarding method: structlog calls getattr(logger,
        # "info")(line), and this way that is the sink's own method, with no extra call.
        for name in self._QUIET:
            setattr(self, name, target)
        for name in self._LOUD:
            setattr(self, name, self.loud_target)


_output = _Output()
_PROCESSORS: list[structlog.typing.Processor] = []


def _install(threshold: int, processors: list[structlog.typing.Processor], target: Callable[[str], None],
             loud: Callable[[str], None] | None, sinks: list[ReopeningFile], cache: bool) -> None:
    _PROCESSORS[:] = processors
    _output.retarget(target, loud)
    for old in _open_files:
        if old not in sinks:
            old.close()
    _open_files[:] = sinks
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=lambda *args: _output,
        cache_logger_on_first_use=cache,
    )


def configure(level: str = "info", stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Route structlog to `stream` (stdout): JSON unless it is a TTY (or `json` says otherwise).

    Secrets are masked as by `configure_daemon`; message text is not.

    Raises:
        ValueError: an unknown level name, listing the valid ones.
    """
    threshold = _check_level(level)
    out = stream or sys.stdout
    as_json = (not out.isatty()) if json is None else json
    _install(threshold, _processors(as_json, mask_content=False), structlog.WriteLogger(out).msg, None, [],
             cache=False)


def configure_daemon(level: str, file: str | None, fmt: str = "auto", mask_content: bool = False,
                     stream: TextIO | None = None) -> None:
    """Set up the daemon's logging. Call it once at start-up, before services bind loggers.

    Loggers are cached on first use (a module-level `structlog.get_logger()` then costs no
    more than a bound one). A later `configure`/`configure_daemon` in the same process
    still reaches them, with one exception: a logger keeps the level it was first used at.

    Args:
        level: debug, info, warning or error.
        file: None: every line to stdout (journald under systemd). A path: every line to that
            file as JSON (appended, parent directories created, followed through logrotate:
            see `ReopeningFile` and `reopen_log_files`), and warnings and errors to stdout
            as well, so journald and `systemctl status` show problems without storing
            every line twice.
        fmt: stdout without a file: auto (JSON unless stdout is a TTY), json or console.
            With a file, everything is JSON.
        mask_content: write message text fields as "«masked N chars»".
        stream: write here instead of stdout (tests).

    Raises:
        ValueError: an unknown level or format, or console format together with a file.
        OSError: the file or its directory cannot be created or opened.
    """
    threshold = _check_level(level)
    if fmt not in _FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(_FORMATS)}")
    if file is not None and fmt == "console":
        raise ValueError(f"log format 'console' cannot be used with a log file ({file}): the file and the "
                         "warnings copied to stdout are JSON lines; use format auto or json, or no file")
    out = stream or sys.stdout
    echo = structlog.WriteLogger(out).msg
    if file is None:
        as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
        _install(threshold, _processors(as_json, mask_content), echo, None, [], cache=True)
        return
    sink = ReopeningFile(file)
    to_file = sink.msg

    def tee(line: str) -> None:
        to_file(line)
        echo(line)

    _install(threshold, _processors(True, mask_content), to_file, tee, [sink], cache=True)
