"""Which Mode A build checks already passed, keyed by the content of everything they ran on.

The entrypoint import, the scorer call and the dry run (`checks`) run the baseline and the
scorer in subprocesses: most of a rebuild's time when nothing they read has changed. Their
outcome is a function of the baseline files (the baseline commit covers every path, mode and
byte), the baked scorer files, the runtime PEX, the dataset's content (its first rows and
sample ids), the runtime interpreter, the build.yaml fields the checks read, and the checks'
own rules (vero's version and `CHECKS_FORMAT`). `checks_key` digests exactly these, so any
change to one of them runs the checks again; an edit elsewhere (a description, a budget) does
not. Only a clean pass is stored: a failure stops the build, and a pass with warnings is run
again so that its warnings are said anew, naming this build's paths.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from pydantic import Field

from vero import __version__
from vero.compiler import layout
from vero.compiler.config import ModeABuild
from vero.compiler.probes import Interpreter
from vero.compiler.tree import Entry
from vero.container import CONTAINER
from vero.core.limits import CandidateLimits
from vero.fsutil import canonical_json
from vero.models import StrictModel

# Bump when what the checks do changes in a way vero's version does not show.
CHECKS_FORMAT = 1


class CheckInputs(StrictModel):
    """Everything the Mode A build checks depend on, by content."""

    format: int
    vero: str
    baseline_commit: str
    scorer: dict[str, str] = Field(description="baked scorer file -> 'mode sha256' (or 'link target')")
    runtime_pex_sha256: str
    dataset_content_key: str
    interpreter: dict[str, str | int] = Field(description="name, executable, and its size and mtime")
    entrypoint: str
    label_fields: list[str]
    target_split: str
    dry_run_split: str | None = Field(description="None: the dry run is switched off")
    candidate_limits: CandidateLimits
    sample_timeout: float


class PassedChecks(StrictModel):
    """A clean pass: what the checks said, under the key of what they ran on."""

    key: str = Field(pattern=r"^[0-9a-f]{64}$")
    notes: list[str]


def _file_state(entry: Entry) -> str:
    return f"link {entry.symlink}" if entry.symlink is not None else f"{entry.mode:o} {entry.sha256}"


def _interpreter(python: Interpreter) -> dict[str, str | int]:
    """The interpreter by path and by the stat of its executable: one upgraded in place (same
    path, new build) has another size or mtime."""
    info = os.stat(python.executable)
    return {"name": python.name, "executable": python.executable, "size": info.st_size,
            "mtime_ns": info.st_mtime_ns}


def checks_key(*, config: ModeABuild, entries: Mapping[str, Entry], commit: str, dataset_content_key: str,
               python: Interpreter, dry_run_split: str | None) -> str:
    """The cache key of the Mode A checks of a task whose written files are `entries`."""
    scorer_dir = layout.sidecar_out(CONTAINER.scorer_dir) + "/"
    inputs = CheckInputs(
        format=CHECKS_FORMAT,
        vero=__version__,
        baseline_commit=commit,
        scorer={rel[len(scorer_dir):]: _file_state(entry) for rel, entry in sorted(entries.items())
                if rel.startswith(scorer_dir)},
        runtime_pex_sha256=entries[layout.PEX_OUT].sha256,
        dataset_content_key=dataset_content_key,
        interpreter=_interpreter(python),
        entrypoint=config.entrypoint,
        label_fields=config.label_fields,
        target_split=config.targets[0].split,
        dry_run_split=dry_run_split,
        candidate_limits=config.limits.candidate,
        sample_timeout=config.sample_timeout,
    )
    return hashlib.sha256(canonical_json(inputs.model_dump(mode="json")).encode("utf-8")).hexdigest()
