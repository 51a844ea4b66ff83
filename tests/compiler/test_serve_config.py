"""serve.json from build.yaml: the evaluation policy is declared once and copied whole."""

from __future__ import annotations

from pathlib import Path

from tests.support.benchmarks import mode_a_config, write_mode_a, write_yaml
from vero.compiler.config import BuildCommon, ModeABuild
from vero.compiler.loader import load_build_config
from vero.compiler.sidecar_data import serve_config_for
from vero.core.policy import EvaluationPolicy, policy_fields
from vero.serve.config import ModeAServe, ServeConfig

COMMIT = "0123456789abcdef" * 2 + "01234567"
# A value other than the default for every policy field that has one (submit mode needs submissions on).
NON_DEFAULTS = {
    "reward_mode": "submit", "score_baseline": True, "read_only_paths": ["tests"],
    "secrets": ["API_KEY"], "timeout": 321.5, "max_concurrency": 7, "k_anonymity_floor": 2,
    "limits": {"main": {"memory_mb": 3000}},
}


def test_every_policy_field_reaches_serve_json(tmp_path: Path) -> None:
    root = tmp_path / "bench"
    write_mode_a(root)
    build = write_yaml(root / "build.yaml", mode_a_config(**NON_DEFAULTS))
    config = load_build_config(build).config
    assert isinstance(config, ModeABuild)
    section = ModeAServe(dataset_dir="/d", entrypoint=config.entrypoint, scorer="/s.py")
    serve = serve_config_for(config, COMMIT, section)
    assert policy_fields(serve) == policy_fields(config)
    assert set(NON_DEFAULTS) <= set(EvaluationPolicy.model_fields)
    for name in NON_DEFAULTS:
        assert getattr(serve, name) != EvaluationPolicy.model_fields[name].get_default(call_default_factory=True)
    assert (serve.mode, serve.name, serve.baseline_commit, serve.mode_a, serve.mode_b) == (
        "A", config.name, COMMIT, section, None)
    # What the compiler writes is what the sidecar reads back.
    assert ServeConfig.model_validate_json(serve.model_dump_json()) == serve


def test_build_yaml_and_serve_json_share_one_declaration_per_field() -> None:
    for name, field in EvaluationPolicy.model_fields.items():
        assert repr(BuildCommon.model_fields[name]) == repr(field), name
        assert repr(ServeConfig.model_fields[name]) == repr(field), name
