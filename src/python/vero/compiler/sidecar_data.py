"""The sidecar-only part of a task: the baked dataset and scorer (Mode A) or inner tasks (Mode B:
a local source, or the partition's tasks of a local registry with a registry.json listing them),
and serve.json, the ServeConfig that tells `vero harbor serve` where they are."""

from __future__ import annotations

from dataclasses import dataclass

from vero.compiler import layout
from vero.compiler.agent_repo import extract_git_tree
from vero.compiler.config import ModeABuild, ModeBBuild
from vero.compiler.dataset import CheckedDataset, bake_dataset
from vero.compiler.inputs import Inputs, RegistryInputs
from vero.compiler.tree import TreeWriter
from vero.compiler.validation_cache import ValidationCache
from vero.fsutil import canonical_json
from vero.modeb.config import HarborConfig
from vero.serve.config import ModeAServe, ModeBServe, ServeConfig, ServePaths


@dataclass(frozen=True)
class SidecarData:
    """What was baked for the sidecar: item names, the ServeConfig, and (Mode A) the checked dataset."""

    items: list[str]
    serve: ServeConfig
    dataset: CheckedDataset | None


def write_sidecar_data(writer: TreeWriter, inputs: Inputs, commit: str, cache: ValidationCache) -> SidecarData:
    """Bake the sidecar-only data (the dataset checked as it is baked, see `dataset`)."""
    config = inputs.loaded.config
    where = str(inputs.loaded.path)
    items: list[str] = []
    mode_a = mode_b = None
    dataset = None
    if isinstance(config, ModeABuild):
        assert inputs.mode_a is not None
        data = inputs.mode_a
        dataset = bake_dataset(writer, data.dataset, data.files, f"{layout.SIDECAR_OUT}/{layout.DATASET_ITEM}",
                               config, cache, where)
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
        elif inputs.mode_b.registry is not None:
            harbor["registry_path"] = write_registry(writer, inputs.mode_b.registry, where)
            items = [layout.REGISTRY_ITEM]
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
        read_only_paths=config.read_only_paths,
        k_anonymity_floor=config.k_anonymity_floor,
        secrets=config.secrets,
        max_concurrency=config.max_concurrency,
        timeout=config.timeout,
        harness_user=layout.HARNESS_USER,
        fetch_uid=layout.AGENT_UID,
        limits=config.limits,
        mode_a=mode_a,
        mode_b=mode_b,
    )
    return SidecarData(items=items, serve=serve, dataset=dataset)


def write_registry(writer: TreeWriter, registry: RegistryInputs, where: str) -> str:
    """Bake the partition's tasks of a local registry dataset and a registry.json that lists just
    them (the same dataset name and version, the same task names and directory names) at their
    in-container paths; return the registry.json path the sidecar's harbor gets."""
    base = f"{layout.SIDECAR_OUT}/{layout.REGISTRY_ITEM}"
    in_container = f"{layout.SIDECAR_DIR}/{layout.REGISTRY_ITEM}"
    entries = []
    for task in registry.tasks:
        dest = f"{base}/{layout.REGISTRY_TASKS}/{task.dir_name}"
        origin = f"{where}: harbor.registry_path: task {task.name!r}"
        if task.local_dir is not None:
            writer.copy_tree(dest, task.local_dir, where=origin)
        else:
            assert task.git_repo is not None  # inputs refuse tasks the sidecar could not reach
            extract_git_tree(task.git_repo, task.treeish, writer, dest, origin)
        entries.append({"name": task.name, "path": f"{in_container}/{layout.REGISTRY_TASKS}/{task.dir_name}"})
    dataset = registry.dataset
    listing = [{"name": dataset.name, "version": dataset.version, "description": dataset.description,
                "tasks": entries}]
    writer.write_text(f"{base}/{layout.REGISTRY_JSON}", canonical_json(listing))
    return f"{in_container}/{layout.REGISTRY_JSON}"
