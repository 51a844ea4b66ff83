"""The Mode A build checks run once per content: a rebuild of unchanged inputs reuses a clean
pass, and a change to anything the checks run on runs them again."""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.benchmarks import mode_a_config, write_mode_a, write_yaml
from vero.compiler import checks as checks_module
from vero.compiler import layout
from vero.compiler.check_cache import checks_key
from vero.compiler.compiler import build_task
from vero.compiler.config import ModeABuild
from vero.compiler.probes import Interpreter
from vero.compiler.seal import load_seal
from vero.compiler.tree import Entry
from vero.errors import VeroError


@pytest.fixture()
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The stages whose checks really ran, build after build."""
    ran: list[Path] = []
    real = checks_module._run_mode_a_checks

    def spy(stage: Path, *args: Any) -> None:
        ran.append(stage)
        real(stage, *args)
    monkeypatch.setattr(checks_module, "_run_mode_a_checks", spy)
    return ran


def _build(config: Path, out: Path, pex: Path, cache: Path, **options: Any) -> list[str]:
    return build_task(config, out, pex, {}, cache_dir=cache, **options).notes


def test_an_unchanged_rebuild_reuses_the_pass_and_builds_the_same_task(tmp_path: Path, pex: Path,
                                                                       runs: list[Path]) -> None:
    config = write_mode_a(tmp_path / "bench")
    cache = tmp_path / "cache"
    first = _build(config, tmp_path / "first", pex, cache)
    second = _build(config, tmp_path / "second", pex, cache)
    assert len(runs) == 1 and second == first
    assert [note.split(":")[0] for note in first] == ["entrypoint solver.core", "scorer imports with the runtime PEX "
                                                      "under python3.11 and scores row 'test-0' of split 'test' "
                                                      "with its own label", "dry run"]
    assert load_seal(tmp_path / "first").root == load_seal(tmp_path / "second").root
    # build.yaml fields the checks do not read leave the pass valid.
    write_yaml(config, mode_a_config(description="edited", budgets=[{"split": "train", "total_run_budget": 4},
                                                                           {"split": "validation",
                                                                            "total_run_budget": 2}]))
    _build(config, tmp_path / "third", pex, cache)
    assert len(runs) == 1
    # Without a cache dir every build runs them.
    build_task(config, tmp_path / "fourth", pex, {}, cache_dir=None)
    assert len(runs) == 2


def _edit_agent(bench: Path) -> None:
    (bench / "agent/solver/core.py").write_text("def solve(row):\n    return '0'\n")


def _make_readme_executable(bench: Path) -> None:
    (bench / "agent/README.md").chmod(0o755)


def _edit_scorer(bench: Path) -> None:
    (bench / "scorer/scorer.py").write_text("def score(output, row):\n    return 1.0 if output == row['answer'] "
                                            "else 0.0\n")


def _edit_first_row(bench: Path) -> None:
    train = bench / "data/train.jsonl"
    train.write_text(train.read_text().replace('"q0"', '"q0 edited"', 1))


def _edit_a_row_the_checks_never_see(bench: Path) -> None:
    # The key is the dataset's content, not just the rows the checks run on.
    train = bench / "data/train.jsonl"
    train.write_text(train.read_text().replace('"q7"', '"q7 edited"', 1))


def _other_runtime_pex(bench: Path) -> None:
    with zipfile.ZipFile(bench.parent / "pex" / "vero.pex", "a") as archive:
        archive.writestr("extra.txt", "another build of the runtime PEX")


def _config(**overrides: Any) -> Callable[[Path], None]:
    def edit(bench: Path) -> None:
        write_yaml(bench / "build.yaml", mode_a_config(**overrides))
    edit.__name__ = "_config_" + "_".join(overrides)
    return edit


CHANGES = [_edit_agent, _make_readme_executable, _edit_scorer, _edit_first_row, _edit_a_row_the_checks_never_see,
           _other_runtime_pex, _config(entrypoint="solver:solve"), _config(label_fields=[]),
           _config(targets=[{"split": "validation", "reward_key": "accuracy"}]),
           _config(splits=[{"split": "train", "access": "non_viewable"},
                           {"split": "validation", "access": "viewable"},
                           {"split": "test", "access": "no_access"}]),
           _config(sample_timeout=30.0), _config(limits={"candidate": {"memory_mb": 2048}})]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__.strip("_") for c in CHANGES])
def test_a_change_to_what_the_checks_run_on_runs_them_again(tmp_path: Path, pex: Path, runs: list[Path],
                                                             change: Callable[[Path], None]) -> None:
    bench = tmp_path / "bench"
    config = write_mode_a(bench)
    (bench / "agent/solver/__init__.py").write_text("from solver.core import solve\n")
    cache = tmp_path / "cache"
    _build(config, tmp_path / "out", pex, cache)
    change(bench)
    _build(config, tmp_path / "out", pex, cache)
    assert len(runs) == 2
    _build(config, tmp_path / "out", pex, cache)
    assert len(runs) == 2, "the new content's pass is cached in turn"


def test_switching_the_dry_run_off_or_on_runs_the_checks_again(tmp_path: Path, pex: Path, runs: list[Path]) -> None:
    config = write_mode_a(tmp_path / "bench")
    cache = tmp_path / "cache"
    with_run = _build(config, tmp_path / "out", pex, cache)
    skipped = build_task(config, tmp_path / "out", pex, {}, cache_dir=cache, dry_run=False)
    assert len(runs) == 2 and skipped.notes == with_run[:2]
    again = build_task(config, tmp_path / "out", pex, {}, cache_dir=cache, dry_run=False)
    assert len(runs) == 2 and again.warnings == skipped.warnings and any("dry run skipped" in w for w in again.warnings)


def test_a_failing_check_is_not_cached_and_fails_again_with_the_same_message(tmp_path: Path, pex: Path,
                                                                           runs: list[Path]) -> None:
    bench = tmp_path / "bench"
    config = write_mode_a(bench)
    cache = tmp_path / "cache"
    (bench / "agent/solver/core.py").write_text("import not_installed_anywhere\n\ndef solve(row):\n    return ''\n")
    messages = []
    for _ in range(2):
        with pytest.raises(VeroError, match="No module named 'not_installed_anywhere'") as info:
            _build(config, tmp_path / "out", pex, cache)
        messages.append((str(info.value), info.value.where))
    assert len(runs) == 2 and messages[0] == messages[1]
    assert not list((cache / "passed").glob("*.json"))


def test_a_pass_with_warnings_runs_again_to_say_them(tmp_path: Path, pex: Path, runs: list[Path]) -> None:
    bench = tmp_path / "bench"
    config = write_mode_a(bench)
    cache = tmp_path / "cache"
    (bench / "scorer/scorer.py").write_text("def score(output, row):\n    return 0.0\n")
    first = build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    second = build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    assert len(runs) == 2 and first.warnings == second.warnings
    assert any("scores 0 with its own label" in warning for warning in second.warnings)


def test_a_damaged_or_foreign_entry_is_a_miss(tmp_path: Path, pex: Path, runs: list[Path]) -> None:
    config = write_mode_a(tmp_path / "bench")
    cache = tmp_path / "cache"
    notes = _build(config, tmp_path / "out", pex, cache)
    [entry] = (cache / "passed").glob("*.json")
    entry.write_text("{not json")
    assert _build(config, tmp_path / "out", pex, cache) == notes and len(runs) == 2
    entry.write_text(entry.read_text().replace(entry.stem, "0" * 64))
    assert _build(config, tmp_path / "out", pex, cache) == notes and len(runs) == 3


def test_the_runtime_interpreter_is_part_of_the_key(tmp_path: Path) -> None:
    config = ModeABuild.model_validate({**mode_a_config(), "agent_repo": "agent"})
    entries = {layout.PEX_OUT: Entry(0o755, 1, "a" * 64)}
    python = Interpreter("python3.11", str(Path(sys.executable).resolve()))
    other = tmp_path / "python3.11"
    other.write_bytes(Path(python.executable).read_bytes()[:100])

    def key(interpreter: Interpreter) -> str:
        return checks_key(config=config, entries=entries, commit="c" * 40, dataset_content_key="d" * 64,
                          python=interpreter, dry_run_split="train")
    assert key(python) == key(python)
    assert key(python) != key(Interpreter("python3.11", str(other)))


def test_vero_cache_dir_names_the_cache_relative_to_the_working_directory(tmp_path: Path, pex: Path,
                                                                          runs: list[Path],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # As the Pants plugin runs the compiler: a named cache mounted at a path inside the sandbox.
    config = write_mode_a(tmp_path / "bench")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VERO_CACHE_DIR", ".cache/vero_validation")
    build_task(config, tmp_path / "out", pex, {})
    build_task(config, tmp_path / "out", pex, {})
    assert len(runs) == 1
    assert len(list((tmp_path / ".cache/vero_validation/passed").glob("*.json"))) == 1
    assert len(list((tmp_path / ".cache/vero_validation/checked").glob("*.json"))) == 1
