#!/usr/bin/env python3
"""How fast requests are validated and routed, without a reactor or a store.

    python scripts/bench/validation.py

Prints one line: `normalise_ns=… prepare_1000_ms=… prepare_1_us=… route_ns=…
filtered_1000_ms=… filtered_1_us=…` (best of three runs): normalising an already
clean number, preparing one request with 1000 distinct recipients, preparing one
single-recipient request (a verification code), routing a number with a few rules,
and the two preparations again with filters (smsgw.filters): a blacklist of 100,000
numbers and 100 prefixes, 10,000 sensitive words in two rules, a segment rule on the
default link.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from smsgw.filters import Blacklist, Filters, WordRule, segment_rule
from smsgw.model import Account, SendRequest
from smsgw.review import WordList
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
    filtered = Validator(filters=filters(router))
    filtered_1000_ms = per_call(lambda: filtered.prepare(ACCOUNT, bulk, 0.0), 300) * 1e3
    filtered_1_us = per_call(lambda: filtered.prepare(ACCOUNT, single, 0.0), 50_000) * 1e6
    print(f"normalise_ns={normalise_ns:.0f} prepare_1000_ms={prepare_1000_ms:.2f}"
          f" prepare_1_us={prepare_1_us:.1f} route_ns={route_ns:.0f}"
          f" filtered_1000_ms={filtered_1000_ms:.2f} filtered_1_us={filtered_1_us:.1f}")


def filters(router: Router) -> Filters:
    """Lists about as large as an operator's: none of them matches the benchmark's numbers and text."""
    numbers = frozenset(f"170{i:08d}" for i in range(100_000))
    prefixes = frozenset(f"1710{i:03d}" for i in range(100))
    words = [f"词{i}" for i in range(10_000)]
    return Filters([Blacklist("opt-out", numbers, prefixes)],
                   [WordRule("reject", "reject", WordList("reject", words[:5000])),
                    WordRule("review", "review", WordList("review", words[5000:]))],
                   [segment_rule("cm-only", "cmcc", ["china_mobile", "china_unicom"], [])], router=router)


if __name__ == "__main__":
    main()
