"""What the web API sends back, as pydantic models: they validate every response and document the
OpenAPI schema, so the JSON that browsers and scripts read is the JSON the schema promises."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpeciesInfo(_Model):
    """A species the model knows."""

    index: int = Field(description="class index in the model's output")
    label: str = Field(description="class folder name used at training time, e.g. 'n0'")
    common_name: str = Field(description="e.g. 'mantled howler'")
    latin_name: str = Field(description="binomial name, e.g. 'Alouatta palliata'; empty when unknown")


class SpeciesList(_Model):
    species: list[SpeciesInfo]


class Guess(_Model):
    """One candidate species with the model's probability for it."""

    index: int
    label: str
    common_name: str
    latin_name: str
    probability: float = Field(ge=0.0, le=1.0, description="softmax probability (not calibrated)")


class Box(_Model):
    """The part of the photo the model looked at (its centre crop), as fractions of the photo's size."""

    left: float
    top: float
    width: float
    height: float


class Cam(_Model):
    """A Grad-CAM explanation of the best guess: where the model looked for that species."""

    method: str = Field(description="explanation method, e.g. 'gradcam'")
    layer: str = Field(description="model layer explained, e.g. 'body.head'")
    species: str = Field(description="common name of the species the map explains (the best guess)")
    overlay: str = Field(
        description="data:image/png;base64 URL: the crop the model saw, with the map blended over it"
    )
    heatmap: str | None = Field(
        default=None,
        description="data:image/png;base64 URL (RGBA) with the photo's aspect ratio: the coloured map over "
        "the crop, more opaque where it is hotter, transparent outside the crop; lay it over the photo "
        "stretched to the same size (only when heatmap=true)",
    )
    box: Box


class Photo(_Model):
    """The uploaded photo as decoded (upright, after the EXIF orientation)."""

    width: int
    height: int


class DetectorInfo(_Model):
    """The 'not one of my species' detector: photos scoring above `threshold` are called unknown."""

    name: str
    threshold: float
    keep: float | None = Field(
        description="share of known photos (out-of-fold training and validation) the threshold accepts; "
                    "null when set by hand"
    )


class Quality(_Model):
    """Whether the photo is good enough for a trustworthy answer, and if not, why."""

    ok: bool
    problems: list[str] = Field(description="e.g. 'blurred', 'too dark', 'too small'; empty when ok")


class EvidencePhoto(_Model):
    """A training photo near the uploaded one."""

    photo: int = Field(description="the training photo's number: its thumbnail is GET /api/evidence/{photo}")
    similarity: float = Field(description="cosine similarity of the two photos' features (1: the same)")


class SpeciesEvidence(_Model):
    """The training photos of one species nearest the uploaded photo, nearest first."""

    index: int
    label: str
    common_name: str
    nearest: list[EvidencePhoto]


class SpeciesRef(_Model):
    index: int
    label: str
    common_name: str


class Evidence(_Model):
    """Why to believe the answer: the photos it is compared with, and when to look twice."""

    species: list[SpeciesEvidence] = Field(description="the best guess, then the runner-up")
    confused_with: SpeciesRef | None = Field(description="the species most often confused with the best "
                                                         "guess on held-out photos; null when none is")
    nearest_vote: SpeciesRef = Field(description="the species most of the nearest training photos show")
    check: bool = Field(description="true when the nearest training photos favour another species than "
                                    "the best guess: check this one")


class PredictResponse(_Model):
    """The answer for one photo."""

    species: str = Field(description="common name of the best guess (the nearest species when unknown)")
    latin_name: str
    label: str
    probability: float = Field(ge=0.0, le=1.0)
    unknown: bool = Field(description="true when the photo looks like none of the known species")
    unknown_score: float | None = Field(description="higher means more unlike the known species; "
                                                    "null when the model has no detector")
    detector: DetectorInfo | None
    quality: Quality | None = Field(default=None, description="is the photo good enough to judge?")
    verdict: str = Field(description="'species' (answered at `rank`), 'unknown' (not one of my species, "
                                     "or not sure enough at any rank) or 'retake' (the photo is too poor to "
                                     "judge: take another; the species is only a hint)")
    top: list[Guess]
    photo: Photo
    cam: Cam | None = Field(default=None, description="null when cam=false")
    rank: str | None = Field(default=None, description="the rank the answer is given at: 'species', "
                             "'genus', 'family', ...; null when the verdict is not 'species' (no answer)")
    taxon: str | None = Field(default=None, description="the name answered at `rank` (the species' common "
                              "name at species rank, e.g. 'Callitrichidae' at family rank); null with rank")
    taxon_probability: float | None = Field(default=None, ge=0.0, le=1.0,
                                            description="probability of `taxon`: its species' sum")
    evidence: Evidence | None = Field(default=None, description="the nearest training photos and the "
                                      "check flag; null for a run without an evidence bank")


class Health(_Model):
    status: str = Field(description="'ok' when the model is loaded and answering")
    version: str = Field(description="monkeysee version")
    backbone: str
    species_count: int
    input_size: int
    explain_layer: str
    precision: str = Field(description="inference precision: fp32 or bf16")
    detector: DetectorInfo | None


class ErrorResponse(_Model):
    """Every error, whatever its status: a short code, what went wrong, and how to fix it."""

    error: str = Field(description="machine-readable code, e.g. 'not_an_image', 'too_large'")
    detail: str = Field(description="what went wrong, for people")
    fix: str | None = Field(default=None, description="what to do about it")
    errors: list[dict[str, Any]] | None = Field(default=None, description="per-field validation errors")
