"""Tests for CONNECT authentication (protocol notes §5)."""

from __future__ import annotations

import datetime
import hashlib

import pytest

from smsgw.protocol.cmpp._auth import (
    authenticator_ismg,
    authenticator_source,
    make_timestamp,
    verify_authenticator_ismg,
)
from smsgw.protocol.cmpp._errors import CmppLocalError

# The worked example of notes §5.3.
SP_ID = "901234"
SECRET = "abc123"
TIMESTAMP = "0305080910"
SOURCE = bytes.fromhex("5e648e76ec5bbf9b0dad02f5743a59b6")
ISMG_V30 = bytes.fromhex("dbd1b9e0fa6af8a0aee4e2b9ee59d9f5")
ISMG_V20 = bytes.fromhex("a4cbaa94133136b7e519ac48967bb48f")


def test_make_timestamp_golden() -> None:
    """The worked example's instant gives the zero-padded text and its integer."""
    assert make_timestamp(datetime.datetime(2024, 3, 5, 8, 9, 10)) == ("0305080910", 305080910)


def test_make_timestamp_pads_every_field() -> None:
    """Every field is two digits, so the text is always 10 characters long."""
    assert make_timestamp(datetime.datetime(2024, 1, 2, 3, 4, 5)) == ("0102030405", 102030405)
    assert make_timestamp(datetime.datetime(2024, 12, 31, 23, 59, 59)) == (
        "1231235959",
        1231235959,
    )


def test_make_timestamp_ignores_microseconds() -> None:
    """Sub-second precision does not leak into the timestamp."""
    assert make_timestamp(datetime.datetime(2024, 3, 5, 8, 9, 10, 999_999))[0] == TIMESTAMP


def test_authenticator_source_golden() -> None:
    """The worked example's AuthenticatorSource matches the notes."""
    assert authenticator_source(SP_ID, SECRET, TIMESTAMP) == SOURCE


def test_authenticator_source_is_md5_of_the_documented_layout() -> None:
    """The digest covers SP_Id, nine NULs, the secret and the timestamp, in that order."""
    expected = hashlib.md5(b"901234" + b"\0" * 9 + b"abc123" + b"0305080910").digest()
    assert authenticator_source(SP_ID, SECRET, TIMESTAMP) == expected


def test_short_sp_id_is_unpadded_by_default() -> None:
    """A short SP_Id is hashed as-is unless padding is asked for."""
    unpadded = hashlib.md5(b"1234" + b"\0" * 9 + b"pw" + TIMESTAMP.encode()).digest()
    padded = hashlib.md5(b"1234\0\0" + b"\0" * 9 + b"pw" + TIMESTAMP.encode()).digest()
    assert authenticator_source("1234", "pw", TIMESTAMP) == unpadded
    assert authenticator_source("1234", "pw", TIMESTAMP, pad_sp_id=True) == padded


def test_padding_does_not_change_a_six_digit_sp_id() -> None:
    """For the usual 6-digit SP_Id both conventions agree."""
    assert authenticator_source(SP_ID, SECRET, TIMESTAMP, pad_sp_id=True) == SOURCE


@pytest.mark.parametrize(
    ("sp_id", "secret", "what"), [("90123é", SECRET, "SP_Id"), (SP_ID, "pässword", "secret")]
)
def test_non_ascii_credentials_are_rejected(sp_id: str, secret: str, what: str) -> None:
    """A non-ASCII SP_Id or secret raises a local error naming which one, without the secret."""
    with pytest.raises(CmppLocalError, match=what) as info:
        authenticator_source(sp_id, secret, TIMESTAMP)
    assert "pässword" not in str(info.value)


@pytest.mark.parametrize("timestamp", ["305080910", "03050809100", "03-5080910", "０３０５０８０９１０"])
def test_malformed_timestamp_is_rejected(timestamp: str) -> None:
    """A timestamp that is not exactly 10 ASCII digits raises a local error."""
    with pytest.raises(CmppLocalError, match="10 digits"):
        authenticator_source(SP_ID, SECRET, timestamp)


def test_authenticator_ismg_golden_v30() -> None:
    """CMPP 3.0 hashes a 4-byte status and matches the worked example."""
    assert authenticator_ismg(0, SOURCE, SECRET, status_width=4) == ISMG_V30


def test_authenticator_ismg_golden_v20() -> None:
    """CMPP 2.0 hashes a 1-byte status and matches the worked example."""
    assert authenticator_ismg(0, SOURCE, SECRET, status_width=1) == ISMG_V20


@pytest.mark.parametrize("width", [0, 2, 8])
def test_authenticator_ismg_rejects_other_widths(width: int) -> None:
    """Only the 1-byte and 4-byte status widths exist."""
    with pytest.raises(CmppLocalError, match="status_width"):
        authenticator_ismg(0, SOURCE, SECRET, status_width=width)


def test_authenticator_ismg_rejects_a_status_too_wide() -> None:
    """A status that does not fit the width raises a local error."""
    with pytest.raises(CmppLocalError, match="256"):
        authenticator_ismg(256, SOURCE, SECRET, status_width=1)


@pytest.mark.parametrize("received", [ISMG_V30, ISMG_V20])
def test_verify_accepts_either_status_width(received: bytes) -> None:
    """Verification succeeds whether the server hashed a 4-byte or a 1-byte status."""
    assert verify_authenticator_ismg(received, 0, SOURCE, SECRET)


def test_verify_rejects_wrong_secret_and_zeros() -> None:
    """A digest made with another secret, or an all-zero field, does not verify."""
    assert not verify_authenticator_ismg(ISMG_V30, 0, SOURCE, "other")
    assert not verify_authenticator_ismg(bytes(16), 0, SOURCE, SECRET)
    assert not verify_authenticator_ismg(ISMG_V30, 3, SOURCE, SECRET)


def test_verify_handles_a_status_too_wide_for_one_byte() -> None:
    """A status above 255 is only checked with the 4-byte width, without raising."""
    received = authenticator_ismg(300, SOURCE, SECRET, status_width=4)
    assert verify_authenticator_ismg(received, 300, SOURCE, SECRET)
    assert not verify_authenticator_ismg(ISMG_V20, 300, SOURCE, SECRET)
