"""Pants backend for vero-harbor: compiles benchmarks into sealed Harbor tasks."""

from __future__ import annotations

from typing import Iterable


def target_types() -> Iterable[type]:
    return []


def rules() -> Iterable[object]:
    return []
