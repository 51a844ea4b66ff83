"""Worker threads for the server's blocking calls, every one started before the first request.

A thread started on demand makes the event loop wait until the new thread runs (`Thread.start`
waits for it): when fifty clients send their first evaluation at once, the loop started some
twenty-five threads in a row, on two cores busy with the load, and every `/status` waited behind
them (the probe of `bench/serve_load.py` saw up to 90 ms). These threads exist from the start and
stay: a burst only queues work for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[..., Any], tuple[Any, ...]]


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the request is gone (the server is stopping)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Workers:
    """`threads` started threads; `run` calls a function in one of them from the event loop, at
    most `threads` at once (the rest wait in order)."""

    def __init__(self, threads: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Daemon threads: a call still stuck in a candidate's evaluation never holds up the exit.
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{index}", daemon=True)
                         for index in range(threads)]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, context, func, args = job
            try:
                result, error = context.run(func, *args), None
            except BaseException as exc:  # handed to the awaiting request, as if raised there
                result, error = None, exc
            # A closed loop raises RuntimeError: nobody waits for this answer any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, future, result, error)
            del job, future, result, error  # no reference to the last answer lingers in an idle thread

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """The result of `func(*args)`, called in one of the threads with this task's context."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, contextvars.copy_context(), func, args))
        return await future

    def close(self) -> None:
        """Let each thread end once the calls queued before are done."""
        for _ in self._threads:
            self._jobs.put(None)
