"""The crash window between spending budget and recording the experiment, closed.

A paid evaluation is written as a `pending` record first, the ledger's atomic spend names that
record, and a start-up reconciles the two. These drills kill a real sidecar process at each
point between those writes and check that the restarted sidecar has lost nothing, refilled
nothing and counted nothing twice. The same holds for the one release of a charge (a Mode B
evaluation whose nested harbor produced nothing): released and charged are never both true.

Fault injection: no signal sent from outside can land exactly between two writes a few
microseconds apart, so the sidecar is started through a launcher that wraps one vero method
to SIGKILL its own process right after (or before) that method writes. Everything else is the
real server, the real ledger and the real files.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.hardening.audit import assert_consistent, read_admin, temp_files
from tests.support.mode_a import IMPROVED_AGENT, ModeABench, commit_agent
from tests.support.mode_b import make_mode_b_bench, mode_b_serve_config
from tests.support.sidecar import Sidecar, serve_config, start_sidecar
from tests.support.tools import harbor_bin, require_docker
from vero.core.experiments import ExperimentDB
from vero.errors import VeroError
from vero.serve.results_view import recover_views

LAUNCHER = """
import os, signal, sys
from vero.core.experiments import ExperimentDB
from vero.core.ledger import Ledger
owner = {{"Ledger": Ledger, "ExperimentDB": ExperimentDB}}[{owner!r}]
original = getattr(owner, {method!r})
def wrapped(*args, **kwargs):
    result = original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, {method!r}, wrapped)
from vero.cli import main
main()
"""


# Kills the process at its N-th rename of an evaluation (instead of doing it): every atomic write
# (records, ledger, samples, the results view) ends in one, so N = 1, 2, ... walks a kill through
# every point between two writes.
KILL_AT_WRITE = """
import os, signal
from vero.core.engine import Engine
state = {{"armed": False, "writes": 0}}
real_replace, real_evaluate = os.replace, Engine.evaluate
def replace(*args, **kwargs):
    if state["armed"]:
        state["writes"] += 1
        if state["writes"] == {target}:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(*args, **kwargs)
def evaluate(self, *args, **kwargs):
    state["armed"] = True
    return real_evaluate(self, *args, **kwargs)
os.replace, Engine.evaluate = replace, evaluate
from vero.cli import main
main()
"""


def _killed_during_eval(root: Path, config: dict[str, object], owner: str, method: str,
                        body: dict[str, object]) -> None:
    doomed = start_sidecar(root, config, name=f"kill-after-{method}",
                           code=LAUNCHER.format(owner=owner, method=method))
    with pytest.raises(httpx.HTTPError):
        httpx.post(doomed.url + "/eval", json=body, timeout=60)
    assert doomed.proc.wait(timeout=30) == -9, doomed.log_text()


def test_kill_right_after_the_spend_keeps_a_record_of_the_paid_run(bench: ModeABench, root: Path) -> None:
    improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)
    config = serve_config(root, bench)
    _killed_during_eval(root, config, "Ledger", "reserve", {"split": "validation", "num_samples": 5})
    # The kill landed in the window: the ledger paid for an experiment still recorded as pending.
    state = read_admin(Path(root / "admin"))
    paid = state.entry("validation")["charged_experiments"]
    assert len(paid) == 1 and state.records[paid[0]]["status"] == "pending"

    sidecar = start_sidecar(root, config, name="restarted")
    try:
        state = assert_consistent(sidecar.admin_dir)
        record = state.records[paid[0]]
        assert (record["status"], record["charged"], record["commit"]) == ("interrupted", True, improved)
        assert "before this evaluation started" in record["error"]
        assert record["aggregate"]["n_samples"] == 5 and record["aggregate"]["n_scored"] == 0
        assert (state.entry("validation")["runs_used"], state.entry("validation")["samples_used"]) == (1, 5)
        listed = httpx.get(sidecar.url + "/experiments", headers=sidecar.admin_headers()).json()
        assert [r["experiment_id"] for r in listed] == paid
        # The next evaluation is paid and recorded normally, next to the interrupted one.
        again = httpx.post(sidecar.url + "/eval", json={"split": "validation", "num_samples": 5}, timeout=120)
        assert again.status_code == 200, again.text
        assert again.json()["remaining"]["samples_remaining"] == 30
        state = assert_consistent(sidecar.admin_dir)
        assert len(state.entry("validation")["charged_experiments"]) == 2
    finally:
        sidecar.stop()


def test_kill_right_after_the_pending_record_leaves_no_trace(bench: ModeABench, root: Path) -> None:
    commit_agent(bench.agent_repo, IMPROVED_AGENT)
    config = serve_config(root, bench)
    _killed_during_eval(root, config, "ExperimentDB", "create", {"split": "train", "num_samples": 2})
    state = read_admin(Path(root / "admin"))
    assert [r["status"] for r in state.records.values()] == ["pending"]
    assert state.entry("train")["runs_used"] == 0  # killed before the spend

    sidecar = start_sidecar(root, config, name="restarted")
    try:
        state = assert_consistent(sidecar.admin_dir)
        assert state.records == {}  # never paid, never run, never answered: removed
        assert not any((sidecar.admin_dir / "experiments").iterdir())
        status = httpx.get(sidecar.url + "/status").json()
        train = next(s for s in status["splits"] if s["split"] == "train")
        assert train["budget"]["runs_remaining"] == 2
        assert "removed experiment" in sidecar.log_text()
    finally:
        sidecar.stop()


def test_kill_right_after_claiming_the_free_baseline(bench: ModeABench, root: Path) -> None:
    config = serve_config(root, bench)
    _killed_during_eval(root, config, "Ledger", "claim_free_baseline",
                        {"split": "train", "commit": bench.baseline_commit})
    sidecar = start_sidecar(root, config, name="restarted")
    try:
        state = assert_consistent(sidecar.admin_dir)
        (record,) = state.records.values()
        assert (record["status"], record["free_baseline"], record["charged"]) == ("interrupted", True, False)
        assert state.entry("train")["free_baseline_experiment"] == record["experiment_id"]
        # Used is used: the baseline's next evaluation on this split is paid.
        again = httpx.post(sidecar.url + "/eval", json={"split": "train", "commit": bench.baseline_commit},
                           timeout=120)
        assert again.status_code == 200 and not again.json()["free_baseline"]
        assert again.json()["remaining"]["runs_remaining"] == 1
        assert_consistent(sidecar.admin_dir)
    finally:
        sidecar.stop()


def test_recover_settles_every_leftover_against_the_ledger(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path)

    def create(status: Literal["pending", "running"]) -> str:
        return db.create(origin="agent", purpose="eval", split="train", dataset_id="d" * 64, commit="c" * 40,
                         requested_ref="main", sample_ids=["a", "b"], full_split=True,
                         charged=status == "running", status=status).experiment_id

    paid, unpaid, free, running = create("pending"), create("pending"), create("pending"), create("running")
    released = create("running")
    done = db.get(create("running"))
    assert done is not None
    db.finish(done, [])
    # A crash between mkdir and the first rename leaves a directory with only a temp file.
    unwritten = tmp_path / "0000000000001-aaaaaaaaaaaa"
    unwritten.mkdir()
    (unwritten / ".record.json.x1y2.tmp").write_text('{"half')

    recovered = ExperimentDB(tmp_path).recover({paid: "run", free: "free_baseline", running: "run",
                                                released: "released"})
    assert sorted(recovered) == sorted([paid, free, running, released])
    records = {r.experiment_id: r for r in ExperimentDB(tmp_path).all()}
    assert set(records) == {paid, free, running, released, done.experiment_id}
    # Released by the ledger before a stop cut the record's write short: failed, never charged.
    assert (records[released].status, records[released].charged, records[released].released) == (
        "failed", False, True)
    assert (records[paid].status, records[paid].charged) == ("interrupted", True)
    assert not records[paid].free_baseline
    assert (records[free].charged, records[free].free_baseline) == (False, True)
    assert records[running].status == "interrupted" and records[done.experiment_id].status == "done"
    assert not (tmp_path / unpaid).exists() and not unwritten.exists()
    assert ExperimentDB(tmp_path).recover({}) == []


def _view(results: Path) -> dict[str, Any]:
    """The train view, checked whole: its summary and exactly the samples it counts."""
    assert sorted(p.name for p in results.iterdir()) == ["train"]  # no staging or aside copy left
    summary = json.loads((results / "train" / "summary.json").read_text())
    samples = [json.loads(p.read_text()) for p in (results / "train" / "samples").iterdir()]
    assert len(samples) == summary["aggregate"]["n_samples"]
    assert all(sample["score"] == 1.0 for sample in samples)
    return dict(summary)


def test_a_kill_at_any_write_of_an_evaluation_loses_nothing(bench: ModeABench, root: Path) -> None:
    commit_agent(bench.agent_repo, IMPROVED_AGENT)
    budgets = [{"split": "train", "total_run_budget": 10}]
    prepared = root / "prepared"
    prepared.mkdir()
    first = start_sidecar(prepared, serve_config(prepared, bench, budgets=budgets))
    try:
        assert httpx.post(first.url + "/eval", json={"split": "train", "num_samples": 1},
                          timeout=120).status_code == 200
    finally:
        first.stop()
    first_view = _view(prepared / "results")

    for target in itertools.count(1):
        run = root / f"kill-{target}"
        shutil.copytree(prepared, run, symlinks=True)
        config = serve_config(run, bench, budgets=budgets)
        doomed = start_sidecar(run, config, name="doomed", code=KILL_AT_WRITE.format(target=target))
        try:
            response = httpx.post(doomed.url + "/eval", json={"split": "train", "num_samples": 2},
                                  timeout=120)
        except httpx.HTTPError:
            assert doomed.proc.wait(timeout=30) == -9, doomed.log_text()
        else:  # fewer writes than `target`: the evaluation went through them all
            assert response.status_code == 200, response.text
            doomed.stop()
            break
        restarted = start_sidecar(run, config, name="restarted")
        try:
            state = assert_consistent(restarted.admin_dir)
            assert temp_files(restarted.admin_dir) == []
            assert len(state.records) in (1, 2) and state.entry("train")["runs_used"] == len(state.records)
            # The optimizer sees the earlier view or the new one, whole: never a mix, never none.
            view = _view(restarted.results_dir)
            assert view == first_view or (view["aggregate"]["n_samples"] == 2
                                          and state.records[view["experiment_id"]]["status"] == "done")
            again = httpx.post(restarted.url + "/eval", json={"split": "train", "num_samples": 3},
                               timeout=120)
            assert again.status_code == 200, again.text
            assert _view(restarted.results_dir)["aggregate"]["n_samples"] == 3
            assert_consistent(restarted.admin_dir)
        finally:
            restarted.stop()
        shutil.rmtree(run)
    # pending, ledger, running, 2 samples, done, the renames of the view's swap (its summary and
    # samples are written into a staging directory nobody sees, so they have no rename each)
    assert target == 9


def test_recover_views_touches_only_its_own_leftovers(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / ".a.b.old.x1y2_z3" / "view").mkdir(parents=True)
    (results / ".a.b.old.x1y2_z3" / "view" / "summary.json").write_text("{}")
    (results / ".a.b.new.q9w8e7r6").mkdir()
    (results / "kept").mkdir()
    (results / ".kept.old.abc123" / "view").mkdir(parents=True)  # "kept" exists: only the copy goes
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (results / ".c.old.zzzzzzzz").symlink_to(elsewhere)
    (results / ".d.draft.abc").mkdir()  # not a name the view writer makes
    assert recover_views(results) == ["a.b"]
    assert sorted(p.name for p in results.iterdir()) == [".c.old.zzzzzzzz", ".d.draft.abc", "a.b", "kept"]
    assert (results / "a.b" / "summary.json").read_text() == "{}"
    assert elsewhere.is_dir()
    assert recover_views(results) == []


def test_cached_records_follow_the_file(tmp_path: Path) -> None:
    reader, writer = ExperimentDB(tmp_path), ExperimentDB(tmp_path)
    created = reader.create(origin="agent", purpose="eval", split="train", dataset_id="d" * 64,
                            commit="c" * 40, requested_ref="main", sample_ids=["a"], full_split=True,
                            charged=True)
    assert reader.get(created.experiment_id) is reader.get(created.experiment_id)  # parsed once
    writer.finish(created, [])
    assert [r.status for r in reader.all()] == ["done"]  # the rename brought a new file: read again
    (tmp_path / created.experiment_id / "record.json").write_text("{")
    with pytest.raises(VeroError, match="corrupt experiment record"):
        reader.all()


def _budget(sidecar: Sidecar, split: str) -> dict[str, Any]:
    status = httpx.get(sidecar.url + "/status", timeout=30).json()
    budget: dict[str, Any] = next(s["budget"] for s in status["splits"] if s["split"] == split)
    return budget


def test_a_kill_at_any_write_of_an_evaluation_that_could_not_run_refills_nothing(root: Path) -> None:
    """The same walk as above for an evaluation whose nested harbor produced nothing: before the
    release the run stays paid (interrupted), after it the charge is back and the record failed;
    never both, never a refill of anything else."""
    require_docker()
    bench = make_mode_b_bench(root / "bench")
    no_docker = {"DOCKER_HOST": f"unix://{root}/no-docker.sock"}
    body = {"split": "train", "commit": bench.improved}
    outcomes = []
    for target in itertools.count(1):
        run = root / f"kill-{target}"
        run.mkdir()
        config = mode_b_serve_config(run, bench, {"harbor_command": [str(harbor_bin())], "timeout": 120})
        doomed = start_sidecar(run, config, name="doomed", env=no_docker, code=KILL_AT_WRITE.format(target=target))
        try:
            response = httpx.post(doomed.url + "/eval", json=body, timeout=300)
        except httpx.HTTPError:
            assert doomed.proc.wait(timeout=30) == -9, doomed.log_text()
        else:  # fewer writes than `target`: the evaluation went through them all
            assert response.status_code == 503, response.text
            doomed.stop()
            break
        restarted = start_sidecar(run, config, name="restarted", env=no_docker)
        try:
            state = assert_consistent(restarted.admin_dir)
            entry = state.entry("train")
            records = list(state.records.values())
            outcomes.append((entry["runs_used"], [(r["status"], r["released"]) for r in records]))
            assert entry["runs_used"] + len(entry["released_experiments"]) == len(records) <= 1
            assert _budget(restarted, "train")["runs_remaining"] == 3 - entry["runs_used"]
        finally:
            restarted.stop()
    # pending, ledger, running, the run's record (start, end), release, failed: a kill before the
    # spend leaves nothing, one before the release leaves the run paid and interrupted, one after
    # it leaves the charge given back and the record failed and released.
    paid = (1, [("interrupted", False)])
    assert outcomes == [(0, []), (0, []), paid, paid, paid, paid, (0, [("failed", True)])], outcomes
