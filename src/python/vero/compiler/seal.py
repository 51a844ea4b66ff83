"""SEAL.json: the sha256 of every file of a compiled task and a root digest over them all.

`vero harbor verify DIR` recomputes it and names every edited, missing or extra file. Tool
versions are recorded only when they are the same on every machine (the vero version); git's
version is not, and it does not influence the output (the baseline SHA is checked separately).
The sha256 of the build.yaml the task was compiled from is recorded too (and covered by the root),
so a directory that a later failed build left in place says which build it holds.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field

from vero import __version__
from vero.compiler.tree import CHUNK, Entry, TreeWriter, normalised_mode, walk_tree
from vero.errors import VeroError
from vero.fsutil import canonical_json
from vero.models import StrictModel, load_model_file

SEAL_FILE = "SEAL.json"


class SealedFile(StrictModel):
    """One file: its sha256 (of the link target for a symlink), size and normalised mode."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    mode: Literal["0644", "0755", "link"]


class Seal(StrictModel):
    """The content of SEAL.json."""

    version: Literal[1] = 1
    algorithm: Literal["sha256"] = "sha256"
    root: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 over the sorted file list")
    files: dict[str, SealedFile]
    tools: dict[str, str]
    build_config_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                            description="sha256 of the build.yaml compiled; absent in older seals")


def _sealed(entry: Entry) -> SealedFile:
    mode: Literal["0644", "0755", "link"] = "link" if entry.symlink is not None else (
        "0755" if entry.mode == 0o755 else "0644")
    return SealedFile(sha256=entry.sha256, size=entry.size, mode=mode)


def root_digest(files: dict[str, SealedFile], build_config_sha256: str | None = None) -> str:
    """sha256 over `mode sha256 path` lines in path order, then the build.yaml digest when known:
    one value that changes with any file (or with the recorded build.yaml)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        item = files[path]
        digest.update(f"{item.mode} {item.sha256} {path}\n".encode())
    if build_config_sha256 is not None:
        digest.update(f"build.yaml {build_config_sha256}\n".encode())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes (build.yaml's digest as SEAL.json records it)."""
    return _hash_file(path)[0]


def seal_from_entries(entries: dict[str, Entry], build_config_sha256: str | None = None) -> Seal:
    """The seal of the files a TreeWriter wrote, compiled from a build.yaml with that digest."""
    files = {path: _sealed(entry) for path, entry in sorted(entries.items())}
    return Seal(root=root_digest(files, build_config_sha256), files=files, tools={"vero": __version__},
                build_config_sha256=build_config_sha256)


def write_seal(writer: TreeWriter, build_config_sha256: str | None = None) -> Seal:
    """Seal everything `writer` wrote and write SEAL.json (not part of its own list)."""
    seal = seal_from_entries(writer.entries, build_config_sha256)
    path = writer.root / SEAL_FILE
    path.write_text(canonical_json(seal.model_dump(mode="json")), encoding="utf-8")
    os.chmod(path, 0o644)
    return seal


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def scan(root: Path) -> tuple[dict[str, SealedFile], list[str]]:
    """The seal entries of the files now under `root` (without SEAL.json), and any special files."""
    files: dict[str, SealedFile] = {}
    special: list[str] = []
    for rel, path, link in walk_tree(root, where=str(root), strict=False):
        if rel == SEAL_FILE:
            continue
        if link is None and not stat.S_ISREG(path.lstat().st_mode):
            special.append(rel)
        elif link is not None:
            data = link.encode("utf-8")
            files[rel] = SealedFile(sha256=hashlib.sha256(data).hexdigest(), size=len(data), mode="link")
        else:
            sha, size = _hash_file(path)
            mode = normalised_mode(stat.S_IMODE(path.lstat().st_mode))
            files[rel] = SealedFile(sha256=sha, size=size, mode="0755" if mode == 0o755 else "0644")
    return files, special


@dataclass
class VerifyReport:
    """What `verify` found; `ok` when nothing differs."""

    root: str
    n_files: int
    build_config_sha256: str | None = None
    edited: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    root_mismatch: bool = False

    @property
    def ok(self) -> bool:
        """True when the tree matches its seal exactly."""
        return not (self.edited or self.missing or self.extra or self.root_mismatch)


def load_seal(root: Path) -> Seal:
    """Read SEAL.json of the task at `root`."""
    path = Path(root) / SEAL_FILE
    if not path.exists():
        raise VeroError(f"no {SEAL_FILE}: not a task built by vero", where=str(root),
                        fix="pass the directory `vero harbor build` wrote")
    return load_model_file(path, Seal, SEAL_FILE, fix="rebuild the task")


def verify(root: Path) -> VerifyReport:
    """Compare the files under `root` with its SEAL.json."""
    root = Path(root)
    if not root.is_dir():
        raise VeroError("not a directory", where=str(root),
                        fix="pass the directory `vero harbor build` wrote")
    seal = load_seal(root)
    current, special = scan(root)
    report = VerifyReport(root=seal.root, n_files=len(seal.files), build_config_sha256=seal.build_config_sha256)
    report.missing = sorted(set(seal.files) - set(current) - set(special))
    report.extra = sorted((set(current) | set(special)) - set(seal.files))
    report.edited = sorted({p for p in set(seal.files) & set(current) if seal.files[p] != current[p]}
                           | (set(seal.files) & set(special)))
    report.root_mismatch = root_digest(seal.files, seal.build_config_sha256) != seal.root
    return report
