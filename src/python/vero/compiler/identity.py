"""Which task a sidecar runs: a digest over the compiled task, baked as a file of its own.

serve.json cannot carry the SEAL.json root: the seal covers serve.json. So the compiler, once
every other file is written, computes the *task digest* (the seal's root algorithm over every
file except SEAL.json and the identity file itself), writes it with the task's name, mode and
baseline to `environment/sidecar/identity/task.json`, and only then seals the whole directory
(identity file included). The sidecar reads that file to name its task in session archives;
`vero harbor verify DIR` recomputes the digest from SEAL.json, so an archive and a task
directory can be matched.
"""

from __future__ import annotations

from vero import __version__
from vero.compiler import layout
from vero.compiler.seal import SealedFile, root_digest, seal_from_entries
from vero.compiler.tree import TreeWriter
from vero.fsutil import canonical_json
from vero.session.model import TaskIdentity


def task_digest(files: dict[str, SealedFile]) -> str:
    """The task digest from a seal's file list (the identity file is left out)."""
    return root_digest({path: item for path, item in files.items() if path != layout.IDENTITY_OUT})


def write_identity(writer: TreeWriter, name: str, mode: str, commit: str) -> TaskIdentity:
    """Write the identity file over everything `writer` holds so far: call it last, before the seal."""
    files = seal_from_entries(writer.entries).files
    identity = TaskIdentity(name=name, mode="A" if mode == "A" else "B", task_digest=task_digest(files),
                            baseline_commit=commit, vero_version=__version__)
    writer.write_text(layout.IDENTITY_OUT, canonical_json(identity.model_dump(mode="json")))
    return identity
