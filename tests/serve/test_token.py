"""The admin token: 0600 from creation, atomically replaced at each start, constant-time check."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.mode_a import is_root, shared_tmp
from vero.errors import VeroError
from vero.serve.token import read_token, token_matches, write_admin_token


def test_fresh_token_replaces_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / "token" / "admin-token"
    first = write_admin_token(path)
    second = write_admin_token(path)
    assert first != second and read_token(path) == second
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(path.parent) == ["admin-token"]  # no temp files left behind


def test_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_admin_token(tmp_path / "t")
    finally:
        os.umask(old)
    assert oct((tmp_path / "t").stat().st_mode & 0o777) == "0o600"


def test_a_symlink_at_the_token_path_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "t").symlink_to(victim)
    write_admin_token(tmp_path / "t")
    assert victim.read_text() == "keep" and not (tmp_path / "t").is_symlink()


def test_bad_paths_and_headers(tmp_path: Path) -> None:
    with pytest.raises(VeroError, match="is a directory"):
        write_admin_token(tmp_path)
    with pytest.raises(VeroError, match="cannot read the admin token"):
        read_token(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(VeroError, match="empty"):
        read_token(tmp_path / "empty")
    assert token_matches("Bearer abc", "abc")
    assert not token_matches("Bearer abd", "abc")
    assert not token_matches("abc", "abc")
    assert not token_matches(None, "abc")
    assert not token_matches("Bearer ", "abc")
    assert not token_matches("Bearer é", "abc")


@pytest.mark.skipif(not is_root(), reason="reading as another user needs root (CI runs as root)")
def test_unprivileged_user_cannot_read_the_token() -> None:
    with shared_tmp() as directory:
        token = write_admin_token(directory / "admin-token")
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                "cat", str(directory / "admin-token")], capture_output=True, text=True,
                               check=False)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr
    assert token not in probe.stdout
