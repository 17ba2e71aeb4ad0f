"""The `review:` section: review rules, reviewers and their notices (docs/review.md).

Kept apart from config.py like `db_sources:`; `smsgw.config` re-exports it.
"""

from __future__ import annotations

import os
import re
import string
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from smsgw._yaml_source import Section as _Section
from smsgw._yaml_source import bad as _bad
from smsgw._yaml_source import digits_as_text, matching, parsed_by, used_twice
from smsgw.review import ReviewPolicy, ReviewRule, WordList, is_interface
from smsgw.schedule import parse_range  # the grammar of schedule.quiet_hours

__all__ = ["ReviewNoticeSection", "ReviewRuleConfig", "ReviewSection", "ReviewerConfig"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")


def _interface(value: str) -> str:
    if not is_interface(value):
        raise _bad(f"unknown interface {value!r}",
                   "write rest, url, soap, file, db (every legacy-database source), db:<source> or auto_reply")
    return value


def _mobile(value: str) -> str:
    if not (len(value) == 11 and value.isascii() and value.isdigit() and value.startswith("1")):
        raise _bad(f"{value!r} is not a mainland mobile number", "write the 11 digits, e.g. \"13800138000\"")
    return value


#: What a reviewer notice's text may say; smsgw.review_notice fills them in.
NOTICE_FIELDS = ("messages", "recipients", "oldest")


def _notice_text(value: str) -> str:
    fix = ("use {messages}, {recipients} and {oldest} (when the oldest waiting message arrived) as they are; "
           "write {{ and }} for a literal brace")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise _bad(f"the text is not a usable template: {exc}", fix) from None
    for name, spec, conv in fields:
        if name not in NOTICE_FIELDS or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise _bad(f"the text has an unknown placeholder {shown[:40]}", fix)
    return value


RuleName = Annotated[str, AfterValidator(matching(_NAME, "rule name", "use 1 to 64 letters, digits, '_', '.' and '-' "
                                                                 "(e.g. mass-sends)"))]
ReviewerName = Annotated[str, AfterValidator(matching(_NAME, "reviewer name", (
    "use 1 to 64 letters, digits, '_', '.' and '-' (e.g. zhang.wei); `smsgw review --as NAME` takes it")))]
Interface = Annotated[str, AfterValidator(_interface)]
Mobile = Annotated[str, BeforeValidator(digits_as_text), AfterValidator(_mobile)]
Hours = Annotated[str, AfterValidator(parsed_by(parse_range, 'e.g. "08:00-20:00", or "21:00-07:00" over midnight'))]
Expiry = Literal["approve", "reject", "alarm"]


class ReviewRuleConfig(_Section):
    """One rule; every condition given must match, none given matches every message."""

    name: RuleName
    action: Literal["review", "pass"]
    accounts: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = ()
    interfaces: tuple[Interface, ...] = ()
    min_recipients: Annotated[int, Field(ge=1)] | None = None
    words: tuple[Annotated[str, Field(min_length=1, max_length=100)], ...] = ()
    words_file: Annotated[str, Field(min_length=1)] | None = None  # one word per line, UTF-8
    pre_approved: bool | None = None  # true: rendered from a pre-approved template
    time_limit: Annotated[float, Field(gt=0)] | None = None  # seconds; null: wait as long as it takes
    on_expiry: Expiry = "alarm"

    @model_validator(mode="after")
    def _sensible(self) -> ReviewRuleConfig:
        if self.words_file is not None and not os.path.isfile(self.words_file):
            raise _bad(f"words_file {self.words_file!r} does not exist or is not a file",
                       "give the path of a UTF-8 text file with one word or phrase per line")
        if self.action == "pass" and self.time_limit is not None:
            raise _bad("time_limit is set on a rule that passes messages",
                       "a time limit applies to held messages: drop it, or make the action review")
        return self

    def rule(self) -> ReviewRule:
        """The `smsgw.review.ReviewRule` (reads words_file).

        Raises:
            OSError, UnicodeDecodeError: words_file cannot be read.
        """
        words = None
        if self.words or self.words_file:
            listed = list(self.words)
            if self.words_file is not None:
                listed += WordList.read(self.name, self.words_file).words
            words = WordList(self.name, listed)
        return ReviewRule(self.name, self.action, tuple(self.accounts), tuple(self.interfaces), self.min_recipients,
                          words, self.pre_approved, self.time_limit, self.on_expiry)


class ReviewerConfig(_Section):
    """Someone who may approve and reject: by API account (with the review permission) or `--as NAME`."""

    name: ReviewerName
    phones: tuple[Mobile, ...] = ()  # where the notices of arriving items go
    accounts: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = ()  # API accounts acting as them


class ReviewNoticeSection(_Section):
    """SMS notices to reviewers when held messages arrive."""

    enabled: bool = True
    hours: Hours = "08:00-20:00"  # outside them a notice waits for the next window
    interval: Annotated[float, Field(gt=0)] = 1800.0  # at most one notice per reviewer per this many seconds
    account: Annotated[str, Field(min_length=1, max_length=64)] = "review_notice"  # the sender recorded
    # {messages}, {recipients}: waiting when the notice goes; {oldest}: when the oldest of them arrived
    text: Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_notice_text)] = (
        "smsgw: {messages} messages ({recipients} recipients) are waiting for review")


class ReviewSection(_Section):
    rules: tuple[ReviewRuleConfig, ...] = ()
    reviewers: tuple[ReviewerConfig, ...] = ()
    # For messages held only because their account has needs_review: true (no rule matched).
    time_limit: Annotated[float, Field(gt=0)] | None = None
    on_expiry: Expiry = "alarm"
    notify: ReviewNoticeSection = Field(default_factory=ReviewNoticeSection)

    @model_validator(mode="after")
    def _unique(self) -> ReviewSection:
        for what, names in (("rule", [r.name for r in self.rules]), ("reviewer", [r.name for r in self.reviewers])):
            twice = used_twice(names)
            if twice is not None:
                raise _bad(f"{what} name {twice!r} is used twice", f"give each {what} its own name")
        return self

    def policy(self) -> ReviewPolicy:
        """The `smsgw.review.ReviewPolicy` of these rules (reads the words files)."""
        return ReviewPolicy(tuple(r.rule() for r in self.rules), self.time_limit, self.on_expiry)
