"""Tests for request validation, number normalisation and routing (smsgw.validation)."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsgw.model import Account, Problem, RequestRejected, SendRequest
from smsgw.protocol.cmpp._text import (
    MSG_FMT_ASCII,
    MSG_FMT_GBK,
    MSG_FMT_UCS2,
    choose_msg_fmt,
    split_text,
)
from smsgw.validation import (
    MAINLAND_PREFIXES,
    NumberError,
    PreparedMessage,
    Router,
    Validator,
    count_segments,
    normalise_number,
)

NOW = 1_750_000_000.0
DAY = 86400.0
ACCOUNT = Account("crm", default_ext="77", max_priority=5)
MAINLAND = re.compile(r"1\d{10}")
OTHER = re.compile(r"\+[1-9]\d{6,14}")


def _rejected(requests: list[SendRequest], validator: Validator | None = None) -> list[tuple[str, str]]:
    with pytest.raises(RequestRejected) as info:
        (validator or Validator()).prepare(ACCOUNT, requests, NOW)
    return [(p.where, p.code) for p in info.value.problems]


def _prepare_one(request: SendRequest, validator: Validator | None = None) -> PreparedMessage:
    [prepared] = (validator or Validator()).prepare(ACCOUNT, [request], NOW)
    return prepared


# --- normalise_number --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "13800138000",
        "+8613800138000",
        "+86 138 0013 8000",
        "8613800138000",
        "008613800138000",
        "0086-138-0013-8000",
        "138-0013-8000",
        "138.0013.8000",
        "(+86) 138 0013 8000",
        "+86(138)00138000",
        " 13800138000\t",
        "１３８００１３８０００",
        "＋８６ １３８ ００１３ ８０００",
        "138\u30000013\u30008000",
        "\uff08+86\uff09138\uff0d0013\uff0d8000",
    ],
)
def test_normalise_accepts_common_spellings(raw: str) -> None:
    """Country codes, separators and full-width digits all normalise to the 11 digits."""
    assert normalise_number(raw) == "13800138000"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "empty"),
        (" - ( ) ", "empty"),
        ("+", "wrong_length"),
        ("1380013800a", "bad_characters"),
        ("138 0013 8000 ext 1", "bad_characters"),
        ("86+13800138000", "bad_characters"),
        ("١٣٨٠٠١٣٨٠٠٠", "bad_characters"),  # Arabic-Indic digits are not read as digits
        ("1380013800", "wrong_length"),
        ("138001380000", "wrong_length"),
        ("+861380013800", "wrong_length"),
        ("0086138001380001", "wrong_length"),
        ("12345678901", "unknown_segment"),
        ("10690001000", "unknown_segment"),
        ("14012345678", "unknown_segment"),
        ("17401234567", "unknown_segment"),  # satellite
        ("13491234567", "unknown_segment"),  # satellite, though 134 otherwise is mobile
        ("+447700900123", "not_mainland"),
        ("447700900123", "not_mainland"),
        ("01065529988", "not_mainland"),
        ("+86 10 6552 9988", "not_mainland"),  # a Beijing landline: area code 10, not a mobile
        ("86138001380", "wrong_length"),  # 86 then too few digits for a mobile
    ],
)
def test_normalise_refuses_with_code(raw: str, code: str) -> None:
    """Each kind of bad number raises NumberError with its own code."""
    with pytest.raises(NumberError) as info:
        normalise_number(raw)
    assert info.value.code == code


def test_number_error_quotes_the_number_and_says_how_to_fix() -> None:
    """The message quotes what the caller wrote and names the expected form."""
    with pytest.raises(NumberError) as info:
        normalise_number("138-0013-800")
    assert str(info.value) == (
        "'138-0013-800' has 10 digits: a mainland mobile number has 11, starting with 1"
        " (e.g. 13800138000 or +86 138 0013 8000)"
    )
    assert isinstance(info.value, ValueError)


def test_eighty_six_is_not_stripped_from_a_number_that_starts_with_it() -> None:
    """A bare 86 is read as the country code only when 11 mobile digits follow."""
    assert normalise_number("8613800138000") == "13800138000"
    with pytest.raises(NumberError) as info:
        normalise_number("86138001380")
    assert info.value.code == "wrong_length"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+44 7700 900123", "+447700900123"),
        ("0044 7700 900123", "+447700900123"),
        ("447700900123", "+447700900123"),
        ("+86 10 6552 9988", "+861065529988"),
        ("+1 202 555 0123", "+12025550123"),
        ("+86 138 0013 8000", "13800138000"),
    ],
)
def test_allow_other_returns_international_form(raw: str, expected: str) -> None:
    """With allow_other, non-mainland numbers come back as + and their digits; mainland ones as 11 digits."""
    assert normalise_number(raw, allow_other=True) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("+0123456789", "bad_country_code"),
        ("+44 12", "wrong_length"),
        ("+44 1234 5678 9012 34", "wrong_length"),
        ("0755 1234 5678", "not_mainland"),
        ("12345678901", "unknown_segment"),
        ("+86 138 0013 800", "wrong_length"),
    ],
)
def test_allow_other_still_refuses_malformed_numbers(raw: str, code: str) -> None:
    """allow_other accepts well-formed international numbers only; mainland rules still apply."""
    with pytest.raises(NumberError) as info:
        normalise_number(raw, allow_other=True)
    assert info.value.code == code


def test_custom_prefixes_replace_the_builtin_list() -> None:
    """Operator prefixes (3 or 4 digits) replace the built-in segments."""
    prefixes = ["138", "1740"]
    assert normalise_number("17400123456", prefixes) == "17400123456"
    assert normalise_number("13800138000", prefixes) == "13800138000"
    with pytest.raises(NumberError) as info:
        normalise_number("13900139000", prefixes)
    assert info.value.code == "unknown_segment"


@pytest.mark.parametrize("prefixes", [[], ["13a"], ["238"], ["1" * 12], [""], "138"])
def test_bad_prefix_lists_raise_value_error(prefixes: list[str]) -> None:
    """A malformed prefix list is a configuration error naming validation.number_prefixes."""
    with pytest.raises(ValueError, match=r"validation\.number_prefixes"):
        normalise_number("13800138000", prefixes)


def test_builtin_prefixes_cover_the_documented_segments() -> None:
    """The built-in list holds the mobile segments and leaves IoT and satellite ones out."""
    mobile = ["130", "133", "145", "147", "149", "153", "162", "165", "166", "167", "170", "171", "172",
              "173", "175", "176", "177", "178", "180", "189", "190", "192", "196", "197", "199"]
    for segment in mobile:
        assert normalise_number(segment + "00001234") == segment + "00001234"
    for segment in ["140", "141", "144", "146", "148", "154", "174", "179", "194", "1349"]:
        with pytest.raises(NumberError):
            normalise_number((segment + "0000000000")[:11])
    assert len(set(MAINLAND_PREFIXES)) == len(MAINLAND_PREFIXES)


_PHONEISH = st.text(alphabet="0123456789+-() .０１８６＋\u3000x", max_size=24)


@given(st.one_of(st.text(max_size=40), _PHONEISH))
def test_normalise_returns_eleven_digits_or_raises_number_error(raw: str) -> None:
    """Any text normalises to 11 mainland digits or raises NumberError, never anything else."""
    try:
        number = normalise_number(raw)
    except NumberError as exc:
        assert exc.code in {"empty", "bad_characters", "wrong_length", "unknown_segment", "not_mainland"}
    else:
        assert MAINLAND.fullmatch(number)


@given(st.one_of(st.text(max_size=40), _PHONEISH), st.booleans())
def test_normalise_is_idempotent(raw: str, allow_other: bool) -> None:
    """Normalising a normalised number returns it unchanged."""
    try:
        number = normalise_number(raw, allow_other=allow_other)
    except NumberError:
        return
    assert MAINLAND.fullmatch(number) or (allow_other and OTHER.fullmatch(number))
    assert normalise_number(number, allow_other=allow_other) == number


@given(st.from_regex(r"1[3-9]\d{9}", fullmatch=True))
def test_fast_path_agrees_with_the_slow_path(number: str) -> None:
    """A clean number gets the same answer as the same number written with +86 and spaces."""
    spelled = f"+86 {number[:3]} {number[3:7]} {number[7:]}"
    try:
        expected = normalise_number(spelled)
    except NumberError as exc:
        with pytest.raises(NumberError) as info:
            normalise_number(number)
        assert info.value.code == exc.code
    else:
        assert normalise_number(number) == expected == number


# --- segments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments", "msg_fmt"),
    [
        ("a" * 140, 1, MSG_FMT_ASCII),
        ("a" * 141, 2, MSG_FMT_ASCII),
        ("中" * 70, 1, MSG_FMT_UCS2),
        ("中" * 71, 2, MSG_FMT_UCS2),
        ("中" * 134, 2, MSG_FMT_UCS2),
        ("中" * 135, 3, MSG_FMT_UCS2),
        ("😀" * 35, 1, MSG_FMT_UCS2),
        ("😀" * 36, 2, MSG_FMT_UCS2),
    ],
)
def test_count_segments_matches_the_splitter(text: str, segments: int, msg_fmt: int) -> None:
    """Segment counts equal what split_text produces for the chosen Msg_Fmt."""
    assert count_segments(text) == (segments, msg_fmt)
    assert len(split_text(text, msg_fmt)) == segments


def test_count_segments_prefers_gbk_when_asked() -> None:
    """prefer_gbk picks GBK for Chinese text, and UCS2 when GBK cannot carry it."""
    assert count_segments("您好", prefer_gbk=True) == (1, MSG_FMT_GBK)
    assert count_segments("您好😀", prefer_gbk=True) == (1, MSG_FMT_UCS2)
    assert count_segments("您好") == (1, MSG_FMT_UCS2)


def test_count_segments_with_sixteen_bit_references() -> None:
    """ref16 leaves one unit less per segment, as the link's splitter does."""
    assert count_segments("中" * 134) == (2, MSG_FMT_UCS2)
    assert count_segments("中" * 134, ref16=True) == (3, MSG_FMT_UCS2)


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=700), st.booleans(), st.booleans())
def test_count_segments_always_equals_split_text(text: str, prefer_gbk: bool, ref16: bool) -> None:
    """For any encodable text the count is the number of PDUs the link sends."""
    msg_fmt = choose_msg_fmt(text, prefer_gbk=prefer_gbk)
    assert count_segments(text, prefer_gbk=prefer_gbk, ref16=ref16) == (
        len(split_text(text, msg_fmt, ref16=ref16)), msg_fmt
    )


# --- Validator.prepare -------------------------------------------------------------------------


def test_prepare_normalises_and_fills_defaults() -> None:
    """A good request comes back normalised, with the account's default extension."""
    prepared = _prepare_one(SendRequest(("+86 138 0013 8000",), "您的验证码是 493021。", ref="o-1"))
    assert prepared == PreparedMessage(
        to=("13800138000",), duplicates=(), text="您的验证码是 493021。", segments=1, msg_fmt=MSG_FMT_UCS2,
        priority=5, send_at=None, ext="77", ref="o-1", report=True,
    )


def test_duplicates_are_dropped_and_order_kept() -> None:
    """Repeated numbers (however written) are sent once, in first-seen order, and listed once as dropped."""
    prepared = _prepare_one(SendRequest(
        ("13900139000", "13800138000", "+86 139 0013 9000", "13700137000", "8613800138000", "13900139000"),
        "hi",
    ))
    assert prepared.to == ("13900139000", "13800138000", "13700137000")
    assert prepared.duplicates == ("13900139000", "13800138000")


def test_every_problem_of_every_request_is_reported() -> None:
    """One rejection lists all problems of all requests, each with its location."""
    problems = _rejected([
        SendRequest(("13800138000", "12345", "abc", "13800138000"), "ok", priority=9),
        SendRequest((), "   ", ext="1a", send_at=math.inf, ref="r" * 65),
        SendRequest(("13800138000",), "fine"),
        SendRequest(("+447700900123",), "\ud800", send_at=NOW + 400 * DAY),
    ])
    assert problems == [
        ("[0].to[1]", "wrong_length"),
        ("[0].to[2]", "bad_characters"),
        ("[0].priority", "bad_priority"),
        ("[1].to", "no_recipients"),
        ("[1].text", "empty_text"),
        ("[1].ext", "bad_ext"),
        ("[1].send_at", "bad_send_at"),
        ("[1].ref", "bad_ref"),
        ("[3].to[0]", "not_mainland"),
        ("[3].text", "unencodable_text"),
        ("[3].send_at", "send_at_too_far"),
    ]


def test_bad_number_problem_quotes_the_raw_value() -> None:
    """The problem for a bad number names its position and quotes what was sent."""
    with pytest.raises(RequestRejected) as info:
        Validator().prepare(ACCOUNT, [SendRequest(("13800138000", "138x"), "hi")], NOW)
    [problem] = info.value.problems
    assert problem.where == "[0].to[1]"
    assert "'138x'" in problem.message


def test_empty_batch_is_rejected() -> None:
    """A batch with no messages is refused rather than silently accepted."""
    assert _rejected([]) == [("", "no_messages")]


def test_single_string_as_recipients_is_rejected() -> None:
    """A bare string in `to` is refused instead of being read as one number per character."""
    assert _rejected([SendRequest("13800138000", "hi")]) == [("[0].to", "no_recipients")]  # type: ignore[arg-type]


def test_recipient_limit_counts_distinct_numbers() -> None:
    """max_recipients applies after duplicates are dropped."""
    validator = Validator(max_recipients=2)
    prepared = _prepare_one(SendRequest(("13800138000", "13800138000", "13900139000"), "hi"), validator)
    assert prepared.to == ("13800138000", "13900139000")
    too_many = SendRequest(("13800138000", "13900139000", "13700137000"), "hi")
    assert _rejected([too_many], validator) == [("[0].to", "too_many_recipients")]


def test_segment_limit() -> None:
    """Texts over max_segments are refused with the count; up to the limit they pass."""
    validator = Validator(max_segments=2)
    assert _prepare_one(SendRequest(("13800138000",), "中" * 134), validator).segments == 2
    assert _rejected([SendRequest(("13800138000",), "中" * 135)], validator) == [("[0].text", "too_many_segments")]


def test_huge_text_is_refused_without_splitting() -> None:
    """A text far past the limit (even past 255 segments) is a too_many_segments problem."""
    for text, limit in (("x" * 1_000_000, 255), ("中" * 20_000, 255), ("x" * 2000, 10)):
        assert _rejected([SendRequest(("13800138000",), text)], Validator(max_segments=limit)) == [
            ("[0].text", "too_many_segments")
        ]


def test_validator_segment_count_follows_link_settings() -> None:
    """prefer_gbk and ref16 given to the validator change msg_fmt and count as on the link."""
    text = "中" * 134
    plain = _prepare_one(SendRequest(("13800138000",), text))
    tuned = _prepare_one(SendRequest(("13800138000",), text), Validator(prefer_gbk=True, ref16=True))
    assert (plain.segments, plain.msg_fmt) == (2, MSG_FMT_UCS2)
    assert (tuned.segments, tuned.msg_fmt) == (3, MSG_FMT_GBK)


@pytest.mark.parametrize(("priority", "ok"), [(0, True), (5, True), (6, False), (-1, False), (True, False)])
def test_priority_range_follows_the_account(priority: int, ok: bool) -> None:
    """Priority must be a whole number from 0 to the account's max_priority."""
    request = SendRequest(("13800138000",), "hi", priority=priority)
    if ok:
        assert _prepare_one(request).priority == priority
    else:
        assert _rejected([request]) == [("[0].priority", "bad_priority")]


@pytest.mark.parametrize(
    ("ext", "expected"),
    [(None, "77"), ("", ""), ("0123", "0123"), ("1" * 12, "1" * 12)],
)
def test_ext_accepted(ext: str | None, expected: str) -> None:
    """An extension is digits (or empty); None takes the account's default."""
    assert _prepare_one(SendRequest(("13800138000",), "hi", ext=ext)).ext == expected


@pytest.mark.parametrize(("ext", "code"), [("12a", "bad_ext"), ("１２", "bad_ext"), (" 1", "bad_ext"),
                                           ("1" * 13, "ext_too_long")])
def test_ext_refused(ext: str, code: str) -> None:
    """Non-digit or too long extensions are refused."""
    assert _rejected([SendRequest(("13800138000",), "hi", ext=ext)]) == [("[0].ext", code)]


@pytest.mark.parametrize("send_at", [None, NOW - 10 * DAY, NOW, NOW + 366 * DAY, int(NOW) + 60])
def test_send_at_accepted(send_at: float | None) -> None:
    """send_at may be absent, in the past (send now) or up to 366 days ahead."""
    assert _prepare_one(SendRequest(("13800138000",), "hi", send_at=send_at)).send_at == send_at


@pytest.mark.parametrize(
    ("send_at", "code"),
    [(NOW + 367 * DAY, "send_at_too_far"), (math.nan, "bad_send_at"), (-math.inf, "bad_send_at"),
     (10**400, "bad_send_at")],
)
def test_send_at_refused(send_at: float, code: str) -> None:
    """Non-finite or far-future send_at values are refused."""
    assert _rejected([SendRequest(("13800138000",), "hi", send_at=send_at)]) == [("[0].send_at", code)]


def test_ref_length() -> None:
    """ref may have up to 64 characters."""
    assert _prepare_one(SendRequest(("13800138000",), "hi", ref="r" * 64)).ref == "r" * 64
    assert _rejected([SendRequest(("13800138000",), "hi", ref="r" * 65)]) == [("[0].ref", "bad_ref")]


def test_validator_options_apply() -> None:
    """Custom prefixes and allow_other reach the per-number checks."""
    validator = Validator(prefixes=["1740"], allow_other=True)
    prepared = _prepare_one(SendRequest(("17400123456", "+44 7700 900123"), "hi"), validator)
    assert prepared.to == ("17400123456", "+447700900123")
    assert _rejected([SendRequest(("13800138000",), "hi")], validator) == [("[0].to[0]", "unknown_segment")]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_recipients": 0}, {"max_segments": 0}, {"max_segments": 256}, {"prefixes": []},
     {"prefixes": ["x"]}, {"max_ext_len": -1}],
)
def test_validator_refuses_unusable_settings(kwargs: dict[str, object]) -> None:
    """Impossible limits raise ValueError at construction."""
    with pytest.raises(ValueError):
        Validator(**kwargs)  # type: ignore[arg-type]


_REQUESTS = st.builds(
    SendRequest,
    to=st.lists(st.one_of(st.text(max_size=20), _PHONEISH, st.from_regex(r"1[3-9]\d{9}", fullmatch=True)),
                max_size=5).map(tuple),
    text=st.text(max_size=300),
    priority=st.integers(-3, 12),
    send_at=st.one_of(st.none(), st.floats(), st.integers(-(10**20), 10**20)),
    ext=st.one_of(st.none(), st.text(max_size=15)),
    ref=st.one_of(st.none(), st.text(max_size=70)),
    report=st.booleans(),
)


@given(st.lists(_REQUESTS, max_size=4), st.booleans())
def test_prepare_raises_only_request_rejected(requests: list[SendRequest], allow_other: bool) -> None:
    """Any batch is either prepared consistently or refused with RequestRejected."""
    try:
        prepared = Validator(max_segments=3, allow_other=allow_other).prepare(ACCOUNT, requests, NOW)
    except RequestRejected as exc:
        assert exc.problems
        assert all(re.fullmatch(r"(\[\d+\](\.\w+(\[\d+\])?)?)?", p.where) for p in exc.problems)
        return
    assert len(prepared) == len(requests)
    for message in prepared:
        assert message.to and len(set(message.to)) == len(message.to)
        assert message.segments == len(split_text(message.text, message.msg_fmt)) <= 3


# --- Router ------------------------------------------------------------------------------------


def test_router_longest_prefix_wins() -> None:
    """The most specific prefix decides; unmatched numbers go to the default link."""
    router = Router([("unicom", ["130", "131"]), ("unicom-vip", ["1301"]), ("intl", ["+"]),
                     ("uk", ["+44"])], default="cmcc")
    assert router.route("13012345678") == "unicom-vip"
    assert router.route("13112345678") == "unicom"
    assert router.route("13800138000") == "cmcc"
    assert router.route("+12025550123") == "intl"
    assert router.route("+447700900123") == "uk"


def test_router_without_rules_uses_default() -> None:
    """With no rules every number goes to the default link."""
    assert Router([], "cmcc").route("13800138000") == "cmcc"


def test_router_refuses_a_prefix_claimed_twice() -> None:
    """Two links claiming one prefix is a configuration error naming the prefix."""
    with pytest.raises(ValueError, match=r"routing\.rules\[1\]: prefix '130' already routes to link 'a'"):
        Router([("a", ["130"]), ("b", ["131", "130"])], "c")


@pytest.mark.parametrize("prefixes", [["13a"], [""], ["++"], "130"])
def test_router_refuses_bad_prefixes(prefixes: list[str]) -> None:
    """Prefixes are digits with an optional leading +; errors name the rule."""
    with pytest.raises(ValueError, match=r"routing\.rules\[0\]"):
        Router([("a", prefixes)], "c")


@pytest.mark.parametrize("where, expected", [
    ("[0]", (0, None)), ("[3].text", (3, None)), ("[12].to[4]", (12, 4)), ("[2].to", (2, None)),
    ("to[1]", None), ("text", None), ("", None), ("[x]", None),
])
def test_problem_position_names_the_message_and_recipient(where: str, expected: object) -> None:
    """Adapters that send many messages per request (file import, database polling) map a
    problem back to its row through `Problem.position`."""
    assert Problem(where, "code", "message").position() == expected
