"""Differencing on non_viewable splits: aggregates of overlapping subsets must not single out
fewer than k samples (the first 6 samples minus the first 5 is sample 6).

The rule (`TierPolicy.check_disclosure`): the sample sets evaluated so far split the samples
into groups (samples that lie in exactly the same sets); every group must hold at least k
samples, unless it is the whole split. The property test checks the rule against exact linear
algebra: no combination of the revealed sums involves fewer than k samples.
"""

from __future__ import annotations

import itertools
import threading
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hardening.audit import assert_consistent
from tests.support.mode_a import IMPROVED_AGENT, PARTIAL_AGENT, ModeABench, commit_agent
from tests.support.sidecar import serve_config, start_sidecar
from vero.core.benchmark import SplitAccess
from vero.core.rejections import Forbidden
from vero.core.tiers import TierPolicy

SPLIT = [f"s{i}" for i in range(12)]
POLICY = TierPolicy([SplitAccess(split="hidden", access="non_viewable"),
                     SplitAccess(split="open", access="viewable")], k_anonymity_floor=5)


def _allowed(requested: list[str], earlier: list[list[str]], split: str = "hidden",
             policy: TierPolicy = POLICY, everything: list[str] = SPLIT) -> bool:
    try:
        policy.check_disclosure(split, requested, earlier, everything)
    except Forbidden:
        return False
    return True


def test_overlaps_that_isolate_a_few_samples_are_refused() -> None:
    first5, first6 = SPLIT[:5], SPLIT[:6]
    assert _allowed(first5, [])
    assert not _allowed(first6, [first5])                        # minus first5 = one sample
    assert not _allowed(first5, [first6])                        # the order does not matter
    assert _allowed(list(reversed(first5)), [first5, first5])    # the same set again
    assert _allowed(SPLIT[5:10], [first5])                       # disjoint, 5 samples
    assert _allowed(SPLIT[:10], [first5])                        # 5 shared, 5 new
    assert not _allowed(SPLIT, [first5, SPLIT[5:10]])            # the rest would be 2 samples
    assert not _allowed(SPLIT[:9], [first5])                     # 4 new samples
    assert _allowed(SPLIT, [SPLIT, SPLIT])                       # the whole split, always
    assert _allowed(first6, [first5], split="open")              # viewable: no rule


def test_a_split_smaller_than_k_can_still_be_evaluated_whole() -> None:
    tiny = SPLIT[:3]
    assert _allowed(tiny, [tiny, tiny], everything=tiny)
    assert not _allowed(tiny[:2], [tiny], everything=tiny)


def _rank(matrix: list[list[Fraction]]) -> int:
    """Exact rank by Gaussian elimination."""
    matrix = [row[:] for row in matrix]
    found = 0
    for col in range(len(matrix[0]) if matrix else 0):
        pivot = next((r for r in range(found, len(matrix)) if matrix[r][col] != 0), None)
        if pivot is None:
            continue
        matrix[found], matrix[pivot] = matrix[pivot], matrix[found]
        for r in range(len(matrix)):
            if r != found and matrix[r][col] != 0:
                factor = matrix[r][col] / matrix[found][col]
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[found])]
        found += 1
    return found


def _isolates(rows: list[list[Fraction]], group: set[int]) -> bool:
    """Whether some combination of the revealed sums (rows) involves only the samples of `group`:
    the combinations that vanish outside it are those lost when its columns are dropped."""
    outside = [[value for col, value in enumerate(row) if col not in group] for row in rows]
    return _rank(rows) > _rank(outside)


N, K = 8, 3
SMALL = [f"t{i}" for i in range(N)]
SMALL_POLICY = TierPolicy([SplitAccess(split="hidden", access="non_viewable")], k_anonymity_floor=K)


@settings(max_examples=150, deadline=None, database=None)
@given(requests=st.lists(st.sets(st.sampled_from(SMALL), min_size=1), min_size=1, max_size=7))
def test_no_accepted_history_isolates_fewer_than_k_samples(requests: list[set[str]]) -> None:
    revealed: list[list[str]] = []
    for request in requests:
        if _allowed(sorted(request), revealed, policy=SMALL_POLICY, everything=SMALL):
            revealed.append(sorted(request))
    rows = [[Fraction(int(s in ids)) for s in SMALL] for ids in revealed]
    for size in range(1, K):
        for group in itertools.combinations(range(N), size):
            assert not _isolates(rows, set(group)), (revealed, group)
    # And the rule is not a wall: repeating any accepted set is always accepted.
    for ids in revealed:
        assert _allowed(ids, revealed, policy=SMALL_POLICY, everything=SMALL)


def _budget(sidecar_url: str) -> tuple[int, int]:
    splits = httpx.get(sidecar_url + "/status").json()["splits"]
    budget = next(s["budget"] for s in splits if s["split"] == "validation")
    return budget["runs_used"], budget["samples_used"]


def test_differencing_over_http(bench: ModeABench, root: Path) -> None:
    sidecar = start_sidecar(root, serve_config(root, bench))
    try:
        improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)

        def evaluate(**body: object) -> httpx.Response:
            return httpx.post(sidecar.url + "/eval", json={"split": "validation", **body}, timeout=120)

        assert evaluate(num_samples=5).status_code == 200
        refused = evaluate(num_samples=6)
        assert refused.status_code == 403, refused.text
        assert "single out a group of 1" in refused.json()["error"] and "first N" in refused.json()["fix"]
        assert _budget(sidecar.url) == (1, 5)  # refused before anything was spent
        # The same five samples, listed in another order and for another commit: allowed.
        again = evaluate(sample_ids=[f"validation-{i}" for i in (4, 2, 0, 1, 3)], commit=improved)
        assert again.status_code == 200, again.text
        # Another commit does not reset what was revealed; the whole split would leave 3 apart.
        partial = commit_agent(bench.agent_repo, PARTIAL_AGENT)
        assert evaluate(num_samples=6, commit=partial).status_code == 403
        assert "group of 3" in evaluate().json()["error"]
        # A viewable split shows every sample anyway: overlapping subsets are fine there.
        for n in (2, 3):
            assert httpx.post(sidecar.url + "/eval", json={"split": "train", "num_samples": n},
                              timeout=120).status_code == 200
        assert _budget(sidecar.url) == (2, 10)
        assert_consistent(sidecar.admin_dir)
    finally:
        sidecar.stop()


def test_two_racing_overlapping_requests_cannot_both_pass(bench: ModeABench, root: Path) -> None:
    sidecar = start_sidecar(root, serve_config(root, bench))
    try:
        commit_agent(bench.agent_repo, IMPROVED_AGENT)
        barrier = threading.Barrier(2)
        statuses: dict[int, int] = {}

        def evaluate(n: int) -> None:
            barrier.wait()
            statuses[n] = httpx.post(sidecar.url + "/eval", json={"split": "validation", "num_samples": n},
                                     timeout=120).status_code

        threads = [threading.Thread(target=evaluate, args=(n,)) for n in (5, 6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses.values()) == [200, 403], statuses
        assert _budget(sidecar.url)[0] == 1
        assert_consistent(sidecar.admin_dir)
    finally:
        sidecar.stop()


@pytest.mark.parametrize("floor", [1, 5])
def test_the_floor_of_one_disables_the_rule(floor: int) -> None:
    policy = TierPolicy([SplitAccess(split="hidden", access="non_viewable")], k_anonymity_floor=floor)
    assert _allowed(SPLIT[:6], [SPLIT[:5]], policy=policy) is (floor == 1)
