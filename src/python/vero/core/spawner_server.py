"""The candidate spawner's server: a fork server for Mode A samples (standard library only).

The sidecar runs this file's source as `python3 -B -s -c <source> <settings>`, as root, with an
empty environment and its control socket (SOCK_SEQPACKET) as stdin. Per sample it receives a
request (JSON) with four descriptors: the sample's stdin, stdout and stderr pipes and a status
pipe. The sidecar serves those pipes itself: this process never sees a row, a secret beyond the
candidate's own environment, or an output.

Per request it forks a *keeper* (root, trusted code only), which:
- starts a new session, lowers its priority, and takes SIGTERM if this server dies;
- creates a pid namespace (and a network namespace when the network is cut) and forks the
  *candidate*, the namespace's first process: when it ends, the kernel kills every process it
  started, wherever they went;
- waits for the candidate, writes its exit code to the status pipe and kills its own group.
  SIGTERM (the sidecar's timeout or stop) makes it kill the candidate first: a candidate can
  leave the keeper's session and clear its parent-death signal, but not stop its parent.

The candidate confines itself before any candidate code runs: the sample's pipes become its
stdio and every other descriptor is closed, `oom_score_adj` 1000 (the kernel kills candidates
first), the rlimits, no capability left in any set, the harness user, no supplementary groups,
no_new_privs, killed with its keeper. Then it runs the harness in place: the interpreter and
the standard library are loaded already, which is what a sample no longer pays for. Anything
failing on the way ends the process (exit 126) before candidate code runs.
"""

import ctypes
import importlib
import json
import os
import resource
import signal
import socket
import sys

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CAPABILITY_VERSION_3 = 0x20080522
CONFINE_FAILED = 126
MAX_MESSAGE = 1 << 20
LIBC = ctypes.CDLL(None, use_errno=True)


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


def _confine(settings: dict, request: dict, fds: list) -> None:
    """Everything between the fork and the first line of candidate code (module docstring)."""
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


def _harness(request: dict) -> None:
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


def _candidate(settings: dict, request: dict, fds: list) -> None:
    """The candidate process: confine, run the harness, exit without returning to the server."""
    try:
        _confine(settings, request, fds)
    except BaseException as exc:
        os.write(2, f"vero: the candidate could not be confined: {exc}\n".encode())
        os._exit(CONFINE_FAILED)
    code = 0
    try:
        _harness(request)
        import atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = 1
    os._exit(code)


def _keeper(settings: dict, request: dict, fds: list, server: int) -> None:
    """The candidate's trusted parent (module docstring); never returns."""
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
            _candidate(settings, request, fds)
        for fd in fds[:3]:
            os.close(fd)
        # Blocked since before the fork: a SIGTERM that came meanwhile now finds `child` set.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
        _, status = os.waitpid(child, 0)
        os.write(status_fd, f"{os.waitstatus_to_exitcode(status)}\n".encode())
    except BaseException as exc:
        os.write(2, f"vero: the candidate's keeper failed: {exc}\n".encode())
    os.killpg(0, signal.SIGKILL)
    os._exit(CONFINE_FAILED)


def _serve(settings: dict, control: socket.socket) -> None:
    """Answer requests until the sidecar closes its end; reap finished keepers on the way."""
    server = os.getpid()
    control.settimeout(1.0)
    while True:
        try:
            message, fds, flags, _ = socket.recv_fds(control, MAX_MESSAGE, 4)
        except TimeoutError:
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


def _spawn(settings: dict, control: socket.socket, message: bytes, fds: list, flags: int, server: int) -> None:
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
