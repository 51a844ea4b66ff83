"""Bench: the session archive of a large session, against `tar czf` of the same files.

Synthesizes an admin volume as a sidecar leaves it: a trusted git repository with a baseline
and N candidate commits (each under refs/vero/commits/<sha>), E experiment records with their
per-sample results, the ledger, a submission and a finalize report (default 200 commits and
1,000 evaluations of 10 samples). Then times, in the same run and on the same warm files:
  tar:     `tar czf` of the admin directory (every file, the repository's objects included);
  archive: vero's `sidecar_archive` (every record parsed and checked, secrets redacted, the
           git bundle of the session's commits, the deterministic tar.gz with its manifest);
and prints archive / tar. Run: ./pants run bench/session_archive.py -- [--evaluations E] [--commits N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.results import record
from vero.core.experiments import ExperimentDB
from vero.core.ledger import LedgerEntry, LedgerState
from vero.core.records import SampleResult
from vero.core.redaction import Redactor
from vero.fsutil import atomic_write_model
from vero.serve.api import FinalizeReport, RankedCandidate, Submission
from vero.serve.config import ServeConfig, ServePaths
from vero.session.admin import sidecar_archive

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@vero.invalid", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@vero.invalid", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
SAMPLES = 10


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, input=stdin, capture_output=True, text=True,
                          check=True).stdout.strip()


def make_repo(repo: Path, n_commits: int) -> list[str]:
    """A baseline and `n_commits` candidates, each changing one of a few files of a small agent."""
    repo.mkdir(parents=True)
    _git(repo, "init", "--quiet", "--initial-branch", "main")
    for index in range(20):
        (repo / f"agent_{index}.py").write_text("".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(200)))
    _git(repo, "add", "--all")
    _git(repo, "commit", "--quiet", "-m", "baseline")
    commits = [_git(repo, "rev-parse", "HEAD")]
    _git(repo, "checkout", "--quiet", "-b", "work")   # main keeps the baseline, as in the sidecar
    for index in range(n_commits):
        path = repo / f"agent_{index % 20}.py"
        path.write_text(path.read_text() + f"# candidate {index}\ndef g{index}(x):\n    return x * {index}\n")
        _git(repo, "commit", "--quiet", "--all", "-m", f"candidate {index}")
        commits.append(_git(repo, "rev-parse", "HEAD"))
    _git(repo, "update-ref", "--stdin", stdin="".join(f"update refs/vero/commits/{sha} {sha}\n"
                                                      for sha in commits[1:]))
    return commits


def make_session(admin: Path, n_evaluations: int, n_commits: int) -> ServeConfig:
    """The admin volume of a finished session, and the ServeConfig that points at it."""
    commits = make_repo(admin / "repo", n_commits)
    db = ExperimentDB(admin / "experiments")
    spent: dict[str, list[str]] = {"train": [], "validation": []}
    for index in range(n_evaluations):
        split = "train" if index % 3 else "validation"
        commit = commits[1 + index % n_commits]
        ids = [f"{split}-{(index + i) % 50}" for i in range(SAMPLES)]
        record = db.create(origin="agent", purpose="eval", split=split, dataset_id="d" * 64, commit=commit,
                           requested_ref=commit, sample_ids=ids, full_split=False, charged=True)
        store = db.store(record.experiment_id)
        results = []
        for position, sample_id in enumerate(ids):
            result = SampleResult(sample_id=sample_id, split=split, commit=commit, score=float(position % 2),
                                  output={"answer": position, "trace": "step " * 40}, started_at=time.time(),
                                  duration_s=0.5)
            store.put(result)
            results.append(result)
        db.finish(record, results)
        spent[split].append(record.experiment_id)
    atomic_write_model(admin / "ledger.json", LedgerState(entries=[
        LedgerEntry(split=split, dataset_id="d" * 64, runs_used=len(ids), samples_used=len(ids) * SAMPLES,
                    charged_experiments=ids) for split, ids in spent.items()]))
    winner = commits[-1]
    atomic_write_model(admin / "submission.json", Submission(commit=winner, requested_ref="HEAD", submitted_at=1.0))
    atomic_write_model(admin / "finalize.json", FinalizeReport(
        rewards={"accuracy": 0.9}, candidate=winner, source="auto_best", errors=[], finished_at=2.0,
        ranking=[RankedCandidate(commit=winner, selection_score=1.0, first_evaluated_at=1.0, trusted_score=0.9)]))
    return ServeConfig.model_validate({
        "mode": "A", "name": "bench/session", "baseline_commit": commits[0],
        "paths": ServePaths(admin_dir=str(admin), trusted_repo=str(admin / "repo")).model_dump(),
        "splits": [{"split": "train", "access": "viewable"}, {"split": "validation", "access": "non_viewable"}],
        "budgets": [{"split": "train", "total_run_budget": n_evaluations},
                    {"split": "validation", "total_run_budget": n_evaluations}],
        "selection_split": "validation", "targets": [{"split": "validation", "reward_key": "accuracy"}],
        "mode_a": {"dataset_dir": "/nonexistent", "entrypoint": "agent:solve", "scorer": "/nonexistent"}})


def interleaved(repeat: int, first: Callable[[], int], second: Callable[[], int]) -> tuple[float, float, int, int]:
    """Fastest of `repeat` timings of each, alternating them so machine noise hits both alike."""
    best = [float("inf"), float("inf")]
    sizes = [0, 0]
    for _ in range(repeat):
        for slot, func in enumerate((first, second)):
            started = time.perf_counter()
            sizes[slot] = func()
            best[slot] = min(best[slot], time.perf_counter() - started)
    return best[0], best[1], sizes[0], sizes[1]


def main() -> None:
    """Synthesize, warm up, time both, print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluations", type=int, default=1000)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vero-bench-session-"))
    try:
        admin = workdir / "admin"
        started = time.perf_counter()
        config = make_session(admin, args.evaluations, args.commits)
        n_files = sum(1 for p in admin.rglob("*") if p.is_file())
        print(f"synthesized {args.evaluations} evaluations x {SAMPLES} samples and {args.commits} commits "
              f"({n_files} files) in {time.perf_counter() - started:.1f}s")
        out = workdir / "tar.tar.gz"

        def tar() -> int:
            subprocess.run(["tar", "czf", str(out), "-C", str(admin), "."], check=True)
            return out.stat().st_size

        def archive() -> int:
            return len(sidecar_archive(config, Redactor({})))

        tar(), archive()   # one untimed pass of each warms the page cache
        tar_s, archive_s, tar_size, archive_size = interleaved(args.repeat, tar, archive)
        best = f"(best of {args.repeat})"
        print(f"tar czf of the admin dir:  {tar_size / 1e6:.1f} MB in {tar_s:.3f}s {best}")
        print(f"vero session archive:      {archive_size / 1e6:.1f} MB in {archive_s:.3f}s {best}")
        print(f"ratio archive/tar: {archive_s / tar_s:.2f}")
        record("session_archive", f"session archive vs tar czf, {args.evaluations} evaluations, "
               f"{args.commits} commits", archive_s / tar_s,
               f"{archive_s:.2f} vs {tar_s:.2f} s, {archive_size / 1e6:.1f} vs {tar_size / 1e6:.1f} MB")
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
