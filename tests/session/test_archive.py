"""The session archive: deterministic bytes, every member checked, no secret value anywhere, and
the same bytes whether the verifier asks over HTTP or the rescue hook reads the admin volume."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import httpx

from tests.session.conftest import SECRET, SECRET_NAME, Finished
from tests.support.mode_a import git
from tests.support.sidecar import free_port, python_env, serve_config, start_sidecar, vero_argv
from vero.session import gitbundle
from vero.session.admin import sidecar_archive
from vero.session.model import BUNDLE, MANIFEST, bundle_ref
from vero.session.reader import load_session


def _archive(finished: Finished) -> bytes:
    sidecar = finished.sidecar
    return sidecar_archive(sidecar.config, sidecar.redactor)


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {info.name: tar.extractfile(info).read() for info in tar.getmembers()}  # type: ignore[union-attr]


def test_the_same_session_gives_the_same_bytes(finished: Finished) -> None:
    first, second = _archive(finished), _archive(finished)
    assert first == second
    # Fixed headers: gzip mtime 0 and no name; tar members 0:0, mode 0644, mtime 0, manifest first.
    assert first[4:8] == b"\0\0\0\0" and not first[3] & 0x08
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        infos = tar.getmembers()
    assert infos[0].name == MANIFEST
    assert [i.name for i in infos[1:]] == sorted(i.name for i in infos[1:])
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {(0, 0, 0, "", "", 0o644)}


def test_the_archive_holds_every_evaluation_commit_and_the_selection(finished: Finished, tmp_path: Path) -> None:
    path = tmp_path / "session.tar.gz"
    path.write_bytes(_archive(finished))
    session = load_session(path)
    records = finished.sidecar.db.all()
    assert [e.record.experiment_id for e in session.evaluations] == [r.experiment_id for r in records]
    asked = [(e.asked_by, e.record.purpose) for e in session.evaluations]
    assert asked[:3] == [("optimizer", "eval")] * 3 and ("finalize", "target") in asked
    train = session.evaluations[1]
    assert [r.sample_id for r in train.results] == train.record.sample_ids and len(train.results) == 6
    roles = {entry.commit: entry.roles for entry in session.commits}
    assert roles == {finished.bench.baseline_commit: ["baseline"], finished.leaky: ["evaluated"],
                     finished.improved: ["evaluated", "submitted"]}
    assert session.winner == finished.improved and session.finalize is not None
    assert session.submission is not None and session.submission.commit == finished.improved
    assert session.ledger is not None and {e.split: e.runs_used for e in session.ledger.entries}["train"] == 2
    assert session.serve is not None and session.serve.secrets == [SECRET_NAME]
    assert len(session.incidents) == 1 and session.task.baseline_commit == finished.bench.baseline_commit
    # The bundle names every commit by its session ref, with its history.
    with gitbundle.opened_bundle(session.bundle, str(path)) as repo:
        refs = git(repo, "for-each-ref", "--format=%(refname)").split()
        assert refs == sorted(bundle_ref(sha) for sha in roles)
        assert git(repo, "rev-list", "--count", finished.improved) == "3"


def test_no_secret_value_reaches_the_archive(finished: Finished) -> None:
    # The admin volume itself keeps the real output and traceback (trusted storage).
    admin = Path(finished.sidecar.config.paths.admin_dir)
    assert any(SECRET in p.read_text(errors="replace") for p in admin.rglob("*.json*") if p.is_file())
    members = _members(_archive(finished))
    texts = {name: data.decode("utf-8", "replace") for name, data in members.items() if name != BUNDLE}
    assert not [name for name, text in texts.items() if SECRET in text]
    leaky = [json.loads(text) for name, text in texts.items() if name.startswith("evaluations/")
             and finished.leaky in text]
    results = leaky[0]["results"]
    assert any("[redacted VERO_SESSION_API_KEY]" in json.dumps(r["output"]) for r in results)
    details = [r["error_detail"] for r in results if r["error_detail"]]
    assert details and all("RuntimeError" in d for d in details)
    assert any("[redacted VERO_SESSION_API_KEY]" in d for d in details)
    assert "[redacted VERO_SESSION_API_KEY]" in texts["incidents.jsonl"]
    # Neither in the compressed bytes nor in any blob of the bundle (the optimizer never had it).
    assert SECRET.encode() not in gzip.decompress(_archive(finished))
    token = finished.sidecar.token
    assert not [name for name, text in texts.items() if token in text]


def test_the_verifier_and_the_rescue_hook_get_the_same_bytes(tmp_path: Path, finished: Finished) -> None:
    """`vero harbor archive --token-file` (GET /session on a live sidecar) and `--config` (the
    rescue hook, no token) write the same archive."""
    config = serve_config(finished.root, finished.bench, secrets=[SECRET_NAME], port=free_port(),
                          budgets=[{"split": "train", "total_run_budget": 5},
                                   {"split": "validation", "total_sample_budget": 40}])
    finished.sidecar.close()
    env = {SECRET_NAME: SECRET}
    live = start_sidecar(finished.root, config, env=env)
    try:
        denied = httpx.get(live.url + "/session", timeout=30)
        assert denied.status_code == 403
        run_env = {**python_env(), **env, "VERO_EVAL_URL": live.url}
        verifier = subprocess.run(vero_argv("harbor", "archive", "--token-file", str(live.token_file),
                                            "--output", str(tmp_path / "final.tar.gz")),
                                  env=run_env, capture_output=True, text=True, check=False)
        assert verifier.returncode == 0, verifier.stderr
        config_file = finished.root / "sidecar.json"
        rescue = subprocess.run(vero_argv("harbor", "archive", "--config", str(config_file),
                                          "--output", str(tmp_path / "rescue" / "session-rescue.tar.gz")),
                                env=run_env, capture_output=True, text=True, check=False)
        assert rescue.returncode == 0, rescue.stderr
        final = (tmp_path / "final.tar.gz").read_bytes()
        assert final == (tmp_path / "rescue" / "session-rescue.tar.gz").read_bytes()
        assert os.stat(tmp_path / "rescue" / "session-rescue.tar.gz").st_mode & 0o777 == 0o600
        # Without the secret's value the archive would go out unredacted: refused.
        bare = {k: v for k, v in run_env.items() if k != SECRET_NAME}
        refused = subprocess.run(vero_argv("harbor", "archive", "--config", str(config_file), "--output",
                                           str(tmp_path / "x.tar.gz")), env=bare, capture_output=True, text=True,
                                 check=False)
        assert refused.returncode == 2 and "declared secrets are not set" in refused.stderr
        assert not (tmp_path / "x.tar.gz").exists()
    finally:
        live.stop()
