"""Harbor's own task model (from the installed harbor CLI's venv) reads every compiled task as
intended: a valid task dir, no key it would silently drop, and the users and timeouts we set."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.benchmarks import fake_runtime_pex
from tests.support.tools import harbor_bin
from vero.compiler.compiler import build_task

# Runs inside harbor's interpreter: harbor models are pydantic with extra="ignore", so an
# unknown key would be dropped without a word; walk the TOML against the model fields.
PROBE = r"""
import json, sys, tomllib
from pathlib import Path
from pydantic import BaseModel
from harbor.models.task.config import TaskConfig
from harbor.models.task.task import Task

def unknown(data, model, prefix=""):
    found = []
    fields = {}
    for name, field in model.model_fields.items():
        fields[name] = field
        if field.alias:
            fields[field.alias] = field
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            found.append(prefix + key)
            continue
        sub = field.annotation
        for option in getattr(sub, "__args__", (sub,)):
            if isinstance(option, type) and issubclass(option, BaseModel) and isinstance(value, dict):
                found += unknown(value, option, prefix + key + ".")
                break
    return found

path = Path(sys.argv[1])
task = Task(path)
raw = tomllib.loads((path / "task.toml").read_text())
print(json.dumps({
    "valid": Task.is_valid_dir(path),
    "name": task.name,
    "unknown": unknown(raw, TaskConfig),
    "agent_user": task.config.agent.user,
    "agent_timeout": task.config.agent.timeout_sec,
    "verifier_user": task.config.verifier.user,
    "verifier_mode": str(getattr(task.config.verifier.environment_mode, "value", None)),
    "verifier_timeout": task.config.verifier.timeout_sec,
    "build_timeout": task.config.environment.build_timeout_sec,
    "instruction_starts": task.instruction[:40],
    "collect": [hook.model_dump(mode="json") for hook in task.config.verifier.collect],
    "artifacts": [a if isinstance(a, str) else a.model_dump(mode="json") for a in task.config.artifacts],
}))
"""


@pytest.mark.parametrize("name", ["foo", "bar"])
def test_harbor_reads_the_compiled_task(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    build_task(Path("tasks") / name / "build.yaml", out, fake_runtime_pex(tmp_path / "vero.pex"), {})
    python = harbor_bin().resolve().parent / "python"
    result = subprocess.run([str(python), "-c", PROBE, str(out)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["valid"] is True and seen["name"] == f"vero/{name}"
    assert seen["unknown"] == []
    assert seen["agent_user"] == "agent" and seen["verifier_user"] == "root"
    assert seen["verifier_mode"] == "shared"
    assert seen["agent_timeout"] > 0 and seen["verifier_timeout"] > 600 and seen["build_timeout"] >= 600
    assert seen["instruction_starts"].startswith("# Improve the agent")
    # The rescue archive: a token-free collect hook in the sidecar and the artifact that lands it,
    # as Harbor's own TaskConfig reads them (the hook runs as root; the source is absolute).
    assert seen["collect"] == [{
        "command": "vero harbor archive --config /opt/vero/sidecar/serve.json "
                   "--output /var/lib/vero/rescue/session-rescue.tar.gz",
        "service": "eval-sidecar", "timeout_sec": 300.0, "user": "root"}]
    assert seen["artifacts"] == [{"source": "/var/log/vero", "destination": "eval-sidecar", "exclude": [],
                                  "service": "eval-sidecar"},
                                 {"source": "/var/lib/vero/rescue/session-rescue.tar.gz",
                                  "destination": "session-rescue.tar.gz", "exclude": [],
                                  "service": "eval-sidecar"}]
