"""Compiler tests keep the dataset validation cache of each test to themselves (a build never
reads an entry another test, or the user's own builds, left) and share a stand-in runtime PEX."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.benchmarks import fake_runtime_pex


@pytest.fixture(autouse=True)
def _private_validation_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache_home = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("VERO_CACHE_DIR", raising=False)  # it would win over XDG_CACHE_HOME
    return cache_home


@pytest.fixture()
def pex(tmp_path: Path) -> Path:
    """A stand-in runtime PEX for builds that never run it."""
    return fake_runtime_pex(tmp_path / "pex" / "vero.pex")
