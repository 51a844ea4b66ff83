"""SEAL.json and `vero harbor verify`: any edit after packaging is named."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.benchmarks import fake_runtime_pex, write_mode_a
from vero.cli import cli
from vero.compiler.compiler import build_task
from vero.compiler.seal import SEAL_FILE, load_seal, root_digest, verify
from vero.errors import VeroError


@pytest.fixture()
def task(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    build_task(write_mode_a(tmp_path / "bench"), out, fake_runtime_pex(tmp_path / "vero.pex"), {})
    return out


def _verify_cli(task: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["harbor", "verify", str(task), *args])
    return result.exit_code, result.stdout + result.stderr


def test_fresh_build_verifies(task: Path) -> None:
    seal = load_seal(task)
    config_sha256 = hashlib.sha256((task.parent / "bench/build.yaml").read_bytes()).hexdigest()
    assert seal.tools == {"vero": "0.1.0"}
    assert seal.build_config_sha256 == config_sha256
    assert seal.root == root_digest(seal.files, config_sha256) != root_digest(seal.files)
    assert SEAL_FILE not in seal.files and ".vero-task" in seal.files
    assert seal.files["tests/test.sh"].mode == "0755"
    code, output = _verify_cli(task)
    assert code == 0 and f"{len(seal.files)} files match" in output
    assert f"compiled from a build.yaml with sha256 {config_sha256}" in output


def test_verify_says_whether_the_task_holds_a_build_of_this_build_yaml(tmp_path: Path, task: Path) -> None:
    config = tmp_path / "bench/build.yaml"
    code, output = _verify_cli(task, "-c", str(config))
    assert code == 0 and f"ok: compiled from {config}" in output
    # A later build that fails leaves this output in place: verify names the mismatch.
    config.write_text(config.read_text().replace("name: test/bench", "name: test/renamed"))
    failed = CliRunner().invoke(cli, ["harbor", "build", "-c", str(config), "-o", str(task), "--runtime-pex",
                                      str(tmp_path / "missing.pex")])
    assert failed.exit_code == 2
    code, output = _verify_cli(task, "-c", str(config))
    assert code == 1 and "was compiled from another build.yaml" in output and "Traceback" not in output
    assert f"rebuild it from {config}" in output


def test_the_seal_covers_the_recorded_build_yaml_digest(task: Path) -> None:
    seal = json.loads((task / SEAL_FILE).read_text())
    seal["build_config_sha256"] = "1" * 64
    (task / SEAL_FILE).write_text(json.dumps(seal))
    assert verify(task).root_mismatch


def test_the_identity_file_names_the_task_by_a_digest_verify_prints(task: Path, tmp_path: Path) -> None:
    """serve.json cannot hold the root of a seal that covers it: the task digest covers every file
    but SEAL.json and the identity file, which the seal then covers."""
    seal = load_seal(task)
    identity = json.loads((task / "environment/sidecar/identity/task.json").read_text())
    others = {path: item for path, item in seal.files.items() if path != "environment/sidecar/identity/task.json"}
    assert identity["task_digest"] == root_digest(others) != seal.root
    assert "environment/sidecar/identity/task.json" in seal.files
    assert identity["name"] == "test/bench" and identity["mode"] == "A"
    assert identity["baseline_commit"] == json.loads((task / "environment/agent-seed/BASELINE.json").read_text())[
        "commit"]
    code, output = _verify_cli(task)
    assert code == 0 and f"task digest {identity['task_digest']}" in output
    # The sidecar image copies it with the other sidecar items; serve.json says where it is.
    dockerfile = (task / "environment/sidecar/Dockerfile").read_text()
    assert "COPY sidecar/identity/ /opt/vero/sidecar/identity/" in dockerfile
    serve = json.loads((task / "environment/sidecar/serve.json").read_text())
    assert serve["paths"]["identity_file"] == "/opt/vero/sidecar/identity/task.json"
    # Any other change to the task changes the digest.
    again = tmp_path / "again"
    bench = tmp_path / "bench"
    config = (bench / "build.yaml").read_text()
    (bench / "build.yaml").write_text(config.replace("a test benchmark", "another test benchmark"))
    build_task(bench / "build.yaml", again, fake_runtime_pex(tmp_path / "vero.pex"), {})
    changed = json.loads((again / "environment/sidecar/identity/task.json").read_text())["task_digest"]
    assert changed != identity["task_digest"]


def test_edited_file_is_named(task: Path) -> None:
    path = task / "environment/sidecar/serve.json"
    path.write_text(path.read_text().replace('"k_anonymity_floor": 5', '"k_anonymity_floor": 1'))
    report = verify(task)
    assert report.edited == ["environment/sidecar/serve.json"] and not report.ok
    code, output = _verify_cli(task)
    assert code == 1 and "edited: environment/sidecar/serve.json" in output and "Traceback" not in output


def test_missing_extra_and_mode_changes(task: Path) -> None:
    (task / "instruction.md").unlink()
    (task / "environment/evil.sh").write_text("echo hi\n")
    os.chmod(task / "tests/test.sh", 0o644)
    report = verify(task)
    assert report.missing == ["instruction.md"]
    assert report.extra == ["environment/evil.sh"]
    assert report.edited == ["tests/test.sh"]
    code, output = _verify_cli(task)
    assert code == 1
    for line in ("missing: instruction.md", "extra: environment/evil.sh", "edited: tests/test.sh"):
        assert line in output


def test_special_files_and_symlinks_are_reported(task: Path) -> None:
    os.mkfifo(task / "fifo")
    os.symlink("/etc/passwd", task / "environment/link")
    report = verify(task)
    assert report.extra == ["environment/link", "fifo"]


def test_tampered_seal_is_detected(task: Path) -> None:
    seal = json.loads((task / SEAL_FILE).read_text())
    seal["files"]["instruction.md"]["sha256"] = "0" * 64
    (task / SEAL_FILE).write_text(json.dumps(seal))
    report = verify(task)
    assert report.root_mismatch and "instruction.md" in report.edited


def test_no_or_broken_seal(tmp_path: Path, task: Path) -> None:
    with pytest.raises(VeroError, match="not a task built by vero"):
        verify(tmp_path)
    (task / SEAL_FILE).write_text("{")
    with pytest.raises(VeroError, match="invalid SEAL.json at"):
        verify(task)
    code, output = _verify_cli(tmp_path / "nope")
    assert code == 2 and "not a directory" in output and "Traceback" not in output
