"""`[harbor-tasks]`: repository-wide defaults of `harbor_task` targets. (Pants refuses a subsystem
scope that equals a target alias, hence not `[harbor-task]`.)"""

from __future__ import annotations

from pants.option.option_types import StrOption
from pants.option.subsystem import Subsystem

DEFAULT_COMPILER = "//src/python/vero:vero"


class HarborTaskSubsystem(Subsystem):
    options_scope = "harbor-tasks"
    help = "Defaults of `harbor_task` targets (a target's own field wins)."

    base_image_main = StrOption(
        default=None,
        help=(
            "Base image of the `main` service for every harbor_task whose build.yaml sets no "
            "`base_image_main` (a local Docker image, e.g. `corp/base:bookworm`)."
        ),
    )
    base_image_sidecar = StrOption(
        default=None,
        help="Base image of the eval sidecar for every harbor_task whose build.yaml sets no `base_image_sidecar`.",
    )

    def base_image_args(self) -> tuple[str, ...]:
        """The `vero harbor build` flags that pass these defaults on (build.yaml's own fields win)."""
        args: list[str] = []
        flags = (("--base-image-main", self.base_image_main), ("--base-image-sidecar", self.base_image_sidecar))
        for flag, image in flags:
            if image:
                args += [flag, image]
        return tuple(args)

    compiler = StrOption(
        default=DEFAULT_COMPILER,
        help=(
            "Address of the `pex_binary` that provides `vero harbor build` and `vero harbor describe`, "
            "for targets that do not set `compiler`. The same PEX is baked into the task's images as "
            "the vero runtime."
        ),
    )
