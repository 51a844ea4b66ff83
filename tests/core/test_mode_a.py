"""Mode A: the candidate runs in a subprocess on label-stripped rows; the trusted scorer scores."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mode_a import (
    ENTRYPOINT,
    IMPROVED_AGENT,
    LABEL_FIELDS,
    SCORER,
    commit_agent,
    is_root,
    make_mode_a_bench,
    shared_tmp,
)
from tests.support.processes import pids_naming
from vero.baseline import restore_baseline
from vero.core.confine import Confinement, SandboxUser, resolve_user
from vero.core.datasets import ModeADataset, load_mode_a_dataset
from vero.core.gitops import TrustedRepo
from vero.core.limits import CandidateLimits
from vero.core.mode_a import ModeAStrategy
from vero.core.records import SampleResult
from vero.core.sample_store import SampleStore
from vero.core.scorer import load_scorer, normalize_score
from vero.core.scorer_pool import ScorerPool
from vero.core.strategy import EvaluationCancelled, EvaluationContext, Progress
from vero.errors import VeroError


@pytest.mark.parametrize(("value", "expected"), [
    (0.5, (0.5, {})), (1, (1.0, {})), (True, (1.0, {})),
    ({"score": 0.25, "f1": 0.5}, (0.25, {"f1": 0.5, "score": 0.25})),
    ({"a": 1.0, "b": 0.0}, (0.5, {"a": 1.0, "b": 0.0})),
])
def test_normalize_score(value: object, expected: tuple[float, dict[str, float]]) -> None:
    assert normalize_score(value) == expected


@pytest.mark.parametrize("value", [{}, math.nan, math.inf, "1.0", None, {"a": "x"}, [1.0]])
def test_unusable_scores(value: object) -> None:
    with pytest.raises(ValueError):
        normalize_score(value)


def test_scorer_file_and_package(tmp_path: Path) -> None:
    (tmp_path / "s.py").write_text("def score(output, row):\n    return 0.75\n")
    assert load_scorer(tmp_path / "s.py")(None, {}) == 0.75
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .impl import score\n")
    (package / "impl.py").write_text("def score(output, row):\n    return {'m': 2.0}\n")
    assert load_scorer(package)(None, {}) == {"m": 2.0}


@pytest.mark.parametrize(("files", "target", "message"), [
    ({"s.py": "x = 1\n"}, "s.py", "no callable `score`"),
    ({"s.py": "raise RuntimeError('boom')\n"}, "s.py", "RuntimeError: boom"),
    ({"s.txt": "def score(o, r): return 1\n"}, "s.txt", "scorer not found"),
    ({"d/x.py": ""}, "d", "no __init__.py"),
])
def test_bad_scorers(tmp_path: Path, files: dict[str, str], target: str, message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(VeroError, match=message):
        load_scorer(tmp_path / target)


needs_root = pytest.mark.skipif(not is_root(), reason="running the candidate as another user needs root "
                                                     "(CI runs as root)")


# One candidate that misbehaves differently per row (the row's id picks the behaviour).
MIXED_AGENT = """
import json, os, sys, time
def solve(row):
    kind = row["id"].split("-")[0]
    print("noise on stdout", flush=True)
    if kind == "ok":
        left, right = row["question"].split("+")
        return {"answer": int(left) + int(right)}
    if kind == "raise":
        raise ValueError("candidate bug")
    if kind == "set":
        return {1, 2}
    if kind == "nan":
        return float("nan")
    if kind == "sleep":
        time.sleep(60)
    if kind == "exit":
        sys.exit(3)
    if kind == "hardexit":
        os._exit(7)
    if kind == "echo":
        return row
    if kind == "badscore":
        return {"answer": "not-a-number-anyway"}
"""
MIXED_SCORER = """
def score(output, row):
    if row["id"].startswith("badscore"):
        raise KeyError("label " + str(row["answer"]))
    if row["id"].startswith("echo"):
        return 1.0
    return {"score": float(output.get("answer") == row["answer"]), "exact": 1.0}
"""


def _mixed_dataset(directory: Path) -> ModeADataset:
    kinds = ["ok", "raise", "set", "nan", "sleep", "exit", "hardexit", "echo", "badscore"]
    directory.mkdir(parents=True)
    lines = [json.dumps({"id": f"{k}-{i}", "question": f"{i}+2", "answer": i + 2, "secret": "s3"})
             for i, k in enumerate(kinds)]
    (directory / "train.jsonl").write_text("\n".join(lines) + "\n")
    return load_mode_a_dataset(directory)


@pytest.fixture
def worktree_parent() -> Iterator[Path]:
    with shared_tmp() as path:
        yield path


def _checkout(tmp_path: Path, parent: Path, agent_source: str) -> tuple[TrustedRepo, str, Path]:
    bench = make_mode_a_bench(tmp_path / "bench")
    restore_baseline(bench.baseline_dir, tmp_path / "trusted")
    repo = TrustedRepo(tmp_path / "trusted")
    commit = repo.import_commit(bench.agent_repo, commit_agent(bench.agent_repo, agent_source))
    return repo, commit, parent


def _strategy(dataset: ModeADataset, scorer: Path, user: SandboxUser | None, scratch: Path,
              **overrides: object) -> ModeAStrategy:
    # With a user (root): the sidecar's confinement, pid namespace included.
    confinement = Confinement(user=user, limits=CandidateLimits(), namespaces=user is not None)
    options: dict[str, object] = {"entrypoint": ENTRYPOINT, "label_fields": ["answer", "secret"],
                                  "scorer": ScorerPool(scorer, workers=2, timeout=10.0), "sample_timeout": 2.0,
                                  "max_concurrency": 4, "confinement": confinement, "scratch_dir": scratch}
    options.update(overrides)
    return ModeAStrategy(dataset, **options)  # type: ignore[arg-type]


def test_errors_become_error_samples_and_results_persist(tmp_path: Path, worktree_parent: Path) -> None:
    dataset = _mixed_dataset(tmp_path / "ds")
    (tmp_path / "scorer.py").write_text(MIXED_SCORER)
    repo, commit, parent = _checkout(tmp_path, worktree_parent, MIXED_AGENT)
    strategy = _strategy(dataset, tmp_path / "scorer.py", None, parent)
    store = SampleStore(tmp_path / "store")
    seen: list[Progress] = []
    ids = dataset.sample_ids("train")
    try:
        with repo.worktree(commit, parent) as worktree:
            started = time.monotonic()
            results = strategy.evaluate(EvaluationContext(commit=commit, split="train", worktree=worktree,
                                                          sample_ids=ids, store=store, progress=seen.append)).samples
            elapsed = time.monotonic() - started
    finally:
        strategy.close()
    by_kind = {r.sample_id.split("-")[0]: r for r in results}
    assert [r.sample_id for r in results] == ids
    assert by_kind["ok"].ok and by_kind["ok"].score == 1.0
    assert by_kind["ok"].metrics == {"exact": 1.0, "score": 1.0}
    assert by_kind["ok"].output == {"answer": 2}  # the candidate's prints did not leak into the output
    # The optimizer reads fixed text and an error id; what the candidate or scorer said is detail.
    raised = by_kind["raise"]
    assert re.fullmatch(r"the entrypoint raised ValueError \(error id E-[0-9a-f]{10}\)", raised.error or "")
    assert (raised.error_detail or "").startswith("ValueError: candidate bug\nTraceback")
    assert 'raise ValueError("candidate bug")' in (raised.error_detail or "")
    assert (by_kind["set"].error or "").startswith("the output is not JSON-serialisable (error id")
    assert (by_kind["nan"].error or "").startswith("the output is not JSON-serialisable (error id")
    assert (by_kind["sleep"].error or "").startswith("timed out after 2 s (error id")
    assert (by_kind["exit"].error or "").startswith("the entrypoint raised SystemExit (error id")
    assert "exited without a result (exit code 7) (error id" in (by_kind["hardexit"].error or "")
    assert by_kind["echo"].output == {"id": "echo-7", "question": "7+2"}  # labels stripped
    badscore = by_kind["badscore"]
    assert (badscore.error or "").startswith("the scorer raised KeyError (error id")
    assert "label" not in (badscore.error or "") and "KeyError: 'label" in (badscore.error_detail or "")
    assert all(r.score is None for r in results if r.error)
    assert elapsed < 20
    assert {r.sample_id for r in store.all()} == set(ids)
    assert seen[-1] == Progress(total=len(ids), done=len(ids), passing=2)
    assert sorted(p.done for p in seen) == list(range(1, len(ids) + 1))
    assert os.listdir(parent) == []  # scratch dirs and the worktree are gone


def test_finished_samples_are_not_run_again(tmp_path: Path, worktree_parent: Path) -> None:
    bench = make_mode_a_bench(tmp_path / "bench")
    restore_baseline(bench.baseline_dir, tmp_path / "trusted")
    repo = TrustedRepo(tmp_path / "trusted")
    commit = repo.import_commit(bench.agent_repo, commit_agent(bench.agent_repo, IMPROVED_AGENT))
    dataset = load_mode_a_dataset(bench.dataset_dir)
    store = SampleStore(tmp_path / "store")
    ids = dataset.sample_ids("train")[:3]
    store.put(SampleResult(sample_id=ids[0], split="train", commit=commit, score=0.42, started_at=0.0,
                           duration_s=0.0))
    store.put(SampleResult(sample_id=ids[1], split="train", commit=commit, error="old failure",
                           started_at=0.0, duration_s=0.0))
    strategy = _strategy(dataset, bench.scorer, None, worktree_parent, label_fields=LABEL_FIELDS)
    try:
        with repo.worktree(commit, worktree_parent) as worktree:
            results = strategy.evaluate(EvaluationContext(commit=commit, split="train", worktree=worktree,
                                                          sample_ids=ids, store=store)).samples
    finally:
        strategy.close()
    assert [r.score for r in results] == [0.42, 1.0, 1.0]  # done kept, error sample re-run


def test_evaluation_timeout_turns_unstarted_samples_into_errors(tmp_path: Path,
                                                                worktree_parent: Path) -> None:
    bench = make_mode_a_bench(tmp_path / "bench", {"train": 6})
    restore_baseline(bench.baseline_dir, tmp_path / "trusted")
    repo = TrustedRepo(tmp_path / "trusted")
    slow = "import time\ndef solve(row):\n    time.sleep(1.5)\n    return {'answer': 0}\n"
    commit = repo.import_commit(bench.agent_repo, commit_agent(bench.agent_repo, slow))
    dataset = load_mode_a_dataset(bench.dataset_dir)
    strategy = _strategy(dataset, bench.scorer, None, worktree_parent, max_concurrency=1,
                         evaluation_timeout=1.0, sample_timeout=10.0)
    try:
        with repo.worktree(commit, worktree_parent) as worktree:
            results = strategy.evaluate(EvaluationContext(commit=commit, split="train", worktree=worktree,
                                                          sample_ids=dataset.sample_ids("train"),
                                                          store=SampleStore(tmp_path / "s"))).samples
    finally:
        strategy.close()
    assert results[0].error is None
    assert all("evaluation timeout (1 s)" in (r.error or "") for r in results[1:])


# Tries to read everything it must not see, and to trick the trusted side into reading it.
HOSTILE_AGENT = """
import json, os
def solve(row):
    report = {}
    for name, path in row["targets"].items():
        try:
            with open(path) as handle:
                report[name] = "READ:" + handle.read()
        except OSError as exc:
            report[name] = type(exc).__name__
    try:
        open("written-by-candidate", "w").write("x")
        report["write_worktree"] = "WROTE"
    except OSError as exc:
        report["write_worktree"] = type(exc).__name__
    report["uid"] = os.getuid()
    report["env"] = sorted(os.environ)
    if row["id"] == "symlink":
        # Point the reply at the labels and exit before the harness writes a real one.
        reply = os.path.join(os.environ["HOME"], "reply.json")
        os.symlink(row["targets"]["labels"], reply)
        os._exit(0)
    return report
"""


@needs_root
def test_hostile_candidate_as_unprivileged_user_cannot_read_secrets(tmp_path: Path, worktree_parent: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    user = resolve_user("nobody")
    assert user is not None
    secret_dir = worktree_parent / "sidecar"  # like /opt/vero/sidecar: root, 0700
    secret_dir.mkdir(mode=0o700)
    (secret_dir / "scorer.py").write_text(SCORER)
    token = worktree_parent / "admin-token"
    token.write_text("TOKEN-VALUE")
    token.chmod(0o600)
    targets = {"labels": str(secret_dir / "dataset" / "train.jsonl"), "scorer": str(secret_dir / "scorer.py"),
               "token": str(token)}
    dataset_dir = secret_dir / "dataset"
    dataset_dir.mkdir()
    (dataset_dir / "train.jsonl").write_text(
        json.dumps({"id": "probe", "targets": targets, "answer": "LABEL-VALUE"}) + "\n"
        + json.dumps({"id": "symlink", "targets": targets, "answer": "LABEL-VALUE"}) + "\n")
    dataset = load_mode_a_dataset(dataset_dir)
    monkeypatch.setenv("VERO_ADMIN_TOKEN", "TOKEN-VALUE")
    repo, commit, parent = _checkout(tmp_path, worktree_parent, HOSTILE_AGENT)
    (tmp_path / "echo_scorer.py").write_text("def score(output, row):\n    return 0.0\n")
    strategy = _strategy(dataset, tmp_path / "echo_scorer.py", user, parent, label_fields=LABEL_FIELDS,
                         secret_env={"API_KEY": "declared-secret"}, sample_timeout=20.0)
    try:
        with repo.worktree(commit, parent) as worktree:
            results = strategy.evaluate(EvaluationContext(commit=commit, split="train", worktree=worktree,
                                                          sample_ids=["probe", "symlink"],
                                                          store=SampleStore(tmp_path / "s"))).samples
            assert not (worktree / "written-by-candidate").exists()
    finally:
        strategy.close()
    probe, symlink = results
    assert probe.error is None, probe.error
    report = probe.output
    assert isinstance(report, dict)
    assert report["labels"] == report["scorer"] == report["token"] == "PermissionError"
    assert report["write_worktree"] in ("PermissionError", "OSError")
    assert report["uid"] == 65534
    env = report["env"]
    assert isinstance(env, list) and "VERO_ADMIN_TOKEN" not in env and "API_KEY" in env
    assert symlink.error is not None and "LABEL-VALUE" not in json.dumps(symlink.model_dump())
    assert "the candidate's result cannot be read" in symlink.error


@needs_root
def test_improved_candidate_scores_as_unprivileged_user(tmp_path: Path, worktree_parent: Path) -> None:
    bench = make_mode_a_bench(tmp_path / "bench")
    restore_baseline(bench.baseline_dir, tmp_path / "trusted")
    repo = TrustedRepo(tmp_path / "trusted")
    commit = repo.import_commit(bench.agent_repo, commit_agent(bench.agent_repo, IMPROVED_AGENT))
    dataset = load_mode_a_dataset(bench.dataset_dir)
    strategy = _strategy(dataset, bench.scorer, resolve_user("nobody"), worktree_parent,
                         label_fields=LABEL_FIELDS)
    try:
        with repo.worktree(commit, worktree_parent) as worktree:
            owner = subprocess.run(["stat", "-c", "%U", str(worktree / "agent.py")], capture_output=True,
                                   text=True, check=True).stdout.strip()
            results = strategy.evaluate(EvaluationContext(commit=commit, split="test", worktree=worktree,
                                                          sample_ids=dataset.sample_ids("test"),
                                                          store=SampleStore(tmp_path / "s"))).samples
    finally:
        strategy.close()
    assert owner == "root"
    assert [r.score for r in results] == [1.0] * len(results), [r.error for r in results]


def test_stop_interrupts_an_evaluation_and_keeps_finished_samples(tmp_path: Path,
                                                                  worktree_parent: Path) -> None:
    bench = make_mode_a_bench(tmp_path / "bench", {"train": 6})
    restore_baseline(bench.baseline_dir, tmp_path / "trusted")
    repo = TrustedRepo(tmp_path / "trusted")
    slow = "import time\ndef solve(row):\n    time.sleep(0.5)\n    return {'answer': 0}\n"
    commit = repo.import_commit(bench.agent_repo, commit_agent(bench.agent_repo, slow))
    dataset = load_mode_a_dataset(bench.dataset_dir)
    strategy = _strategy(dataset, bench.scorer, None, worktree_parent, max_concurrency=1)
    store = SampleStore(tmp_path / "s")
    outcome: list[BaseException | list[SampleResult]] = []
    with repo.worktree(commit, worktree_parent) as worktree:
        context = EvaluationContext(commit=commit, split="train", worktree=worktree,
                                    sample_ids=dataset.sample_ids("train"), store=store)

        def run() -> None:
            try:
                outcome.append(strategy.evaluate(context).samples)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 30
        while not store.all() and time.monotonic() < deadline:
            time.sleep(0.05)
        strategy.stop()
        thread.join(timeout=30)
        assert isinstance(outcome[0], EvaluationCancelled)
        assert 1 <= len(store.all()) < 6 and all(r.error is None for r in store.all())
        with pytest.raises(EvaluationCancelled):
            strategy.evaluate(context)
    strategy.close()


# Detaches a grandchild into its own session (out of the sample's process group) that sleeps
# with a marker in its command line: a candidate trying to leave something running.
DETACHING_AGENT = """
import os, sys, time, uuid
def solve(row):
    marker = os.path.join(os.environ["VERO_TEST_PIDS"], uuid.uuid4().hex)
    open(marker, "w").close()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", marker])
        os._exit(0)
    time.sleep(0.2)
    return {"answer": 0}
"""




@needs_root
def test_processes_a_candidate_detaches_do_not_outlive_the_evaluation(tmp_path: Path,
                                                                     worktree_parent: Path) -> None:
    pids_dir = worktree_parent / "pids"
    pids_dir.mkdir(mode=0o777)
    pids_dir.chmod(0o777)
    repo, commit, parent = _checkout(tmp_path, worktree_parent, DETACHING_AGENT)
    bench_dataset = load_mode_a_dataset(tmp_path / "bench" / "dataset")
    strategy = _strategy(bench_dataset, tmp_path / "bench" / "scorer.py", resolve_user("nobody"), parent,
                         label_fields=LABEL_FIELDS, secret_env={"VERO_TEST_PIDS": str(pids_dir)})
    try:
        with repo.worktree(commit, parent) as worktree:
            ids = bench_dataset.sample_ids("test")[:3]
            results = strategy.evaluate(EvaluationContext(commit=commit, split="test", worktree=worktree,
                                                          sample_ids=ids, store=SampleStore(tmp_path / "s"))).samples
    finally:
        strategy.close()
    assert all(r.error is None for r in results), [r.error for r in results]
    assert len(list(pids_dir.iterdir())) == 3
    assert pids_naming(str(pids_dir)) == [], "a detached candidate process survived its sample"


def test_a_sample_is_reported_only_once_its_result_is_stored(tmp_path: Path, worktree_parent: Path) -> None:
    """Results are written while the next sample runs; progress still follows the durable file."""
    bench = make_mode_a_bench(tmp_path / "sized", {"train": 6})
    dataset = load_mode_a_dataset(bench.dataset_dir)
    repo, commit, parent = _checkout(tmp_path, worktree_parent, IMPROVED_AGENT)
    strategy = _strategy(dataset, bench.scorer, None, parent, max_concurrency=1)
    store = SampleStore(tmp_path / "store")
    reported: list[tuple[int, set[str]]] = []

    def progress(snapshot: Progress) -> None:
        stored = {result.sample_id for result in store.all()}
        reported.append((snapshot.done, stored))

    ids = dataset.sample_ids("train")
    try:
        with repo.worktree(commit, parent) as worktree:
            strategy.evaluate(EvaluationContext(commit=commit, split="train", worktree=worktree, sample_ids=ids,
                                                store=store, progress=progress))
    finally:
        strategy.close()
    assert [done for done, _ in reported] == list(range(1, len(ids) + 1))
    for done, stored in reported:
        assert set(ids[:done]) <= stored  # every reported sample (run in order here) was on disk
