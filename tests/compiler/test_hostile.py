"""Hostile values in every string field: each output format parses with the value intact, and
nothing is ever executed, neither on the host at build time nor in the container at start."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml

from tests.support.benchmarks import (
    fake_runtime_pex,
    mode_a_config,
    mode_b_config,
    write_agent,
    write_inner_task,
    write_mode_a,
    write_yaml,
)
from tests.support.compose import compose_config
from tests.support.markdown import inline_texts
from tests.support.tools import require_base_image, require_docker
from vero.compiler.compiler import build_task
from vero.compiler.seal import verify
from vero.errors import VeroError

RUNTIME_PEX = Path("src.python.vero/vero.pex")  # runtime_package_dependencies, relative to the cwd
PWN = f"/tmp/vero-pwn-{uuid.uuid4().hex[:12]}"


def hostile(tag: str, slash: bool = True) -> str:
    """Every character class that breaks some format, plus two ways to run `touch PWN`."""
    value = (f"{tag} \"dq\" 'sq' `touch {PWN}` $(touch {PWN}) ${{X}} $$ {{{{ 7*7 }}}} {{% raw %}} ]] # \\ "
             f"ünï 🚀 <b>&amp;</b> *em* [l](u) | ~~\nsecond line\t| ${{X:?boom}}")
    return value if slash else value.replace("/", "_")  # a file or directory name


@pytest.fixture(autouse=True)
def no_pwn() -> Iterator[None]:
    yield
    assert not os.path.exists(PWN) and not os.path.exists(PWN.replace("/", "_")), "a hostile value ran"


def _hostile_mode_a(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    root = tmp_path / hostile("bench", slash=False)
    config = write_mode_a(root)  # a valid layout, then every free string made hostile
    agent = root / hostile("agent", slash=False)
    (root / "agent").rename(agent)
    read_only = hostile("ro")
    (agent / read_only).parent.mkdir(parents=True)
    (agent / read_only).write_text("locked\n")
    data = root / hostile("data", slash=False)
    data.mkdir()
    label = hostile("label")
    sample_id = hostile("id")
    for split in ("train", "validation", "test"):
        rows = [{"id": sample_id if i == 0 else f"{split}-{i}", "question": "q", label: "a"}
                for i in range(5)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    scorer = root / (hostile("scorer", slash=False) + ".py")
    (root / "scorer/scorer.py").rename(scorer)
    # The build calls the scorer on a row with its own label: it must read that label.
    scorer.write_text(f"LABEL = {label!r}\n\n\ndef score(output, row):\n    return float(output == row[LABEL])\n",
                      encoding="utf-8")
    solution = root / hostile("solution", slash=False)
    (root / "solution").rename(solution)
    values = {
        "description": hostile("description"),
        "agent_repo": agent.name,
        "dataset": data.name,
        "scorer": scorer.name,
        "solution": solution.name,
        "label_fields": [label],
        "read_only_paths": [read_only],
        "targets": [{"split": "test", "reward_key": "accuracy", "sample_ids": [sample_id]}],
        "secrets": ["HOSTILE_SECRET"],
    }
    write_yaml(config, mode_a_config(**values))
    return config, values


def test_hostile_mode_a_values_survive_every_format(tmp_path: Path) -> None:
    config, values = _hostile_mode_a(tmp_path)
    out = tmp_path / "out"
    secret_value = hostile("secret-value")
    build_task(config, out, fake_runtime_pex(tmp_path / "vero.pex"), {"HOSTILE_SECRET": secret_value})
    description = values["description"]
    # task.toml
    task = tomllib.loads((out / "task.toml").read_text(encoding="utf-8"))
    assert task["task"]["description"] == description
    # docker-compose.yaml, as YAML and as Compose itself reads it (with its $ interpolation)
    raw = yaml.safe_load((out / "environment/docker-compose.yaml").read_text(encoding="utf-8"))
    assert raw["services"]["main"]["labels"]["io.vero.description"].replace("$$", "$") == description
    require_docker()
    merged = compose_config(out, {"HOSTILE_SECRET": secret_value})
    # `config` prints literal dollars escaped again ($$): the description was never interpolated
    # (its `${X:?boom}` would have failed the command), the secret reference was.
    assert merged["services"]["main"]["labels"]["io.vero.description"] == description.replace("$", "$$")
    sidecar_env = merged["services"]["eval-sidecar"]["environment"]
    assert sidecar_env["HOSTILE_SECRET"] == secret_value.replace("$", "$$")
    assert "HOSTILE_SECRET" not in (merged["services"]["main"].get("environment") or {})
    # serve.json
    serve = json.loads((out / "environment/sidecar/serve.json").read_text(encoding="utf-8"))
    assert serve["mode_a"]["label_fields"] == values["label_fields"]
    assert serve["targets"][0]["sample_ids"] == values["targets"][0]["sample_ids"]
    assert serve["mode_a"]["scorer"] == "/opt/vero/sidecar/scorer/" + values["scorer"]
    # instruction.md: shown literally, no markup
    texts = inline_texts((out / "instruction.md").read_text(encoding="utf-8"))
    for value in (description, values["label_fields"][0], values["read_only_paths"][0]):
        assert value in texts, value
    # shell scripts parse, and the seal covers the hostile file names
    for rel in ("environment/main/seed.sh", "tests/test.sh", "solution/solve.sh"):
        subprocess.run(["bash", "-n", str(out / rel)], check=True)
    assert (out / "environment/agent-seed/files" / values["read_only_paths"][0]).is_file()
    assert verify(out).ok


def test_hostile_mode_b_values_survive(tmp_path: Path) -> None:
    root = tmp_path / "bench"
    root.mkdir()
    write_agent(root / "agent", {"solver/__init__.py": "", "solver/agent.py": "class Agent:\n    pass\n"})
    names = {split: hostile(split, slash=False) for split in ("train", "validation", "test")}
    for name in names.values():
        write_inner_task(root / "inner" / name, None)
    harbor = {"agent": "solver.agent:Agent", "model": hostile("model"), "extra_args": [hostile("arg"), "--x"],
              "harbor_command": ["harbor", hostile("cmd")], "reward_key": hostile("key")}
    config = write_yaml(root / "build.yaml", mode_b_config(
        description=hostile("description"), harbor=harbor,
        partition={split: [name] for split, name in names.items()}))
    out = tmp_path / "out"
    build_task(config, out, fake_runtime_pex(tmp_path / "vero.pex"), {})
    serve = json.loads((out / "environment/sidecar/serve.json").read_text(encoding="utf-8"))
    assert serve["mode_b"]["partition"] == {split: [name] for split, name in names.items()}
    for key in ("model", "extra_args", "harbor_command", "reward_key"):
        assert serve["mode_b"]["harbor"][key] == harbor[key]
    baked = sorted(p.name for p in (out / "environment/sidecar/inner_tasks").iterdir())
    assert baked == sorted(names.values())
    assert tomllib.loads((out / "task.toml").read_text())["task"]["description"] == hostile("description")
    assert hostile("description") in inline_texts((out / "instruction.md").read_text())
    assert verify(out).ok


@pytest.mark.parametrize("field", ["name", "splits", "reward_key", "entrypoint", "secrets", "base_image_main",
                                   "base_image_sidecar", "harbor.agent", "harbor.environment"])
def test_restricted_fields_refuse_hostile_values(tmp_path: Path, field: str) -> None:
    value = hostile(field)
    mode_b = field.startswith("harbor.")
    config = mode_b_config() if mode_b else mode_a_config()
    if field == "splits":
        config["splits"] = [{"split": value, "access": "viewable"}] + config["splits"]
    elif field == "reward_key":
        config["targets"] = [{"split": "test", "reward_key": value}]
    elif field == "secrets":
        config["secrets"] = [value]
    elif mode_b:
        config["harbor"][field.split(".")[1]] = value
    else:
        config[field] = value
    path = write_yaml(tmp_path / "build.yaml", config)
    with pytest.raises(VeroError) as info:
        build_task(path, tmp_path / "out", fake_runtime_pex(tmp_path / "vero.pex"), {})
    message = info.value.render()
    assert field.split(".")[-1] in message and "invalid build config" in message
    assert not (tmp_path / "out").exists()


def test_hostile_seed_runs_in_a_real_container(tmp_path: Path) -> None:
    """The main image built from the hostile task seeds the repo, locks the hostile read-only path
    and never runs the embedded commands."""
    image = require_base_image()
    assert image
    config, values = _hostile_mode_a(tmp_path)
    out = tmp_path / "out"
    build_task(config, out, RUNTIME_PEX.absolute(), {"HOSTILE_SECRET": "x"})
    tag = f"vero-test-hostile-main:{uuid.uuid4().hex[:10]}"
    name = f"vero-test-hostile-{uuid.uuid4().hex[:10]}"
    try:
        subprocess.run(["docker", "build", "-q", "-t", tag, str(out / "environment")], check=True,
                       capture_output=True, timeout=600)
        subprocess.run(["docker", "run", "-d", "--name", name, tag, "/opt/vero/main/seed.sh"], check=True,
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "exec", name, "test", "-f", "/run/vero/seeded"],
                             capture_output=True, check=False).returncode != 0:
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name],
                                   capture_output=True, text=True, check=True).stdout.strip()
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
            assert state == "true" and time.monotonic() < deadline, logs.stdout + logs.stderr
            time.sleep(0.5)
        ro = "/work/agent/" + values["read_only_paths"][0]
        script = (f'stat -c "%U %a" "$RO"; test -e {PWN} && echo PWNED; '
                  f'runuser -u agent -- sh -c \'echo x >> "$RO"\' 2>/dev/null && echo WRITABLE; '
                  "cd /work/agent && runuser -u agent -- git status --porcelain | wc -l")
        result = subprocess.run(["docker", "exec", "-e", f"RO={ro}", name, "bash", "-c", script],
                                capture_output=True, text=True, check=True)
        lines = result.stdout.splitlines()
        assert lines[0] == "root 444", result.stdout
        assert "PWNED" not in result.stdout and "WRITABLE" not in result.stdout
        assert lines[-1] == "0", "the seeded repo is clean: the hostile file is committed as-is"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
