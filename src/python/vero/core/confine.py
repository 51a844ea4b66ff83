"""How every process started on the optimizer's behalf is confined (candidate code, its git fetch).

The command line is wrapped, outermost first, in:

- `choom -n 1000` and `nice -n 10`: under memory pressure the kernel kills the candidate first,
  and a busy candidate leaves CPU to the sidecar's own server.
- `unshare --pid --fork --kill-child` (with namespaces): a new pid namespace whose first process
  is the candidate's. When that process exits or is killed, the kernel kills every other process
  of the namespace, so nothing the candidate started (with `setsid`, a double fork, a
  re-forking `PR_SET_PDEATHSIG` child) outlives it. `--net` also cuts the network (the fetch).
  Creating the namespace needs CAP_SYS_ADMIN, which the compiled sidecar has; the candidate
  itself gets no capability at all (setpriv below).
- `prlimit`: processes of the user, address space, file size, open files, CPU time.
- `setpriv`: the unprivileged user, no supplementary groups, no capabilities, no_new_privs,
  killed with its parent.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vero.core.limits import CandidateLimits
from vero.errors import VeroError

MIB = 1024 * 1024
OOM_FIRST = "1000"
NICENESS = "10"
# The PATH of every process run on the optimizer's behalf.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class SandboxUser:
    """The unprivileged account candidate code (or the fetch) runs as."""

    name: str
    uid: int
    gid: int


def resolve_user(name: str | None) -> SandboxUser | None:
    """Look up `name`; None means run as the current user (tests and development only)."""
    if name is None:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise VeroError(f"harness user {name!r} does not exist", fix="create the user in the sidecar image "
                        "(`useradd --system harness`) or set harness_user") from None
    if entry.pw_uid == 0:
        raise VeroError(f"harness user {name!r} is root",
                        fix="use an unprivileged account for candidate code")
    if os.geteuid() != 0:
        raise VeroError(f"running candidate code as {name!r} needs root, "
                        f"but the sidecar runs as uid {os.geteuid()}",
                        fix="run the sidecar as root, or set harness_user to null outside a container")
    return SandboxUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def numeric_user(uid: int) -> SandboxUser:
    """An account given by uid alone (gid = uid); it needs no entry in /etc/passwd."""
    if uid <= 0:
        raise VeroError(f"uid {uid} is not an unprivileged user", fix="use a uid above 0")
    if os.geteuid() != 0:
        raise VeroError(f"switching to uid {uid} needs root, but the sidecar runs as uid {os.geteuid()}",
                        fix="run the sidecar as root, or set fetch_uid to null outside a container")
    return SandboxUser(name=str(uid), uid=uid, gid=uid)


def drop_privileges_argv(user: SandboxUser) -> list[str]:
    """`setpriv` to `user`: new uid/gid, no groups, no capabilities, no_new_privs, dies with its parent."""
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--pdeathsig=KILL", "--"]


@dataclass(frozen=True)
class Confinement:
    """User, namespace and rlimits for processes run on the optimizer's behalf (module docstring)."""

    user: SandboxUser | None
    limits: CandidateLimits
    namespaces: bool

    def argv(self, argv: Sequence[str], *, network: bool = True, file_size_mb: int | None = None) -> list[str]:
        """`argv` wrapped in the confinement; `network=False` cuts the network (with namespaces)."""
        limits = self.limits
        size = (file_size_mb or limits.file_size_mb) * MIB
        # choom runs before unshare: in the new namespace it would write /proc/<its pid there>,
        # which names another process (the container's pid 1) in the /proc it sees.
        wrapped = ["choom", "-n", OOM_FIRST, "--", "nice", "-n", NICENESS]
        if self.namespaces:
            wrapped += ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", *([] if network else ["--net"]), "--"]
        wrapped += ["prlimit", f"--nproc={limits.processes}", f"--as={limits.memory_mb * MIB}",
                    f"--fsize={size}", f"--nofile={limits.open_files}", f"--cpu={limits.cpu_seconds}", "--"]
        if self.user is not None:
            wrapped += drop_privileges_argv(self.user)
        return [*wrapped, *argv]


def unconfined(user: SandboxUser | None = None) -> Confinement:
    """Default limits, no namespace: tests and development outside a container."""
    return Confinement(user=user, limits=CandidateLimits(), namespaces=False)


def namespace_problem() -> str | None:
    """Why this process cannot give a child its own pid and network namespace, or None if it can."""
    try:
        probe = subprocess.run(["unshare", "--pid", "--net", "--fork", "--kill-child=SIGKILL", "--", "true"],
                               capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare could not run: {exc}"
    if probe.returncode != 0:
        return probe.stderr.strip()[-300:] or f"unshare exited with {probe.returncode}"
    return None


def require_namespaces() -> None:
    """Fail the sidecar's start when candidate processes could not get their own pid namespace."""
    problem = namespace_problem()
    if problem is not None:
        raise VeroError(f"the eval sidecar cannot give candidate processes their own pid namespace: {problem}",
                        where="sidecar container",
                        fix="give the eval-sidecar service CAP_SYS_ADMIN (the compiled docker-compose.yaml "
                            "does: cap_add: [SYS_ADMIN]) and keep Docker's default seccomp profile")


def kill_confined(pid: int) -> None:
    """SIGKILL a command started with `Confinement.argv` (`pid`, its outermost program) and all it started.

    Killing its process group is not enough: the first process of the pid namespace, forked by
    `unshare`, can leave the group (`setsid`) and clear its parent-death signal, and would then
    outlive `unshare` with everything it started. So that process is killed by pid first: it is
    an unreaped child of the live `unshare`, so its pid cannot have been reused.
    """
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii").split():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(child), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
