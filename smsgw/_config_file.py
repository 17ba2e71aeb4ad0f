"""The `file_import:` section: watched folders whose files are imported as messages (docs/file-import.md).

Kept apart from config.py like `db_sources:`; `smsgw.config` re-exports it.
"""

from __future__ import annotations

import os
from typing import Annotated, Mapping

from pydantic import AfterValidator, Field, model_validator

from smsgw._yaml_source import Section as _Section
from smsgw._yaml_source import SubProblem
from smsgw._yaml_source import bad as _bad
from smsgw._yaml_source import parsed_by
from smsgw.templates import check_name, parse

__all__ = ["FileImportSection", "FileInboxConfig"]


_template_text = parsed_by(parse, "write the common text, or a text with {column} placeholders named by the header row")


def _template_name(value: str) -> str:
    problem = check_name(value)
    if problem is not None:
        raise _bad(problem, "write the name of a template defined on this gateway")
    return value


class FileInboxConfig(_Section):
    """One watched folder: files dropped into `dir` are sent as `account`."""

    dir: Annotated[str, Field(min_length=1)]
    account: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    text: Annotated[str, AfterValidator(_template_text)] | None = None  # common text, or {column} placeholders
    template: Annotated[str, AfterValidator(_template_name)] | None = None  # a named template
    priority: Annotated[int, Field(ge=0, le=9)] = 0  # imports are mass sends: bulk
    report: bool = True
    poll_interval: Annotated[float, Field(gt=0)] = 5.0
    done_dir: Annotated[str, Field(min_length=1)] | None = None  # default <dir>/done
    failed_dir: Annotated[str, Field(min_length=1)] | None = None  # default <dir>/failed

    @model_validator(mode="after")
    def _text_or_template(self) -> FileInboxConfig:
        if self.text is not None and self.template is not None:
            raise _bad("both text and template are set",
                       "keep text (a common text, or {column} placeholders) or template (a named one), not both")
        return self

    def path(self) -> str:
        """`dir` as an absolute path (a relative one is under the daemon's working directory)."""
        return os.path.abspath(self.dir)

    def done_path(self) -> str:
        return os.path.abspath(self.done_dir) if self.done_dir else os.path.join(self.path(), "done")

    def failed_path(self) -> str:
        return os.path.abspath(self.failed_dir) if self.failed_dir else os.path.join(self.path(), "failed")


class FileImportSection(_Section):
    inboxes: tuple[FileInboxConfig, ...] = ()

    def problems(self, interfaces: Mapping[str, tuple[str, ...]]) -> list[SubProblem]:
        """What the types alone cannot say. `interfaces`: each account's allowed interfaces (empty: all)."""
        out: list[SubProblem] = []
        seen: dict[str, int] = {}
        for i, inbox in enumerate(self.inboxes):
            if inbox.account not in interfaces:
                out.append((("inboxes", i, "account"), f"no account is named {inbox.account!r}",
                            "add it under accounts: (its limits and extension apply to the files' messages)"))
            elif interfaces[inbox.account] and "file" not in interfaces[inbox.account]:
                out.append((("inboxes", i, "account"), f"account {inbox.account!r} may not use the file interface",
                            "add file to that account's interfaces"))
            path = inbox.path()
            if path in seen:
                out.append((("inboxes", i, "dir"), f"file_import.inboxes[{seen[path]}] watches the same folder",
                            "give every inbox its own folder"))
            seen.setdefault(path, i)
            for key, other in (("done_dir", inbox.done_path()), ("failed_dir", inbox.failed_path())):
                if other == path:
                    out.append((("inboxes", i, key), f"{key} is the watched folder itself",
                                f"leave {key} out (it defaults to a folder inside dir) or name another folder"))
        return out
