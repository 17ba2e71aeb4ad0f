"""Shared helpers for the CMPP codec, framing and session tests.

Not a test module: `pytest` puts `tests/` on `sys.path`, so the tests import
this as `from cmpp_helpers import ...`. Everything goes through the public
package `smsgw.protocol.cmpp`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import typing
from pathlib import Path
from typing import Any, TypedDict

from hypothesis import strategies as st

from smsgw.protocol.cmpp import (
    ActiveTest,
    ActiveTestResp,
    Cancel,
    CancelResp,
    CmppRemoteError,
    Connect,
    ConnectResp,
    Deliver,
    DeliverResp,
    Event,
    FrameBuffer,
    LinkEstablished,
    LoginRequested,
    Pdu,
    Query,
    QueryResp,
    Role,
    Session,
    SessionConfig,
    StatusReport,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
    Version,
    decode_body,
)

#: The login of the worked example in notes §5.3: SP 901234, secret abc123, 03-05 08:09:10.
SP_ID = "901234"
SECRET = "abc123"
WALLCLOCK = datetime.datetime(2024, 3, 5, 8, 9, 10)

VERSIONS = (Version.V30, Version.V20)

U8_MAX, U32_MAX, U64_MAX = 0xFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


# --- golden vectors ---------------------------------------------------------


class Vector(TypedDict, total=False):
    """One entry of `tests/vectors/cmpp_vectors.json`."""

    name: str
    version: str
    source: str
    hex: str
    seq: int
    pdu: str
    fields: dict[str, Any]
    report: dict[str, Any]  # only for DELIVERs that carry a status report


VECTORS_PATH = Path(__file__).parent / "vectors" / "cmpp_vectors.json"


def load_vectors() -> list[Vector]:
    vectors: list[Vector] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return vectors


PDU_BY_NAME: dict[str, type[Pdu]] = {
    cls.__name__: cls
    for cls in (Connect, ConnectResp, Terminate, TerminateResp, Submit, SubmitResp, Deliver,
                DeliverResp, Query, QueryResp, Cancel, CancelResp, ActiveTest, ActiveTestResp)
}


def to_fields(obj: object) -> dict[str, Any]:
    """A PDU (or report) as JSON-like data: bytes as hex, tuples as lists."""
    assert dataclasses.is_dataclass(obj) and not isinstance(obj, type)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def from_fields(cls: type[Any], data: dict[str, Any]) -> Any:
    """The inverse of `to_fields`, guided by the dataclass's annotations."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if hint is bytes:
            value = bytes.fromhex(value)
        elif typing.get_origin(hint) is tuple:
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


# --- decoding what a session wrote --------------------------------------------


def decode_stream(data: bytes, version: Version) -> list[tuple[int, Pdu]]:
    """Every PDU in `data` as (Sequence_Id, PDU); the stream must end on a frame boundary."""
    buf = FrameBuffer()
    buf.feed(data)
    out = [(seq, decode_body(cmd, body, version)) for cmd, seq, body in buf.frames()]
    assert len(buf) == 0, f"{len(buf)} bytes of an incomplete frame left over"
    return out


def pdus_of(data: bytes, version: Version) -> list[Pdu]:
    return [pdu for _, pdu in decode_stream(data, version)]


# --- sessions -----------------------------------------------------------------


def config(role: Role, version: Version = Version.V30, **overrides: Any) -> SessionConfig:
    """A session config for the worked example's account, with some settings changed."""
    return SessionConfig(role, version, sp_id=SP_ID, secret=SECRET, **overrides)


def drain(session: Session) -> list[Event]:
    """Every pending event; a CmppRemoteError from `next_event` propagates."""
    events: list[Event] = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def drain_all(session: Session) -> list[Event | CmppRemoteError]:
    """Every pending event, with a raised CmppRemoteError recorded in its place."""
    out: list[Event | CmppRemoteError] = []
    while True:
        try:
            event = session.next_event()
        except CmppRemoteError as exc:
            out.append(exc)
            continue
        if event is None:
            return out
        out.append(event)


def pump(a: Session, b: Session, now: float) -> None:
    """Move bytes between two sessions until neither has anything to write.

    Bytes for a session that is already closed are dropped, as a closed
    transport would drop them.
    """
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.data_to_send()
            if data and not dst.closed:
                dst.receive_data(data, now)
                moved = True


def established_pair(client_cfg: SessionConfig, server_cfg: SessionConfig,
                     now: float = 0.0) -> tuple[Session, Session]:
    """A client and a server logged in through a real CONNECT / CONNECT_RESP, events drained."""
    client, server = Session(client_cfg), Session(server_cfg)
    server.start(now)
    client.start(now, WALLCLOCK)
    pump(client, server, now)
    [login] = drain(server)
    assert isinstance(login, LoginRequested)
    assert server.check_login(server_cfg.secret)
    server.accept_login(server_cfg.secret, now)
    pump(client, server, now)
    [up] = drain(client)
    assert isinstance(up, LinkEstablished) and up.authenticator_ok
    assert isinstance(drain(server)[0], LinkEstablished)
    return client, server


def pair(version: Version = Version.V30, **overrides: Any) -> tuple[Session, Session]:
    """`established_pair` with the same settings on both sides."""
    return established_pair(config(Role.CLIENT, version, **overrides),
                            config(Role.SERVER, version, **overrides))


# --- hypothesis strategies ------------------------------------------------------

u8 = st.integers(0, U8_MAX)
u32 = st.integers(0, U32_MAX)
u64 = st.integers(0, U64_MAX)


def octets(width: int) -> st.SearchStrategy[str]:
    """An Octet String value that survives the wire: ASCII, no NUL, no trailing space."""
    chars = st.characters(min_codepoint=1, max_codepoint=127)
    return st.text(chars, max_size=width).map(lambda s: s.rstrip(" "))


def _v3(version: Version, value: st.SearchStrategy[Any], default: Any) -> st.SearchStrategy[Any]:
    """A 3.0-only field: drawn in 3.0, its default in 2.0."""
    return value if version is Version.V30 else st.just(default)


def _v2(version: Version, value: st.SearchStrategy[Any], default: Any) -> st.SearchStrategy[Any]:
    return value if version is Version.V20 else st.just(default)


def submits(version: Version, max_dests: int = 4) -> st.SearchStrategy[Submit]:
    width = 32 if version is Version.V30 else 21
    return st.builds(
        Submit,
        dest_terminal_ids=st.lists(octets(width), min_size=1, max_size=max_dests).map(tuple),
        msg_content=st.binary(max_size=255), msg_fmt=u8, src_id=octets(21), msg_src=octets(6),
        service_id=octets(10), registered_delivery=u8, pk_total=u8, pk_number=u8, tp_udhi=u8,
        tp_pid=u8, msg_level=u8, fee_user_type=u8, fee_terminal_id=octets(width), fee_type=octets(2),
        fee_code=octets(6), valid_time=octets(17), at_time=octets(17), msg_id=u64,
        fee_terminal_type=_v3(version, u8, 0), dest_terminal_type=_v3(version, u8, 0),
        link_id=_v3(version, octets(20), ""), reserve=_v2(version, octets(8), ""),
    )


def delivers(version: Version) -> st.SearchStrategy[Deliver]:
    return st.builds(
        Deliver, msg_id=u64, dest_id=octets(21),
        src_terminal_id=octets(32 if version is Version.V30 else 21),
        msg_content=st.binary(max_size=255), msg_fmt=u8, registered_delivery=u8,
        service_id=octets(10), tp_pid=u8, tp_udhi=u8,
        src_terminal_type=_v3(version, u8, 0), link_id=_v3(version, octets(20), ""),
        reserved=_v2(version, octets(8), ""),
    )


def reports(version: Version) -> st.SearchStrategy[StatusReport]:
    return st.builds(
        StatusReport, msg_id=u64, stat=octets(7), submit_time=octets(10), done_time=octets(10),
        dest_terminal_id=octets(32 if version is Version.V30 else 21), smsc_sequence=u32,
    )


def pdus(cls: type[Pdu], version: Version) -> st.SearchStrategy[Pdu]:
    """Any valid PDU of `cls` for `version` (every field within its width)."""
    status = u32 if version is Version.V30 else u8
    strategies: dict[type[Pdu], st.SearchStrategy[Pdu]] = {
        Connect: st.builds(Connect, octets(6), st.binary(min_size=16, max_size=16), u8, u32),
        ConnectResp: st.builds(ConnectResp, status, st.binary(min_size=16, max_size=16), u8),
        Terminate: st.just(Terminate()),
        TerminateResp: st.just(TerminateResp()),
        Submit: submits(version),
        SubmitResp: st.builds(SubmitResp, u64, status),
        Deliver: delivers(version),
        DeliverResp: st.builds(DeliverResp, u64, status),
        Query: st.builds(Query, octets(8), u8, octets(10), octets(8)),
        QueryResp: st.builds(QueryResp, octets(8), u8, octets(10), u32, u32, u32, u32, u32, u32,
                             u32, u32),
        Cancel: st.builds(Cancel, u64),
        CancelResp: st.builds(CancelResp, status),
        ActiveTest: st.just(ActiveTest()),
        ActiveTestResp: st.builds(ActiveTestResp, u8),
    }
    return strategies[cls]
