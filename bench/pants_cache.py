"""Caching and reproducibility of `harbor_task` packaging, measured with the real ./pants.

Run from the repository root with any Python 3 (it drives ./pants, so not under `./pants run`):

    python3 -m bench.pants_cache [--targets //tasks:foo ...] [--edit tasks/foo/agent/README.md]

Prints the time of each scenario and its ratio to a clean build measured in the same run:
clean build (no process cache, no pantsd) twice, with a byte-for-byte comparison of the two
outputs; a rebuild served by the local process cache (filled by an unmeasured build first); a
rebuild with no change under pantsd (no process may run); and a rebuild after editing one input
of the first target (only that target may be recompiled). The edited file is always restored.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.results import record

# pantsd learns of edits through inotify; a command issued within milliseconds of an edit can
# still be served from memory, which no human typing a command would see.
WATCH_LATENCY_S = 1.0
COMPILING = re.compile(r"Starting: Compiling (\S+) into")
EXECUTIONS = re.compile(r"local_execution_requests: (\d+)")


def pants(*args: str) -> tuple[float, str]:
    """Run ./pants with `args`; return (seconds, combined output). Exit on failure."""
    start = time.perf_counter()
    result = subprocess.run(["./pants", "--stats-log", *args], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    output = result.stdout + result.stderr
    if result.returncode != 0:
        sys.exit(f"./pants {' '.join(args)} failed:\n{output[-3000:]}")
    return elapsed, output


def tree_digest(paths: list[Path]) -> dict[str, str]:
    """sha256 and mode of every file under `paths`."""
    digests = {}
    for root in paths:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            mode = oct(path.stat().st_mode & 0o777)
            digests[str(path)] = f"{hashlib.sha256(path.read_bytes()).hexdigest()} {mode}"
    return digests


def compiled(output: str) -> list[str]:
    """The targets whose compile process was started (not served from a cache)."""
    return sorted(set(COMPILING.findall(output)))


def executions(output: str) -> int:
    """Processes actually run by this Pants invocation (from --stats-log)."""
    match = EXECUTIONS.search(output)
    return int(match.group(1)) if match else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["//tasks:foo", "//tasks:bar", "//runner"])
    parser.add_argument("--edit", default="tasks/foo/agent/README.md",
                        help="an input of the first target to edit (restored afterwards)")
    args = parser.parse_args()
    if not Path("pants.toml").is_file():
        sys.exit("run this from the repository root")
    outputs = [Path("dist", *t.lstrip("/").replace(":", "/").split("/")) for t in args.targets]
    package = ["package", *args.targets]

    rows: list[tuple[str, float, str]] = []
    clean1, out = pants("--no-pantsd", "--no-local-cache", *package)
    first = tree_digest(outputs)
    rows.append(("clean build (no cache, no pantsd)", clean1, f"compiled {compiled(out)}"))
    clean2, _ = pants("--no-pantsd", "--no-local-cache", *package)
    second = tree_digest(outputs)
    same = first == second and bool(first)
    rows.append(("second clean build", clean2, f"{len(first)} files, byte-identical: {same}"))
    # Clean builds write no cache entries: fill the local cache first, so this measures a hit
    # rather than whatever an earlier run happened to leave there.
    pants("--no-pantsd", *package)
    cached, out = pants("--no-pantsd", *package)
    rows.append(("local cache, no pantsd", cached, f"compiled {compiled(out)}"))
    pants(*package)  # start pantsd and memoize
    memo, out = pants(*package)
    rows.append(("no change, pantsd", memo, f"processes run: {executions(out)}"))

    edited = Path(args.edit)
    original = edited.read_bytes()
    try:
        # A unique edit: a repeated one would be served from the process cache of an earlier run.
        edited.write_bytes(original + f"\nedited by bench/pants_cache.py at {time.time_ns()}\n".encode())
        time.sleep(WATCH_LATENCY_S)
        after_edit, out = pants(*package)
        rows.append((f"after editing {edited}", after_edit, f"compiled {compiled(out)}"))
    finally:
        edited.write_bytes(original)
    time.sleep(WATCH_LATENCY_S)
    restored, out = pants(*package)
    rows.append(("edit reverted", restored, f"compiled {compiled(out)}"))

    width = max(len(name) for name, _, _ in rows)
    print(f"{'scenario':<{width}}  {'seconds':>8}  {'ratio':>6}  notes")
    for name, seconds, notes in rows:
        print(f"{name:<{width}}  {seconds:8.2f}  {seconds / clean1:6.3f}  {notes}")
        if name != rows[0][0]:
            record("pants_cache", f"{name} vs clean build", seconds / clean1, f"{seconds:.1f} s; {notes}")
    if not same:
        sys.exit("the two clean builds differ")


if __name__ == "__main__":
    os.environ.setdefault("NO_SCIE_WARNING", "1")
    main()
