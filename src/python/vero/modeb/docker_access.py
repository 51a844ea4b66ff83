"""Checks for a nested `harbor run` inside the eval sidecar (Mode B, `-e docker`).

- The jobs dir: Harbor 0.24 bind-mounts each trial's `agent/`, `verifier/` and `artifacts/` dirs
  into the task container, and through the socket the host resolves those paths, so the sidecar's
  jobs dir must be a host directory mounted at the same absolute path. The compiled compose file
  mounts `CONTAINER.nested_jobs_dir` that way and names it in `CONTAINER.nested_jobs_env`.
- The Docker socket is root on the host: the harness user, which runs candidate code, must not
  be able to open it (its uid, its gid or "other" access would give it away).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from vero.container import CONTAINER
from vero.core.confine import SandboxUser
from vero.errors import VeroError


def nested_jobs_dir(environ: Mapping[str, str], default: Path) -> Path:
    """The sidecar's jobs dir: `VERO_NESTED_JOBS_DIR` (must be a mount point), else `default`.

    Made root-only (0700): trial dirs hold verifier output and the results vero scores.
    """
    name = CONTAINER.nested_jobs_env
    raw = environ.get(name)
    if raw is None:
        path = Path(default)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(raw)
        if not path.is_absolute():
            raise VeroError(f"{name}={raw!r} is not an absolute path", where="sidecar environment",
                            fix=f"set {CONTAINER.nested_base_env} on the host to an absolute directory")
        if not os.path.ismount(path):
            raise VeroError(f"{name}={raw} is not a mounted host directory",
                            where="sidecar environment",
                            fix="mount the host directory at the same path (the compiled compose file does)")
    path.chmod(0o700)
    return path


def docker_socket(environ: Mapping[str, str]) -> Path:
    """The Docker endpoint harbor will use: `DOCKER_HOST` (unix sockets only) or the default socket."""
    host = environ.get("DOCKER_HOST", "")
    if not host:
        return Path(CONTAINER.docker_socket)
    if not host.startswith("unix://"):
        raise VeroError(f"DOCKER_HOST={host} is not a unix socket: candidate code could reach it",
                        where="sidecar environment", fix="use the mounted socket (unset DOCKER_HOST)")
    return Path(host[len("unix://"):])


def check_socket_closed_to(user: SandboxUser, socket: Path) -> None:
    """Refuse to start when the harness user could open the Docker socket."""
    try:
        info = os.stat(socket)
    except OSError as exc:
        raise VeroError(f"the Docker socket {socket} is not there ({exc.strerror})", where="sidecar",
                        fix=f"mount {CONTAINER.docker_socket} into the sidecar (the compiled compose file does)",
                        ) from None
    if not stat.S_ISSOCK(info.st_mode):
        raise VeroError(f"{socket} is not a socket", where="sidecar", fix="mount the host's Docker socket")
    if info.st_uid == user.uid or info.st_gid == user.gid or info.st_mode & 0o006:
        mode = stat.S_IMODE(info.st_mode)
        raise VeroError(f"the harness user {user.name!r} (uid {user.uid}, gid {user.gid}) could open the "
                        f"Docker socket (owner {info.st_uid}:{info.st_gid}, mode {mode:o})",
                        where="sidecar",
                        fix="give the harness user a uid/gid other than the socket's (useradd --uid/--gid in "
                            "the sidecar image) and keep the socket closed to others")
