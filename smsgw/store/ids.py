"""64-bit, time-ordered ids that several daemons can mint without coordination.

Layout (like Twitter's snowflake): 41 bits of milliseconds since 2025-01-01 UTC,
10 bits of node id (`node.id` in the config, unique per daemon sharing a store),
12 bits of sequence within the millisecond. Ids sort by creation time, so an
index on the id is also an index on time, and they fit a signed BIGINT /
NUMBER(19) in every dialect for 69 years.
"""

from __future__ import annotations

import threading
from typing import Callable
import time

EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
NODE_BITS = 10
SEQ_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1


class IdGenerator:
    """Thread-safe: the API thread and the store's writer may both mint ids."""

    def __init__(self, node: int, clock: Callable[[], float] | None = None) -> None:
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node id {node} is out of range: use 0 to {MAX_NODE} (node.id in the config)")
        self._node = node << SEQ_BITS
        self._clock = clock or time.time
        self._last = 0
        self._seq = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        return self.many(1)[0]

    def many(self, count: int) -> list[int]:
        """`count` consecutive ids; borrows from the next milliseconds when one runs out."""
        with self._lock:
            ms = max(int(self._clock() * 1000) - EPOCH_MS, self._last)
            if ms != self._last:
                self._last, self._seq = ms, 0
            out = []
            for _ in range(count):
                if self._seq > (1 << SEQ_BITS) - 1:
                    self._last += 1  # run ahead of the clock: ids stay unique and ordered
                    self._seq = 0
                out.append((self._last << (NODE_BITS + SEQ_BITS)) | self._node | self._seq)
                self._seq += 1
            return out


def id_time(ident: int) -> float:
    """The epoch seconds an id was minted at."""
    return ((ident >> (NODE_BITS + SEQ_BITS)) + EPOCH_MS) / 1000.0
