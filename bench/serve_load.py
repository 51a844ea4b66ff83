"""Sidecar load: 50 concurrent clients on /status and /eval against a real server process.

Prints p50/p99 latency per endpoint, and the ratio of /eval wall time to the scoring time
alone (the Mode A strategy run in-process on the same samples, same concurrency and user),
first with one client and then under load.

The clients are threads spread over `--client-processes` processes (all 50 in one process would
mostly measure that process's GIL: 50 httpx clients firing at once). A probe in a process of its
own also asks /status every 10 ms during the load: its p99 is the server's responsiveness alone.

    ./pants run bench/serve_load.py -- --clients 50 --requests 8 --eval-samples 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.results import record
from tests.support.mode_a import (
    ENTRYPOINT,
    IMPROVED_AGENT,
    LABEL_FIELDS,
    commit_agent,
    make_mode_a_bench,
    shared_tmp,
)
from tests.support.sidecar import serve_config, start_sidecar
from vero.baseline import restore_baseline
from vero.core.confine import Confinement, resolve_user
from vero.core.datasets import load_mode_a_dataset
from vero.core.gitops import TrustedRepo
from vero.core.limits import CandidateLimits
from vero.core.mode_a import ModeAStrategy
from vero.core.sample_store import SampleStore
from vero.core.scorer_pool import ScorerPool
from vero.core.strategy import EvaluationContext


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# Runs in its own process: GET /status every 10 ms until stdin closes, then print each request's
# start (time.monotonic, the same clock in every process) and latency.
PROBE = r"""
import http.client, json, select, sys, time
host, port = sys.argv[1], int(sys.argv[2])
latencies = []
connection = http.client.HTTPConnection(host, port, timeout=60)
while not select.select([sys.stdin], [], [], 0.01)[0]:
    at, started = time.monotonic(), time.perf_counter()
    connection.request("GET", "/status")
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"/status answered {response.status}")
    latencies.append((at, time.perf_counter() - started))
print(json.dumps(latencies))
"""


def start_probe(url: str) -> subprocess.Popen[str]:
    """The /status probe process (`PROBE`) against the sidecar at `url`."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return subprocess.Popen([sys.executable, "-c", PROBE, host, port], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def stop_probe(probe: subprocess.Popen[str], start: float, end: float) -> list[float]:
    """Stop the probe and return the latencies in seconds of its /status requests started between
    `start` and `end` (monotonic clock): before, the client processes were still being started
    and were building their clients (a TLS context each), which is the benchmark's own load."""
    stdout, _ = probe.communicate("stop\n", timeout=60)
    if probe.returncode != 0:
        raise RuntimeError(f"the /status probe failed with exit code {probe.returncode}")
    return [float(latency) for at, latency in json.loads(stdout) if start <= at <= end]


@dataclass
class GroupOutcome:
    """What one client process saw: (path, first of its kind for that client, seconds) per
    request, failures, its start and end."""

    latencies: list[tuple[str, bool, float]]
    failures: list[str]
    started: float
    finished: float


def client_group(url: str, body: dict[str, object], indexes: list[int], requests: int,
                 barrier: threading.Barrier, outcomes: multiprocessing.Queue[GroupOutcome]) -> None:
    """One client process: a thread per client index, each alternating /eval and /status."""
    latencies: list[tuple[str, bool, float]] = []
    failures: list[str] = []
    lock = threading.Lock()
    released: list[float] = []

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            barrier.wait()
            with lock:
                released.append(time.monotonic())
            for i in range(requests):
                path = "/status" if (index + i) % 2 else "/eval"
                started = time.perf_counter()
                response = client.get(path) if path == "/status" else client.post(path, json=body)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append((path, i < 2, elapsed))
                    if response.status_code != 200:
                        failures.append(f"{path} {response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client_loop, args=(index,)) for index in indexes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes.put(GroupOutcome(latencies, failures, min(released), time.monotonic()))


class ScoringAlone:
    """The Mode A strategy run in this process on `samples` validation rows: what /eval costs
    without the server, the request, the rules and the records."""

    def __init__(self, root: Path, work: Path, samples: int, concurrency: int, user: str | None) -> None:
        bench = make_mode_a_bench(root / "alone", {"validation": samples})
        self.commit = commit_agent(bench.agent_repo, IMPROVED_AGENT)
        restore_baseline(bench.baseline_dir, root / "alone-repo")
        repo = TrustedRepo(root / "alone-repo")
        repo.import_commit(bench.agent_repo, self.commit)
        self.dataset = load_mode_a_dataset(bench.dataset_dir)
        self.strategy = ModeAStrategy(self.dataset, entrypoint=ENTRYPOINT, label_fields=LABEL_FIELDS,
                                      scorer=ScorerPool(bench.scorer, workers=concurrency, timeout=60),
                                      sample_timeout=60, max_concurrency=concurrency, scratch_dir=work,
                                      confinement=Confinement(user=resolve_user(user), limits=CandidateLimits(),
                                                              namespaces=user is not None))
        self.checkout = repo.worktree(self.commit, work)
        self.worktree = self.checkout.__enter__()
        self.root = root
        self.attempts = 0

    def once(self) -> float:
        """Seconds of one evaluation of every row."""
        self.attempts += 1
        started = time.perf_counter()
        results = self.strategy.evaluate(EvaluationContext(
            commit=self.commit, split="validation", worktree=self.worktree,
            sample_ids=self.dataset.sample_ids("validation"),
            store=SampleStore(self.root / f"alone-store-{self.attempts}"))).samples
        elapsed = time.perf_counter() - started
        assert all(r.score == 1.0 for r in results)
        return elapsed

    def close(self) -> None:
        """Release the checkout and the strategy's processes."""
        self.checkout.__exit__(None, None, None)
        self.strategy.close()


def main() -> None:
    """Run the three phases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=8,
                        help="requests per client (half /status, half /eval)")
    parser.add_argument("--client-processes", type=int, default=10,
                        help="processes the clients are spread over (threads within each)")
    parser.add_argument("--eval-samples", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4, help="the sidecar's max_concurrency")
    parser.add_argument("--repeats", type=int, default=15, help="single-client repetitions")
    args = parser.parse_args()
    user = "nobody" if os.geteuid() == 0 else None
    n = args.eval_samples
    with tempfile.TemporaryDirectory(prefix="vero-load-") as scratch, shared_tmp() as root:
        scoring = ScoringAlone(Path(scratch), root / "alone-work", n, args.concurrency, user)
        # The sidecar's unprivileged fetcher reads the agent repo: it lives in the shared `root`.
        bench = make_mode_a_bench(Path(scratch) / "bench", {"train": 4, "validation": n, "test": 4},
                                  agent_parent=root)
        commit_agent(bench.agent_repo, IMPROVED_AGENT)
        budget = args.clients * args.requests * n + args.repeats * n + 100
        config = serve_config(root, bench, max_concurrency=args.concurrency, k_anonymity_floor=1,
                              budgets=[{"split": "validation", "total_sample_budget": budget}])
        sidecar = start_sidecar(root, config)
        try:
            body = {"split": "validation", "num_samples": n}
            single, alone_times = [], []
            try:
                with httpx.Client(base_url=sidecar.url, timeout=600) as client:
                    # Interleaved, after one warm-up of each: machine noise hits both sides alike.
                    for attempt in range(args.repeats + 1):
                        alone_s = scoring.once()
                        started = time.perf_counter()
                        assert client.post("/eval", json=body).json()["aggregate"]["mean_score"] == 1.0
                        if attempt:
                            single.append(time.perf_counter() - started)
                            alone_times.append(alone_s)
            finally:
                scoring.close()
            alone = statistics.median(alone_times)
            context = multiprocessing.get_context("fork")
            barrier = context.Barrier(args.clients)
            outcomes: multiprocessing.Queue[GroupOutcome] = context.Queue()
            groups = [context.Process(target=client_group, args=(
                sidecar.url, body, list(range(first, args.clients, args.client_processes)), args.requests,
                barrier, outcomes)) for first in range(min(args.client_processes, args.clients))]
            probe = start_probe(sidecar.url)
            for group in groups:
                group.start()
            results = [outcomes.get(timeout=3600) for _ in groups]
            for group in groups:
                group.join()
            probed = stop_probe(probe, min(r.started for r in results), max(r.finished for r in results))
            latencies: dict[str, list[float]] = {"/status": [], "/eval": []}
            # Each client's first request of each kind also opens its connection, all fifty at the
            # same instant: kept apart, the rest is what a client sees once the load is running.
            steady: dict[str, list[float]] = {"/status": [], "/eval": []}
            failures: list[str] = []
            for result in results:
                for path, first, elapsed in result.latencies:
                    latencies[path].append(elapsed)
                    if not first:
                        steady[path].append(elapsed)
                failures.extend(result.failures)
            wall = max(r.finished for r in results) - min(r.started for r in results)
        finally:
            sidecar.stop()
    single_eval = statistics.median(single)
    print(f"{os.cpu_count()} cpus, user={user or 'current'}, max_concurrency={args.concurrency}, "
          f"{n} samples per /eval")
    print(f"scoring alone (strategy in-process), median: {alone * 1000:.0f} ms")
    print(f"/eval with one client, median:               {single_eval * 1000:.0f} ms "
          f"(ratio to scoring alone {single_eval / alone:.2f})")
    print(f"load: {args.clients} clients x {args.requests} requests in {wall:.1f} s, "
          f"{len(failures)} failures")
    for path, values in latencies.items():
        later = steady[path]
        print(f"  {path:8} n={len(values):4} p50={percentile(values, 50) * 1000:8.0f} ms "
              f"p99={percentile(values, 99) * 1000:8.0f} ms; after each client's first: n={len(later)} "
              f"p50={percentile(later, 50) * 1000:.0f} ms p99={percentile(later, 99) * 1000:.0f} ms")
    print(f"  /status from a probe process every 10 ms: n={len(probed)} p50={percentile(probed, 50) * 1000:.1f} ms "
          f"p99={percentile(probed, 99) * 1000:.1f} ms max={max(probed) * 1000:.1f} ms")
    loaded = statistics.mean(latencies["/eval"])
    print(f"/eval under load, mean {loaded * 1000:.0f} ms: ratio to scoring alone {loaded / alone:.2f} "
          f"(evaluations queue for the shared pool of {args.concurrency})")
    served = len(latencies["/eval"]) * n / wall
    print(f"sample throughput under load {served:.1f}/s vs scoring alone {n / alone:.1f}/s "
          f"(ratio {served / (n / alone):.2f})")
    status = latencies["/status"]
    record("serve_load", "/eval (one client) vs scoring alone, time", single_eval / alone,
           f"{single_eval * 1000:.0f} vs {alone * 1000:.0f} ms")
    record("serve_load", f"samples/s under {args.clients} clients vs scoring alone", served / (n / alone),
           f"/status p50 {percentile(status, 50) * 1000:.0f} ms, p99 {percentile(status, 99) * 1000:.0f} ms, "
           f"after each client's first p99 {percentile(steady['/status'], 99) * 1000:.0f} ms "
           f"(probe process: p50 {percentile(probed, 50) * 1000:.1f} ms, p99 {percentile(probed, 99) * 1000:.1f} ms); "
           f"/eval p50 {percentile(latencies['/eval'], 50) * 1000:.0f} ms, "
           f"p99 {percentile(latencies['/eval'], 99) * 1000:.0f} ms; {len(failures)} failures")
    for failure in failures[:5]:
        print("  failure:", failure)


if __name__ == "__main__":
    main()
