"""CONNECT authentication: timestamps and the two MD5 authenticators (protocol notes §5).

Everything here is a pure function of its arguments; the caller reads the clock
once and passes the same instant to `make_timestamp`, so the hashed timestamp
and the CONNECT `Timestamp` field can never disagree across a second boundary.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac

from smsgw.protocol.cmpp._errors import CmppLocalError

#: Source_Addr is a 6-byte field; `pad_sp_id` NUL-pads shorter SP_Ids to this.
SP_ID_SIZE = 6

#: The status is hashed as it appears on the wire: 4 bytes in 3.0, 1 byte in 2.0.
STATUS_WIDTH_V30 = 4
STATUS_WIDTH_V20 = 1


def make_timestamp(dt: datetime.datetime) -> tuple[str, int]:
    """Format an instant as the CONNECT timestamp.

    Args:
        dt: local time (China, UTC+8), read once by the caller.

    Returns:
        The zero-padded ``"MMDDHHMMSS"`` text that goes into the MD5, and the
        same digits as the integer that goes into the U32 field.
    """
    # Zero padding matters: "%d" drops the leading 0 for Jan-Sep and breaks auth.
    text = f"{dt.month:02d}{dt.day:02d}{dt.hour:02d}{dt.minute:02d}{dt.second:02d}"
    return text, int(text)


def authenticator_source(
    sp_id: str, secret: str, timestamp: str, *, pad_sp_id: bool = False
) -> bytes:
    """Compute AuthenticatorSource = MD5(SP_Id, 9 NULs, secret, timestamp).

    Args:
        sp_id: the SP_Id sent as Source_Addr (normally 6 ASCII digits).
        secret: the shared secret agreed with the carrier.
        timestamp: the 10-digit ``"MMDDHHMMSS"`` text from `make_timestamp`.
        pad_sp_id: NUL-pad an SP_Id shorter than 6 bytes before hashing
            (gocmpp since 2019); the default hashes it as-is (SMSGate, go_cmpp).

    Returns:
        The raw 16-byte digest for the CONNECT AuthenticatorSource field.

    Raises:
        CmppLocalError: if an argument is not ASCII or the timestamp is not
            10 digits.
    """
    sp = _ascii("SP_Id", sp_id)
    if pad_sp_id:
        sp = sp.ljust(SP_ID_SIZE, b"\0")
    if len(timestamp) != 10 or not (timestamp.isascii() and timestamp.isdigit()):
        raise CmppLocalError(f"timestamp must be 10 digits MMDDHHMMSS, got {timestamp!r}")
    data = sp + b"\0" * 9 + _ascii("shared secret", secret) + timestamp.encode("ascii")
    return hashlib.md5(data).digest()


def authenticator_ismg(
    status: int, auth_source: bytes, secret: str, *, status_width: int
) -> bytes:
    """Compute AuthenticatorISMG = MD5(Status, AuthenticatorSource, secret).

    Args:
        status: the CONNECT_RESP Status value.
        auth_source: the 16 raw AuthenticatorSource bytes of the CONNECT.
        secret: the shared secret.
        status_width: bytes of the big-endian status as on the wire:
            4 for CMPP 3.0, 1 for CMPP 2.0.

    Returns:
        The raw 16-byte digest for the CONNECT_RESP AuthenticatorISMG field.

    Raises:
        CmppLocalError: if status_width is not 1 or 4, the status does not fit
            it, or the secret is not ASCII.
    """
    if status_width not in (STATUS_WIDTH_V20, STATUS_WIDTH_V30):
        raise CmppLocalError(f"status_width must be 1 (CMPP 2.0) or 4 (3.0), got {status_width}")
    if not 0 <= status < 1 << (8 * status_width):
        raise CmppLocalError(f"status {status} does not fit in {status_width} byte(s)")
    data = status.to_bytes(status_width, "big") + auth_source + _ascii("shared secret", secret)
    return hashlib.md5(data).digest()


def verify_authenticator_ismg(
    received: bytes, status: int, auth_source: bytes, secret: str
) -> bool:
    """Check a received AuthenticatorISMG, accepting either status width.

    Either width is accepted because some servers (SMSGate) hash a 4-byte status
    even on 2.0 links.

    Args:
        received: the AuthenticatorISMG bytes from the CONNECT_RESP.
        status: the Status value of that CONNECT_RESP.
        auth_source: the AuthenticatorSource we sent.
        secret: the shared secret.

    Returns:
        True if `received` matches the digest for a 4-byte or a 1-byte status.

    Raises:
        CmppLocalError: if the secret is not ASCII.
    """
    for width in (STATUS_WIDTH_V30, STATUS_WIDTH_V20):
        if not 0 <= status < 1 << (8 * width):
            continue
        expected = authenticator_ismg(status, auth_source, secret, status_width=width)
        if hmac.compare_digest(expected, received):
            return True
    return False


def _ascii(what: str, value: str) -> bytes:
    """Encode a credential as ASCII, or say which one is wrong (without echoing secrets)."""
    try:
        return value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise CmppLocalError(
            f"{what} must be ASCII: non-ASCII character at index {exc.start}"
        ) from None
