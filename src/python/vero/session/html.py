"""`vero report --html FILE`: one self-contained page (inline SVG charts made with pygal, inline
CSS, no script or file it would fetch) for a session, a trial or a jobs dir.

Charts: the mean score of every evaluation over time per split, the budget burn (runs spent
per split over time), the auto_best re-score that picked the winner, and for a jobs dir the
rewards of every trial against the baseline. Text goes through Jinja2's HTML autoescape; the
charts are SVG that pygal builds with an XML serializer (labels escaped there).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2
import pygal
from markupsafe import Markup

from vero import __version__
from vero.errors import VeroError
from vero.fsutil import atomic_write_text
from vero.session.report import JobsReport, SessionReport, TrialReport

_CHART = {"js": [], "disable_xml_declaration": True, "height": 360, "width": 900, "legend_at_bottom": True,
          "truncate_legend": 40, "print_values": False}


def _svg(chart: pygal.graph.graph.Graph) -> Markup:
    return Markup(chart.render(is_unicode=True))


def _start(report: SessionReport) -> float:
    return min((row.created_at for row in report.evaluations), default=0.0)


def scores_over_time(report: SessionReport) -> Markup | None:
    """Mean score of each finished evaluation, by minutes since the session's first evaluation."""
    start = _start(report)
    chart = pygal.XY(title="Score of each evaluation over time", x_title="minutes since the first evaluation",
                     y_title="mean score", range=(0, 1), dots_size=4, **_CHART)
    series: dict[str, list[tuple[float, float]]] = {}
    for row in report.evaluations:
        if row.mean_score is None:
            continue
        name = row.split if row.asked_by != "finalize" else f"{row.split} (finalize: {row.purpose})"
        series.setdefault(name, []).append(((row.created_at - start) / 60, row.mean_score))
    if not series:
        return None
    for name, points in series.items():
        chart.add(name, points)
    return _svg(chart)


def budget_burn(report: SessionReport) -> Markup | None:
    """Runs the optimizer spent per split, cumulative over time (free and released runs cost nothing)."""
    start = _start(report)
    budgets = {split.split: split.run_budget for split in report.splits}
    chart = pygal.XY(title="Budget burn: runs spent per split", x_title="minutes since the first evaluation",
                     y_title="runs spent", dots_size=3, **_CHART)
    added = False
    for split in budgets:
        spent = 0
        points = [(0.0, 0.0)]
        for row in report.evaluations:
            if row.split == split and row.asked_by != "finalize" and row.charged and not row.released:
                minute = (row.created_at - start) / 60
                points += [(minute, float(spent)), (minute, float(spent + 1))]  # a step per run
                spent += 1
        if spent:
            label = split if budgets[split] is None else f"{split} (budget {budgets[split]} runs)"
            chart.add(label, points)
            added = True
    return _svg(chart) if added else None


def rescore(report: SessionReport) -> Markup | None:
    """The auto_best re-score: each ranked candidate's optimizer score and its trusted re-score."""
    ranking = report.selection.ranking
    if not ranking:
        return None
    chart = pygal.Bar(title="The re-score that picked the winner", y_title="mean score on the selection split",
                      range=(0, 1), **_CHART)
    chart.x_labels = [c.commit[:12] + (" (winner)" if c.commit == report.selection.candidate else "")
                      for c in ranking]
    chart.add("optimizer's best evaluation", [c.selection_score for c in ranking])
    chart.add("trusted re-score", [c.trusted_score for c in ranking])
    return _svg(chart)


def trial_rewards(report: JobsReport) -> Markup | None:
    """Every trial's rewards next to its baseline."""
    keys = [row.reward_key for row in report.comparison]
    if not keys:
        return None
    chart = pygal.Bar(title="Rewards per trial", y_title="reward", x_label_rotation=20, **_CHART)
    chart.x_labels = [trial.trial_name for trial in report.trials]
    for key in keys:
        chart.add(key, [(trial.rewards or {}).get(key) for trial in report.trials])
        chart.add(f"{key} (baseline)", [(trial.session.baseline or {}).get(key)
                                        if trial.session is not None else None for trial in report.trials])
    return _svg(chart)


def session_charts(report: SessionReport) -> list[Markup]:
    """The charts of one session, leaving out those it has no data for."""
    return [svg for svg in (scores_over_time(report), budget_burn(report), rescore(report)) if svg is not None]


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("vero.session", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(session_charts=session_charts)
    return env


def render_html(report: SessionReport | TrialReport | JobsReport) -> str:
    """The page for `report`."""
    if isinstance(report, JobsReport):
        kind, trials = "jobs", report.trials
    elif isinstance(report, TrialReport):
        kind, trials = "trial", [report]
    else:
        kind, trials = "session", []
    return _environment().get_template("report.html.j2").render(
        kind=kind, report=report, trials=trials, vero_version=__version__,
        rewards_chart=trial_rewards(report) if isinstance(report, JobsReport) else None)


def write_html(path: Path, report: SessionReport | TrialReport | JobsReport) -> None:
    """Write the page atomically (a failed write leaves any earlier page as it was)."""
    page = render_html(report)
    try:
        atomic_write_text(path, page)
    except OSError as exc:
        raise VeroError(f"cannot write the HTML report: {exc.strerror or exc}", where=str(path),
                        fix="pass --html with a path in a writable directory") from None
