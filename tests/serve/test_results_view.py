"""The optimizer's view: replaced per split, samples only for viewable splits."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vero.core.records import SampleResult, aggregate
from vero.core.tiers import disclose
from vero.serve.results_view import recover_views, write_agent_view


def _results(n: int) -> list[SampleResult]:
    return [SampleResult(sample_id=f"s/{i}", split="train", commit="c" * 40, score=1.0, output=i,
                         started_at=0.0, duration_s=0.0) for i in range(n)]


def test_view_replaces_the_previous_one(tmp_path: Path) -> None:
    first = _results(3)
    view = disclose("viewable", experiment_id="e1", split="train", commit="c" * 40,
                    aggregate=aggregate(first), results=first, inputs={"s/0": {"q": 0}})
    assert view is not None
    target = write_agent_view(tmp_path, view)
    names = sorted(p.name for p in (target / "samples").iterdir())
    assert names == ["s%2F0.json", "s%2F1.json", "s%2F2.json"]
    assert json.loads((target / "samples" / "s%2F0.json").read_text())["input"] == {"q": 0}
    second = _results(1)
    hidden = disclose("non_viewable", experiment_id="e2", split="train", commit="c" * 40,
                      aggregate=aggregate(second), results=second)
    assert hidden is not None
    write_agent_view(tmp_path, hidden)
    assert os.listdir(tmp_path) == ["train"]  # staging and old copies are gone
    assert os.listdir(target) == ["summary.json"]
    summary = json.loads((target / "summary.json").read_text())
    assert summary["experiment_id"] == "e2" and summary["aggregate"]["n_samples"] == 1
    assert oct(target.stat().st_mode & 0o777) == "0o755"


def test_a_summary_view_is_replaced_in_place(tmp_path: Path) -> None:
    # A non_viewable split's view is one file: replacing it atomically is enough (no mix is
    # possible), and cheaper than building and swapping a new directory.
    runs = [_results(2), _results(4)]
    views = [disclose("non_viewable", experiment_id=f"e{i}", split="train", commit="c" * 40,
                      aggregate=aggregate(run), results=run) for i, run in enumerate(runs)]
    assert views[0] is not None and views[1] is not None
    target = write_agent_view(tmp_path, views[0])
    directory = target.stat().st_ino
    write_agent_view(tmp_path, views[1])
    assert target.stat().st_ino == directory  # the directory stayed: only its summary was replaced
    assert os.listdir(tmp_path) == ["train"] and os.listdir(target) == ["summary.json"]
    assert json.loads((target / "summary.json").read_text())["experiment_id"] == "e1"


def test_a_killed_summary_replacement_leaves_the_old_summary_and_no_temp_file(tmp_path: Path) -> None:
    run = _results(2)
    view = disclose("non_viewable", experiment_id="e1", split="train", commit="c" * 40,
                    aggregate=aggregate(run), results=run)
    assert view is not None
    target = write_agent_view(tmp_path, view)
    before = (target / "summary.json").read_bytes()
    (target / ".summary.json.k1ll3d.tmp").write_text('{"half": ')  # what a kill before the rename leaves
    assert recover_views(tmp_path) == []
    assert os.listdir(target) == ["summary.json"] and (target / "summary.json").read_bytes() == before
