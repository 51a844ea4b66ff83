"""Split tiers: fail-closed resolution, the optimizer's gate and what each tier discloses."""

from __future__ import annotations

import pytest

from vero.core.benchmark import SplitAccess
from vero.core.records import SampleResult, aggregate
from vero.core.rejections import Forbidden
from vero.core.tiers import TierPolicy, disclose

POLICY = TierPolicy([SplitAccess(split="train", access="viewable"),
                     SplitAccess(split="val", access="non_viewable"),
                     SplitAccess(split="test", access="no_access")], k_anonymity_floor=5)


def _results() -> list[SampleResult]:
    return [SampleResult(sample_id=str(i), split="s", commit="c" * 40, score=float(i % 2), output={"a": i},
                         started_at=0.0, duration_s=0.1) for i in range(3)]


def test_unlisted_split_is_no_access() -> None:
    assert POLICY.tier("train") == "viewable"
    assert POLICY.tier("other") == "no_access"
    assert not POLICY.agent_may_evaluate("other")
    assert not POLICY.agent_may_evaluate("test")
    assert POLICY.agent_may_evaluate("val")


@pytest.mark.parametrize("split", ["test", "unlisted"])
def test_no_access_is_never_evaluable_by_the_agent(split: str) -> None:
    with pytest.raises(Forbidden, match="no_access"):
        POLICY.check_agent_request(split, 100, 100)


def test_k_anonymity_floor_on_non_viewable_subsets() -> None:
    with pytest.raises(Forbidden, match="at least 5 samples"):
        POLICY.check_agent_request("val", 4, 20)
    POLICY.check_agent_request("val", 5, 20)
    POLICY.check_agent_request("val", 3, 3)  # the full split is always allowed, even below k
    POLICY.check_agent_request("train", 1, 20)  # viewable subsets have no floor


def test_disclosure_per_tier() -> None:
    results = _results()
    agg = aggregate(results)
    common = {"experiment_id": "e", "split": "s", "commit": "c" * 40, "aggregate": agg, "results": results}
    assert disclose("no_access", **common) is None  # type: ignore[arg-type]
    hidden = disclose("non_viewable", **common)  # type: ignore[arg-type]
    assert hidden is not None and hidden.samples is None
    assert hidden.summary.aggregate.mean_score == pytest.approx(1 / 3)
    shown = disclose("viewable", inputs={"0": {"question": "q0"}}, **common)  # type: ignore[arg-type]
    assert shown is not None and shown.samples is not None
    assert [s.sample_id for s in shown.samples] == ["0", "1", "2"]
    assert shown.samples[0].input == {"question": "q0"}
    assert shown.samples[1].output == {"a": 1}
