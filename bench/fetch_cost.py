"""What reading commits through the unprivileged fetcher costs, on one-sample evals of tasks/foo.

Every evaluation imports a fresh commit (the optimizer commits, then evaluates HEAD), so each one
pays the import. The product's path: an unprivileged, confined fetcher (uid 65534 and its own
pid and network namespace when run as root) writes a pack that root checks with `git index-pack
--strict`, and the checkout writes the stored blobs. The baseline, measured in the same run and
interleaved with it: the path the sidecar took before, root's own `git fetch` straight from the
optimizer's repository into the trusted one. Both evaluate one train sample of tasks/foo through
the same engine (candidate confined the same way); medians are printed.

    ./pants run bench/fetch_cost.py -- --repeats 15
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.results import record
from tests.support.mode_a import git, shared_tmp
from vero.baseline import make_baseline_commit, restore_baseline
from vero.core.benchmark import SplitAccess
from vero.core.confine import Confinement, numeric_user, resolve_user
from vero.core.datasets import load_mode_a_dataset
from vero.core.engine import Engine, EvalRequest
from vero.core.experiments import ExperimentDB
from vero.core.fetch import FetchSettings
from vero.core.gitops import FULL_SHA, TrustedRepo, validate_ref
from vero.core.ledger import Ledger
from vero.core.limits import CandidateLimits, RepoLimits
from vero.core.mode_a import ModeAStrategy
from vero.core.scorer_pool import ScorerPool
from vero.core.tiers import TierPolicy

# `./pants run` runs the bench from the build root (its sources come from a sandbox).
FOO = Path("tasks/foo").absolute()
NOBODY = 65534


class RootFetchRepo(TrustedRepo):
    """The import as it was: root runs `git fetch` on the optimizer's repository itself."""

    def import_commit(self, source: Path, ref: str) -> str:
        ref = validate_ref(ref)
        if FULL_SHA.fullmatch(ref) and self.commit_of(ref) == ref:
            return ref
        incoming = f"refs/vero/incoming/{uuid.uuid4().hex}"
        self._git("-c", "protocol.file.allow=always", "-c", "transfer.fsckObjects=true", "-c",
                  f"safe.directory={source}", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                  "--no-recurse-submodules", "--", str(source), f"{ref}:{incoming}")
        sha = self.commit_of(incoming)
        assert sha is not None
        self._git("update-ref", f"refs/vero/commits/{sha}", sha)
        self._git("update-ref", "-d", incoming)
        return sha


def foo_agent_repo(root: Path) -> tuple[Path, Path]:
    """A baseline dir (files/ + BASELINE.json) and the optimizer's repo, both from tasks/foo."""
    files = root / "baseline" / "files"
    shutil.copytree(FOO / "agent", files, ignore=shutil.ignore_patterns("__pycache__"))
    scratch = root / "baseline-scratch"
    shutil.copytree(files, scratch)
    sha = make_baseline_commit(scratch)
    (root / "baseline" / "BASELINE.json").write_text(json.dumps({"commit": sha}))
    agent = root / "agent"
    shutil.copytree(files, agent)
    assert make_baseline_commit(agent) == sha
    return root / "baseline", agent


def engine(root: Path, work: Path, baseline: Path, agent: Path, repo_class: type[TrustedRepo],
           fetch: FetchSettings) -> Engine:
    dataset = load_mode_a_dataset(FOO / "data")
    user = resolve_user("nobody" if os.geteuid() == 0 else None)
    strategy = ModeAStrategy(dataset, entrypoint="solver.core:solve", label_fields=["answer"],
                             scorer=ScorerPool(FOO / "scorer" / "scorer.py", workers=1, timeout=60),
                             sample_timeout=60, max_concurrency=1, scratch_dir=work,
                             confinement=Confinement(user=user, limits=CandidateLimits(),
                                                     namespaces=user is not None))
    repo_dir = root / "trusted"
    restore_baseline(baseline, repo_dir)
    sha = json.loads((baseline / "BASELINE.json").read_text())["commit"]
    return Engine(catalog=dataset, policy=TierPolicy([SplitAccess(split="train", access="viewable")], 5),
                  ledger=Ledger(root / "ledger.json", []), db=ExperimentDB(root / "experiments"),
                  strategy=strategy, repo=repo_class(repo_dir, fetch), agent_repo=agent, work_dir=work,
                  baseline_commit=sha)


def main() -> None:
    """Measure and print the import alone and the whole one-sample evaluation, both ways."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    root_user = os.geteuid() == 0
    with shared_tmp() as shared, tempfile.TemporaryDirectory(prefix="vero-fetch-cost-") as private:
        baseline, agent = foo_agent_repo(shared)
        limits = CandidateLimits()
        fetch = FetchSettings(confinement=Confinement(user=numeric_user(NOBODY) if root_user else None,
                                                      limits=limits, namespaces=root_user),
                              scratch_parent=shared / "work", limits=RepoLimits())
        engines = {"unprivileged": engine(Path(private) / "new", shared / "work", baseline, agent, TrustedRepo,
                                          fetch),
                   "root fetch": engine(Path(private) / "old", shared / "work", baseline, agent, RootFetchRepo,
                                        fetch)}
        ids = load_mode_a_dataset(FOO / "data").sample_ids("train")[:1]
        timings: dict[str, dict[str, list[float]]] = {name: {"import": [], "eval": []} for name in engines}
        solver = agent / "solver" / "core.py"
        original = solver.read_text()

        def fresh_commit(tag: str) -> None:
            solver.write_text(f"{original}\n# candidate {tag}\n")
            git(agent, "commit", "-qam", f"candidate {tag}")

        def timed(action: Callable[[], object]) -> float:
            started = time.perf_counter()
            action()
            return (time.perf_counter() - started) * 1000

        try:
            request = EvalRequest(split="train", commit="HEAD", sample_ids=ids)
            for attempt in range(args.repeats):
                order = list(engines) if attempt % 2 else list(reversed(engines))
                for name in order:
                    current = engines[name]
                    fresh_commit(f"{attempt}-{name}-import")
                    timings[name]["import"].append(timed(partial(current.repo.import_commit, agent, "HEAD")))
                    fresh_commit(f"{attempt}-{name}-eval")
                    timings[name]["eval"].append(timed(partial(current.evaluate, request, origin="admin")))
        finally:
            for current in engines.values():
                current.strategy.close()
    median = {name: {what: statistics.median(values) for what, values in parts.items()}
              for name, parts in timings.items()}
    print(f"fetch as {'uid 65534 in its own namespaces' if root_user else 'the current user'}; "
          f"{args.repeats} repeats, medians in ms")
    print(f"{'':14} {'import':>10} {'1-sample eval':>14}")
    for name in ("root fetch", "unprivileged"):
        print(f"{name:14} {median[name]['import']:>10.1f} {median[name]['eval']:>14.1f}")
    for what, label in (("import", "commit import"), ("eval", "one-sample eval of tasks/foo")):
        ratio = median["unprivileged"][what] / median["root fetch"][what]
        print(f"{label}: unprivileged / root fetch = {ratio:.2f}")
        record("fetch_cost", f"{label}, unprivileged fetch vs root fetch", ratio,
               f"{median['unprivileged'][what]:.0f} vs {median['root fetch'][what]:.0f} ms")


if __name__ == "__main__":
    main()
