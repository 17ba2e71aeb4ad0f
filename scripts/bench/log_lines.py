#!/usr/bin/env python3
"""What one log line costs on the daemon's file sink.

    python scripts/bench/log_lines.py [--lines 100000] [--dir /tmp]

Configures logging as `smsgw run` does with a log file (`logs.configure_daemon`), logs a
6-field lifecycle event (the shape of segment_submitted) N times and prints figures as
`name=value` lines: `log_line_us` (wall time per line, best batch: level filter, context,
timestamp, masking, JSON, write), the same through a bound logger and with message-text
masking on, a debug line filtered out by level, the processors alone without the write,
and for comparison structlog's stock JSON pipeline (JSONRenderer, TimeStamper, PrintLogger).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any, Callable

import structlog

from smsgw import logs


def per_call(fn: Callable[[], Any], n: int) -> float:
    """µs per call: the best batch of 1,000 calls out of n/1,000 (other processes on a small
    machine inflate single long runs; the best batch is the cost without them)."""
    best = float("inf")
    for _ in range(max(n // 1000, 1)):
        t0 = time.perf_counter()
        for _ in range(1000):
            fn()
        best = min(best, (time.perf_counter() - t0) / 1000 * 1e6)
    return best


def event(log: Any) -> Callable[[], None]:
    return lambda: log.info("segment_submitted", msg_id=1_234_567_890_123, link="cmcc-1", seq=48213,
                            segment=1, dest="13800138000", text="您的验证码是493021，5分钟内有效。")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="where the log file goes (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = os.path.join(folder, "smsgw.log")
        logs.configure_daemon("info", path)
        log = structlog.get_logger()
        print(f"log_line_us={per_call(event(log), args.lines):.2f}")
        bound = structlog.get_logger().bind(link="cmcc-1")
        print(f"log_line_bound_us={per_call(event(bound), args.lines):.2f}")
        print(f"debug_filtered_us={per_call(lambda: log.debug('x', a=1, b=2), args.lines):.2f}")
        logs.configure_daemon("info", path, mask_content=True)
        print(f"log_line_masked_us={per_call(event(structlog.get_logger()), args.lines):.2f}")
        with open(path, "rb") as f:
            lines = sum(1 for _ in f)
        print(f"lines_written={lines}")
        print(f"file_bytes_per_line={os.path.getsize(path) // max(lines, 1)}")
        logs.configure_daemon("info", None, fmt="json", stream=open(os.devnull, "w"))
        structlog.configure(logger_factory=lambda *a: _Null())
        print(f"processors_only_us={per_call(event(structlog.get_logger()), args.lines):.2f}")
        with open(os.path.join(folder, "stock.log"), "w", encoding="utf-8") as stock:
            structlog.configure(
                processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                            structlog.processors.TimeStamper(fmt="iso", utc=False),
                            structlog.processors.format_exc_info,
                            structlog.processors.JSONRenderer(ensure_ascii=False)],
                logger_factory=structlog.PrintLoggerFactory(stock), cache_logger_on_first_use=True,
                wrapper_class=structlog.make_filtering_bound_logger(20))
            print(f"stock_structlog_json_us={per_call(event(structlog.get_logger()), args.lines):.2f}")


class _Null:
    def msg(self, message: str) -> None:
        pass

    info = msg


if __name__ == "__main__":
    main()
