"""Split tiers: who may evaluate a split and what an evaluation discloses to the optimizer.

- `viewable`: the optimizer may evaluate any subset; it sees the aggregate and, per sample,
  the result (score, metrics, output, error) and the label-stripped input row.
- `non_viewable`: the optimizer may evaluate the whole split or a subset of at least
  `k_anonymity_floor` samples; it sees the aggregate only. Aggregates of overlapping sets
  can be subtracted (the first 6 samples minus the first 5 is sample 6), so every evaluation
  is also checked against the earlier ones (`check_disclosure`).
- `no_access`: the optimizer cannot evaluate it at all; only admin (finalize) scores it.

A split that is not listed is `no_access` (fail closed).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from pydantic import JsonValue

from vero.core.benchmark import AccessTier, SplitAccess
from vero.core.records import Aggregate, SampleResult
from vero.core.redaction import Redactor
from vero.core.rejections import Forbidden
from vero.models import StrictModel


class TierPolicy:
    """Resolves tiers fail-closed and enforces the optimizer's evaluation gate."""

    def __init__(self, splits: Sequence[SplitAccess], k_anonymity_floor: int) -> None:
        self._tiers: dict[str, AccessTier] = {entry.split: entry.access for entry in splits}
        self.k_anonymity_floor = k_anonymity_floor

    def tier(self, split: str) -> AccessTier:
        """The tier of `split`; unlisted splits are `no_access`."""
        return self._tiers.get(split, "no_access")

    def agent_may_evaluate(self, split: str) -> bool:
        """Whether the optimizer may evaluate `split` at all."""
        return self.tier(split) != "no_access"

    def check_tier(self, split: str) -> None:
        """Raise `Forbidden` when the optimizer may not evaluate `split` at all (no_access)."""
        if self.tier(split) == "no_access":
            raise Forbidden(f"split {split!r} is no_access: it cannot be evaluated by the optimizer",
                            fix="evaluate a viewable or non_viewable split (see `vero harbor status`)")

    def check_agent_request(self, split: str, n_requested: int, n_in_split: int) -> None:
        """Raise `Forbidden` unless the optimizer may evaluate these many samples of `split`.

        Full-split evaluations of a non_viewable split are always allowed; a subset must cover
        at least `k_anonymity_floor` samples so one sample's score cannot be isolated.
        """
        self.check_tier(split)
        tier = self.tier(split)
        if tier == "non_viewable" and n_requested < n_in_split and n_requested < self.k_anonymity_floor:
            raise Forbidden(
                f"split {split!r} is non_viewable: a subset must cover at least {self.k_anonymity_floor} "
                f"samples (requested {n_requested})",
                fix=f"request at least {self.k_anonymity_floor} samples, or the whole split")


    def check_disclosure(self, split: str, requested: Collection[str], earlier: Sequence[Collection[str]],
                         everything: Sequence[str]) -> None:
        """Raise `Forbidden` if the aggregate of `requested`, next to the aggregates of the
        `earlier` sample sets of a non_viewable split, could isolate fewer than k samples.

        The sets split the samples into groups: samples that lie in exactly the same sets. Sums
        and differences of the aggregates tell nothing finer than the sum over each group, so
        every group inside some set must hold at least k samples (or be the whole split, which
        is always allowed). Repeating a set, and disjoint sets of k or more, always pass; a set
        that overlaps an earlier one partly must leave k or more samples on each side.
        """
        if self.tier(split) != "non_viewable":
            return
        family = list(dict.fromkeys(frozenset(ids) for ids in [*earlier, requested]))
        membership: dict[str, list[int]] = {}
        for index, ids in enumerate(family):
            for sample_id in ids:
                membership.setdefault(sample_id, []).append(index)
        groups: dict[tuple[int, ...], int] = {}
        for indices in membership.values():
            groups[tuple(indices)] = groups.get(tuple(indices), 0) + 1
        smallest = min(groups.values())
        if smallest < min(self.k_anonymity_floor, len(everything)):
            raise Forbidden(
                f"split {split!r} is non_viewable: next to earlier evaluations of this split, these "
                f"samples would single out a group of {smallest} (the floor is {self.k_anonymity_floor})",
                fix="evaluate exactly the samples of an earlier evaluation again, or samples disjoint from "
                    f"earlier ones; a partial overlap must leave at least {self.k_anonymity_floor} samples "
                    "on each side (num_samples=N always means the first N samples)")


class DisclosedSample(StrictModel):
    """One sample as the optimizer sees it (viewable splits only)."""

    sample_id: str
    score: float | None
    metrics: dict[str, float]
    output: JsonValue
    error: str | None
    duration_s: float
    input: JsonValue = None


class DisclosedSummary(StrictModel):
    """The aggregate of one evaluation as the optimizer sees it."""

    experiment_id: str
    split: str
    commit: str
    tier: AccessTier
    aggregate: Aggregate


class Disclosure(StrictModel):
    """What an evaluation shows the optimizer: a summary, plus samples when viewable."""

    summary: DisclosedSummary
    samples: list[DisclosedSample] | None = None


def disclose(tier: AccessTier, *, experiment_id: str, split: str, commit: str, aggregate: Aggregate,
             results: Sequence[SampleResult], inputs: Mapping[str, JsonValue] | None = None,
             redactor: Redactor | None = None) -> Disclosure | None:
    """The optimizer's view of an evaluation under `tier`; None for no_access.

    Candidate-controlled text (outputs, errors) passes through `redactor` when given.
    """
    if tier == "no_access":
        return None
    summary = DisclosedSummary(experiment_id=experiment_id, split=split, commit=commit, tier=tier,
                               aggregate=aggregate)
    if tier == "non_viewable":
        return Disclosure(summary=summary)
    redact = redactor or Redactor({})
    samples = [
        DisclosedSample(sample_id=r.sample_id, score=r.score, metrics=r.metrics, output=redact.json(r.output),
                        error=None if r.error is None else redact.text(r.error), duration_s=r.duration_s,
                        input=redact.json((inputs or {}).get(r.sample_id)))
        for r in results
    ]
    return Disclosure(summary=summary, samples=samples)
