"""A corrupt, truncated or edited archive is one clear message naming the member, never a
traceback: through the reader and through `vero report` / `vero harbor recover`."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.sidecar import python_env, vero_argv
from vero.errors import VeroError
from vero.session.model import MANIFEST
from vero.session.reader import load_session


def _rewrite(path: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of the archive with members replaced (or dropped, for None), manifest untouched."""
    with tarfile.open(path, "r:gz") as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]  # type: ignore[union-attr]
    out = path.with_name("edited.tar.gz")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for info, original in members:
            data = change.get(info.name, original) if info.name in change else original
            if data is None:
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(raw.getvalue())
    return out


def _error(path: Path) -> str:
    with pytest.raises(VeroError) as caught:
        load_session(path)
    return caught.value.render()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(vero_argv(*args), env=python_env(), capture_output=True, text=True, check=False)


def test_every_truncation_is_one_message_naming_where(archive: Path, tmp_path: Path) -> None:
    data = archive.read_bytes()
    with tarfile.open(archive, "r:gz") as tar:
        names = [info.name for info in tar.getmembers()]
    cut = tmp_path / "cut.tar.gz"
    seen_members = set()
    for size in sorted({*range(10, len(data), max(1, len(data) // 60)), len(data) - 1, len(data) - 8}):
        cut.write_bytes(data[:size])
        message = _error(cut)
        assert str(cut) in message and "Traceback" not in message
        assert "corrupt or truncated" in message or "member" in message, message
        seen_members |= {name for name in names if name in message}
    # Cuts at different places name different members.
    assert len(seen_members) >= 3, seen_members


def test_a_changed_member_fails_its_sha256(archive: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        name = next(i.name for i in tar.getmembers() if i.name.startswith("evaluations/"))
        original = tar.extractfile(name).read()  # type: ignore[union-attr]
    edited = _rewrite(archive, {name: original.replace(b'"mean_score":1.0', b'"mean_score":0.9')
                                if b'"mean_score":1.0' in original else original + b" "})
    assert f"member {name} does not match its sha256 in session.json" in _error(edited)


def test_a_missing_or_unlisted_member_is_named(archive: Path) -> None:
    assert "member commits.json is missing (session.json lists it)" in _error(_rewrite(archive, {"commits.json": None}))
    assert f"member {MANIFEST} is missing" in _error(_rewrite(archive, {MANIFEST: None}))
    with tarfile.open(archive, "r:gz") as tar:
        manifest = tar.extractfile(MANIFEST).read()  # type: ignore[union-attr]
    broken = _rewrite(archive, {MANIFEST: manifest.replace(b'"schema_version": 1', b'"schema_version": 7')})
    assert f"invalid member {MANIFEST} at schema_version" in _error(broken)


def test_not_gzip_and_a_bad_crc(archive: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar.gz"
    plain.write_bytes(gzip.decompress(archive.read_bytes()))
    assert "no gzip header" in _error(plain)
    data = bytearray(archive.read_bytes())
    data[-6] ^= 0xFF  # the gzip trailer's CRC
    crc = tmp_path / "crc.tar.gz"
    crc.write_bytes(bytes(data))
    assert "corrupt or truncated" in _error(crc)


def test_the_commands_print_one_message_and_exit_2(archive: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    for args in (("report", str(cut)), ("report", str(cut), "--json"),
                 ("harbor", "recover", str(cut), "--winner", "-o", str(tmp_path / "out"))):
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.startswith(f"error: {cut}: the archive is corrupt or truncated in member")
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "out").exists()
    missing = _cli("report", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
