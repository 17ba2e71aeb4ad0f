"""Framing: whole, byte by byte, with trailing data; bounded buffering; garbage never escapes as a bug."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmpp_helpers import (
    VERSIONS,
    config,
    drain_all,
    load_vectors,
    pair,
    pdus,
    pdus_of,
)
from smsgw.protocol.cmpp import (
    MAX_PDU_SIZE,
    PDU_CLASSES,
    CmppLocalError,
    CmppRemoteError,
    CommandId,
    Deliver,
    Event,
    FrameBuffer,
    LinkClosed,
    Query,
    Role,
    Session,
    State,
    Submit,
    Version,
    encode_pdu,
)

VECTORS = load_vectors()
STREAM = b"".join(bytes.fromhex(v["hex"]) for v in VECTORS)
EXPECTED = [
    (int.from_bytes(raw[4:8], "big"), int.from_bytes(raw[8:12], "big"), raw[12:])
    for raw in (bytes.fromhex(v["hex"]) for v in VECTORS)
]


def _header(total: int, command_id: int = CommandId.ACTIVE_TEST, seq: int = 1) -> bytes:
    return total.to_bytes(4, "big") + command_id.to_bytes(4, "big") + seq.to_bytes(4, "big")


def test_whole_stream_at_once() -> None:
    """Every frame of a stream fed in one piece comes out, in order, leaving nothing buffered."""
    buf = FrameBuffer()
    buf.feed(STREAM)
    assert buf.frames() == EXPECTED
    assert len(buf) == 0
    assert buf.frames() == []


def test_one_byte_at_a_time() -> None:
    """A stream fed one byte at a time yields the same frames, each as soon as it is complete."""
    buf = FrameBuffer()
    got = []
    ends = set()
    pos = 0
    for i in range(len(STREAM)):
        buf.feed(STREAM[i : i + 1])
        frames = buf.frames()
        if frames:
            ends.add(i + 1)
        got += frames
    for v in VECTORS:
        pos += len(v["hex"]) // 2
        assert pos in ends
    assert got == EXPECTED
    assert len(buf) == 0


@pytest.mark.parametrize("partial", [1, 3, 4, 11, 12, 50])
def test_trailing_partial_frame_stays_buffered(partial: int) -> None:
    """Bytes of an incomplete frame after whole ones stay buffered until the rest arrives."""
    submit = bytes.fromhex(VECTORS[4]["hex"])
    buf = FrameBuffer()
    buf.feed(STREAM + submit[:partial])
    assert buf.frames() == EXPECTED
    assert len(buf) == partial
    buf.feed(submit[partial:])
    assert buf.frames() == [EXPECTED[4]]
    assert len(buf) == 0


@given(st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_any_split_of_the_stream(cuts: list[int]) -> None:
    """However the stream is cut into reads, the same frames come out."""
    buf = FrameBuffer()
    got = []
    bounds = [0, *sorted(cuts), len(STREAM)]
    for a, b in zip(bounds, bounds[1:]):
        buf.feed(STREAM[a:b])
        got += buf.frames()
    assert got == EXPECTED


@pytest.mark.parametrize("total", [0, 1, 11])
def test_total_length_below_header_is_refused(total: int) -> None:
    """A Total_Length smaller than the 12-byte header raises CmppRemoteError naming Total_Length."""
    buf = FrameBuffer()
    buf.feed(_header(total))
    with pytest.raises(CmppRemoteError, match="Total_Length") as info:
        buf.frames()
    assert str(total) in str(info.value)


@pytest.mark.parametrize("total", [MAX_PDU_SIZE + 1, 0x7FFFFFFF, 0xFFFFFFFF])
def test_total_length_above_maximum_is_refused_before_buffering(total: int) -> None:
    """A Total_Length above 4096 raises CmppRemoteError as soon as its four bytes arrive."""
    buf = FrameBuffer()
    buf.feed(total.to_bytes(4, "big"))
    with pytest.raises(CmppRemoteError, match="Total_Length"):
        buf.frames()


def test_total_length_limits_are_inclusive() -> None:
    """Frames of exactly 12 and exactly 4096 bytes are accepted."""
    buf = FrameBuffer()
    big = _header(MAX_PDU_SIZE, CommandId.SUBMIT, 2) + bytes(MAX_PDU_SIZE - 12)
    buf.feed(_header(12) + big)
    assert buf.frames() == [(CommandId.ACTIVE_TEST, 1, b""), (CommandId.SUBMIT, 2, bytes(4084))]


def test_configured_maximum_is_enforced() -> None:
    """A buffer built with a smaller maximum refuses frames above it."""
    buf = FrameBuffer(max_size=100)
    buf.feed(_header(101))
    with pytest.raises(CmppRemoteError, match="100"):
        buf.frames()


def test_frames_before_a_bad_length_are_returned_with_the_error() -> None:
    """frames_until_error hands out the good frames preceding a bad header, then stays broken."""
    buf = FrameBuffer()
    buf.feed(STREAM + _header(5))
    frames, error = buf.frames_until_error()
    assert frames == EXPECTED
    assert isinstance(error, CmppRemoteError)
    buf.feed(_header(12))
    assert buf.frames_until_error() == ([], error)
    with pytest.raises(CmppRemoteError):
        buf.frames()


@given(st.lists(st.binary(max_size=600) | st.sampled_from(
    [STREAM[:100], STREAM[100:700], _header(4096), _header(13), _header(4097)]), max_size=30))
def test_buffer_never_exceeds_one_frame(chunks: list[bytes]) -> None:
    """After each read the buffer holds less than one maximum-size frame, even after an error."""
    buf = FrameBuffer()
    for chunk in chunks:
        buf.feed(chunk)
        buf.frames_until_error()
        assert len(buf) < MAX_PDU_SIZE


@given(st.lists(st.binary(max_size=300), max_size=10))
def test_any_bytes_give_frames_or_remote_error(chunks: list[bytes]) -> None:
    """Any input yields well-formed frames or CmppRemoteError, nothing else."""
    buf = FrameBuffer()
    for chunk in chunks:
        buf.feed(chunk)
        try:
            frames = buf.frames()
        except CmppRemoteError as exc:
            assert "Total_Length" in str(exc)
            return
        for command_id, seq, body in frames:
            assert 0 <= command_id <= 0xFFFFFFFF and 0 <= seq <= 0xFFFFFFFF
            assert len(body) <= MAX_PDU_SIZE - 12


# --- garbage into an established session ---------------------------------------

_KNOWN = [int(c) for c in CommandId]
_ODD = [0, 3, 9, 0x10, 0x17, 0x80000000, 0x80000003, 0x80000009, 0xFFFFFFFF]


@st.composite
def _raw_frames(draw: st.DrawFn) -> bytes:
    """A frame with a plausible header: a known or unknown Command_Id and a small Sequence_Id."""
    command_id = draw(st.sampled_from(_KNOWN + _ODD))
    body = draw(st.binary(max_size=200))
    total = draw(st.just(12 + len(body)) | st.integers(0, 5000))
    return total.to_bytes(4, "big") + command_id.to_bytes(4, "big") + draw(
        st.integers(0, 8)).to_bytes(4, "big") + body


@st.composite
def _valid_frames(draw: st.DrawFn, version: Version) -> bytes:
    """A well-formed PDU of any kind, numbered near the sequence ids the session uses."""
    cls = draw(st.sampled_from(list(PDU_CLASSES.values())))
    pdu = draw(pdus(cls, version))
    return encode_pdu(pdu, draw(st.integers(0, 8)), version)


def _chunks(version: Version) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.binary(max_size=64) | _raw_frames() | _valid_frames(version), max_size=8)


def _busy_pair(version: Version) -> tuple[Session, Session]:
    """An established pair with requests outstanding in both directions."""
    client, server = pair(version)
    client.send(Submit(("13800138000",), b"x"), 1.0)
    client.send(Query("20240305"), 1.0)
    server.send(Deliver(1, "10690001", "13800138000", b"y"), 1.0)
    client.data_to_send()
    server.data_to_send()
    return client, server


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.text)
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@given(data=st.data())
def test_garbage_into_established_session(role: Role, version: Version, data: st.DataObject) -> None:
    """Any bytes fed to an established session give events or one CmppRemoteError, never another exception."""
    client, server = _busy_pair(version)
    session = client if role is Role.CLIENT else server
    now = 2.0
    errors = 0
    events: list[Event | CmppRemoteError] = []
    for chunk in data.draw(_chunks(version)):
        if errors:
            with pytest.raises(CmppLocalError):
                session.receive_data(chunk, now)
            break
        session.receive_data(chunk, now)
        got = drain_all(session)
        errors += sum(isinstance(e, CmppRemoteError) for e in got)
        events += got
        # What the session writes in reply is always well-formed.
        pdus_of(session.data_to_send(), session.version)
        now += data.draw(st.sampled_from([0.0, 1.0, 61.0, 181.0]))
        if not errors:
            session.handle_timer(now)
            events += drain_all(session)
            pdus_of(session.data_to_send(), session.version)
    assert errors <= 1
    if errors:
        assert session.state is State.ERROR
        assert isinstance(events[-1], LinkClosed)


def test_garbage_before_login_is_a_remote_error() -> None:
    """Bytes that are not a CMPP stream make a fresh server raise CmppRemoteError, then close."""
    server = Session(config(Role.SERVER))
    server.start(0.0)
    server.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    with pytest.raises(CmppRemoteError, match="Total_Length"):
        server.next_event()
    assert isinstance(server.next_event(), LinkClosed)
    assert server.state is State.ERROR


def test_broken_buffer_does_not_grow() -> None:
    """Bytes fed after a framing error are not kept: a broken stream cannot fill memory."""
    buf = FrameBuffer()
    buf.feed(_header(5) + bytes(3000))
    with pytest.raises(CmppRemoteError):
        buf.frames()
    for _ in range(10):
        buf.feed(bytes(3000))
        with pytest.raises(CmppRemoteError):
            buf.frames()
    assert len(buf) < MAX_PDU_SIZE
