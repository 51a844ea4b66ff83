"""The Mode B runner's session archive: the same format as the sidecar's, for one evaluation.

A runner run scores one commit on one split; its archive holds that evaluation (a record built
from the stored sample results, so re-running a finished run gives the same bytes), the
benchmark it was scored against, and a bundle of the commit from the developer's repository
(which is only read: the commit gets its session ref in a scratch repository). There is no
budget, no finalize and no baseline: `vero report` says so, and `recover --commit` works.
"""

from __future__ import annotations

from pathlib import Path

from vero import __version__
from vero.core.datasets import make_partition
from vero.core.experiments import ExperimentRecord
from vero.core.records import SampleResult, aggregate
from vero.modeb.config import HarborConfig
from vero.session import gitbundle
from vero.session.model import (
    BENCHMARK,
    BUNDLE,
    COMMITS,
    TASK,
    CommitEntry,
    Evaluation,
    RunnerBenchmark,
    TaskIdentity,
    evaluation_member,
)
from vero.session.tarball import json_member, pack

ARCHIVE_NAME = "session.tar.gz"


def runner_archive(*, origin: str, config: HarborConfig, partition: dict[str, list[str]], split: str,
                   commit: str, repo: Path, results: list[SampleResult]) -> bytes:
    """The archive of one runner evaluation of `commit` on `split` (`results` in request order)."""
    started = min((r.started_at for r in results), default=0.0)
    finished = max((r.started_at + r.duration_s for r in results), default=started)
    sample_ids = [result.sample_id for result in results]
    record = ExperimentRecord(
        experiment_id=f"runner-{split}-{commit[:12]}", origin="agent", purpose="runner", split=split,
        dataset_id=make_partition(partition).dataset_id, commit=commit, requested_ref=commit,
        sample_ids=sample_ids, full_split=sorted(sample_ids) == sorted(partition.get(split, [])), charged=False,
        status="done", created_at=started, finished_at=finished, aggregate=aggregate(results))
    evaluation = Evaluation(asked_by="runner", record=record, results=results)
    identity = TaskIdentity(name=origin, mode="B", vero_version=__version__)
    benchmark = RunnerBenchmark(origin=origin, harbor=config, partition=partition)
    members = {
        TASK: json_member(identity.model_dump(mode="json")),
        BENCHMARK: json_member(benchmark.model_dump(mode="json")),
        COMMITS: json_member([CommitEntry(commit=commit, roles=["evaluated"]).model_dump(mode="json")]),
        evaluation_member(record.experiment_id): json_member(evaluation.model_dump(mode="json")),
        BUNDLE: gitbundle.bundle_commits(repo, [commit]),
    }
    return pack(members, producer="runner")
