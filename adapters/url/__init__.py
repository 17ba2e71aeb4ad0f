"""Kannel's sendsms URL interface: ``GET``/``POST /cgi-bin/sendsms`` (docs/url-interface.md).

Configured under ``url_interface:``; registered as the ``url`` entry point of the
``smsgw.adapters`` group. Systems written for Kannel send through it unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smsgw.adapter import AdapterContext, AdapterService


def make_services(context: AdapterContext) -> list[AdapterService]:
    """The listener when ``url_interface.enabled``; else nothing."""
    section = context.config.url_interface
    if not section.enabled:
        return []
    from smsgw.adapters.url.service import UrlInterface

    return [UrlInterface(context.gateway, list(context.accounts.values()), context.reactor, listen=section.listen,
                         port=section.port, max_body_bytes=section.max_body_bytes,
                         request_timeout=section.request_timeout,
                         service_codes=[c.service_code for c in context.config.carriers],
                         authenticator=context.authenticator,
                         tls=section.tls.files() if section.tls is not None else None)]
