"""The web app: a page for people at `/`, a JSON API for scripts, one trained run behind both.

Bad input always gets a JSON error with a 4xx status (never a traceback); a genuine bug is logged and
answered with a generic JSON 500. Model work runs in worker threads, so the event loop stays free.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at runtime, and the
# bound on top_k is a value local to create_app.
import functools
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, File, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monkeysee import __version__
from monkeysee.serve.schemas import (
    Box,
    Cam,
    DetectorInfo,
    ErrorResponse,
    Guess,
    Health,
    Photo,
    PredictResponse,
    SpeciesInfo,
    SpeciesList,
)
from monkeysee.serve.service import Answer, PhotoRejected, PhotoService

log = logging.getLogger("monkeysee.serve")

STATIC = Path(__file__).parent / "static"
MULTIPART_SLACK = 16 * 1024
"""Bytes allowed beyond the photo itself for the multipart envelope (boundaries, part headers)."""

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True)
class ServeConfig:
    """How to serve one trained run; `monkeysee serve` maps its options onto these fields."""

    run_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 10.0
    top_k: int = 3
    unknown_threshold: float | None = None
    max_megapixels: float = 50.0
    max_batch: int = 8
    max_concurrent: int = 8  # requests decoding or waiting for the model at once (bounds memory)
    precision: str = "auto"
    threads: int | None = None  # torch threads; the command sets them, the app does not

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


def create_app(config: ServeConfig, service: PhotoService | None = None) -> FastAPI:
    """The ASGI app for `config.run_dir` (loaded now, so a bad run fails before the server binds)."""
    service = service or PhotoService.from_run_dir(
        config.run_dir, max_pixels=config.max_pixels, max_batch=config.max_batch,
        unknown_threshold=config.unknown_threshold, precision=config.precision,
    )
    predictor = service.predictor
    manifest = predictor.run.manifest
    n_species = len(predictor.species)
    limiter: list[anyio.CapacityLimiter] = []  # made on first use, inside the event loop

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.open()
        yield
        service.close()

    app = FastAPI(
        title="monkeysee",
        version=__version__,
        description="Which monkey species is in a photo, how sure the model is, whether the photo shows "
        "none of the species it knows, and where it looked (Grad-CAM).",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the schema itself is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.config = config

    species_list = SpeciesList(species=[
        SpeciesInfo(index=i, label=s.label, common_name=s.display_name, latin_name=s.display_latin)
        for i, s in enumerate(predictor.species)
    ])

    def detector_info() -> DetectorInfo | None:
        d = predictor.detector
        return None if d is None else DetectorInfo(name=d.name, threshold=d.threshold, keep=d.keep)

    @app.get("/health", response_model=Health, tags=["service"], summary="Is the model loaded?")
    async def health() -> Health:
        return Health(status="ok", version=__version__, backbone=manifest.backbone,
                      species_count=n_species, input_size=manifest.preprocess.input_size,
                      explain_layer=service.layer_name, precision=predictor.precision,
                      detector=detector_info())

    @app.get("/api/species", response_model=SpeciesList, tags=["model"],
             summary="The species the model knows")
    async def species() -> SpeciesList:
        return species_list

    @app.post(
        "/api/predict",
        response_model=PredictResponse,
        tags=["model"],
        summary="Name the monkey species in a photo",
        description="Send one photo as the multipart/form-data field `photo`. The answer names the best "
        "guesses with their probabilities, says whether the photo looks like none of the known species "
        "(`unknown`), and by default shows where the model looked (a Grad-CAM PNG as a data URL).",
        responses={
            400: {"model": ErrorResponse, "description": "Empty upload or malformed multipart body"},
            413: {"model": ErrorResponse, "description": "Upload larger than the limit, or too many pixels"},
            415: {"model": ErrorResponse, "description": "Not an image (recognised by content, not by name)"},
            422: {"model": ErrorResponse,
                  "description": "Missing `photo` field, bad option, or a damaged or unusable image"},
        },
    )
    async def predict(
        response: Response,
        photo: Annotated[UploadFile, File(description="the photo (JPEG, PNG, WebP, ...); read by content")],
        top_k: Annotated[int | None, Query(ge=1, le=n_species,
                                           description="how many guesses to list (default: --top-k)")] = None,
        cam: Annotated[bool, Query(description="include the Grad-CAM overlay")] = True,
        heatmap: Annotated[bool, Query(description="also the map alone, on the photo's shape")] = False,
    ) -> PredictResponse:
        start = time.perf_counter()
        data = await photo.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise PhotoRejected(413, "too_large", f"upload is larger than {config.max_upload_mb:g} MB",
                                "send a smaller photo (a few megapixels is plenty)", _name(photo))
        if not limiter:
            limiter.append(anyio.CapacityLimiter(config.max_concurrent))
        work = functools.partial(service.answer, data, _name(photo), top_k or config.top_k, cam, heatmap)
        answer = await anyio.to_thread.run_sync(work, limiter=limiter[0])
        response.headers["server-timing"] = f"total;dur={(time.perf_counter() - start) * 1000:.1f}"
        response.headers["cache-control"] = "no-store"
        return _response(answer, detector_info())

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(UploadLimit, max_body=config.max_upload_bytes + MULTIPART_SLACK,
                       fix=f"send a photo smaller than {config.max_upload_mb:g} MB")
    return app


def _name(photo: UploadFile) -> str:
    """The client's file name, for error messages only; never used as a path."""
    name = (photo.filename or "upload").replace("\n", " ").replace("\r", " ")
    return name[:80] or "upload"


def _response(answer: Answer, detector: DetectorInfo | None) -> PredictResponse:
    d = answer.prediction.to_dict()
    cam = None
    if answer.cam is not None:
        c = answer.cam
        cam = Cam(method=c.method, layer=c.layer, species=c.species, overlay=c.overlay, heatmap=c.heatmap,
                  box=Box(left=c.box[0], top=c.box[1], width=c.box[2], height=c.box[3]))
    return PredictResponse(
        species=d["species"], latin_name=d["latin_name"], label=d["label"], probability=d["probability"],
        unknown=d["unknown"], unknown_score=d["unknown_score"], detector=detector,
        top=[Guess(**g) for g in d["top"]], photo=Photo(width=answer.width, height=answer.height), cam=cam,
    )


# --- errors ------------------------------------------------------------------------------------------

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
               415: "unsupported_media_type", 422: "invalid_request"}


def error_response(status: int, code: str, detail: str, fix: str | None = None,
                   errors: list[dict[str, Any]] | None = None, headers: Mapping[str, str] | None = None,
                   ) -> JSONResponse:
    body = ErrorResponse(error=code, detail=detail, fix=fix or None, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PhotoRejected)
    async def rejected(request: Request, exc: PhotoRejected) -> JSONResponse:
        where = f"{exc.path}: " if exc.path else ""
        return error_response(exc.status, exc.code, f"{where}{exc.problem}", exc.fix)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        fix = None
        if exc.status_code == 413:
            limit = request.app.state.config.max_upload_mb
            fix = f"send a photo smaller than {limit:g} MB"
        elif exc.status_code == 405:
            allow = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow")
            fix = f"use {allow}" if allow else None
        return error_response(exc.status_code, code, str(exc.detail), fix, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        fix = "send the photo as the multipart/form-data file field 'photo'" if any(
            "photo" in e["loc"] for e in errors) else "see /openapi.json for the accepted options"
        return error_response(422, "invalid_request", detail, fix, errors)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "something went wrong on the server; it has been logged")


# --- middleware (plain ASGI: no per-request task or body buffering) ---------------------------------


class UploadTooLarge(HTTPException):
    """Raised while the body streams in, once it passes the limit (FastAPI re-raises HTTPExceptions)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit:,} bytes")


class UploadLimit:
    """Refuse request bodies over `max_body` bytes: at once when Content-Length says so, else as they
    stream in, so an oversized upload is never buffered or spooled to disk."""

    def __init__(self, app: ASGIApp, max_body: int, fix: str = "send a smaller photo") -> None:
        self.app = app
        self.max_body = max_body
        self.fix = fix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await error_response(400, "bad_request", "Content-Length header is not a number",
                                 "send a valid Content-Length")(scope, receive, send)
            return
        if declared is not None and declared > self.max_body:
            detail = str(UploadTooLarge(self.max_body).detail)
            await error_response(413, "too_large", detail, self.fix)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise UploadTooLarge(self.max_body)
            return message

        await self.app(scope, limited, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None when absent, -1 when unreadable."""
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


class SecurityHeaders:
    """Add a strict Content-Security-Policy and friends to every response: the page needs nothing
    from elsewhere, so nothing from elsewhere is allowed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, with_headers)
