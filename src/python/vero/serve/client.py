"""HTTP client of the eval sidecar, used by `vero harbor eval|status|submit|finalize|archive`: request
bodies and replies are the models of `vero.serve.api`."""

from __future__ import annotations

import os
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from vero.container import CONTAINER
from vero.errors import VeroError
from vero.models import describe
from vero.serve.api import ErrorReply

QUICK_TIMEOUT = 30.0
M = TypeVar("M", bound=BaseModel)


def sidecar_url() -> str:
    """The sidecar's base URL from `VERO_EVAL_URL` (`CONTAINER.eval_url_env`)."""
    name = CONTAINER.eval_url_env
    url = os.environ.get(name, "").strip()
    if not url:
        raise VeroError(f"{name} is not set", where="environment",
                        fix=f"export {name}={CONTAINER.eval_url} (set in the task's main container)")
    if not url.startswith(("http://", "https://")):
        raise VeroError(f"{name}={url!r} is not an http(s) URL", where="environment",
                        fix=f"export {name}={CONTAINER.eval_url}")
    return url.rstrip("/")


class SidecarClient:
    """JSON over HTTP; any 4xx/5xx becomes a VeroError carrying the server's `ErrorReply`."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, reply: type[M], body: BaseModel | None = None,
             timeout: float | None = QUICK_TIMEOUT) -> M:
        """Send one request (`body` without its unset fields) and parse the reply as `reply`."""
        response = self._send(method, path, body, timeout)
        try:
            return reply.model_validate_json(response.content)
        except ValidationError as exc:
            raise VeroError(f"the sidecar's reply is not a valid {reply.__name__} "
                            f"({describe(exc)})", where=f"{method} {path}",
                            fix=f"check that {CONTAINER.eval_url_env} names the eval sidecar", exit_code=1) from None

    def download(self, path: str, timeout: float | None = QUICK_TIMEOUT) -> bytes:
        """GET `path` and return the body's bytes (e.g. the session archive)."""
        return self._send("GET", path, None, timeout).content

    def _send(self, method: str, path: str, body: BaseModel | None, timeout: float | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        payload = body.model_dump(mode="json", exclude_none=True) if body is not None else None
        try:
            response = httpx.request(method, self.base_url + path, json=payload, headers=headers,
                                     timeout=httpx.Timeout(timeout, connect=10.0))
        except httpx.HTTPError as exc:
            raise VeroError(f"cannot reach the eval sidecar at {self.base_url}: {exc}",
                            where=f"{method} {path}",
                            fix=f"check that the eval sidecar is running and {CONTAINER.eval_url_env} is right",
                            exit_code=1) from None
        if response.status_code >= 400:
            raise _refusal(response, f"{method} {path}")
        return response


def _refusal(response: httpx.Response, where: str) -> VeroError:
    """The server's own words when it sent an `ErrorReply`, else the start of whatever it sent."""
    try:
        error = ErrorReply.model_validate_json(response.content)
    except ValidationError:
        message = response.text[:500] or response.reason_phrase
        return VeroError(f"{response.status_code}: {message}", where=where, exit_code=1)
    return VeroError(f"{response.status_code}: {error.error}", where=where, fix=error.fix, exit_code=1)
