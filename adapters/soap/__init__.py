"""The SOAP 1.1 WebService: ``POST /ws/sms``, its WSDL at ``GET /ws/sms?wsdl`` (docs/soap.md).

Configured under ``soap_interface:``; registered as the ``soap`` entry point of the
``smsgw.adapters`` group. Document/literal wrapped, so Java (wsimport), .NET
(svcutil) and zeep generate plain clients from the WSDL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smsgw.adapter import AdapterContext, AdapterService


def make_services(context: AdapterContext) -> list[AdapterService]:
    """The listener when ``soap_interface.enabled``; else nothing."""
    section = context.config.soap_interface
    if not section.enabled:
        return []
    from smsgw.adapters.soap.service import SoapInterface

    return [SoapInterface(context.gateway, list(context.accounts.values()), context.reactor, listen=section.listen,
                          port=section.port, max_body_bytes=section.max_body_bytes,
                          request_timeout=section.request_timeout, authenticator=context.authenticator,
                          tls=section.tls.files() if section.tls is not None else None)]
