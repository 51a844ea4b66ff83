"""The sidecar's HTTP API (its models: `vero.serve.api`) and the server that runs it.

Every error is an `ErrorReply`, JSON `{"error": ..., "fix": ...}`: bad input 422 (bodies are read by
`vero.serve.body`: 413 when too large, 415 when not JSON), unknown split or dataset 400, tier
gate or bad token 403, budget 429, disabled submit 409, an evaluation cut short by shutdown
503, or one that could not run at all (nothing scored, nothing charged: retry) 503, a full disk
507 (whatever failed to be written). A request the app did not expect is a 500 with no internals
in the body but an error id; bad input never reaches that path. What a trusted tool said (git, a
scorer) is never in a body: it goes to the incident log under the error id the body names.
Blocking work runs in worker threads, one pool per kind of request. /health and /status are
answered on the event loop from state the sidecar keeps in memory (`Sidecar.status`), so they
never queue behind evaluations, a thread pool or the ledger lock.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException  # pants: no-infer-dep
from starlette.types import ASGIApp, Receive, Scope, Send  # pants: no-infer-dep

from vero.core.engine import EvalRequest
from vero.core.experiments import ExperimentRecord
from vero.core.incidents import new_error_id
from vero.core.rejections import Rejected
from vero.core.storage import is_disk_full
from vero.core.strategy import EvaluationCancelled, InfrastructureFailure
from vero.errors import VeroError
from vero.serve.api import (
    ErrorReply,
    FinalizeReport,
    Health,
    StatusResponse,
    Submission,
    SubmitRequest,
)
from vero.serve.body import MAX_BODY_BYTES, read_model
from vero.serve.config import ServeConfig
from vero.serve.finalize import finalize
from vero.serve.sidecar import Sidecar
from vero.serve.token import token_matches
from vero.serve.workers import Workers
from vero.session.admin import sidecar_archive

log = logging.getLogger(__name__)

STATUS_BY_KIND = {"bad_input": 422, "unknown": 400, "forbidden": 403, "budget": 429, "conflict": 409}
THREADS = {"eval": 64, "submit": 16, "admin": 8}
POLLED_PATHS = frozenset({"/health", "/status"})
T = TypeVar("T")


def _error(status: int, message: str, fix: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorReply(error=message, fix=fix).model_dump(exclude_none=True), status_code=status)


class _BodyLimit:
    """Refuse a declared Content-Length above MAX_BODY_BYTES before reading (413); bodies without
    one (chunked) are capped while they are read (`vero.serve.body`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", []):
                if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                    refusal = _error(413, f"request body larger than {MAX_BODY_BYTES} bytes")
                    await refusal(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class PolledReads:
    """`GET /health` and `GET /status` answered from memory ahead of the framework's routing,
    validation and exception layers: the two endpoints clients poll stay cheap for the event loop
    while evaluations run. Anything unusual about such a request (another method, a body, an
    error while building the answer) goes the normal way, which answers it as before."""

    def __init__(self, app: ASGIApp, sidecar: Sidecar) -> None:
        self.app = app
        self.sidecar = sidecar

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in POLLED_PATHS:
            try:
                model = Health(status="ok") if scope["path"] == "/health" else self.sidecar.status()
                body = model.model_dump_json().encode()
            except Exception:
                body = None
            if body is not None:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class QuietPolls(logging.Filter):
    """Keep the polled endpoints out of the access log: a client polling /status every second
    would bury every evaluation's line."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        path = args[2] if isinstance(args, tuple) and len(args) > 2 and isinstance(args[2], str) else ""
        return path.partition("?")[0] not in POLLED_PATHS


class _Unauthorized(Exception):
    pass


def create_app(sidecar: Sidecar) -> FastAPI:
    """The FastAPI application serving `sidecar`."""
    pools: dict[str, Workers] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Separate thread pools: slow submits or evaluations never hold up the admin's requests.
        for name, threads in THREADS.items():
            pools[name] = Workers(threads, f"vero-{name}")
        try:
            yield
            await asyncio.to_thread(sidecar.close)  # not behind whatever the admin pool still runs
        finally:
            for workers in pools.values():
                workers.close()

    app = FastAPI(title="vero eval sidecar", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.add_middleware(_BodyLimit)

    async def in_thread(pool: str, func: Callable[..., T], *args: Any) -> T:
        return await pools[pool].run(func, *args)

    def keep_detail(exc: VeroError) -> None:
        # What a trusted tool said stays in the admin log; the client sees the message and its id.
        if exc.detail is not None and exc.error_id is not None:
            sidecar.incidents.record(exc.error_id, exc.what, exc.detail)

    def out_of_space(what: str) -> JSONResponse:
        paths = sidecar.config.paths
        log.error("out of disk space: %s", what)
        return _error(507, f"the eval sidecar is out of disk space: {what}",
                      f"free space on the sidecar's volumes (admin {paths.admin_dir}, results "
                      f"{paths.results_dir}, work {paths.work_dir}) and retry; `vero harbor status` shows "
                      "the budget actually spent")

    def require_admin(request: Request) -> None:
        if not token_matches(request.headers.get("authorization"), sidecar.token):
            raise _Unauthorized

    @app.exception_handler(Rejected)
    async def on_rejected(_: Request, exc: Rejected) -> JSONResponse:
        keep_detail(exc)
        return _error(STATUS_BY_KIND[exc.kind], exc.what, exc.fix)

    @app.exception_handler(EvaluationCancelled)
    async def on_cancelled(_: Request, exc: EvaluationCancelled) -> JSONResponse:
        return _error(503, exc.what, exc.fix)

    @app.exception_handler(InfrastructureFailure)
    async def on_infrastructure(_: Request, exc: InfrastructureFailure) -> JSONResponse:
        error_id = exc.error_id or new_error_id()  # what harbor said stays in the incident log
        sidecar.incidents.record(error_id, exc.what, exc.detail or "")
        return _error(503, f"{exc.what} (error id {error_id})", exc.fix)

    @app.exception_handler(VeroError)
    async def on_vero_error(_: Request, exc: VeroError) -> JSONResponse:
        if is_disk_full(exc):
            return out_of_space(exc.what)
        error_id = exc.error_id or new_error_id()
        sidecar.incidents.record(error_id, exc.render(), exc.detail or "")
        return _error(500, f"{exc.what} (error id {error_id})" if exc.error_id is None else exc.what, exc.fix)

    @app.exception_handler(_Unauthorized)
    async def on_unauthorized(_: Request, __: _Unauthorized) -> JSONResponse:
        return _error(403, "missing or invalid admin token", "send Authorization: Bearer <admin token>")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, OSError) and is_disk_full(exc):
            return out_of_space(exc.strerror or str(exc))
        error_id = new_error_id()
        log.exception("unexpected error %s", error_id, exc_info=exc)
        sidecar.incidents.record(error_id, "unexpected error", f"{type(exc).__name__}: {exc}")
        return _error(500, f"internal error in the eval sidecar (error id {error_id})", "see the sidecar log")

    @app.get("/health")
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/status")
    async def status() -> StatusResponse:
        return sidecar.status()

    @app.post("/eval", response_model=None)
    async def evaluate(request: Request) -> Response:
        body = await read_model(request, EvalRequest)
        # Serialized by the model itself, in the worker thread: the framework would validate the
        # reply again and walk it through its generic encoder on the event loop, about 2 ms of
        # each evaluation that /status would wait behind.
        reply = await in_thread("eval", lambda: sidecar.evaluate(body).model_dump_json())
        return Response(reply, media_type="application/json")

    @app.post("/submit")
    async def submit(request: Request) -> Submission:
        body = await read_model(request, SubmitRequest)
        return await in_thread("submit", sidecar.submit, body)

    @app.post("/finalize")
    async def run_finalize(request: Request) -> FinalizeReport:
        require_admin(request)
        return await in_thread("admin", finalize, sidecar)

    @app.get("/session")
    async def session(request: Request) -> Response:
        # The session archive for the verifier's test.sh (secret values redacted).
        require_admin(request)
        data = await in_thread("admin", sidecar_archive, sidecar.config, sidecar.redactor)
        return Response(content=data, media_type="application/gzip")

    @app.get("/experiments")
    async def experiments(request: Request) -> list[ExperimentRecord]:
        require_admin(request)
        return await in_thread("admin", sidecar.db.all)

    return app


class _Server(uvicorn.Server):
    """uvicorn's server, which also kills running candidates as soon as SIGTERM/SIGINT arrives."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        log.warning("received %s: stopping evaluations and shutting down", signal.Signals(sig).name)
        self._on_signal()
        super().handle_exit(sig, frame)


def serve(config: ServeConfig, *, host: str | None = None, port: int | None = None) -> None:
    """Start the sidecar (see `Sidecar`) and serve until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sidecar = Sidecar(config)
    logging.getLogger("uvicorn.access").addFilter(QuietPolls())
    # Nothing sits in front of the sidecar: forwarded headers are not honoured (proxy_headers off).
    server = _Server(uvicorn.Config(PolledReads(create_app(sidecar), sidecar), host=host or config.host,
                                    port=port or config.port, log_level="info", timeout_graceful_shutdown=10,
                                    access_log=True, proxy_headers=False),
                     on_signal=sidecar.stop)
    log.info("eval sidecar %s ready (mode %s, dataset %s)", config.name, config.mode,
             sidecar.catalog.dataset_id)
    server.run()
