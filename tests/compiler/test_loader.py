"""build.yaml loading: strict fields, did-you-mean, mode checks, cross-field checks, messages that
name the field, the line and the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.benchmarks import mode_a_config, mode_b_config, write_yaml
from vero.compiler.config import ModeABuild, ModeBBuild
from vero.compiler.loader import load_build_config
from vero.errors import VeroError


def _load(tmp_path: Path, data: dict[str, Any]) -> ModeABuild | ModeBBuild:
    return load_build_config(write_yaml(tmp_path / "build.yaml", data)).config


def _error(tmp_path: Path, data: dict[str, Any] | str) -> str:
    path = tmp_path / "build.yaml"
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        write_yaml(path, data)
    with pytest.raises(VeroError) as info:
        load_build_config(path)
    message = info.value.render()
    assert str(path) in message, message
    return message


def test_valid_mode_a_and_b(tmp_path: Path) -> None:
    a = _load(tmp_path, mode_a_config())
    assert isinstance(a, ModeABuild)
    assert a.tier("test") == "no_access" and a.tier("unlisted") == "no_access"
    assert a.sidecar_image() == "vero/base:bookworm"
    b = _load(tmp_path, mode_b_config())
    assert isinstance(b, ModeBBuild)
    assert b.sidecar_image() == "vero/harbor-sidecar:trixie"


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    loaded = load_build_config(write_yaml(sub / "build.yaml", mode_a_config()))
    assert loaded.resolve("agent") == sub / "agent"
    assert loaded.resolve("../x") == tmp_path / "deep" / "x"


def test_unknown_top_level_key_suggests_the_closest(tmp_path: Path) -> None:
    message = _error(tmp_path, mode_a_config(selection_spilt="validation"))
    assert "selection_spilt" in message and "did you mean 'selection_split'" in message


def test_unknown_nested_key_suggests_the_closest(tmp_path: Path) -> None:
    config = mode_a_config()
    config["budgets"][1] = {"split": "validation", "total_run_budgt": 3}
    message = _error(tmp_path, config)
    assert "budgets[1].total_run_budgt" in message
    assert "did you mean 'total_run_budget'" in message
    assert "(line " in message


def test_unknown_key_inside_mode_b_harbor_section(tmp_path: Path) -> None:
    config = mode_b_config()
    config["harbor"]["n_attempt"] = 2
    message = _error(tmp_path, config)
    assert "harbor.n_attempt" in message and "did you mean 'n_attempts'" in message


def test_field_of_the_other_mode_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, mode_a_config(partition={"train": ["x"]}))
    assert "partition" in message and "Mode B field" in message and "mode: A" in message
    config = mode_b_config(scorer="s.py")
    message = _error(tmp_path, config)
    assert "scorer" in message and "Mode A field" in message


def test_missing_or_bad_mode(tmp_path: Path) -> None:
    config = mode_a_config()
    del config["mode"]
    assert "mode: missing" in _error(tmp_path, config)
    assert "must be A or B" in _error(tmp_path, mode_a_config(mode="C"))


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    message = _error(tmp_path, "mode: A\nname: [unclosed\nagent_repo: x\n")
    assert "malformed YAML" in message and "line" in message


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, "mode: A\nname: a/b\nname: c/d\n")
    assert "duplicate key 'name'" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in _error(tmp_path, "- mode: A\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VeroError, match="build config not found"):
        load_build_config(tmp_path / "nope.yaml")


def test_wrong_types_are_not_coerced(tmp_path: Path) -> None:
    message = _error(tmp_path, mode_a_config(submit_enabled="yes", k_anonymity_floor="5"))
    assert "submit_enabled" in message and "k_anonymity_floor" in message


def test_missing_required_field(tmp_path: Path) -> None:
    config = mode_a_config()
    del config["entrypoint"]
    assert "entrypoint" in _error(tmp_path, config) and "required" in _error(tmp_path, config)


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"selection_split": "test"}, "selection_split 'test' must be viewable or non_viewable"),
    ({"selection_split": "train", "budgets": [{"split": "validation", "total_run_budget": 1}]},
     "selection_split 'train' has no entry in budgets"),
    ({"budgets": [{"split": "validation", "total_run_budget": 1}, {"split": "test", "total_run_budget": 1}]},
     "split 'test' is no_access"),
    ({"budgets": [{"split": "validation", "total_run_budget": 1}, {"split": "extra", "total_run_budget": 1}]},
     "split 'extra' is no_access"),
    ({"budgets": [{"split": "validation"}]}, "set total_run_budget and/or total_sample_budget"),
    ({"reward_mode": "submit", "submit_enabled": False}, "requires submit_enabled"),
    ({"read_only_paths": ["/etc/passwd"]}, "must be relative"),
    ({"read_only_paths": ["a/../../b"]}, "must not contain '..'"),
    ({"read_only_paths": [".git/config"]}, "not the repo itself or .git"),
    ({"secrets": ["API-KEY"]}, "not a valid environment variable name"),
    ({"secrets": ["A", "A"]}, "listed more than once"),
    ({"splits": [{"split": "train", "access": "viewable"}, {"split": "train", "access": "no_access"}]},
     "splits: listed more than once"),
    ({"targets": [{"split": "test", "reward_key": "a"}, {"split": "test", "reward_key": "a"}]},
     "targets (reward_key): listed more than once"),
    ({"name": "no-slash"}, "name"),
    ({"base_image_main": "img@sha256:abc"}, "not a local Docker image reference"),
    ({"entrypoint": "solver.core"}, "entrypoint"),
    ({"timeout": 0}, "timeout"),
    ({"splits": [{"split": "train", "access": "secret"}]}, "splits[0].access"),
])
def test_mode_a_cross_field_checks(tmp_path: Path, overrides: dict[str, Any], expected: str) -> None:
    assert expected in _error(tmp_path, mode_a_config(**overrides))


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"partition": {"train": ["a"], "validation": ["a"], "test": ["b"]}},
     "partition (line 10): task 'a' is listed in split 'train' and 'validation'"),
    ({"partition": {"train": ["a"], "validation": ["b"]}}, "split(s) 'test' have no tasks in partition"),
    ({"partition": {"train": [], "validation": ["b"], "test": ["c"]}},
     "partition (line 10): split 'train' lists no tasks"),
    ({"inner_task": None}, "set inner_task"),
    ({"harbor": {"agent": "m:A", "task_source": "org/ds@1.0"}}, "not both"),
    ({"inner_task": None, "harbor": {"agent": "m:A", "task_source": "./local"}}, "not a registry dataset"),
    ({"targets": [{"split": "test", "reward_key": "r", "sample_ids": ["task-x"]}]},
     "sample_ids 'task-x' are not in partition.test"),
    ({"harbor": {"agent": "not a class"}}, "harbor.agent"),
])
def test_mode_b_cross_field_checks(tmp_path: Path, overrides: dict[str, Any], expected: str) -> None:
    assert expected in _error(tmp_path, mode_b_config(**overrides))


def test_nul_and_lone_surrogates_are_refused(tmp_path: Path) -> None:
    (tmp_path / "build.yaml").write_text('mode: A\ndescription: "a\\0b"\n', encoding="utf-8")
    assert "NUL" in _error(tmp_path, (tmp_path / "build.yaml").read_text())
    assert "surrogate" in _error(tmp_path, 'mode: A\nlabel_fields: ["\\ud800"]\n')


def test_many_errors_are_all_listed(tmp_path: Path) -> None:
    message = _error(tmp_path, mode_a_config(descripton="x", entrypont="y", sample_timeout=-1))
    assert "descripton" in message and "entrypont" in message and "sample_timeout" in message
