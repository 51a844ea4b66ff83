"""Secret values never reach the optimizer's view of results, whatever the candidate prints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.mode_a import ModeABench, commit_agent
from tests.support.sidecar import serve_config
from vero.core.engine import EvalRequest
from vero.core.redaction import Redactor
from vero.serve.config import ServeConfig
from vero.serve.sidecar import Sidecar

SECRET = "sk-live-0123456789abcdef"
LEAKY_AGENT = (
    "import os, sys\n"
    "def solve(row):\n"
    "    key = os.environ['VERO_TEST_API_KEY']\n"
    "    print('debug', key, file=sys.stderr)\n"
    "    if row['id'].endswith('0'):\n"
    "        raise RuntimeError('leaking ' + key)\n"
    "    return {'answer': 0, 'echo': key, key: [key + '!']}\n"
)


def test_redactor_replaces_longest_first_everywhere() -> None:
    redactor = Redactor({"A": "abcd", "B": "abcdefgh", "SHORT": "xy"})
    assert redactor.text("..abcdefgh..abcd..xy") == "..[redacted B]..[redacted A]..xy"
    assert redactor.json({"abcd": ["abcdefgh", 1, None, {"k": "abcd"}]}) == {
        "[redacted A]": ["[redacted B]", 1, None, {"k": "[redacted A]"}]
    }
    assert Redactor.too_short({"A": "abcd", "SHORT": "xy", "EMPTY": ""}) == ["SHORT"]


def test_a_leaky_candidate_cannot_show_the_secret(bench: ModeABench, root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERO_TEST_API_KEY", SECRET)
    sidecar = Sidecar(ServeConfig.model_validate(serve_config(root, bench, secrets=["VERO_TEST_API_KEY"])))
    try:
        commit = commit_agent(bench.agent_repo, LEAKY_AGENT)
        response = sidecar.evaluate(EvalRequest(split="train", commit=commit))
        assert SECRET not in response.model_dump_json()
        shown = [p.read_text() for p in Path(sidecar.config.paths.results_dir).rglob("*") if p.is_file()]
        assert shown, "the viewable split must have written per-sample results"
        assert not any(SECRET in text for text in shown)
        assert any("[redacted VERO_TEST_API_KEY]" in text for text in shown)
        # The trusted side still holds the real output: redaction is only for the optimizer's view.
        experiments = Path(sidecar.config.paths.admin_dir) / "experiments"
        stored = [p.read_text() for p in experiments.rglob("*.json")]
        assert any(SECRET in text for text in stored)
    finally:
        sidecar.close()
        os.environ.pop("VERO_TEST_API_KEY", None)
