"""Mode B isolation: candidate agent code never runs in the harbor process.

In the eval sidecar the nested harbor runs as root with the Docker socket, reads the held-out
inner tasks (tests included) and writes the trial results vero scores. So harbor is told to run
`vero.modeb.isolation.agent_shim:IsolatedAgent`, a trusted agent that starts the candidate's
`module:Class` in a separate process as the unprivileged harness user and relays the agent API
over a pipe (`vero.modeb.isolation.protocol`). This module holds what the strategy hands to harbor: the
`IsolationSpec` (in the environment variable `VERO_ISOLATION`) and a directory that puts
vero's package, and nothing else, on harbor's `PYTHONPATH`.

Runs in vero's interpreter and in harbor's: stdlib, pydantic and vero's small modules only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import Field, ValidationError

import vero
from vero.core.benchmark import ImportPath
from vero.core.confine import Confinement, SandboxUser
from vero.core.limits import CandidateLimits
from vero.errors import VeroError
from vero.modeb.isolation.errors import SpecError
from vero.modeb.isolation.protocol import MAX_TRANSFER_BYTES
from vero.models import StrictModel, describe

SPEC_ENV = "VERO_ISOLATION"
ISOLATED_AGENT = "vero.modeb.isolation.agent_shim:IsolatedAgent"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Harbor phones home and LiteLLM fetches a cost map unless told otherwise (reference/harbor.md).
QUIET_ENV = {"HARBOR_TELEMETRY": "0", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
# The sidecar removes `sample-*` dirs of its work dir at start, so a killed sidecar's leftovers go too.
SCRATCH_PREFIX = "sample-agent-"
SHIM_PREFIX = "sample-vero-path-"


class IsolationSpec(StrictModel):
    """How `IsolatedAgent` starts the candidate's agent (one evaluation, every trial)."""

    candidate: ImportPath = Field(description="module:Class of the candidate's agent")
    worktree: str = Field(description="the candidate's checkout, first on its PYTHONPATH after vero")
    user: str | None = Field(default=None, description="run as this user (needs root); None: same user")
    uid: int | None = None
    gid: int | None = None
    scratch_root: str = Field(description="per-trial scratch dirs (HOME, logs) are created here")
    pythonpath: list[str] = Field(default_factory=list, description="dirs holding vero's package")
    python: str | None = Field(default=None, description="interpreter; default: harbor's own")
    forward_env: list[str] = Field(default_factory=list,
                                   description="variables (secrets) passed on to the candidate's process")
    max_transfer_bytes: int = Field(default=MAX_TRANSFER_BYTES, ge=1, le=MAX_TRANSFER_BYTES)
    max_parallel_requests: int = Field(default=8, ge=1, le=64)
    limits: CandidateLimits = Field(default_factory=CandidateLimits)
    namespaces: bool = Field(default=False, description="run the candidate in its own pid namespace")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> IsolationSpec:
        """The spec vero's strategy put into harbor's environment."""
        raw = environ.get(SPEC_ENV)
        if raw is None:
            raise SpecError(f"{ISOLATED_AGENT} runs only under vero's Mode B strategy "
                            f"(the {SPEC_ENV} environment variable is not set)")
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise SpecError(f"{SPEC_ENV} is invalid at {describe(exc)}") from None

    def sandbox_user(self) -> SandboxUser | None:
        """The user to switch to, if any."""
        if self.user is None or self.uid is None or self.gid is None:
            return None
        return SandboxUser(name=self.user, uid=self.uid, gid=self.gid)

    def confinement(self) -> Confinement:
        """How the candidate's process is confined (`vero.core.confine`)."""
        return Confinement(user=self.sandbox_user(), limits=self.limits, namespaces=self.namespaces)


def vero_package_dir() -> Path:
    """The directory of the running vero package (it must be real files, not a zip)."""
    package = Path(vero.__file__).resolve().parent
    if not (package / "modeb").is_dir():
        raise VeroError(f"vero's package at {package} is not a plain directory", where="Mode B isolation",
                        fix="run vero from its venv or sources (the sidecar image unpacks the PEX)")
    return package


class Isolation:
    """The strategy's side: a shim dir for harbor's PYTHONPATH and the spec of each evaluation.

    The shim holds one symlink, `vero`, to the running package: harbor's interpreter then
    imports `vero.modeb.isolation.agent_shim` while keeping its own dependencies (vero's venv is not
    put on its path, and neither is the candidate's worktree).
    """

    def __init__(self, *, confinement: Confinement, scratch_root: Path, forward_env: Sequence[str] = (),
                 python: str | None = None) -> None:
        self.confinement = confinement
        self.user = confinement.user
        self.scratch_root = Path(scratch_root).absolute()
        self.forward_env = sorted(set(forward_env))
        self.python = python
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        self.shim = Path(tempfile.mkdtemp(prefix=SHIM_PREFIX, dir=self.scratch_root))
        self.shim.chmod(0o755)
        (self.shim / "vero").symlink_to(vero_package_dir(), target_is_directory=True)

    def spec(self, candidate: str, worktree: Path) -> IsolationSpec:
        """The spec for one evaluation of `candidate` checked out at `worktree`."""
        user = self.user
        return IsolationSpec(candidate=candidate, worktree=str(Path(worktree).absolute()),
                             user=user.name if user else None, uid=user.uid if user else None,
                             gid=user.gid if user else None, scratch_root=str(self.scratch_root),
                             pythonpath=[str(self.shim)], python=self.python, forward_env=self.forward_env,
                             limits=self.confinement.limits, namespaces=self.confinement.namespaces)

    def harbor_env(self, candidate: str, worktree: Path, base: Mapping[str, str]) -> dict[str, str]:
        """Harbor's environment: vero's package (only) on PYTHONPATH and the spec."""
        env = dict(base)
        env.pop("PYTHONHOME", None)
        env["PYTHONPATH"] = str(self.shim)
        env[SPEC_ENV] = self.spec(candidate, worktree).model_dump_json()
        return env

    def close(self) -> None:
        """Remove the shim dir."""
        shutil.rmtree(self.shim, ignore_errors=True)


def scratch_dir(spec: IsolationSpec) -> tuple[Path, Path]:
    """A fresh per-trial scratch dir (root's, 0711) and in it the candidate's HOME (its user's, 0700).

    The candidate cannot rename its HOME away (its parent is not its own), so paths the trusted
    side computes under it keep meaning what they meant.
    """
    root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=spec.scratch_root))
    root.chmod(0o711)
    home = root / "home"
    home.mkdir(mode=0o700)
    user = spec.sandbox_user()
    if user is not None:
        os.chown(home, user.uid, user.gid)
    return root, home
