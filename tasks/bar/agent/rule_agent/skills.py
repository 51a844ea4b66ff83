"""Skills: an instruction pattern and the shell commands that carry it out.

Pure Python (no Harbor import) so the planning logic can be tried without a container.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

_PATH = r"`(?P<{}>/[^`]+)`"


@dataclass(frozen=True)
class Skill:
    """When `pattern` matches the instruction, `commands(match)` solves the task."""

    name: str
    pattern: re.Pattern[str]
    commands: Callable[[re.Match[str]], list[str]]


def _q(text: str) -> str:
    return shlex.quote(text)


SKILLS: list[Skill] = [
    Skill(
        name="write-file",
        pattern=re.compile(r"Create the file " + _PATH.format("path")
                           + r" containing exactly one line: `(?P<text>[^`]*)`"),
        commands=lambda m: [f"printf '%s\\n' {_q(m['text'])} > {_q(m['path'])}"],
    ),
    Skill(
        name="reverse-lines",
        pattern=re.compile(r"Write the lines of " + _PATH.format("src")
                           + r" in reverse order to " + _PATH.format("dst")),
        commands=lambda m: [f"tac {_q(m['src'])} > {_q(m['dst'])}"],
    ),
]


def plan(instruction: str) -> tuple[str | None, list[str]]:
    """The first skill that understands `instruction` and its commands, or (None, [])."""
    text = " ".join(instruction.split())
    for skill in SKILLS:
        match = skill.pattern.search(text)
        if match:
            return skill.name, skill.commands(match)
    return None, []
