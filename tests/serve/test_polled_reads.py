"""`GET /status` and `GET /health` answered ahead of the framework: the same answers as the
framework's own routes, anything unusual handed to the framework, and no access-log line each."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx

from tests.support.mode_a import ModeABench
from tests.support.sidecar import serve_config
from vero.serve.app import PolledReads, QuietPolls, create_app
from vero.serve.config import ServeConfig
from vero.serve.sidecar import Sidecar


def _ask(app: Any, method: str, path: str) -> httpx.Response:
    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar") as client:
            return await client.request(method, path)
    return asyncio.run(ask())


async def _refuse(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError(f"the framework was asked for {scope['method']} {scope['path']}")


def test_polled_reads_answer_as_the_framework_does(bench: ModeABench, root: Path) -> None:
    sidecar = Sidecar(ServeConfig.model_validate(serve_config(root, bench)))
    try:
        framework = create_app(sidecar)
        for method, path in [("GET", "/status"), ("GET", "/health"), ("GET", "/status?split=x"),
                             ("POST", "/status"), ("PUT", "/health"), ("GET", "/statuses")]:
            slow, fast = _ask(framework, method, path), _ask(PolledReads(framework, sidecar), method, path)
            assert (fast.status_code, fast.headers["content-type"], fast.json()) == \
                   (slow.status_code, slow.headers["content-type"], slow.json()), (method, path)
        assert _ask(framework, "GET", "/status").json()["splits"]  # the comparison is of real answers
        # Answered without the framework at all:
        for path in ("/status", "/health"):
            assert _ask(PolledReads(_refuse, sidecar), "GET", path).status_code == 200
        # An answer that cannot be built goes the framework's way: a torn submission is its 500 with an error id.
        (Path(sidecar.config.paths.admin_dir) / "submission.json").write_text('{"commit": ')
        torn = _ask(PolledReads(framework, sidecar), "GET", "/status")
        assert torn.status_code == 500 and "(error id E-" in torn.json()["error"]
    finally:
        sidecar.close()


def test_polls_stay_out_of_the_access_log() -> None:
    def record(path: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                 ("127.0.0.1:5", "GET", path, "1.1", 200), None)
    quiet = QuietPolls()
    assert not quiet.filter(record("/status")) and not quiet.filter(record("/health"))
    assert not quiet.filter(record("/status?split=train"))
    assert quiet.filter(record("/eval")) and quiet.filter(record("/statuses"))
