"""Mode A throughput: the engine's samples/s against two bare loops that run each row in its own process.

- The bare subprocess loop starts a fresh `python3` per row (as the same unprivileged user
  when root): what running the entrypoint per row costs done the obvious way.
- The bare fork loop is the floor of the engine's own design: one warm interpreter forks a
  child per row, which imports the entrypoint, calls it and sends the output back on a pipe;
  no confinement, no scorer, nothing written.

All run with the same concurrency. The engine adds what the product needs on top: commit
import, worktree checkout, the confinement of every sample (pid namespace, rlimits, user,
capabilities), the harness, label stripping, the trusted scorer, one durable result file per
sample and the experiment record.

    ./pants run bench/mode_a_throughput.py -- --samples 64 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.results import record
from tests.support.mode_a import (
    ENTRYPOINT,
    IMPROVED_AGENT,
    LABEL_FIELDS,
    commit_agent,
    make_mode_a_bench,
    shared_tmp,
)
from vero.baseline import restore_baseline
from vero.core.benchmark import SplitAccess
from vero.core.confine import SAFE_PATH, Confinement, SandboxUser, drop_privileges_argv, resolve_user
from vero.core.datasets import load_mode_a_dataset, strip_labels
from vero.core.engine import Engine, EvalRequest
from vero.core.experiments import ExperimentDB
from vero.core.gitops import TrustedRepo
from vero.core.ledger import Ledger
from vero.core.limits import CandidateLimits
from vero.core.mode_a import ModeAStrategy
from vero.core.scorer_pool import ScorerPool
from vero.core.tiers import TierPolicy

BARE_CALL = ("import json, sys\nfrom agent import solve\n"
             "sys.stdout.write(json.dumps(solve(json.loads(sys.stdin.read()))))\n")


def bare_loop(rows: list[dict[str, object]], worktree: Path, user: SandboxUser | None,
              concurrency: int) -> float:
    """Seconds to call the entrypoint once per row, each in its own subprocess."""
    env = {"PATH": SAFE_PATH, "PYTHONPATH": str(worktree), "HOME": "/tmp", "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}

    def call(row: dict[str, object]) -> object:
        argv = [*(drop_privileges_argv(user) if user else []), "python3", "-B", "-c", BARE_CALL]
        done = subprocess.run(argv, cwd=worktree, env=env,
                              input=json.dumps(row).encode(), capture_output=True, check=True)
        return json.loads(done.stdout)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outputs = list(pool.map(call, rows))
    elapsed = time.perf_counter() - started
    assert all(isinstance(o, dict) and "answer" in o for o in outputs)
    return elapsed


# Run by a fresh interpreter: rows on stdin (JSON lines), at most `concurrency` children at once,
# each forked per row; prints the seconds the loop took (its own start-up not counted).
FORK_LOOP = r"""
import json, os, sys, time
rows = [line for line in sys.stdin.buffer.read().splitlines() if line]
concurrency = int(sys.argv[1])
started = time.perf_counter()
running, outputs = {}, []
def reap():
    pid, _ = os.wait()
    read_fd = running.pop(pid)
    outputs.append(json.loads(os.read(read_fd, 1 << 20)))
    os.close(read_fd)
for row in rows:
    if len(running) >= concurrency:
        reap()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        from agent import solve
        os.write(write_fd, json.dumps(solve(json.loads(row))).encode())
        os._exit(0)
    os.close(write_fd)
    running[pid] = read_fd
while running:
    reap()
assert all(isinstance(o, dict) and "answer" in o for o in outputs)
print(time.perf_counter() - started)
"""


def fork_loop(rows: list[dict[str, object]], worktree: Path, concurrency: int) -> float:
    """Seconds for one warm interpreter to fork a child per row that calls the entrypoint."""
    env = {"PATH": SAFE_PATH, "PYTHONPATH": str(worktree), "HOME": "/tmp", "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(["python3", "-B", "-c", FORK_LOOP, str(concurrency)], cwd=worktree, env=env,
                          input="".join(json.dumps(row) + "\n" for row in rows).encode(),
                          capture_output=True, check=True)
    return float(done.stdout)


def agent_source(work_ms: float) -> str:
    """The improved agent, optionally spending `work_ms` per call like a real entrypoint would."""
    if not work_ms:
        return IMPROVED_AGENT
    return f"import time\n{IMPROVED_AGENT}".replace(
        "def solve(row):\n", f"def solve(row):\n    time.sleep({work_ms / 1000!r})\n")


class Setup:
    """One benchmark, its engine, and a checkout of the candidate for the bare loop."""

    def __init__(self, root: Path, work: Path, samples: int, concurrency: int, user: SandboxUser | None,
                 work_ms: float) -> None:
        bench = make_mode_a_bench(root / f"bench-{concurrency}", {"train": samples})
        restore_baseline(bench.baseline_dir, root / f"repo-{concurrency}")
        self.commit = commit_agent(bench.agent_repo, agent_source(work_ms))
        dataset = load_mode_a_dataset(bench.dataset_dir)
        self.rows = [strip_labels(dataset.row("train", sid), LABEL_FIELDS)
                     for sid in dataset.sample_ids("train")]
        self.strategy = ModeAStrategy(dataset, entrypoint=ENTRYPOINT, label_fields=LABEL_FIELDS,
                                      scorer=ScorerPool(bench.scorer, workers=concurrency, timeout=60),
                                      sample_timeout=60, max_concurrency=concurrency,
                                      confinement=Confinement(user=user, limits=CandidateLimits(),
                                                              namespaces=user is not None),
                                      scratch_dir=work)
        self.repo = TrustedRepo(root / f"repo-{concurrency}")
        self.repo.import_commit(bench.agent_repo, self.commit)
        self.engine = Engine(catalog=dataset,
                             policy=TierPolicy([SplitAccess(split="train", access="viewable")], 5),
                             ledger=Ledger(root / f"ledger-{concurrency}.json", []),
                             db=ExperimentDB(root / f"experiments-{concurrency}"), strategy=self.strategy,
                             repo=self.repo, agent_repo=bench.agent_repo, work_dir=work,
                             baseline_commit=bench.baseline_commit)
        self.work, self.user, self.concurrency = work, user, concurrency

    def engine_seconds(self) -> float:
        """One full engine evaluation (commit import, worktree, harness, scoring, records)."""
        started = time.perf_counter()
        outcome = self.engine.evaluate(EvalRequest(split="train", commit=self.commit), origin="admin")
        elapsed = time.perf_counter() - started
        assert outcome.record.aggregate is not None and outcome.record.aggregate.mean_score == 1.0
        return elapsed

    def bare_seconds(self) -> tuple[float, float]:
        """The bare subprocess and fork loops over the same rows, in a checkout of the same commit
        (the checkout is not timed)."""
        with self.repo.worktree(self.commit, self.work) as worktree:
            return (bare_loop(self.rows, worktree, self.user, self.concurrency),  # type: ignore[arg-type]
                    fork_loop(self.rows, worktree, self.concurrency))  # type: ignore[arg-type]


def main() -> None:
    """Measure and print samples/s of the engine and both loops, and its ratios, for each concurrency."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; medians are shown")
    parser.add_argument("--work-ms", type=float, default=0.0,
                        help="milliseconds the entrypoint sleeps per call (0: trivial entrypoint)")
    parser.add_argument("--user", default="nobody" if os.geteuid() == 0 else "current",
                        help="unprivileged user for candidate code, or `current` (default: nobody when root)")
    args = parser.parse_args()
    user = resolve_user(None if args.user == "current" else args.user)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.samples} samples, "
          f"user={user.name if user else 'current'}, entrypoint work {args.work_ms:g} ms")
    print(f"{'concurrency':>11} {'engine/s':>9} {'bare/s':>8} {'fork/s':>8} {'vs bare':>8} {'vs fork':>8}")
    with tempfile.TemporaryDirectory(prefix="vero-bench-") as scratch, shared_tmp() as work:
        for concurrency in args.concurrency:
            setup = Setup(Path(scratch), work, args.samples, concurrency, user, args.work_ms)
            bare: list[float] = []
            fork: list[float] = []
            engine: list[float] = []
            try:
                for _ in range(args.repeats):  # interleaved, so machine noise hits every side
                    bare_s, fork_s = setup.bare_seconds()
                    bare.append(bare_s)
                    fork.append(fork_s)
                    engine.append(setup.engine_seconds())
            finally:
                setup.strategy.close()
            rates = {name: args.samples / statistics.median(times)
                     for name, times in (("engine", engine), ("bare", bare), ("fork", fork))}
            print(f"{concurrency:>11} {rates['engine']:>9.1f} {rates['bare']:>8.1f} {rates['fork']:>8.1f} "
                  f"{rates['engine'] / rates['bare']:>8.2f} {rates['engine'] / rates['fork']:>8.2f}")
            for name in ("bare", "fork"):
                record("mode_a_throughput", f"engine vs bare {'subprocess' if name == 'bare' else 'fork'} loop "
                       f"samples/s, concurrency {concurrency}", rates["engine"] / rates[name],
                       f"{rates['engine']:.1f} vs {rates[name]:.1f} samples/s, {args.work_ms:g} ms entrypoint")
    print(f"medians of {args.repeats} interleaved runs; ratios = engine samples/s divided by each loop's "
          "(1.0 = no overhead)")


if __name__ == "__main__":
    main()
