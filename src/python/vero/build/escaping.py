"""Format-aware escaping: every value a template renders goes through one of these.

Each function returns `Escaped`, the only type the Jinja environment accepts for output
(see `vero.build.render`), so a template that prints a raw value fails to render.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import string
import unicodedata
from collections.abc import Sequence
from typing import Union

from vero.build.config import IMAGE_REF

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


_MD_SPECIAL = frozenset(string.punctuation)


def _md_line(line: str) -> str:
    lead = len(line) - len(line.lstrip())
    trail = len(line.rstrip())
    out = []
    for index, ch in enumerate(line):
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif (ch.isspace() and (index < lead or index >= trail)) or ch == "\t" or (
                unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")):
            # Markdown would strip, collapse or misread these: a character reference keeps them.
            out.append(f"&#{ord(ch)};")
        else:
            out.append(ch)
    return "".join(out)


def md(value: Scalar) -> Escaped:
    """Markdown inline text that shows the value literally: every ASCII punctuation character is
    backslash-escaped (CommonMark allows it for all of them), whitespace Markdown would strip and
    control characters become character references, and a line break becomes a hard break
    (a character reference at the very end, where a hard break would be dropped)."""
    _scalar_check(value)
    lines = [_md_line(line) for line in str(value).split("\n")]
    body = lines[0]
    for index, line in enumerate(lines[1:], start=1):
        rest_empty = not any(lines[index:])
        body += ("&#10;" if rest_empty else "\\\n") + line
    return Escaped(body)


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
