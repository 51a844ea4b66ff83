"""The values every template renders, computed from the config (templates escape them)."""

from __future__ import annotations

import os
import shlex
from typing import Any

from vero import __version__
from vero.baseline import GIT_ENV, git_commit_argv
from vero.compiler import layout
from vero.compiler.config import BuildConfig, ModeABuild, ModeBBuild
from vero.serve.config import ServeConfig


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
    return verifier_evaluations(config) * per_evaluation + layout.VERIFIER_SLACK_SEC


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
    return [{"source": layout.SIDECAR_LOG_DIR, "destination": layout.SIDECAR_SERVICE,
             "service": layout.SIDECAR_SERVICE},
            {"source": layout.RESCUE_ARCHIVE, "destination": layout.RESCUE_DESTINATION,
             "service": layout.SIDECAR_SERVICE}]


def collect_hooks() -> list[dict[str, Any]]:
    """task.toml's `[[verifier.collect]]`: commands Harbor runs after the agent phase (also after
    one that failed, when the verifier never runs), before it copies the artifacts. The rescue
    archive needs no token: the hook runs as root in the sidecar, which owns the admin volume."""
    command = shlex.join(["vero", "harbor", "archive", "--config", layout.SERVE_JSON,
                          "--output", layout.RESCUE_ARCHIVE])
    return [{"command": command, "service": layout.SIDECAR_SERVICE, "user": "root",
             "timeout_sec": layout.RESCUE_TIMEOUT_SEC}]


README_NAMES = ("README.md", "README.rst", "README.txt", "README")


def _duration(seconds: float) -> str:
    text = f"{seconds:g} seconds"
    return f"{text} ({seconds / 60:g} minutes)" if seconds >= 120 and seconds % 60 == 0 else text


def template_context(config: BuildConfig, commit: str, sidecar_items: list[str],
                     baseline_files: list[str]) -> dict[str, Any]:
    """Every value the templates render (each template escapes for its own format)."""
    n_evals = verifier_evaluations(config)
    context: dict[str, Any] = {
        "vero_version": __version__,
        "name": config.name,
        "description": config.description,
        "mode": config.mode,
        "commit": commit,
        "agent_user": layout.AGENT_USER,
        "agent_uid": layout.AGENT_UID,
        "harness_user": layout.HARNESS_USER,
        "agent_timeout": config.agent_timeout,
        "agent_time_limit": _duration(config.agent_timeout),
        "eval_timeout": evaluation_limit(config),
        "eval_time_limit": _duration(evaluation_limit(config)),
        "verifier_evals": n_evals,
        "verifier_timeout": verifier_timeout(config),
        "finalize_timeout": verifier_timeout(config) - layout.FINALIZE_SLACK_SEC,
        "build_timeout": layout.BUILD_TIMEOUT_SEC,
        "base_image_main": config.base_image_main,
        "base_image_sidecar": config.sidecar_image(),
        "secrets": config.secrets,
        "docker_socket": isinstance(config, ModeBBuild),
        "socket_path": layout.DOCKER_SOCKET,
        "nested_jobs_var": layout.NESTED_JOBS_VAR,
        "nested_jobs_dir": layout.NESTED_JOBS_DIR,
        "harness_id": layout.MODE_B_HARNESS_ID,
        "sidecar_stop_grace": (layout.MODE_B_SIDECAR_STOP_GRACE if isinstance(config, ModeBBuild)
                               else layout.SIDECAR_STOP_GRACE),
        "read_only_paths": config.read_only_paths,
        "git_env": [f"{key}={value}" for key, value in sorted(GIT_ENV.items())],
        "git_argv": git_commit_argv(),
        "repo_dir": layout.REPO_DIR,
        "seed_dir": layout.SEED_DIR,
        "seed_script": layout.SEED_SCRIPT,
        "staging_dir": layout.SEED_STAGING,
        "seed_marker": layout.SEED_MARKER,
        "marker_dir": os.path.dirname(layout.SEED_MARKER),
        "pex_path": layout.PEX_PATH,
        "venv_dir": layout.VENV_DIR,
        "token_dir": layout.TOKEN_DIR,
        "token_file": layout.TOKEN_FILE,
        "reward_dir": layout.REWARD_DIR,
        "reward_file": layout.REWARD_FILE,
        "eval_url": layout.EVAL_URL,
        "health_probe": layout.HEALTH_PROBE,
        "serve_json": layout.SERVE_JSON,
        "sidecar_dir": layout.SIDECAR_DIR,
        "sidecar_items": sidecar_items,
        "sidecar_results_dir": layout.SIDECAR_RESULTS,
        "optimizer_work": layout.OPTIMIZER_WORK,
        "optimizer_repo": layout.OPTIMIZER_REPO,
        "work_volume": layout.WORK_VOLUME,
        "results_dir": layout.MAIN_RESULTS,
        "admin_dir": layout.ADMIN_DIR,
        "work_dir": layout.WORK_DIR,
        "baseline_dir": layout.BASELINE_DIR,
        "split_rows": _split_rows(config),
        "k_anonymity_floor": config.k_anonymity_floor,
        "reward_mode": config.reward_mode,
        "submit_enabled": config.submit_enabled,
        "selection_split": config.selection_split,
        "reward_keys": [target.reward_key for target in config.targets],
        "artifacts": harbor_artifacts(),
        "collect_hooks": collect_hooks(),
        "session_archive": layout.SESSION_ARCHIVE,
        "session_archive_timeout": layout.SESSION_ARCHIVE_TIMEOUT_SEC,
        "limits": config.limits,
        "scratch_dirs": layout.SIDECAR_SCRATCH_DIRS,
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
