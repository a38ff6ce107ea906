"""The web app: a page for people at `/`, a JSON API for scripts, one trained run behind both.

Bad input always gets a JSON error with a 4xx status (never a traceback); a genuine bug is logged and
answered with a generic JSON 500; an overloaded server answers a JSON 503. Model work runs in worker
threads, so the event loop stays free.

Memory and slow clients: at most `max_uploads` request bodies are in flight (arriving, waiting or being
answered), at most `max_uploads_per_client` of them from one client address (beyond either, a JSON 503);
each must arrive within `upload_timeout` seconds with no gap longer than `idle_timeout` (else a JSON 408);
and every photo reserves what decoding and answering it take (`limits.photo_cost`) from
`decode_budget_mb` before it is decoded, waiting its turn when the budget is in use. When the budget is
free again after a burst, freed memory goes back to the OS (`runtime.trim_malloc`).
`ServeConfig.memory_ceiling_bytes` adds these up: the most memory photos can take beyond the model's own,
whatever is uploaded.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at runtime, and the
# bound on top_k is a value local to create_app.
import functools
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import FastAPI, File, Query, Request, Response, UploadFile
from fastapi import Path as FastAPIPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monkeysee import __version__
from monkeysee.data.collection import collection_mask
from monkeysee.data.images import PhotoHeader, read_header
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.thumbnails import MAX_BYTES as MAX_THUMBNAIL_BYTES
from monkeysee.data.thumbnails import MEDIA_TYPE
from monkeysee.errors import ConfigError, ImageError
from monkeysee.predict import Predictor
from monkeysee.runtime import trim_malloc
from monkeysee.serve.config import MB, ServeConfig
from monkeysee.serve.limits import (
    MemoryBudget,
    UploadLimit,
    UploadTimeout,
    error_response,
    photo_cost,
)
from monkeysee.serve.log import FIX_JSON, PREFIX, SAVE_PATH, add_log
from monkeysee.serve.schemas import (
    Box,
    Cam,
    DetectorInfo,
    ErrorResponse,
    Evidence,
    Guess,
    Health,
    Photo,
    PredictResponse,
    Quality,
    SpeciesInfo,
    SpeciesList,
)
from monkeysee.serve.service import Answer, PhotoRejected, PhotoService, rejection
from monkeysee.sightings import MAX_PHOTOS

log = logging.getLogger("monkeysee.serve")

STATIC = Path(__file__).parent / "static"
MULTIPART_SLACK = 16 * 1024
"""Bytes allowed beyond the photo itself for the multipart envelope (boundaries, part headers)."""
FORM_BYTES = 64 * 1024
"""Bytes allowed in a sighting's save for its text fields (place, note, time, key)."""
OPEN_PATHS = frozenset({"/", "/health", "/openapi.json"})
"""Paths answered without the access token (with `/static/...`): the page must load to ask for it."""

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


PREDICT_DESCRIPTION = (
    "Send one photo as the multipart/form-data field `photo`. The answer names the best guesses with their "
    "probabilities, says whether the photo looks like none of the known species (`unknown`), and by default "
    "shows where the model looked (a Grad-CAM PNG as a data URL).")


PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Empty upload or malformed multipart body"},
    401: {"model": ErrorResponse, "description": "Access token missing or wrong (when one is set)"},
    408: {"model": ErrorResponse, "description": "The upload did not arrive in time"},
    413: {"model": ErrorResponse,
          "description": "Upload larger than the limit, or too many pixels or decoding memory"},
    415: {"model": ErrorResponse,
          "description": "Not an image, or not a photo format (recognised by content, not by name)"},
    422: {"model": ErrorResponse,
          "description": "Missing `photo` field, bad option, or a damaged or unusable image"},
    503: {"model": ErrorResponse, "description": "Too many uploads or connections at once"},
}
"""The documented error answers of /api/predict, each with the JSON error body."""


def create_app(config: ServeConfig, service: PhotoService | None = None) -> FastAPI:
    """The ASGI app for `config.run_dir` (loaded now, so a bad run fails before the server binds)."""
    service = service or PhotoService.from_run_dir(
        config.run_dir, max_pixels=config.max_pixels, max_batch=config.max_batch,
        unknown_threshold=config.unknown_threshold, precision=config.precision,
        collection=config.collection,
    )
    predictor = service.predictor
    n_species = len(predictor.species)
    budget = MemoryBudget(config.decode_budget_bytes, on_idle=trim_malloc)
    workers: list[anyio.Semaphore] = []  # made on first use, inside the event loop

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workers[:] = [anyio.Semaphore(config.max_concurrent)]  # one per event loop the app runs in
        service.open()
        yield
        service.close()
        app.state.log.close()

    app = _fastapi(lifespan)
    app.state.service = service
    app.state.config = config
    app.state.budget = budget

    detector_info = _add_info_routes(app, service)

    @app.post(
        "/api/predict",
        response_model=PredictResponse,
        tags=["model"],
        summary="Name the monkey species in a photo",
        description=PREDICT_DESCRIPTION,
        responses=PREDICT_ERRORS,
    )
    async def predict(
        response: Response,
        photo: Annotated[UploadFile, File(description="the photo (JPEG, PNG, WebP, ...); read by content")],
        top_k: Annotated[int | None, Query(ge=1, le=n_species,
                                           description="how many guesses to list (default: --top-k)")] = None,
        cam: Annotated[bool, Query(description="include the Grad-CAM overlay")] = True,
        heatmap: Annotated[bool, Query(description="also the map alone, on the photo's shape")] = False,
        collection: Annotated[str | None, Query(
            max_length=10_000, description="comma-separated species (labels, common or Latin names) of "
            "this zoo or enclosure: a species outside them is never the answer (default: the served "
            "collection, else every species)")] = None,
    ) -> PredictResponse:
        start = time.perf_counter()
        mask = _collection(collection, predictor)
        if not workers:
            workers.append(anyio.Semaphore(config.max_concurrent))
        name = _name(photo)
        async with workers[0]:  # the upload's bytes are read into memory only here
            data = await photo.read(config.max_upload_bytes + 1)
            if len(data) > config.max_upload_bytes:
                raise PhotoRejected(413, "too_large", f"upload is larger than {config.max_upload_mb:g} MB",
                                    "send a smaller photo (a few megapixels is plenty)", name)
            header = await anyio.to_thread.run_sync(_header, data, name, config, service.preprocess)
            async with budget.reserve(photo_cost(header)):
                work = functools.partial(service.answer, data, name, top_k or config.top_k, cam, heatmap,
                                         header=header, collection=mask)
                answer = await anyio.to_thread.run_sync(work)
        response.headers["server-timing"] = f"total;dur={(time.perf_counter() - start) * 1000:.1f}"
        response.headers["cache-control"] = "no-store"
        return _response(answer, detector_info())

    _add_evidence(app, predictor)
    add_log(app, config, service, budget,
            functools.partial(_header, config=config, preprocess=service.preprocess))
    _add_page(app)
    _add_error_handlers(app)
    _add_middleware(app, config)
    return app


def _add_info_routes(app: FastAPI, service: PhotoService) -> Callable[[], DetectorInfo | None]:
    """/health and /api/species; returns what the answers say about the unknown detector."""
    predictor = service.predictor
    manifest = predictor.run.manifest
    species_list = _species_list(predictor)

    def detector_info() -> DetectorInfo | None:
        d = predictor.detector
        return None if d is None else DetectorInfo(name=d.name, threshold=d.threshold, keep=d.keep)

    @app.get("/health", response_model=Health, tags=["service"], summary="Is the model loaded?")
    async def health() -> Health:
        return Health(status="ok", version=__version__, backbone=manifest.backbone,
                      species_count=len(predictor.species), input_size=manifest.preprocess.input_size,
                      explain_layer=service.layer_name, precision=predictor.precision,
                      detector=detector_info())

    @app.get("/api/species", response_model=SpeciesList, tags=["model"],
             summary="The species the model knows")
    async def species() -> SpeciesList:
        return species_list

    return detector_info


def _fastapi(lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]]) -> FastAPI:
    return FastAPI(
        title="monkeysee",
        version=__version__,
        description="Which monkey species is in a photo, how sure the model is, whether the photo shows "
        "none of the species it knows, and where it looked (Grad-CAM).",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the schema itself is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,  # its redirects are absolute URLs built from the client's Host header
    )


def _collection(names: str | None, predictor: Predictor) -> np.ndarray | None:
    """The species mask a request's `collection` lists, or None (the served one); a name the model does
    not know is a 422 naming it."""
    if names is None:
        return None
    try:
        return collection_mask([n for n in names.split(",") if n.strip()], predictor.species,
                               where="collection")
    except ConfigError as exc:
        raise PhotoRejected(422, "unknown_species", exc.problem, exc.fix) from None


def _species_list(predictor: Predictor) -> SpeciesList:
    return SpeciesList(species=[
        SpeciesInfo(index=i, label=s.label, common_name=s.display_name, latin_name=s.display_latin)
        for i, s in enumerate(predictor.species)
    ])


def _add_evidence(app: FastAPI, predictor: Predictor) -> None:
    """GET /api/evidence/{number}: a training photo's thumbnail, by its number in the evidence bank (an
    integer, so no path is ever built from the request; at most `thumbnails.MAX_BYTES`)."""
    evidence = predictor.evidence

    @app.get("/api/evidence/{number}", tags=["model"], summary="A training photo's thumbnail",
             response_class=Response, responses={200: {"content": {MEDIA_TYPE: {}}},
                                                 404: {"model": ErrorResponse},
                                                 422: {"model": ErrorResponse}})
    async def thumbnail(number: Annotated[int, FastAPIPath(ge=0, description="the training photo's number, "
                                                           "as in the answer's evidence")]) -> Response:
        if evidence is None or number >= len(evidence.thumbnails):
            raise HTTPException(404, "no such training photo" if evidence is not None
                                else "this run has no evidence bank")
        data = await anyio.to_thread.run_sync(evidence.thumbnails.read, number)
        if len(data) > MAX_THUMBNAIL_BYTES:
            raise HTTPException(404, "that thumbnail is larger than thumbnails are made")
        return Response(data, media_type=MEDIA_TYPE, headers={"cache-control": "private, max-age=86400"})


def _add_page(app: FastAPI) -> None:
    """The web page: index.html at /, its script and style under /static."""
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _add_middleware(app: FastAPI, config: ServeConfig) -> None:
    # The last added runs first: headers on every answer, then the token, then the upload limits.
    save_body = MAX_PHOTOS * (config.max_upload_bytes + MULTIPART_SLACK) + FORM_BYTES
    app.add_middleware(UploadLimit, max_body=config.max_upload_bytes + MULTIPART_SLACK,
                       fix=f"send a photo smaller than {config.max_upload_mb:g} MB",
                       max_uploads=config.max_uploads, timeout=config.upload_timeout,
                       idle=config.idle_timeout, per_client=config.max_uploads_per_client,
                       larger={SAVE_PATH: save_body})
    if config.token:
        app.add_middleware(TokenAuth, token=config.token, keepers=app.state.known_token)
    app.add_middleware(SecurityHeaders)


def _header(data: bytes, name: str, config: ServeConfig, preprocess: Preprocess) -> PhotoHeader:
    """The photo's header checked against the server's limits, or the PhotoRejected saying why not; its
    costs are those of decoding it no larger than the model (`preprocess`) needs."""
    try:
        header = read_header(data, name, config.max_pixels, config.max_decode_bytes, preprocess=preprocess)
    except ImageError as exc:
        raise rejection(exc) from None
    cost = photo_cost(header)
    if cost > config.decode_budget_bytes:
        raise PhotoRejected(413, "too_many_pixels",
                            f"photo is {header.width}x{header.height} pixels; decoding and answering it "
                            f"take about {cost / MB:,.0f} MB, more than the server's budget of "
                            f"{config.decode_budget_mb:g} MB", "send a smaller photo (a few megapixels is "
                            "plenty)", name)
    return header


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
        quality=Quality(**d["quality"]) if d.get("quality") else None, verdict=d["verdict"],
        top=[Guess(**g) for g in d["top"]], photo=Photo(width=answer.width, height=answer.height), cam=cam,
        rank=d.get("rank"), taxon=d.get("taxon"), taxon_probability=d.get("taxon_probability"),
        evidence=Evidence.model_validate(d["evidence"]) if d.get("evidence") else None,
    )


# --- errors ------------------------------------------------------------------------------------------

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               408: "timeout", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
               503: "busy"}
FIX_MULTIPART = ("send the photo as multipart/form-data, the file in the field 'photo' "
                 "(e.g. curl -F photo=@monkey.jpg URL)")


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
        elif exc.status_code == 400 and str(exc.detail).startswith("Part exceeded"):
            fix = "shorten the text field (a note is at most a few thousand characters)"
        elif exc.status_code == 400 and request.url.path.startswith(PREFIX) and request.url.path != SAVE_PATH:
            fix = FIX_JSON
        elif exc.status_code == 400:
            fix = FIX_MULTIPART
        elif isinstance(exc, UploadTimeout):
            fix = exc.fix
        elif exc.status_code == 405:
            allow = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow")
            fix = f"use {allow}" if allow else None
        return error_response(exc.status_code, code, str(exc.detail), fix,
                              headers=dict(exc.headers) if exc.headers else None)

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


class TokenAuth:
    """Refuse every request but the page, its files and /health without `Authorization: Bearer <token>`
    (compared in constant time), or a keeper's token when `keepers` says it is one; runs before the
    upload guard, so strangers cannot even hold a slot."""

    def __init__(self, app: ASGIApp, token: str,
                 keepers: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self.app = app
        self.expected = f"bearer {token}".encode()
        self.keepers = keepers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope["path"]) or self._allowed(scope) \
                or await self._keeper(scope):
            await self.app(scope, receive, send)
            return
        await error_response(
            401, "unauthorized",
            "this server needs its access token, and the request had none or a wrong one",
            "send the header 'Authorization: Bearer TOKEN', TOKEN being the one monkeysee serve was "
            "started with (--token or MONKEYSEE_TOKEN)",
            headers={"www-authenticate": 'Bearer realm="monkeysee"'})(scope, receive, send)

    @staticmethod
    def _open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith("/static/")

    def _allowed(self, scope: Scope) -> bool:
        given = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        scheme, _, credential = given.partition(b" ")
        return hmac.compare_digest(scheme.lower() + b" " + credential.strip(), self.expected)

    async def _keeper(self, scope: Scope) -> bool:
        given = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), b"")
        scheme, _, credential = given.partition(b" ")
        if self.keepers is None or scheme.lower() != b"bearer" or not credential.strip():
            return False
        return await self.keepers(credential.strip().decode("latin-1"))


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
