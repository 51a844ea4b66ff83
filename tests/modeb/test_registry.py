"""Registry sources: a local registry.json (real git repositories behind file:// URLs, or local
paths), name resolution with close matches, and the style check of names that cannot be listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.modeb.harbor_results import make_task
from tests.support.benchmarks import write_local_registry
from vero.errors import VeroError
from vero.modeb.config import HarborConfig
from vero.modeb.registry import LocalRegistry, check_names
from vero.modeb.task_source import TaskSource


@pytest.fixture()
def task_dirs(tmp_path: Path) -> dict[str, Path]:
    source = tmp_path / "src"
    return {"alpha": make_task(source, "alpha", "bench/alpha"), "beta": make_task(source, "beta"),
            "gamma-2": make_task(source, "gamma-2", "bench/gamma")}


@pytest.mark.parametrize("git", [True, False])
def test_names_resolve_by_directory_registry_name_or_task_name(tmp_path: Path, task_dirs: dict[str, Path],
                                                                 git: bool) -> None:
    registry = write_local_registry(tmp_path / "reg", task_dirs, git=git)
    source = TaskSource.open("bench@1.0", tmp_path, str(registry.relative_to(tmp_path)))
    refs = source.resolve(["alpha", "beta", "bench/gamma"])
    assert [(r.sample_id, r.dir_name, r.task_name) for r in refs] == [
        ("alpha", "alpha", "bench/alpha"), ("beta", "beta", "beta"), ("bench/gamma", "gamma-2", "bench/gamma")]
    # Harbor filters a registry dataset by directory name, with the registry given by absolute path.
    assert source.harbor_args(refs) == ["-d", "bench@1.0", "--registry-path", str(registry),
                                        "-i", "alpha", "-i", "beta", "-i", "gamma-2"]
    task = source.registry_task(refs[2])
    assert task is not None and (task.git_url is not None) == git


def test_unknown_names_get_close_matches_from_the_registry(tmp_path: Path, task_dirs: dict[str, Path]) -> None:
    registry = write_local_registry(tmp_path / "reg", task_dirs)
    source = TaskSource.open("bench@1.0", Path("/"), str(registry))
    with pytest.raises(VeroError) as caught:
        source.resolve(["alpah", "bench/gama", "alpha", "bench/alpha"], where="partition.test")
    message = caught.value.render()
    assert message.startswith(f"error: partition.test: unknown or ambiguous task names (registry {registry})")
    assert "'alpah' is not a task of bench@1.0 (did you mean 'alpha'" in message
    assert "'bench/gama' is not a task of bench@1.0 (did you mean 'bench/gamma'" in message
    assert "'bench/alpha' and 'alpha' are the same task (dir alpha)" in message


def test_a_directory_name_two_tasks_share_is_ambiguous(tmp_path: Path, task_dirs: dict[str, Path]) -> None:
    registry = write_local_registry(tmp_path / "reg", task_dirs)
    listing = json.loads(registry.read_text())
    listing[0]["tasks"].append({"name": "alpha-copy", "path": str(task_dirs["alpha"])})
    registry.write_text(json.dumps(listing))
    source = TaskSource.open("bench@1.0", Path("/"), str(registry))
    with pytest.raises(VeroError, match="'alpha-copy' names several tasks of bench@1.0 whose directories are alpha"):
        source.resolve(["alpha-copy"])
    assert [r.dir_name for r in source.resolve(["beta"])] == ["beta"]


def test_registry_files_and_datasets_that_do_not_fit_are_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    with pytest.raises(VeroError, match="cannot read the registry"):
        LocalRegistry.load(path)
    for content, fragment in (("[", "not valid JSON"), ('{"a": 1}', "must be a JSON list"),
                              ('[{"name": "b", "version": "1", "tasks": [{"name": "x"}]}]',
                               r"invalid dataset \[0\] at tasks\[0\]\.path"),
                              ('[{"name": "b", "version": "1", "tasks": [{"name": "x", "path": "rel"}]}]',
                               "relative local path 'rel'")):
        path.write_text(content)
        with pytest.raises(VeroError, match=fragment):
            LocalRegistry.load(path)
    path.write_text('[{"name": "bench", "version": "1.0", "tasks": []},'
                    ' {"name": "other", "version": "2", "tasks": []}]')
    registry = LocalRegistry.load(path)
    with pytest.raises(VeroError, match=r"dataset 'bench' has no version '2.0' \(it has 1.0\)"):
        registry.dataset("bench@2.0")
    with pytest.raises(VeroError, match="no dataset 'bnech@1.0'; did you mean 'bench@1.0'"):
        registry.dataset("bnech@1.0")


def test_a_local_registry_serves_only_name_at_version_datasets() -> None:
    assert HarborConfig(task_source="bench@1.0", registry_path="r.json", agent="m:C").is_registry_source
    with pytest.raises(ValueError, match="is a Harbor Hub package"):
        HarborConfig(task_source="org/bench@1.0", registry_path="r.json", agent="m:C")
    with pytest.raises(ValueError, match="registry_path needs task_source to name a dataset"):
        HarborConfig(task_source="./local", registry_path="r.json", agent="m:C")
    with pytest.raises(VeroError, match="is a Harbor Hub package"):
        TaskSource.open("org/bench@1.0", Path("/"), "r.json")


@pytest.mark.parametrize(("source", "names", "problems"), [
    ("org/pkg@1", ["org/a", "o.r-g/b_c.d"], []),
    ("org/pkg@1", ["alpha"], ["'alpha' is not an org/name task name (did you mean 'org/alpha'?)"]),
    ("org/pkg@1", ["org/a/b"], ["'org/a/b' is not an org/name task name (did you mean 'org/b'?)"]),
    ("org/pkg@1", ["org/../x"], ["'org/../x' is not an org/name task name (did you mean 'org/x'?)"]),
    ("org/pkg@1", ["org/a b"], ["'org/a b' is not an org/name task name:"]),
    ("bench@1", ["alpha", "beta.2", "c_d+e"], []),
    ("bench@1", ["org/alpha"], ["'org/alpha' is not a task directory name (did you mean 'alpha'?)"]),
    ("bench@1", ["..", " x"], ["'..' is not a task directory name:", "' x' is not a task directory name"]),
])
def test_names_of_an_unlisted_registry_source_are_style_checked(source: str, names: list[str],
                                                                problems: list[str]) -> None:
    found = check_names(source, names)
    assert len(found) == len(problems)
    for problem, expected in zip(found, problems):
        assert problem.startswith(expected), problem
