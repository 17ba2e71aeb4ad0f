#!/usr/bin/env python3
"""How fast requests are validated and routed, without a reactor or a store.

    python scripts/bench/validation.py

Prints one line: `normalise_ns=… prepare_1000_ms=… prepare_1_us=… route_ns=…`
(best of three runs): normalising an already clean number, preparing one
request with 1000 distinct recipients, preparing one single-recipient request
(a verification code), and routing a number with a few rules.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from smsgw.model import Account, SendRequest
from smsgw.validation import Router, Validator, normalise_number

ACCOUNT = Account("bench")
TEXT = "您的验证码是493021，5分钟内有效。如非本人操作，请忽略本短信。"


def per_call(fn: Callable[[], Any], n: int) -> float:
    """Best-of-three seconds per call."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    validator = Validator()
    bulk = [SendRequest(tuple(f"1{prefix}{i:08d}" for i, prefix in zip(range(1000), ("38", "39", "86", "55") * 250)),
                        TEXT)]
    single = [SendRequest(("13800138000",), TEXT)]
    router = Router([("unicom", ["130", "131", "132", "155", "156", "166", "185", "186"]),
                     ("telecom", ["133", "153", "177", "180", "181", "189"]), ("intl", ["+"])], "cmcc")
    normalise_ns = per_call(lambda: normalise_number("13800138000"), 500_000) * 1e9
    prepare_1000_ms = per_call(lambda: validator.prepare(ACCOUNT, bulk, 0.0), 300) * 1e3
    prepare_1_us = per_call(lambda: validator.prepare(ACCOUNT, single, 0.0), 50_000) * 1e6
    route_ns = per_call(lambda: router.route("13800138000"), 500_000) * 1e9
    print(f"normalise_ns={normalise_ns:.0f} prepare_1000_ms={prepare_1000_ms:.2f}"
          f" prepare_1_us={prepare_1_us:.1f} route_ns={route_ns:.0f}")


if __name__ == "__main__":
    main()
