"""Per-account rate limits and daily quotas, counted in recipients (docs/security.md).

The gateway asks `Limits.reserve` before it commits a request and gives back what
was not stored (`release`): a store failure, or a message accepted before under the
same ref. Everything lives in memory on the reactor thread; what survives a restart
is the daily count, which `Gateway.start` reads back from the store (`load`).

The rate limit is a token bucket that may go into debt: a request of n recipients
passes when the bucket holds min(n, burst) tokens, and takes all n. So a request
bigger than the burst is never refused for good, and the average still holds:
the next request waits until the debt is paid.

The quota counts recipients per *local* day (the machine's time zone), from
midnight to midnight. Several daemons sharing one store each count only what they
accepted themselves since they started (plus what the store held when they started).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from smsgw.model import Account, LimitExceeded, RateLimit

__all__ = ["Limits", "TokenBucket", "day_start", "next_midnight"]


def day_start(now: float) -> float:
    """Epoch seconds of the local midnight that began the day `now` falls in."""
    day = dt.datetime.fromtimestamp(now).date()
    return dt.datetime.combine(day, dt.time()).timestamp()


def next_midnight(now: float) -> float:
    """Epoch seconds of the next local midnight after `now` (DST days are 23 or 25 hours long)."""
    day = dt.datetime.fromtimestamp(now).date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time()).timestamp()


class TokenBucket:
    """`rate` tokens a second up to `burst`; may go into debt (see the module docstring)."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.rate = limit.per_second
        self.burst = limit.burst
        self._tokens = float(limit.burst)
        self._stamp = now

    def tokens(self, now: float) -> float:
        """Tokens available at `now` (negative: debt)."""
        if now > self._stamp:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._tokens

    def wait(self, n: int, now: float) -> float:
        """Seconds until a request of `n` may pass; 0.0: now."""
        missing = min(n, self.burst) - self.tokens(now)
        return 0.0 if missing <= 1e-6 else missing / self.rate  # float noise of epoch-sized times

    def take(self, n: int, now: float) -> None:
        self._tokens = self.tokens(now) - n

    def give_back(self, n: int, now: float) -> None:
        self._tokens = min(float(self.burst), self.tokens(now) + n)


@dataclass(slots=True)
class _Day:
    start: float  # local midnight that began the day counted
    end: float  # the next one
    used: dict[str, int]


class Limits:
    """Rate buckets and daily counts of every account that has limits (keyed by account name)."""

    def __init__(self, quota_accounts: tuple[str, ...] = ()) -> None:
        self.quota_accounts = quota_accounts  # whose daily count `load` is given at start
        self._buckets: dict[str, TokenBucket] = {}
        self._day = _Day(0.0, 0.0, {})

    def load(self, counts: dict[str, int], since: float, now: float) -> None:
        """Today's recipients per account, as the store holds them (`since` the local midnight they count from)."""
        if since != day_start(now):
            counts = {}  # read just before midnight: that day is over
        self._day = _Day(day_start(now), next_midnight(now), dict(counts))

    def used_today(self, account: str, now: float) -> int:
        return self._today(now).used.get(account, 0)

    def reserve(self, account: Account, n: int, now: float) -> None:
        """Count `n` recipients for `account`, or raise LimitExceeded and count nothing.

        Raises:
            LimitExceeded: the daily quota or the rate limit does not allow `n` now.
        """
        if account.daily_quota is None and account.rate_limit is None:
            return
        day = self._today(now)
        used = day.used.get(account.name, 0)
        bucket = self._bucket(account, now)
        room = None if bucket is None else max(0, math.floor(bucket.tokens(now)))
        if account.daily_quota is not None and used + n > account.daily_quota:
            left = max(0, account.daily_quota - used)
            if n > account.daily_quota:
                what = (f"this request has {n} recipients, more than the daily quota of {account.daily_quota}: "
                        "send them in several requests over several days, or ask the operator for a larger quota")
            else:
                what = (f"daily quota of {account.daily_quota} recipients used up: {used} sent today, this request "
                        f"has {n}; resets at 00:00")
            raise LimitExceeded(what, kind="daily_quota", retry_after=day.end - now,
                                allowed=left if room is None else min(left, room))
        if bucket is not None:
            wait = bucket.wait(n, now)
            if wait > 0:
                assert room is not None
                if account.daily_quota is not None:
                    room = min(room, account.daily_quota - used)
                shown = math.ceil(wait * 10) / 10  # never "retry in 0.0 s"
                raise LimitExceeded(
                    f"rate limit of {bucket.rate:g} recipients/s (burst {bucket.burst}) exceeded: this request "
                    f"has {n}; retry in {shown:.1f} s", kind="rate_limit", retry_after=wait, allowed=room)
            bucket.take(n, now)
        if account.daily_quota is not None:
            day.used[account.name] = used + n

    def release(self, account: Account, n: int, now: float) -> None:
        """Give back `n` recipients `reserve` counted but the store did not take."""
        if n <= 0:
            return
        day = self._today(now)
        if account.name in day.used:
            day.used[account.name] = max(0, day.used[account.name] - n)
        bucket = self._buckets.get(account.name)
        if bucket is not None:
            bucket.give_back(n, now)

    def _today(self, now: float) -> _Day:
        if not self._day.start <= now < self._day.end:
            self._day = _Day(day_start(now), next_midnight(now), {})
        return self._day

    def _bucket(self, account: Account, now: float) -> TokenBucket | None:
        limit = account.rate_limit
        if limit is None:
            return None
        bucket = self._buckets.get(account.name)
        if bucket is None or (bucket.rate, bucket.burst) != (limit.per_second, limit.burst):
            bucket = self._buckets[account.name] = TokenBucket(limit, now)
        return bucket
