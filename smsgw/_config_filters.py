"""The `filters:` section: blacklists, sensitive words, duplicates and segment rules (docs/filters.md).

Kept apart from config.py like `review:`; `smsgw.config` re-exports it. The list files are
read (and every bad line reported) by the meaning checks, so `smsgw check-config` finds a
broken file before the daemon does; the daemon builds its filters (`FiltersSection.build`) from
what the check parsed when the file has not changed since, and reads them again whenever they
change (smsgw.filter_reload).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Annotated, Collection, Iterator, Literal, Sequence

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from smsgw._config_review import Expiry, Interface
from smsgw._yaml_source import Section as _Section
from smsgw._yaml_source import SubProblem
from smsgw._yaml_source import bad as _bad
from smsgw._yaml_source import digits_as_text, first_seen, matching, parsed_by, scope_problems, used_twice

if TYPE_CHECKING:
    from smsgw.filters import Filters
    from smsgw.validation import Router

__all__ = ["BlacklistConfig", "DuplicatesConfig", "FiltersSection", "SegmentRuleConfig", "SensitiveWordsConfig"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,55}")
_ENTRY_FIX = "write a number (13800138000, +44 7700 900123) or a prefix ending in * (1380013*, +44*)"


def _parse_entry(value: str) -> object:
    from smsgw.filters import parse_entry  # the number rules (smsgw.validation), which YAML types do not need

    return parse_entry(value)


def _file(value: str) -> str:
    if not os.path.isfile(value):
        raise _bad(f"{value!r} does not exist or is not a file",
                   "give the path of a UTF-8 text file (a relative path is under the daemon's working directory)")
    return value


def _segment_prefix(value: str) -> str:
    if not (value.isascii() and value.isdigit() and value.startswith("1") and len(value) <= 11):
        raise _bad(f"{value!r} is not a mainland mobile segment", 'write its first digits, e.g. "1703"')
    return value


# 56 characters: recorded as "filter:<name>" in messages.review_rule (64 characters) when a word rule holds
RuleName = Annotated[str, AfterValidator(matching(_NAME, "rule name", "use 1 to 56 letters, digits, '_', '.' and '-' "
                                                                 "(e.g. opt-out)"))]
Entry = Annotated[str, BeforeValidator(digits_as_text), AfterValidator(parsed_by(_parse_entry, _ENTRY_FIX))]
ListFile = Annotated[str, Field(min_length=1), AfterValidator(_file)]
AccountName = Annotated[str, Field(min_length=1, max_length=64)]
Segment = Annotated[str, BeforeValidator(digits_as_text), AfterValidator(_segment_prefix)]
Operator = Literal["china_mobile", "china_unicom", "china_telecom", "china_broadnet"]


class BlacklistConfig(_Section):
    """One named list of numbers and prefixes nobody (or none of `accounts`) may send to."""

    name: RuleName
    numbers: tuple[Entry, ...] = ()  # numbers, and prefixes written with a trailing *
    file: ListFile | None = None  # one number or prefix per line, # comments; read again when it changes
    accounts: tuple[AccountName, ...] = ()  # the accounts it applies to; empty: all

    @model_validator(mode="after")
    def _something(self) -> BlacklistConfig:
        if not self.numbers and self.file is None:
            raise _bad("the list has neither numbers nor a file",
                       "add numbers: [...] or file: PATH (one number or prefix per line)")
        return self


class SensitiveWordsConfig(_Section):
    """A word list and what a message holding one of the words gets: refused, or held for a reviewer."""

    name: RuleName
    action: Literal["reject", "review"]
    words: tuple[Annotated[str, Field(min_length=1, max_length=100)], ...] = ()
    words_file: ListFile | None = None  # one word or phrase per line, UTF-8; read again when it changes
    accounts: tuple[AccountName, ...] = ()  # the accounts it applies to; empty: all
    interfaces: tuple[Interface, ...] = ()  # rest, url, soap, file, db, db:<source>, auto_reply; empty: all
    time_limit: Annotated[float, Field(gt=0)] | None = None  # action review: seconds a held message waits
    on_expiry: Expiry = "alarm"  # action review: then approve, reject, or alarm

    @model_validator(mode="after")
    def _sensible(self) -> SensitiveWordsConfig:
        if not self.words and self.words_file is None:
            raise _bad("the rule has neither words nor a words_file",
                       "add words: [...] or words_file: PATH (one word or phrase per line)")
        if self.action == "reject" and (self.time_limit is not None or self.on_expiry != "alarm"):
            raise _bad("time_limit / on_expiry are set on a rule that refuses messages",
                       "they apply to held messages: drop them, or make the action review")
        return self


class DuplicatesConfig(_Section):
    """The same account, text and number again within `window` seconds is refused (0 or null: off)."""

    window: Annotated[float, Field(ge=0)] | None = 0.0
    accounts: tuple[AccountName, ...] = ()  # the accounts it applies to; empty: all
    interfaces: tuple[Interface, ...] = ()  # the interfaces it applies to; empty: all
    max_entries: Annotated[int, Field(ge=1000)] = 1_000_000  # (number, text) pairs remembered, about 150 bytes each


class SegmentRuleConfig(_Section):
    """Numbers routed to `link` must be in the segments of `operators` or start with one of `prefixes`."""

    name: RuleName
    link: Annotated[str, Field(min_length=1, max_length=64)]
    operators: tuple[Operator, ...] = ()  # china_mobile, china_unicom, china_telecom, china_broadnet
    prefixes: tuple[Segment, ...] = ()  # further segments, e.g. "1703" (an MVNO on the same network)

    @model_validator(mode="after")
    def _something(self) -> SegmentRuleConfig:
        if not self.operators and not self.prefixes:
            raise _bad("the rule allows no segment", "add operators: [china_mobile] and/or prefixes: [...]")
        return self


class FiltersSection(_Section):
    reload_interval: Annotated[float, Field(gt=0)] = 5.0  # seconds between looks at the list files
    blacklist: tuple[BlacklistConfig, ...] = ()
    sensitive_words: tuple[SensitiveWordsConfig, ...] = ()
    duplicates: DuplicatesConfig = Field(default_factory=DuplicatesConfig)
    segments: tuple[SegmentRuleConfig, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> FiltersSection:
        for key, names in (("blacklist", [b.name for b in self.blacklist]),
                           ("sensitive_words", [w.name for w in self.sensitive_words]),
                           ("segments", [s.name for s in self.segments])):
            twice = used_twice(names)
            if twice is not None:
                raise _bad(f"{key} name {twice!r} is used twice", "give each its own name")
        return self

    def enabled(self) -> bool:
        return bool(self.blacklist or self.sensitive_words or self.segments or self.duplicates.window)

    def problems(self, accounts: Collection[str], links: list[str], sources: list[str],
                 reviewers: bool) -> Iterator[SubProblem]:
        """What the types alone cannot say, and every list file's first bad line.

        Args:
            accounts: the account names a rule may name (configured ones, auto_reply...).
            links: the carriers' names.
            sources: the db sources' names.
            reviewers: whether any reviewer is configured.
        """
        from smsgw.filters import ListFileError, read_numbers, read_words

        scoped: list[tuple[tuple[str | int, ...], Sequence[str], Sequence[str]]] = [
            *((("blacklist", i), b.accounts, ()) for i, b in enumerate(self.blacklist)),
            *((("sensitive_words", i), w.accounts, w.interfaces) for i, w in enumerate(self.sensitive_words)),
            (("duplicates",), self.duplicates.accounts, self.duplicates.interfaces)]
        for at, names, interfaces in scoped:
            yield from scope_problems(at, names, interfaces, accounts, sources,
                                      "use the name of an account under accounts: (or auto_reply for MO auto-replies)")
        for i, b in enumerate(self.blacklist):
            if b.file is not None:
                try:
                    read_numbers(b.file, keep=True)  # parsed once: the daemon builds its filters from this
                except ListFileError as exc:
                    yield (("blacklist", i, "file"), str(exc),
                           f"{_ENTRY_FIX}, one per line; # starts a comment")
        for i, w in enumerate(self.sensitive_words):
            if w.words_file is not None:
                try:
                    read_words(w.words_file, keep=True)
                except ListFileError as exc:
                    yield (("sensitive_words", i, "words_file"), str(exc),
                           "write one word or phrase per line (at most 100 characters), UTF-8; # starts a comment")
            if w.action == "review" and not reviewers:
                yield (("sensitive_words", i, "action"), "the rule holds messages but no reviewer is configured",
                       "add a reviewer under review.reviewers, or nobody can approve them")
        for i, s in enumerate(self.segments):
            if s.link not in links:
                yield (("segments", i, "link"), f"no carrier is named {s.link!r}",
                       f"use one of the carriers: {', '.join(links)}" if links else "add the carrier under carriers:")
        for i, _, first in first_seen(s.link for s in self.segments):
            yield (("segments", i, "link"), f"filters.segments[{first}] is for the same link",
                   "merge the two rules: one rule per link")

    def build(self, router: Router) -> Filters | None:
        """The `smsgw.filters.Filters` of this section (reads the list files), or None when it is empty.

        Raises:
            smsgw.filters.ListFileError: a list file cannot be read or has a bad line.
        """
        from smsgw.filters import (
            Blacklist, Duplicates, Filters, WordRule, parse_entry, read_numbers, read_words, segment_rule,
        )
        from smsgw.review import WordList

        if not self.enabled():
            return None
        signatures = {}
        blacklists = []
        for b in self.blacklist:
            parsed = [parse_entry(e) for e in b.numbers]
            inline = (frozenset(v for p, v in parsed if not p), frozenset(v for p, v in parsed if p))
            numbers, prefixes = inline
            if b.file is not None:
                file_numbers, file_prefixes, signatures[b.file] = read_numbers(b.file)
                numbers, prefixes = numbers | file_numbers, prefixes | file_prefixes
            blacklists.append(Blacklist(b.name, numbers, prefixes, frozenset(b.accounts), b.file, inline))
        rules = []
        for w in self.sensitive_words:
            words = w.words
            if w.words_file is not None:
                listed, signatures[w.words_file] = read_words(w.words_file)
                words = (*words, *listed)
            rules.append(WordRule(w.name, w.action, WordList(w.name, words), frozenset(w.accounts), w.interfaces,
                                  w.time_limit, w.on_expiry, w.words_file, w.words))
        d = self.duplicates
        duplicates = (Duplicates(d.window, accounts=d.accounts, interfaces=d.interfaces, max_entries=d.max_entries)
                      if d.window else None)
        segments = [segment_rule(s.name, s.link, s.operators, s.prefixes) for s in self.segments]
        return Filters(blacklists, rules, segments, duplicates, router, signatures)
