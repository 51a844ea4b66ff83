"""Attacks through HTTP requests and candidate code, against a real sidecar."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.redteam.conftest import NEEDS_ROOT, Target, start_target
from tests.support.mode_a import IMPROVED_AGENT, commit_agent
from tests.support.processes import pids_naming
from tests.support.sidecar import start_sidecar


@pytest.mark.parametrize("body", [
    {"sample_ids": ["test-0"]}, {"sample_ids": ["test-999"]}, {"sample_ids": ["test-0", "test-0"]},
    {"num_samples": 3}, {"num_samples": 10_000}, {"sample_ids": []}, {},
])
def test_no_access_answers_the_same_whatever_ids_it_names(target: Target, body: dict[str, object]) -> None:
    """Attack 5: 422 "not in split" for an absent id and 403 for a present one told which held-out
    ids exist. The tier gate now comes first."""
    response = target.post("/eval", {"split": "test", **body})
    assert response.status_code == 403
    assert response.json() == {"error": "split 'test' is no_access: it cannot be evaluated by the optimizer",
                               "fix": "evaluate a viewable or non_viewable split (see `vero harbor status`)"}


pytestmark = NEEDS_ROOT

def test_finalize_scores_once(target: Target) -> None:
    commit_agent(target.repo, IMPROVED_AGENT)
    assert target.post("/submit", {}).status_code == 200
    headers = target.sidecar.admin_headers()
    first = httpx.post(target.sidecar.url + "/finalize", headers=headers, timeout=300)
    assert first.status_code == 200 and first.json()["rewards"] == {"test_score": 1.0}
    runs = httpx.get(target.sidecar.url + "/experiments", headers=headers).json()
    # The optimizer submits another commit, hoping a second finalize scores it on the held-out split.
    commit_agent(target.repo, "def solve(row):\n    return {'answer': -1}\n")
    assert target.post("/submit", {}).status_code == 200
    second = httpx.post(target.sidecar.url + "/finalize", headers=headers, timeout=300)
    assert second.json() == first.json()
    assert httpx.get(target.sidecar.url + "/experiments", headers=headers).json() == runs


@pytest.fixture
def slow_scorer_target(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    """A benchmark whose scorer backtracks catastrophically on some outputs and quotes labels in
    its exceptions: both are the candidate's levers on trusted code."""
    scorer = tmp_path / "regex_scorer.py"
    scorer.write_text("import re\n"
                      "def score(output, row):\n"
                      "    answer = str(output.get('answer'))\n"
                      "    if answer == 'quote':\n"
                      "        raise ValueError('expected ' + str(row['answer']))\n"
                      "    return float(bool(re.fullmatch(r'(a+)+$', answer)))\n")
    first = start_target(tmp_path, root, monkeypatch)
    first.sidecar.stop()
    config = dict(first.sidecar.config, mode_a={**first.sidecar.config["mode_a"], "scorer": str(scorer)})
    for leftover in ("admin", "results", "work", "token"):
        shutil.rmtree(root / leftover, ignore_errors=True)
    running = Target(sidecar=start_sidecar(root, config, name="slow"), bench=first.bench)
    try:
        yield running
    finally:
        running.sidecar.stop()


def test_a_candidate_output_that_hangs_the_scorer_costs_one_sample(slow_scorer_target: Target) -> None:
    target = slow_scorer_target
    hostile = ("def solve(row):\n"
               "    return {'answer': 'a' * 40 + 'b' if row['id'].endswith(('0', '1')) else 'aaa'}\n")
    commit = commit_agent(target.repo, hostile)
    started = time.monotonic()
    response = target.post("/eval", {"split": "train", "commit": commit}, timeout=120)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 30
    samples = {p.stem: json.loads(p.read_text()) for p in (target.sidecar.results_dir / "train" / "samples").iterdir()}
    assert samples["train-0"]["error"].startswith("the scorer took longer than 4 s (error id E-")
    assert samples["train-2"]["score"] == 1.0  # the workers were replaced and scoring went on


def test_a_killed_sidecar_leaves_no_scorer_worker_behind(slow_scorer_target: Target, tmp_path: Path) -> None:
    target = slow_scorer_target
    commit = commit_agent(target.repo, "def solve(row):\n    return {'answer': 'a' * 60 + 'b'}\n")
    def evaluate() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the sidecar is killed under it
            target.post("/eval", {"split": "train", "commit": commit}, timeout=60)

    threading.Thread(target=evaluate, daemon=True).start()
    scorer = str(tmp_path / "regex_scorer.py")
    deadline = time.monotonic() + 30
    while not _busy(scorer) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _busy(scorer), "no scorer worker got to work"
    target.sidecar.stop(signal.SIGKILL)
    time.sleep(1.0)
    assert pids_naming(scorer) == []




def _busy(scorer: str) -> bool:
    """A worker of `scorer` is running on the CPU (the catastrophic regex)."""
    for pid in pids_naming(scorer):
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("R"):
                return True
        except (OSError, IndexError):
            continue
    return False


def test_a_scorer_exception_quoting_a_label_never_reaches_the_optimizer(slow_scorer_target: Target) -> None:
    target = slow_scorer_target
    commit = commit_agent(target.repo, "def solve(row):\n    return {'answer': 'quote'}\n")
    response = target.post("/eval", {"split": "train", "commit": commit, "num_samples": 2})
    assert response.status_code == 200
    text = "".join(p.read_text() for p in (target.sidecar.results_dir / "train").rglob("*.json"))
    assert "the scorer raised ValueError (error id E-" in text
    assert "expected 1" not in text and "expected" not in text  # the label (train-0's answer is 1)


def test_output_floods_cost_neither_memory_nor_disk(target: Target) -> None:
    flood = ("import sys\n"
             "def solve(row):\n"
             "    chunk = 'x' * (1 << 20)\n"
             "    for _ in range(400):\n"
             "        sys.stdout.write(chunk)\n"
             "        sys.stderr.write(chunk)\n"
             "    return {'answer': 0}\n")
    commit = commit_agent(target.repo, flood)
    response = target.post("/eval", {"split": "train", "commit": commit, "num_samples": 2})
    assert response.status_code == 200, response.text
    status = Path(f"/proc/{target.sidecar.proc.pid}/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    assert rss_kb < 400 * 1024, f"the sidecar's peak memory was {rss_kb} kB"


def test_a_memory_bomb_hits_the_address_space_limit(target: Target) -> None:
    bomb = ("def solve(row):\n"
            "    hog = bytearray(2 * 1024 * 1024 * 1024)\n"
            "    return {'answer': len(hog)}\n")
    commit = commit_agent(target.repo, bomb)
    response = target.post("/eval", {"split": "train", "commit": commit, "num_samples": 1})
    assert response.status_code == 200
    (sample,) = (target.sidecar.results_dir / "train" / "samples").iterdir()
    assert json.loads(sample.read_text())["error"].startswith("the entrypoint raised MemoryError (error id")


def _address(target: Target) -> tuple[str, int]:
    url = httpx.URL(target.sidecar.url)
    assert url.port is not None
    return url.host, url.port


def test_oversized_bodies_are_refused_unread(target: Target) -> None:
    with socket.create_connection(_address(target), timeout=10) as sock:
        sock.sendall(b"POST /eval HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 209715200\r\n\r\n{")
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")  # answered before the 200 MB arrive

    def chunks() -> Iterator[bytes]:
        yield b'{"split": "train", "sample_ids": ["'
        for _ in range(64):
            yield b"x" * (1 << 20)

    chunked = httpx.post(target.sidecar.url + "/eval", content=chunks(),
                         headers={"content-type": "application/json"}, timeout=60)
    assert chunked.status_code == 413


def test_slow_clients_do_not_hold_up_status(target: Target) -> None:
    """Hundreds of connections that send their headers one byte at a time (slowloris)."""
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def drip() -> None:
        while not stop.is_set():
            for sock in list(sockets):
                try:
                    sock.send(b"X")
                except OSError:
                    sockets.remove(sock)
            time.sleep(0.5)

    for _ in range(300):
        sock = socket.create_connection(_address(target))
        sock.send(b"POST /eval HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
        sockets.append(sock)
    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        timings = []
        for _ in range(20):
            started = time.monotonic()
            assert httpx.get(target.sidecar.url + "/status", timeout=10).status_code == 200
            timings.append(time.monotonic() - started)
        assert max(timings) < 2.0, timings
    finally:
        stop.set()
        for sock in sockets:
            sock.close()


def test_a_candidate_cannot_change_the_checkout_its_commit_shares(target: Target) -> None:
    """The evaluations of one commit share its checkout. A candidate that rewrites its own code and
    plants a module next to it must change neither that evaluation's later samples nor the next
    evaluation of the commit: the checkout is the sidecar's and read-only to the harness user."""
    hostile = (
        "import os\n"
        "HERE = os.path.dirname(os.path.abspath(__file__))\n"
        "def solve(row):\n"
        "    for path, text in ((__file__, '\\nsolve = lambda row: {\"answer\": -1}\\n'),\n"
        "                       (os.path.join(HERE, 'planted.py'), 'x = 1\\n')):\n"
        "        try:\n"
        "            with open(path, 'a') as handle:\n"
        "                handle.write(text)\n"
        "        except OSError:\n"
        "            pass\n"
        "    if os.path.exists(os.path.join(HERE, 'planted.py')):\n"
        "        return {'answer': -1}\n"
        "    left, right = row['question'].split('+')\n"
        "    return {'answer': int(left) + int(right)}\n")
    commit = commit_agent(target.repo, hostile)
    for _ in range(2):
        response = target.post("/eval", {"split": "train", "commit": commit})
        assert response.status_code == 200, response.text
        assert response.json()["aggregate"]["mean_score"] == 1.0
    work = Path(target.sidecar.config["paths"]["work_dir"])
    kept = list(work.glob("wt-*"))
    assert len(kept) == 1 and not (kept[0] / "planted.py").exists()  # one checkout served both
