"""The spawner's server: a fork server for processes run on the optimizer's behalf (standard
library only).

The sidecar runs this file's source as `python3 -B -s -c <source> <settings>`, as root, with an
empty environment and its control socket (SOCK_SEQPACKET) as stdin. Per job it receives a
request (JSON) with four descriptors: the job's stdin, stdout and stderr pipes and a status
pipe. The sidecar serves those pipes itself: this process never sees a row, a secret beyond the
candidate's own environment, or an output. Two jobs exist:

- `harness` (a Mode A sample): read the row from stdin, import the candidate's entrypoint from
  its checkout, call it, write the reply file;
- `refs` (the fetcher's resolver, long-lived): per line of stdin, what some ref names of the
  optimizer's repo point to, read from its `.git` as plain files, one line of JSON back;
  anything unusual (a link, a special file, a `.git` file, reftable, an odd value) answers
  "unclear", and the caller lets git decide.

Per request it forks a *keeper* (root, trusted code only), which:
- starts a new session, lowers its priority, and takes SIGTERM if this server dies;
- creates a pid namespace (and a network namespace when the network is cut) and forks the
  *child*, the namespace's first process: when it ends, the kernel kills every process it
  started, wherever they went;
- waits for the child, writes its exit code to the status pipe and kills its own group.
  SIGTERM (the sidecar's timeout or stop) makes it kill the child first: a child can leave the
  keeper's session and clear its parent-death signal, but not stop its parent.

The child confines itself before it reads anything the optimizer controls: the job's pipes
become its stdio and every other descriptor is closed, `oom_score_adj` 1000 (the kernel kills it
first), the rlimits, no capability left in any set, the unprivileged user, no supplementary
groups, no_new_privs, killed with its keeper. Then it runs the job in place: the interpreter and
the standard library are loaded already, which is what a job no longer pays for. Anything
failing on the way ends the process (exit 126) before the job starts.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import re
import resource
import signal
import socket
import stat
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CAPABILITY_VERSION_3 = 0x20080522
CONFINE_FAILED = 126
MAX_MESSAGE = 1 << 20
MAX_LOOSE_REF = 4096
MAX_PACKED_REFS = 64 << 20
MAX_SYMREF_DEPTH = 5
OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
REF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@+=,-]*")
LIBC = ctypes.CDLL(None, use_errno=True)
Json = dict[str, Any]


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _prctl(option: int, value: int) -> None:
    _check(LIBC.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           f"prctl({option})")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]  # noqa: RUF012 (ctypes reads it once)


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]  # noqa: RUF012


def _drop_capabilities() -> None:
    """Empty the bounding set (needs root, so before the uid changes) and later every other set."""
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
        last = int(handle.read())
    for capability in range(last + 1):
        _prctl(PR_CAPBSET_DROP, capability)


def _clear_capability_sets() -> None:
    """Effective, permitted and inheritable all empty (the uid change clears all but inheritable)."""
    data = (_CapData * 2)()
    _check(LIBC.capset(ctypes.byref(_CapHeader(CAPABILITY_VERSION_3, 0)), data), "capset")


def _confine(settings: Json, request: Json, fds: list[int]) -> None:
    """Everything between the fork and the job (module docstring)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    with open("/proc/self/oom_score_adj", "w", encoding="ascii") as handle:
        handle.write(str(settings["oom_score_adj"]))
    os.chdir(request["cwd"])
    for name, value in settings["rlimits"].items():
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))
    uid, gid = settings["uid"], settings["gid"]
    if uid is not None:
        _drop_capabilities()
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        _clear_capability_sets()
        if os.getuid() != uid or os.getgroups() or os.getgid() != gid:
            raise OSError("the user did not change")
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a uid change clears it
    for number in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _reply(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _harness(request: Json) -> None:
    """Read the row before any candidate code can, call the entrypoint, write the reply file;
    an exception (SystemExit included) becomes a reply, not just a traceback on stderr."""
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv[:] = ["-c"]
    sys.path[1:1] = request["path"]
    path = request["reply"]
    try:
        row = json.loads(sys.stdin.buffer.read())
        module_name, function_name = request["entrypoint"].split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        output = function(row)
    except BaseException as exc:
        import traceback  # only on failure: the import costs milliseconds per sample
        _reply(path, json.dumps({"ok": False, "raised": type(exc).__name__[:200],
                                 "error": f"{type(exc).__name__}: {exc}"[:2000],
                                 "traceback": traceback.format_exc()[-4000:]}))
        return
    try:
        text = json.dumps({"ok": True, "output": output}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        _reply(path, json.dumps({"ok": False, "error": f"output is not JSON-serialisable: {exc}"[:2000]}))
    else:
        _reply(path, text)


class Unclear(Exception):
    """The repository is not laid out the plain way: let git decide."""


def _read_plain(path: str, limit: int) -> bytes | None:
    """The bytes of a regular file at `path` (not a link, at most `limit`), None if it is absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise Unclear(f"{path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return None  # refs/heads/a when refs/heads/a/b exists: no loose ref, as for git
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            raise Unclear(f"{path}: not a regular file within {limit} bytes")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(limit + 1)
    finally:
        os.close(fd)


def _packed_refs(git_dir: str) -> dict[str, str]:
    data = _read_plain(os.path.join(git_dir, "packed-refs"), MAX_PACKED_REFS)
    refs: dict[str, str] = {}
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        if line.startswith(("#", "^")) or not line:
            continue
        object_id, _, name = line.partition(" ")
        if not OBJECT_ID.fullmatch(object_id):
            raise Unclear("packed-refs holds an unexpected line")
        refs[name] = object_id
    return refs


def _lookup(git_dir: str, name: str, packed: list[dict[str, str]], depth: int = 0) -> str | None:
    """What `name` points to, the way git reads it: the loose ref, else packed-refs; symbolic
    refs followed. None: no such ref."""
    if depth > MAX_SYMREF_DEPTH or not REF_NAME.fullmatch(name) or ".." in name or name.endswith((".lock", "/")):
        raise Unclear(f"an unusual ref name: {name[:100]!r}")
    loose = _read_plain(os.path.join(git_dir, name), MAX_LOOSE_REF)
    if loose is None:
        if name == "HEAD":
            return None
        if not packed:
            packed.append(_packed_refs(git_dir))
        return packed[0].get(name)
    text = loose.decode("utf-8", "replace").strip()
    if text.startswith("ref: "):
        return _lookup(git_dir, text[5:].strip(), packed, depth + 1)
    if OBJECT_ID.fullmatch(text):
        return text
    raise Unclear(f"{name}: an unexpected value")


def _refs_answer(question: Json) -> Json:
    """{"refs": {name: object id or null}}, or {"refs": null, "unclear": why} when git must decide."""
    git_dir = os.path.join(question["repo"], ".git")
    try:
        if not stat.S_ISDIR(os.lstat(git_dir).st_mode) or os.path.lexists(os.path.join(git_dir, "reftable")):
            raise Unclear(".git is not a plain directory of loose and packed refs")
        packed: list[dict[str, str]] = []
        # Like `git ls-remote`, which lists HEAD and what is under refs/ only.
        return {"refs": {name: _lookup(git_dir, name, packed) if name == "HEAD" or name.startswith("refs/")
                         else None for name in question["names"]}}
    except (Unclear, OSError) as exc:
        return {"refs": None, "unclear": str(exc)[:500]}


def _refs_server(request: Json) -> None:
    """Answer one question (JSON: repo, names) per line of stdin with one line of stdout, until
    stdin ends: the resolver stays up, so a name costs a few reads, not a process."""
    for line in sys.stdin.buffer:
        sys.stdout.write(json.dumps(_refs_answer(json.loads(line))) + "\n")
        sys.stdout.flush()


JOBS = {"harness": _harness, "refs": _refs_server}


def _child(settings: Json, request: Json, fds: list[int]) -> None:
    """The job's process: confine, run the job, exit without returning to the server."""
    try:
        _confine(settings, request, fds)
        job = JOBS[request["job"]]
    except BaseException as exc:
        os.write(2, f"vero: the process could not be confined: {exc}\n".encode())
        os._exit(CONFINE_FAILED)
    code = 0
    try:
        job(request)
        import atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = 1
    os._exit(code)


def _keeper(settings: Json, request: Json, fds: list[int], server: int) -> None:
    """The child's trusted parent (module docstring); never returns."""
    status_fd = fds[3]
    child = 0

    def terminate(signum: int, frame: object) -> None:
        if child:
            os.kill(child, signal.SIGKILL)
        else:
            os._exit(CONFINE_FAILED)

    try:
        os.setsid()
        signal.signal(signal.SIGTERM, terminate)
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != server:
            os._exit(CONFINE_FAILED)
        os.nice(settings["nice"])
        if settings["namespaces"]:
            _check(LIBC.unshare(CLONE_NEWPID | (0 if settings["network"] else CLONE_NEWNET)), "unshare")
        child = os.fork()
        if child == 0:
            _child(settings, request, fds)
        for fd in fds[:3]:
            os.close(fd)
        # Blocked since before the fork: a SIGTERM that came meanwhile now finds `child` set.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
        _, status = os.waitpid(child, 0)
        os.write(status_fd, f"{os.waitstatus_to_exitcode(status)}\n".encode())
    except BaseException as exc:
        os.write(2, f"vero: the keeper failed: {exc}\n".encode())
    os.killpg(0, signal.SIGKILL)
    os._exit(CONFINE_FAILED)


def _serve(settings: Json, control: socket.socket) -> None:
    """Answer requests until the sidecar closes its end; reap finished keepers on the way."""
    server = os.getpid()
    control.settimeout(1.0)
    while True:
        try:
            message, fds, flags, _ = socket.recv_fds(control, MAX_MESSAGE, 4)
        except socket.timeout:  # TimeoutError from 3.10 on; its own class in 3.9
            message, fds, flags = None, [], 0
        if message == b"":
            return
        try:
            if message is not None:
                _spawn(settings, control, message, fds, flags, server)
        finally:
            for fd in fds:
                os.close(fd)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


def _spawn(settings: Json, control: socket.socket, message: bytes, fds: list[int], flags: int, server: int) -> None:
    if len(fds) != 4 or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        control.send(json.dumps({"error": "a request needs one message and four descriptors"}).encode())
        return
    request = json.loads(message)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    try:
        pid = os.fork()
        if pid == 0:
            control.close()
            _keeper(settings, request, fds, server)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(control, [json.dumps({"pid": pid}).encode()], [pidfd])
    finally:
        os.close(pidfd)


def main() -> None:
    """Serve the sidecar on stdin; settings (user, rlimits, namespaces) in argv[1]."""
    settings = json.loads(sys.argv[1])
    control = socket.socket(fileno=os.dup(0))
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again, so no descriptor number is left free for a mix-up
    _serve(settings, control)


if __name__ == "__main__":
    main()
