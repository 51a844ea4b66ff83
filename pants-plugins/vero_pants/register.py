"""Pants backend for vero-harbor: the `harbor_task` target compiles benchmarks into sealed Harbor tasks."""

from __future__ import annotations

from typing import Any, Iterable

from vero_pants import rules as harbor_task_rules
from vero_pants.target_types import HarborTaskTarget


def target_types() -> Iterable[type]:
    return [HarborTaskTarget]


def rules() -> Iterable[Any]:
    return [*harbor_task_rules.rules()]
