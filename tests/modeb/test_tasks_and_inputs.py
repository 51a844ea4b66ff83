"""Task-name resolution against a local source, include filters, and loading benchmark inputs."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.modeb.harbor_results import make_task
from tests.support.benchmarks import mode_a_config, mode_b_config, write_yaml
from vero.compiler.loader import load_build_config
from vero.errors import VeroError
from vero.modeb.config import HarborConfig
from vero.modeb.harbor_command import harbor_argv
from vero.modeb.runner.inputs import from_build_yaml, from_flags, from_harbor_yaml
from vero.modeb.task_source import TaskSource, fnmatch_literal

BAR = Path(__file__).resolve().parents[2] / "tasks" / "bar"


def test_bar_inner_tasks_resolve_by_directory_and_by_task_name() -> None:
    source = TaskSource.open("inner_tasks", BAR)
    refs = source.resolve(["write-greeting", "vero-examples/sum-numbers"])
    assert [(r.sample_id, r.dir_name, r.task_name) for r in refs] == [
        ("write-greeting", "write-greeting", "vero-examples/write-greeting"),
        ("vero-examples/sum-numbers", "sum-numbers", "vero-examples/sum-numbers"),
    ]
    # Harbor's -i filters match directory names: one per task, whatever form the partition used.
    assert source.harbor_args(refs) == ["-p", str(BAR / "inner_tasks"),
                                        "-i", "write-greeting", "-i", "sum-numbers"]


def test_unknown_names_are_one_error_with_close_matches() -> None:
    source = TaskSource.open("inner_tasks", BAR)
    with pytest.raises(VeroError) as caught:
        source.resolve(["write-greting", "vero-examples/count-word", "nothing-like-it"],
                       where="partition.test")
    message = caught.value.render()
    assert message.startswith("error: partition.test: unknown or invalid task names")
    assert "did you mean 'write-greeting'" in message
    assert "'vero-examples/count-words'" in message
    assert "'nothing-like-it' is not a task" in message


def test_same_task_twice_and_invalid_task_dirs_are_refused(tmp_path: Path) -> None:
    make_task(tmp_path, "one", "org/one")
    broken = make_task(tmp_path, "two")
    (broken / "tests" / "test.sh").unlink()
    source = TaskSource.open(str(tmp_path), Path("/"))
    with pytest.raises(VeroError, match="'org/one' and 'one' are the same task"):
        source.resolve(["one", "org/one"])
    with pytest.raises(VeroError, match="'two' is not a valid Harbor task: missing tests/test.sh"):
        source.resolve(["two"])


def test_bad_task_toml_and_empty_sources_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(VeroError, match="not a directory"):
        TaskSource.open("missing", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VeroError, match="no Harbor task"):
        TaskSource.open("empty", tmp_path)
    task = make_task(tmp_path / "ds", "bad")
    (task / "task.toml").write_text("[task\nname = 1\n")
    with pytest.raises(VeroError, match="cannot read task.toml"):
        TaskSource.open("ds", tmp_path)
    (task / "task.toml").write_text("[task]\nversion = '1'\n")
    with pytest.raises(VeroError, match=r"\[task\] has no string `name`"):
        TaskSource.open("ds", tmp_path)


@pytest.mark.parametrize("name", ["plain", "with[brackets]", "star*name", "q?mark", "a[!b]c"])
def test_include_filter_matches_exactly_that_name(name: str) -> None:
    pattern = fnmatch_literal(name)
    assert fnmatch.fnmatch(name, pattern)
    for other in ("plain-x", "withb", "starXname", "qXmark", "abc", "a!c"):
        if other != name:
            assert not fnmatch.fnmatch(other, pattern)


def test_single_task_source_and_registry_source(tmp_path: Path) -> None:
    task = make_task(tmp_path, "solo", "org/solo")
    single = TaskSource.open(str(task), Path("/"))
    refs = single.resolve(["org/solo"])
    assert single.is_single_task and single.harbor_args(refs) == ["-p", str(task)]
    # A Hub package's tasks are selected and recorded by org/name.
    hub = TaskSource.open("org/bench@1.0", tmp_path)
    hub_refs = hub.resolve(["org/a.b", "other/c_d"])
    assert [(r.sample_id, r.dir_name, r.task_name) for r in hub_refs] == [
        ("org/a.b", None, "org/a.b"), ("other/c_d", None, "other/c_d")]
    assert hub.harbor_args(hub_refs) == ["-d", "org/bench@1.0", "-i", "org/a.b", "-i", "other/c_d"]
    # A registry dataset's tasks are selected by directory name, which is the sample id.
    dataset = TaskSource.open("bench@1.0", tmp_path)
    ds_refs = dataset.resolve(["alpha", "beta+2"])
    assert [(r.sample_id, r.dir_name) for r in ds_refs] == [("alpha", "alpha"), ("beta+2", "beta+2")]
    assert dataset.harbor_args(ds_refs) == ["-d", "bench@1.0", "-i", "alpha", "-i", "beta+2"]


def test_harbor_argv_has_every_configured_flag() -> None:
    config = HarborConfig(task_source="inner_tasks", agent="rule_agent.agent:RuleAgent", model="openai/gpt-x",
                          n_concurrent=3, n_attempts=2, max_retries=1, environment="docker",
                          harbor_command=["uvx", "harbor==0.24.0"], extra_args=["--timeout-multiplier", "2"])
    source = TaskSource.open("inner_tasks", BAR)
    refs = source.resolve(["reverse-lines"])
    argv = harbor_argv(config, source, refs, jobs_dir=Path("/jobs"), job_name="vero-x")
    assert argv == ["uvx", "harbor==0.24.0", "run", "-p", str(BAR / "inner_tasks"), "-i", "reverse-lines",
                    "-a", "rule_agent.agent:RuleAgent", "-e", "docker", "-n", "3", "-k", "2", "-r", "1",
                    "-o", "/jobs", "--job-name", "vero-x", "-y", "-q", "-m", "openai/gpt-x",
                    "--timeout-multiplier", "2"]


def test_harbor_config_validation() -> None:
    with pytest.raises(ValidationError, match="agent"):
        HarborConfig(task_source="x", agent="not an import path")
    with pytest.raises(ValidationError, match="extra"):
        HarborConfig.model_validate({"task_source": "x", "agent": "m:C", "n_attempt": 2})
    assert HarborConfig(task_source="org/ds@1.0", agent="m:C").is_registry_source
    assert not HarborConfig(task_source="./org/ds@1.0", agent="m:C").is_registry_source


def test_harbor_yaml_of_the_example_loads() -> None:
    loaded = from_harbor_yaml(BAR / "harbor.yaml")
    config = loaded.harbor_config()
    assert config.agent == "rule_agent.agent:RuleAgent" and loaded.base_dir == BAR
    assert loaded.split("test") == ["vero-examples/count-words", "sort-unique"]
    overridden = loaded.with_overrides({"n_attempts": 3, "model": None}).harbor_config()
    assert (overridden.n_attempts, overridden.model) == (3, None)


def test_build_yaml_is_read_by_the_compilers_loader(tmp_path: Path) -> None:
    build = write_yaml(tmp_path / "build.yaml", mode_b_config(harbor={"agent": "m:C", "n_attempts": 2}))
    loaded = from_build_yaml(build)
    config = loaded.harbor_config()
    assert (config.task_source, config.n_attempts, config.agent) == ("inner", 2, "m:C")
    assert loaded.base_dir == tmp_path and loaded.partition == mode_b_config()["partition"]
    assert loaded.with_overrides({"n_attempts": 5}).harbor_config().n_attempts == 5
    # What the compiler refuses, the runner refuses with the compiler's own message.
    for refused in (mode_b_config(task_source="tasks"), mode_b_config(partition={"train": ["a "]}),
                    {k: v for k, v in mode_b_config().items() if k != "budgets"}):
        write_yaml(build, refused)
        with pytest.raises(VeroError) as compiler:
            load_build_config(build)
        with pytest.raises(VeroError) as runner:
            from_build_yaml(build)
        assert runner.value.render() == compiler.value.render()
    write_yaml(build, mode_a_config())
    with pytest.raises(VeroError, match="needs a Mode B benchmark"):
        from_build_yaml(build)


@pytest.mark.parametrize(("text", "fragment"), [
    ("harbor: [\n", "malformed YAML at line"),
    ("- a\n", "must be a mapping"),
    ("harbor: {task_source: x, agent: 'm:C'}\n", "missing `partition:`"),
    ("harbor: {task_source: x, agent: 'm:C'}\npartition: {train: [a]}\nextra: 1\n", "unknown top-level key"),
    ("harbor: {task_source: x, agent: 'm:C'}\npartition: {train: a}\n", "list of task names"),
    ("harbor: {task_source: x, agent: 'm:C'}\npartition: {'bad split!': [a]}\n", "split name"),
])
def test_bad_harbor_yaml_is_one_message_naming_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "harbor.yaml"
    path.write_text(text)
    with pytest.raises(VeroError) as caught:
        from_harbor_yaml(path)
    assert fragment in caught.value.render() and str(path) in caught.value.render()


def test_invalid_harbor_field_names_the_field_path(tmp_path: Path) -> None:
    path = tmp_path / "harbor.yaml"
    path.write_text("harbor: {task_source: x, agent: 'm:C', n_attempts: many}\npartition: {train: [a]}\n")
    with pytest.raises(VeroError, match=r"invalid Harbor settings at harbor\.n_attempts"):
        from_harbor_yaml(path).harbor_config()


def test_flags_collation_needs_no_agent(tmp_path: Path) -> None:
    partition = tmp_path / "partition.json"
    partition.write_text('{"train": ["a"]}')
    loaded = from_flags(partition, str(tmp_path), None).with_overrides({"aggregate_attempts": "mean"})
    assert loaded.collation().aggregate_attempts == "mean"
    with pytest.raises(VeroError, match=r"harbor\.agent"):
        loaded.harbor_config()
