"""What the runner shows: a live progress bar while Harbor runs, then a per-task table and the aggregate."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vero.core.records import Aggregate, SampleResult
from vero.core.strategy import Progress as EvalProgress
from vero.core.strategy import ProgressCallback


@contextmanager
def progress_bar(console: Console, label: str) -> Iterator[ProgressCallback]:
    """A live bar "tasks done / total, passing so far"; yields the callback that updates it."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("tasks · [green]{task.fields[passing]} passing"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task_id = bar.add_task(label, total=None, passing=0)

        def update(progress: EvalProgress) -> None:
            bar.update(task_id, total=progress.total, completed=progress.done, passing=progress.passing)

        yield update


def _status(result: SampleResult) -> str:
    if result.error:
        # The runner's user ran harbor themselves: they see harbor's words too.
        detail = f"\n{escape(result.error_detail)}" if result.error_detail else ""
        return f"[red]error[/red] {escape(result.error)}{detail}"
    status = "[green]pass[/green]" if (result.score or 0.0) >= 1.0 else "scored"
    return f"{status} [yellow]warning[/yellow] {escape(result.warning)}" if result.warning else status


def results_table(results: Sequence[SampleResult], title: str) -> Table:
    """One row per task: score, attempts (scored/clean/total), metrics and status."""
    table = Table(title=title, show_lines=False)
    table.add_column("task", overflow="fold")
    table.add_column("score", justify="right")
    table.add_column("attempts\nscored/clean/all", justify="right")
    table.add_column("metrics", overflow="fold")
    table.add_column("status", overflow="fold")
    for result in results:
        score = "-" if result.score is None else f"{result.score:.3f}"
        attempts = "-" if result.attempts is None else \
            f"{result.attempts.n_scored}/{result.attempts.n_clean}/{result.attempts.n_attempts}"
        metrics = ", ".join(f"{key}={value:.3g}" for key, value in result.metrics.items())
        table.add_row(result.sample_id, score, attempts, metrics, _status(result))
    return table


def aggregate_table(agg: Aggregate) -> Table:
    """The aggregate: sample counts, mean score (errors count as 0) and per-metric means."""
    table = Table(title="aggregate", show_header=False)
    table.add_column("key")
    table.add_column("value", justify="right")
    table.add_row("samples", str(agg.n_samples))
    table.add_row("scored", str(agg.n_scored))
    table.add_row("errors", str(agg.n_errors))
    table.add_row("mean score", f"{agg.mean_score:.4f}")
    for key, value in agg.metrics.items():
        table.add_row(f"mean {key}", f"{value:.4f}")
    return table


def json_lines(results: Sequence[SampleResult], agg: Aggregate) -> str:
    """One JSON object per sample (task, score, metrics, error and its detail, warning, attempts
    and the score of each scored attempt), then `{"aggregate": ...}`."""
    lines = [json.dumps({"task": r.sample_id, "task_name": r.task_name, "score": r.score,
                         "metrics": r.metrics, "error": r.error, "error_detail": r.error_detail,
                         "warning": r.warning,
                         "attempts": r.attempts.model_dump() if r.attempts is not None else None,
                         "attempt_scores": r.attempt_scores},
                        sort_keys=True)
             for r in results]
    lines.append(json.dumps({"aggregate": agg.model_dump()}, sort_keys=True))
    return "\n".join(lines)
