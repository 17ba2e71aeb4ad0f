"""Content and number filters: the administrator's hard rules (docs/filters.md).

Four filters, configured under `filters:` (smsgw/_config_filters.py):

- **blacklist**: named lists of numbers and prefixes (``1380013*``), inline or in files
  that are read again when they change (`smsgw.filter_reload`). A listed recipient is refused.
- **sensitive words**: rules with a word list; `action: reject` refuses the message,
  `action: review` holds it for a reviewer whatever the review rules say.
- **duplicates**: the same account sending the same text to the same number again
  within a window is refused (`Duplicates`, kept in memory on the reactor thread).
- **segments**: a carrier link takes only the number segments its rule allows (e.g.
  only China Mobile numbers on a CMPP link to China Mobile).

The first, second and fourth are checked by `smsgw.validation.Validator` for every
message, whatever interface it came through (so a legacy-database row or a file row
fails on its own, with the reason); duplicates are checked by the gateway just before
it commits, and remembered once committed. Every refusal is a `FilterProblem` naming
its rule. Pre-approved templates are not exempt: these rules are the administrator's,
and no reviewer's decision lifts them. The one exemption is the gateway's own notices to
reviewers (`smsgw.review.UNREVIEWED_INTERFACES`): their text is the administrator's too, they may not wait
for a reviewer, and the same notice twice is meant, so words and duplicates pass them
(blacklists and segments still apply).

No I/O here and no clock; the list files are read by `smsgw._filter_lists` (re-exported here).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Collection, Iterable, Mapping, Sequence

from smsgw._filter_lists import (
    ListFileError, Signature, parse_entry, parse_numbers, parse_words, read_numbers, read_words, signature,
)
from smsgw.model import Problem
from smsgw.review import UNREVIEWED_INTERFACES, Decision, WordList, interface_matches
from smsgw.validation import Router

if TYPE_CHECKING:
    from smsgw.validation import PreparedMessage

__all__ = [
    "OPERATORS", "Blacklist", "Duplicates", "FilterProblem", "Filters", "Hold", "ListFileError",
    "SegmentRule", "Signature", "WordRule", "parse_entry", "parse_numbers", "parse_words", "read_numbers",
    "read_words", "signature",
]

# Mainland mobile segments by operator, as of 2022 (after the 2019 MIIT assignments of 190-199 and
# 192 to China Broadnet), from github.com/VincentSit/ChinaMobilePhoneNumberRegex (README, "Mobile
# phone number" and "Data only number"). Number portability (携号转网, since 2019-12) means a
# segment no longer proves the operator: a rule can only go by the segment. Not included:
# MVNO segments (165, 1703/1705/1706 on China Mobile; 167, 1704/1707-1709, 171 on China Unicom;
# 162, 1700-1702 on China Telecom) and 13-digit IoT numbers; add them with `prefixes:`.
OPERATORS: dict[str, tuple[str, ...]] = {
    "china_mobile": (*(f"134{d}" for d in "012345678"), "135", "136", "137", "138", "139", "147",
                     "150", "151", "152", "157", "158", "159", "172", "178", "182", "183", "184", "187", "188",
                     "195", "197", "198"),
    "china_unicom": ("130", "131", "132", "145", "155", "156", "166", "175", "176", "185", "186", "196"),
    "china_telecom": ("133", "1349", "149", "153", "173", *(f"1740{d}" for d in "012345"), "177", "180", "181",
                      "189", "190", "191", "193", "199"),
    "china_broadnet": ("192",),
}
OPERATOR_NAMES = {"china_mobile": "China Mobile", "china_unicom": "China Unicom",
                  "china_telecom": "China Telecom", "china_broadnet": "China Broadnet"}


@dataclass(frozen=True, slots=True)
class FilterProblem(Problem):
    """A refusal by a filter: a `Problem` (where, code, message) that also names the rule, for the log."""

    rule: str = ""  # e.g. "blacklist:opt-out", "sensitive_words:gambling", "duplicates", "segments:cmcc-only"


@dataclass(frozen=True, slots=True)
class Hold:
    """A sensitive-word rule with `action: review` matched: the message waits for a reviewer."""

    rule: str
    word: str
    time_limit: float | None = None
    on_expiry: str = "alarm"

    def decision(self, now: float) -> Decision:
        """The review decision recorded on the message: rule ``filter:<name>``, held."""
        deadline = now + self.time_limit if self.time_limit is not None else None
        return Decision(True, f"filter:{self.rule}", deadline, self.on_expiry, self.word)


# --- the rules -------------------------------------------------------------------------------------


def _applies(accounts: Collection[str], interfaces: Sequence[str], account: str, interface: str) -> bool:
    """Whether a rule for `accounts` and `interfaces` (empty: all) covers a message; never the notices to
    reviewers: no word rule and no duplicates rule applies to them."""
    return (not accounts or account in accounts) and interface not in UNREVIEWED_INTERFACES and (
        not interfaces or interface_matches(interfaces, interface))


def _lengths(prefixes: Iterable[str]) -> tuple[int, ...]:
    return tuple(sorted({len(p) for p in prefixes}))


@dataclass(frozen=True, slots=True)
class Blacklist:
    """One named list: its inline entries and those of its file (if any), and whom it applies to."""

    name: str
    numbers: frozenset[str]
    prefixes: frozenset[str]
    accounts: frozenset[str] = frozenset()  # empty: every account
    file: str | None = None
    inline: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())  # kept for reloading the file
    lengths: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", _lengths(self.prefixes))

    def with_file(self, numbers: frozenset[str], prefixes: frozenset[str]) -> Blacklist:
        """The list with its file's entries replaced (the inline ones stay)."""
        return Blacklist(self.name, self.inline[0] | numbers, self.inline[1] | prefixes, self.accounts, self.file,
                         self.inline)

    def match(self, number: str) -> str | None:
        """The entry `number` matches (itself, or a prefix with ``*``), or None."""
        if number in self.numbers:
            return number
        for k in self.lengths:
            if number[:k] in self.prefixes:
                return number[:k] + "*"
        return None

    def describe(self, entry: str | None = None) -> str:
        """"blacklist 'opt-out' (conf/optout.txt, as 1380013*)": the list, its file, the prefix that matched."""
        notes = [n for n in (self.file, f"as {entry}" if entry and entry.endswith("*") else None) if n]
        return f"blacklist {self.name!r}" + (f" ({', '.join(notes)})" if notes else "")


@dataclass(frozen=True, slots=True)
class WordRule:
    """A sensitive-word rule: `action` reject (refuse) or review (hold for a reviewer)."""

    name: str
    action: str
    words: WordList
    accounts: frozenset[str] = frozenset()
    interfaces: tuple[str, ...] = ()
    time_limit: float | None = None
    on_expiry: str = "alarm"
    file: str | None = None
    inline: tuple[str, ...] = ()  # kept for reloading the file

    def with_file(self, words: Sequence[str]) -> WordRule:
        return WordRule(self.name, self.action, WordList(self.name, (*self.inline, *words)), self.accounts,
                        self.interfaces, self.time_limit, self.on_expiry, self.file, self.inline)

    def applies(self, account: str, interface: str) -> bool:
        return _applies(self.accounts, self.interfaces, account, interface)


@dataclass(frozen=True, slots=True)
class SegmentRule:
    """Numbers routed to `link` must start with one of `prefixes` (mainland segments)."""

    name: str
    link: str
    prefixes: frozenset[str]
    described: str  # e.g. "China Mobile numbers and 1703*"
    lengths: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", _lengths(self.prefixes))

    def allows(self, number: str) -> bool:
        for k in self.lengths:
            if number[:k] in self.prefixes:
                return True
        return False


def segment_rule(name: str, link: str, operators: Sequence[str], prefixes: Sequence[str]) -> SegmentRule:
    """A rule allowing the segments of `operators` (keys of OPERATORS) and `prefixes`."""
    allowed = {p for op in operators for p in OPERATORS[op]} | set(prefixes)
    words = [f"{OPERATOR_NAMES[op]} numbers" for op in operators] + [f"{p}*" for p in prefixes]
    return SegmentRule(name, link, frozenset(allowed), ", ".join(words))


# --- duplicates ------------------------------------------------------------------------------------


class Duplicates:
    """The same account, text and number within `window` seconds: refused (reactor thread only).

    What is remembered is a 64-bit hash of (account, text, number) with the time its message was
    committed: no text and no number is kept. An idempotent repeat (the same `ref`, or the same
    legacy row) is no duplicate: the store answers it with the message it holds. At most
    `max_entries` are kept (the oldest go first), in this process's memory only: after a restart
    nothing is remembered, and several nodes sharing a store each remember their own.
    """

    def __init__(self, window: float, *, accounts: Iterable[str] = (), interfaces: Sequence[str] = (),
                 max_entries: int = 1_000_000) -> None:
        self.window = window
        self.accounts = frozenset(accounts)
        self.interfaces = tuple(interfaces)
        self.max_entries = max_entries
        # key -> committed at, or (committed at, tag of the ref / legacy row); oldest first
        self._seen: dict[int, float | tuple[float, int]] = {}
        self._expired_at = 0.0
        self.full = False  # max_entries was reached at least once

    def __len__(self) -> int:
        return len(self._seen)

    def applies(self, account: str, interface: str) -> bool:
        return _applies(self.accounts, self.interfaces, account, interface)

    @staticmethod
    def _content(account: str, text: str) -> int:
        digest = hashlib.blake2b(f"{account}\0{text}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    def check(self, account: str, interface: str, messages: Sequence[PreparedMessage],
              tags: Sequence[object | None], now: float) -> list[FilterProblem]:
        """The duplicates among `messages` (one request, or one poll of a legacy table).

        A later message of the same request with the same number and text is a duplicate of
        the earlier one. `tags` give each message's ref or legacy row (None: neither).
        """
        if not self.window or not self.applies(account, interface):
            return []
        self._expire(now)
        seen, since = self._seen, now - self.window
        here: dict[int, int] = {}
        problems: list[FilterProblem] = []
        for i, message in enumerate(messages):
            content = self._content(account, message.text)
            tag = hash(tags[i]) if tags[i] is not None else None
            positions = message.positions
            for j, number in enumerate(message.to):
                key = hash((number, content))
                earlier = here.setdefault(key, i)
                if earlier != i:
                    problems.append(self._problem(f"[{i}].to[{positions[j] if positions else j}]", number,
                                                  f"an earlier message of this same request ([{earlier}]) has the "
                                                  "same text for it"))
                    continue
                entry = seen.get(key)
                if entry is None:
                    continue
                at, was = entry if isinstance(entry, tuple) else (entry, None)
                if at > since and not (tag is not None and tag == was):
                    ago = max(now - at, 0.0)
                    problems.append(self._problem(
                        f"[{i}].to[{positions[j] if positions else j}]", number,
                        f"the same text was accepted for it {ago:.0f} s ago (at "
                        f"{time.strftime('%H:%M:%S', time.localtime(at))}); send it again after "
                        f"{time.strftime('%H:%M:%S', time.localtime(at + self.window))} if it is meant twice"))
        return problems

    def _problem(self, where: str, number: str, why: str) -> FilterProblem:
        return FilterProblem(where, "duplicate",
                             f"{number}: duplicate, {why}: the duplicates rule refuses the same text to the same "
                             f"number within {self.window:g} s", "duplicates")

    def record(self, account: str, interface: str, message: PreparedMessage, tag: object | None,
               now: float) -> bool:
        """Remember a committed message (call after the store commit, never before).

        Returns:
            True the first time `max_entries` is reached (from then on the oldest are forgotten
            before their window ends): the caller raises an alarm.
        """
        if not self.window or not self.applies(account, interface):
            return False
        content = self._content(account, message.text)
        value: float | tuple[float, int] = (now, hash(tag)) if tag is not None else now
        seen = self._seen
        for number in message.to:
            key = hash((number, content))
            if key in seen:
                del seen[key]  # moved to the end: the order stays oldest first
            seen[key] = value
        over = len(seen) - self.max_entries
        if over <= 0:
            return False
        for key in list(itertools.islice(seen, over)):
            del seen[key]
        first, self.full = not self.full, True
        return first

    def _expire(self, now: float) -> None:
        # Once a second at most: each pass walks the holes deletions leave at the front of the dict.
        if now - self._expired_at < 1.0 and now >= self._expired_at:
            return
        self._expired_at = now
        since = now - self.window
        stale = []
        for key, entry in self._seen.items():
            if (entry[0] if isinstance(entry, tuple) else entry) > since:
                break
            stale.append(key)
        for key in stale:
            del self._seen[key]


# --- all of them ----------------------------------------------------------------------------------


class Filters:
    """Every configured filter; `smsgw.validation.Validator.filters` and the gateway hold the one instance.

    Lists and word rules are replaced whole when their file is read again (`replace_blacklist`,
    `replace_words`, on the reactor thread); a check running on another thread (a legacy-database
    poll, a file import plan) reads the tuple of rules once and so sees either the old or the new.
    """

    def __init__(self, blacklists: Sequence[Blacklist] = (), words: Sequence[WordRule] = (),
                 segments: Sequence[SegmentRule] = (), duplicates: Duplicates | None = None,
                 router: Router | None = None, signatures: Mapping[str, Signature] | None = None) -> None:
        if segments and router is None:
            raise ValueError("segment rules need the router (which link a number goes to)")
        self.blacklists = tuple(blacklists)
        self.words = tuple(words)
        self.segments = {rule.link: rule for rule in segments}
        self.duplicates = duplicates
        self._router = router
        self.signatures: dict[str, Signature] = dict(signatures or {})  # file -> what was read

    # --- what is watched and replaced ----------------------------------------------------------

    def files(self) -> list[tuple[str, str, str]]:
        """(kind, rule name, path) of every list file: kind "blacklist" or "sensitive_words"."""
        return ([("blacklist", b.name, b.file) for b in self.blacklists if b.file is not None]
                + [("sensitive_words", w.name, w.file) for w in self.words if w.file is not None])

    def replace_blacklist(self, name: str, numbers: frozenset[str], prefixes: frozenset[str]) -> Blacklist:
        """Put the file's new entries in list `name`; returns the new list."""
        new = next(b for b in self.blacklists if b.name == name).with_file(numbers, prefixes)
        self.blacklists = tuple(new if b.name == name else b for b in self.blacklists)
        return new

    def replace_words(self, name: str, words: Sequence[str]) -> WordRule:
        """Put the file's new words in rule `name`; returns the new rule."""
        new = next(w for w in self.words if w.name == name).with_file(words)
        self.words = tuple(new if w.name == name else w for w in self.words)
        return new

    # --- checks -------------------------------------------------------------------------------

    def check(self, where: str, account: str, interface: str, numbers: Mapping[str, int], text: str | None,
              problems: list[Problem]) -> Hold | None:
        """Check one message's recipients and text; add a problem per refusal.

        Args:
            where: the message's place in the request ("[2]", or "" for a lone row).
            account, interface: who sends it, and how.
            numbers: the normalised recipients, each with its index in the caller's list.
            text: the rendered text (None when it could not be made).
            problems: refusals are added here.

        Returns:
            The first review word rule that matched (the message is then held), or None.
        """
        if numbers:
            if self.blacklists:
                self._blacklisted(where, account, numbers, problems)
            if self.segments:
                self._segments(where, numbers, problems)
        if text is None or not self.words:
            return None
        hold: Hold | None = None
        for rule in self.words:
            if not rule.applies(account, interface):
                continue
            word = rule.words.find(text)
            if word is None:
                continue
            if rule.action == "reject":
                source = f" ({rule.file})" if rule.file else ""
                problems.append(FilterProblem(
                    f"{where}.text", "sensitive_word",
                    f"the text contains {word!r}, which sensitive-word rule {rule.name!r}{source} refuses: reword "
                    "the message", f"sensitive_words:{rule.name}"))
            elif hold is None:
                hold = Hold(rule.name, word, rule.time_limit, rule.on_expiry)
        return hold

    def _blacklisted(self, where: str, account: str, numbers: Mapping[str, int], problems: list[Problem]) -> None:
        for blacklist in self.blacklists:
            if blacklist.accounts and account not in blacklist.accounts:
                continue
            hits = blacklist.numbers.intersection(numbers)  # set operations: the loops run in C
            for k in blacklist.lengths:
                heads = blacklist.prefixes.intersection({number[:k] for number in numbers})
                if heads:
                    hits = hits.union(number for number in numbers if number[:k] in heads)
            for number in sorted(hits, key=numbers.__getitem__):
                problems.append(FilterProblem(
                    f"{where}.to[{numbers[number]}]", "blacklisted",
                    f"{number} is on {blacklist.describe(blacklist.match(number))}: messages to it are refused; "
                    "remove it from the recipients", f"blacklist:{blacklist.name}"))

    def _segments(self, where: str, numbers: Mapping[str, int], problems: list[Problem]) -> None:
        assert self._router is not None  # checked in __init__
        route, rules = self._router.route, self.segments
        for number, j in numbers.items():
            rule = rules.get(route(number))
            if rule is not None and not rule.allows(number):
                problems.append(FilterProblem(
                    f"{where}.to[{j}]", "segment_not_allowed",
                    f"{number} goes to carrier link {rule.link!r}, which segment rule {rule.name!r} allows only "
                    f"{rule.described}: the link cannot carry it; ask the administrator to route this segment "
                    "to another link", f"segments:{rule.name}"))
