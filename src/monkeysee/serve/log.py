"""The keeper's log over HTTP: save a sighting after an answer, list and filter the log, the review queue,
confirm and correct, a sighting's history, and the species overview (who may do what: `log_access`).

A save sends 1 to 3 photos of one animal; the server answers them with the model in one batch (the log
records the model's answer, not the client's word for it): each photo alone, and the sighting as their
fused probabilities (`sightings.fusion`) on the answer ladder. Photos and answers are stored in one
transaction. Photo bytes live only as long as the request. Saving under a `key` already saved returns
the first sighting, so a client retrying after a lost reply never saves twice.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
import functools
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse

from monkeysee.data.images import PhotoHeader
from monkeysee.serve.config import ServeConfig
from monkeysee.serve.limits import MemoryBudget, error_response, sighting_cost
from monkeysee.serve.log_access import Caller, LogStore, Refused, identify, known_token
from monkeysee.serve.log_schemas import (
    Caller as CallerOut,
)
from monkeysee.serve.log_schemas import (
    Correction,
    History,
    Names,
    Overview,
    Places,
    ReviewItem,
    ReviewQueue,
    Sighting,
    SightingList,
)
from monkeysee.serve.schemas import ErrorResponse
from monkeysee.serve.service import PhotoRejected, PhotoService
from monkeysee.sightings import (
    MAX_PHOTOS,
    AccessError,
    Filter,
    InputError,
    NewSighting,
    NotFound,
    PhotoIn,
    SightingAnswer,
    SightingView,
    Store,
    StoreUnavailable,
)

PREFIX = "/api/log"
SAVE_PATH = f"{PREFIX}/sightings"
FIX_JSON = 'send the body as JSON, e.g. {"species": "Ateles geoffroyi"}'
LOW_PROBABILITY = 0.5
"""Below this the review queue gives 'low probability' as a reason."""
DISAGREE_NEED = 1.0
"""What photos naming different species add to a sighting's need of review."""

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A body that cannot be parsed"},
    401: {"model": ErrorResponse, "description": "No keeper's token, or a token of nobody"},
    403: {"model": ErrorResponse, "description": "A keeper without the reviewer role, or the local keeper"},
    404: {"model": ErrorResponse, "description": "No such sighting or photo"},
    422: {"model": ErrorResponse, "description": "A value the log refuses (with the field and the fix)"},
    503: {"model": ErrorResponse, "description": "The log's database or photo folder cannot be used now"},
}
SAVE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: {"model": ErrorResponse, "description": "A malformed multipart body, or a text field over 1 MB"},
    408: {"model": ErrorResponse, "description": "The upload did not arrive in time"},
    413: {"model": ErrorResponse, "description": "A photo larger than the limit, or too many pixels"},
    415: {"model": ErrorResponse, "description": "A file that is not a photo"},
}
Status = Literal["unreviewed", "confirmed", "corrected"]

HeaderCheck = Callable[[bytes, str], PhotoHeader]


class _Log:
    """What the log's routes share: the store, the model that answers a save's photos, and who asks."""

    def __init__(self, config: ServeConfig, service: PhotoService, budget: MemoryBudget,
                 header: HeaderCheck) -> None:
        self.store = LogStore(config)
        self.config, self.service, self.budget, self.header = config, service, budget, header
        # Each save holds up to MAX_PHOTOS uploads, so saves together hold at most max_concurrent of them.
        self.saves = anyio.Semaphore(max(1, config.max_concurrent // MAX_PHOTOS))
        self.run = str(config.run_dir)
        self.names = [s.display_latin or s.display_name for s in service.predictor.species]

    async def caller(self, request: Request) -> Caller:
        return await identify(request, self.store)

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        """`Store.method(store, ...)` on the open store, in a worker thread."""
        store = await self.store.aget()
        return await anyio.to_thread.run_sync(functools.partial(method, store, *args, **kwargs))

    async def answer(self, uploads: list[tuple[bytes, str]]) -> SightingAnswer:
        """The sighting's answer and each photo's: the photos checked, decoded and answered together
        within one share of the memory budget."""
        heads = [await anyio.to_thread.run_sync(self.header, data, name) for data, name in uploads]
        async with self.budget.reserve(sighting_cost(heads)):
            work = functools.partial(self.service.answer_sighting, uploads, self.run)
            return await anyio.to_thread.run_sync(work)


def add_log(app: FastAPI, config: ServeConfig, service: PhotoService, budget: MemoryBudget,
            header: HeaderCheck) -> LogStore:
    """Add the log's routes and error answers to `app`; returns the (not yet opened) store holder."""
    ctx = _Log(config, service, budget, header)
    router = APIRouter(prefix=PREFIX, tags=["log"], responses=ERRORS)
    for add in (_who_routes, _save_route, _reading_routes, _review_routes):
        add(router, ctx)
    app.include_router(router)
    _add_error_handlers(app)
    app.state.log = ctx.store
    app.state.known_token = functools.partial(known_token, ctx.store)
    return ctx.store


def _who_routes(router: APIRouter, ctx: _Log) -> None:
    @router.get("/me", response_model=CallerOut, summary="Who the server takes you to be")
    async def me(request: Request) -> CallerOut:
        who = await ctx.caller(request)
        k = who.keeper
        return CallerOut(name=None if k is None else k.name, role="keeper" if k is None else k.role,
                         local=k is None)

    @router.get("/places", response_model=Places, summary="The places offered when saving")
    async def places(request: Request) -> Places:
        await ctx.caller(request)
        return Places(places=[p.__dict__ for p in await ctx.call(Store.places)])

    @router.get("/overview", response_model=Overview, summary="Per species: last seen, per place, per week")
    async def overview(request: Request) -> Overview:
        await ctx.caller(request)
        return Overview(species=[s.__dict__ for s in await ctx.call(Store.overview)])

    @router.get("/species", response_model=Names, summary="Names for the species picker")
    async def species_names(request: Request) -> Names:
        await ctx.caller(request)
        logged = [s.name for s in await ctx.call(Store.overview)]
        return Names(names=list(dict.fromkeys([*ctx.names, *sorted(logged)])))


def _save_route(router: APIRouter, ctx: _Log) -> None:
    @router.post("/sightings", response_model=Sighting, status_code=201, responses=SAVE_ERRORS,
                 summary="Save a sighting: 1 to 3 photos of one animal, where and when")
    async def save(
        request: Request,
        photos: Annotated[list[UploadFile], File(description=f"1 to {MAX_PHOTOS} photos of the same animal")],
        place: Annotated[str | None, Form(description="a place from /api/log/places")] = None,
        place_text: Annotated[str | None, Form(description="anywhere else, as text")] = None,
        notes: Annotated[str, Form(description="the keeper's note")] = "",
        observed_at: Annotated[datetime | None, Form(description="when (default: now)")] = None,
        key: Annotated[str | None, Form(description="a client's key for this save: a retry with the same "
                                                    "key returns the sighting saved first")] = None,
    ) -> Sighting:
        who = await ctx.caller(request)
        if not 1 <= len(photos) <= MAX_PHOTOS:
            raise InputError(f"a sighting has 1 to {MAX_PHOTOS} photos, not {len(photos)}",
                             fix="send one to three photos of the same animal in the field 'photos'")
        async with ctx.saves:
            uploads = []
            for i, upload in enumerate(photos):
                name = _name(upload, i)
                data = await upload.read(ctx.config.max_upload_bytes + 1)
                if len(data) > ctx.config.max_upload_bytes:
                    raise PhotoRejected(413, "too_large",
                                        f"photo is larger than {ctx.config.max_upload_mb:g} MB",
                                        "send a smaller photo (a few megapixels is plenty)", name)
                uploads.append((data, name))
            # One answer for the animal: the photos' fused probabilities; each photo keeps its own.
            said = await ctx.answer(uploads)
            given = [PhotoIn(d, n, answer=a, weight=w)
                     for (d, n), a, w in zip(uploads, said.photos, said.weights, strict=True)]
            new = NewSighting(photos=given, observed_at=observed_at or datetime.now().astimezone(),
                              place=place or None, place_text=place_text or None, answer=said.answer,
                              notes=notes, key=key or None)
            view = await ctx.call(Store.save, new, by=who.keeper)
        return _sighting(view)


def _reading_routes(router: APIRouter, ctx: _Log) -> None:
    @router.get("/sightings", response_model=SightingList, summary="The log, newest first, filtered")
    async def sightings(
        request: Request,
        species: Annotated[str | None, Query(max_length=200, description="what the animal is taken to be")]
        = None,
        place: Annotated[str | None, Query(max_length=200)] = None,
        status: Annotated[Status | None, Query()] = None,
        since: Annotated[datetime | None, Query(description="observed at or after")] = None,
        until: Annotated[datetime | None, Query(description="observed before")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> SightingList:
        await ctx.caller(request)
        f = Filter(species=species or None, place=place or None, status=status, since=since, until=until,
                   limit=limit, offset=offset)
        return SightingList(sightings=[_sighting(v) for v in await ctx.call(Store.sightings, f)])

    @router.get("/sightings/{sighting_id}", response_model=Sighting, summary="One sighting")
    async def one(request: Request, sighting_id: Annotated[int, Path(ge=1, le=2**62)]) -> Sighting:
        await ctx.caller(request)
        return _sighting(await ctx.call(Store.get, sighting_id))

    @router.get("/sightings/{sighting_id}/history", response_model=History,
                summary="Who changed what, when (a model's new answer never overwrites a person's label)")
    async def history(request: Request, sighting_id: Annotated[int, Path(ge=1, le=2**62)]) -> History:
        await ctx.caller(request)
        entries = await ctx.call(Store.history, sighting_id)
        return History(id=sighting_id, history=[e.__dict__ for e in entries])

    @router.get("/sightings/{sighting_id}/photos/{n}", summary="A sighting's photo (n from 0)",
                response_class=FileResponse, responses={200: {"content": {"image/*": {}}}})
    async def photo(request: Request, sighting_id: Annotated[int, Path(ge=1, le=2**62)],
                    n: Annotated[int, Path(ge=0, lt=MAX_PHOTOS)]) -> FileResponse:
        await ctx.caller(request)
        view = await ctx.call(Store.get, sighting_id)
        if n >= len(view.photos):
            raise NotFound(f"sighting {sighting_id} has {len(view.photos)} photos", fix="count from 0")
        store = await ctx.store.aget()
        p = view.photos[n]
        return FileResponse(store.photos.path(p.location), media_type=p.media_type,
                            headers={"cache-control": "private, max-age=86400"})

    @router.get("/review", response_model=ReviewQueue, summary="Unreviewed sightings, most in need first")
    async def review(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> ReviewQueue:
        await ctx.caller(request)
        queue = [_review_item(v, need) for v, need in await ctx.call(Store.review_queue, limit=500)]
        queue.sort(key=lambda item: (-item.need, item.sighting.id))
        return ReviewQueue(queue=queue[:limit])


def _review_routes(router: APIRouter, ctx: _Log) -> None:
    @router.post("/sightings/{sighting_id}/confirm", response_model=Sighting,
                 summary="A reviewer says the model's species is right")
    async def confirm(request: Request, sighting_id: Annotated[int, Path(ge=1, le=2**62)]) -> Sighting:
        by = (await ctx.caller(request)).reviewer()
        return _sighting(await ctx.call(Store.confirm, sighting_id, by=by))

    @router.post("/sightings/{sighting_id}/correct", response_model=Sighting,
                 summary="A reviewer names the species: one of the run's, or a new one")
    async def correct(request: Request, sighting_id: Annotated[int, Path(ge=1, le=2**62)],
                      body: Correction) -> Sighting:
        by = (await ctx.caller(request)).reviewer()
        return _sighting(await ctx.call(Store.correct, sighting_id, body.species, by=by))


def _name(upload: UploadFile, i: int) -> str:
    name = (upload.filename or f"photo {i + 1}").replace("\n", " ").replace("\r", " ")
    return name[:80] or f"photo {i + 1}"


def _sighting(v: SightingView) -> Sighting:
    d = v.to_dict()
    keep = ("sha256", "media_type", "species_hint", "probability", "verdict", "weight")
    d["photos"] = [{k: p[k] for k in keep} | {"url": f"{PREFIX}/sightings/{v.id}/photos/{i}"}
                   for i, p in enumerate(d["photos"])]
    return Sighting(**d)


def reasons(v: SightingView) -> list[str]:
    """Why a sighting needs a person, most pressing first."""
    out = []
    if v.verdict == "unknown":
        out.append("not one of my species")
    if v.verdict == "error":
        out.append("a photo could not be read")
    if v.verdict == "retake":
        out.append("take another photo")
    if disagree(v):
        out.append("photos disagree")
    if v.rank not in (None, "species"):
        out.append(f"answer only at {v.rank} rank")
    if v.probability is None or v.probability < LOW_PROBABILITY:
        out.append("low probability")
    return out


def disagree(v: SightingView) -> bool:
    """The sighting's photos name different species (evidence that disagrees)."""
    return len({p.species_hint for p in v.photos if p.species_hint}) > 1


def _review_item(v: SightingView, need: float) -> ReviewItem:
    return ReviewItem(sighting=_sighting(v), need=round(need + (DISAGREE_NEED if disagree(v) else 0.0), 6),
                      reasons=reasons(v))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        headers = {"www-authenticate": 'Bearer realm="monkeysee"'} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.detail, exc.fix, headers=headers)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", exc.problem, exc.fix)

    @app.exception_handler(InputError)
    async def refused_value(request: Request, exc: InputError) -> JSONResponse:
        return error_response(422, "invalid_value", exc.problem, exc.fix)

    @app.exception_handler(AccessError)
    async def no_access(request: Request, exc: AccessError) -> JSONResponse:
        return error_response(403, "forbidden", exc.problem, exc.fix)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return error_response(503, "log_unavailable", f"the keeper's log cannot be used now: {exc.problem}",
                              exc.fix or "try again later; answers are still served",
                              headers={"retry-after": "10"})
