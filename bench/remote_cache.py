"""A remote cache shared by two machines, measured with the real ./pants and a local REAPI server.

Run from the repository root with any Python 3 (it drives ./pants, so not under `./pants run`):

    python3 -m bench.remote_cache [--target //tasks:foo] [--cache-dir DIR]

It installs BuildGrid from PyPI into a venv under the cache dir (once; BuildGrid 0.9.1 needs
CPython 3.13, found on PATH or under pyenv), starts its server on a free local port (CAS, action
cache, ByteStream), and clones this repository's HEAD twice. The first clone packages the target
with remote cache writes; the second, a fresh clone with its own empty local store and named
caches (as a second machine has), packages it with remote cache reads. Both start cold: the only
thing they share is the REAPI server. Prints, for the second run: how many processes the remote
cache served (`remote_cache_requests_cached`), how many ran locally, its wall time against the
first run's, and whether both clones' `dist/` outputs are byte-identical.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.pants_cache import tree_digest
from bench.results import record

BUILDGRID = "buildgrid==0.9.1"
INSTANCE = "main"
STATS = ("remote_cache_requests", "remote_cache_requests_cached", "remote_cache_requests_uncached",
         "remote_cache_write_attempts", "remote_cache_write_successes", "local_execution_requests",
         "remote_cache_speculation_local_completed_first", "remote_cache_speculation_remote_completed_first")
# Pants starts a process locally while it looks it up in the remote cache, and cancels the loser:
# `local_execution_requests` counts started runs, these lines the ones that finished.
COMPLETED = re.compile(r"\[INFO\] Completed: (.+)$", re.MULTILINE)
SERVER_CONFIG = """\
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
storages:
  - !disk-storage &cas
    path: {cas}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
instances:
  - name: {instance}
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"""


def python313() -> str:
    """A CPython 3.13 to install BuildGrid with (it requires >= 3.13)."""
    candidates = [shutil.which("python3.13") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.13*", "bin", "python3.13")))
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "import venv"], capture_output=True,
                                        check=False).returncode == 0:
            return candidate
    sys.exit("error: BuildGrid needs CPython 3.13: put python3.13 on PATH or install it with pyenv")


def buildgrid(cache_dir: Path) -> Path:
    """The `bgd` CLI from a venv under `cache_dir`, installed from PyPI with pip when missing."""
    venv = cache_dir / "buildgrid-venv"
    bgd = venv / "bin" / "bgd"
    if not bgd.exists():
        subprocess.run([python313(), "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", BUILDGRID], check=True)
    return bgd


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(bgd: Path, scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The BuildGrid server in its own session, and its address once it accepts connections."""
    port = free_port()
    (scratch / "cas").mkdir()
    config = scratch / "buildgrid.yml"
    config.write_text(SERVER_CONFIG.format(port=port, cas=scratch / "cas", instance=INSTANCE))
    log = open(scratch / "buildgrid.log", "wb")  # noqa: SIM115 (the server writes it until stopped)
    server = subprocess.Popen([str(bgd), "server", "start", str(config)], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"error: BuildGrid exited at start:\n{(scratch / 'buildgrid.log').read_text()[-3000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"grpc://127.0.0.1:{port}"
        time.sleep(0.5)
    stop_server(server)
    sys.exit("error: BuildGrid did not listen within 60 s")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def clone(source: Path, dest: Path) -> Path:
    """A fresh clone of `source`'s HEAD; the pex CLI that ./pants would otherwise build from PyPI
    (git-ignored, checked against its pinned sha256) is copied over, as it is a tool, not a cache."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(source), str(dest)], check=True)
    pex = source / "build-support" / "bin" / "pex"
    if pex.is_file():
        (dest / "build-support" / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(pex, dest / "build-support" / "bin" / "pex")
    return dest


def package(repo: Path, caches: Path, address: str, target: str, *,
            write: bool) -> tuple[float, dict[str, int], list[str]]:
    """`./pants package TARGET` in `repo` with its own local store and named caches (empty at
    first), reading the remote cache, and writing it when `write`; (seconds, stats, the processes
    that ran to completion locally, of those Pants logs at INFO)."""
    args = [
        "./pants", "--no-pantsd", "--no-watch-filesystem", "--stats-log",
        f"--local-store-dir={caches / 'lmdb_store'}", f"--named-caches-dir={caches / 'named_caches'}",
        "--remote-cache-read", f"--remote-cache-write={'true' if write else 'false'}",
        f"--remote-store-address={address}", f"--remote-instance-name={INSTANCE}",
        "package", target,
    ]
    started = time.perf_counter()
    result = subprocess.run(args, cwd=repo, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    output = result.stdout + result.stderr
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(args)} failed in {repo}:\n{output[-4000:]}")
    stats = {}
    for line in output.splitlines():
        name, _, value = line.strip().partition(": ")
        if name in STATS and value.isdigit():
            stats[name] = int(value)
    return elapsed, stats, COMPLETED.findall(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="//tasks:foo")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))) / "vero-bench",
                        help="where the BuildGrid venv is kept between runs")
    args = parser.parse_args()
    if not Path("pants.toml").is_file():
        sys.exit("error: run this from the repository root")
    source = Path.cwd()
    dist = Path("dist", *args.target.lstrip("/").replace(":", "/").split("/"))
    bgd = buildgrid(args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="vero-remote-cache-") as name:
        scratch = Path(name)
        server, address = start_server(bgd, scratch)
        try:
            first_repo, second_repo = clone(source, scratch / "first"), clone(source, scratch / "second")
            first, first_stats, _ = package(first_repo, scratch / "first-caches", address, args.target, write=True)
            second, stats, completed = package(second_repo, scratch / "second-caches", address, args.target,
                                               write=False)
        finally:
            stop_server(server)
        first_tree = {str(Path(p).relative_to(first_repo)): d for p, d in tree_digest([first_repo / dist]).items()}
        second_tree = {str(Path(p).relative_to(second_repo)): d for p, d in tree_digest([second_repo / dist]).items()}
    identical = first_tree == second_tree and bool(first_tree)
    ratio = second / first
    print(f"first clone (cold, writes the remote cache): {first:.1f} s; "
          f"processes run: {first_stats.get('local_execution_requests', -1)}, "
          f"remote cache writes: {first_stats.get('remote_cache_write_successes', -1)}")
    print(f"second clone (fresh, empty local cache, reads the remote cache): {second:.1f} s")
    print(f"  remote_cache_requests_cached: {stats.get('remote_cache_requests_cached', -1)} "
          f"of {stats.get('remote_cache_requests', -1)} remote cache lookups")
    print(f"  processes started locally: {stats.get('local_execution_requests', -1)}; of those raced against "
          f"the cache, remote won {stats.get('remote_cache_speculation_remote_completed_first', 0)}, local won "
          f"{stats.get('remote_cache_speculation_local_completed_first', 0)}")
    print(f"  ran to completion locally (INFO-level processes): {completed}")
    print(f"  wall time vs the first clone: {ratio:.3f}")
    print(f"  {dist} byte-identical: {identical} ({len(first_tree)} files)")
    record("remote_cache", "fresh clone, remote cache vs cold clone", ratio,
           f"{second:.1f} s; {stats.get('remote_cache_requests_cached', -1)} processes from the cache, "
           f"completed locally {completed}; byte-identical: {identical}")
    if not identical:
        sys.exit(f"error: {dist} differs between the two clones")


if __name__ == "__main__":
    os.environ.setdefault("NO_SCIE_WARNING", "1")
    main()
