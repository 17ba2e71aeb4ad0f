"""Read the configuration file into plain data with the line of every key, and map errors back to lines.

Only the configuration modules use this module: `smsgw.config` and the sections it re-exports,
which also take their common pieces from here (`bad`, `Section`, `SubProblem`).

PyYAML's `safe_load` loses two things an operator needs in an error message: where a
value came from, and whether a key was written twice (it silently keeps the last). So
the file is *composed* into nodes, which carry their marks, and turned into data here:
every path (``("carriers", 0, "port")``) maps to a 1-based line.

Two deliberate departures from PyYAML's YAML 1.1 reading, both to stop values changing
meaning behind the operator's back (the "Norway problem"):

- Plain scalars become bool only for true/false (any case style), never yes/no/on/off;
  ints only in plain decimal (``0``, ``-12``, ``8080``), so ``001234`` stays the text
  "001234" instead of the octal number 668, and ``12:30`` stays text instead of the
  sexagesimal 750; floats need a dot or an exponent; timestamps stay text.
  Explicit tags (``!!int 0x1F``) still work as in YAML 1.1.
- ``${VAR}`` and ``${VAR:-default}`` in any scalar value (keys excepted) are replaced
  from the environment *before* the type is decided, so ``port: ${PORT:-8080}`` is an
  int and ``secret: "${SECRET}"`` stays a string. ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

Path = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"

#: Aliases can make a small file expand exponentially ("billion laughs"); a real
#: configuration has a few hundred nodes.
MAX_NODES = 100_000

_SYNTAX_FIX = ("correct the YAML at that line: indent with spaces (not tabs), quote values that "
               "contain ': ' or ' #' or start with a special character, close every quote and bracket")

# `$${` is an escaped literal; `${NAME}` / `${NAME:-default}` a variable; a lone `${` is a mistake.
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}|\$\{")


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """Something wrong with the file itself (syntax, duplicate key, unset variable)."""

    path: Path
    line: int
    what: str
    fix: str


@dataclass(slots=True)
class Source:
    """The file as plain data (dicts, lists, scalars), the line of each path, and its problems."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[SourceProblem] = field(default_factory=list)

    def line_of(self, path: Path) -> int:
        """The line of `path`, or of its nearest ancestor the file has (a missing key: its mapping)."""
        for n in range(len(path), -1, -1):
            line = self.lines.get(path[:n])
            if line is not None:
                return line
        return 1


class _Resolver(BaseResolver):
    """Implicit types close to YAML 1.2's core schema (see the module docstring)."""


_Resolver.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                list("tTfF"))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"),
                                list("-+0123456789"))
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"),
                                ["~", "n", "N", ""])
_Resolver.add_implicit_resolver(_MERGE, re.compile(r"^<<$"), ["<"])


class _Loader(Reader, Scanner, Parser, Composer, _Resolver):
    """PyYAML's pure-Python composer, substituting variables in scalar values as it goes."""

    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)
        self._env = env
        self._composing_key = False
        self.node_problems: dict[int, list[tuple[str, str]]] = {}  # id(node) -> (what, fix)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # A mapping composes its keys with index None and its values with their key node.
        self._composing_key = isinstance(parent, MappingNode) and index is None
        return super().compose_node(parent, index)

    def compose_scalar_node(self, anchor: Any) -> ScalarNode:
        event = self.get_event()  # type: ignore[no-untyped-call]  # (untyped in types-PyYAML)
        value: str = event.value
        problems: list[tuple[str, str]] = []
        if not self._composing_key and "$" in value:
            value, problems = substitute(value, self._env)
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolve(ScalarNode, value, event.implicit)  # type: ignore[no-untyped-call]
        node = ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)
        if problems:
            self.node_problems[id(node)] = problems
        if anchor is not None:
            self.anchors[anchor] = node
        return node


def substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[tuple[str, str]]]:
    """Replace ``${VAR}`` / ``${VAR:-default}``; return the text and (what, fix) problems.

    As in the shell, ``:-`` also applies when VAR is set but empty. An unset VAR without a
    default becomes "" (and a problem). Values are never quoted in problems: they may be secrets.
    """
    problems: list[tuple[str, str]] = []

    def one(m: re.Match[str]) -> str:
        whole, name, default = m.group(0), m.group(1), m.group(2)
        if whole == "$${":
            return "${"
        if name is None:
            problems.append(("a `${` that is not a well-formed ${NAME} or ${NAME:-default}",
                             "write ${NAME} or ${NAME:-default} (NAME: letters, digits, _), or $${ for a literal ${"))
            return whole
        value = env.get(name)
        if default is not None and not value:
            return default[2:]
        if value is None:
            problems.append((f"environment variable {name} is not set and ${{{name}}} has no default",
                             f"set {name} in the daemon's environment (systemd: Environment= or EnvironmentFile=), "
                             f"or write ${{{name}:-default}}"))
            return ""
        return value

    return _VAR.sub(one, text), problems


def read_source(text: str, env: Mapping[str, str]) -> Source:
    """Compose `text` and convert it to data; never raises for bad content."""
    try:
        loader = _Loader(text, env)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        return Source(None, {(): 1}, [_syntax_problem(exc)])
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        what = f"the control character #x{char:02x} is not allowed in YAML"
        return Source(None, {(): line}, [SourceProblem((), line, what, "remove or replace that character")])
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error above has a mark or position
        return Source(None, {(): 1}, [SourceProblem((), 1, f"not valid YAML ({type(exc).__name__})", _SYNTAX_FIX)])
    except RecursionError:
        return Source(None, {(): 1}, [SourceProblem((), 1, "the YAML is nested too deeply to read",
                                                    "flatten it: a configuration needs a few levels only")])
    if root is None:  # empty file, or only comments: every default applies
        return Source({}, {(): 1})
    return _Builder(loader.node_problems).build(root)


def _syntax_problem(exc: yaml.MarkedYAMLError) -> SourceProblem:
    # str(exc) would quote a snippet of the line, which may hold a secret: use the parts.
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    parts = [p for p in (exc.context, exc.problem) if p]
    if exc.context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
        parts[0] = f"{parts[0]} (started at line {exc.context_mark.line + 1})"
    what = "invalid YAML: " + ", ".join(parts) if parts else "invalid YAML"
    if "expected a single document" in what:
        return SourceProblem((), line, what, "keep one document: remove the second `---` and what follows")
    return SourceProblem((), line, what, _SYNTAX_FIX)


class _TooLarge(Exception):
    pass


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, recording lines and problems."""

    def __init__(self, node_problems: dict[int, list[tuple[str, str]]]) -> None:
        self._node_problems = node_problems
        self._constructor = SafeConstructor()
        self._active: set[int] = set()  # nodes being built: an alias back to one is a cycle
        self._count = 0
        self.source = Source(None)

    def build(self, root: Node) -> Source:
        try:
            self.source.data = self._value(root, (), root.start_mark.line + 1)
        except _TooLarge:
            self.source.data = None
            self.source.problems.append(SourceProblem(
                (), 1, f"the file expands to more than {MAX_NODES} values (aliases repeating aliases?)",
                "write the configuration out without nested aliases"))
        return self.source

    def _problem(self, path: Path, line: int, what: str, fix: str) -> None:
        self.source.problems.append(SourceProblem(path, line, what, fix))

    def _value(self, node: Node, path: Path, line: int) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            raise _TooLarge
        self.source.lines[path] = line
        if id(node) in self._active:
            self._problem(path, line, "an alias refers to the collection that contains it",
                          "remove the recursive alias")
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path, line)
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode) and node.tag == _SEQ:
                return [self._value(item, (*path, i), item.start_mark.line + 1) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode) and node.tag == _MAP:
                return self._mapping(node, path)
        finally:
            self._active.discard(id(node))
        self._problem(path, line, f"the YAML tag {node.tag} is not supported here",
                      "remove the tag: write a plain list or mapping")
        return None

    def _scalar(self, node: ScalarNode, path: Path, line: int) -> Any:
        for what, fix in self._node_problems.get(id(node), ()):
            self._problem(path, line, what, fix)
        if node.tag == _STR:
            return node.value
        if node.tag == _MERGE:  # `<<` as a value rather than a key
            return node.value
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception as exc:  # a bad explicit tag or value (!!int x, !!binary ...): report, never crash
            what = getattr(exc, "problem", None) or f"cannot be read as {node.tag}"
            self._problem(path, line, f"{what}", "remove the explicit tag or correct the value")
            return None

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, int] = {}
        # Merge keys (`<<: *defaults`) first, so the mapping's own keys override them.
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
                self._merge(out, value_node, path, key_node.start_mark.line + 1)
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self._problem(path, line, "a key is a list or mapping", "write keys as plain words")
                continue
            if key_node.tag == _MERGE:
                continue
            key = key_node.value
            if key in seen:
                self._problem((*path, key), line, f"duplicate key (also on line {seen[key]}; YAML keeps only the last)",
                              "remove one of them")
            seen[key] = line
            out[key] = self._value(value_node, (*path, key), line)
        return out

    def _merge(self, out: dict[str, Any], value: Node, path: Path, line: int) -> None:
        sources = value.value if isinstance(value, SequenceNode) else [value]
        for src in sources:
            if not (isinstance(src, MappingNode) and src.tag == _MAP):
                self._problem(path, line, "`<<` must merge a mapping or a list of mappings",
                              "write `<<: *anchor` where the anchor names a mapping")
                continue
            own_line = self.source.lines[path]
            merged = self._value(src, path, line)
            self.source.lines[path] = own_line
            for key, item in (merged or {}).items():
                out.setdefault(key, item)  # in `<<: [*a, *b]` the first one wins


# --- Mapping pydantic's errors back onto the file ---------------------------------------------------

#: How to fix an error of each pydantic type, unless the field or the error itself says better.
_TYPE_FIX = {
    "int_type": "write a whole number, e.g. 10",
    "int_parsing": "write a whole number, e.g. 10",
    "int_from_float": "write a whole number, e.g. 10",
    "float_type": "write a number, e.g. 5 or 0.5",
    "float_parsing": "write a number, e.g. 5 or 0.5",
    "finite_number": "write a finite number",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "string_type": 'write text; quote it if YAML reads it as something else, e.g. "3.0"',
    "string_too_short": "write a non-empty value",
    "string_too_long": "shorten it to at most {max_length} characters",
    "greater_than": "use a value greater than {gt}",
    "greater_than_equal": "use a value of at least {ge}",
    "less_than": "use a value less than {lt}",
    "less_than_equal": "use a value of at most {le}",
    "literal_error": "use one of: {expected}",
    "enum": "use one of: {expected}",
    "too_short": "list at least {min_length} item(s)",
    "too_long": "list at most {max_length} item(s)",
    "tuple_type": "write a list: `- item` lines, or [a, b]",
    "list_type": "write a list: `- item` lines, or [a, b]",
    "model_type": "write a mapping: `key: value` lines indented under it",
    "model_attributes_type": "write a mapping: `key: value` lines indented under it",
    "dict_type": "write a mapping: `key: value` lines indented under it",
}
_WHAT = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
    "model_type": "must be a mapping (key: value lines)",
    "model_attributes_type": "must be a mapping (key: value lines)",
    "dict_type": "must be a mapping (key: value lines)",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
}
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: The `type` of the errors our own validators raise; their ctx carries `what` and `fix`.
CUSTOM_ERROR = "smsgw"

SubProblem = tuple[Path, str, str]  # (path below a section, what, fix): what the types alone cannot say


def bad(what: str, fix: str) -> PydanticCustomError:
    """The error a validator raises: what is wrong and how to fix it, in our words."""
    return PydanticCustomError(CUSTOM_ERROR, "{what}", {"what": what, "fix": fix})


def parsed_by(parse: Callable[[str], object], fix: str) -> Callable[[str], str]:
    """A validator keeping a value that `parse` takes; its ValueError becomes the problem, with `fix`."""
    def check(value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise bad(str(exc), fix) from None
        return value
    return check


def matching(pattern: re.Pattern[str], what: str, fix: str) -> Callable[[str], str]:
    """A validator of names: `value` must match `pattern` whole, or it is "<what> 'value' is not usable"."""
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise bad(f"{what} {value[:70]!r} is not usable", fix)
        return value
    return check


def digits_as_text(value: object) -> object:
    """Before a digit string's own check: an unquoted 8080 or 13800138000 is an int in YAML.

    Plain decimal ints never have a leading zero (see `read_source`), so str() gives back exactly
    what was written. A float or a negative number cannot be a digit string.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, (int, float)):
        raise bad("must be digits, not a number", 'quote it, e.g. "0123"')
    return value


def first_seen(names: Iterable[str]) -> Iterator[tuple[int, str, int]]:
    """(index, name, index of its first use) for each repeated name."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            yield i, name, seen[name]
        seen.setdefault(name, i)


def used_twice(names: Sequence[str]) -> str | None:
    """The first, in sorted order, of the names given more than once; None: all distinct."""
    twice = sorted({n for n in names if names.count(n) > 1})
    return twice[0] if twice else None


def scope_problems(at: Path, names: Sequence[str], interfaces: Sequence[str], accounts: Collection[str],
                   sources: Collection[str], account_fix: str) -> Iterator[SubProblem]:
    """A rule's `accounts` naming no account, and its `interfaces` naming a db:<source> that is not one."""
    for j, name in enumerate(names):
        if name not in accounts:
            yield (*at, "accounts", j), f"no account is named {name!r}", account_fix
    for j, name in enumerate(interfaces):
        if name.startswith("db:") and name[3:] not in sources:
            yield ((*at, "interfaces", j), f"no db source is named {name[3:]!r}",
                   "use db:<name> of a source under db_sources:, or db for all of them")


class Section(BaseModel):
    """A part of the configuration: frozen, no unknown keys."""

    # hide_input_in_errors: a ValidationError printed by accident must not show a secret.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)


def path_text(path: Path) -> str:
    """``("carriers", 0, "port")`` -> ``carriers[0].port``; the whole file is ``(file)``."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif not _PLAIN_KEY.fullmatch(step):  # an unknown key with spaces, quotes, newlines...
            out += f"[{json.dumps(step, ensure_ascii=False)}]"
        else:
            out += f".{step}" if out else step
    return out or "(file)"


def field_key(path: Path) -> str:
    """The path without list indices, as the fix tables name fields: ``carriers.port``."""
    return ".".join(step for step in path if isinstance(step, str))


def validation_problems(exc: ValidationError, source: Source, root: type[BaseModel],
                        field_fixes: Mapping[str, str]) -> list[SourceProblem]:
    """One problem per pydantic error, at the line of its path; none below a path already reported."""
    reported = [p.path for p in source.problems if p.path]
    out = []
    for err in exc.errors(include_url=False, include_input=False):  # never the input: it may be a secret
        path = _data_path(err["loc"], source.data)
        if any(path[: len(r)] == r for r in reported):
            continue
        what, fix = _describe(err, path, root, field_fixes)
        out.append(SourceProblem(path, source.line_of(path), what, fix))
    return out


def _data_path(loc: tuple[str | int, ...], data: Any) -> Path:
    """Follow `loc` through the data; a missing key ends it, a step the data has no room for is dropped."""
    path: list[str | int] = []
    cur = data
    for step in loc:
        if isinstance(cur, dict) and isinstance(step, str):
            path.append(step)
            if step not in cur:
                break
            cur = cur[step]
        elif isinstance(cur, list) and isinstance(step, int) and 0 <= step < len(cur):
            path.append(step)
            cur = cur[step]
        else:  # e.g. a union member's tag: not a place in the file
            break
    return tuple(path)


def _describe(err: Any, path: Path, root: type[BaseModel], field_fixes: Mapping[str, str]) -> tuple[str, str]:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == CUSTOM_ERROR:
        return str(ctx["what"]), str(ctx["fix"])
    field = field_key(path)
    what = _WHAT.get(kind, err["msg"])
    if kind == "missing":
        hint = field_fixes.get(field)
        return what, f"add `{path[-1]}:` here" + (f" ({hint})" if hint else "")
    if kind == "extra_forbidden":
        return what, _unknown_key_fix(str(path[-1]), _fields_at(root, path[:-1]))
    if field in field_fixes:
        return what, field_fixes[field]
    try:
        return what, _TYPE_FIX[kind].format(**ctx)
    except (KeyError, IndexError, ValueError):
        return what, "correct the value (docs/configuration.md describes every key)"


def _unknown_key_fix(key: str, known: list[str]) -> str:
    if not known:
        return "remove it"
    close = difflib.get_close_matches(key, known, n=1)
    guess = f" (did you mean `{close[0]}`?)" if close else ""
    return f"remove it or correct its spelling{guess}; the keys allowed here are {', '.join(known)}"


def _fields_at(root: type[BaseModel], path: Path) -> list[str]:
    model: type[BaseModel] | None = root
    for step in path:
        if model is None:
            break
        if isinstance(step, str):
            info = model.model_fields.get(step)
            model = _model_in(info.annotation) if info is not None else None
    return list(model.model_fields) if model is not None else []


def _model_in(tp: Any) -> type[BaseModel] | None:
    """The model inside an annotation such as ``tuple[AccountConfig, ...]`` or ``X | None``."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
