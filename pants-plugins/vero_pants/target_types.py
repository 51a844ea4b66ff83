"""The `harbor_task` target: a benchmark's build.yaml plus the files it compiles from."""

from __future__ import annotations

import os

from pants.core.goals.package import OutputPathField
from pants.engine.target import (
    COMMON_TARGET_FIELDS,
    AsyncFieldMixin,
    BoolField,
    Dependencies,
    SingleSourceField,
    StringField,
    Target,
)

ARCHIVE_FORMATS = ("tar", "tar.gz", "zip")


class HarborTaskConfigField(SingleSourceField):
    alias = "config"
    required = False
    default = "build.yaml"
    expected_file_extensions = (".yaml", ".yml")
    help = (
        "The benchmark's build config (vero's BuildConfig). The inputs it names (`agent_repo`, "
        "`dataset`, `scorer`, `inner_task`, `solution`, `harbor.registry_path`), relative to its "
        "directory, must be provided by the target's dependencies; their owners are inferred."
    )


class HarborTaskDependenciesField(Dependencies):
    help = (
        "`files`/`resources` targets holding the inputs named in the build config. Owners of those "
        "paths, and the compiler, are inferred."
    )


class HarborTaskOutputPathField(OutputPathField):
    help = (
        "Where `package` writes the compiled task directory, under `dist/` (default: the path of "
        "the BUILD file, then the target name: `harbor_task(name=\"foo\")` in `tasks/BUILD` gives "
        "`tasks/foo`)."
    )

    def value_or_default(self, *, file_ending: str | None = None) -> str:
        """The task directory relative to dist/ (a directory: it has no file ending)."""
        return self.value or os.path.join(self.address.spec_path, self.address.target_name)


class HarborTaskArchiveFormatField(StringField):
    alias = "archive_format"
    valid_choices = ARCHIVE_FORMATS
    help = (
        "Also write the compiled task as one archive `dist/<output_path>.<format>` holding "
        "`<last part of output_path>/...`."
    )


class HarborTaskCompilerField(StringField, AsyncFieldMixin):
    alias = "compiler"
    help = (
        "Address of the `pex_binary` that provides `vero harbor build` (default: `[harbor-tasks].compiler`, "
        "//src/python/vero:vero). The same PEX is baked into the task's images as the vero runtime."
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
        HarborTaskOutputPathField,
        HarborTaskArchiveFormatField,
        HarborTaskCompilerField,
        HarborTaskDryRunField,
    )
    help = (
        "A sealed Harbor task compiled from an optimization benchmark. `package` writes "
        "`dist/<output_path>/`; other targets (tests, archives) may depend on it to receive the "
        "compiled files at that same relative path, `dist/<output_path>/`, in their sandbox."
    )
