"""One read pass per input file: the copy, its sha256 and its git blob id agree with the source."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from vero.compiler import copying
from vero.compiler.copying import copy_hashed


def _git_blob(path: Path) -> str:
    return subprocess.run(["git", "hash-object", "--no-filters", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize("size", [0, 1, 4095, copying.SMALL_FILE, copying.SMALL_FILE + 1, 3 * copying.SMALL_FILE + 7])
def test_the_copy_and_its_digests_match_the_source(tmp_path: Path, size: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copying, "CHUNK", copying.SMALL_FILE)  # several chunks without a huge file
    src = tmp_path / "src"
    data = os.urandom(size)
    src.write_bytes(data)
    src.chmod(0o750)
    copied = copy_hashed(src, tmp_path / "dest", lambda mode: 0o755 if mode & 0o111 else 0o644, git_blob=True)
    assert (tmp_path / "dest").read_bytes() == data
    assert (copied.size, copied.mode) == (size, 0o755)
    assert (tmp_path / "dest").stat().st_mode & 0o777 == 0o755
    assert copied.sha256 == hashlib.sha256(data).hexdigest()
    assert copied.git_blob == _git_blob(src)


def test_an_existing_destination_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"new")
    (tmp_path / "dest").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        copy_hashed(tmp_path / "src", tmp_path / "dest", lambda mode: 0o644, git_blob=False)
    assert (tmp_path / "dest").read_bytes() == b"old"
