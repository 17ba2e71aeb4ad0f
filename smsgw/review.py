"""Which messages wait for a reviewer: the review rules (docs/review.md).

Rules come from YAML (`review.rules`) and are evaluated in order; the first whose
conditions all match decides (`action: review` holds the message in
``pending_review``, `action: pass` lets it go straight on). Conditions: the
sending account, the interface or source it came through, the recipients of the
request or declared batch (mass sends), the content matching a word list, and
whether it was rendered from a pre-approved template. A rule with no condition
matches everything (always / never). A message no rule matches goes straight on,
unless its account is configured with ``needs_review: true``.

No I/O here: `ReviewPolicy.decide` is a pure function of the message, called by
`smsgw.pipeline.Gateway` for every message whatever interface it came through,
so no path can skip it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from smsgw.lifecycle import Review
from smsgw.model import Account

__all__ = ["INTERFACES", "NOTICE_INTERFACE", "UNREVIEWED_INTERFACES", "Decision", "ReviewPolicy", "ReviewRule",
           "WordList", "interface_matches", "is_interface"]

#: What rules and queries name a message's origin by ("db" stands for every legacy-database source, "db:<name>" one).
INTERFACES = ("rest", "url", "soap", "file", "db", "auto_reply")
#: Interfaces of the gateway's own messages that are never held (reviewer notices would wait for themselves).
NOTICE_INTERFACE = "review_notice"  # the reviewers' notices (smsgw.review_notice)
UNREVIEWED_INTERFACES = frozenset({NOTICE_INTERFACE})


class WordList:
    """Words or phrases looked for in a text, case-insensitively (sensitive-word lists).

    Matching is by substring, as Chinese text has no spaces between words; the leftmost
    word in the text is found, the longest one where several start at the same place.
    A short list is one compiled regular expression (a text is scanned once); Python's
    `re` tries the alternatives one after another, so above `_REGEX_WORDS` words the list
    is an index by the first two characters instead: a few microseconds per text
    whatever the size of the list (tens of thousands of words).
    """

    _REGEX_WORDS = 1000

    def __init__(self, name: str, words: Iterable[str]) -> None:
        self.name = name
        self.words = tuple(sorted({w.strip().casefold() for w in words if w.strip()}, key=lambda w: (-len(w), w)))
        self._pattern: re.Pattern[str] | None = None
        self._singles: frozenset[str] = frozenset()
        self._index: dict[str, tuple[str, ...]] = {}
        if len(self.words) <= self._REGEX_WORDS:
            self._pattern = re.compile("|".join(re.escape(w) for w in self.words)) if self.words else None
            return
        self._singles = frozenset(w for w in self.words if len(w) == 1)
        index: dict[str, list[str]] = {}
        for word in self.words:  # longest first, so each entry is too
            if len(word) > 1:
                index.setdefault(word[:2], []).append(word)
        self._index = {head: tuple(listed) for head, listed in index.items()}

    def find(self, text: str) -> str | None:
        """The first listed word in `text`, or None."""
        if self._pattern is not None:
            found = self._pattern.search(text.casefold())
            return found.group(0) if found else None
        if not self.words:
            return None
        folded, index, singles = text.casefold(), self._index, self._singles
        for i, ch in enumerate(folded):
            listed = index.get(folded[i:i + 2])
            if listed is not None:
                for word in listed:
                    if folded.startswith(word, i):
                        return word
            if ch in singles:
                return ch
        return None

    @classmethod
    def read(cls, name: str, path: str) -> WordList:
        """A list from a UTF-8 text file: one word or phrase per line; blank lines and lines starting with # skipped.

        Raises:
            OSError: the file cannot be read.
            UnicodeDecodeError: it is not UTF-8.
        """
        with open(path, encoding="utf-8-sig") as fh:
            return cls(name, (line for line in fh.read().splitlines() if not line.lstrip().startswith("#")))

    def __len__(self) -> int:
        return len(self.words)


def is_interface(value: str) -> bool:
    """`value` names an origin rules and queries accept: one of INTERFACES, or db:<source>."""
    base, colon, source = value.partition(":")
    return base in INTERFACES and (not colon or (base == "db" and bool(source)))


def interface_matches(patterns: Sequence[str], interface: str) -> bool:
    """`interface` is one of `patterns`: "db" names every legacy-database source, "db:erp" only that one."""
    return interface in patterns or interface.split(":", 1)[0] in patterns


@dataclass(frozen=True, slots=True)
class ReviewRule:
    """One rule: every condition given must match (none given: matches everything)."""

    name: str
    action: str  # "review" (hold for a reviewer) or "pass" (straight on)
    accounts: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()  # rest, url, soap, file, db, db:<source>, auto_reply
    min_recipients: int | None = None  # the request's (or declared batch's) recipients at or above this
    words: WordList | None = None  # the content holds one of these (not for pre-approved templates)
    pre_approved: bool | None = None  # True: rendered from a pre-approved template; False: not
    time_limit: float | None = None  # seconds a held message waits before `on_expiry`; None: no limit
    on_expiry: str = "alarm"  # approve, reject, or alarm (keep waiting, log an alarm line)

    def matches(self, account: str, interface: str, text: str, recipients: int,
                pre_approved: bool) -> tuple[bool, str | None]:
        """(whether it matches, the word that matched if a word list took part)."""
        if self.accounts and account not in self.accounts:
            return False, None
        if self.interfaces and not interface_matches(self.interfaces, interface):
            return False, None
        if self.min_recipients is not None and recipients < self.min_recipients:
            return False, None
        if self.pre_approved is not None and pre_approved != self.pre_approved:
            return False, None
        word = None
        if self.words is not None:
            if pre_approved:  # the template's text was reviewed when it was marked pre-approved
                return False, None
            word = self.words.find(text)
            if word is None:
                return False, None
        return True, word


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules decided for one message; stored on it (messages.review, review_rule...)."""

    held: bool
    rule: str | None  # None: no rule matched
    deadline: float | None = None  # held with a time limit: when it runs out
    on_expiry: str | None = None
    word: str | None = None  # the listed word the content matched, for the log line

    @property
    def review(self) -> str:
        return Review.PENDING if self.held else Review.PASSED


PASS = Decision(False, None)


@dataclass(frozen=True, slots=True)
class ReviewPolicy:
    """The configured rules, and the limit applied to accounts marked `needs_review`."""

    rules: tuple[ReviewRule, ...] = ()
    account_time_limit: float | None = None  # for messages held only by their account's needs_review
    account_on_expiry: str = "alarm"

    def decide(self, account: Account, interface: str, text: str, recipients: int, pre_approved: bool,
               now: float) -> Decision:
        """The first matching rule's decision; no match: held only when the account needs review.

        Args:
            account: the sending account.
            interface: rest, url, soap, file, db:<source>, auto_reply...
            text: the message content (rendered).
            recipients: the request's recipients, or the caller's declared batch size if larger.
            pre_approved: rendered from a template marked pre-approved.
            now: epoch seconds (the time limit counts from here).
        """
        if interface in UNREVIEWED_INTERFACES:
            return PASS
        for rule in self.rules:
            hit, word = rule.matches(account.name, interface, text, recipients, pre_approved)
            if not hit:
                continue
            if rule.action == "pass":
                return Decision(False, rule.name, word=word)
            deadline = now + rule.time_limit if rule.time_limit is not None else None
            return Decision(True, rule.name, deadline, rule.on_expiry, word)
        if account.needs_review:
            deadline = now + self.account_time_limit if self.account_time_limit is not None else None
            return Decision(True, "account.needs_review", deadline, self.account_on_expiry)
        return PASS
