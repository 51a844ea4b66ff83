"""The server's worker threads: all started before the first call, results and errors delivered."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from vero.serve.workers import Workers

REQUEST = contextvars.ContextVar("REQUEST", default="none")


def _named(prefix: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(prefix)]


def test_a_burst_starts_no_thread_and_runs_at_most_the_pool_at_once() -> None:
    workers = Workers(4, "burst")
    try:
        assert len(_named("burst-")) == 4 and all(t.is_alive() for t in _named("burst-"))
        lock = threading.Lock()
        running, most = 0, 0

        def work(index: int) -> tuple[int, str]:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.02)
            with lock:
                running -= 1
            return index, threading.current_thread().name

        async def burst() -> list[tuple[int, str]]:
            return await asyncio.gather(*(workers.run(work, index) for index in range(20)))

        results = asyncio.run(burst())
        assert [index for index, _ in results] == list(range(20))
        assert {name for _, name in results} <= {t.name for t in _named("burst-")}
        assert most == 4 and len(_named("burst-")) == 4
    finally:
        workers.close()


def test_errors_reach_the_caller_with_its_context() -> None:
    workers = Workers(1, "errors")

    def fail() -> None:
        raise ValueError(f"asked by {REQUEST.get()}")

    async def call() -> str:
        REQUEST.set("request-7")
        with pytest.raises(ValueError, match="asked by request-7"):
            await workers.run(fail)
        return await workers.run(REQUEST.get)

    try:
        assert asyncio.run(call()) == "request-7"
    finally:
        workers.close()


def test_a_call_whose_caller_went_away_leaves_the_thread_usable() -> None:
    workers = Workers(1, "gone")
    release = threading.Event()

    async def scenario() -> int:
        waiting = asyncio.create_task(workers.run(release.wait))
        await asyncio.sleep(0.05)
        waiting.cancel()
        release.set()
        return await workers.run(lambda: 42)

    try:
        assert asyncio.run(scenario()) == 42
    finally:
        workers.close()


def test_close_ends_every_thread() -> None:
    workers = Workers(3, "closing")
    workers.close()
    for thread in _named("closing-"):
        thread.join(timeout=10)
    assert _named("closing-") == []
