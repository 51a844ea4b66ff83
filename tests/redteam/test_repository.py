"""Attacks through the optimizer's repository, `.git` included, against a real sidecar.

The optimizer owns every byte of /work/agent. The sidecar never opens it as root: an
unprivileged, confined fetcher with a timeout reads one commit into a scratch repository and
root takes only a pack that `git index-pack --strict` accepts; checkouts write the stored bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.redteam.conftest import FETCH_TIMEOUT, NEEDS_ROOT, PROTECTED, PROTECTED_TEXT, SECRET, Target
from tests.support.mode_a import IMPROVED_AGENT, commit_agent, git

pytestmark = NEEDS_ROOT

def _refused(response_text: str, *needles: str) -> None:
    for needle in needles:
        assert needle not in response_text, f"{needle[:40]!r} leaked: {response_text[:500]}"


def test_admin_token_through_a_packed_refs_symlink(target: Target) -> None:
    """Attack 1: `.git/packed-refs` -> the admin token; git's error text used to carry it."""
    token = target.sidecar.token()
    packed = target.repo / ".git" / "packed-refs"
    packed.unlink(missing_ok=True)
    packed.symlink_to(target.sidecar.token_file)
    for path, body in (("/submit", {"commit": "0"}), ("/eval", {"split": "train", "commit": "0"})):
        response = target.post(path, body)
        assert response.status_code == 422, response.text
        assert "error id E-" in response.json()["error"]
        _refused(response.text, token)
    # The admin log keeps what git said, and even that never saw the token: the fetcher could not read it.
    assert target.incidents().count("E-") == 4 and "packed-refs: Permission denied" in target.incidents()
    _refused(target.incidents(), token)
    assert target.post("/finalize", {}).status_code == 403


def test_label_rows_through_an_alternates_symlink(target: Target) -> None:
    """Git prints each line of `objects/info/alternates` it cannot use: point it at the labels."""
    labels = (target.bench.dataset_dir / "test.jsonl").read_text().splitlines()[0]
    alternates = target.repo / ".git" / "objects" / "info" / "alternates"
    alternates.parent.mkdir(exist_ok=True)
    alternates.symlink_to(target.bench.dataset_dir / "test.jsonl")
    # A commit whose blob is missing sends git looking through every alternate, complaining about each.
    commit = commit_agent(target.repo, IMPROVED_AGENT + "# missing blob\n")
    blob = git(target.repo, "rev-parse", f"{commit}:agent.py")
    (target.repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    response = target.post("/submit", {"commit": commit})
    assert response.status_code == 422
    assert "error id E-" in response.json()["error"]
    _refused(response.text + target.incidents(), labels, '"answer"')


def test_secrets_through_proc_environ(target: Target) -> None:
    """`packed-refs` -> /proc/<sidecar>/environ, where the declared secrets are."""
    packed = target.repo / ".git" / "packed-refs"
    packed.unlink(missing_ok=True)
    packed.symlink_to(f"/proc/{target.sidecar.proc.pid}/environ")
    response = target.post("/eval", {"split": "train", "commit": "main"})
    assert response.status_code == 422
    _refused(response.text + target.incidents(), SECRET)


@pytest.mark.parametrize("where", [".git", "repo"])
def test_the_repository_itself_as_a_symlink_into_the_admin_volume(target: Target, where: str) -> None:
    """The optimizer replaces `.git` (or the whole repo) by a link to the sidecar's trusted repo."""
    trusted = target.sidecar.admin_dir / "repo"
    link = target.repo / ".git" if where == ".git" else target.repo
    moved = link.with_name(link.name + ".moved")
    link.rename(moved)
    link.symlink_to(trusted / ".git" if where == ".git" else trusted)
    response = target.post("/eval", {"split": "train", "commit": "HEAD"})
    assert response.status_code == 422, response.text
    assert "cannot read 'HEAD'" in response.json()["error"]


def test_a_fifo_in_git_wedges_nothing(target: Target) -> None:
    """Attack 3: `mkfifo .git/packed-refs`: the fetch used to block forever holding the repo lock."""
    improved = commit_agent(target.repo, IMPROVED_AGENT)
    assert target.post("/eval", {"split": "train", "commit": improved, "num_samples": 1}).status_code == 200
    packed = target.repo / ".git" / "packed-refs"
    packed.unlink(missing_ok=True)
    os.mkfifo(packed)
    outcomes: list[tuple[int, float]] = []

    def submit() -> None:
        started = time.monotonic()
        response = target.post("/submit", {"commit": "main"}, timeout=FETCH_TIMEOUT * 4)
        outcomes.append((response.status_code, time.monotonic() - started))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    # While they hang: status answers, and an evaluation of an imported commit runs.
    started = time.monotonic()
    assert target.post("/status", None).status_code == 405
    status = target.post("/eval", {"split": "train", "commit": improved, "num_samples": 2}, timeout=60)
    assert status.status_code == 200, status.text
    assert time.monotonic() - started < FETCH_TIMEOUT
    for thread in threads:
        thread.join(timeout=FETCH_TIMEOUT * 5)
    assert len(outcomes) == 6 and all(code == 422 for code, _ in outcomes), outcomes
    assert all(seconds < FETCH_TIMEOUT + 10 for _, seconds in outcomes), outcomes


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_special_files_as_objects_are_cut_off(target: Target, special: str) -> None:
    """A loose object that is a FIFO (reads block forever) or a device (git checks sizes)."""
    commit = commit_agent(target.repo, IMPROVED_AGENT + "# special object\n")
    blob = git(target.repo, "rev-parse", f"{commit}:agent.py")
    loose = target.repo / ".git" / "objects" / blob[:2] / blob[2:]
    loose.unlink()
    if special == "fifo":
        os.mkfifo(loose)
    else:
        loose.symlink_to(special)
    started = time.monotonic()
    response = target.post("/eval", {"split": "train", "commit": commit})
    assert response.status_code == 422 and time.monotonic() - started < FETCH_TIMEOUT + 10


def test_a_commit_bigger_than_the_limit_is_refused(target: Target) -> None:
    (target.repo / "blob.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    git(target.repo, "add", "blob.bin")
    commit = commit_agent(target.repo, IMPROVED_AGENT)
    response = target.post("/eval", {"split": "train", "commit": commit})
    assert response.status_code == 422, response.text
    assert "brings more than 4 MiB" in response.json()["error"]


@pytest.mark.parametrize(("shape", "message"), [("wide", "files (the limit is 300)"),
                                               ("deep", "nested deeper than 128 directories")])
def test_trees_too_wide_or_deep_are_refused_before_any_spend(target: Target, shape: str, message: str) -> None:
    if shape == "wide":
        for i in range(320):
            (target.repo / f"f{i}.txt").write_text("x")
    else:
        deep = target.repo.joinpath(*["d"] * 140)
        deep.mkdir(parents=True)
        (deep / "leaf.txt").write_text("x")
    git(target.repo, "add", "-A")
    commit = commit_agent(target.repo, IMPROVED_AGENT)
    response = target.post("/eval", {"split": "train", "commit": commit})
    assert response.status_code == 422 and message in response.json()["error"], response.text
    status = target.post("/eval", {"split": "train", "commit": target.bench.baseline_commit})
    assert status.json()["remaining"]["runs_remaining"] == 100  # nothing was spent on the refusal


def test_a_tree_entry_named_dot_git_is_refused(target: Target) -> None:
    """A crafted tree whose entry is named `.git` would plant a repository in the checkout."""
    blob = git(target.repo, "hash-object", "-w", "agent.py")
    inner = subprocess.run(["git", "mktree"], cwd=target.repo, input=f"100644 blob {blob}\tconfig\n",
                           capture_output=True, text=True, check=True).stdout.strip()
    tree = subprocess.run(["git", "mktree"], cwd=target.repo, capture_output=True, text=True, check=True,
                          input=f"100644 blob {blob}\tagent.py\n040000 tree {inner}\t.git\n").stdout.strip()
    commit = git(target.repo, "commit-tree", tree, "-p", "HEAD", "-m", "dot git")
    git(target.repo, "update-ref", "refs/heads/main", commit)
    response = target.post("/submit", {"commit": commit})
    assert response.status_code == 422, response.text
    trusted = target.sidecar.admin_dir / "repo"
    missing = subprocess.run(["git", "cat-file", "-e", commit], cwd=trusted, capture_output=True, check=False)
    assert missing.returncode != 0  # nothing of it was kept


def test_gitattributes_cannot_change_the_bytes_of_a_read_only_path(target: Target) -> None:
    """Attack 6: only `.gitattributes` changes (ident, eol, encoding): the stored blobs of the
    read-only path are untouched, so the check passes; the candidate must then see those blobs."""
    (target.repo / ".gitattributes").write_text(
        f"{PROTECTED} ident eol=crlf working-tree-encoding=UTF-16\n")
    reader = ("import hashlib\n"
              "def solve(row):\n"
              f"    return {{'answer': hashlib.sha256(open({PROTECTED!r}, 'rb').read()).hexdigest()}}\n")
    git(target.repo, "add", ".gitattributes")
    commit = commit_agent(target.repo, reader)
    response = target.post("/eval", {"split": "train", "commit": commit, "num_samples": 1})
    assert response.status_code == 200, response.text
    (sample,) = (target.sidecar.results_dir / "train" / "samples").iterdir()
    seen = json.loads(sample.read_text())["output"]["answer"]
    assert seen == hashlib.sha256(PROTECTED_TEXT.encode()).hexdigest()


def test_a_changed_read_only_path_is_refused(target: Target) -> None:
    (target.repo / PROTECTED).write_text("changed\n")
    git(target.repo, "add", PROTECTED)
    commit = commit_agent(target.repo, IMPROVED_AGENT)
    for path, body in (("/eval", {"split": "train", "commit": commit}), ("/submit", {"commit": commit})):
        response = target.post(path, body)
        assert response.status_code == 403 and "read-only path" in response.json()["error"]


def test_committed_symlinks_give_candidate_code_nothing(target: Target) -> None:
    """Links in the candidate's tree to the token and the labels: checked out as links, and the
    candidate (unprivileged) cannot read through them; the trusted side never follows them."""
    (target.repo / "token").symlink_to(target.sidecar.token_file)
    (target.repo / "labels").symlink_to(target.bench.dataset_dir / "test.jsonl")
    reader = ("def solve(row):\n"
              "    seen = []\n"
              "    for name in ('token', 'labels'):\n"
              "        try:\n"
              "            seen.append(open(name).read())\n"
              "        except OSError as exc:\n"
              "            seen.append(type(exc).__name__)\n"
              "    return {'answer': seen}\n")
    git(target.repo, "add", "token", "labels")
    commit = commit_agent(target.repo, reader)
    response = target.post("/eval", {"split": "train", "commit": commit, "num_samples": 1})
    assert response.status_code == 200, response.text
    (sample,) = (target.sidecar.results_dir / "train" / "samples").iterdir()
    assert json.loads(sample.read_text())["output"]["answer"] == ["PermissionError", "PermissionError"]


def test_hostile_file_names_are_checked_out_as_written(target: Target) -> None:
    names = ["-rf", "--upload-pack=x", "a\nb", "ünïcödé ✓", "$(touch pwned)", " lead", "x\\y"]
    for name in names:
        (target.repo / name).write_text(name)
    lister = ("import os\n"
              "def solve(row):\n"
              "    return {'answer': sorted(n for n in os.listdir('.') if n not in ('agent.py', "
              f"{PROTECTED!r}))}}\n")
    git(target.repo, "add", "-A")
    commit = commit_agent(target.repo, lister)
    response = target.post("/eval", {"split": "train", "commit": commit, "num_samples": 1})
    assert response.status_code == 200, response.text + "\n" + target.incidents()
    (sample,) = (target.sidecar.results_dir / "train" / "samples").iterdir()
    assert json.loads(sample.read_text())["output"]["answer"] == sorted(names)
    assert not (target.sidecar.admin_dir.parent / "pwned").exists()


@pytest.mark.parametrize("ref", ["ü", "refs/heads/\u210c", "main\u202e", "HEAD@{0}", "main:refs/x", "@{-1}",
                                 "--output=/tmp/x", "-oProxyCommand=x", "main~1", "main^{tree}"])
def test_hostile_ref_names_are_refused_before_git_runs(target: Target, ref: str) -> None:
    response = target.post("/submit", {"commit": ref})
    assert response.status_code == 422 and "invalid commit" in response.json()["error"], response.text
    assert target.incidents() == ""  # refused by the validator: no process ran


def test_concurrent_submits_all_settle(target: Target) -> None:
    commit_agent(target.repo, IMPROVED_AGENT)
    codes: list[int] = []
    lock = threading.Lock()

    def submit() -> None:
        response = target.post("/submit", {})
        with lock:
            codes.append(response.status_code)

    threads = [threading.Thread(target=submit) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert codes == [200] * 30
    fetches = [p for p in Path(target.sidecar.config["paths"]["work_dir"]).iterdir()]
    assert fetches == []  # every scratch repository was removed


def test_hanging_submits_never_starve_status(target: Target) -> None:
    """Sixty submits that each hang on a FIFO for the whole fetch timeout: with one shared pool of
    worker threads, /status queued behind them; each kind of request now has its own pool."""
    packed = target.repo / ".git" / "packed-refs"
    packed.unlink(missing_ok=True)
    os.mkfifo(packed)
    threads = [threading.Thread(target=target.post, args=("/submit", {"commit": "main"}, FETCH_TIMEOUT * 8))
               for _ in range(60)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    status = httpx.get(target.sidecar.url + "/status", timeout=FETCH_TIMEOUT * 8)
    waited = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=FETCH_TIMEOUT * 10)
    assert status.status_code == 200
    assert waited < FETCH_TIMEOUT / 2, f"/status waited {waited:.1f} s behind hanging submits"
