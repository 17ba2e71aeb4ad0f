"""Behaviours pinned down after review: flow-control episodes, TERMINATE timing, version refusal,
MO repeats, account files and log rendering."""

from __future__ import annotations

import io
import json
import pathlib
from typing import Any

import pytest
import structlog

from cmpp_helpers import WALLCLOCK, config, drain, established_pair
from smsgw import logs
from smsgw.protocol.cmpp import (
    ConnectResp,
    LinkClosed,
    LoginRejected,
    Role,
    Session,
    State,
    Submit,
    SubmitReceived,
    SubmitResp,
    Version,
    split_text,
)
from smsgw.simulator import load_accounts
from test_carrier_unit import attach, make_link
from twisted.internet.task import Clock

from smsgw.protocol.cmpp import MSG_FMT_UCS2, Deliver


def submit() -> Submit:
    return Submit(("13800138000",), b"hi", src_id="10690001")


def test_a_window_of_result_8_answers_is_one_flow_control_episode() -> None:
    """Sixteen Result 8 answers to one window pause the link once, for the first pause, not the cap."""
    client, server = established_pair(config(Role.CLIENT), config(Role.SERVER))
    for _ in range(16):
        client.send(submit(), 0.0)
    server.receive_data(client.data_to_send(), 0.0)
    for event in drain(server):
        assert isinstance(event, SubmitReceived)
        server.respond(event.seq, SubmitResp(0, 8))
    client.receive_data(server.data_to_send(), 0.0)
    assert client.queued == 16 and client.in_flight == 0
    assert client.get_timer() == pytest.approx(client.config.flow_control_pause)


def test_terminate_is_not_resent_and_closes_after_one_timeout() -> None:
    """An unanswered TERMINATE closes the session after T, without a second TERMINATE."""
    client, _ = established_pair(config(Role.CLIENT, response_timeout=10.0), config(Role.SERVER))
    client.terminate(0.0)
    first = client.data_to_send()
    assert len(first) == 12
    client.handle_timer(10.0)
    assert client.data_to_send() == b""
    assert client.state is State.CLOSED
    assert isinstance(drain(client)[-1], LinkClosed)


def test_cmpp20_server_refuses_a_30_login_with_status_4() -> None:
    """A 2.0-only ISMG answers a 3.0 CONNECT with Status 4 (version too high)."""
    client = Session(config(Role.CLIENT))
    server = Session(config(Role.SERVER, Version.V20))
    server.start(0.0)
    client.start(0.0, WALLCLOCK)
    server.receive_data(client.data_to_send(), 0.0)
    drain(server)
    assert server.check_login(client.config.secret)
    server.accept_login(client.config.secret, 0.0)
    client.receive_data(server.data_to_send(), 0.0)
    events = drain(client)
    assert isinstance(events[0], LoginRejected) and events[0].status == 4


def test_client_adopts_20_when_the_ismg_accepts_it_so() -> None:
    """A CONNECT_RESP with Status 0 and Version 0x20 makes a 3.0 client speak 2.0."""
    from smsgw.protocol.cmpp import authenticator_ismg, encode_pdu

    client = Session(config(Role.CLIENT))
    client.start(0.0, WALLCLOCK)
    connect_bytes = client.data_to_send()
    auth_src = connect_bytes[18:34]
    resp = ConnectResp(0, authenticator_ismg(0, auth_src, client.config.secret, status_width=1), 0x20)
    client.receive_data(encode_pdu(resp, 1, Version.V20), 0.0)
    drain(client)
    assert client.version is Version.V20


def test_repeated_parts_of_a_completed_long_mo_are_dropped() -> None:
    """A part that arrives again after its long MO was handed over does not start a bogus new message."""
    clock = Clock()
    link, log = make_link(clock, connections=1)
    a = attach(link, clock, 0)
    text = "您好，请问办理进度如何？" * 8
    parts = [Deliver(i + 1, "10690001", "+8613800138000", seg.content, MSG_FMT_UCS2, 0, tp_udhi=1)
             for i, seg in enumerate(split_text(text, MSG_FMT_UCS2, reference=9))]
    assert len(parts) > 1
    for part in (*parts, parts[0]):
        a.server.send(part, clock.seconds())
        a.write_to_link()
    clock.advance(3600)
    assert log == [("mo", text)]


def test_accounts_file_insists_on_quoted_ids(tmp_path: pathlib.Path) -> None:
    """An unquoted 001234 (YAML reads it as 668) is refused with a hint to quote it."""
    path = tmp_path / "accounts.yaml"
    path.write_text("001234: secret\n", encoding="utf-8")
    with pytest.raises(ValueError, match="quote it"):
        load_accounts(str(path))
    path.write_text('"001234": "secret"\n', encoding="utf-8")
    assert load_accounts(str(path)) == {"001234": "secret"}


def test_json_log_lines_keep_chinese_readable_and_carry_an_offset() -> None:
    """JSON log lines hold Chinese text as is and a timestamp with its UTC offset."""
    out = io.StringIO()
    saved = structlog.get_config()
    logs.configure("info", out, json=True)
    try:
        structlog.get_logger("t").info("demo_mo", text="收到，谢谢")
    finally:  # as it was: a level left at warning would hide later tests' captured info lines
        structlog.configure(**saved)
    line = out.getvalue().strip()
    assert "收到，谢谢" in line
    record: dict[str, Any] = json.loads(line)
    assert record["event"] == "demo_mo" and record["level"] == "info"
    assert record["timestamp"][-6] in "+-"

