"""Review rules: first match wins, conditions combine, word lists, and the `review:` section's errors."""

from __future__ import annotations

import pathlib
import re
import textwrap

from hypothesis import given
from hypothesis import strategies as st

from smsgw.config import check_config, load_config
from smsgw.model import Account
from smsgw.review import ReviewPolicy, ReviewRule, WordList

NOW = 1_800_000_000.0
A = Account("a")
OTP = Account("otp")
WORDS = WordList("sensitive", ["投资理财", "Casino", " ", ""])


def decide(policy: ReviewPolicy, account: Account = A, interface: str = "rest", text: str = "您好",
           recipients: int = 1, pre_approved: bool = False) -> tuple[bool, str | None]:
    d = policy.decide(account, interface, text, recipients, pre_approved, NOW)
    return d.held, d.rule


POLICY = ReviewPolicy((
    ReviewRule("otp", "pass", accounts=("otp",)),
    ReviewRule("erp", "pass", interfaces=("db:erp",)),
    ReviewRule("imports", "review", interfaces=("file", "db"), time_limit=60, on_expiry="reject"),
    ReviewRule("templates-ok", "pass", pre_approved=True),
    ReviewRule("words", "review", words=WORDS),
    ReviewRule("mass", "review", min_recipients=100),
))


def test_first_matching_rule_decides() -> None:
    """Rules are tried in order; the first whose conditions all match decides; nothing matched: straight on."""
    assert decide(POLICY, OTP, "file", "投资理财", 1000) == (False, "otp")
    assert decide(POLICY, A, "db:erp", recipients=1000) == (False, "erp")
    assert decide(POLICY, A, "db:hr") == (True, "imports")  # "db" names every source
    assert decide(POLICY, A, "file") == (True, "imports")
    assert decide(POLICY, A, "rest", "现在 CASINO 开业") == (True, "words")  # case-insensitive
    assert decide(POLICY, A, "rest", "投资理财", pre_approved=True) == (False, "templates-ok")
    assert decide(POLICY, A, "rest", recipients=99) == (False, None)
    assert decide(POLICY, A, "rest", recipients=100) == (True, "mass")


def test_time_limit_and_expiry_are_recorded() -> None:
    d = POLICY.decide(A, "file", "x", 1, False, NOW)
    assert (d.held, d.deadline, d.on_expiry, d.review) == (True, NOW + 60, "reject", "pending")
    assert POLICY.decide(A, "rest", "x", 1, False, NOW).review == "passed"


def test_word_rules_skip_pre_approved_templates() -> None:
    """A pre-approved template's text was reviewed: a word rule does not hold what it renders."""
    policy = ReviewPolicy((ReviewRule("words", "review", words=WORDS),))
    assert decide(policy, text="投资理财", pre_approved=True) == (False, None)
    assert decide(policy, text="投资理财") == (True, "words")


def test_account_needs_review_holds_what_no_rule_decides() -> None:
    policy = ReviewPolicy((ReviewRule("otp", "pass", accounts=("strict",), interfaces=("rest",)),),
                          account_time_limit=30, account_on_expiry="approve")
    strict = Account("strict", needs_review=True)
    assert decide(policy, strict, "rest") == (False, "otp")
    d = policy.decide(strict, "url", "x", 1, False, NOW)
    assert (d.held, d.rule, d.deadline, d.on_expiry) == (True, "account.needs_review", NOW + 30, "approve")


def test_always_and_never_rules_and_exempt_notices() -> None:
    """A rule without conditions matches everything; the gateway's own review notices are never held."""
    always = ReviewPolicy((ReviewRule("all", "review"),))
    assert decide(always) == (True, "all")
    assert decide(always, interface="review_notice") == (False, None)
    assert decide(ReviewPolicy((ReviewRule("none", "pass"), ReviewRule("all", "review")))) == (False, "none")


@given(st.lists(st.text(max_size=8), max_size=20), st.text(max_size=200))
def test_word_list_finds_exactly_the_listed_words(words: list[str], text: str) -> None:
    """Whatever the words (regex characters, empty, any script), find returns a listed word in the text or None."""
    wl = WordList("w", words)
    found = wl.find(text)
    listed = {w.strip().casefold() for w in words if w.strip()}
    if found is None:
        assert not any(w in text.casefold() for w in listed)
    else:
        assert found in listed and found in text.casefold()


def test_word_list_reads_a_file_with_comments(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("\ufeff# 敏感词\n赌博\n\n  发票  \n", encoding="utf-8")
    assert set(WordList.read("f", str(path)).words) == {"赌博", "发票"}


# --- configuration ----------------------------------------------------------------------------

BASE = """\
accounts:
  - name: app
    api_key_sha256: {key}
    permissions: [review]
carriers:
  - name: c1
    host: 10.0.0.1
    port: 7890
    sp_id: "901234"
    secret: s3cret
    service_code: "1069000100"
""".format(key="a" * 64)


def write(tmp_path: pathlib.Path, extra: str) -> str:
    path = tmp_path / "smsgw.yaml"
    path.write_text(BASE + textwrap.dedent(extra), encoding="utf-8")
    return str(path)


def test_review_section_builds_the_policy(tmp_path: pathlib.Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("赌博\n", encoding="utf-8")
    config = load_config(write(tmp_path, f"""\
        review:
          rules:
            - {{name: otp, action: pass, accounts: [app]}}
            - {{name: words, action: review, words: [发票], words_file: {words}, time_limit: 600, on_expiry: reject}}
          reviewers:
            - {{name: li, phones: [13800138000], accounts: [app]}}
        """), {})
    policy = config.review.policy()
    assert [r.name for r in policy.rules] == ["otp", "words"]
    assert policy.rules[1].words is not None and set(policy.rules[1].words.words) == {"赌博", "发票"}
    assert config.review.reviewers[0].phones == ("13800138000",)


def test_review_section_errors_name_the_line_and_the_fix(tmp_path: pathlib.Path) -> None:
    found = check_config(write(tmp_path, """\
        review:
          rules:
            - {name: a, action: hold}
            - {name: b, action: review, interfaces: [fax]}
            - {name: c, action: review}
            - {name: d, action: pass, time_limit: 60}
            - {name: e, action: review, words_file: /nonexistent/words.txt}
          reviewers:
            - {name: li, phones: ["12345"]}
        """), {})
    text = "\n".join(found)
    assert re.search(r":14: review\.rules\[0\]\.action: .*'review' or 'pass'", text), text
    assert re.search(r":15: review\.rules\[1\]\.interfaces\[0\]: unknown interface 'fax' — fix: write rest, url", text)
    assert re.search(r":17: review\.rules\[3\]: time_limit is set on a rule that passes messages — fix: ", text)
    assert re.search(r":18: review\.rules\[4\]: words_file '/nonexistent/words.txt' does not exist", text)
    assert re.search(r":20: review\.reviewers\[0\]\.phones\[0\]: '12345' is not a mainland mobile number", text)
    assert len(found) == 5


def test_review_names_must_exist(tmp_path: pathlib.Path) -> None:
    """Accounts and db sources named by rules and reviewers are configured ones."""
    found = check_config(write(tmp_path, """\
        review:
          rules:
            - {name: c, action: review, accounts: [nobody], interfaces: ["db:erp"]}
          reviewers:
            - {name: li, accounts: [ghost]}
        """), {})
    text = "\n".join(found)
    assert re.search(r":14: review\.rules\[0\]\.accounts\[0\]: no account is named 'nobody'", text), text
    assert re.search(r":14: review\.rules\[0\]\.interfaces\[0\]: no db source is named 'erp'", text), text
    assert re.search(r":16: review\.reviewers\[0\]\.accounts\[0\]: no account is named 'ghost'", text), text


def test_held_messages_need_a_reviewer(tmp_path: pathlib.Path) -> None:
    found = check_config(write(tmp_path, """\
        review:
          rules: [{name: all, action: review}]
        """), {})
    assert any("no reviewer is configured" in p and "review.reviewers" in p for p in found), found


def test_reviewer_accounts_need_the_review_permission(tmp_path: pathlib.Path) -> None:
    text = BASE.replace("    permissions: [review]\n", "") + textwrap.dedent("""\
        review:
          reviewers: [{name: li, accounts: [app]}]
        """)
    path = tmp_path / "smsgw.yaml"
    path.write_text(text, encoding="utf-8")
    found = check_config(str(path), {})
    assert any("account 'app' lacks the review permission" in p for p in found), found
