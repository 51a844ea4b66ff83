"""Files across the isolation boundary (vero.modeb.isolation.transfer): bounded tars, and extraction that
never leaves its directory, never follows a link it finds there and creates no special file."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from vero.modeb.isolation.errors import TransferError
from vero.modeb.isolation.transfer import extract, pack, write_text_nofollow

LIMIT = 1 << 20


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    return info


def test_a_directory_round_trips_with_modes_and_inner_links(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "bin").mkdir(parents=True)
    (source / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (source / "bin" / "run.sh").chmod(0o4755)  # setuid is dropped on the way
    (source / "notes.txt").write_text("notes")
    (source / "latest").symlink_to("notes.txt")
    (source / "escape").symlink_to("/etc/hostname")
    dest = tmp_path / "dest"
    dest.mkdir()
    report = extract(pack(source, limit=LIMIT), dest, limit=LIMIT)
    assert (dest / "bin" / "run.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((dest / "bin" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "notes.txt").stat().st_mode) == 0o644
    assert os.readlink(dest / "latest") == "notes.txt"
    # A link out of the tree is stored as a link (never followed) and refused on extraction.
    assert not (dest / "escape").exists() and not (dest / "escape").is_symlink()
    assert report.skipped == ["escape: symlink leaves the destination"]


def test_the_trusted_side_never_follows_a_link_it_packs(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("do not leak")
    link = tmp_path / "downloaded"
    link.symlink_to(secret)
    with pytest.raises(TransferError, match="cannot read|not a regular file"):
        pack(link, limit=LIMIT)
    # The candidate's side packs with its own permissions and may follow its own links.
    data = pack(link, limit=LIMIT, follow=True, as_name="file")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.getnames() == ["file"]


def test_special_files_are_not_packed(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    os.mkfifo(source / "pipe")
    (source / "file").write_text("x")
    with tarfile.open(fileobj=io.BytesIO(pack(source, limit=LIMIT))) as archive:
        assert archive.getnames() == ["file"]
    with pytest.raises(TransferError, match="not a regular file"):
        pack(source / "pipe", limit=LIMIT)


def test_hostile_member_names_and_types_are_skipped(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    data = tar_of(
        (member("../outside.txt"), b"x"),
        (member("/abs.txt"), b"x"),
        (member("a/../../up.txt"), b"x"),
        (member("dev", tarfile.CHRTYPE), None),
        (member("fifo", tarfile.FIFOTYPE), None),
        (member("hard", tarfile.LNKTYPE, link="/etc/passwd"), None),
        (member("ok.txt"), b"fine"),
    )
    report = extract(data, dest, limit=LIMIT)
    assert report.written == ["ok.txt"]
    assert len(report.skipped) == 6
    assert sorted(os.listdir(dest)) == ["ok.txt"]
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "up.txt").exists()


def test_links_planted_in_the_destination_are_never_followed(tmp_path: Path) -> None:
    """The trial's agent dir is also the task container's /logs/agent: links may be waiting there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "ledger.json"
    victim.write_text("precious")
    dest = tmp_path / "logs"
    dest.mkdir()
    (dest / "agent.json").symlink_to(victim)
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    os.mkfifo(dest / "fifo.log")
    data = tar_of((member("agent.json"), b"log"), (member("sub/ledger.json"), b"pwned"),
                  (member("fifo.log"), b"no block"), (member("new/deep.txt"), b"deep"))
    report = extract(data, dest, limit=LIMIT, allow_symlinks=False)
    assert victim.read_text() == "precious"
    # The planted file link was replaced by a regular file; the planted dir link was left alone.
    assert not (dest / "agent.json").is_symlink() and (dest / "agent.json").read_text() == "log"
    [skipped] = report.skipped
    assert skipped.startswith("sub/ledger.json: parent directory unusable")
    assert (dest / "fifo.log").read_text() == "no block" and (dest / "new/deep.txt").read_text() == "deep"
    write_text_nofollow(dest, "agent.json", "again")
    assert victim.read_text() == "precious"


def test_symlinks_are_refused_where_they_are_not_wanted(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    report = extract(tar_of((member("link", tarfile.SYMTYPE, link="target"), None)), dest, limit=LIMIT,
                     allow_symlinks=False)
    assert report.skipped == ["link: symlinks are not copied here"] and os.listdir(dest) == []


def test_limits_and_garbage(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    big = tmp_path / "big"
    big.write_bytes(b"\0" * 5000)
    with pytest.raises(TransferError, match="larger than 1000 bytes"):
        pack(big, limit=1000)
    data = pack(big, limit=LIMIT)
    with pytest.raises(TransferError, match="content larger than 1000 bytes"):
        extract(data, dest, limit=1000)
    with pytest.raises(TransferError, match="tar archive"):
        extract(b"not a tar" * 100, dest, limit=LIMIT)
    with pytest.raises(TransferError, match="cannot open"):
        extract(data, tmp_path / "missing", limit=LIMIT)
    assert os.listdir(dest) == []
