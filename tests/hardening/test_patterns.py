"""`$`-anchored patterns must not let a trailing newline through.

Python's `re.match(r"^x$", "x\\n")` matches: `$` also matches before a final newline. The
models of the trusted core and the sidecar validate with pydantic's `pattern=`, which uses
Rust regex semantics (`$` is the very end); the runtime checks use `re.fullmatch`. These tests
pin both down with `"main\\n"`-style values, so a switch of engine or of call cannot reopen it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from tests.support.mode_a import make_mode_a_bench
from tests.support.sidecar import serve_config
from vero.baseline import BaselineInfo
from vero.compiler.config import BuildCommon
from vero.compiler.escaping import docker_path, image
from vero.core.benchmark import SPLIT_NAME_PATTERN, Budget, SplitAccess, Target
from vero.core.datasets import load_mode_a_dataset, make_partition
from vero.core.experiments import ExperimentDB
from vero.core.gitops import validate_ref
from vero.core.rejections import BadInput
from vero.errors import VeroError
from vero.modeb.config import HarborConfig, is_registry_source
from vero.modeb.runner.worktree import check_ref
from vero.serve.config import ModeAServe, ServeConfig, load_serve_config
from vero.session.model import CommitEntry

SHA = "0123456789abcdef" * 2 + "01234567"
# (model, the other fields, field under test, a valid value)
PATTERN_FIELDS: list[tuple[type[BaseModel], dict[str, Any], str, str]] = [
    (SplitAccess, {"access": "viewable"}, "split", "train"),
    (Budget, {"total_run_budget": 1}, "split", "train"),
    (Target, {"reward_key": "score"}, "split", "test"),
    (Target, {"split": "test"}, "reward_key", "score"),
    (ModeAServe, {"dataset_dir": "d", "scorer": "s.py"}, "entrypoint", "agent:solve"),
    (BaselineInfo, {}, "commit", SHA),
    (HarborConfig, {"task_source": "tasks"}, "agent", "pkg.agent:Agent"),
    (CommitEntry, {"roles": ["baseline"]}, "commit", SHA),
]
BAD_ENDS = ["\n", "\r\n", "\r", "\x00", " ", "\t", "\u2028"]


@pytest.mark.parametrize(("model", "others", "field", "valid"), PATTERN_FIELDS)
def test_pattern_fields_refuse_a_trailing_newline(model: type[BaseModel], others: dict[str, Any], field: str,
                                                  valid: str) -> None:
    assert getattr(model.model_validate({**others, field: valid}), field) == valid
    for end in BAD_ENDS:
        for value in (valid + end, end + valid):
            with pytest.raises(ValidationError, match="should match pattern"):
                model.model_validate({**others, field: value})


def test_serve_json_with_a_newline_in_the_baseline_commit_is_refused(tmp_path: Path) -> None:
    bench = make_mode_a_bench(tmp_path / "bench")
    config = serve_config(tmp_path, bench, baseline_commit=bench.baseline_commit + "\n")
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(config))
    with pytest.raises(VeroError, match="invalid serve config at baseline_commit"):
        load_serve_config(path)
    assert ServeConfig.model_validate({**config, "baseline_commit": bench.baseline_commit})


def test_runtime_checks_use_fullmatch(tmp_path: Path) -> None:
    for ref in ("main\n", SHA + "\n", "main\r", "\nmain", "main\x00"):
        with pytest.raises(BadInput, match="invalid commit"):
            validate_ref(ref)
    assert validate_ref("main") == "main" and validate_ref(SHA) == SHA
    with pytest.raises(VeroError, match="invalid experiment id"):
        ExperimentDB(tmp_path).get("0000000000000-000000000000\n")
    with pytest.raises(VeroError, match="invalid split name"):
        make_partition({"train\n": ["a"]})
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "train\n.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(VeroError, match="invalid split name"):
        load_mode_a_dataset(dataset)


def _printable_name(text: str) -> bool:
    return all(unicodedata.category(ch)[0] not in "CZ" for ch in text)


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text(st.one_of(st.sampled_from("aZ09_.-:\n\r\x00 \t/"), st.characters()), max_size=12))
def test_accepted_names_never_hold_control_characters_or_blanks(text: str) -> None:
    for model, others, field, _ in PATTERN_FIELDS:
        try:
            model.model_validate({**others, field: text})
        except ValidationError:
            continue
        assert _printable_name(text), (model.__name__, field, text)
    # Split names: pydantic's engine and Python's fullmatch agree exactly (ASCII classes only).
    try:
        SplitAccess(split=text, access="viewable")
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == bool(re.fullmatch(SPLIT_NAME_PATTERN, text))


@pytest.mark.parametrize("check", [
    lambda value: check_ref(value),
    lambda value: image(value),
    lambda value: docker_path(value),
])
def test_runtime_checks_of_compiler_and_runner_refuse_a_trailing_newline(check: Any) -> None:
    check("main")
    with pytest.raises((VeroError, ValueError)):
        check("main\n")


def test_registry_sources_and_secret_names_refuse_a_trailing_newline() -> None:
    assert is_registry_source("org/name@1.0")
    assert not is_registry_source("org/name@1.0\n")
    assert BuildCommon._identifiers(["API_KEY"]) == ["API_KEY"]
    with pytest.raises(ValueError):
        BuildCommon._identifiers(["API_KEY\n"])
