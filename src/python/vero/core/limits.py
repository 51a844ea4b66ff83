"""Limits on what the optimizer and candidate code can consume: one model, shared by build.yaml
(`limits:`) and serve.json, so the compiler and the sidecar cannot disagree on a default.

- `main` / `sidecar`: the two containers (Compose `mem_limit`, `pids_limit`, `cpus`; the
  sidecar's scratch space is a size-limited tmpfs).
- `candidate`: every process started on the optimizer's behalf inside the sidecar (Mode A
  samples, Mode B candidate agents, the unprivileged git fetch): rlimits, kept output, and the
  trusted scorer's time per sample.
- `repo`: what the sidecar accepts from the optimizer's repository: fetch time, pack size, and
  the size of the tree it checks out.
"""

from __future__ import annotations

from pydantic import Field

from vero.models import StrictModel


class ContainerLimits(StrictModel):
    """Limits the Docker engine enforces on one container of the task."""

    memory_mb: int = Field(default=4096, ge=256, description="memory limit (Compose mem_limit), MiB")
    pids: int = Field(default=4096, ge=64, description="most processes and threads (Compose pids_limit)")
    cpus: int | None = Field(default=None, ge=1,
                             description="CPU limit; unset: no limit (the engine refuses more than the host has)")


class SidecarLimits(ContainerLimits):
    """The eval sidecar: also the size of its scratch tmpfs (candidate checkouts, HOME and /tmp)."""

    scratch_mb: int = Field(default=2048, ge=64, description="size of each scratch tmpfs, MiB")


class CandidateLimits(StrictModel):
    """rlimits and output caps of every process run on the optimizer's behalf."""

    processes: int = Field(default=512, ge=8, description="RLIMIT_NPROC of the unprivileged user")
    memory_mb: int = Field(default=4096, ge=64, description="RLIMIT_AS per process, MiB")
    file_size_mb: int = Field(default=1024, ge=1, description="RLIMIT_FSIZE: largest file a process writes, MiB")
    open_files: int = Field(default=1024, ge=16, description="RLIMIT_NOFILE")
    cpu_seconds: int = Field(default=900, ge=1, description="RLIMIT_CPU per process (a wall timeout also applies)")
    output_kb: int = Field(default=64, ge=1, description="stdout/stderr kept per process (the rest is discarded)")
    scorer_timeout: float = Field(default=30.0, gt=0, description="seconds the trusted scorer may take per sample")


class RepoLimits(StrictModel):
    """What the sidecar accepts from the optimizer's repository."""

    fetch_timeout: float = Field(default=120.0, gt=0, description="seconds to read one commit from /work/agent")
    commit_mb: int = Field(default=1024, ge=1, description="largest pack of new objects one commit may bring, MiB")
    tree_files: int = Field(default=100_000, ge=1, description="most files in a checked-out commit")
    tree_mb: int = Field(default=1024, ge=1, description="largest checked-out commit, MiB")


class Limits(StrictModel):
    """Every limit of a task (build.yaml `limits:`; all optional, safe defaults)."""

    main: ContainerLimits = Field(default_factory=ContainerLimits)
    sidecar: SidecarLimits = Field(default_factory=SidecarLimits)
    candidate: CandidateLimits = Field(default_factory=CandidateLimits)
    repo: RepoLimits = Field(default_factory=RepoLimits)
