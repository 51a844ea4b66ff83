"""The compiled task directory's own files (paths relative to it).

Where the images put them is `vero.container.CONTAINER`: everything the sidecar's image copies
from `environment/sidecar/` lands at the same relative path under `CONTAINER.sidecar_dir`.
"""

from __future__ import annotations

import posixpath

from vero.container import CONTAINER

TASK_TOML = "task.toml"
INSTRUCTION = "instruction.md"
ENVIRONMENT = "environment"
COMPOSE = f"{ENVIRONMENT}/docker-compose.yaml"
MAIN_DOCKERFILE = f"{ENVIRONMENT}/Dockerfile"
SEED_SH = f"{ENVIRONMENT}/main/seed.sh"
# The baseline twice: committed by seed.sh in main, restored by the sidecar (vero.baseline).
SEED_OUT = f"{ENVIRONMENT}/agent-seed"
BASELINE_OUT = f"{ENVIRONMENT}/agent-baseline"
SIDECAR_DOCKERFILE = f"{ENVIRONMENT}/sidecar/Dockerfile"
SIDECAR_OUT = f"{ENVIRONMENT}/sidecar"
PEX_OUT = f"{ENVIRONMENT}/bin/vero.pex"
WRAPPER_OUT = f"{ENVIRONMENT}/bin/vero"
TEST_SH = "tests/test.sh"
SOLUTION_DIR = "solution"
SOLVE_SH = "solution/solve.sh"


def sidecar_item(container_path: str) -> str:
    """The name under `CONTAINER.sidecar_dir` of a sidecar-only item the image copies there."""
    rel = posixpath.relpath(container_path, CONTAINER.sidecar_dir)
    if rel.startswith(".."):
        raise ValueError(f"{container_path} is not under {CONTAINER.sidecar_dir}")
    return rel


def sidecar_out(container_path: str) -> str:
    """The task file the sidecar's image copies to `container_path` (under `sidecar_dir`)."""
    return f"{SIDECAR_OUT}/{sidecar_item(container_path)}"


SERVE_JSON_OUT = sidecar_out(CONTAINER.serve_json)
IDENTITY_OUT = sidecar_out(CONTAINER.identity_file)
