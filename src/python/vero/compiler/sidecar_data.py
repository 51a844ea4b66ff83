"""The sidecar-only part of a task: the baked dataset and scorer (Mode A) or inner tasks (Mode B:
a local source, or the partition's tasks of a local registry with a registry.json listing them),
and serve.json, the ServeConfig that tells `vero harbor serve` where they are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vero.compiler import layout
from vero.compiler.agent_repo import extract_git_tree
from vero.compiler.config import BuildConfig, ModeABuild
from vero.compiler.dataset import CheckedDataset, check_baked_dataset, split_copies
from vero.compiler.inputs import Inputs, RegistryInputs
from vero.compiler.tree import TreeWriter
from vero.compiler.validation_cache import ValidationCache
from vero.container import CONTAINER
from vero.core.policy import policy_fields
from vero.fsutil import canonical_json
from vero.modeb.config import HarborConfig
from vero.serve.config import ModeAServe, ModeBServe, ServeConfig, ServePaths

DATASET_OUT = layout.sidecar_out(CONTAINER.dataset_dir)


@dataclass(frozen=True)
class SidecarData:
    """What was baked for the sidecar: item names, the ServeConfig, and (Mode A) the checked dataset."""

    items: list[str]
    serve: ServeConfig
    dataset: CheckedDataset | None


def large_sidecar_copies(inputs: Inputs) -> list[tuple[str, Path, int]]:
    """The sidecar's big inputs, for `TreeWriter.copying_alongside` (path in the task, source,
    mode): the Mode A split files; `write_sidecar_data` expects them copied."""
    if inputs.mode_a is None:
        return []
    return split_copies(inputs.mode_a.dataset, inputs.mode_a.files, DATASET_OUT)


def write_sidecar_data(writer: TreeWriter, inputs: Inputs, commit: str, cache: ValidationCache) -> SidecarData:
    """Bake the sidecar-only data besides `large_sidecar_copies` (the dataset is checked on those
    copies, see `dataset`)."""
    config = inputs.loaded.config
    where = str(inputs.loaded.path)
    items: list[str] = []
    baked: ModeAServe | ModeBServe
    dataset = None
    if isinstance(config, ModeABuild):
        assert inputs.mode_a is not None
        data = inputs.mode_a
        dataset = check_baked_dataset(writer, data.dataset, data.files, DATASET_OUT, config, cache, where)
        scorer_name = data.scorer.name
        scorer_out = f"{layout.sidecar_out(CONTAINER.scorer_dir)}/{scorer_name}"
        if data.scorer.is_dir():
            writer.copy_tree(scorer_out, data.scorer, where=f"{where}: scorer")
        else:
            writer.copy_file(scorer_out, data.scorer, 0o644)
        items = [layout.sidecar_item(CONTAINER.dataset_dir), layout.sidecar_item(CONTAINER.scorer_dir)]
        baked = ModeAServe(
            dataset_dir=CONTAINER.dataset_dir,
            label_fields=config.label_fields,
            entrypoint=config.entrypoint,
            scorer=f"{CONTAINER.scorer_dir}/{scorer_name}",
            sample_timeout=config.sample_timeout,
        )
    else:
        assert inputs.mode_b is not None
        harbor = config.harbor.model_dump()
        if inputs.mode_b.source is not None:
            tasks_out = layout.sidecar_out(CONTAINER.inner_tasks_dir)
            for task_dir in inputs.mode_b.task_dirs:
                writer.copy_tree(f"{tasks_out}/{task_dir.name}", task_dir, where=f"{where}: inner_task")
            items = [layout.sidecar_item(CONTAINER.inner_tasks_dir)]
            harbor["task_source"] = CONTAINER.inner_tasks_dir
        elif inputs.mode_b.registry is not None:
            harbor["registry_path"] = write_registry(writer, inputs.mode_b.registry, where)
            items = [layout.sidecar_item(CONTAINER.registry_dir)]
        baked = ModeBServe(harbor=HarborConfig.model_validate(harbor), partition=config.partition)
    return SidecarData(items=items, serve=serve_config_for(config, commit, baked), dataset=dataset)


def serve_config_for(config: BuildConfig, commit: str, baked: ModeAServe | ModeBServe) -> ServeConfig:
    """serve.json of a compiled task: build.yaml's evaluation policy as it is, the baseline commit,
    the sidecar's fixed paths, user and port, and the mode's section pointing at the baked data."""
    return ServeConfig(
        **policy_fields(config),
        mode=config.mode,
        name=config.name,
        port=CONTAINER.eval_port,
        paths=ServePaths(),
        baseline_commit=commit,
        harness_user=CONTAINER.harness_user,
        fetch_uid=CONTAINER.agent_uid,
        mode_a=baked if isinstance(baked, ModeAServe) else None,
        mode_b=baked if isinstance(baked, ModeBServe) else None,
    )


def write_registry(writer: TreeWriter, registry: RegistryInputs, where: str) -> str:
    """Bake the partition's tasks of a local registry dataset and a registry.json that lists just
    them (the same dataset name and version, the same task names and directory names) at their
    in-container paths; return the registry.json path the sidecar's harbor gets."""
    entries = []
    for task in registry.tasks:
        dest = f"{layout.sidecar_out(CONTAINER.registry_tasks_dir)}/{task.dir_name}"
        origin = f"{where}: harbor.registry_path: task {task.name!r}"
        if task.local_dir is not None:
            writer.copy_tree(dest, task.local_dir, where=origin)
        else:
            assert task.git_repo is not None  # inputs refuse tasks the sidecar could not reach
            extract_git_tree(task.git_repo, task.treeish, writer, dest, origin)
        entries.append({"name": task.name, "path": f"{CONTAINER.registry_tasks_dir}/{task.dir_name}"})
    dataset = registry.dataset
    listing = [{"name": dataset.name, "version": dataset.version, "description": dataset.description,
                "tasks": entries}]
    writer.write_text(layout.sidecar_out(CONTAINER.registry_json), canonical_json(listing))
    return CONTAINER.registry_json
