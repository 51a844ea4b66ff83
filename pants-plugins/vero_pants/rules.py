"""Every rule of the harbor_task backend, gathered as pants.backend.docker gathers its own."""

from __future__ import annotations

from typing import Any, Iterable

from vero_pants.goals import package_harbor_task
from vero_pants.util_rules import dependencies, harbor_compiler, harbor_task_inputs


def rules() -> Iterable[Any]:
    return [
        *dependencies.rules(),
        *harbor_compiler.rules(),
        *harbor_task_inputs.rules(),
        *package_harbor_task.rules(),
    ]
