"""The dataset is read once per build and checked only when its content is new to the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.benchmarks import mode_a_config, write_mode_a, write_yaml
from vero.compiler import dataset as dataset_module
from vero.compiler.compiler import build_task
from vero.compiler.seal import load_seal
from vero.errors import VeroError


@pytest.fixture()
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories whose split files were parsed, build after build."""
    parsed: list[Path] = []
    real = dataset_module.validate_split_files

    def spy(directory: Path, files: list[str], key: str, shown: Path) -> dataset_module.CheckedDataset:
        parsed.append(directory)
        return real(directory, files, key, shown)
    monkeypatch.setattr(dataset_module, "validate_split_files", spy)
    return parsed


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "checked").glob("*.json"))


def test_an_unchanged_dataset_is_checked_once_and_builds_the_same_task(tmp_path: Path, pex: Path,
                                                                       checks: list[Path]) -> None:
    config = write_mode_a(tmp_path / "bench")
    cache = tmp_path / "cache"
    first = build_task(config, tmp_path / "first", pex, {}, cache_dir=cache)
    assert len(checks) == 1 and len(_entries(cache)) == 1
    second = build_task(config, tmp_path / "second", pex, {}, cache_dir=cache)
    assert len(checks) == 1, "the cached result was used"
    # The scorer check and the dry run ran on the cached first rows, with the same sample ids.
    assert second.notes == first.notes and any("row 'test-0'" in note for note in first.notes)
    # The dataset's own content is what the cache knows: a build.yaml edit does not re-check it.
    write_yaml(config, mode_a_config(description="edited"))
    build_task(config, tmp_path / "third", pex, {}, cache_dir=cache)
    assert len(checks) == 1
    assert load_seal(tmp_path / "first").root == load_seal(tmp_path / "second").root


def test_a_changed_dataset_is_checked_again_and_fails(tmp_path: Path, pex: Path, checks: list[Path]) -> None:
    config = write_mode_a(tmp_path / "bench")
    cache = tmp_path / "cache"
    build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    train = tmp_path / "bench/data/train.jsonl"
    train.write_text(train.read_text() + "not json\n")
    with pytest.raises(VeroError, match="line 9 is not valid JSON") as info:
        build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    assert info.value.where == str(train), "the error names the user's file, not the baked copy"
    assert len(checks) == 2 and len(_entries(cache)) == 1, "a failed check is not cached"


def test_build_yaml_is_checked_against_cached_facts(tmp_path: Path, pex: Path, checks: list[Path]) -> None:
    config = write_mode_a(tmp_path / "bench")
    cache = tmp_path / "cache"
    build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    write_yaml(config, mode_a_config(label_fields=["anwser"]))
    with pytest.raises(VeroError, match="label_fields 'anwser' appear in no row .*did you mean 'answer'"):
        build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    write_yaml(config, mode_a_config(targets=[{"split": "test", "reward_key": "a", "sample_ids": ["test-1", "x"]}]))
    with pytest.raises(VeroError, match="sample_ids 'x' are not in split 'test' \\(6 samples\\)"):
        build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    assert len(checks) == 1


def test_a_damaged_or_foreign_cache_entry_is_a_miss(tmp_path: Path, pex: Path, checks: list[Path]) -> None:
    config = write_mode_a(tmp_path / "bench")
    cache = tmp_path / "cache"
    build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    [entry] = _entries(cache)
    facts = json.loads(entry.read_text())
    entry.write_text("{not json")
    build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    assert len(checks) == 2 and json.loads(entry.read_text()) == facts
    # An entry stored under another key (copied by hand) does not describe this content.
    entry.write_text(json.dumps({**facts, "content_key": "0" * 64}))
    build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    assert len(checks) == 3 and json.loads(entry.read_text()) == facts


def test_an_unwritable_cache_only_costs_time(tmp_path: Path, pex: Path, checks: list[Path]) -> None:
    config = write_mode_a(tmp_path / "bench")
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache dir should be")
    build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    assert len(checks) == 2


def test_default_cache_dir_follows_xdg(tmp_path: Path, pex: Path, checks: list[Path],
                                       _private_validation_cache: Path) -> None:
    config = write_mode_a(tmp_path / "bench")
    build_task(config, tmp_path / "out", pex, {})
    assert len(_entries(_private_validation_cache / "vero")) == 1


def test_line_number_ids_survive_the_cache(tmp_path: Path, pex: Path, checks: list[Path]) -> None:
    config = write_mode_a(tmp_path / "bench")
    test = tmp_path / "bench/data/test.jsonl"
    test.write_text("".join(json.dumps({"id": "same", "answer": str(i)}) + "\n" for i in range(4)))
    cache = tmp_path / "cache"
    first = build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    second = build_task(config, tmp_path / "out", pex, {}, cache_dir=cache)
    assert len(checks) == 1
    assert second.notes == first.notes and any("row '0' of split 'test'" in note for note in first.notes)
