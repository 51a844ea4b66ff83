"""Compiler tests keep the dataset validation cache of each test to themselves: a build never
reads an entry another test (or the user's own builds) left."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_validation_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache_home = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("VERO_CACHE_DIR", raising=False)  # it would win over XDG_CACHE_HOME
    return cache_home
