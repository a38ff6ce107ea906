"""Exports of the log: a plain CSV, a Darwin Core occurrence CSV and a Camtrap DP 1.0 data package.

Every export reads the sightings in number order and writes times as UTC ISO 8601 and probabilities
with 6 decimals, so the same log gives the same bytes from SQLite and from PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from monkeysee.io import atomic_write_text
from monkeysee.registry import Registry
from monkeysee.sightings.errors import InputError
from monkeysee.sightings.records import PlaceView, SightingView
from monkeysee.sightings.store import Store

CAMTRAP_DP = Path(__file__).with_name("camtrap_dp")
CAMTRAP_URL = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/"
CAMTRAP_TABLES = ("deployments", "media", "observations")


@dataclass(frozen=True)
class ExportOptions:
    """`site` is the zoo's coordinates, for places that have none (Camtrap DP needs coordinates);
    `local_schemas` makes a Camtrap DP package name the table schemas shipped beside it instead of their
    URLs, so that it validates without a network."""

    site: tuple[float, float] | None = None
    local_schemas: bool = False
    title: str = "monkeysee keeper's log"


Exporter = Callable[[Store, Path, ExportOptions], list[Path]]
EXPORTS: Registry[Exporter] = Registry("export format")


def export(store: Store, fmt: str, out: Path, options: ExportOptions | None = None) -> list[Path]:
    """Write the log as `fmt` to `out` (a file, or a folder for camtrap-dp); the files written."""
    return EXPORTS.get(fmt)(store, Path(out), options or ExportOptions())


def _time(t: datetime | None) -> str:
    return "" if t is None else t.isoformat()


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def _csv_text(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@EXPORTS.register("csv")
def to_csv(store: Store, out: Path, options: ExportOptions) -> list[Path]:
    header = ("id", "key", "observed_at", "place", "recorded_by", "run", "rank", "taxon", "species_hint",
              "probability", "verdict", "species", "status", "reviewed_by", "reviewed_at", "name", "notes",
              "photos")
    rows = ((v.id, v.key, _time(v.observed_at), v.where, v.recorded_by or "", v.run or "", v.rank or "",
             v.taxon or "", v.species_hint or "", _num(v.probability), v.verdict, v.species or "", v.status,
             v.reviewed_by or "", _time(v.reviewed_at), v.name or "", v.notes,
             ";".join(p.sha256 for p in v.photos)) for v in store.all())
    atomic_write_text(out, _csv_text(header, rows))
    return [out]


def _identified_by(v: SightingView) -> str:
    return v.reviewed_by or "" if v.status != "unreviewed" else f"monkeysee ({v.run or 'model'})"


@EXPORTS.register("dwc")
def to_darwin_core(store: Store, out: Path, options: ExportOptions) -> list[Path]:
    """A Darwin Core occurrence CSV: one row per sighting that names a taxon (answered or reviewed)."""
    places = {p.name: p for p in store.places()}
    header = ("occurrenceID", "basisOfRecord", "eventDate", "scientificName", "taxonRank", "individualCount",
              "occurrenceStatus", "recordedBy", "identifiedBy", "dateIdentified",
              "identificationVerificationStatus", "identificationRemarks", "locality", "decimalLatitude",
              "decimalLongitude", "geodeticDatum", "associatedMedia", "occurrenceRemarks")
    rows = []
    for v in store.all():
        if v.name is None:
            continue
        human = v.status != "unreviewed"
        lat, lon = _coordinates(v, places, options) or (None, None)
        rows.append((
            f"monkeysee:{v.key}", "HumanObservation" if human else "MachineObservation", _time(v.observed_at),
            v.name, "species" if human else v.rank or "", 1, "present", v.recorded_by or "",
            _identified_by(v), _time(v.reviewed_at if human else v.recorded_at), v.status,
            "" if human else f"model probability {_num(v.probability)}", v.where, _num(lat), _num(lon),
            "WGS84" if lat is not None else "", "|".join(p.location for p in v.photos), v.notes))
    atomic_write_text(out, _csv_text(header, rows))
    return [out]


def _coordinates(v: SightingView, places: dict[str, PlaceView],
                 options: ExportOptions) -> tuple[float, float] | None:
    """The place's coordinates, else the site's, else None."""
    p = places.get(v.place or "")
    if p is not None and p.latitude is not None and p.longitude is not None:
        return p.latitude, p.longitude
    return options.site


def _required_coordinates(v: SightingView, places: dict[str, PlaceView],
                          options: ExportOptions) -> tuple[float, float]:
    found = _coordinates(v, places, options)
    if found is None:
        raise InputError(f"place {v.where or '(none)'!r} of sighting {v.id} has no coordinates, and "
                         "Camtrap DP needs them",
                         fix="pass the zoo's --site LAT,LON (or give the place coordinates)")
    return found


def _schema_file(name: str, options: ExportOptions) -> str:
    return name if options.local_schemas else f"{CAMTRAP_URL}{name}"


@EXPORTS.register("camtrap-dp")
def to_camtrap_dp(store: Store, out: Path, options: ExportOptions) -> list[Path]:
    """A Camtrap DP 1.0 package in folder `out`: each place a deployment, each photo a media row (the
    photo copied into `media/`), each sighting an event-level observation classified by the machine
    (unreviewed) or a person (confirmed, corrected), with who classified it, when, and the probability.
    The package names the official profile and table schemas by URL, as the standard asks; with
    `local_schemas` it names copies of the table schemas written beside it (the 1.0 files shipped in
    `camtrap_dp/`, MIT licence of the Camtrap DP Development Team) and frictionless' built-in
    `tabular-data-package` profile, so `frictionless validate` checks it without a network (the Camtrap
    DP profile itself refers to schemas on the web; `camtrap_metadata_errors` checks against it offline)."""
    views = list(store.all())
    places = {p.name: p for p in store.places()}
    by_place: dict[str, list[SightingView]] = defaultdict(list)
    for v in views:
        by_place[v.where].append(v)
    deployment = {where: f"deployment-{i + 1}" for i, where in enumerate(sorted(by_place))}
    tables = {
        "deployments": _deployments(by_place, deployment, places, options),
        "media": _media(views, deployment, store, out),
        "observations": _observations(views, deployment),
    }
    written = []
    for name, text in tables.items():
        atomic_write_text(out / f"{name}.csv", text)
        written.append(out / f"{name}.csv")
    if options.local_schemas:
        for name in (f"{t}-table-schema.json" for t in CAMTRAP_TABLES):
            shutil.copyfile(CAMTRAP_DP / name, out / name)
    package = _package(views, places, store, options)
    atomic_write_text(out / "datapackage.json", json.dumps(package, indent=2, ensure_ascii=False) + "\n")
    return [out / "datapackage.json", *written]


def _deployments(by_place: dict[str, list[SightingView]], deployment: dict[str, str],
                 places: dict[str, PlaceView], options: ExportOptions) -> str:
    rows = []
    for where in sorted(by_place):
        vs = by_place[where]
        lat, lon = _required_coordinates(vs[0], places, options)
        rows.append({"deploymentID": deployment[where],
                     "locationID": deployment[where].replace("deployment", "location"), "locationName": where,
                     "latitude": _num(lat), "longitude": _num(lon),
                     "deploymentStart": _time(min(v.observed_at for v in vs)),
                     "deploymentEnd": _time(max(v.observed_at for v in vs))})
    return _camtrap_table("deployments", rows)


def _media(views: list[SightingView], deployment: dict[str, str], store: Store, out: Path) -> str:
    rows = []
    for v in views:
        for i, p in enumerate(v.photos):
            target = out / "media" / p.location
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(store.photos.path(p.location), target)
            rows.append({"mediaID": f"{v.key}-{i + 1}", "deploymentID": deployment[v.where],
                         "timestamp": _time(v.observed_at), "filePath": f"media/{p.location}",
                         "filePublic": "false", "fileName": Path(p.location).name,
                         "fileMediatype": p.media_type,
                         "mediaComments": f"sighting {v.id}, photo {i + 1}"})
    return _camtrap_table("media", rows)


def _observation_type(v: SightingView) -> str:
    if v.name is not None:
        return "animal"
    return "unknown" if v.verdict == "unknown" else "unclassified"


def _observations(views: list[SightingView], deployment: dict[str, str]) -> str:
    rows = []
    for v in views:
        human = v.status != "unreviewed"
        rank = "species" if human else v.rank or ""
        tags = "|".join(f"{k}:{x}" for k, x in (("rank", rank), ("status", v.status),
                                                 ("verdict", v.verdict)) if x)
        rows.append({"observationID": v.key, "deploymentID": deployment[v.where], "eventID": v.key,
                     "eventStart": _time(v.observed_at), "eventEnd": _time(v.observed_at),
                     "observationLevel": "event", "observationType": _observation_type(v),
                     "scientificName": v.name or "", "count": 1 if v.name else "",
                     "classificationMethod": "human" if human else "machine",
                     "classifiedBy": _identified_by(v),
                     "classificationTimestamp": _time(v.reviewed_at if human else v.recorded_at),
                     "classificationProbability": "" if human else _num(v.probability),
                     "observationTags": tags, "observationComments": v.notes})
    return _camtrap_table("observations", rows)


def _camtrap_table(name: str, rows: Sequence[Mapping[str, object]]) -> str:
    """A table with every column of its Camtrap DP 1.0 schema, in the schema's order."""
    fields = [f["name"] for f in json.loads((CAMTRAP_DP / f"{name}-table-schema.json").read_text())["fields"]]
    unknown = {k for r in rows for k in r} - set(fields)
    assert not unknown, f"{name}: not in the Camtrap DP schema: {sorted(unknown)}"
    return _csv_text(fields, ([r.get(f, "") for f in fields] for r in rows))


def _package(views: list[SightingView], places: dict[str, PlaceView], store: Store,
             options: ExportOptions) -> dict[str, Any]:
    """datapackage.json: the metadata the Camtrap DP profile requires."""
    times = [v.observed_at for v in views]
    ranks: dict[str, str] = {}
    for v in views:
        if v.name is not None:
            ranks.setdefault(v.name, "species" if v.status != "unreviewed" else v.rank or "species")
    coords = [_required_coordinates(v, places, options) for v in views]
    lats, lons = [c[0] for c in coords] or [0.0], [c[1] for c in coords] or [0.0]
    people = sorted({n for v in views for n in (v.recorded_by, v.reviewed_by) if n})
    return {
        "name": "monkeysee-log",
        "title": options.title,
        "profile": "tabular-data-package" if options.local_schemas
        else f"{CAMTRAP_URL}camtrap-dp-profile.json",
        "created": store.clock().isoformat(),
        "contributors": [{"title": n, "role": "contributor"} for n in people] or [{"title": "monkeysee"}],
        "project": {"title": options.title, "samplingDesign": "opportunistic",
                    "captureMethod": ["activityDetection"], "individualAnimals": False,
                    "observationLevel": ["event"]},
        "spatial": {"type": "Point", "coordinates": [min(lons), min(lats)]} if min(lats) == max(lats)
        and min(lons) == max(lons) else {"type": "Polygon", "coordinates": [[
            [min(lons), min(lats)], [max(lons), min(lats)], [max(lons), max(lats)], [min(lons), max(lats)],
            [min(lons), min(lats)]]]},
        "temporal": {"start": min(times).date().isoformat() if times else "",
                     "end": max(times).date().isoformat() if times else ""},
        "taxonomic": [{"scientificName": n, "taxonRank": r} for n, r in sorted(ranks.items())],
        "resources": [{"name": t, "path": f"{t}.csv", "profile": "tabular-data-resource", "format": "csv",
                       "mediatype": "text/csv", "encoding": "utf-8",
                       "schema": _schema_file(f"{t}-table-schema.json", options)} for t in CAMTRAP_TABLES],
    }


def camtrap_metadata_errors(package: dict[str, Any]) -> list[str]:
    """What in a datapackage.json breaks the Camtrap DP 1.0 profile (shipped in `camtrap_dp/`), checked
    offline: the GeoJSON schema it refers to is frictionless' copy, and the generic Data Package schema
    it also refers to (not available offline) is taken as satisfied."""
    import jsonschema
    from referencing import Registry as Refs
    from referencing import Resource

    # The 1.0 profile writes one JSON pointer as "#$defs/version"; read as the "#/$defs/version" it means.
    text = (CAMTRAP_DP / "camtrap-dp-profile.json").read_text().replace('"#$defs/', '"#/$defs/')
    profile = json.loads(text)
    from importlib.resources import files

    geojson = files("frictionless") / "assets" / "profiles" / "geojson.json"
    refs = Refs().with_resources([
        ("http://json.schemastore.org/geojson.json",
         Resource.opaque(json.loads(geojson.read_text()))),
        ("https://frictionlessdata.io/schemas/data-package.json", Resource.opaque({})),
    ])
    validator = jsonschema.validators.validator_for(profile)(profile, registry=refs)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(package)]
