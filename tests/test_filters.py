"""Content and number filters (smsgw.filters, docs/filters.md): each filter alone, the `filters:` section, the
list files read again without a restart, and the filters on every path of a real daemon (REST, URL, SOAP,
watched folder and `smsgw import`, legacy database, MO auto-replies)."""

from __future__ import annotations

import csv
import pathlib
import textwrap
from typing import Any, Iterable

import urllib.parse

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import create_engine, insert, text
from structlog.testing import capture_logs
from twisted.internet.threads import deferToThread

from daemon_helpers import (
    DEMO_KEY, ApiClient, DaemonCase, account, count, make_config, recipient_states, rows, spin, wait_for,
    write_config,
)
from ports import free_port
from smsgw.adapters.db import interface as db_interface
from smsgw.adapters.soap.service import SoapInterface
from smsgw.adapters.url.service import UrlInterface
from smsgw.carrier import MoMessage
from smsgw.config import BlacklistConfig, SegmentRuleConfig, SensitiveWordsConfig, check_config, load_config
from smsgw.filters import (
    OPERATORS, Blacklist, Duplicates, FilterProblem, Filters, Hold, ListFileError, WordRule, parse_entry,
    parse_numbers, parse_words, segment_rule,
)
from smsgw.model import Account, Problem, RequestRejected, SendRequest
from smsgw.review import WordList
from smsgw.templates import Template
from smsgw.validation import MAINLAND_PREFIXES, PreparedMessage, Router, Validator
from test_cli import smsgw
from test_soap import Zeep
from test_soap import problems_of as soap_problems
from test_url_interface import _http

ROOT = pathlib.Path(__file__).resolve().parent.parent
ME = Account("erp")
NOW = 1_780_000_000.0


def refused(validator: Validator, *requests: SendRequest, account: Account = ME,
            interface: str = "rest") -> list[Problem]:
    with pytest.raises(RequestRejected) as info:
        validator.prepare(account, list(requests), NOW, interface=interface)
    return info.value.problems


def opt_out(numbers: Iterable[str] = (), prefixes: Iterable[str] = (), **kw: Any) -> Blacklist:
    return Blacklist("opt-out", frozenset(numbers), frozenset(prefixes), **kw)


# --- blacklist entries and files ------------------------------------------------------------------

@pytest.mark.parametrize("written, parsed", [
    ("13800138000", (False, "13800138000")), ("+86 138 0013 8000", (False, "13800138000")),
    ("8613800138000", (False, "13800138000")), ("１３８００１３８０００", (False, "13800138000")),
    ("17400123456", (False, "17400123456")),  # any segment: a list may name numbers validation refuses
    ("+44 7700 900123", (False, "+447700900123")), ("1380013*", (True, "1380013")), ("138 0013*", (True, "1380013")),
    ("+86138*", (True, "138")), ("0086 138*", (True, "138")), ("+44*", (True, "+44")), ("1*", (True, "1")),
])
def test_entries_are_numbers_or_prefixes_written_as_callers_write_them(written: str,
                                                                       parsed: tuple[bool, str]) -> None:
    assert parse_entry(written) == parsed


@pytest.mark.parametrize("written, message", [
    ("138", "has 3 digits"), ("abc", "contains 'a'"), ("*", "not a prefix"), ("86138*", "starts with 1"),
    ("+0*", "not an international prefix"), ("1380013800099*", "at most 11 digits"), ("13x*", "not a prefix"),
    ("1" * 70, "70 characters long"),
])
def test_bad_entries_say_what_is_wrong(written: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_entry(written)


def test_a_list_file_has_one_entry_a_line_with_comments() -> None:
    """Blank lines and # comments are skipped; a BOM and CRLF line ends are fine."""
    data = "\ufeff# opted out\r\n13800138000\r\n\r\n+86 139 0013 9000  # asked 2026-01-03\r\n1370013*\r\n".encode()
    assert parse_numbers(data, "optout.txt") == (frozenset({"13800138000", "13900139000"}), frozenset({"1370013"}))


def test_a_bad_line_is_named_by_file_and_line() -> None:
    with pytest.raises(ListFileError) as info:
        parse_numbers(b"13800138000\n# ok\n1380013800x\n", "conf/optout.txt")
    assert (info.value.path, info.value.line) == ("conf/optout.txt", 3)
    assert str(info.value).startswith("conf/optout.txt:3: not a number: '1380013800x' contains 'x'")
    with pytest.raises(ListFileError) as info:
        parse_numbers("13800138000\n13900139000\n张三\n".encode("gbk"), "gbk.txt")
    assert (info.value.line, info.value.what) == (3, "is not UTF-8 text: save the file as UTF-8")


def test_a_word_file_has_one_word_a_line() -> None:
    assert parse_words("# 赌博类\n赌博\n\n  网络 赌场 \n#not a word\n".encode(), "w.txt") == ("赌博", "网络 赌场")
    with pytest.raises(ListFileError, match="w.txt:2: a word of 101 characters"):
        parse_words(("ok\n" + "x" * 101).encode(), "w.txt")


@given(st.binary(max_size=400))
def test_garbage_list_files_never_crash_the_loader(data: bytes) -> None:
    """Any bytes parse, or fail with a ListFileError naming a line of the file."""
    for parse in (parse_numbers, parse_words):
        try:
            parse(data, "x.txt")
        except ListFileError as exc:
            assert 0 <= exc.line <= data.count(b"\n") + 1


@given(st.lists(st.text(alphabet="0123456789+*# -\u3000１８", max_size=20), max_size=20))
def test_garbage_list_lines_never_crash_the_loader(lines: list[str]) -> None:
    try:
        numbers, prefixes = parse_numbers("\n".join(lines).encode(), "x.txt")
    except ListFileError as exc:
        assert 1 <= exc.line <= len(lines)
    else:
        assert all(n.startswith(("1", "+")) for n in numbers | prefixes)


# --- the blacklist ------------------------------------------------------------------------------------

_NUMBER = st.builds(lambda p, rest: p + rest, st.sampled_from(["138", "139", "150", "186"]),
                    st.text(alphabet="0123456789", min_size=8, max_size=8))


@given(st.sets(_NUMBER, max_size=8), st.sets(st.text(alphabet="0123456789", min_size=1, max_size=6), max_size=4),
       st.lists(_NUMBER, min_size=1, max_size=12, unique=True))
def test_a_recipient_is_refused_exactly_when_listed_or_under_a_listed_prefix(
        listed: set[str], heads: set[str], recipients: list[str]) -> None:
    """Whatever the lists and the recipients, the refused ones are those listed or under a prefix, each once,
    named by their index, for one recipient and for many alike."""
    blacklist = opt_out(listed, {"1" + h for h in heads})
    validator = Validator(filters=Filters([blacklist]))
    expected = [j for j, n in enumerate(recipients) if n in listed or any(n.startswith("1" + h) for h in heads)]
    try:
        validator.prepare(ME, [SendRequest(tuple(recipients), "hi")], NOW)
        found: list[int] = []
    except RequestRejected as exc:
        found = [int(p.where[len("[0].to["):-1]) for p in exc.problems]
        assert {p.code for p in exc.problems} == {"blacklisted"}
    assert found == expected
    singles = [j for j, n in enumerate(recipients) if not isinstance(
        validator.prepare_one(ME, SendRequest((n,), "hi"), NOW), PreparedMessage)]
    assert singles == expected


def test_a_blacklisted_recipient_refuses_the_request_naming_the_list_and_its_place() -> None:
    """The whole request is refused, as for a bad number; `where` is the caller's index (duplicates counted)."""
    validator = Validator(filters=Filters([opt_out({"13800138000"}, {"1390013"}, file="conf/optout.txt")]))
    problems = refused(validator, SendRequest(("13700137000",), "ok"),
                       SendRequest(("13700137000", "13700137000", "13800138000", "139 0013 9999"), "hi"))
    assert problems == [
        FilterProblem("[1].to[2]", "blacklisted", "13800138000 is on blacklist 'opt-out' (conf/optout.txt): "
                      "messages to it are refused; remove it from the recipients", "blacklist:opt-out"),
        FilterProblem("[1].to[3]", "blacklisted", "13900139999 is on blacklist 'opt-out' (conf/optout.txt, as "
                      "1390013*): messages to it are refused; remove it from the recipients", "blacklist:opt-out")]
    assert problems[0].as_dict() == {"where": "[1].to[2]", "code": "blacklisted", "message": problems[0].message}


def test_a_row_checked_alone_gets_its_own_problems() -> None:
    validator = Validator(filters=Filters([opt_out({"13800138000"})]))
    result = validator.prepare_one(ME, SendRequest(("13800138000",), "hi"), NOW, interface="db:erp")
    assert isinstance(result, list)
    [problem] = result
    assert (problem.where, problem.code) == ("to[0]", "blacklisted")
    assert isinstance(problem, FilterProblem) and problem.rule == "blacklist:opt-out"


def test_a_list_for_some_accounts_leaves_the_others_alone() -> None:
    validator = Validator(filters=Filters([opt_out({"13800138000"}, accounts=frozenset({"marketing"}))]))
    assert validator.prepare(ME, [SendRequest(("13800138000",), "hi")], NOW)
    assert refused(validator, SendRequest(("13800138000",), "hi"), account=Account("marketing"))


def test_a_number_outside_the_mainland_can_be_listed() -> None:
    validator = Validator(allow_other=True, filters=Filters([opt_out(set(), {"+44"})]))
    [problem] = refused(validator, SendRequest(("13800138000", "+44 7700 900123"), "hi"))
    assert problem.where == "[0].to[1]" and "+447700900123 is on blacklist 'opt-out' (as +44*)" in problem.message


# --- sensitive words -----------------------------------------------------------------------------------

def words(name: str, action: str, *listed: str, **kw: Any) -> WordRule:
    return WordRule(name, action, WordList(name, listed), **kw)


def test_a_reject_rule_refuses_the_text_naming_the_rule_and_the_word() -> None:
    validator = Validator(filters=Filters(words=[words("gambling", "reject", "赌博", "Casino", file="w.txt")]))
    [problem] = refused(validator, SendRequest(("13800138000",), "Best CASINO in town"))
    assert (problem.where, problem.code) == ("[0].text", "sensitive_word")
    assert problem.message == ("the text contains 'casino', which sensitive-word rule 'gambling' (w.txt) refuses: "
                               "reword the message")


def test_a_review_rule_holds_the_message_as_filter_rule() -> None:
    """The first review rule that matches holds it; the decision is recorded as filter:<rule> with the word."""
    filters = Filters(words=[words("loans", "review", "贷款", time_limit=600.0, on_expiry="reject"),
                             words("other", "review", "款")])
    [prepared] = Validator(filters=filters).prepare(ME, [SendRequest(("13800138000",), "低息贷款")], NOW)
    assert prepared.hold == Hold("loans", "贷款", 600.0, "reject")
    decision = prepared.hold.decision(NOW)
    assert (decision.held, decision.rule, decision.word, decision.deadline, decision.on_expiry) == (
        True, "filter:loans", "贷款", NOW + 600.0, "reject")


def test_pre_approved_templates_are_not_exempt() -> None:
    """A text rendered from a pre-approved template is still checked: the filters are the administrator's."""
    filters = Filters(words=[words("gambling", "reject", "赌博"), words("loans", "review", "贷款")])
    templates = {"t": Template.create("t", "{x}", pre_approved=True)}
    validator = Validator(filters=filters, templates=templates)
    assert refused(validator, SendRequest(("13800138000",), "", template="t", params={"x": "赌博"}))
    [held] = validator.prepare(ME, [SendRequest(("13800138000",), "", template="t", params={"x": "贷款"})], NOW)
    assert held.pre_approved and held.hold is not None


def test_word_rules_apply_to_their_accounts_and_interfaces() -> None:
    rule = words("imports", "reject", "test", accounts=frozenset({"erp"}), interfaces=("file", "db"))
    validator = Validator(filters=Filters(words=[rule]))
    request = SendRequest(("13800138000",), "a test")
    assert refused(validator, request, interface="file") and refused(validator, request, interface="db:erp")
    assert validator.prepare(ME, [request], NOW, interface="rest")
    assert validator.prepare(Account("crm"), [request], NOW, interface="file")


class _IndexedWords(WordList):
    _REGEX_WORDS = 0  # always the index by two characters (used above 1,000 words)


@given(st.lists(st.text(alphabet="ab赌博Xx ", min_size=1, max_size=4), max_size=12),
       st.text(alphabet="ab赌博Xxß ", max_size=30))
def test_a_long_word_list_finds_what_a_short_one_finds(listed: list[str], text: str) -> None:
    """The index large lists use finds the same word as the regular expression: leftmost, then longest."""
    assert _IndexedWords("w", listed).find(text) == WordList("w", listed).find(text)


def test_a_large_word_list_matches_case_insensitively() -> None:
    listed = [f"词{i:05d}" for i in range(5000)] + ["Casino", "赌"]
    rule = WordList("w", listed)
    assert rule.find("Best CASINO") == "casino" and rule.find("x 词04999") == "词04999"
    assert rule.find("赌博") == "赌" and rule.find("nothing here") is None


def test_reviewer_notices_pass_words_and_duplicates_but_not_blacklists() -> None:
    """The gateway's notices to reviewers are never held or refused for their (configured) text or for
    repeating themselves; a reviewer's number on a blacklist still gets nothing."""
    validator = Validator(filters=Filters([opt_out({"13800138000"})], [words("w", "review", "review"),
                                                                      words("r", "reject", "waiting")]))
    request = SendRequest(("13900139000",), "3 messages are waiting for review")
    [notice] = validator.prepare(Account("review_notice"), [request], NOW, interface="review_notice")
    assert notice.hold is None
    assert refused(validator, SendRequest(("13800138000",), "x"), interface="review_notice")
    dup = Duplicates(300.0)
    dup.record("review_notice", "review_notice", notice, None, NOW)
    assert dup.check("review_notice", "review_notice", [notice], [None], NOW + 1) == []


def test_every_problem_comes_at_once() -> None:
    """A bad number, a blacklisted one and a refused word are all listed in one answer."""
    validator = Validator(filters=Filters([opt_out({"13800138000"})], [words("w", "reject", "bad")]))
    problems = refused(validator, SendRequest(("123", "13800138000"), "bad news"))
    assert [(p.where, p.code) for p in problems] == [
        ("[0].to[0]", "wrong_length"), ("[0].to[1]", "blacklisted"), ("[0].text", "sensitive_word")]


# --- segments -------------------------------------------------------------------------------------------

def test_the_named_segments_are_mainland_prefixes_and_no_two_operators_share_one() -> None:
    seen: dict[str, str] = {}
    for operator, prefixes in OPERATORS.items():
        for p in prefixes:
            assert p.startswith("1") and p.isdigit() and seen.setdefault(p, operator) == operator, p
    matcher = Validator()
    for p in OPERATORS["china_mobile"] + OPERATORS["china_unicom"] + ("133", "153", "180", "192"):
        number = (p + "0" * 11)[:11]
        assert matcher.prepare(ME, [SendRequest((number,), "x")], NOW)[0].to == (number,)
    assert {p[:3] for p in OPERATORS["china_mobile"]} <= {p[:3] for p in MAINLAND_PREFIXES}


def test_segment_rules_per_link_refuse_what_the_link_cannot_carry() -> None:
    """Two links: cmcc takes China Mobile numbers and 1703*; unicom takes China Unicom ones. Each number routed
    to a link its rule does not allow is refused naming the rule; links without a rule take anything."""
    router = Router([("unicom", ["130", "131", "132", "155", "156", "186", "1703"]), ("telecom", ["133"])], "cmcc")
    filters = Filters(segments=[segment_rule("cm-only", "cmcc", ["china_mobile"], ["1703"]),
                                segment_rule("cu-only", "unicom", ["china_unicom"], [])], router=router)
    validator = Validator(filters=filters)
    ok = ["13800138000", "13000130000", "13300133000", "18600186000", "19800198000"]
    assert validator.prepare(ME, [SendRequest(tuple(ok), "x")], NOW)[0].to == tuple(ok)
    problems = refused(validator, SendRequest(("13800138000", "17700177000", "17030000000"), "x"))
    assert [(p.where, p.code, p.rule if isinstance(p, FilterProblem) else "") for p in problems] == [
        ("[0].to[1]", "segment_not_allowed", "segments:cm-only"), ("[0].to[2]", "segment_not_allowed",
                                                                    "segments:cu-only")]
    assert problems[0].message == (
        "17700177000 goes to carrier link 'cmcc', which segment rule 'cm-only' allows only China Mobile numbers, "
        "1703*: the link cannot carry it; ask the administrator to route this segment to another link")


# --- duplicates ----------------------------------------------------------------------------------------

def prepared(*to: str, text: str = "您的验证码是1234", ref: str | None = None) -> PreparedMessage:
    return PreparedMessage(tuple(to), (), text, 1, 8, 5, None, "", ref, True)


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_the_same_text_to_the_same_number_within_the_window_is_refused() -> None:
    """Only what was recorded (committed) counts; after the window, or with another text, it goes again."""
    clock, dup = FakeClock(), Duplicates(300.0)
    first = prepared("13800138000", "13900139000")
    assert dup.check("erp", "rest", [first], [None], clock.now) == []
    assert dup.check("erp", "rest", [first], [None], clock.now) == []  # checked, not committed: not remembered
    dup.record("erp", "rest", first, None, clock.now)
    [problem] = dup.check("erp", "rest", [prepared("13700137000", "13900139000")], [None], clock.advance(60))
    assert (problem.where, problem.code, problem.rule) == ("[0].to[1]", "duplicate", "duplicates")
    assert problem.message.startswith("13900139000: duplicate, the same text was accepted for it 60 s ago (at ")
    assert problem.message.endswith("the duplicates rule refuses the same text to the same number within 300 s")
    assert dup.check("erp", "rest", [prepared("13900139000", text="another")], [None], clock.now) == []
    assert dup.check("crm", "rest", [first], [None], clock.now) == []  # another account
    assert dup.check("erp", "rest", [first], [None], clock.advance(240.5)) == []
    assert len(dup) == 0  # expired and forgotten


def test_an_idempotent_repeat_is_not_a_duplicate() -> None:
    """The same ref (or the same legacy row) again is answered by the store with its message, not refused."""
    dup = Duplicates(300.0)
    dup.record("erp", "rest", prepared("13800138000", ref="o-1"), ("ref", "o-1"), NOW)
    assert dup.check("erp", "rest", [prepared("13800138000", ref="o-1")], [("ref", "o-1")], NOW + 1) == []
    assert dup.check("erp", "rest", [prepared("13800138000", ref="o-2")], [("ref", "o-2")], NOW + 1)
    dup.record("erp", "db:erp", prepared("13900139000"), ("row", "erp", "7"), NOW)
    assert dup.check("erp", "db:erp", [prepared("13900139000")], [("row", "erp", "7")], NOW + 1) == []
    assert dup.check("erp", "db:erp", [prepared("13900139000")], [("row", "erp", "8")], NOW + 1)


def test_a_later_message_of_the_same_request_is_a_duplicate_of_the_earlier() -> None:
    problems = Duplicates(60.0).check("erp", "rest", [prepared("13800138000"), prepared("13900139000", "13800138000")],
                                      [None, None], NOW)
    assert [(p.where, p.code) for p in problems] == [("[1].to[1]", "duplicate")]
    assert "an earlier message of this same request ([0])" in problems[0].message


def test_duplicates_apply_to_their_accounts_and_interfaces_only() -> None:
    dup = Duplicates(60.0, accounts=["erp"], interfaces=["db"])
    for account, interface in (("erp", "db:erp"), ("erp", "rest"), ("crm", "db:crm")):
        dup.record(account, interface, prepared("13800138000"), None, NOW)
    assert dup.check("erp", "db:erp", [prepared("13800138000")], [None], NOW)
    assert dup.check("erp", "rest", [prepared("13800138000")], [None], NOW) == []
    assert dup.check("crm", "db:crm", [prepared("13800138000")], [None], NOW) == []


def test_memory_is_bounded_oldest_first() -> None:
    dup = Duplicates(3600.0, max_entries=1000)
    full = [dup.record("erp", "rest", prepared(f"138{i:08d}"), None, NOW + i / 100) for i in range(1500)]
    assert full.index(True) == 1000 and full.count(True) == 1  # the caller's alarm: once
    assert len(dup) == 1000 and dup.full
    assert dup.check("erp", "rest", [prepared("13800000000")], [None], NOW + 20) == []  # the oldest: forgotten
    assert dup.check("erp", "rest", [prepared("13800001499")], [None], NOW + 20)


@given(st.lists(st.tuples(st.sampled_from(["13800138000", "13900139000", "13700137000"]),
                          st.sampled_from(["a", "b"]), st.floats(0, 50)), max_size=30), st.floats(1, 40))
def test_duplicates_match_a_naive_model(sends: list[tuple[str, str, float]], window: float) -> None:
    """In time order, a send is refused exactly when an accepted one had the same number and text within the
    window (strictly less than `window` seconds before)."""
    dup, accepted = Duplicates(window), list[tuple[str, str, float]]()
    now = NOW
    for number, text, gap in sends:
        now += gap
        expected = any(n == number and t == text and at > now - window for n, t, at in accepted)
        found = dup.check("erp", "rest", [prepared(number, text=text)], [None], now)
        assert bool(found) == expected
        if not found:
            dup.record("erp", "rest", prepared(number, text=text), None, now)
            accepted.append((number, text, now))


# --- the filters: section ---------------------------------------------------------------------------------

KEY_HASH = "a" * 64
BASE = f"""\
accounts:
  - name: app
    api_key_sha256: {KEY_HASH}
carriers:
  - name: cmcc
    host: 10.0.0.1
    port: 7890
    sp_id: "901234"
    secret: s3cret
    service_code: "1069000100"
"""


def problems_of(tmp_path: pathlib.Path, text: str) -> list[str]:
    path = tmp_path / "smsgw.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return [p.replace(f"{path}:", "LINE ") for p in check_config(str(path), {})]


def test_the_section_builds_every_filter(tmp_path: pathlib.Path) -> None:
    optout = tmp_path / "optout.txt"
    optout.write_text("13800138000\n1390013*\n", encoding="utf-8")
    text = BASE + textwrap.dedent(f"""\
        review: {{reviewers: [{{name: zhang}}]}}
        filters:
          blacklist:
            - {{name: opt-out, numbers: [13700137000, "1360013*"], file: {optout}}}
          sensitive_words:
            - {{name: gambling, action: reject, words: [赌博]}}
            - {{name: loans, action: review, words: [贷款], time_limit: 60}}
          duplicates: {{window: 300}}
          segments:
            - {{name: cm-only, link: cmcc, operators: [china_mobile], prefixes: ["1703"]}}
        """)
    path = tmp_path / "smsgw.yaml"
    path.write_text(text, encoding="utf-8")
    config = load_config(str(path), {})
    filters = config.validator().filters
    assert filters is not None and filters.duplicates is not None and filters.duplicates.window == 300.0
    [blacklist] = filters.blacklists
    assert blacklist.numbers == {"13700137000", "13800138000"} and blacklist.prefixes == {"1360013", "1390013"}
    assert [(w.name, w.action, w.time_limit) for w in filters.words] == [("gambling", "reject", None),
                                                                         ("loans", "review", 60.0)]
    assert filters.segments["cmcc"].allows("17030000000") and not filters.segments["cmcc"].allows("13000000000")
    assert [f[:2] for f in filters.files()] == [("blacklist", "opt-out")]
    assert load_config(str(tmp_path / "smsgw.yaml"), {}).validator().filters is not None
    empty = tmp_path / "empty.yaml"
    empty.write_text(BASE, encoding="utf-8")
    assert load_config(str(empty), {}).validator().filters is None  # nothing configured: nothing checked


def test_section_problems_have_their_lines(tmp_path: pathlib.Path) -> None:
    """Type problems first (the meaning is checked once the types are right), each at its line."""
    text = BASE + textwrap.dedent(f"""\
        filters:
          blacklist:
            - {{name: a, numbers: ["13800138000", "abc"]}}
            - {{name: b}}
            - {{name: c, file: {tmp_path / "missing.txt"}}}
          sensitive_words:
            - {{name: v, action: reject, words: [y], time_limit: 5}}
          duplicates: {{window: -1, interfaces: [fax]}}
          segments:
            - {{name: t, link: cmcc, operators: [chinamobile]}}
          reload_intervall: 3
        """)
    found = problems_of(tmp_path, text)
    assert [p.split(": ")[0:2] for p in found] == [
        ["LINE 13", "filters.blacklist[0].numbers[1]"], ["LINE 14", "filters.blacklist[1]"],
        ["LINE 15", "filters.blacklist[2].file"], ["LINE 17", "filters.sensitive_words[0]"],
        ["LINE 18", "filters.duplicates.window"], ["LINE 18", "filters.duplicates.interfaces[0]"],
        ["LINE 20", "filters.segments[0].operators[0]"], ["LINE 21", "filters.reload_intervall"]]
    assert "'abc' contains 'a'" in found[0] and "neither numbers nor a file" in found[1]
    assert "missing.txt' does not exist or is not a file" in found[2] and "on a rule that refuses" in found[3]


def test_section_meaning_problems_have_their_lines(tmp_path: pathlib.Path) -> None:
    text = BASE + textwrap.dedent("""\
        filters:
          sensitive_words:
            - {name: w, action: review, words: [x], accounts: [nobody]}
          duplicates: {window: 60, interfaces: ["db:nowhere"]}
          segments:
            - {name: s, link: cu, operators: [china_mobile]}
        """)
    found = problems_of(tmp_path, text)
    assert [p.split(": ")[0:2] for p in found] == [
        ["LINE 13", "filters.sensitive_words[0].accounts[0]"], ["LINE 13", "filters.sensitive_words[0].action"],
        ["LINE 14", "filters.duplicates.interfaces[0]"], ["LINE 16", "filters.segments[0].link"]]
    assert "no account is named 'nobody'" in found[0] and "no reviewer is configured" in found[1]
    assert "no db source is named 'nowhere'" in found[2]
    assert "no carrier is named 'cu'" in found[3] and "fix: use one of the carriers: cmcc" in found[3]


def test_a_broken_list_file_is_a_problem_naming_the_file_and_its_line(tmp_path: pathlib.Path) -> None:
    words_file = tmp_path / "words.txt"
    words_file.write_bytes(b"ok\n\xff\n")
    optout = tmp_path / "optout.txt"
    optout.write_text("13800138000\n\n138 0013 800\n", encoding="utf-8")
    text = BASE + textwrap.dedent(f"""\
        filters:
          blacklist:
            - name: opt-out
              file: {optout}
          sensitive_words: [{{name: w, action: reject, words_file: {words_file}}}]
        """)
    found = problems_of(tmp_path, text)
    assert found == [
        f"LINE 14: filters.blacklist[0].file: {optout}:3: not a number: '138 0013 800' has 10 digits: a mainland "
        "mobile number has 11, starting with 1 (e.g. 13800138000 or +86 138 0013 8000) — fix: write a number "
        "(13800138000, +44 7700 900123) or a prefix ending in * (1380013*, +44*), one per line; # starts a comment",
        f"LINE 15: filters.sensitive_words[0].words_file: {words_file}:2: is not UTF-8 text: save the file as UTF-8 "
        "— fix: write one word or phrase per line (at most 100 characters), UTF-8; # starts a comment"]


def test_segment_rules_are_one_per_link(tmp_path: pathlib.Path) -> None:
    text = BASE + "filters:\n  segments:\n    - {name: a, link: cmcc, prefixes: ['138']}\n" \
                  "    - {name: b, link: cmcc, operators: [china_mobile]}\n"
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith("LINE 14: filters.segments[1].link: filters.segments[0] is for the same link")


def test_the_example_documents_every_key_of_each_rule_at_its_default() -> None:
    """The commented entries under filters: in conf/smsgw.yaml list every key of each rule, at its default."""
    text = (ROOT / "conf/smsgw.yaml").read_text(encoding="utf-8").split("\nfilters:\n", 1)[1]
    blocks: dict[str, type[BaseModel]] = {"blacklist": BlacklistConfig, "sensitive_words": SensitiveWordsConfig,
                                          "segments": SegmentRuleConfig}
    for key, model in blocks.items():
        block = text.split(f"\n  {key}: []", 1)[0].rsplit("every key with its default:\n", 1)[1]
        [entry] = yaml.safe_load("\n".join(line.strip().removeprefix("#") for line in block.splitlines()))
        _assert_defaults(key, entry, model)


def _assert_defaults(where: str, written: dict[str, Any], model: type[BaseModel]) -> None:
    assert set(written) == set(model.model_fields), where
    for name, info in model.model_fields.items():
        if not info.is_required():
            default = info.get_default(call_default_factory=True)
            assert written[name] == (list(default) if isinstance(default, tuple) else default), f"{where}.{name}"


# --- on every path of a real daemon -----------------------------------------------------------------------

OPTED_OUT = "13800138000"


class FilterDaemonCase(DaemonCase):
    tmp_prefix = "smsgw-filters-"

    def optout(self, text: str = f"{OPTED_OUT}\n") -> pathlib.Path:
        path = self.tmp / "optout.txt"
        path.write_text(text, encoding="utf-8")
        return path

    def settings(self, **extra: Any) -> dict[str, Any]:
        """A filters: section with the opt-out file (read every 0.1 s) and `extra` keys."""
        return {"reload_interval": 0.1, "blacklist": [{"name": "opt-out", "file": str(self.optout())}], **extra}

    async def started(self, overrides: dict[str, Any] | None = None, **filters: Any) -> tuple[Any, Any]:
        config = make_config(self.tmp, {"filters": self.settings(**filters), **(overrides or {})})
        return await self.daemon(config), config


def details(body: Any) -> list[tuple[str, str]]:
    return [(d["where"], d["code"]) for d in body["error"]["details"]]


class RestTests(FilterDaemonCase):
    async def test_a_listed_number_is_refused_until_the_file_changes(self) -> None:
        """The file is read again once it changes, without a restart: refused, then allowed; a broken file keeps
        the list loaded before with one alarm naming the file and line; SIGHUP's reload reads it at once."""
        with capture_logs() as logs:
            daemon, config = await self.started()
            api = ApiClient.for_daemon(daemon)
            status, body = await api.post("/api/v1/messages", {"to": ["13900139000", OPTED_OUT], "text": "hi"})
            assert status == 422 and details(body) == [("to[1]", "blacklisted")]
            assert body["error"]["details"][0]["message"] == (
                f"{OPTED_OUT} is on blacklist 'opt-out' ({self.tmp / 'optout.txt'}): messages to it are refused; "
                "remove it from the recipients")
            assert count(config, "messages") == 0  # the whole request is refused, as for a bad number

            self.optout("13900139000\n")
            await wait_for(lambda: any(e["event"] == "filter_reloaded" for e in logs), what="the reload")
            await api.send({"to": OPTED_OUT, "text": "hi"})
            status, body = await api.post("/api/v1/messages", {"to": "13900139000", "text": "hi"})
            assert status == 422 and details(body) == [("to[0]", "blacklisted")]

            self.optout("# nobody\n13900139000\n1370013x\n")
            await wait_for(lambda: any(e.get("alarm") == "filter_file_unusable" for e in logs), what="the alarm")
            await spin(0.3)  # more looks at the unchanged broken file: no more alarms
            status, _ = await api.post("/api/v1/messages", {"to": "13900139000", "text": "again"})
            assert status == 422  # the list loaded before stays

            (self.tmp / "optout.txt").write_text("13700137000\n", encoding="utf-8")
            daemon.reload_filters()
            await wait_for(lambda: len([e for e in logs if e["event"] == "filter_reloaded"]) == 2, what="reload")
            await api.send({"to": "13900139000", "text": "again"})
        reloaded = [e for e in logs if e["event"] == "filter_reloaded"]
        assert {k: reloaded[0][k] for k in ("filter", "name", "file", "numbers", "prefixes")} == {
            "filter": "blacklist", "name": "opt-out", "file": str(self.tmp / "optout.txt"), "numbers": 1,
            "prefixes": 0}
        [alarm] = [e for e in logs if e.get("alarm") == "filter_file_unusable"]
        assert (alarm["file"], alarm["line"], alarm["name"]) == (str(self.tmp / "optout.txt"), 3, "opt-out")
        assert "'1370013x' contains 'x'" in alarm["error"] and "stays in use" in alarm["action"]
        filtered = [e for e in logs if e["event"] == "message_filtered"]
        assert {k: filtered[0][k] for k in ("rule", "code", "count", "where", "interface")} == {
            "rule": "blacklist:opt-out", "code": "blacklisted", "count": 1, "where": ["[0].to[1]"], "interface": "rest"}

    async def test_duplicates_are_refused_but_a_repeated_ref_is_answered(self) -> None:
        """The same text to the same number again is refused naming the rule; the same ref again gets the
        stored message; what was refused (here by the rate limit) was never committed, so it is no duplicate."""
        daemon, config = await self.started(
            {"accounts": [account("demo", "demo-key", rate_limit={"per_second": 1.0, "burst": 1})]},
            duplicates={"window": 300})
        api = ApiClient.for_daemon(daemon)
        [first] = await api.send({"to": "13900139000", "text": "验证码 1234", "ref": "o-1"})
        status, body = await api.post("/api/v1/messages", {"to": "13900139000", "text": "验证码 1234", "ref": "o-2"})
        assert status == 422 and details(body) == [("to[0]", "duplicate")]
        assert "within 300 s" in body["error"]["details"][0]["message"]
        await spin(1.1)
        status, body = await api.post("/api/v1/messages", {"to": "13900139000", "text": "验证码 1234", "ref": "o-1"})
        assert status == 202 and body["messages"][0]["id"] == first and body["messages"][0]["repeated"]
        await spin(1.1)
        await api.send({"to": "13700137000", "text": "x"})
        status, _ = await api.post("/api/v1/messages", {"to": "13600136000", "text": "y"})
        assert status == 429  # the rate limit: nothing stored
        await spin(1.1)
        await api.send({"to": "13600136000", "text": "y"})

    async def test_a_review_word_holds_the_message_whatever_the_review_rules(self) -> None:
        """A message with a review word is accepted held: pending_review, recipients held, rule filter:<name>."""
        daemon, config = await self.started(
            {"review": {"rules": [{"name": "all-pass", "action": "pass"}], "reviewers": [{"name": "zhang"}]}},
            sensitive_words=[{"name": "loans", "action": "review", "words": ["贷款"]}])
        api = ApiClient.for_daemon(daemon)
        status, body = await api.post("/api/v1/messages", {"to": ["13900139000", "13700137000"], "text": "低息贷款"})
        assert status == 202 and body["messages"][0]["held"] is True
        assert rows(config, "SELECT state, review, review_rule FROM messages") == [
            ("pending_review", "pending", "filter:loans")]
        assert recipient_states(config) == {"held": 2}
        await api.send({"to": "13900139000", "text": "普通通知"})
        assert rows(config, "SELECT review_rule FROM messages WHERE content = '普通通知'") == [("all-pass",)]


class InterfaceTests(FilterDaemonCase):
    async def test_url_interface_refuses_a_listed_number(self) -> None:
        daemon, config = await self.started({"url_interface": {"enabled": True, "port": free_port()}})
        [url] = [a for a in daemon.adapters if isinstance(a, UrlInterface)]
        query = urllib.parse.urlencode({"username": "demo", "password": "demo-key", "to": OPTED_OUT, "text": "hi"})
        status, _, body = await deferToThread(_http, f"http://{url.address()}/cgi-bin/sendsms?{query}", None, {},
                                              None)
        assert status == 400 and b"rejected: to[0]: 13800138000 is on blacklist 'opt-out'" in body, body
        assert count(config, "messages") == 0

    async def test_soap_refuses_a_sensitive_word_naming_the_rule(self) -> None:
        daemon, config = await self.started({"soap_interface": {"enabled": True, "port": free_port()}},
                                            sensitive_words=[{"name": "gambling", "action": "reject",
                                                              "words": ["赌博"]}])
        [soap] = [a for a in daemon.adapters if isinstance(a, SoapInterface)]
        address = soap.address()
        assert address is not None
        zeep = await Zeep.connect(address)
        fault = await zeep.fault("sendSms", mobile=["13900139000"], content="线上赌博")
        assert fault.code == "soap:Client" and [code for _, code in soap_problems(fault)] == ["sensitive_word"]
        assert "sensitive-word rule 'gambling'" in fault.message
        assert count(config, "messages") == 0

    async def test_an_auto_reply_to_a_listed_number_is_not_sent(self) -> None:
        """MO auto-replies are checked too: a number that opted out gets no reply (one auto_reply_refused line)."""
        with capture_logs() as logs:
            daemon, config = await self.started({"mo": {"auto_replies": [{"keyword": "TD", "text": "您已退订。"}]}})
            link = config.carriers[0]
            for src in (OPTED_OUT, "13900139000"):
                await daemon.gateway.on_mo(MoMessage(link.name, src, link.service_code, "TD", "", "l1"))
            await wait_for(lambda: count(config, "messages") == 1, what="one auto-reply")
            await spin(0.2)
        assert rows(config, "SELECT r.phone FROM recipients r") == [("13900139000",)]
        [refusal] = [e for e in logs if e["event"] == "auto_reply_refused"]
        assert refusal["to"] == OPTED_OUT and "blacklist 'opt-out'" in refusal["reason"]
        assert not [e for e in logs if e["event"] == "auto_reply_failed"]


class FileAndDbTests(FilterDaemonCase):
    async def test_a_watched_folder_marks_refused_rows_invalid_and_sends_the_rest(self) -> None:
        """A listed number is refused in the plan, a duplicate of a message sent before by the gateway: both
        rows are invalid in the result file with the reason, the other row is sent."""
        folder = self.tmp / "inbox"
        folder.mkdir()
        daemon, config = await self.started({"file_import": {"inboxes": [
            {"dir": str(folder), "account": "demo", "poll_interval": 0.1}]}}, duplicates={"window": 300})
        await ApiClient.for_daemon(daemon).send({"to": "13700137000", "text": "c"})
        (folder / "batch.tmp").write_text(f"mobile,content\n13900139000,a\n{OPTED_OUT},b\n13700137000,c\n",
                                          encoding="utf-8")
        (folder / "batch.tmp").rename(folder / "batch.csv")
        await wait_for(lambda: (folder / "done" / "batch.csv.result.csv").exists(), what="the result file")
        lines = list(csv.reader((folder / "done" / "batch.csv.result.csv").read_text(
            encoding="utf-8-sig").splitlines()[1:]))
        assert [line[2] for line in lines] == ["accepted", "invalid", "invalid"]
        assert lines[1][3].startswith("blacklisted: 13800138000 is on blacklist 'opt-out'")
        assert lines[2][3].startswith("duplicate: 13700137000: duplicate, the same text was accepted for it")
        assert sorted(rows(config, "SELECT content, interface FROM messages")) == [("a", "file"), ("c", "rest")]

    async def test_smsgw_import_previews_a_listed_row_as_invalid(self) -> None:
        """The command plans with the daemon's filters: the preview and result file name the list."""
        path = write_config(self.tmp, {"filters": self.settings()})
        config = load_config(str(path), {})
        await self.daemon(config)
        data = self.tmp / "n.csv"
        data.write_text(f"mobile,content\n13900139000,a\n{OPTED_OUT},b\n", encoding="utf-8")
        done = await deferToThread(smsgw, "import", str(data), "-c", str(path), "--key", DEMO_KEY, "--yes")
        assert done.returncode == 0, done.stderr
        assert "1 valid, 1 invalid" in done.stdout and "not sent, by reason: blacklisted 1" in done.stdout
        assert f"{OPTED_OUT:<14} blacklisted: {OPTED_OUT} is on blacklist 'opt-out'" in done.stdout
        assert rows(config, "SELECT content, interface FROM messages") == [("a", "file")]

    async def test_legacy_rows_fail_one_by_one_with_the_reason_and_polling_goes_on(self) -> None:
        """A listed number, a duplicate within one poll and a duplicate of a committed row are each written back
        rejected with the reason; the other rows are accepted, a later row too, with no alarm."""
        url = f"sqlite:///{self.tmp}/legacy.db"
        engine = create_engine(url)
        self.addCleanup(engine.dispose)
        db_interface.create(engine)
        with engine.begin() as conn:
            conn.execute(insert(db_interface.outbox), [
                {"mobiles": OPTED_OUT, "content": "a"}, {"mobiles": "13900139000", "content": "b"},
                {"mobiles": "13900139000", "content": "b"}, {"mobiles": "13700137000", "content": "c"}])

        def outcome() -> list[tuple[int, str, str | None]]:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text("SELECT id, state, error FROM sms_outbox ORDER BY id"))]
        with capture_logs() as logs:
            _, config = await self.started({"db_sources": [{"name": "erp", "url": url, "poll_interval": 0.1}]},
                                           duplicates={"window": 300})
            await wait_for(lambda: all(state != "new" for _, state, _ in outcome()), what="every row taken")
            with engine.begin() as conn:
                conn.execute(insert(db_interface.outbox), [{"mobiles": "13900139000", "content": "b"},
                                                           {"mobiles": "13600136000", "content": "d"}])
            await wait_for(lambda: all(state != "new" for _, state, _ in outcome()), what="the later rows taken")
        states = outcome()
        assert [(i, state) for i, state, _ in states] == [
            (1, "rejected"), (2, "accepted"), (3, "rejected"), (4, "accepted"), (5, "rejected"), (6, "accepted")]
        assert f"{OPTED_OUT} is on blacklist 'opt-out'" in str(states[0][2])
        assert "an earlier message of this same request" in str(states[2][2])
        assert "the same text was accepted for it" in str(states[4][2])
        assert sorted(rows(config, "SELECT content, interface FROM messages")) == [
            ("b", "db:erp"), ("c", "db:erp"), ("d", "db:erp")]
        assert not [e for e in logs if e["event"] == "alarm"]
        assert len([e for e in logs if e["event"] == "db_row_rejected"]) == 3
