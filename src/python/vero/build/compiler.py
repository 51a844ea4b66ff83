"""`vero harbor build`: build.yaml and its inputs -> a sealed Harbor task directory (SPEC §4).

Order: load and validate the config, check the output path and every input (nothing written
yet), write the whole task into a temporary sibling of the output, seal it, rename it into place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from vero import __version__
from vero.baseline import BASELINE_FILES, GIT_ENV, git_commit_argv
from vero.build import layout
from vero.build.agent_repo import SEED_DIR, ExportedBaseline, export_agent_repo
from vero.build.config import BuildConfig, ModeABuild, ModeBBuild
from vero.build.inputs import Inputs, resolve_inputs
from vero.build.loader import load_build_config
from vero.build.output import MARKER, check_output, publish, staging_dir
from vero.build.render import render
from vero.build.seal import write_seal
from vero.build.tree import EXEC_MODE, TreeWriter
from vero.errors import VeroError
from vero.fsutil import canonical_json
from vero.modeb.config import HarborConfig
from vero.serve.config import ModeAServe, ModeBServe, ServeConfig, ServePaths


@dataclass
class BuildResult:
    """What a build produced."""

    out: Path
    commit: str
    root_digest: str
    n_files: int
    warnings: list[str] = field(default_factory=list)


def default_runtime_pex(env: Mapping[str, str]) -> Path:
    """The PEX this process runs from (`$PEX`); running from sources needs `--runtime-pex`."""
    pex = env.get("PEX")
    if not pex:
        raise VeroError("no runtime PEX to bake: vero is not running from a PEX", where="--runtime-pex",
                        fix="pass --runtime-pex dist/src.python.vero/vero.pex "
                            "(from `./pants package src/python/vero:vero`)")
    return Path(pex)


def build_task(config_path: Path, out: Path, runtime_pex: Path | None = None,
               env: Mapping[str, str] | None = None) -> BuildResult:
    """Compile `config_path` into `out`; see the module docstring. Raises VeroError on bad input."""
    env = os.environ if env is None else env
    loaded = load_build_config(config_path)
    out = Path(out).absolute()
    check_output(out)
    inputs = resolve_inputs(loaded, runtime_pex or default_runtime_pex(env), out, env)
    with staging_dir(out) as stage:
        writer = TreeWriter(stage)
        baseline = write_task(writer, inputs)
        seal = write_seal(writer)
        publish(stage, out)
    return BuildResult(out=out, commit=baseline.commit, root_digest=seal.root, n_files=len(seal.files),
                       warnings=baseline.warnings)


def write_task(writer: TreeWriter, inputs: Inputs) -> ExportedBaseline:
    """Write every file of the task into `writer`'s (fresh) directory."""
    config = inputs.loaded.config
    where = str(inputs.loaded.path)
    baseline = export_agent_repo(inputs.agent_repo, writer, where=f"{where}: agent_repo")
    _check_baseline_files(writer, config, where)
    writer.copy_file(layout.PEX_OUT, inputs.runtime_pex, EXEC_MODE)
    sidecar_items, serve = _write_sidecar_data(writer, inputs, baseline.commit)
    writer.write_text(layout.SERVE_JSON_OUT, canonical_json(serve.model_dump(mode="json")))
    context = template_context(config, baseline.commit, sidecar_items)
    writer.write_text(layout.TASK_TOML, render("task.toml.j2", **context))
    writer.write_text(layout.INSTRUCTION, render("instruction.md.j2", **context))
    writer.write_text(layout.COMPOSE, render("docker-compose.yaml.j2", **context))
    writer.write_text(layout.MAIN_DOCKERFILE, render("main.Dockerfile.j2", **context))
    writer.write_text(layout.SIDECAR_DOCKERFILE, render("sidecar.Dockerfile.j2", **context))
    writer.write_text(layout.WRAPPER_OUT, render("vero.sh.j2", **context), EXEC_MODE)
    writer.write_text(layout.SEED_SH, render("seed.sh.j2", **context), EXEC_MODE)
    writer.write_text(layout.TEST_SH, render("test.sh.j2", **context), EXEC_MODE)
    if inputs.solution is not None:
        writer.copy_tree(layout.SOLUTION_DIR, inputs.solution, where=f"{where}: solution")
        writer.chmod(layout.SOLVE_SH, EXEC_MODE)
    else:
        writer.write_text(layout.SOLVE_SH, render("solve.sh.j2", **context), EXEC_MODE)
    writer.write_text(MARKER, canonical_json({"created_by": "vero harbor build", "format": 1}))
    return baseline


def _baseline_path(writer: TreeWriter, rel: str) -> Path:
    return writer.root / SEED_DIR / BASELINE_FILES / rel


def _module_present(writer: TreeWriter, module: str) -> bool:
    base = "/".join(module.split("."))
    return any(_baseline_path(writer, c).is_file() for c in (f"{base}.py", f"{base}/__init__.py"))


def _check_baseline_files(writer: TreeWriter, config: BuildConfig, where: str) -> None:
    """Checks that need the exported baseline: the entry point's module and read_only_paths."""
    if isinstance(config, ModeABuild):
        field_name, target = "entrypoint", config.entrypoint
    else:
        field_name, target = "harbor.agent", config.harbor.agent
    module = target.split(":")[0]
    if not _module_present(writer, module):
        base = module.replace(".", "/")
        raise VeroError(f"{field_name}: module {module!r} is not in the agent repo "
                        f"(looked for {base}.py and {base}/__init__.py)", where=where,
                        fix=f"fix {field_name} or add the module to agent_repo (committed, for a git repo)")
    for index, rel in enumerate(config.read_only_paths):
        parts = PurePosixPath(rel).parts
        for depth in range(1, len(parts) + 1):
            path = _baseline_path(writer, "/".join(parts[:depth]))
            if path.is_symlink() or not path.exists():
                what = "is a symlink" if path.is_symlink() else "does not exist"
                prefix = "/".join(parts[:depth])
                raise VeroError(f"read_only_paths[{index}]: {prefix!r} {what} in the agent repo", where=where,
                                fix="list existing files or directories of the agent repo")


def _write_sidecar_data(writer: TreeWriter, inputs: Inputs, commit: str) -> tuple[list[str], ServeConfig]:
    """Bake the sidecar-only data; return the baked item names and the ServeConfig."""
    config = inputs.loaded.config
    where = str(inputs.loaded.path)
    items: list[str] = []
    mode_a = mode_b = None
    if isinstance(config, ModeABuild):
        assert inputs.mode_a is not None
        data = inputs.mode_a
        dataset_out = f"{layout.SIDECAR_OUT}/{layout.DATASET_ITEM}"
        for name in data.dataset_info.files:
            writer.copy_file(f"{dataset_out}/{name}", data.dataset / name, 0o644)
        scorer_name = data.scorer.name
        scorer_out = f"{layout.SIDECAR_OUT}/{layout.SCORER_ITEM}/{scorer_name}"
        if data.scorer.is_dir():
            writer.copy_tree(scorer_out, data.scorer, where=f"{where}: scorer")
        else:
            writer.copy_file(scorer_out, data.scorer, 0o644)
        items = [layout.DATASET_ITEM, layout.SCORER_ITEM]
        mode_a = ModeAServe(
            dataset_dir=f"{layout.SIDECAR_DIR}/{layout.DATASET_ITEM}",
            label_fields=config.label_fields,
            entrypoint=config.entrypoint,
            scorer=f"{layout.SIDECAR_DIR}/{layout.SCORER_ITEM}/{scorer_name}",
            sample_timeout=config.sample_timeout,
        )
    elif isinstance(config, ModeBBuild):
        assert inputs.mode_b is not None
        harbor = config.harbor.model_dump()
        if inputs.mode_b.source is not None:
            tasks_out = f"{layout.SIDECAR_OUT}/{layout.INNER_TASKS_ITEM}"
            for task_dir in inputs.mode_b.task_dirs:
                writer.copy_tree(f"{tasks_out}/{task_dir.name}", task_dir, where=f"{where}: inner_task")
            items = [layout.INNER_TASKS_ITEM]
            harbor["task_source"] = f"{layout.SIDECAR_DIR}/{layout.INNER_TASKS_ITEM}"
        mode_b = ModeBServe(harbor=HarborConfig.model_validate(harbor), partition=config.partition)
    serve = ServeConfig(
        mode=config.mode,
        name=config.name,
        port=layout.EVAL_PORT,
        paths=ServePaths(),
        baseline_commit=commit,
        splits=config.splits,
        budgets=config.budgets,
        reward_mode=config.reward_mode,
        selection_split=config.selection_split,
        targets=config.targets,
        submit_enabled=config.submit_enabled,
        score_baseline=config.score_baseline,
        k_anonymity_floor=config.k_anonymity_floor,
        secrets=config.secrets,
        max_concurrency=config.max_concurrency,
        timeout=config.timeout,
        harness_user=layout.HARNESS_USER,
        mode_a=mode_a,
        mode_b=mode_b,
    )
    return items, serve


def verifier_evaluations(config: BuildConfig) -> int:
    """The most evaluations finalize can run: auto_best re-scores plus every target, and again
    for the baseline when it is scored too."""
    top_k = int(ServeConfig.model_fields["auto_best_top_k"].default)
    return top_k + len(config.targets) * (2 if config.score_baseline else 1)


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


def template_context(config: BuildConfig, commit: str, sidecar_items: list[str]) -> dict[str, Any]:
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
        "eval_timeout": config.timeout,
        "verifier_evals": n_evals,
        "verifier_timeout": n_evals * config.timeout + layout.VERIFIER_SLACK_SEC,
        "build_timeout": layout.BUILD_TIMEOUT_SEC,
        "base_image_main": config.base_image_main,
        "base_image_sidecar": config.sidecar_image(),
        "secrets": config.secrets,
        "docker_socket": isinstance(config, ModeBBuild),
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
    }
    if isinstance(config, ModeABuild):
        context.update(entrypoint=config.entrypoint, label_fields=config.label_fields,
                       sample_timeout=config.sample_timeout)
    else:
        context.update(agent_class=config.harbor.agent)
    return context
