"""File import: CSV, TXT and XLSX files of numbers (and texts or template parameters) sent as messages.

Two ways in (docs/file-import.md): the ``smsgw import FILE`` command, which previews the file,
asks, and sends through the daemon's REST API (`smsgw.adapters.file.command`); and watched
folders configured under ``file_import:`` (`smsgw.adapters.file.service.FileInbox`),
registered as the ``file`` entry point of the ``smsgw.adapters`` group. Both read and plan
with the same pure functions re-exported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smsgw.adapter import AdapterContext, AdapterService
    from smsgw.adapters.file._plan import (
        ImportOptions,
        Outgoing,
        Plan,
        PlannedRow,
        build_plan,
        chunks,
        plan_sheet,
    )
    from smsgw.adapters.file._read import FileImportError, Sheet, decode_text, read_file
    from smsgw.adapters.file._report import ImportAborted, Outcomes, failure_csv, preview, result_csv

__all__ = ["FileImportError", "ImportAborted", "ImportOptions", "Outcomes", "Outgoing", "Plan", "PlannedRow",
           "Sheet", "build_plan", "chunks", "decode_text", "failure_csv", "make_services", "plan_sheet", "preview",
           "read_file", "result_csv"]

# Loaded on first use: every `smsgw` command imports this package for the parser of `smsgw import`,
# and the reader, the plan and the validator it uses take some 70 ms to import.
_LAZY = {**dict.fromkeys(("ImportOptions", "Outgoing", "Plan", "PlannedRow", "build_plan", "chunks", "plan_sheet"),
                         "_plan"),
         **dict.fromkeys(("FileImportError", "Sheet", "decode_text", "read_file"), "_read"),
         **dict.fromkeys(("ImportAborted", "Outcomes", "failure_csv", "preview", "result_csv"), "_report")}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def make_services(context: AdapterContext) -> list[AdapterService]:
    """One `FileInbox` per configured watched folder; none without ``file_import.inboxes``."""
    inboxes = context.config.file_import.inboxes
    if not inboxes:
        return []
    from smsgw.adapters.file.service import FileInbox

    return [FileInbox(cfg, context.gateway, context.validator, context.accounts[cfg.account], context.reactor,
                      batch=context.config.api.max_batch) for cfg in inboxes]
