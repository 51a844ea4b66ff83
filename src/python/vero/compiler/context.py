"""The values every template renders, computed from the config (templates escape them)."""

from __future__ import annotations

import shlex
from typing import Any

from vero import __version__
from vero.baseline import GIT_ENV, git_commit_argv
from vero.compiler.config import BuildConfig, ModeABuild, ModeBBuild
from vero.container import CONTAINER
from vero.serve.config import ServeConfig

# Harbor timeouts the compiler derives: image builds and start-up, and slack around finalize.
BUILD_TIMEOUT_SEC = 900.0
VERIFIER_SLACK_SEC = 120.0
# The finalize client gives up this long before Harbor's verifier timeout, to write the floors.
FINALIZE_SLACK_SEC = 60.0
# test.sh's archive request after finalize, and the rescue archive's collect hook.
SESSION_ARCHIVE_TIMEOUT_SEC = 45.0
RESCUE_TIMEOUT_SEC = 300.0
# Where the rescue archive lands in the trial's artifacts/ dir.
RESCUE_DESTINATION = "session-rescue.tar.gz"
# Mode B: on SIGTERM the sidecar stops its nested harbor, which cancels and tears down its trials.
SIDECAR_STOP_GRACE = "10s"
MODE_B_SIDECAR_STOP_GRACE = "90s"


def verifier_evaluations(config: BuildConfig) -> int:
    """The most evaluations finalize can run: auto_best re-scores of the top k plus the
    submission when it is not among them, then every target, and again for the baseline when
    it is scored too."""
    top_k = int(ServeConfig.model_fields["auto_best_top_k"].default)
    return top_k + 1 + len(config.targets) * (2 if config.score_baseline else 1)


def evaluation_limit(config: BuildConfig) -> float:
    """Seconds one evaluation may run: Mode B's `harbor.timeout`, when set, replaces `timeout`."""
    if isinstance(config, ModeBBuild) and config.harbor.timeout is not None:
        return config.harbor.timeout
    return config.timeout


def verifier_timeout(config: BuildConfig) -> float:
    """Harbor's verifier timeout: finalize's worst case, where a timed-out nested harbor also
    gets its kill grace to tear its trials down."""
    per_evaluation = evaluation_limit(config)
    if isinstance(config, ModeBBuild):
        per_evaluation += config.harbor.kill_grace
    return verifier_evaluations(config) * per_evaluation + VERIFIER_SLACK_SEC


def _split_rows(config: BuildConfig) -> list[dict[str, str]]:
    budgets = {b.split: b for b in config.budgets}
    rows = []
    for entry in config.splits:
        if entry.access == "no_access":
            continue
        budget = budgets.get(entry.split)
        rows.append({
            "split": entry.split,
            "access": entry.access,
            "view": "every sample" if entry.access == "viewable" else "aggregate only",
            "runs": _limit(budget.total_run_budget if budget else 0),
            "samples": _limit(budget.total_sample_budget if budget else 0),
            "per_run": _limit(budget.max_samples_per_run if budget else None),
        })
    return rows


def _limit(value: int | None) -> str:
    return "no limit" if value is None else str(value)


def harbor_artifacts() -> list[dict[str, str]]:
    """task.toml's `[[artifacts]]`: what Harbor copies into the trial dir, on failure paths too:
    the sidecar's log dir (why it could not start, `vero.serve.failure`) and the rescue archive
    (see `collect_hooks`)."""
    return [{"source": CONTAINER.log_dir, "destination": CONTAINER.sidecar_service,
             "service": CONTAINER.sidecar_service},
            {"source": CONTAINER.rescue_archive, "destination": RESCUE_DESTINATION,
             "service": CONTAINER.sidecar_service}]


def collect_hooks() -> list[dict[str, Any]]:
    """task.toml's `[[verifier.collect]]`: commands Harbor runs after the agent phase (also after
    one that failed, when the verifier never runs), before it copies the artifacts. The rescue
    archive needs no token: the hook runs as root in the sidecar, which owns the admin volume."""
    command = shlex.join(["vero", "harbor", "archive", "--config", CONTAINER.serve_json,
                          "--output", CONTAINER.rescue_archive])
    return [{"command": command, "service": CONTAINER.sidecar_service, "user": "root",
             "timeout_sec": RESCUE_TIMEOUT_SEC}]


README_NAMES = ("README.md", "README.rst", "README.txt", "README")


def _duration(seconds: float) -> str:
    text = f"{seconds:g} seconds"
    return f"{text} ({seconds / 60:g} minutes)" if seconds >= 120 and seconds % 60 == 0 else text


def template_context(config: BuildConfig, commit: str, sidecar_items: list[str],
                     baseline_files: list[str]) -> dict[str, Any]:
    """Every value the templates render (each template escapes for its own format)."""
    n_evals = verifier_evaluations(config)
    context: dict[str, Any] = {
        # The container layout as one object: `paths.repo_dir`, `paths.eval_port`, ...
        "paths": CONTAINER,
        "vero_version": __version__,
        "name": config.name,
        "description": config.description,
        "mode": config.mode,
        "commit": commit,
        "agent_timeout": config.agent_timeout,
        "agent_time_limit": _duration(config.agent_timeout),
        "eval_timeout": evaluation_limit(config),
        "eval_time_limit": _duration(evaluation_limit(config)),
        "verifier_evals": n_evals,
        "verifier_timeout": verifier_timeout(config),
        "finalize_timeout": verifier_timeout(config) - FINALIZE_SLACK_SEC,
        "build_timeout": BUILD_TIMEOUT_SEC,
        "base_image_main": config.base_image_main,
        "base_image_sidecar": config.sidecar_image(),
        "secrets": config.secrets,
        "docker_socket": isinstance(config, ModeBBuild),
        "sidecar_stop_grace": (MODE_B_SIDECAR_STOP_GRACE if isinstance(config, ModeBBuild)
                               else SIDECAR_STOP_GRACE),
        "health_probe": (f"import urllib.request; urllib.request.urlopen({CONTAINER.health_url!r}, "
                         "timeout=4).read()"),
        "read_only_paths": config.read_only_paths,
        "git_env": [f"{key}={value}" for key, value in sorted(GIT_ENV.items())],
        "git_argv": git_commit_argv(),
        "sidecar_items": sidecar_items,
        "split_rows": _split_rows(config),
        "k_anonymity_floor": config.k_anonymity_floor,
        "reward_mode": config.reward_mode,
        "submit_enabled": config.submit_enabled,
        "selection_split": config.selection_split,
        "reward_keys": [target.reward_key for target in config.targets],
        "artifacts": harbor_artifacts(),
        "collect_hooks": collect_hooks(),
        "session_archive_timeout": SESSION_ARCHIVE_TIMEOUT_SEC,
        "limits": config.limits,
        # The free baseline evaluation exists on every split the optimizer may evaluate.
        "free_baseline_splits": [entry.split for entry in config.splits if entry.access != "no_access"],
    }
    if isinstance(config, ModeABuild):
        readme = next((name for name in README_NAMES if name in baseline_files), None)
        context.update(entrypoint=config.entrypoint, label_fields=config.label_fields,
                       sample_timeout=config.sample_timeout, sample_time_limit=_duration(config.sample_timeout),
                       output_contract=config.output_contract,
                       readme=readme)
    else:
        context.update(agent_class=config.harbor.agent)
    return context
