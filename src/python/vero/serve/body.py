"""Strict JSON request bodies for the sidecar's POST endpoints.

FastAPI's own body handling reads a chunked body of any size into memory (the size limit
only sees a Content-Length header), lets a duplicated key silently override the first one,
accepts `NaN`/`Infinity`, and reports some parse failures as 400. This reader streams the
body with a hard size cap (413), accepts only a JSON content type or none (415), and turns
anything that is not exactly one standard JSON value with unique keys into a `BadInput`
(422) that says what is wrong, before a model validates it.
"""

from __future__ import annotations

import json
from email.message import Message
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError

from vero.core.rejections import BadInput
from vero.serve.api import validation_message

MAX_BODY_BYTES = 4 * 1024 * 1024
M = TypeVar("M", bound=BaseModel)


def is_json_content_type(value: str) -> bool:
    """`application/json` or `application/<anything>+json`, parameters ignored."""
    message = Message()
    message["content-type"] = value
    return message.get_content_type() == "application/json" or (
        message.get_content_maintype() == "application" and message.get_content_subtype().endswith("+json"))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key[:60]!r}")
        obj[key] = value
    return obj


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def parse_json(raw: bytes) -> Any:
    """Decode one standard JSON value (UTF-8, unique keys, no NaN/Infinity) or raise `BadInput`."""
    fix = "send one JSON object encoded as UTF-8, e.g. {\"split\": \"train\"}"
    if not raw.strip():
        raise BadInput("the request body is empty", fix=fix)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"the request body is not UTF-8 (byte {exc.start})", fix=fix) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_not_json)
    except RecursionError:
        raise BadInput("the request body nests too deeply", fix=fix) from None
    except ValueError as exc:
        # Python's own hints (e.g. "use sys.set_int_max_str_digits()") mean nothing to a client.
        reason = str(exc).split(";")[0]
        raise BadInput(f"the request body is not valid JSON: {reason}", fix=fix) from None


async def read_body(request: Request) -> bytes:
    """The raw body, refused with 413 as soon as it grows past MAX_BODY_BYTES (chunked too)."""
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json_content_type(content_type):
        raise HTTPException(415, f"unsupported content type {content_type[:80]!r}: send application/json")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_model(request: Request, model: type[M]) -> M:
    """The request body validated as `model`; every problem is one 4xx error."""
    data = parse_json(await read_body(request))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadInput(validation_message(exc)) from None
