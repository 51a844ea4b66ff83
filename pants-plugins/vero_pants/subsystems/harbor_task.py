"""`[harbor-tasks]`: repository-wide defaults of `harbor_task` targets. (Pants refuses a subsystem
scope that equals a target alias, hence not `[harbor-task]`.)"""

from __future__ import annotations

from pants.option.option_types import StrOption
from pants.option.subsystem import Subsystem

DEFAULT_COMPILER = "//src/python/vero:vero"


class HarborTaskSubsystem(Subsystem):
    options_scope = "harbor-tasks"
    help = "Defaults of `harbor_task` targets (a target's own field wins)."

    compiler = StrOption(
        default=DEFAULT_COMPILER,
        help=(
            "Address of the `pex_binary` that provides `vero harbor build` and `vero harbor describe`, "
            "for targets that do not set `compiler`. The same PEX is baked into the task's images as "
            "the vero runtime."
        ),
    )
