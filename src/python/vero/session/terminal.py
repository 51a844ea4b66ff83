"""`vero report` in the terminal: rich tables of a session, a trial or a jobs dir.

Every value from an archive or a trial goes through `escape`: a split name or an error text
with `[...]` in it must print as written, not as rich markup.
"""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from vero.session.report import JobsReport, SessionReport, TrialReport

KIND_TITLES = {"final": "final archive (after finalize)", "rescue": "rescue archive (taken before finalize)",
               "runner": "runner session"}


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _of(used: int, total: int | None) -> str:
    return f"{used}" if total is None else f"{used} / {total}"


def _header(report: SessionReport) -> RenderableType:
    task = report.task
    lines = [f"[bold]{escape(task.name)}[/bold] (mode {task.mode}) · {KIND_TITLES[report.kind]}",
             f"archive {escape(report.archive)}",
             f"task digest {task.task_digest or '-'} · baseline {task.baseline_commit or '-'} · "
             f"vero {escape(task.vero_version)}"]
    return Panel("\n".join(lines), title="session", expand=False)


def _candidates(report: SessionReport) -> Table:
    table = Table(title="candidates", title_justify="left")
    for column in ("commit", "roles", "evaluations", "best mean score by split"):
        table.add_column(column)
    for row in report.candidates:
        roles = ", ".join(row.roles) + (", [bold green]winner[/bold green]" if row.winner else "")
        best = ", ".join(f"{escape(split)} {score:.4g}" for split, score in row.best_by_split.items()) or "-"
        table.add_row(row.commit[:12], roles, str(row.evaluations), best)
    return table


def _splits(report: SessionReport) -> Table:
    table = Table(title="evaluations and budget per split", title_justify="left")
    for column in ("split", "access", "optimizer evals", "finalize evals", "runs spent", "samples spent",
                   "best (optimizer)"):
        table.add_column(column)
    for row in report.splits:
        best = f"{_score(row.best_score)} ({row.best_commit[:12]})" if row.best_commit else "-"
        table.add_row(escape(row.split), row.access or "-", str(row.optimizer_evaluations),
                      str(row.finalize_evaluations), _of(row.runs_used, row.run_budget),
                      _of(row.samples_used, row.sample_budget), best)
    return table


def _selection(report: SessionReport) -> RenderableType:
    selection = report.selection
    parts: list[RenderableType] = [
        f"source: [bold]{selection.source}[/bold] · candidate: {selection.candidate or '-'}",
        f"why: {escape(selection.why)}"]
    if selection.ranking:
        table = Table(title="auto_best re-score", title_justify="left")
        for column in ("commit", "selection score", "trusted re-score", "error"):
            table.add_column(column)
        for ranked in selection.ranking:
            table.add_row(ranked.commit[:12], _score(ranked.selection_score), _score(ranked.trusted_score),
                          escape(ranked.error or ""))
        parts.append(table)
    return Panel(Group(*parts), title="selection", expand=False)


def _outcome(report: SessionReport) -> RenderableType:
    lines = []
    if report.rewards is not None:
        for key, value in report.rewards.items():
            base = report.baseline.get(key) if report.baseline else None
            floor = f" [red](0.0 floor: {escape(report.target_errors[key])})[/red]" \
                if key in report.target_errors else ""
            lines.append(f"reward {escape(key)} = [bold]{value:.4g}[/bold]"
                         + (f" (baseline {base:.4g})" if base is not None else "") + floor)
    else:
        lines.append("no final reward in this archive")
    lines.append(f"error samples: {report.error_samples} · incidents (details withheld from the optimizer): "
                 f"{report.incidents}")
    lines += [f"[red]error[/red] {escape(error)}" for error in report.errors]
    return Panel("\n".join(lines), title="rewards and errors", expand=False)


def session_view(report: SessionReport) -> Group:
    """Header, candidates, splits and budget, the selection, rewards and errors."""
    return Group(_header(report), _candidates(report), _splits(report), _selection(report), _outcome(report))


def trial_view(report: TrialReport) -> Group:
    """A trial's Harbor outcome, then its session."""
    rewards = ", ".join(f"{escape(k)}={v:.4g}" for k, v in (report.rewards or {}).items()) or "none"
    lines = [f"trial [bold]{escape(report.trial_name)}[/bold] · task {escape(report.task_name or '-')}",
             f"harbor rewards: {rewards}"]
    if report.exception:
        lines.append(f"[red]exception[/red] {escape(report.exception)}")
    if report.note:
        lines.append(escape(report.note))
    parts: list[RenderableType] = [Panel("\n".join(lines), title="trial", expand=False)]
    if report.session is not None:
        parts.append(session_view(report.session))
    return Group(*parts)


def jobs_view(report: JobsReport) -> Group:
    """One row per trial, then the comparison per reward key."""
    table = Table(title=f"{len(report.trials)} trials under {escape(report.path)}", title_justify="left")
    for column in ("trial", "archive", "winner", "source", "rewards", "baseline", "evaluations", "exception"):
        table.add_column(column, overflow="fold")
    for trial in report.trials:
        session = trial.session
        rewards = ", ".join(f"{escape(k)}={v:.4g}" for k, v in (trial.rewards or {}).items()) or "-"
        baseline = ", ".join(f"{escape(k)}={v:.4g}" for k, v in (session.baseline or {}).items()) \
            if session is not None and session.baseline else "-"
        table.add_row(escape(trial.trial_name), session.kind if session is not None else escape(trial.note or "-"),
                      (session.selection.candidate or "-")[:12] if session is not None else "-",
                      session.selection.source if session is not None else "-", rewards, baseline,
                      str(len(session.evaluations)) if session is not None else "-",
                      escape(trial.exception or ""))
    comparison = Table(title="comparison", title_justify="left")
    for column in ("reward", "trials", "mean", "best", "worst", "best trial", "baseline mean"):
        comparison.add_column(column)
    for row in report.comparison:
        comparison.add_row(escape(row.reward_key), str(row.trials), f"{row.mean:.4g}", f"{row.best:.4g}",
                           f"{row.worst:.4g}", escape(row.best_trial), _score(row.baseline_mean))
    footer = f"trials with an exception: {report.failed_trials}"
    return Group(table, comparison, footer)


def render(console: Console, report: SessionReport | TrialReport | JobsReport) -> None:
    """Print `report` to `console`."""
    if isinstance(report, SessionReport):
        console.print(session_view(report))
    elif isinstance(report, TrialReport):
        console.print(trial_view(report))
    else:
        console.print(jobs_view(report))
