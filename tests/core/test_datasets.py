"""Mode A datasets and Mode B partitions: loading, sample ids, content ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import JsonValue

from vero.core.datasets import (
    load_mode_a_dataset,
    make_partition,
    partition_problems,
    strip_labels,
)
from vero.errors import VeroError


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_ids_come_from_unique_id_field(tmp_path: Path) -> None:
    ds = load_mode_a_dataset(_write(tmp_path, {
        "train.jsonl": '{"id": "a", "x": 1}\n{"id": 7, "x": 2}\n\n',
        "test.jsonl": '{"x": 1}\n{"id": "b", "x": 2}\n',
        "dev.jsonl": '{"id": "z", "x": 1}\n{"id": "z", "x": 2}\n{"id": true, "x": 3}\n',
    }))
    assert ds.split_names() == ["dev", "test", "train"]
    assert ds.sample_ids("train") == ["a", "7"]       # int ids become strings; blank line skipped
    assert ds.sample_ids("test") == ["0", "1"]        # a row without id: line indices
    assert ds.sample_ids("dev") == ["0", "1", "2"]    # duplicate ids: line indices
    assert ds.row("train", "7") == {"id": 7, "x": 2}


def test_content_id_is_canonical_and_content_sensitive(tmp_path: Path) -> None:
    a = load_mode_a_dataset(_write(tmp_path / "a", {"t.jsonl": '{"q": 1, "a": [1, 2]}\n'}))
    b = load_mode_a_dataset(_write(tmp_path / "b", {"t.jsonl": '{ "a":[1,2],   "q":1 }'}))
    c = load_mode_a_dataset(_write(tmp_path / "c", {"t.jsonl": '{"q": 1, "a": [2, 1]}\n'}))
    d = load_mode_a_dataset(_write(tmp_path / "d", {"u.jsonl": '{"q": 1, "a": [1, 2]}\n'}))
    assert a.dataset_id == b.dataset_id
    assert len({a.dataset_id, c.dataset_id, d.dataset_id}) == 3
    assert len(a.dataset_id) == 64


@pytest.mark.parametrize(("files", "message"), [
    ({}, "no <split>.jsonl files"),
    ({"dataset_dict.json": "{}"}, "Hugging Face save_to_disk"),
    ({"t.jsonl": '{"a": 1}\n{"a": \n'}, "line 2 is not valid JSON"),
    ({"t.jsonl": '[1, 2]\n'}, "line 1 is a JSON list"),
    ({"t.jsonl": '{"a": NaN}\n'}, "line 1 is not valid JSON"),
    ({"t.jsonl": '\n\n'}, "split file has no rows"),
    ({"bad name.jsonl": '{"a": 1}\n'}, "invalid split name"),
])
def test_bad_datasets_are_one_clear_error(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(VeroError, match=message) as info:
        load_mode_a_dataset(_write(tmp_path / "ds", files))
    assert info.value.fix


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(VeroError, match="does not exist"):
        load_mode_a_dataset(tmp_path / "nope")


def test_strip_labels_removes_only_label_fields() -> None:
    row: dict[str, JsonValue] = {"id": "1", "question": "q", "answer": 3, "rationale": "r"}
    assert strip_labels(row, ["answer", "rationale", "absent"]) == {"id": "1", "question": "q"}
    assert row["answer"] == 3  # the original row is untouched


# Names Harbor can hold but every format around it chokes on: they pass the partition rules (the
# task lookup decides whether such a task exists).
HOSTILE_NAMES = ["org/task \"dq\" 'sq' `touch PWN` $(x) ${X} {{ 7*7 }}", "ünï 🚀 <b>&amp;</b>", "a\nb\tc",
                 "-rf", "--help", "*", "..", "org//x"]


def test_partition_content_id() -> None:
    part = make_partition({"train": ["org/a", "b"], "test": ["c"]})
    assert part.sample_ids("train") == ["org/a", "b"]
    assert part.split_names() == ["test", "train"]
    assert part.dataset_id == make_partition({"test": ["c"], "train": ["org/a", "b"]}).dataset_id
    assert part.dataset_id != make_partition({"train": ["b", "org/a"], "test": ["c"]}).dataset_id


@pytest.mark.parametrize(("partition", "problems"), [
    ({"train": HOSTILE_NAMES[:4], "test": HOSTILE_NAMES[4:]}, []),
    ({}, ["the partition has no splits"]),
    ({"train": []}, ["split 'train' lists no tasks"]),
    ({"train\n": ["a"]}, ["invalid split name 'train\\n': use letters, digits"]),
    ({"bad split!": ["a"], "": ["b"]}, ["invalid split name ''", "invalid split name 'bad split!'"]),
    ({"train": [""]}, ["split 'train' has an invalid task name ''"]),
    *[({"train": [name]}, [f"split 'train' has an invalid task name {name!r} (empty or with surrounding "
                            "whitespace)"])
      for name in (" a", "a ", "a\n", "\ta", "a\u2028", "\u3000a", " ")],
    ({"train": ["a"], "test": ["a"]}, ["task 'a' is listed in split 'test' and 'train'; each task belongs to "
                                       "exactly one split"]),
    ({"train": ["a", "b", "a"]}, ["task 'a' is listed twice in split 'train'"]),
    ({"x": [], "train": ["a ", "b", "b"]}, ["split 'train' has an invalid task name 'a '",
                                           "task 'b' is listed twice in split 'train'", "split 'x' lists no tasks"]),
])
def test_partition_problems(partition: dict[str, list[str]], problems: list[str]) -> None:
    """The one partition rule (build.yaml, serve.json, the runner's files): every problem is named."""
    found = partition_problems(partition)
    assert len(found) == len(problems), found
    for message, expected in zip(found, problems):
        assert message.startswith(expected), (message, expected)
    if problems:
        with pytest.raises(VeroError, match="invalid partition: ") as info:
            make_partition(partition, where="serve.json: mode_b.partition")
        assert info.value.where == "serve.json: mode_b.partition" and info.value.fix
        assert "; ".join(found) in info.value.what
    else:
        assert make_partition(partition).sample_ids("train") == HOSTILE_NAMES[:4]
