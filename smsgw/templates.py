"""Message templates: named texts with ``{parameter}`` placeholders (docs/templates.md).

A template's text holds placeholders such as ``{name}`` or ``{验证码}`` (letters,
digits and underscores, any script); ``{{`` and ``}}`` stand for literal braces.
Rendering needs exactly the template's parameters: a missing or an extra one is
a `Problem`, so a caller learns every mistake of a row at once.

No I/O here: the registry the gateway keeps (smsgw.pipeline) and the store's
``templates`` table hold `Template` values; this module parses and renders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from smsgw.model import Problem

__all__ = ["MAX_NAME", "MAX_TEXT", "Template", "TemplateError", "check_name", "parse", "render"]

MAX_NAME = 64
MAX_TEXT = 2000
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_PARAM = re.compile(r"\w{1,64}")


class TemplateError(ValueError):
    """A template text that cannot be parsed: names the position and the fix."""


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    text: str
    pre_approved: bool = False  # messages rendered from it skip content review (the review rules decide)
    params: tuple[str, ...] = ()  # placeholders in order of first appearance (set by `parse`)
    updated_at: float = 0.0
    updated_by: str = ""

    @classmethod
    def create(cls, name: str, text: str, pre_approved: bool = False, updated_at: float = 0.0,
               updated_by: str = "") -> Template:
        """A checked template (its placeholders parsed).

        Raises:
            TemplateError: a bad name or text, saying which and how to fix it.
        """
        problem = check_name(name)
        if problem is not None:
            raise TemplateError(problem)
        return cls(name, text, bool(pre_approved), parse(text), updated_at, updated_by)


def check_name(name: object) -> str | None:
    """Why `name` is not a usable template name, or None when it is."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return (f"template name {str(name)[:70]!r} is not usable: 1 to {MAX_NAME} characters, letters, digits, "
                "'_', '.' and '-', not starting with '.' or '-' (e.g. verify_code)")
    return None


def parse(text: object) -> tuple[str, ...]:
    """The placeholders of a template text, in order of first appearance.

    Raises:
        TemplateError: empty or over-long text, an unmatched brace or a bad placeholder name.
    """
    if not isinstance(text, str) or not text.strip():
        raise TemplateError("the template text is empty: write the message, with {parameter} placeholders")
    if len(text) > MAX_TEXT:
        raise TemplateError(f"the template text is {len(text)} characters long, at most {MAX_TEXT}")
    names: dict[str, None] = {}
    for m in _TOKEN.finditer(text):
        token = m.group(0)
        if token in ("{{", "}}"):
            continue
        if token in ("{", "}"):
            raise TemplateError(f"unmatched {token!r} at character {m.start() + 1}: write {token * 2} for a "
                                "literal brace, or close the placeholder")
        name = m.group(1)
        if not _PARAM.fullmatch(name):
            raise TemplateError(f"placeholder {token[:70]!r} at character {m.start() + 1} is not a parameter name: "
                                "use letters, digits and '_' only, e.g. {code}")
        names[name] = None
    return tuple(names)


def render(template: Template, params: Mapping[str, object] | None, where: str = "") -> str | list[Problem]:
    """The text with every placeholder replaced, or every problem with the parameters.

    Values are turned into text with ``str`` (a number from a spreadsheet renders as written:
    integral floats lose their ``.0``). `where` prefixes the problems' locations, e.g. "[3]".
    """
    given = dict(params or {})
    problems = []
    missing = [p for p in template.params if p not in given]
    if missing:
        problems.append(Problem(f"{where}.params" if where else "params", "missing_params",
                                f"template {template.name!r} needs {_listed(missing)}: give "
                                f"{'it' if len(missing) == 1 else 'them'} in params"))
    odd = [p for p, v in given.items() if v is not None and not isinstance(v, (str, int, float))]
    if odd:
        problems.append(Problem(f"{where}.params" if where else "params", "bad_params",
                                f"{_listed(odd)} must be text or a number, not a list or an object"))
    extra = [p for p in given if p not in template.params]
    if extra:
        expected = _listed(template.params) if template.params else "no parameters"
        problems.append(Problem(f"{where}.params" if where else "params", "unknown_params",
                                f"template {template.name!r} has no {_listed(extra)}; it takes {expected}"))
    if problems:
        return problems
    return _TOKEN.sub(lambda m: _value(m, given), template.text)


def _value(m: re.Match[str], given: Mapping[str, object]) -> str:
    token = m.group(0)
    if token == "{{":
        return "{"
    if token == "}}":
        return "}"
    value = given[m.group(1)]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _listed(names: Iterable[str]) -> str:
    return ", ".join(f"{{{n}}}" for n in names)
