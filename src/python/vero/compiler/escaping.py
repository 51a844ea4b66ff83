"""Format-aware escaping: every value a template renders goes through one of these.

Each function returns `Escaped`, the only type the Jinja environment accepts for output
(see `vero.compiler.render`), so a template that prints a raw value fails to render.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import unicodedata
from collections.abc import Sequence
from typing import Union

from vero.compiler.config import IMAGE_REF

Scalar = Union[str, int, float, bool]


class Escaped(str):
    """A string already escaped for the format of the file it is rendered into."""

    __slots__ = ()


def _scalar_check(value: object) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot render the non-finite number {value!r}")
    if not isinstance(value, (str, int, float, bool)):
        raise TypeError(f"cannot render a {type(value).__name__} here")


def _toml_one(value: Scalar) -> str:
    _scalar_check(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    out = []
    for ch in value:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml(value: Scalar | Sequence[Scalar]) -> Escaped:
    """A TOML value: basic string with every control character escaped, number, bool or array."""
    if isinstance(value, (list, tuple)):
        return Escaped("[" + ", ".join(_toml_one(v) for v in value) + "]")
    return Escaped(_toml_one(value))  # type: ignore[arg-type]


def _yaml_one(value: Scalar) -> str:
    _scalar_check(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    out = []
    for ch in value:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02X}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(f"\\U{code:08X}")
    # A double-quoted scalar with only printable ASCII inside: no YAML parser can misread it.
    return '"' + "".join(out) + '"'


def yaml(value: Scalar | Sequence[Scalar]) -> Escaped:
    """A YAML flow value (double-quoted string with escapes, number, bool or flow sequence)."""
    if isinstance(value, (list, tuple)):
        return Escaped("[" + ", ".join(_yaml_one(v) for v in value) + "]")
    return Escaped(_yaml_one(value))  # type: ignore[arg-type]


def compose(value: Scalar | Sequence[Scalar]) -> Escaped:
    """A YAML value for docker-compose.yaml, where Compose interpolates `$`: written as `$$`."""
    if isinstance(value, (list, tuple)):
        return Escaped("[" + ", ".join(_yaml_one(v).replace("$", "$$") for v in value) + "]")
    return Escaped(_yaml_one(value).replace("$", "$$"))  # type: ignore[arg-type]


def sh(value: Scalar) -> Escaped:
    """One shell word: single-quoted unless it is plainly safe; never expanded by the shell."""
    _scalar_check(value)
    if isinstance(value, bool):
        raise TypeError("render a bool into shell explicitly, e.g. as 0/1")
    text = str(value)
    if "\x00" in text:
        raise ValueError("a NUL character cannot be passed through a shell")
    return Escaped(shlex.quote(text))


def sh_words(values: Sequence[Scalar]) -> Escaped:
    """Several shell words, each quoted by `sh`, separated by spaces."""
    return Escaped(" ".join(sh(v) for v in values))


# Line-start constructs (CommonMark and the GFM table extension): ATX headings, list items,
# thematic breaks, setext underlines, ordered list markers.
_ATX = re.compile(r"#{1,6}(?:[ \t]|$)")
_BULLET = re.compile(r"[-+*](?:[ \t]|$)")
_THEMATIC = re.compile(r"([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_SETEXT = re.compile(r"(?:=+|-+)[ \t]*$")
_ORDERED = re.compile(r"[0-9]{1,9}[.)](?:[ \t]|$)")
# `&` that a renderer could read as a character reference (`AT&T` and `a & b` are text).
_ENTITY = re.compile(r"&(?:#|[A-Za-z][A-Za-z0-9]*;)")


def _runs(text: str) -> list[tuple[int, int]]:
    """For each index, the (start, end) of the run of equal characters it belongs to (one pass)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or text[i] != text[start]:
            spans.extend([(start, i)] * (i - start))
            start = i
    return spans


def _inline_escape(text: str, i: int, runs: list[tuple[int, int]], escaped_brackets: set[int]) -> bool:
    """Whether `text[i]` could start or end inline markup where it stands (emphasis, code, links,
    raw HTML, character references, table cells, hard breaks); neighbours outside `text` are
    unknown (the template's), so they count as the worst case."""
    ch = text[i]
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if ch in "`|":
        return True            # code spans pair across the line; a pipe splits a table cell
    if ch == "\\":             # before punctuation (or a character reference we write) it escapes
        return not nxt.isalnum()
    if ch in "[]":
        return i in escaped_brackets
    if ch == "<":
        return nxt == "" or nxt.isalpha() or nxt in "/!?"
    if ch == "&":
        return bool(_ENTITY.match(text, i))
    start, end = runs[i]
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    if ch == "*":              # emphasis only where a run touches non-space text
        return not (before.isspace() and after.isspace())
    if ch == "_":              # `_` never opens or closes between two letters or digits
        return not (before.isalnum() and after.isalnum())
    if ch == "~":              # `~~` strikes through (GFM) and `~~~` opens a fence
        return end - start > 1
    if ch == "#":              # a closing sequence: a run after a space at the end of a heading line
        return after in ("", "\n") and (before == "" or before.isspace())
    return False


def _brackets_to_escape(text: str) -> set[int]:
    """Indices of `[` / `]` that could make a link, an image or a reference definition: a `]`
    followed by `(`, `[` or `:` or ending the value, and a `[` with no kept `]` after it."""
    escaped = {i for i, ch in enumerate(text)
               if ch == "]" and (i + 1 == len(text) or text[i + 1] in "([:")}
    closers = [i for i, ch in enumerate(text) if ch == "]" and i not in escaped]
    last_closer = closers[-1] if closers else -1
    escaped |= {i for i, ch in enumerate(text) if ch == "[" and i > last_closer}
    return escaped


def _line_start_escape(line: str) -> int | None:
    """Index (in `line`) of the character to escape so the line cannot open a block: a heading,
    a quote, a list item, a thematic break, a setext underline or an ordered list marker."""
    if not line:
        return None
    if line[0] == ">" or _ATX.match(line) or _BULLET.match(line) or _THEMATIC.match(line) \
            or _SETEXT.match(line):
        return 0
    ordered = _ORDERED.match(line)
    if ordered:
        return ordered.end() - (2 if ordered.group().endswith((" ", "\t")) else 1)
    return None


def md(value: Scalar) -> Escaped:
    """Markdown text that reads as written, both raw and rendered.

    The optimizer reads instruction.md as raw text, so only what could change the document's
    structure is neutralised: a backslash goes before a character only where it would start or
    end markup there (headings, quotes, lists, breaks and ordered markers at a line start; code
    spans, table pipes, emphasis, links and images, raw HTML and autolinks, character references,
    strikethrough and fences, a heading's closing `#`s, a trailing backslash). Ordinary text
    (`vero/foo`, `answers arithmetic;`, `non_viewable`, `a - b`) is left as it is. Whitespace
    Markdown would strip or turn into a hard break, tabs and control characters become character
    references; a line break becomes a hard break (a character reference at the very end)."""
    _scalar_check(value)
    text = str(value)
    brackets = _brackets_to_escape(text)
    runs = _runs(text)
    out: list[str] = []
    offset = 0
    for index, line in enumerate(text.split("\n")):
        if index:
            rest_empty = not text[offset:].strip("\n")
            out.append("&#10;" if rest_empty else "\\\n")
        lead = len(line) - len(line.lstrip())
        trail = len(line.rstrip())
        block = _line_start_escape(line) if lead == 0 else None
        for i, ch in enumerate(line):
            if (ch.isspace() and (i < lead or i >= trail)) or ch == "\t" or (
                    unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")):
                # Markdown would strip, collapse or misread these: a character reference keeps them.
                out.append(f"&#{ord(ch)};")
            elif i == block or _inline_escape(text, offset + i, runs, brackets):
                out.append("\\" + ch)
            else:
                out.append(ch)
        offset += len(line) + 1
    return Escaped("".join(out))


def md_code(value: Scalar) -> Escaped:
    """Markdown inline code span for a value known to be a single line (a command, a path)."""
    _scalar_check(value)
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"a code span cannot hold a line break: {text!r}")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or text.startswith(" ") else ""
    return Escaped(f"{fence}{pad}{text}{pad}{fence}")


def json_value(value: object) -> Escaped:
    """A JSON literal (sorted keys), also a valid YAML flow value."""
    return Escaped(json.dumps(value, sort_keys=True, ensure_ascii=True))


def image(value: str) -> Escaped:
    """A Docker image reference for a Dockerfile `FROM` line: validated, never escaped."""
    if not IMAGE_REF.fullmatch(value):
        raise ValueError(f"{value!r} is not a Docker image reference")
    return Escaped(value)


_DOCKER_PATH = re.compile(r"^[A-Za-z0-9_./-]+$")


def docker_path(value: str) -> Escaped:
    """A path in a Dockerfile COPY/WORKDIR line, which has no quoting: only plain characters pass."""
    if not _DOCKER_PATH.fullmatch(value):
        raise ValueError(f"{value!r} cannot appear unquoted in a Dockerfile")
    return Escaped(value)


FILTERS = {
    "toml": toml,
    "yaml": yaml,
    "compose": compose,
    "sh": sh,
    "sh_words": sh_words,
    "md": md,
    "md_code": md_code,
    "json": json_value,
    "image": image,
    "docker_path": docker_path,
}
