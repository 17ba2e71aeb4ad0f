"""Who is calling: one Authenticator for every business-side interface (docs/security.md).

The REST API, the URL interface and the SOAP interface all ask the same object,
so an account's secret, address allow list, interfaces and the brute-force guard
mean the same everywhere:

    auth = Authenticator(accounts, reactor)
    d = auth.authenticate("erp", password, peer="10.1.2.3", interface="url")   # Deferred[Account]
    d = auth.authenticate_key(bearer_key, peer="10.1.2.3", interface="rest")

Two kinds of credentials:

- ``api_key_sha256``: the SHA-256 of a long random machine key. Checking it costs a
  microsecond, so it is done on the reactor thread. SHA-256 is fine *only* because the
  key is random (128 bits or more): there is nothing to guess.
- ``secret_hash``: an argon2id (``smsgw hash-secret``) or bcrypt (``$2b$``/``$2y$``) hash
  of a secret a person may have chosen. Checking it costs tens of milliseconds on
  purpose, so it runs in a thread, at most `concurrency` at a time, and a success is
  remembered for `cache_ttl` seconds under an HMAC of name and secret with a key that
  lives only in this process: the URL interface, which sends the password with every
  request, hashes once per client per few minutes, not per request.

Every attempt first passes the brute-force guard: a source address (an IPv6 /64) with
`max_failures` failures within `failure_window` seconds is refused at once, without
hashing, until its oldest failure is older than the window; only credentials already in
the verification cache still pass. Then the account's `allow_from` is checked, *before*
the secret, and a refused address gets the same answer as a wrong secret, so the allow
list cannot be probed from outside it. Every failure is logged (`auth_failed`, with the
reason), never with the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections import OrderedDict, deque
from typing import Callable, Sequence

import structlog
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from smsgw.model import Account

__all__ = [
    "AuthError", "AuthFailed", "Authenticator", "InterfaceDenied", "TooManyFailures", "address_allowed",
    "hash_secret", "parse_networks", "secret_hash_problem", "verify_secret",
]

_log = structlog.get_logger("smsgw.auth")
_SHA256 = re.compile("[0-9a-f]{64}")
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_INTERFACE_NAMES = {"rest": "REST", "url": "URL", "soap": "SOAP"}  # as people write them; the rest as configured
RunBlocking = Callable[[Callable[[], bool]], "defer.Deferred[bool]"]


# --- hashes ---------------------------------------------------------------------------------------

def hash_secret(secret: str) -> str:
    """An argon2id hash of `secret` (argon2-cffi's defaults: 64 MiB, 3 passes) for `secret_hash`."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(secret)


def secret_hash_problem(value: str) -> str | None:
    """Why `value` is not a usable `secret_hash`, or None. Never shows the value (it may be a pasted secret)."""
    if value.startswith("$argon2"):
        from argon2 import extract_parameters
        from argon2.exceptions import InvalidHashError

        try:
            extract_parameters(value)
        except (InvalidHashError, ValueError):
            return "looks like an argon2 hash but does not parse (cut short when pasted?)"
        return None
    if value.startswith("$2"):
        if not _BCRYPT.fullmatch(value):
            return "looks like a bcrypt hash but is not $2b$NN$ followed by 53 characters (cut short when pasted?)"
        return None
    return "is neither an argon2 hash ($argon2id$...) nor a bcrypt hash ($2b$... or $2y$...)"


def verify_secret(secret_hash: str, secret: bytes) -> bool:
    """Whether `secret` matches `secret_hash` (argon2 or bcrypt). Blocking: tens of milliseconds.

    bcrypt looks at the first 72 bytes only; a longer secret never matches (bcrypt 5
    refuses to truncate silently, and neither do we).
    """
    if secret_hash.startswith("$argon2"):
        from argon2 import PasswordHasher
        from argon2.exceptions import VerificationError, InvalidHashError

        try:
            return PasswordHasher().verify(secret_hash, secret)
        except (VerificationError, InvalidHashError):
            return False
    import bcrypt

    try:
        return bcrypt.checkpw(secret, secret_hash.encode("ascii"))
    except ValueError:  # longer than 72 bytes, or a malformed hash
        return False


# --- addresses ------------------------------------------------------------------------------------

def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """`allow_from` entries as networks: an address is a /32 (IPv4) or /128 (IPv6).

    Raises:
        ValueError: an entry is neither an address nor a CIDR.
    """
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _address(peer: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if peer is None:
        return None
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])  # fe80::1%eth0: the zone is not part of it
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a "::" listener sees IPv4 clients as ::ffff:a.b.c.d
    return address


def address_allowed(networks: Sequence[Network], peer: str | None) -> bool:
    """Whether `peer` is in one of `networks`; no networks: every address, even an unknown one."""
    if not networks:
        return True
    address = _address(peer)
    return address is not None and any(address in net for net in networks)


def _guard_key(peer: str | None) -> str:
    """The unit the brute-force guard counts: an IPv4 address, or an IPv6 /64 (what one host usually has)."""
    address = _address(peer)
    if address is None:
        return peer or "?"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# --- failures -------------------------------------------------------------------------------------

class AuthError(Exception):
    """Abstract: use a subclass."""


class AuthFailed(AuthError):
    """Unknown account, wrong secret, or an address the account does not allow.

    Interfaces answer all of these alike; `reason` is for the log only.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InterfaceDenied(AuthError):
    """The credentials are right, but the account may not use this interface (the message says which it may)."""


class TooManyFailures(AuthError):
    """The caller's address failed too often lately; `retry_after` seconds until it may try again."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- the authenticator ----------------------------------------------------------------------------

def _in_thread(fn: Callable[[], bool]) -> defer.Deferred[bool]:
    return threads.deferToThread(fn)


class Authenticator:
    """Checks credentials for every interface; see the module docstring.

    Args:
        accounts: who may call.
        clock: for the cache's and the guard's times.
        max_failures: failed attempts from one address within `failure_window` before it is refused at once.
        failure_window: seconds a failure counts.
        cache_ttl: seconds a verified secret is remembered; 0: never.
        cache_size: most secrets remembered (the oldest is forgotten first).
        concurrency: most hashes verified at the same time.
        run_blocking: runs a verification off the reactor thread (tests pass a synchronous one).

    Raises:
        ValueError: a key hash or secret hash is malformed, two accounts share a key, or an
            allow_from entry is not an address or CIDR; the message names the account.
    """

    def __init__(self, accounts: Sequence[Account], clock: IReactorTime, *, max_failures: int = 10,
                 failure_window: float = 300.0, cache_ttl: float = 300.0, cache_size: int = 10_000,
                 concurrency: int = 2, run_blocking: RunBlocking | None = None) -> None:
        self._clock = clock
        self._accounts = {a.name: a for a in accounts}
        self._by_key = _accounts_by_hash(accounts)
        self._key_hashes: dict[str, str] = {}  # name -> api_key_sha256 normalised ("" without a key)
        self._networks = {}
        for account in accounts:
            self._key_hashes[account.name] = account.api_key_sha256.strip().lower()
            if account.secret_hash and (problem := secret_hash_problem(account.secret_hash)):
                raise ValueError(f"account {account.name!r}: secret_hash {problem}; make one with "
                                 "`smsgw hash-secret`")
            try:
                self._networks[account.name] = parse_networks(account.allow_from)
            except ValueError as exc:
                raise ValueError(f"account {account.name!r}: allow_from: {exc}") from None
        self._max_failures = max_failures
        self._window = failure_window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._ttl = cache_ttl
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, float] = OrderedDict()  # HMAC(name, secret) -> expiry
        self._cache_key = secrets.token_bytes(32)  # never leaves this process
        self._pending: dict[bytes, list[defer.Deferred[bool]]] = {}
        self._semaphore = defer.DeferredSemaphore(concurrency)
        self._run_blocking = run_blocking or _in_thread
        self._dummy_hash = next((a.secret_hash for a in accounts if a.secret_hash), None)
        self.hashes = 0  # verifications run in a thread (tests and the log look at it)

    # -- the two ways in ------------------------------------------------------------------------

    def authenticate(self, name: str, secret: bytes | str, peer: str | None,
                     interface: str | None) -> defer.Deferred[Account]:
        """The account `name` if `secret` is its secret (or key), `peer` may call and `interface` is allowed.

        `interface` None: any (e.g. the status page). Fails with AuthFailed, InterfaceDenied or
        TooManyFailures; fires at once unless a hash must be verified.
        """
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        now = self._clock.seconds()
        cache_key = self._key(name, raw)
        cached = self._cached(cache_key, now)
        try:
            self._check_guard(peer, now, cached=cached)
        except TooManyFailures as exc:
            return defer.fail(exc)
        account = self._accounts.get(name)
        if account is None:
            return self._fail_unknown(name, peer, interface)
        if not address_allowed(self._networks[account.name], peer):
            return self._fail(name, peer, interface, "address_not_allowed")
        d = self._verify(account, raw, cache_key, cached)
        return d.addCallback(self._verified, account, peer, interface)

    def authenticate_key(self, key: bytes, peer: str | None, interface: str | None) -> defer.Deferred[Account]:
        """The account whose `api_key_sha256` is the SHA-256 of `key`; else `key` read as ``name:secret``."""
        now = self._clock.seconds()
        account = self._by_key.get(hashlib.sha256(key).hexdigest())
        if account is None and b":" in key:
            name, _, secret = key.partition(b":")
            return self.authenticate(name.decode("utf-8", "replace"), secret, peer, interface)
        try:
            self._check_guard(peer, now, cached=False)
        except TooManyFailures as exc:
            return defer.fail(exc)
        if account is None:
            return self._fail(None, peer, interface, "unknown_key")
        if not address_allowed(self._networks[account.name], peer):
            return self._fail(account.name, peer, interface, "address_not_allowed")
        try:
            return defer.succeed(self._allowed(account, interface))
        except InterfaceDenied as exc:
            return defer.fail(exc)

    # -- steps ----------------------------------------------------------------------------------

    def _verified(self, ok: bool, account: Account, peer: str | None, interface: str | None) -> Account:
        if not ok:
            self._record_failure(account.name, peer, interface, "wrong_secret")
            raise AuthFailed("wrong_secret")
        return self._allowed(account, interface)

    @staticmethod
    def _allowed(account: Account, interface: str | None) -> Account:
        if interface is not None and account.interfaces and interface not in account.interfaces:
            shown = _INTERFACE_NAMES.get(interface, interface)
            raise InterfaceDenied(f"account {account.name!r} may not use the {shown} interface (it may use: "
                                  f"{', '.join(account.interfaces)}); the operator can add {interface!r} to its "
                                  "interfaces")
        return account

    def _verify(self, account: Account, secret: bytes, cache_key: bytes, cached: bool) -> defer.Deferred[bool]:
        """Whether `secret` is one of the account's credentials: the key (fast), else the hash (a thread,
        unless `cached`: verified lately)."""
        key_hash = self._key_hashes[account.name]
        if key_hash and hmac.compare_digest(hashlib.sha256(secret).hexdigest(), key_hash):
            return defer.succeed(True)
        if not account.secret_hash or not secret:
            return defer.succeed(False)
        if cached:
            return defer.succeed(True)
        waiting = self._pending.get(cache_key)
        if waiting is not None:  # the same name and secret are being verified: wait for that one
            d: defer.Deferred[bool] = defer.Deferred()
            waiting.append(d)
            return d
        self._pending[cache_key] = []
        d = self._hash(account.secret_hash, secret)
        return d.addBoth(self._hashed, cache_key)

    def _hash(self, secret_hash: str, secret: bytes) -> defer.Deferred[bool]:
        self.hashes += 1
        d: defer.Deferred[bool] = self._semaphore.run(self._run_blocking, lambda: verify_secret(secret_hash, secret))
        return d

    def _hashed(self, result: bool | Failure, cache_key: bytes) -> bool | Failure:
        if result is True and self._ttl > 0:
            self._cache[cache_key] = self._clock.seconds() + self._ttl
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        for d in self._pending.pop(cache_key, []):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
        return result

    def _key(self, name: str, secret: bytes) -> bytes:
        return hmac.digest(self._cache_key, name.encode("utf-8", "replace") + b"\0" + secret, "sha256")

    def _cached(self, cache_key: bytes, now: float) -> bool:
        expires = self._cache.get(cache_key)
        if expires is None:
            return False
        if expires <= now:
            del self._cache[cache_key]
            return False
        return True

    def _fail_unknown(self, name: str, peer: str | None, interface: str | None) -> defer.Deferred[Account]:
        """An unknown name costs a hash too, so that timing does not tell which names exist."""
        if self._dummy_hash is None:
            return self._fail(name, peer, interface, "unknown_account")
        d = self._hash(self._dummy_hash, secrets.token_bytes(16))

        def failed(_: object) -> defer.Deferred[Account]:
            return self._fail(name, peer, interface, "unknown_account")
        return d.addBoth(failed)

    def _fail(self, name: str | None, peer: str | None, interface: str | None,
              reason: str) -> defer.Deferred[Account]:
        self._record_failure(name, peer, interface, reason)
        return defer.fail(AuthFailed(reason))

    # -- the brute-force guard --------------------------------------------------------------------

    def _check_guard(self, peer: str | None, now: float, *, cached: bool) -> None:
        if cached:
            return
        failures = self._failures.get(_guard_key(peer))
        if failures is None:
            return
        self._forget_old(failures, now)
        if len(failures) >= self._max_failures:
            retry = failures[0] + self._window - now
            raise TooManyFailures(f"too many failed logins from {peer}: {len(failures)} within {self._window:g} s; "
                                  f"retry in {retry:.0f} s", retry)

    def _record_failure(self, name: str | None, peer: str | None, interface: str | None, reason: str) -> None:
        now = self._clock.seconds()
        key = _guard_key(peer)
        failures = self._failures.get(key)
        if failures is None:
            failures = self._failures[key] = deque(maxlen=self._max_failures)
            while len(self._failures) > 10_000:  # bounded: forget the addresses seen longest ago
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        self._forget_old(failures, now)
        failures.append(now)
        _log.warning("auth_failed", account=name[:64] if name is not None else None, peer=peer,
                     interface=interface, reason=reason)
        if len(failures) == self._max_failures:
            _log.warning("auth_blocked", peer=key, failures=len(failures), window_s=self._window,
                         retry_after=round(failures[0] + self._window - now, 1),
                         action="refusing this address without checking credentials until failures age out")

    def _forget_old(self, failures: deque[float], now: float) -> None:
        """Drop the failure times older than the window."""
        while failures and failures[0] <= now - self._window:
            failures.popleft()


def _accounts_by_hash(accounts: Sequence[Account]) -> dict[str, Account]:
    """Accounts by the SHA-256 hex of their key.

    Looking the presented key's hash up in a dict is not a timing leak worth a
    constant-time compare: the timing can at most reveal how much of a *hash*
    matches, and learning a stored hash still leaves a preimage to find, which
    is hopeless for a random key (docs/security.md asks for 128+ random bits).
    """
    by_hash: dict[str, Account] = {}
    for account in accounts:
        digest = account.api_key_sha256.strip().lower()
        if not digest:
            continue
        if not _SHA256.fullmatch(digest):
            raise ValueError(f"account {account.name!r}: api_key_sha256 must be 64 hex digits (the SHA-256 of "
                             f"the key, e.g. from `printf %s KEY | sha256sum`), got {account.api_key_sha256!r}")
        if digest in by_hash:
            raise ValueError(f"accounts {by_hash[digest].name!r} and {account.name!r} have the same API key: "
                             "give each account its own")
        by_hash[digest] = account
    return by_hash
