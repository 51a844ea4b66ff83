"""HTTP client of the eval sidecar, used by `vero harbor eval|status|submit|finalize`."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from vero.container import CONTAINER
from vero.errors import VeroError

QUICK_TIMEOUT = 30.0


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
    """JSON over HTTP; any 4xx/5xx becomes a VeroError carrying the server's message."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def download(self, path: str, timeout: float | None = QUICK_TIMEOUT) -> bytes:
        """GET `path` and return the body's bytes (e.g. the session archive)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.get(self.base_url + path, headers=headers,
                                 timeout=httpx.Timeout(timeout, connect=10.0))
        except httpx.HTTPError as exc:
            raise VeroError(f"cannot reach the eval sidecar at {self.base_url}: {exc}", where=f"GET {path}",
                            fix=f"check that the eval sidecar is running and {CONTAINER.eval_url_env} is right",
                            exit_code=1) from None
        if response.status_code >= 400:
            try:
                payload = response.json()
            except json.JSONDecodeError:
                payload = None
            message = payload.get("error") if isinstance(payload, dict) else None
            fix = payload.get("fix") if isinstance(payload, dict) else None
            raise VeroError(f"{response.status_code}: {message or response.reason_phrase}", where=f"GET {path}",
                            fix=fix, exit_code=1)
        return response.content

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             timeout: float | None = QUICK_TIMEOUT) -> Any:
        """Send one request and return the decoded JSON response."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(method, self.base_url + path, json=body, headers=headers,
                                     timeout=httpx.Timeout(timeout, connect=10.0))
        except httpx.HTTPError as exc:
            raise VeroError(f"cannot reach the eval sidecar at {self.base_url}: {exc}",
                            where=f"{method} {path}",
                            fix=f"check that the eval sidecar is running and {CONTAINER.eval_url_env} is right",
                            exit_code=1) from None
        try:
            payload = response.json()
        except json.JSONDecodeError:
            payload = None
        if response.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            fix = payload.get("fix") if isinstance(payload, dict) else None
            detail = message or response.text[:500] or response.reason_phrase
            raise VeroError(f"{response.status_code}: {detail}", where=f"{method} {path}", fix=fix,
                            exit_code=1)
        if payload is None:
            raise VeroError(f"the sidecar answered {response.status_code} without JSON",
                            where=f"{method} {path}", exit_code=1)
        return payload
