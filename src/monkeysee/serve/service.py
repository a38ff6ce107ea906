"""The model side of the web app: photo bytes in, a prediction and its Grad-CAM out.

Concurrent requests are gathered into micro-batches by one model thread (whatever is waiting when the
model frees up goes in together, so an idle server adds no delay). A batch that wants explanations takes
one forward pass with the explained layer hooked, then one `torch.autograd.grad` with respect to that
layer's activation: the logits, the pooled features for the unknown detector and the Grad-CAM all come
from the same pass. Decoding, preprocessing and PNG encoding run in the request threads, in parallel.
"""

from __future__ import annotations

import base64
import io
import math
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from monkeysee.data.images import PhotoHeader, load_rgb_bytes, read_header
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.transforms import denormalize
from monkeysee.errors import ImageError, MonkeyseeError
from monkeysee.explain import DEFAULT_METHOD, Explainer, render
from monkeysee.models.unknown import UnknownDetector
from monkeysee.predict import Prediction, Predictor
from monkeysee.sightings import Fusion, SightingAnswer, fuse_answers

HEAT_OPACITY = (0.15, 0.75)
"""Opacity of the heatmap layer where the map is 0 and where it is 1."""

PNG_LEVEL = 1
"""zlib level for the PNGs: 1 is several times faster than the default 6 and only slightly larger."""


class PhotoRejected(MonkeyseeError):
    """An upload that is not a usable photo, with the HTTP status and error code to answer with."""

    def __init__(self, status: int, code: str, problem: str, fix: str = "", path: str | None = None) -> None:
        super().__init__(problem, fix, path)
        self.status = status
        self.code = code


# ImageError problems by their opening words -> (HTTP status, error code). Anything else is 422.
_IMAGE_ERRORS: tuple[tuple[str, int, str], ...] = (
    ("upload is empty", 400, "empty_upload"),
    ("file is empty", 400, "empty_upload"),
    ("not an image", 415, "not_an_image"),
    ("not an accepted photo format", 415, "unsupported_format"),
    ("image has too many pixels", 413, "too_many_pixels"),
    ("not enough memory", 413, "too_many_pixels"),
    ("truncated or corrupt", 422, "corrupt_image"),
    ("image is too long and thin", 422, "bad_shape"),
)


def rejection(exc: ImageError) -> PhotoRejected:
    """The HTTP answer for a photo that could not be read."""
    for start, status, code in _IMAGE_ERRORS:
        if exc.problem.startswith(start):
            return PhotoRejected(status, code, exc.problem, exc.fix, exc.path)
    return PhotoRejected(422, "unreadable_image", exc.problem, exc.fix, exc.path)


@dataclass(frozen=True)
class CamImages:
    """A Grad-CAM drawn for the web: PNG data URLs and the crop's place in the photo."""

    method: str
    layer: str
    species: str
    overlay: str
    heatmap: str | None
    box: tuple[float, float, float, float]  # left, top, width, height as fractions of the photo


@dataclass(frozen=True)
class Answer:
    """Everything the API says about one photo."""

    prediction: Prediction
    width: int
    height: int
    cam: CamImages | None


@dataclass(frozen=True)
class _Job:
    image: Image.Image  # decoded RGB photo
    cam: bool


@dataclass(frozen=True)
class _Output:
    logits: np.ndarray  # (classes,)
    features: np.ndarray  # (features,)
    cam: np.ndarray | None  # (H, W) in [0, 1] at the model's input size
    seen: np.ndarray | None  # (H, W, 3) uint8: the crop the model saw, to draw the map on


class PhotoService:
    """Answers photos with one shared Predictor; safe to call from any number of threads."""

    def __init__(self, predictor: Predictor, max_pixels: int, max_batch: int = 8,
                 alpha: float = 0.5, cmap: str = render.DEFAULT_CMAP) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.predictor = predictor
        self.max_pixels = max_pixels
        self.alpha = alpha
        self.cmap = cmap
        self.explainer = Explainer.from_run(predictor.run, precision=predictor.precision)
        self._worker = _BatchWorker(self._run_batch, max_batch)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, *, max_pixels: int, max_batch: int = 8,
                     unknown_threshold: float | None = None, precision: str = "auto",
                     collection: str | Path | None = None) -> PhotoService:
        """Load a run; `unknown_threshold` overrides its detector's threshold, and for a run without one
        calls photos unknown when 1 - top probability is above it (max-softmax)."""
        predictor = Predictor.from_run_dir(run_dir, precision=precision, unknown_threshold=unknown_threshold,
                                           collection=collection)
        if predictor.detector is None and unknown_threshold is not None:
            predictor.detector = UnknownDetector("max_softmax", float(unknown_threshold), None)
        return cls(predictor, max_pixels=max_pixels, max_batch=max_batch)

    @property
    def layer_name(self) -> str:
        """The layer the heatmaps explain (the run's recorded explanation layer)."""
        return str(self.explainer.layer)

    @property
    def preprocess(self) -> Preprocess:
        return self.predictor.run.manifest.preprocess

    def open(self) -> None:
        """Start a model thread if the last one was closed (an ASGI app may be started more than once)."""
        if self._worker.closed:
            self._worker = _BatchWorker(self._worker.run, self._worker.max_batch)

    def close(self) -> None:
        """Stop the model thread once the batches already queued are answered."""
        self._worker.close()

    def read(self, data: bytes, name: str = "upload") -> Image.Image:
        """Decode an upload by its content, no larger than the model needs, or raise PhotoRejected saying
        why not (the same size and shape limits as every command)."""
        try:
            return load_rgb_bytes(data, name, self.max_pixels, preprocess=self.preprocess)
        except ImageError as exc:
            raise rejection(exc) from None

    def header(self, data: bytes, name: str = "upload") -> PhotoHeader:
        """An upload's header checked against this service's limits, or the PhotoRejected saying why not."""
        try:
            return read_header(data, name, self.max_pixels, preprocess=self.preprocess)
        except ImageError as exc:
            raise rejection(exc) from None

    def answer(self, data: bytes, name: str = "upload", top_k: int = 3, cam: bool = True,
               heatmap: bool = False, header: PhotoHeader | None = None,
               collection: np.ndarray | None = None) -> Answer:
        """Predict the species of one uploaded photo, with its Grad-CAM when `cam`; `header` is the
        upload's, where the caller read it already (the answer reports the photo's own upright size).
        `collection` (a species mask) replaces the served collection for this photo."""
        header = header or self.header(data, name)
        image = self.read(data, name)
        job = self._worker.submit(_Job(image, cam))
        quality = self.predictor.assess(image)  # in this request thread, while the model works
        out = job.result()
        k = max(1, min(top_k, len(self.predictor.species)))
        prediction = self.predictor.decide(out.logits[None], out.features[None], [name], k, [quality],
                                           collection=collection)[0]
        images = None
        if out.cam is not None:
            target = int(np.argmax(out.logits))
            images = self._draw(out, image.size, self.predictor.species[target].display_name, heatmap)
        return Answer(prediction, *header.upright, images)

    def answer_sighting(self, photos: Sequence[tuple[bytes, str]], run: str,
                        fusion: Fusion | None = None) -> SightingAnswer:
        """Answer 1-3 photos of one animal as one sighting: each decoded with this service's limits, one
        after another, all sent to the model thread as one batch, each photo's own answer and the fused
        one (`sightings.fusion`). Nothing is kept once it returns."""
        images = [self.read(data, name) for data, name in photos]
        jobs = self._worker.submit_all([_Job(image, False) for image in images])
        qualities = [self.predictor.assess(image) for image in images]  # while the model works
        del images
        outs: list[_Output] = [job.result() for job in jobs]
        return fuse_answers(self.predictor, np.stack([o.logits for o in outs]),
                            np.stack([o.features for o in outs]), qualities, run, fusion,
                            [name for _, name in photos])

    # --- drawing (request threads) ------------------------------------------------------------------

    def _draw(self, out: _Output, size: tuple[int, int], species: str, heatmap: bool) -> CamImages:
        assert out.cam is not None and out.seen is not None
        overlay = render.overlay(out.seen, out.cam, self.alpha, self.cmap)
        box = crop_box(size, self.preprocess)
        layer = heatmap_layer(out.cam, box, self.cmap) if heatmap else None
        return CamImages(DEFAULT_METHOD, str(self.explainer.layer), species, png_data_url(overlay),
                         None if layer is None else png_data_url(layer), box)

    # --- the model (its own thread) -----------------------------------------------------------------
    # Every torch op runs on this one thread: torch ops started from several request threads at once
    # would each bring their own OpenMP team, and on a small machine those teams fight over the cores.

    def _run_batch(self, jobs: Sequence[_Job]) -> list[_Output | BaseException]:
        """One output per job; a photo the transform chokes on fails alone, not its batch-mates."""
        results: list[_Output | BaseException] = []
        inputs: list[torch.Tensor] = []
        for job in jobs:
            try:
                inputs.append(self.predictor.transform(job.image))
                results.append(_PENDING)
            except Exception as exc:
                results.append(exc)
        todo = [j for j, r in zip(jobs, results, strict=True) if r is _PENDING]
        if not todo:
            return results
        x = self.predictor.as_input(torch.stack(inputs))
        cams: np.ndarray | None
        seen: np.ndarray | None
        cams = seen = None
        want_cam = any(j.cam for j in todo)
        p = self.predictor.forward(x, self.explainer.layer if want_cam else None)
        assert p.features is not None
        logits, feats = p.logits.cpu(), p.features.cpu()
        if want_cam:
            cams = self.explainer.cams(x, p)[DEFAULT_METHOD].upsampled
            seen_t = denormalize(x.float().cpu(), self.preprocess).mul(255).round().to(torch.uint8)
            seen = seen_t.permute(0, 2, 3, 1).numpy()
        outputs = iter(
            _Output(logits[i].numpy(), feats[i].numpy(),
                    cams[i] if cams is not None and j.cam else None,
                    seen[i] if seen is not None and j.cam else None)
            for i, j in enumerate(todo)
        )
        return [next(outputs) if r is _PENDING else r for r in results]


def crop_box(size: tuple[int, int], pre: Preprocess) -> tuple[float, float, float, float]:
    """Where the eval transform's centre crop lies in a photo of `size` (w, h), as fractions."""
    new_w, new_h = pre.resized(size)  # then torchvision's CenterCrop
    crop = pre.input_size
    left = round((new_w - crop) / 2.0)
    top = round((new_h - crop) / 2.0)
    fractions = (left / new_w, top / new_h, crop / new_w, crop / new_h)
    return tuple(min(max(f, 0.0), 1.0) for f in fractions)  # type: ignore[return-value]


def heatmap_layer(cam: np.ndarray, box: tuple[float, float, float, float], cmap: str = render.DEFAULT_CMAP,
                  opacity: tuple[float, float] = HEAT_OPACITY) -> np.ndarray:
    """RGBA picture with the photo's aspect ratio: the coloured map over the crop, transparent elsewhere.

    Opacity follows the map from `opacity[0]` (where the model did not look: a light tint that still shows
    the crop) to `opacity[1]`, so the photo stays visible under the cold parts. The crop keeps the map's
    own resolution, so the picture is small; browsers scale it onto the photo.
    """
    left, top, bw, bh = box
    ch, cw = cam.shape
    width = max(cw, math.ceil(cw / bw)) if bw > 0 else cw
    height = max(ch, math.ceil(ch / bh)) if bh > 0 else ch
    picture = np.zeros((height, width, 4), dtype=np.uint8)
    x0 = min(round(left * width), width - cw)
    y0 = min(round(top * height), height - ch)
    picture[y0 : y0 + ch, x0 : x0 + cw, :3] = render.heatmap(cam, cmap)
    lo, hi = opacity
    picture[y0 : y0 + ch, x0 : x0 + cw, 3] = np.rint(255 * (lo + (hi - lo) * np.clip(cam, 0.0, 1.0)))
    return picture


def png_data_url(picture: np.ndarray) -> str:
    """An RGB or RGBA uint8 array as a `data:image/png;base64,` URL, compressed quickly."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_STOP = object()
_PENDING: Any = object()
BatchRunner = Callable[[Sequence[_Job]], list["_Output | BaseException"]]
"""Runs a batch of jobs: one output, or the exception that job failed with, per job."""


class _BatchWorker:
    """One thread that runs jobs in batches of whatever is waiting, up to `max_batch`."""

    def __init__(self, run: BatchRunner, max_batch: int) -> None:
        self.run = run
        self.max_batch = max_batch
        self.closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="monkeysee-model", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> Future:
        future: Future = Future()
        if self.closed:
            raise RuntimeError("the model worker is closed")
        self._queue.put((job, future))
        return future

    def submit_all(self, jobs: Sequence[_Job]) -> list[Future]:
        """Queue `jobs` as one group: they are answered in the same batch (which may then hold up to
        `len(jobs) - 1` more than `max_batch`)."""
        group: list[tuple[_Job, Future]] = [(job, Future()) for job in jobs]
        if self.closed:
            raise RuntimeError("the model worker is closed")
        self._queue.put(group)
        return [fut for _, fut in group]

    def close(self, timeout: float = 10.0) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            batch, stop = self._gather(self._queue.get())
            self._answer(batch)
            if stop:
                return

    def _gather(self, first: object) -> tuple[list[tuple[_Job, Future]], bool]:
        """`first` and whatever else is waiting, up to `max_batch`; and whether to stop after them."""
        if first is _STOP:
            return [], True
        batch = _items(first)
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.extend(_items(item))
        return batch, False

    def _answer(self, batch: list[tuple[_Job, Future]]) -> None:
        """Run `batch` and hand out its results. The decoded photos are let go of first (`batch` is
        emptied): from its answer on, a photo is its request's to free, and one kept here until the next
        batch would lie outside the server's memory budget."""
        live = [(job, fut) for job, fut in batch if fut.set_running_or_notify_cancel()]
        batch.clear()
        jobs, futures = [job for job, _ in live], [fut for _, fut in live]
        del live
        if not jobs:
            return
        try:
            outputs = self.run(jobs)
        except BaseException as exc:  # handed to the waiting requests, which report it as a server error
            jobs.clear()
            for fut in futures:
                fut.set_exception(exc)
            return
        jobs.clear()
        for fut, out in zip(futures, outputs, strict=True):
            if isinstance(out, BaseException):
                fut.set_exception(out)
            else:
                fut.set_result(out)


def _items(item: object) -> list[tuple[_Job, Future]]:
    """The jobs of one queue entry: a job submitted alone, or a group from `submit_all`."""
    return item if isinstance(item, list) else [item]  # type: ignore[list-item]
