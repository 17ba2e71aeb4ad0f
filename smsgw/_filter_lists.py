"""The filters' list files: blacklist entries and files, word files (docs/filters.md).

Pure apart from reading a file (`read_numbers`, `read_words`); `smsgw.filters` re-exports
all of it. A bad line is a `ListFileError` naming the file and the line, so that the
configuration check and the reload alarm can say exactly where.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

from smsgw.validation import NumberError, clean_number, normalise_number

__all__ = ["ListFileError", "Signature", "parse_entry", "parse_numbers", "parse_words", "read_numbers", "read_words",
           "signature"]

_MAX_ENTRY = 64  # characters of one blacklist entry (a number with spaces and a comment is shorter)
_MAX_WORD = 100  # characters of one listed word or phrase, as review.rules[].words


class ListFileError(ValueError):
    """A list file cannot be used: `path`, the 1-based `line` (0: the file as a whole), what is wrong."""

    def __init__(self, path: str, line: int, what: str) -> None:
        super().__init__(f"{path}:{line}: {what}" if line else f"{path}: {what}")
        self.path = path
        self.line = line
        self.what = what


Signature = tuple[int, int, int]  # (mtime_ns, size, inode): a file changed when this does
T = TypeVar("T")
_kept: dict[tuple[str, str], tuple[bytes, Any]] = {}  # (parser, path) -> a first read's bytes and result, kept once


def signature(path: str) -> Signature:
    """What tells whether a file changed since it was read.

    Raises:
        OSError: it cannot be looked at.
    """
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def parse_entry(raw: str) -> tuple[bool, str]:
    """One blacklist entry: (is a prefix, the normalised number or prefix).

    A number is written as any caller may write it (13800138000, +86 138 0013 8000,
    +44 7700 900123); a prefix ends with ``*`` (1380013*, +44*).

    Raises:
        ValueError: saying what is wrong with it.
    """
    text = raw.strip()
    if len(text) > _MAX_ENTRY:
        raise ValueError(f"{text[:20]!r}... is {len(text)} characters long: write one number or prefix per line")
    if not text.endswith("*"):
        try:
            return False, normalise_number(text, ("1",), allow_other=True)
        except NumberError as exc:
            raise ValueError(f"not a number: {exc.message}") from None
    body = clean_number(text[:-1])
    if body.startswith("00"):
        body = "+" + body[2:]
    if body.startswith("+86") and body[3:]:
        body = body[3:]
    digits = body[1:] if body.startswith("+") else body
    if not digits or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"{text!r} is not a prefix: write digits then *, e.g. 1380013* (or +44* for a country)")
    if body.startswith("+"):
        if digits[0] == "0" or len(digits) > 15:
            raise ValueError(f"{text!r} is not an international prefix: a country code and digits, e.g. +44*")
    elif body[0] != "1" or len(body) > 11:
        raise ValueError(f"{text!r} is not a mainland mobile prefix: it starts with 1 and has at most 11 digits "
                         "(e.g. 1380013*); write other countries with +, e.g. +44*")
    return True, body


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ListFileError(path, line, "is not UTF-8 text: save the file as UTF-8") from None


def parse_numbers(data: bytes, path: str) -> tuple[frozenset[str], frozenset[str]]:
    """A blacklist file: (numbers, prefixes). One number or prefix a line; ``#`` starts a comment.

    Raises:
        ListFileError: naming the first bad line.
    """
    numbers: set[str] = set()
    prefixes: set[str] = set()
    for n, line in enumerate(_decode(data, path).split("\n"), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if len(entry) == 11 and entry[0] == "1" and entry.isdigit() and entry.isascii():
            numbers.add(entry)  # the usual line: a clean mainland number
            continue
        try:
            is_prefix, value = parse_entry(entry)
        except ValueError as exc:
            raise ListFileError(path, n, str(exc)) from None
        (prefixes if is_prefix else numbers).add(value)
    return frozenset(numbers), frozenset(prefixes)


def parse_words(data: bytes, path: str) -> tuple[str, ...]:
    """A word file: one word or phrase a line; blank lines and lines starting with ``#`` skipped.

    Raises:
        ListFileError: naming the first bad line.
    """
    words = []
    for n, line in enumerate(_decode(data, path).split("\n"), 1):
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if len(word) > _MAX_WORD:
            raise ListFileError(path, n, f"a word of {len(word)} characters, at most {_MAX_WORD}: one word or "
                                         "phrase per line")
        if not word.isprintable():
            raise ListFileError(path, n, "holds a control character: one word or phrase per line, as plain text")
        words.append(word)
    return tuple(words)


def _read(path: str) -> tuple[bytes, Signature]:
    try:
        sig = signature(path)  # before reading: a change while reading is seen at the next look
        with open(path, "rb") as fh:
            return fh.read(), sig
    except OSError as exc:
        raise ListFileError(path, 0, f"cannot be read: {exc.strerror or exc}") from None


def _read_parsed(path: str, parse: Callable[[bytes, str], T], keep: bool) -> tuple[T, Signature]:
    """`parse` of the file at `path`, with its signature.

    The configuration check parses each list file (`keep`), and the daemon then builds its filters
    from the same files: the kept result is handed over once, when the file's bytes are still the
    same, so a long list is parsed once at start-up.
    """
    data, sig = _read(path)
    key = (parse.__name__, path)
    kept = _kept.pop(key, None)
    result = kept[1] if kept is not None and kept[0] == data else parse(data, path)
    if keep:
        _kept[key] = (data, result)
    return result, sig


def read_numbers(path: str, *, keep: bool = False) -> tuple[frozenset[str], frozenset[str], Signature]:
    """`parse_numbers` of the file at `path`, with its signature (`keep`: for the next read, see
    `_read_parsed`). Raises ListFileError."""
    (numbers, prefixes), sig = _read_parsed(path, parse_numbers, keep)
    return numbers, prefixes, sig


def read_words(path: str, *, keep: bool = False) -> tuple[tuple[str, ...], Signature]:
    """`parse_words` of the file at `path`, with its signature (`keep`: for the next read). Raises ListFileError."""
    return _read_parsed(path, parse_words, keep)
