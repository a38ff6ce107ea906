"""The keeper's log: sightings of animals, the model's answers, the people's review, and exports.

Public face (serve and cli import only this):

    store = Store.open("log.db")                  # a SQLite file, a postgresql:// URL, or MONKEYSEE_DB;
                                                  # created or upgraded to the newest schema (Alembic)
    keeper, token = store.add_keeper("Ana", reviewer=True)   # the token is shown once; its sha256 is kept
    store.keeper(token) -> KeeperView             # AccessError for a token of nobody
    store.add_places([PlaceView("Monkey house")]); store.places()
    store.save(NewSighting(photos=[PhotoIn(bytes, answer=ModelAnswer(...))], observed_at=..., place=...,
               place_text=..., answer=ModelAnswer.from_prediction(pred, run), notes=..., key=...), by=keeper)
    store.logged(sha256s) -> set                  # photos already in a sighting (batch logging skips them)
    store.get(id); store.sightings(Filter(species=..., place=..., status=..., since=..., until=...))
    store.review_queue() -> [(SightingView, need)]; store.history(id) -> [HistoryEntry]
    store.confirm(id, by=reviewer); store.correct(id, "Species name", by=reviewer)   # AccessError otherwise
    store.edit_notes(id, text, by); store.answer_again(id, ModelAnswer)   # never touches people's labels
    store.overview() -> [SpeciesOverview]; store.all() -> every sighting in number order
    answer_sighting(predictor, images, run) -> SightingAnswer   # 1-3 photos of one animal, fused
    fuse_answers(predictor, logits, features, qualities, run)  # the same from the model's outputs

Errors: InputError (a value refused, with the field and the fix), AccessError (token or role),
StoreUnavailable (database down or full, photo folder not writable): all `MonkeyseeError`s.
Photos live once per content hash in a folder (`log.db-photos/` beside a SQLite file, else --photos or
MONKEYSEE_PHOTOS); rows hold their hash and path.
"""

from monkeysee.sightings.errors import AccessError, InputError, NotFound, SightingError, StoreUnavailable
from monkeysee.sightings.fusion import Fusion, SightingAnswer, answer_sighting, fuse_answers
from monkeysee.sightings.records import (
    Filter,
    HistoryEntry,
    KeeperView,
    ModelAnswer,
    NewSighting,
    PhotoIn,
    PhotoView,
    PlaceView,
    SightingView,
    SpeciesOverview,
)
from monkeysee.sightings.store import MAX_PHOTOS, Store, open_store

__all__ = [
    "MAX_PHOTOS",
    "AccessError",
    "Filter",
    "Fusion",
    "HistoryEntry",
    "InputError",
    "KeeperView",
    "ModelAnswer",
    "NewSighting",
    "NotFound",
    "PhotoIn",
    "PhotoView",
    "PlaceView",
    "SightingAnswer",
    "SightingError",
    "SightingView",
    "SpeciesOverview",
    "Store",
    "StoreUnavailable",
    "answer_sighting",
    "fuse_answers",
    "open_store",
]
