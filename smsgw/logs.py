"""Structured logging: one JSON line per lifecycle step, pretty console on a TTY (STYLE.md §8)."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, MutableMapping, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str, **{k: v for k, v in kw.items() if k != "default"})


def _timestamp(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Local time with its UTC offset (a front-end server's log is read in local time)."""
    event["timestamp"] = datetime.datetime.now().astimezone().isoformat(timespec="microseconds")
    return event


def configure(level: str = "info", stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Route structlog to `stream` (stdout): JSON unless it is a TTY (or `json` says otherwise).

    Raises:
        ValueError: an unknown level name, listing the valid ones.
    """
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}")
    out = stream or sys.stdout
    as_json = (not out.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        # ensure_ascii=False: operators read Chinese message text in journald as it is.
        structlog.processors.JSONRenderer(serializer=_dumps) if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
