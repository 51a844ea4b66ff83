"""The `harbor_task` target: a benchmark's build.yaml plus the files it compiles from."""

from __future__ import annotations

from pants.engine.target import (
    COMMON_TARGET_FIELDS,
    BoolField,
    Dependencies,
    SingleSourceField,
    StringField,
    Target,
)

DEFAULT_COMPILER = "//src/python/vero:vero"
ARCHIVE_FORMATS = ("tar", "tar.gz", "zip")


class HarborTaskConfigField(SingleSourceField):
    alias = "config"
    required = False
    default = "build.yaml"
    expected_file_extensions = (".yaml", ".yml")
    help = (
        "The benchmark's build config (vero's BuildConfig). Paths in it (`agent_repo`, `dataset`, "
        "`scorer`, `inner_task`, `solution`, a local `harbor.task_source`, `harbor.registry_path`) are "
        "relative to its directory and must be provided by the target's dependencies; their owners "
        "are inferred."
    )


class HarborTaskDependenciesField(Dependencies):
    help = (
        "`files`/`resources` targets holding the inputs named in the build config. Owners of those "
        "paths, and the compiler, are inferred."
    )


class HarborTaskOutputNameField(StringField):
    alias = "output_name"
    help = "Directory name of the compiled task under `dist/<path to BUILD>/` (default: the target name)."


class HarborTaskArchiveFormatField(StringField):
    alias = "archive_format"
    valid_choices = ARCHIVE_FORMATS
    help = "Also write the compiled task as one archive `dist/<path>/<output_name>.<format>`."


class HarborTaskCompilerField(StringField):
    alias = "compiler"
    default = DEFAULT_COMPILER
    value: str
    help = (
        "Address of the `pex_binary` that provides `vero harbor build`. The same PEX is baked into "
        "the task's images as the vero runtime."
    )


class HarborTaskDryRunField(BoolField):
    alias = "dry_run"
    default = True
    help = (
        "Mode A: run the baseline on a few rows at build time (`vero harbor build --dry-run`); a baseline "
        "that fails on every one of them fails the build. `False` skips that run, and says so; the checks "
        "of the entrypoint and the scorer run either way."
    )


class HarborTaskTarget(Target):
    alias = "harbor_task"
    core_fields = (
        *COMMON_TARGET_FIELDS,
        HarborTaskConfigField,
        HarborTaskDependenciesField,
        HarborTaskOutputNameField,
        HarborTaskArchiveFormatField,
        HarborTaskCompilerField,
        HarborTaskDryRunField,
    )
    help = (
        "A sealed Harbor task compiled from an optimization benchmark. `package` writes "
        "`dist/<path>/<output_name>/`; other targets (tests, archives) may depend on it to receive the "
        "compiled files at that same relative path, `dist/<path>/<output_name>/`, in their sandbox."
    )
