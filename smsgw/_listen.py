"""Listening for HTTP, with or without TLS: one helper for every HTTP listener (REST, URL, SOAP).

    port = listen_http(reactor, 8080, site, interface="127.0.0.1", tls=TlsFiles(cert, key))

With `tls`, the certificate file (PEM: the server's certificate first, then any
intermediate certificates) and the key file (PEM, unencrypted) are read once, when
listening starts; TLS 1.2 and 1.3 only (Twisted's defaults). `tls_problems` is what
`check-config` reports for the same files, so a bad file is found before the daemon
starts, with the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.interfaces import IListeningPort, IProtocolFactory

__all__ = ["TlsError", "TlsFiles", "listen_http", "load_tls", "tls_problems"]

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files of a TLS listener."""

    cert: str  # the server's certificate, then the intermediates
    key: str  # its private key, not encrypted


def listen_http(reactor: Any, port: int, factory: IProtocolFactory, *, interface: str,
                tls: TlsFiles | None = None) -> IListeningPort:
    """Listen on `interface`:`port`, over TLS when `tls` is given.

    Raises:
        TlsError: a file cannot be read or used (the message names it and the fix).
        twisted.internet.error.CannotListenError: the port is taken or the address is not this host's.
    """
    if tls is None:
        listening: IListeningPort = reactor.listenTCP(port, factory, interface=interface)
    else:
        listening = reactor.listenSSL(port, factory, load_tls(tls), interface=interface)
    return listening


class TlsError(Exception):
    """A certificate or key file that cannot be used: `key` (cert or key), `what` is wrong, `fix`."""

    def __init__(self, key: str, path: str, what: str, fix: str) -> None:
        super().__init__(f"tls.{key} {path}: {what} — fix: {fix}")
        self.key = key
        self.path = path
        self.what = what
        self.fix = fix


def load_tls(tls: TlsFiles) -> Any:
    """A Twisted context factory (CertificateOptions) serving `tls.cert` with `tls.key`.

    Raises:
        TlsError: unreadable files, no certificate, a key that does not parse or does not match.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from OpenSSL import SSL
    from twisted.internet.ssl import CertificateOptions

    cert_pem, key_pem = _read(tls.cert, "cert"), _read(tls.key, "key")
    blocks = _PEM_CERT.findall(cert_pem)
    if not blocks:
        raise TlsError("cert", tls.cert, "no PEM certificate in it (no '-----BEGIN CERTIFICATE-----')",
                       "give the server certificate in PEM, followed by any intermediate certificates")
    try:
        chain = [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError:
        raise TlsError("cert", tls.cert, "a certificate in it does not parse",
                       "give PEM certificates as the certificate authority issued them") from None
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):  # TypeError: the key is encrypted
        raise TlsError("key", tls.key, "not an unencrypted PEM private key",
                       "give the key in PEM without a passphrase (openssl pkey -in KEY -out KEY.pem)") from None
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.use_certificate(chain[0])
        context.use_privatekey(key)  # type: ignore[arg-type]  # DH/X448 keys: refused below, as they must be
        context.check_privatekey()
    except (SSL.Error, TypeError):
        raise TlsError("key", tls.key, f"not the key of the certificate in {tls.cert}",
                       "give the key the certificate was issued for (the server certificate comes first in "
                       "tls.cert)") from None
    # pyOpenSSL takes cryptography's objects (its own X509/PKey are deprecated); Twisted's annotations predate that.
    return CertificateOptions(privateKey=cast(Any, key), certificate=cast(Any, chain[0]),
                              extraCertChain=cast(Any, chain[1:]))


def tls_problems(tls: TlsFiles) -> list[tuple[str, str, str]]:
    """(key, what, fix) for each problem `load_tls` would raise; [] when the files are usable."""
    from importlib.util import find_spec

    if find_spec("OpenSSL") is None:
        return [("cert", "TLS needs pyOpenSSL, which is not installed",
                 "reinstall smsgw (it installs twisted[tls]), or pip install 'twisted[tls]'")]
    try:
        load_tls(tls)
    except TlsError as exc:
        return [(exc.key, f"{exc.path}: {exc.what}", exc.fix)]
    return []


def _read(path: str, which: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise TlsError(which, path, f"cannot read it: {exc.strerror or exc}",
                       "give the path of a PEM file the daemon's user can read") from None
