"""The evidence bank in the run folder: written by training, read by predict, rebuilt for a finished run,
refused when its files are not the ones the manifest pins; and the thumbnail size cap."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monkeysee.cli import main
from monkeysee.data.thumbnails import MAX_BYTES, SIDE, pack, thumbnail
from monkeysee.errors import CheckpointError
from monkeysee.predict import Predictor
from monkeysee.rundir import EVIDENCE, THUMBNAILS, RunDir
from tests.conftest import private_copy


def test_thumbnails_are_small_webp_within_the_cap() -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8))
    data = thumbnail(noise)
    im = Image.open(io.BytesIO(data))
    assert im.format == "WEBP" and max(im.size) == SIDE and im.size == (96, 64)
    assert len(data) <= MAX_BYTES
    tight = thumbnail(noise, max_bytes=400)  # noise does not fit at 96 px: quality, then size, give way
    assert len(tight) <= 400 and Image.open(io.BytesIO(tight)).format == "WEBP"
    assert 10_000 * MAX_BYTES <= 50_000_000


def test_pack_offsets() -> None:
    blob, offsets = pack([b"ab", b"", b"cde"])
    assert blob == b"abcde" and offsets.tolist() == [0, 2, 2, 5]


def test_training_writes_the_evidence_into_the_run(tiny_run: Path) -> None:
    run = RunDir(tiny_run)
    manifest = run.read_manifest()
    assert {EVIDENCE, THUMBNAILS} <= set(manifest.files)
    assert (tiny_run / "evidence.safetensors").is_file() and (tiny_run / "thumbnails.bin").is_file()
    evidence = run.load_evidence(manifest)
    assert evidence is not None
    train = run.read_splits().train
    assert len(evidence.bank) == len(train) == len(evidence.thumbnails) == len(evidence.paths)
    assert evidence.bank.targets.tolist() == [s.target for s in train]
    assert evidence.paths[0] == run.read_splits().relative(train[0].path)
    im = Image.open(io.BytesIO(evidence.thumbnails.read(0)))
    assert im.format == "WEBP" and max(im.size) == SIDE
    assert evidence.thumbnails.nbytes == (tiny_run / "thumbnails.bin").stat().st_size
    with pytest.raises(IndexError):
        evidence.thumbnails.read(len(train))
    with pytest.raises(IndexError):
        evidence.thumbnails.read(-1)


def test_a_training_photo_finds_itself_first(tiny_run: Path) -> None:
    run = RunDir(tiny_run)
    train = run.read_splits().train
    pred = next(Predictor.from_run_dir(tiny_run, precision="fp32").predict_paths([train[3].path]))
    assert pred.evidence is not None
    d = pred.to_dict()["evidence"]
    assert set(d) == {"species", "confused_with", "nearest_vote", "check"}
    answer = d["species"][0]
    assert answer["index"] == pred.top[0].index and len(answer["nearest"]) == 3
    if pred.top[0].index == train[3].target:
        assert answer["nearest"][0]["photo"] == 3
        assert answer["nearest"][0]["similarity"] == pytest.approx(1.0, abs=0.01)


def test_rebuild_for_a_finished_run(tiny_run: Path, tmp_path: Path) -> None:
    copy = private_copy(tiny_run, tmp_path / "run")
    trained = RunDir(copy).load_evidence()
    (copy / EVIDENCE).unlink()
    assert main(["evidence", str(copy)]) == 0
    rebuilt = RunDir(copy).load_evidence()
    assert trained is not None and rebuilt is not None
    assert rebuilt.paths == trained.paths
    assert rebuilt.bank.targets.tolist() == trained.bank.targets.tolist()
    # the stored features (bf16 store) and a fresh forward pass agree on every photo
    cosine = (rebuilt.bank.features * trained.bank.features).sum(axis=1)
    assert cosine.min() > 0.99


def test_evidence_files_that_do_not_match_the_manifest_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    copy = private_copy(tiny_run, tmp_path / "run")
    data = (copy / THUMBNAILS).read_bytes()
    (copy / THUMBNAILS).write_bytes(data[:-10])
    evidence = RunDir(copy).load_evidence()
    assert evidence is not None
    with pytest.raises(CheckpointError, match=r"thumbnails\.bin"):
        evidence.thumbnails.read(0)
    raw = bytearray((copy / EVIDENCE).read_bytes())
    raw[-1] ^= 0xFF
    (copy / EVIDENCE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"evidence\.safetensors"):
        RunDir(copy).load_evidence()


def test_explain_prints_and_draws_the_evidence(tiny_run: Path, tmp_path: Path, capsys) -> None:
    photo = RunDir(tiny_run).read_splits().train[0].path
    assert main(["explain", str(tiny_run), str(photo), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "nearest training photos" in printed and "#0 1.00" in printed
    drawn = Image.open(tmp_path / "out" / f"{photo.stem}__evidence.png")
    assert drawn.format == "PNG" and drawn.width > 300
