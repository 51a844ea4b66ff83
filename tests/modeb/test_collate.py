"""Collation (SPEC §6) over recorded-shape Harbor jobs trees: best trial, attempts, rewards,
errors, corrupt files, duplicate names, missing tasks, refusal."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.modeb.harbor_results import T0, make_job, make_task, write_trial, write_unfinished_trial
from vero.core.records import SampleResult
from vero.errors import VeroError
from vero.modeb.collate import RunNote, best_trial, collate, match_trials, reward_of
from vero.modeb.config import CollationSettings
from vero.modeb.task_source import TaskRef, TaskSource
from vero.modeb.trials import Trial, job_dirs, read_job, read_jobs

BEST = CollationSettings()
MEAN = CollationSettings(aggregate_attempts="mean")
LONG_DIR = "a-task-directory-name-that-is-longer-than-thirty-two-chars"


@pytest.fixture()
def tasks_root(tmp_path: Path) -> Path:
    root = tmp_path / "tasks"
    make_task(root, "alpha", "org/alpha")
    make_task(root, "beta")
    make_task(root, "gamma", "org/gamma")
    make_task(root, LONG_DIR, "org/long")
    make_task(root, "dup-one", "org/dup")
    make_task(root, "dup-two", "org/dup")
    return root


def refs(tasks_root: Path, *names: str) -> list[TaskRef]:
    return TaskSource.open(str(tasks_root), Path("/")).resolve(list(names))


def run(tasks_root: Path, jobs: Path, names: list[str], collation: CollationSettings = BEST,
        note: RunNote | None = None) -> dict[str, SampleResult]:
    results = collate(refs(tasks_root, *names), read_jobs(jobs), collation, split="test", commit="c0ffee",
                      note=note or RunNote(job="job-1"), fallback_start=1.0, where=str(jobs))
    assert [r.sample_id for r in results] == names
    return {r.sample_id: r for r in results}


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def output_of(result: SampleResult) -> dict[str, Any]:
    assert isinstance(result.output, dict)
    return result.output


def test_best_trial_prefers_clean_then_exception_with_rewards_then_latest(tasks_root: Path,
                                                                        tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = make_job(jobs, "job-1", tasks_root)
    # alpha: the clean trial wins although the others finished later
    write_trial(job, "alpha", task_name="org/alpha", rewards={"reward": 0.25}, finished=at(1),
                tasks_root=tasks_root)
    write_trial(job, "alpha", task_name="org/alpha", rewards={"reward": 1.0}, exception="AgentTimeoutError",
                finished=at(5), tasks_root=tasks_root)
    write_trial(job, "alpha", task_name="org/alpha", rewards=None, exception="RewardFileNotFoundError",
                finished=at(9), tasks_root=tasks_root)
    # beta: no clean trial, so rewards-with-exception beats no rewards
    write_trial(job, "beta", rewards={"reward": 0.5}, exception="AgentTimeoutError", finished=at(1),
                tasks_root=tasks_root)
    write_trial(job, "beta", rewards=None, exception="RuntimeError", finished=at(7), tasks_root=tasks_root)
    # gamma: two clean trials, the latest finish wins even with the lower reward
    write_trial(job, "gamma", task_name="org/gamma", rewards={"reward": 1.0}, finished=at(1),
                tasks_root=tasks_root)
    write_trial(job, "gamma", task_name="org/gamma", rewards={"reward": 0.0}, finished=at(2),
                tasks_root=tasks_root)

    results = run(tasks_root, jobs, ["org/alpha", "beta", "gamma"])

    assert results["org/alpha"].score == 0.25
    assert results["org/alpha"].attempts is not None
    assert results["org/alpha"].attempts.model_dump() == {"n_attempts": 3, "n_scored": 2, "n_clean": 1}
    assert results["beta"].score == 0.5 and results["beta"].error is None
    assert output_of(results["beta"])["exception"] == "AgentTimeoutError"
    assert results["gamma"].score == 0.0
    assert results["gamma"].task_name == "org/gamma"


def test_mean_of_attempts_counts_every_scored_attempt(tasks_root: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = make_job(jobs, "job-1", tasks_root)
    # -k 4: each attempt is its own trial dir with its own suffix
    write_trial(job, "alpha", task_name="org/alpha", rewards={"reward": 1.0, "style": 0.5}, finished=at(1),
                tasks_root=tasks_root)
    write_trial(job, "alpha", task_name="org/alpha", rewards={"reward": 0.0, "style": 1.0}, finished=at(2),
                tasks_root=tasks_root)
    write_trial(job, "alpha", task_name="org/alpha", rewards={"reward": 0.5}, exception="AgentTimeoutError",
                finished=at(3), tasks_root=tasks_root)
    write_trial(job, "alpha", task_name="org/alpha", rewards=None, exception="RewardFileNotFoundError",
                finished=at(4), tasks_root=tasks_root)

    mean = run(tasks_root, jobs, ["alpha"], MEAN)["alpha"]
    best = run(tasks_root, jobs, ["alpha"], BEST)["alpha"]

    assert mean.score == pytest.approx(0.5)              # (1.0 + 0.0 + 0.5) / 3 scored attempts
    assert mean.metrics == {"reward": pytest.approx(0.5), "style": pytest.approx(0.75)}
    assert mean.attempts is not None
    assert mean.attempts.model_dump() == {"n_attempts": 4, "n_scored": 3, "n_clean": 2}
    assert best.score == 0.0                              # latest clean attempt
    assert best.attempts == mean.attempts
    # Every scored attempt's score is kept, in trial order; the mean over 3 of the 4 attempts
    # `-k 4` asked for is flagged, a full set is not.
    assert mean.attempt_scores is not None and sorted(mean.attempt_scores) == [0.0, 0.5, 1.0]
    assert best.attempt_scores == mean.attempt_scores
    short = run(tasks_root, jobs, ["alpha"], MEAN.model_copy(update={"n_attempts": 4}))["alpha"]
    assert short.score == mean.score
    assert short.warning == "mean over 3 scored attempt(s) of the 4 configured (4 finished)"
    assert mean.warning is None and best.warning is None
    assert run(tasks_root, jobs, ["alpha"], BEST.model_copy(update={"n_attempts": 4}))["alpha"].warning is None


@pytest.mark.parametrize(("rewards", "key", "expected"), [
    ({"pass": 1.0, "reward": 0.0, "acc": 0.5}, "acc", 0.5),
    ({"pass": 1.0, "reward": 0.0, "acc": 0.5}, None, 1.0),
    ({"pass": 0.0, "reward": 1.0}, "missing", 0.0),
    ({"reward": 0.25, "other": 1.0}, None, 0.25),
    ({"a": 1.0, "b": 0.0, "c": 0.5}, None, 0.5),
    ({"only": 3}, None, 3.0),
])
def test_reward_key_priority(rewards: dict[str, float], key: str | None, expected: float) -> None:
    assert reward_of(rewards, key) == pytest.approx(expected)


def test_reward_key_applies_to_collated_scores_and_metrics_keep_every_key(tasks_root: Path,
                                                                         tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = make_job(jobs, "job-1", tasks_root)
    write_trial(job, "beta", rewards={"pass": 0.0, "close": 1.0}, tasks_root=tasks_root)
    by_pass = run(tasks_root, jobs, ["beta"])["beta"]
    by_close = run(tasks_root, jobs, ["beta"], CollationSettings(reward_key="close"))["beta"]
    assert (by_pass.score, by_close.score) == (0.0, 1.0)
    assert by_pass.metrics == {"close": 1.0, "pass": 0.0}


def test_retry_leaves_one_trial_dir_and_a_failed_final_attempt_is_an_error_sample(tasks_root: Path,
                                                                                  tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = make_job(jobs, "job-1", tasks_root)
    # With -r, Harbor deletes the failed attempt's dir and reuses the trial name: only the last remains.
    write_trial(job, "alpha", task_name="org/alpha", rewards={"reward": 1.0}, trial_name="alpha__RETRY01",
                tasks_root=tasks_root)
    write_trial(job, "beta", rewards=None, exception="EnvironmentStartTimeoutError",
                message="environment did not start\nwithin 600 s", trial_name="beta__RETRY02",
                tasks_root=tasks_root)

    results = run(tasks_root, jobs, ["alpha", "beta"])

    assert results["alpha"].ok and results["alpha"].attempts is not None
    assert results["alpha"].attempts.n_attempts == 1
    error = results["beta"].error
    assert error is not None and results["beta"].score is None
    assert "'beta'" in error and "none of 1 trial(s) produced rewards" in error
    assert "EnvironmentStartTimeoutError (error id E-" in error
    detail = results["beta"].error_detail or ""
    assert "EnvironmentStartTimeoutError: environment did not start within 600 s" in detail
    assert "job-1/beta__RETRY02" in error


def test_missing_task_is_an_error_sample_naming_task_job_and_harbor_failure(tasks_root: Path,
                                                                          tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = make_job(jobs, "job-1", tasks_root)
    write_trial(job, "alpha", task_name="org/alpha", rewards={"reward": 1.0}, tasks_root=tasks_root)
    note = RunNote(job="job-1", exit_code=1, stderr_tail="Traceback ...\nRuntimeError: docker went away\n")

    results = run(tasks_root, jobs, ["org/alpha", "org/gamma"], note=note)

    assert results["org/alpha"].ok
    gamma = results["org/gamma"]
    assert gamma.error is not None and gamma.score is None
    assert gamma.error.startswith("task 'org/gamma' (dir gamma): no trial recorded in job job-1")
    assert "harbor exited with 1" in gamma.error and "(error id E-" in gamma.error
    # What harbor printed is the sample's detail, never in the text the optimizer may read.
    assert "docker went away" not in gamma.error and "RuntimeError: docker went away" in (gamma.error_detail or "")
    assert gamma.attempts is not None and gamma.attempts.n_attempts == 0


def test_corrupt_result_json_counts_as_a_trial_without_rewards(tasks_root: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = make_job(jobs, "job-1", tasks_root)
    # alpha: a truncated result.json (Harbor killed mid-write) next to a clean trial
    write_trial(job, "alpha", task_name="org/alpha", rewards={"reward": 1.0}, finished=at(1),
                tasks_root=tasks_root)
    broken = write_trial(job, "alpha", task_name="org/alpha", rewards={"reward": 0.0}, finished=at(2),
                         tasks_root=tasks_root)
    raw = (broken / "result.json").read_bytes()
    (broken / "result.json").write_bytes(raw[: len(raw) // 2])
    # beta: wrong types and no config.json either: attributed by its trial-dir prefix
    bad = write_trial(job, "beta", rewards={"reward": 1.0}, tasks_root=tasks_root)
    data = json.loads((bad / "result.json").read_text())
    data["verifier_result"] = {"rewards": {"reward": "high"}}
    (bad / "result.json").write_text(json.dumps(data))
    (bad / "config.json").unlink()
    # gamma: a NaN reward (Python's json writes it; Harbor would refuse it)
    nan = write_trial(job, "gamma", task_name="org/gamma", rewards={"reward": 1.0}, tasks_root=tasks_root)
    text = (nan / "result.json").read_text()
    (nan / "result.json").write_text(text.replace('"reward": 1.0', '"reward": NaN'))
    # a long dir name: Harbor truncates the trial prefix to 32 chars; empty file, no config.json
    long_trial = write_trial(job, LONG_DIR, task_name="org/long", rewards={"reward": 1.0},
                             tasks_root=tasks_root)
    (long_trial / "result.json").write_bytes(b"")
    (long_trial / "config.json").unlink()

    results = run(tasks_root, jobs, ["alpha", "beta", "gamma", LONG_DIR])

    assert results["alpha"].score == 1.0
    assert results["alpha"].attempts is not None
    assert results["alpha"].attempts.model_dump() == {"n_attempts": 2, "n_scored": 1, "n_clean": 1}
    for name, fragment in (("beta", "verifier_result.rewards.reward"), ("gamma", "not a finite number"),
                           (LONG_DIR, "unreadable result.json")):
        error = results[name].error
        assert error is not None and "unreadable result.json" in error and fragment in error, error
        attempts = results[name].attempts
        assert attempts is not None and attempts.n_attempts == 1


def test_duplicate_task_names_are_told_apart_by_directory(tasks_root: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = make_job(jobs, "job-1", tasks_root)
    write_trial(job, "dup-one", task_name="org/dup", rewards={"reward": 1.0}, tasks_root=tasks_root)
    write_trial(job, "dup-two", task_name="org/dup", rewards={"reward": 0.0}, tasks_root=tasks_root)

    results = run(tasks_root, jobs, ["dup-two", "dup-one"])

    assert (results["dup-one"].score, results["dup-two"].score) == (1.0, 0.0)
    with pytest.raises(VeroError, match="several dirs"):
        refs(tasks_root, "org/dup")


def test_trials_match_by_task_name_when_the_path_is_unknown(tasks_root: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = make_job(jobs, "job-1", tasks_root)
    trial = write_trial(job, "gamma", task_name="org/gamma", rewards={"reward": 1.0}, tasks_root=tasks_root)
    data = json.loads((trial / "result.json").read_text())
    data["task_id"] = {"org": "org", "name": "gamma", "ref": "1.0"}   # a package task id has no path
    data["config"]["task"]["path"] = None
    (trial / "result.json").write_text(json.dumps(data))

    assert run(tasks_root, jobs, ["gamma"])["gamma"].score == 1.0


def test_nothing_matched_is_refused_naming_requested_and_recorded(tasks_root: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    job = make_job(jobs, "job-1", tasks_root)
    write_trial(job, "gamma", task_name="org/gamma", rewards={"reward": 1.0}, tasks_root=tasks_root)

    with pytest.raises(VeroError) as caught:
        run(tasks_root, jobs, ["alpha", "beta"])
    message = caught.value.render()
    assert "requested ['alpha', 'beta']" in message and "recorded ['org/gamma']" in message
    # No trials at all is not a refusal: every task is an error sample.
    empty = tmp_path / "empty"
    make_job(empty, "job-2", tasks_root)
    assert all(r.error for r in run(tasks_root, empty, ["alpha", "beta"]).values())


def test_unfinished_trials_are_skipped_and_jobs_are_found(tasks_root: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    first = make_job(jobs, "job-1", tasks_root)
    second = make_job(jobs, "job-2", tasks_root)
    write_trial(first, "alpha", task_name="org/alpha", rewards=None, exception="CancelledError",
                finished=at(1), tasks_root=tasks_root)
    write_unfinished_trial(first, "beta", tasks_root=tasks_root)
    write_trial(second, "alpha", task_name="org/alpha", rewards={"reward": 1.0}, finished=at(9),
                tasks_root=tasks_root)

    assert job_dirs(jobs) == [first, second]
    assert job_dirs(first) == [first]
    finished, unfinished = read_job(first)
    assert (len(finished), unfinished) == (1, 1)
    results = run(tasks_root, jobs, ["alpha", "beta"])
    assert results["alpha"].score == 1.0
    assert output_of(results["alpha"])["best_trial"].startswith("job-2/alpha__")
    assert results["beta"].error is not None


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(range(6)))
def test_best_trial_does_not_depend_on_file_order(order: list[int]) -> None:
    rng = random.Random(7)
    trials = [
        Trial(job_name=f"job-{i % 2}", trial_name=f"t__{i}", path=f"/j/{i}", task_name="x",
              task_dir="x", rewards=rewards, exception_type=exc, exception_message=None, started_at=None,
              finished_at=T0 + timedelta(seconds=rng.choice([1, 2, 2])))
        for i, (rewards, exc) in enumerate([({"reward": 1.0}, None), ({"reward": 0.0}, None),
                                            ({"reward": 1.0}, "AgentTimeoutError"), (None, "RuntimeError"),
                                            ({"reward": 0.5}, None), (None, None)])
    ]
    expected = best_trial(trials)
    assert best_trial([trials[i] for i in order]) == expected
    assert expected.clean


# --- matching as a property: ids vs names, file order, job order -------------------------------

_WORDS = ["alpha", "beta", "gamma-ray", "delta_x", "eps.2"]


@st.composite
def recorded_runs(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[Trial], list[int]]:
    """Requested tasks `(dir name, task name)`, the trials recorded for them (and for a few tasks
    that were not requested), and which requested task each trial belongs to (-1: none)."""
    n_tasks = draw(st.integers(min_value=1, max_value=5))
    tasks = []
    for i in range(n_tasks + 2):          # the last two are recorded but never requested
        dir_name = f"t{i}-{draw(st.sampled_from(_WORDS))}"
        tasks.append((dir_name, draw(st.sampled_from([dir_name, f"org/{dir_name}"]))))
    trials, owners = [], []
    for index, (dir_name, task_name) in enumerate(tasks):
        for attempt in range(draw(st.integers(min_value=0, max_value=3))):
            job = draw(st.sampled_from(["job-a", "job-b", "job-c"]))
            scored = draw(st.booleans())
            reward = draw(st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
            trials.append(Trial(
                job_name=job, trial_name=f"{dir_name[:32]}__{attempt}{index}x", path=f"/jobs/{job}/{index}/{attempt}",
                task_name=task_name, task_dir=draw(st.sampled_from([dir_name, None])),
                rewards={"reward": reward} if scored else None,
                exception_type=draw(st.sampled_from([None, "AgentTimeoutError"])), exception_message=None,
                started_at=T0, finished_at=T0 + timedelta(seconds=draw(st.integers(0, 3)))))
            owners.append(index if index < n_tasks else -1)
    return tasks[:n_tasks], trials, owners


def _ref_variants(tasks: list[tuple[str, str]]) -> dict[str, list[TaskRef]]:
    return {
        # a local source named by directory, or by [task].name
        "by-dir": [TaskRef(sample_id=d, dir_name=d, task_name=n) for d, n in tasks],
        "by-name": [TaskRef(sample_id=n, dir_name=d, task_name=n) for d, n in tasks],
        # a registry source: the id is the name, there is no directory to match (Hub packages)
        "registry": [TaskRef(sample_id=n, dir_name=None, task_name=n) for _, n in tasks],
    }


@settings(max_examples=200, deadline=None)
@given(run=recorded_runs(), order=st.randoms(use_true_random=False))
def test_matching_does_not_depend_on_ids_names_file_or_job_order(
        run: tuple[list[tuple[str, str]], list[Trial], list[int]], order: random.Random) -> None:
    tasks, trials, owners = run
    shuffled = list(trials)
    order.shuffle(shuffled)
    by_job_reversed = sorted(trials, key=lambda t: t.job_name, reverse=True)
    expected_paths = [sorted(t.path for t, o in zip(trials, owners) if o == i) for i in range(len(tasks))]
    outcomes = []
    for variant, variant_refs in _ref_variants(tasks).items():
        registry_style = variant == "registry"
        for trial_order in (trials, shuffled, by_job_reversed):
            # A Hub package's trials record no task directory.
            recorded = [replace(t, task_dir=None) for t in trial_order] if registry_style else trial_order
            matching = match_trials(variant_refs, recorded)
            assert [sorted(t.path for t in g.trials) for g in matching.by_task] == expected_paths, variant
            assert sorted(t.path for t in matching.unmatched) == sorted(
                t.path for t, o in zip(trials, owners) if o == -1)
            results = collate(variant_refs, recorded, MEAN, split="s", commit="c", note=RunNote(job="j"),
                              fallback_start=1.0, where="jobs", refuse=False)
            outcomes.append([(r.score, r.metrics, r.error is None, r.attempt_scores) for r in results])
    assert all(outcome == outcomes[0] for outcome in outcomes)
