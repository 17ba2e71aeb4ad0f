"""The PDU codec: golden bytes from the protocol notes, round trips, strict encoding, liberal decoding."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmpp_helpers import (
    PDU_BY_NAME,
    VERSIONS,
    Vector,
    from_fields,
    load_vectors,
    pdus,
    reports,
    to_fields,
    u8,
)
from smsgw.protocol.cmpp import (
    HEADER_SIZE,
    PDU_CLASSES,
    ActiveTestResp,
    Cancel,
    CancelResp,
    CmppLocalError,
    CommandId,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    FrameBuffer,
    Pdu,
    Query,
    QueryResp,
    StatusReport,
    Submit,
    SubmitResp,
    Version,
    decode_body,
    encode_pdu,
)

VECTORS = load_vectors()
REPORT_VECTORS = [v for v in VECTORS if "report" in v]


def _version(vector: Vector) -> Version:
    return Version.parse(vector["version"])


def _frame(vector: Vector) -> tuple[int, int, bytes]:
    buf = FrameBuffer()
    buf.feed(bytes.fromhex(vector["hex"]))
    [frame] = buf.frames()
    assert len(buf) == 0
    return frame


# --- golden vectors -------------------------------------------------------------


def test_vectors_cover_every_documented_example() -> None:
    """The vector file holds each hex example of notes §5.3 and §15 in both versions."""
    names = {v["name"] for v in VECTORS}
    for base in ("connect", "connect_resp", "submit", "submit_resp", "deliver_report",
                 "deliver_resp", "active_test", "active_test_resp", "terminate", "terminate_resp"):
        assert {f"{base}_v30", f"{base}_v20"} <= names
    assert len(REPORT_VECTORS) == 2


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_vector_decodes_to_documented_fields(vector: Vector) -> None:
    """A golden PDU splits into one frame whose header and body decode to the documented values."""
    command_id, seq, body = _frame(vector)
    cls = PDU_BY_NAME[vector["pdu"]]
    assert command_id == cls.command
    assert seq == vector["seq"]
    pdu = decode_body(command_id, body, _version(vector))
    assert type(pdu) is cls
    assert to_fields(pdu) == vector["fields"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_vector_encodes_byte_for_byte(vector: Vector) -> None:
    """The documented field values encode to exactly the golden bytes."""
    pdu = from_fields(PDU_BY_NAME[vector["pdu"]], vector["fields"])
    assert encode_pdu(pdu, vector["seq"], _version(vector)).hex() == vector["hex"]


@pytest.mark.parametrize("vector", REPORT_VECTORS, ids=lambda v: v["name"])
def test_vector_report_decodes_and_encodes(vector: Vector) -> None:
    """The status report inside a golden DELIVER decodes to its documented fields and back."""
    _, _, body = _frame(vector)
    deliver = Deliver.decode_body(body, _version(vector))
    assert deliver.registered_delivery == 1
    report = StatusReport.decode(deliver.msg_content)
    assert to_fields(report) == vector["report"]
    assert report.encode(_version(vector)) == deliver.msg_content


def test_report_sizes_follow_version() -> None:
    """A report is 71 bytes in the 3.0 layout and 60 in the 2.0 layout."""
    report = StatusReport(1, "DELIVRD", "2403050809", "2403050810", "13800138000", 42)
    assert len(report.encode(Version.V30)) == 71
    assert len(report.encode(Version.V20)) == 60


# --- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
@pytest.mark.parametrize("cls", list(PDU_CLASSES.values()), ids=lambda c: c.__name__)
@given(data=st.data(), seq=st.integers(0, 0xFFFFFFFF))
def test_round_trip(cls: type[Pdu], version: Version, data: st.DataObject, seq: int) -> None:
    """Any valid PDU survives encoding, framing and decoding unchanged, in either version."""
    pdu = data.draw(pdus(cls, version))
    wire = encode_pdu(pdu, seq, version)
    assert int.from_bytes(wire[:4], "big") == len(wire)
    buf = FrameBuffer()
    buf.feed(wire)
    [(command_id, got_seq, body)] = buf.frames()
    assert (command_id, got_seq) == (cls.command, seq)
    assert decode_body(command_id, body, version) == pdu


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
@given(data=st.data())
def test_report_round_trip(version: Version, data: st.DataObject) -> None:
    """Any valid status report survives encoding and decoding, whichever layout it uses."""
    report = data.draw(reports(version))
    assert StatusReport.decode(report.encode(version)) == report


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
@given(data=st.data())
def test_submits_sharing_or_differing_in_their_middle_fields_decode_apart(version: Version,
                                                                         data: st.DataObject) -> None:
    """Decoding caches the run from Service_Id to Src_Id: SUBMITs decoded in turn, some
    differing only there and some only outside it, each come back as themselves."""
    a = data.draw(pdus(Submit, version))
    b = data.draw(pdus(Submit, version))
    assert isinstance(a, Submit) and isinstance(b, Submit)
    mixed = dataclasses.replace(a, msg_id=b.msg_id, pk_total=b.pk_total, pk_number=b.pk_number,
                                registered_delivery=b.registered_delivery, msg_level=b.msg_level,
                                dest_terminal_ids=b.dest_terminal_ids, msg_content=b.msg_content)
    for pdu in (a, b, mixed, a, b, mixed):
        assert Submit.decode_body(pdu.encode_body(version), version) == pdu


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
def test_submit_with_most_destinations_round_trips(version: Version) -> None:
    """A SUBMIT to 99 full-width destinations with 255 content bytes fits a frame and round-trips."""
    width = 32 if version is Version.V30 else 21
    pdu = Submit(tuple(f"{i:0{width}d}" for i in range(99)), bytes(range(255)), msg_fmt=4)
    wire = encode_pdu(pdu, 1, version)
    assert len(wire) == (163 + 32 * 99 + 255 if version is Version.V30 else 138 + 21 * 99 + 255)
    assert decode_body(CommandId.SUBMIT, wire[HEADER_SIZE:], version) == pdu


def test_octet_string_decoding_cuts_at_nul_and_strips_spaces() -> None:
    """Octet Strings end at the first NUL, lose trailing spaces, and may fill their field."""
    body = b"9012 \0" + bytes(16) + b"\x30" + bytes(4)
    assert Connect.decode_body(body, Version.V30).source_addr == "9012"
    body = b"901234" + bytes(16) + b"\x30" + bytes(4)
    assert Connect.decode_body(body, Version.V30).source_addr == "901234"
    body = b"90\x0034 " + bytes(16) + b"\x30" + bytes(4)
    assert Connect.decode_body(body, Version.V30).source_addr == "90"


# --- strict encoding ------------------------------------------------------------------

_SUBMIT = Submit(("13800138000",), b"hi")
_DELIVER = Deliver(1, "10690001", "13800138000", b"hi")
_REPORT = StatusReport(1, "DELIVRD", "2403050809", "2403050810", "13800138000", 42)
_AUTH = bytes(16)

# (pdu, version, the field its error must name)
_TOO_BIG: list[tuple[Any, Version, str]] = [
    (Connect("9012345", _AUTH, 0x30, 1), Version.V30, "source_addr"),
    (Connect("901234", bytes(15), 0x30, 1), Version.V30, "authenticator"),
    (Connect("901234", _AUTH, 0x100, 1), Version.V30, "version"),
    (Connect("901234", _AUTH, 0x30, 1 << 32), Version.V30, "timestamp"),
    (Connect("901234", _AUTH, 0x30, -1), Version.V20, "timestamp"),
    (ConnectResp(1 << 32, _AUTH, 0x30), Version.V30, "status"),
    (ConnectResp(256, _AUTH, 0x20), Version.V20, "status"),
    (ConnectResp(0, bytes(17), 0x30), Version.V30, "authenticator"),
    (ConnectResp(0, _AUTH, 256), Version.V30, "version"),
    (SubmitResp(1 << 64, 0), Version.V30, "msg_id"),
    (SubmitResp(1, 1 << 32), Version.V30, "result"),
    (SubmitResp(1, 256), Version.V20, "result"),
    (SubmitResp(1, -1), Version.V20, "result"),
    (DeliverResp(-1, 0), Version.V30, "msg_id"),
    (DeliverResp(1, 1 << 32), Version.V30, "result"),
    (DeliverResp(1, 256), Version.V20, "result"),
    (Query("202403051", 0, "", ""), Version.V30, "time"),
    (Query("20240305", 256, "", ""), Version.V30, "query_type"),
    (Query("20240305", 0, "x" * 11, ""), Version.V30, "query_code"),
    (Query("20240305", 0, "", "x" * 9), Version.V20, "reserve"),
    (QueryResp("202403051", 0, ""), Version.V30, "time"),
    (QueryResp("20240305", 256, ""), Version.V30, "query_type"),
    (QueryResp("20240305", 0, "x" * 11), Version.V30, "query_code"),
    (QueryResp("20240305", 0, "", mt_tlmsg=1 << 32), Version.V30, "mt_tlmsg"),
    (QueryResp("20240305", 0, "", mo_fl=-1), Version.V20, "mo_fl"),
    (Cancel(1 << 64), Version.V30, "msg_id"),
    (CancelResp(1 << 32), Version.V30, "success_id"),
    (CancelResp(256), Version.V20, "success_id"),
    (ActiveTestResp(256), Version.V30, "reserved"),
    (dataclasses.replace(_SUBMIT, dest_terminal_ids=()), Version.V30, "dest_terminal_ids"),
    (dataclasses.replace(_SUBMIT, dest_terminal_ids=("1",) * 100), Version.V30, "dest_terminal_ids"),
    (dataclasses.replace(_SUBMIT, dest_terminal_ids=("1" * 33,)), Version.V30, "dest_terminal_ids"),
    (dataclasses.replace(_SUBMIT, dest_terminal_ids=("1" * 22,)), Version.V20, "dest_terminal_ids"),
    (dataclasses.replace(_SUBMIT, msg_content=bytes(256)), Version.V30, "msg_content"),
    (dataclasses.replace(_SUBMIT, service_id="x" * 11), Version.V30, "service_id"),
    (dataclasses.replace(_SUBMIT, service_id="业务"), Version.V30, "service_id"),
    (dataclasses.replace(_SUBMIT, src_id="1" * 22), Version.V20, "src_id"),
    (dataclasses.replace(_SUBMIT, msg_src="9" * 7), Version.V30, "msg_src"),
    (dataclasses.replace(_SUBMIT, fee_terminal_id="1" * 33), Version.V30, "fee_terminal_id"),
    (dataclasses.replace(_SUBMIT, fee_terminal_id="1" * 22), Version.V20, "fee_terminal_id"),
    (dataclasses.replace(_SUBMIT, fee_type="011"), Version.V30, "fee_type"),
    (dataclasses.replace(_SUBMIT, fee_code="0000000"), Version.V30, "fee_code"),
    (dataclasses.replace(_SUBMIT, valid_time="1" * 18), Version.V30, "valid_time"),
    (dataclasses.replace(_SUBMIT, at_time="1" * 18), Version.V20, "at_time"),
    (dataclasses.replace(_SUBMIT, link_id="x" * 21), Version.V30, "link_id"),
    (dataclasses.replace(_SUBMIT, reserve="x" * 9), Version.V20, "reserve"),
    (dataclasses.replace(_SUBMIT, msg_id=1 << 64), Version.V30, "msg_id"),
    (dataclasses.replace(_SUBMIT, pk_total=256), Version.V30, "pk_total"),
    (dataclasses.replace(_SUBMIT, pk_number=-1), Version.V20, "pk_number"),
    (dataclasses.replace(_SUBMIT, registered_delivery=256), Version.V30, "registered_delivery"),
    (dataclasses.replace(_SUBMIT, msg_level=256), Version.V20, "msg_level"),
    (dataclasses.replace(_SUBMIT, fee_user_type=256), Version.V30, "fee_user_type"),
    (dataclasses.replace(_SUBMIT, tp_pid=256), Version.V30, "tp_pid"),
    (dataclasses.replace(_SUBMIT, tp_udhi=256), Version.V20, "tp_udhi"),
    (dataclasses.replace(_SUBMIT, msg_fmt=256), Version.V30, "msg_fmt"),
    (dataclasses.replace(_SUBMIT, fee_terminal_type=256), Version.V30, "fee_terminal_type"),
    (dataclasses.replace(_SUBMIT, dest_terminal_type=256), Version.V30, "dest_terminal_type"),
    (dataclasses.replace(_DELIVER, msg_content=bytes(256)), Version.V20, "msg_content"),
    (dataclasses.replace(_DELIVER, dest_id="1" * 22), Version.V30, "dest_id"),
    (dataclasses.replace(_DELIVER, service_id="x" * 11), Version.V30, "service_id"),
    (dataclasses.replace(_DELIVER, src_terminal_id="1" * 33), Version.V30, "src_terminal_id"),
    (dataclasses.replace(_DELIVER, src_terminal_id="1" * 22), Version.V20, "src_terminal_id"),
    (dataclasses.replace(_DELIVER, link_id="x" * 21), Version.V30, "link_id"),
    (dataclasses.replace(_DELIVER, reserved="x" * 9), Version.V20, "reserved"),
    (dataclasses.replace(_DELIVER, msg_id=-1), Version.V30, "msg_id"),
    (dataclasses.replace(_DELIVER, msg_fmt=256), Version.V20, "msg_fmt"),
    (dataclasses.replace(_DELIVER, registered_delivery=256), Version.V30, "registered_delivery"),
    (dataclasses.replace(_DELIVER, tp_pid=256), Version.V30, "tp_pid"),
    (dataclasses.replace(_DELIVER, tp_udhi=256), Version.V20, "tp_udhi"),
    (dataclasses.replace(_DELIVER, src_terminal_type=256), Version.V30, "src_terminal_type"),
]

_REPORT_TOO_BIG: list[tuple[StatusReport, Version, str]] = [
    (dataclasses.replace(_REPORT, stat="DELIVRD1"), Version.V30, "stat"),
    (dataclasses.replace(_REPORT, submit_time="1" * 11), Version.V30, "submit_time"),
    (dataclasses.replace(_REPORT, done_time="1" * 11), Version.V20, "done_time"),
    (dataclasses.replace(_REPORT, dest_terminal_id="1" * 33), Version.V30, "dest_terminal_id"),
    (dataclasses.replace(_REPORT, dest_terminal_id="1" * 22), Version.V20, "dest_terminal_id"),
    (dataclasses.replace(_REPORT, msg_id=1 << 64), Version.V30, "msg_id"),
    (dataclasses.replace(_REPORT, smsc_sequence=1 << 32), Version.V20, "smsc_sequence"),
]


@pytest.mark.parametrize(("pdu", "version", "field"), _TOO_BIG,
                         ids=[f"{p.command.name}.{f}-{v.text}" for p, v, f in _TOO_BIG])
def test_encode_rejects_what_does_not_fit(pdu: Pdu, version: Version, field: str) -> None:
    """A value too long or out of range for its field raises CmppLocalError naming that field."""
    with pytest.raises(CmppLocalError) as info:
        encode_pdu(pdu, 1, version)
    assert field in str(info.value)


@pytest.mark.parametrize(("report", "version", "field"), _REPORT_TOO_BIG,
                         ids=[f"{f}-{v.text}" for _, v, f in _REPORT_TOO_BIG])
def test_report_encode_rejects_what_does_not_fit(report: StatusReport, version: Version,
                                                 field: str) -> None:
    """A report value that does not fit its field raises CmppLocalError naming that field."""
    with pytest.raises(CmppLocalError) as info:
        report.encode(version)
    assert field in str(info.value)


@pytest.mark.parametrize("seq", [-1, 1 << 32])
def test_encode_rejects_sequence_id_out_of_range(seq: int) -> None:
    """A Sequence_Id outside 32 bits raises CmppLocalError naming the sequence id."""
    with pytest.raises(CmppLocalError, match="sequence id"):
        encode_pdu(Cancel(1), seq, Version.V30)


def test_encode_accepts_field_maxima() -> None:
    """Values that exactly fill their fields encode without complaint."""
    full = dataclasses.replace(
        _SUBMIT, dest_terminal_ids=("1" * 21,), service_id="x" * 10, src_id="1" * 21,
        msg_src="9" * 6, fee_terminal_id="1" * 21, valid_time="1" * 17, at_time="1" * 17,
        msg_content=bytes(255), pk_total=255, msg_id=(1 << 64) - 1, reserve="r" * 8,
    )
    for version in VERSIONS:
        encode_pdu(full if version is Version.V20 else dataclasses.replace(full, reserve=""),
                   0xFFFFFFFF, version)
    encode_pdu(SubmitResp((1 << 64) - 1, 0xFFFFFFFF), 1, Version.V30)
    encode_pdu(SubmitResp((1 << 64) - 1, 0xFF), 1, Version.V20)


# --- liberal decoding ------------------------------------------------------------------


def _vector(name: str) -> Vector:
    [vector] = [v for v in VECTORS if v["name"] == name]
    return vector


def _body(name: str) -> bytes:
    return bytes.fromhex(_vector(name)["hex"])[HEADER_SIZE:]


def test_v20_session_decodes_a_v30_width_connect_resp() -> None:
    """A 21-byte CONNECT_RESP body decodes on a 2.0 link with its 4-byte Status (notes §14.2)."""
    resp = decode_body(CommandId.CONNECT_RESP, _body("connect_resp_v30"), Version.V20)
    assert resp == ConnectResp(0, bytes.fromhex("dbd1b9e0fa6af8a0aee4e2b9ee59d9f5"), 0x30)
    refused = decode_body(CommandId.CONNECT_RESP, (3).to_bytes(4, "big") + bytes(17), Version.V20)
    assert refused == ConnectResp(3, bytes(16), 0)


def test_v30_session_decodes_a_v20_width_connect_resp() -> None:
    """An 18-byte CONNECT_RESP body decodes on a 3.0 link with its 1-byte Status."""
    resp = decode_body(CommandId.CONNECT_RESP, _body("connect_resp_v20"), Version.V30)
    assert resp == ConnectResp(0, bytes.fromhex("a4cbaa94133136b7e519ac48967bb48f"), 0x20)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
def test_active_test_resp_without_reserved_byte(version: Version) -> None:
    """A 12-byte ACTIVE_TEST_RESP (no Reserved byte) decodes as Reserved 0 (notes §14.3)."""
    assert decode_body(CommandId.ACTIVE_TEST_RESP, b"", version) == ActiveTestResp(0)
    assert decode_body(CommandId.ACTIVE_TEST_RESP, b"\x07", version) == ActiveTestResp(7)


def test_v20_report_in_v30_deliver_with_short_trailer() -> None:
    """A 3.0 DELIVER carrying a 60-byte report and a LinkID 11 bytes short decodes (notes §14.1)."""
    v20 = _vector("deliver_report_v20")
    report60 = bytes.fromhex(v20["fields"]["msg_content"])
    deliver = Deliver(0x32A0928003E90002, "10690001", "13800138000", report60,
                      registered_delivery=1, link_id="LINK1")
    body = deliver.encode_body(Version.V30)[:-11]
    got = Deliver.decode_body(body, Version.V30)
    assert got == deliver
    assert to_fields(StatusReport.decode(got.msg_content)) == v20["report"]


def test_v30_report_in_v20_deliver() -> None:
    """A 2.0 DELIVER carrying a 71-byte report decodes with the 3.0 report layout."""
    v30 = _vector("deliver_report_v30")
    report71 = bytes.fromhex(v30["fields"]["msg_content"])
    deliver = Deliver(0x32A0928003E90002, "10690001", "13800138000", report71, registered_delivery=1)
    got = Deliver.decode_body(deliver.encode_body(Version.V20), Version.V20)
    assert to_fields(StatusReport.decode(got.msg_content)) == v30["report"]


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
def test_missing_trailers_are_tolerated(version: Version) -> None:
    """A SUBMIT or DELIVER without its LinkID / Reserve trailer still decodes."""
    submit = Submit(("13800138000",), b"hi", msg_fmt=0)
    trailer = 20 if version is Version.V30 else 8
    body = submit.encode_body(version)[:-trailer]
    assert Submit.decode_body(body, version) == submit
    deliver = Deliver(5, "10690001", "13800138000", b"hi")
    assert Deliver.decode_body(deliver.encode_body(version)[:-trailer], version) == deliver


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
@pytest.mark.parametrize(("body", "value"), [(b"\x01", 1), (b"\x00\x00\x00\x01", 1), (b"\x00", 0)])
def test_cancel_resp_decodes_either_width(version: Version, body: bytes, value: int) -> None:
    """CANCEL_RESP's Success_Id decodes from 1 or 4 bytes in both versions (notes §4.10)."""
    assert decode_body(CommandId.CANCEL_RESP, body, version) == CancelResp(value)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
def test_submit_and_deliver_resp_decode_either_width(version: Version) -> None:
    """SUBMIT_RESP and DELIVER_RESP decode a 1-byte or a 4-byte Result in both versions."""
    msg_id = (7).to_bytes(8, "big")
    for cmd, cls in ((CommandId.SUBMIT_RESP, SubmitResp), (CommandId.DELIVER_RESP, DeliverResp)):
        assert decode_body(cmd, msg_id + b"\x08", version) == cls(7, 8)
        assert decode_body(cmd, msg_id + b"\x00\x00\x00\x08", version) == cls(7, 8)


_BAD_BODIES: list[tuple[int, bytes, Version]] = [
    (CommandId.CONNECT, bytes(26), Version.V30),
    (CommandId.CONNECT_RESP, bytes(19), Version.V30),
    (CommandId.TERMINATE, b"\x00", Version.V30),
    (CommandId.TERMINATE_RESP, b"\x00", Version.V20),
    (CommandId.ACTIVE_TEST, b"\x00", Version.V30),
    (CommandId.ACTIVE_TEST_RESP, b"\x00\x00", Version.V20),
    (CommandId.SUBMIT_RESP, bytes(10), Version.V30),
    (CommandId.DELIVER_RESP, bytes(8), Version.V20),
    (CommandId.QUERY, bytes(28), Version.V30),
    (CommandId.QUERY_RESP, bytes(50), Version.V30),
    (CommandId.CANCEL, bytes(7), Version.V30),
    (CommandId.CANCEL_RESP, bytes(2), Version.V20),
    (CommandId.SUBMIT, bytes(20), Version.V30),
    (CommandId.DELIVER, bytes(20), Version.V20),
]


@pytest.mark.parametrize(("command_id", "body", "version"), _BAD_BODIES,
                         ids=[f"{CommandId(c).name}-{len(b)}" for c, b, _ in _BAD_BODIES])
def test_decode_rejects_bodies_of_the_wrong_length(command_id: int, body: bytes,
                                                   version: Version) -> None:
    """A body whose length fits no layout of its command raises CmppLocalError with status 4."""
    with pytest.raises(CmppLocalError) as info:
        decode_body(command_id, body, version)
    assert info.value.status == 4


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
def test_decode_rejects_inconsistent_variable_bodies(version: Version) -> None:
    """Counts and lengths inside SUBMIT / DELIVER that overrun the body, or extra bytes, are refused."""
    submit = Submit(("13800138000", "13900139000"), b"hello").encode_body(version)
    deliver = Deliver(5, "10690001", "13800138000", b"hello").encode_body(version)
    trailer = 20 if version is Version.V30 else 8
    bad = [
        (CommandId.SUBMIT, submit + b"\x00"),  # one byte past the trailer
        (CommandId.SUBMIT, submit[: -trailer - 1]),  # Msg_Length longer than what is left
        (CommandId.DELIVER, deliver + b"\x00"),
        (CommandId.DELIVER, deliver[: -trailer - 1]),
    ]
    head = 129 if version is Version.V30 else 117  # DestUsr_tl is the last fixed byte
    bad.append((CommandId.SUBMIT, submit[: head - 1] + b"\x63" + submit[head:]))  # 99 dests claimed
    for command_id, body in bad:
        with pytest.raises(CmppLocalError) as info:
            decode_body(command_id, body, version)
        assert info.value.status == 4


@pytest.mark.parametrize("content", [b"", bytes(59), bytes(61), bytes(70), bytes(72)])
def test_report_decode_rejects_other_lengths(content: bytes) -> None:
    """Report content that is neither 71 nor 60 bytes raises CmppLocalError."""
    with pytest.raises(CmppLocalError, match="report"):
        StatusReport.decode(content)


@pytest.mark.parametrize("command_id", [0, 3, 9, 0x17, 0x80000000, 0x80000003, 0xFFFFFFFF])
def test_decode_rejects_unknown_command_id(command_id: int) -> None:
    """An unknown Command_Id raises CmppLocalError with status 2, naming the id in hex."""
    with pytest.raises(CmppLocalError) as info:
        decode_body(command_id, b"", Version.V30)
    assert info.value.status == 2
    assert f"0x{command_id:08x}" in str(info.value)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
@given(command_id=st.sampled_from([int(c) for c in CommandId]) | st.integers(0, 0xFFFFFFFF),
       body=st.binary(max_size=400) | st.integers(0, 3600).map(bytes),
       reg=u8)
def test_any_body_decodes_or_raises_local_error(version: Version, command_id: int, body: bytes,
                                                reg: int) -> None:
    """Whatever the body, decode_body returns a PDU or raises CmppLocalError, nothing else."""
    try:
        pdu = decode_body(command_id, body, version)
    except CmppLocalError:
        return
    assert pdu.command == command_id
    if isinstance(pdu, Deliver) and reg == 1:
        try:
            StatusReport.decode(pdu.msg_content)
        except CmppLocalError:
            pass
