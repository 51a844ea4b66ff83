"""`vero harbor describe`: what build tools must gather for a build, read through the strict loader
from build.yaml alone (the inputs need not exist yet: the Pants plugin runs it before it has them)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.support.benchmarks import mode_a_config, mode_b_config, write_yaml
from vero.cli import cli


def _describe(config: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["harbor", "describe", "--config", str(config)])
    return result.exit_code, result.stdout, result.stderr


def test_mode_a_names_every_input_and_secret(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "build.yaml", mode_a_config(secrets=["API_KEY", "OTHER"]))
    code, out, err = _describe(config)
    assert code == 0, err
    assert json.loads(out) == {
        "inputs": [{"field": "agent_repo", "path": "agent"}, {"field": "dataset", "path": "data"},
                   {"field": "scorer", "path": "scorer/scorer.py"}, {"field": "solution", "path": "solution"}],
        "secrets": ["API_KEY", "OTHER"],
    }


def test_mode_b_names_the_local_registry_but_not_a_registry_source(tmp_path: Path) -> None:
    local = write_yaml(tmp_path / "local.yaml", mode_b_config(agent_repo="../agents/b"))
    assert json.loads(_describe(local)[1]) == {
        "inputs": [{"field": "agent_repo", "path": "../agents/b"}, {"field": "inner_task", "path": "inner"}],
        "secrets": [],
    }
    registry = mode_b_config(inner_task=None, harbor={"agent": "solver.agent:Agent", "task_source": "bench@1.0",
                                                      "registry_path": "reg/registry.json"})
    described = json.loads(_describe(write_yaml(tmp_path / "registry.yaml", registry))[1])
    assert described["inputs"] == [{"field": "agent_repo", "path": "agent"},
                                   {"field": "harbor.registry_path", "path": "reg/registry.json"}]


def test_an_invalid_build_yaml_is_the_loaders_message(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "build.yaml", mode_a_config(datset="data"))
    code, out, err = _describe(config)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {config}: invalid build config:") and "did you mean 'dataset'" in err
    assert "Traceback" not in err
