"""Resolving and checking every input of a build before anything is written.

Missing files, missing secrets, unknown dataset splits, unknown partition names and inputs that
would leak into the optimizer's repo all fail here, before the output directory is touched. The
content of the dataset's split files is checked as they are baked (`dataset.check_baked_dataset`): they
are read once.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vero.compiler.config import ModeABuild, ModeBBuild
from vero.compiler.dataset import dataset_files
from vero.compiler.loader import LoadedConfig
from vero.errors import VeroError
from vero.modeb.registry import RegistryDataset, RegistryTask
from vero.modeb.task_source import TaskSource

SCORER_FIX = "point scorer at a Python file or a package directory defining score(output, row)"


@dataclass(frozen=True)
class ModeAInputs:
    """The dataset, its split files to bake (names of files in it) and the trusted scorer."""

    dataset: Path
    files: list[str]
    scorer: Path


@dataclass(frozen=True)
class RegistryInputs:
    """A registry dataset from a local registry.json: the partition's tasks, to bake for the sidecar."""

    registry: Path
    dataset: RegistryDataset
    tasks: list[RegistryTask]   # one per partition task, sorted by directory name

    def origins(self) -> list[Path]:
        """Where the baked tasks are read from: task dirs and file:// repositories."""
        return [path for task in self.tasks for path in (task.local_dir or task.git_repo,) if path is not None]


@dataclass(frozen=True)
class ModeBInputs:
    """The local inner task source (None for a registry source) and the task dirs the partition
    names, or the local registry's tasks (None when the registry is only reachable at run time)."""

    source: Path | None
    task_dirs: list[Path]
    registry: RegistryInputs | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Inputs:
    """Everything a build reads, resolved to absolute paths and checked."""

    loaded: LoadedConfig
    agent_repo: Path
    runtime_pex: Path
    solution: Path | None
    mode_a: ModeAInputs | None
    mode_b: ModeBInputs | None


def _existing(loaded: LoadedConfig, field: str, value: str, kind: str) -> Path:
    path = loaded.resolve(value)
    ok = path.is_dir() if kind == "dir" else path.exists()
    if not ok:
        what = "is not a directory" if path.exists() else "does not exist"
        raise VeroError(f"{field}: {value!r} -> {path} {what}", where=str(loaded.path),
                        fix=f"fix {field} (relative paths start at build.yaml's directory)")
    return path


def _outside(path: Path, other: Path, what: str, loaded: LoadedConfig) -> None:
    if path == other or path.is_relative_to(other):
        raise VeroError(f"{what} {path} is inside the agent repo {other}: the optimizer would see it",
                        where=str(loaded.path), fix=f"move {what} out of agent_repo")


def check_runtime_pex(path: Path) -> Path:
    """The runtime PEX to bake: an existing PEX file (a zip with PEX-INFO)."""
    if not path.is_file():
        raise VeroError(f"runtime PEX {path} does not exist", where="--runtime-pex",
                        fix="build it with `./pants package src/python/vero:vero` and pass its path")
    try:
        with zipfile.ZipFile(path) as archive:
            archive.getinfo("PEX-INFO")
    except (zipfile.BadZipFile, KeyError, OSError):
        raise VeroError(f"{path} is not a PEX file", where="--runtime-pex",
                        fix="pass dist/src.python.vero/vero.pex "
                            "(from `./pants package src/python/vero:vero`)") from None
    return path


def check_secrets(names: list[str], env: Mapping[str, str], where: str) -> None:
    """Every declared secret must be set on the host; name all missing ones at once."""
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise VeroError(f"secret(s) not set in the environment: {', '.join(missing)}", where=where,
                        fix=f"export {' '.join(missing)} before building "
                            "(their values never enter the task files)")


def check_output_vs_inputs(out: Path, dirs: list[Path], where: str) -> None:
    """The output must not be inside an input (it would copy itself) nor contain one (it is replaced)."""
    real_out = out.resolve()
    for path in dirs:
        real = path.resolve()
        if real_out == real or real_out.is_relative_to(real) or real.is_relative_to(real_out):
            raise VeroError(f"the output {out} overlaps the input {path}", where=where,
                            fix="write the task somewhere outside the benchmark's inputs")


def resolve_inputs(loaded: LoadedConfig, runtime_pex: Path, out: Path, env: Mapping[str, str]) -> Inputs:
    """Resolve and check every input of `loaded`; raise a VeroError before any output is written."""
    config = loaded.config
    where = str(loaded.path)
    agent_repo = _existing(loaded, "agent_repo", config.agent_repo, "dir")
    solution = None
    if config.solution is not None:
        solution = _existing(loaded, "solution", config.solution, "dir")
        if not (solution / "solve.sh").is_file():
            raise VeroError(f"solution: {solution} has no solve.sh", where=where,
                            fix="add solve.sh (the oracle optimizer) to the solution directory")
    check_secrets(config.secrets, env, where)
    pex = check_runtime_pex(runtime_pex)
    mode_a = mode_b = None
    dirs = [agent_repo] + ([solution] if solution else [])
    if isinstance(config, ModeABuild):
        dataset = _existing(loaded, "dataset", config.dataset, "dir")
        scorer = _existing(loaded, "scorer", config.scorer, "any")
        _outside(dataset, agent_repo, "dataset", loaded)
        _outside(scorer, agent_repo, "scorer", loaded)
        if scorer.is_file() and scorer.suffix != ".py":
            raise VeroError(f"scorer: {scorer} is not a .py file", where=where, fix=SCORER_FIX)
        if scorer.is_dir() and not (scorer / "__init__.py").is_file():
            raise VeroError(f"scorer: {scorer} is a directory without __init__.py", where=where,
                            fix=SCORER_FIX)
        mode_a = ModeAInputs(dataset=dataset, files=dataset_files(dataset, config, where), scorer=scorer)
        dirs += [dataset] + ([scorer] if scorer.is_dir() else [])
    elif isinstance(config, ModeBBuild):
        names = [name for split in sorted(config.partition) for name in config.partition[split]]
        if config.inner_task is not None:
            source = _existing(loaded, "inner_task", config.inner_task, "dir")
            _outside(source, agent_repo, "inner_task", loaded)
            # The runner's own resolution: the same names must resolve the same way in the sidecar.
            tasks = TaskSource.open(str(source), source.parent)
            task_dirs: list[Path] = []
            for ref in tasks.resolve(names, where=f"{where}: partition"):
                task_dir = tasks.task_dir(ref)
                assert task_dir is not None  # a local source resolves every name to a directory
                task_dirs.append(task_dir)
            dirs.append(source)
            mode_b = ModeBInputs(source=source, task_dirs=sorted(task_dirs))
        else:
            mode_b = _registry_inputs(loaded, config, names, agent_repo)
            if mode_b.registry is not None:
                dirs += mode_b.registry.origins()
    check_output_vs_inputs(out, dirs, where)
    return Inputs(loaded=loaded, agent_repo=agent_repo, runtime_pex=pex, solution=solution,
                  mode_a=mode_a, mode_b=mode_b)


def _registry_inputs(loaded: LoadedConfig, config: ModeBBuild, names: list[str], agent_repo: Path) -> ModeBInputs:
    """Check the partition against a registry source: resolved against a local registry (whose
    tasks are then baked), else style-checked only (the sidecar will need the network)."""
    where = str(loaded.path)
    spec = config.harbor.task_source
    assert spec is not None  # the config's own check: inner_task or task_source
    registry_path = config.harbor.registry_path
    if registry_path is not None:
        _existing(loaded, "harbor.registry_path", registry_path, "file")
    tasks = TaskSource.open(spec, loaded.path.parent, registry_path)
    refs = tasks.resolve(names, where=f"{where}: partition")
    if tasks.registry is None or tasks.dataset is None:
        return ModeBInputs(source=None, task_dirs=[], warnings=(
            f"harbor.task_source {spec} is fetched when the sidecar runs: its nested harbor needs network "
            "access (set harbor.registry_path to a local registry.json to bake the tasks instead)",))
    _outside(tasks.registry.path, agent_repo, "harbor.registry_path", loaded)
    baked: list[RegistryTask] = []
    for ref in refs:
        task = tasks.registry_task(ref)
        assert task is not None  # a local registry resolves every name to one of its tasks
        origin = task.local_dir or task.git_repo
        if origin is None:
            raise VeroError(f"task {task.name!r} of {spec} is fetched from {task.git_url}, which the sidecar "
                            "cannot reach (it has no network)", where=f"{where}: harbor.registry_path",
                            fix="point the registry entry at a local path or a file:// git repository")
        if task.local_dir is not None and not (task.local_dir / "task.toml").is_file():
            raise VeroError(f"task {task.name!r} of {spec}: {task.local_dir} has no task.toml",
                            where=str(tasks.registry.path), fix="fix the task's path in the registry")
        _outside(origin, agent_repo, f"registry task {task.name!r}", loaded)
        baked.append(task)
    baked.sort(key=lambda task: task.dir_name)
    return ModeBInputs(source=None, task_dirs=[],
                       registry=RegistryInputs(registry=tasks.registry.path, dataset=tasks.dataset, tasks=baked))
