"""`vero harbor build`: build.yaml and its inputs -> a sealed Harbor task directory.

Order: load and validate the config, check the output path and every input (nothing written
yet), write the whole task into a temporary sibling of the output (each input read once: the
dataset's content is checked on its baked copy, or found in the validation cache), run the checks
that need the written task (`vero.compiler.checks`: entrypoint, scorer, dry run; skipped when they
passed before on the same content), seal it (with build.yaml's digest), rename it into place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vero.baseline import BASELINE_FILES
from vero.compiler import layout
from vero.compiler.agent_repo import ExportedBaseline, export_agent_repo
from vero.compiler.checks import check_task
from vero.compiler.config import BuildConfig, ModeABuild, ModeBBuild
from vero.compiler.context import template_context
from vero.compiler.dataset import CheckedDataset
from vero.compiler.identity import write_identity
from vero.compiler.inputs import Inputs, resolve_inputs
from vero.compiler.loader import load_build_config
from vero.compiler.publish import MARKER, check_output, publish, staging_dir
from vero.compiler.render import render
from vero.compiler.seal import sha256_file, write_seal
from vero.compiler.sidecar_data import large_sidecar_copies, write_sidecar_data
from vero.compiler.tree import EXEC_MODE, TreeWriter
from vero.compiler.validation_cache import PASSED_DIR, ValidationCache, default_cache_dir
from vero.container import CONTAINER
from vero.errors import VeroError
from vero.fsutil import canonical_json


@dataclass
class BuildResult:
    """What a build produced."""

    out: Path
    commit: str
    root_digest: str
    n_files: int
    build_config_sha256: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def default_runtime_pex(env: Mapping[str, str]) -> Path:
    """The PEX this process runs from (`$PEX`); running from sources needs `--runtime-pex`."""
    pex = env.get("PEX")
    if not pex:
        raise VeroError("no runtime PEX to bake: vero is not running from a PEX", where="--runtime-pex",
                        fix="pass --runtime-pex dist/src.python.vero/vero.pex "
                            "(from `./pants package src/python/vero:vero`)")
    return Path(pex)


@dataclass(frozen=True)
class WrittenTask:
    """What `write_task` wrote that the checks need: the baseline and (Mode A) the checked dataset."""

    baseline: ExportedBaseline
    dataset: CheckedDataset | None


def build_task(config_path: Path, out: Path, runtime_pex: Path | None = None,
               env: Mapping[str, str] | None = None, *, dry_run: bool = True,
               cache_dir: Path | None = None, base_images: tuple[str | None, str | None] = (None, None),
               ) -> BuildResult:
    """Compile `config_path` into `out`; see the module docstring. Raises VeroError on bad input.

    `env` holds the declared secrets (default: this process's environment); `dry_run=False`
    skips running the baseline on a few rows, not the other checks. `cache_dir` holds what
    checking datasets found and which build checks passed, by content (default:
    `default_cache_dir` of this process's environment).
    `base_images` (main, sidecar) are used where build.yaml names no base image.
    """
    env = os.environ if env is None else env
    cache_root = cache_dir if cache_dir is not None else default_cache_dir(os.environ)
    cache, passed = ValidationCache(cache_root), ValidationCache(cache_root, PASSED_DIR)
    loaded = load_build_config(config_path).with_base_images(*base_images)
    out = Path(out).absolute()
    check_output(out)
    inputs = resolve_inputs(loaded, runtime_pex or default_runtime_pex(env), out, env)
    config_sha256 = sha256_file(loaded.path)
    try:
        with staging_dir(out) as stage:
            writer = TreeWriter(stage)
            written = write_task(writer, inputs, cache)
            baseline = written.baseline
            checks = check_task(stage, inputs, written.dataset, dry_run=dry_run, entries=writer.entries,
                                commit=baseline.commit, cache=passed)
            seal = write_seal(writer, config_sha256)
            publish(stage, out)
    except OSError as exc:
        # An unwritable -o, a full disk, an input that vanished: the file system's own words.
        raise VeroError(f"the task could not be written: {exc.strerror or exc}", where=exc.filename or str(out),
                        fix="check that -o names a writable directory on a disk with free space, "
                            "and that the inputs are readable") from None
    return BuildResult(out=out, commit=baseline.commit, root_digest=seal.root, n_files=len(seal.files),
                       build_config_sha256=config_sha256, notes=checks.notes,
                       warnings=[*_config_warnings(loaded.config), *baseline.warnings, *checks.warnings,
                                 *(inputs.mode_b.warnings if inputs.mode_b is not None else ())])


def _config_warnings(config: BuildConfig) -> list[str]:
    """Settings that are valid but do nothing in this benchmark's mode."""
    if isinstance(config, ModeBBuild) and "max_concurrency" in config.model_fields_set:
        return ["max_concurrency has no effect in Mode B: the nested harbor runs harbor.n_concurrent "
                "trials at a time"]
    return []


def write_task(writer: TreeWriter, inputs: Inputs, cache: ValidationCache) -> WrittenTask:
    """Write every file of the task into `writer`'s (fresh) directory."""
    config = inputs.loaded.config
    where = str(inputs.loaded.path)
    # The big inputs copy on a second thread while this one exports the agent repo file by file.
    with writer.copying_alongside([(layout.PEX_OUT, inputs.runtime_pex, EXEC_MODE), *large_sidecar_copies(inputs)]):
        baseline = export_agent_repo(inputs.agent_repo, writer, where=f"{where}: agent_repo")
        _check_baseline_files(writer, config, where)
    sidecar = write_sidecar_data(writer, inputs, baseline.commit, cache)
    writer.write_text(layout.SERVE_JSON_OUT, canonical_json(sidecar.serve.model_dump(mode="json")))
    # The identity file is written last (it digests every other file), copied like the items.
    identity_item = layout.sidecar_item(CONTAINER.identity_dir)
    context = template_context(config, baseline.commit, [*sidecar.items, identity_item], baseline.files)
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
    write_identity(writer, config.name, config.mode, baseline.commit)
    return WrittenTask(baseline=baseline, dataset=sidecar.dataset)


def _baseline_path(writer: TreeWriter, rel: str) -> Path:
    return writer.root / layout.SEED_OUT / BASELINE_FILES / rel


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
                        fix=f"fix {field_name} or add the module to agent_repo")
    for index, rel in enumerate(config.read_only_paths):
        parts = PurePosixPath(rel).parts
        for depth in range(1, len(parts) + 1):
            path = _baseline_path(writer, "/".join(parts[:depth]))
            if path.is_symlink() or not path.exists():
                what = "is a symlink" if path.is_symlink() else "does not exist"
                prefix = "/".join(parts[:depth])
                raise VeroError(f"read_only_paths[{index}]: {prefix!r} {what} in the agent repo", where=where,
                                fix="list existing files or directories of the agent repo")
