"""The feature store encodes each (photo content, key, view) once, survives kills, and reads back exactly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from monkeysee.data.layout import Sample
from monkeysee.errors import ConfigError
from monkeysee.models.fold import FOLD
from monkeysee.train.encode import encode_into
from monkeysee.train.store import FeatureStore, StoreKey
from tests.train.conftest import Counting, aug_transform, clean_transform, make_key, tiny_body, write_photo

VIEWS = 2


def encode(store: FeatureStore, lower: torch.nn.Module, samples: list[Sample], flip: float = 0.5,
           **kw):
    kw = {"batch_size": 6, "shard_rows": 6} | kw
    return encode_into(store, lower, samples, clean_transform(), aug_transform(flip), VIEWS, **kw)


def everything(store: FeatureStore, samples: list[Sample]) -> torch.Tensor:
    split = store.split(samples, VIEWS)
    return torch.stack([split.gather(v, torch.arange(len(split))) for v in range(VIEWS + 1)])


def test_first_encode_runs_every_view_once_and_a_rerun_none(store, lower, photos):
    samples = photos(5)
    report = encode(store, lower, samples)
    assert (lower.images, report.photos, report.views) == (15, 5, 15)
    assert store.missing(samples, VIEWS) == []
    again = encode(store, lower, samples)
    assert (lower.images, again.photos, again.views, again.shards) == (15, 0, 0, 0)


def test_a_second_store_instance_over_the_same_photos_encodes_nothing(tmp_path, store, lower, photos):
    samples = photos(4)
    encode(store, lower, samples)
    fresh = Counting(tiny_body()[:2])
    second = FeatureStore(tmp_path / "store", make_key(fresh))
    assert second.missing(samples, VIEWS) == []
    encode(second, fresh, samples)
    assert fresh.calls == 0
    assert torch.equal(everything(second, samples), everything(store, samples))


def test_a_changed_photo_alone_is_encoded_again(store, lower, photos):
    samples = photos(4)
    encode(store, lower, samples)
    write_photo(samples[2].path, seed=99)  # same path, new bytes
    assert store.missing(samples, VIEWS) == [2]
    encode(store, lower, samples)
    assert lower.images == 12 + 3


def test_an_unchanged_photo_under_a_new_path_is_not_encoded_again(tmp_path, store, lower, photos):
    samples = photos(3)
    encode(store, lower, samples)
    moved = tmp_path / "elsewhere" / "renamed.png"
    moved.parent.mkdir()
    samples[0].path.rename(moved)
    assert store.missing([Sample(moved, 0), *samples[1:]], VIEWS) == []


@pytest.mark.parametrize(
    ("change", "expected_images"),
    [
        ({"backbone": "other"}, 12),  # every view of every photo
        ({"cut": 1}, 12),
        ({"seed": 1}, 8),  # the clean views are shared, only the augmented ones differ
        ({"flip": 1.0}, 8),
        ({"folded": False}, 12),  # BatchNorm computed apart from its convolution: other last bits
        ({}, 0),
    ],
)
def test_a_changed_key_encodes_again_and_an_unchanged_one_does_not(tmp_path, store, lower, photos,
                                                                   change, expected_images):
    samples = photos(4)
    encode(store, lower, samples)
    cut = change.get("cut", 2)
    other = Counting(tiny_body()[:cut])
    key = make_key(other, backbone=change.get("backbone", "tiny"), cut=cut, flip=change.get("flip", 0.5),
                   seed=change.get("seed", 0))
    key = replace(key, folded=change.get("folded", True))
    encode(FeatureStore(tmp_path / "store", key), other, samples, flip=change.get("flip", 0.5))
    assert other.images == expected_images


def test_a_body_with_batchnorm_is_encoded_folded_and_the_rows_match_the_unfolded_ones(tmp_path, photos):
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU()).eval()
    with torch.no_grad():
        body[1].running_mean.uniform_(-1, 1)
        body[1].running_var.uniform_(0.5, 2)
    samples = photos(3)
    key = make_key(body)
    rows = {}
    for fold in (True, False):
        store = FeatureStore(tmp_path / "store", replace(key, folded=fold))
        encode(store, body, samples)
        rows[fold] = everything(store, samples)
    assert rows[True].shape == (VIEWS + 1, 3, 4, 16, 16)
    assert not torch.equal(rows[True], rows[False])  # two tables, each computed its own way
    torch.testing.assert_close(rows[True], rows[False], rtol=1e-5, atol=1e-5)
    assert isinstance(body[1], torch.nn.BatchNorm2d)  # encoding folded a copy, never the body
    # rows of another fold's arithmetic differ in their last bits: the key names the fold it used
    assert key.fields_of(1)["folded"] == FOLD and replace(key, folded=False).fields_of(1)["folded"] is False


def test_other_frozen_weights_are_another_key_and_refused_under_the_old_one(store, photos):
    other = Counting(tiny_body(seed=1)[:2])
    assert make_key(other) != store.key
    with pytest.raises(ConfigError, match="not the ones the store key was made for"):
        encode(store, other, photos(1))


def test_adding_photos_encodes_only_the_new_ones(store, lower, photos):
    first = photos(4)
    encode(store, lower, first)
    more = first + photos(3, start=4)
    assert store.missing(more, VIEWS) == [4, 5, 6]
    report = encode(store, lower, more)
    assert (report.photos, lower.images) == (3, 12 + 9)


class Killed(Exception):
    pass


class DiesAfter(Counting):
    """Raises on forward call number `calls + 1`, like a kill in the middle of encoding."""

    def __init__(self, inner: torch.nn.Module, calls: int) -> None:
        super().__init__(inner)
        self.limit = calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls == self.limit:
            raise Killed
        return super().forward(x)


def test_a_kill_mid_encode_keeps_finished_shards_and_a_rerun_encodes_only_the_rest(tmp_path, photos):
    samples = photos(7)  # batches of 2 photos x 3 views = 6 rows = one aug shard per batch
    whole = Counting(tiny_body()[:2])
    reference = FeatureStore(tmp_path / "reference", make_key(whole))
    encode(reference, whole, samples)

    dying = DiesAfter(tiny_body()[:2], calls=2)
    store = FeatureStore(tmp_path / "store", make_key(dying))
    with pytest.raises(Killed):
        encode(store, dying, samples)
    assert len(store) == 2 * 2 * 3  # 2 finished batches of 2 photos, 3 views each
    assert store.missing(samples, VIEWS) == [4, 5, 6]

    rerun = Counting(tiny_body()[:2])
    resumed = FeatureStore(tmp_path / "store", make_key(rerun))
    encode(resumed, rerun, samples)
    assert rerun.images == 3 * 3
    assert torch.equal(everything(resumed, samples), everything(reference, samples))


_KILLED_SCRIPT = """
import os, signal, sys
from pathlib import Path
from monkeysee.data.layout import Sample
from monkeysee.train.store import FeatureStore
from tests.train.conftest import Counting, make_key, tiny_body
from tests.train.test_train_store import encode

class SigKill(Counting):
    def forward(self, x):
        if self.calls == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)

lower = SigKill(tiny_body()[:2])
samples = [Sample(Path(p), i % 3) for i, p in enumerate(sys.argv[2:])]
encode(FeatureStore(Path(sys.argv[1]), make_key(lower)), lower, samples)
"""


def test_a_sigkilled_encode_resumes_to_the_same_store(tmp_path, photos):
    samples = photos(7)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_SCRIPT), str(tmp_path / "store"),
                           *(str(s.path) for s in samples)], env=env, cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr

    rerun = Counting(tiny_body()[:2])
    store = FeatureStore(tmp_path / "store", make_key(rerun))
    assert store.missing(samples, VIEWS) == [4, 5, 6]
    encode(store, rerun, samples)
    whole = Counting(tiny_body()[:2])
    reference = FeatureStore(tmp_path / "reference", make_key(whole))
    encode(reference, whole, samples)
    assert rerun.images == 9
    assert torch.equal(everything(store, samples), everything(reference, samples))


def test_augmented_views_do_not_depend_on_order_batching_or_workers(tmp_path, photos):
    samples = photos(5)
    a, b = Counting(tiny_body()[:2]), Counting(tiny_body()[:2])
    first = FeatureStore(tmp_path / "a", make_key(a))
    second = FeatureStore(tmp_path / "b", make_key(b))
    encode(first, a, samples, batch_size=3)
    encode(second, b, samples[::-1], batch_size=30, workers=1)
    assert torch.equal(everything(second, samples), everything(first, samples))
    assert not torch.equal(everything(first, samples)[1], everything(first, samples)[2])  # views differ


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_reading_gives_back_exactly_what_was_written(tmp_path, lower, precision, dtype):
    store = FeatureStore(tmp_path / "store", make_key(lower, precision=precision))
    acts = torch.randn(5, 6, 4, 4).to(dtype)
    store.write(acts[:3], ["a", "b", "c"], [1, 1, 2])
    store.write(acts[3:], ["c", "a"], [1, 2])
    assert store.read(["a", "c", "a"], [2, 2, 1]).dtype == dtype
    assert torch.equal(store.read(["a", "c", "a", "b"], [2, 2, 1, 1]), acts[[4, 2, 0, 1]])
    assert torch.equal(FeatureStore(tmp_path / "store", store.key).read(["c"], 1), acts[[3]])


def _rss_file_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_reading_the_whole_store_does_not_keep_it_in_process_memory(tmp_path, lower):
    """A memory map counts every page read in the process's resident memory: reading the butterflies'
    1.3 GB store once would add 1.3 GB of RSS. Positioned reads leave the pages to the page cache."""
    store = FeatureStore(tmp_path / "store", make_key(lower))
    names = [f"p{i}" for i in range(64)]
    acts = torch.randn(64, 64, 32, 32)
    for part in range(0, 64, 16):  # 4 shards of 16 rows x 256 KB = 16 MB in all
        store.write(acts[part:part + 16], names[part:part + 16], [0] * 16)
    before = _rss_file_mb()
    for i in range(0, 64, 8):
        assert torch.equal(store.read(names[i:i + 8], 0), acts[i:i + 8])
    assert _rss_file_mb() - before < 4, "reading 16 MB of shards grew file-backed RSS"


def test_a_shard_that_does_not_match_its_manifest_is_refused_with_its_name(tmp_path, lower):
    import numpy as np

    from monkeysee.errors import DataError

    store = FeatureStore(tmp_path / "store", make_key(lower))
    store.write(torch.randn(2, 6, 4, 4), ["a", "b"], [0, 0])
    shard = next((tmp_path / "store").rglob("*.npy"))
    np.save(shard, np.zeros((2, 6, 4, 5), dtype=np.float32))  # another shape under the same name
    expected = "shape (6, 4, 5), not the float32 rows of shape (6, 4, 4)"
    with pytest.raises(DataError, match=re.escape(expected)) as err:
        FeatureStore(tmp_path / "store", store.key).read(["a"], 0)
    assert shard.name in str(err.value)


def test_encoded_views_are_the_forward_pass_of_the_transformed_photos(store, lower, photos):
    samples = photos(4)
    encode_into(store, lower, samples, clean_transform(), None, 0, batch_size=64)
    from PIL import Image

    x = torch.stack([clean_transform()(Image.open(s.path).convert("RGB")) for s in samples])
    with torch.inference_mode():
        expected = lower.inner(x)
    split = store.split(samples, 0)
    assert split.shape == (1, 4, 6, 4, 4)
    assert torch.equal(torch.cat(list(split.chunks(0, size=3))), expected)


def test_gather_reads_one_chosen_view_per_photo(store, lower, photos):
    samples = photos(5)
    encode(store, lower, samples)
    split = store.split(samples, VIEWS)
    full = everything(store, samples)
    view, rows = torch.tensor([2, 0, 1, 2]), torch.tensor([4, 0, 3, 1])
    assert torch.equal(split.gather(view, rows), full[view, rows])
    assert torch.equal(split.load(1), full[1])


def test_an_unreadable_photo_is_skipped_with_its_reason(tmp_path, store, lower, photos):
    samples = photos(3)
    bad = tmp_path / "photos" / "bad.png"
    bad.write_bytes(b"not a photo at all")
    empty = tmp_path / "photos" / "empty.png"
    empty.write_bytes(b"")
    with_bad = [samples[0], Sample(bad, 1), samples[1], Sample(empty, 2), samples[2]]
    with pytest.warns(RuntimeWarning, match="skipping unreadable photo"):
        report = encode(store, lower, with_bad)
    assert [s.path for s in report.skipped] == [bad, empty]
    assert "not an image" in report.skipped[0].reason
    assert "file is empty" in report.skipped[1].reason
    split = store.split(with_bad, VIEWS)
    assert split.indices.tolist() == [0, 2, 4]
    assert split.targets.tolist() == [0, 1, 2]
    assert store.missing(with_bad, VIEWS) == [1, 3]  # tried again next time: the file may be fixed


def test_a_transform_without_a_stable_description_is_refused(lower):
    with pytest.raises(ConfigError, match="memory address"):
        StoreKey.for_encoding("tiny", 2, lower, lambda im: im, None, "fp32", 0)


def test_a_photo_present_twice_is_encoded_once(tmp_path, store, lower, photos):
    samples = photos(2)
    copy = tmp_path / "copy.png"
    copy.write_bytes(samples[0].path.read_bytes())
    report = encode(store, lower, [*samples, Sample(copy, 2)])
    assert (report.photos, lower.images) == (2, 6)
    assert store.split([*samples, Sample(copy, 2)], VIEWS).indices.tolist() == [0, 1, 2]


def test_the_pooled_key_follows_every_weight_and_buffer_of_the_body_but_not_its_memory_format():
    body = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)),
                               torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3))).eval()
    frozen = make_key(body[:1], cut=1)
    pooled = frozen.pooled(body)
    assert {pooled.folder(0), pooled.folder(1)}.isdisjoint({frozen.folder(0), frozen.folder(1)})
    assert frozen.pooled(body.to(memory_format=torch.channels_last)) == pooled
    with torch.no_grad():
        body[1][0].weight[0, 0, 0, 0] += 1e-3  # a trainable stage changed by fine-tuning
    tuned = frozen.pooled(body)
    body[0][1].running_mean[0] += 1e-3  # a BatchNorm statistic
    assert len({pooled, tuned, frozen.pooled(body)}) == 3
    assert make_key(body[:1], cut=2).pooled(body) != frozen.pooled(body)  # another cut: another split


def test_the_store_command_lists_each_table_with_what_it_holds_its_rows_and_bytes(store, lower, photos,
                                                                                  capsys):
    from monkeysee.cli import main
    from monkeysee.train.store import describe_store

    encode(store, lower, photos(4))
    pooled = FeatureStore(store.root, store.key.pooled(tiny_body()))
    pooled.write(torch.zeros(3, 8), ["a", "b", "c"], [0, 0, 0])
    tables = {t.folder: t for t in describe_store(store.root)}
    expected = {store.key.folder(0): ("frozen layers", "clean", 4),
                store.key.folder(1): ("frozen layers", "augmented", 4 * VIEWS),
                pooled.key.folder(0): ("pooled features", "clean", 3),
                pooled.key.folder(1): ("pooled features", "augmented", 0)}
    assert {name: (t.what, t.views, t.rows) for name, t in tables.items()} == expected
    for name, t in tables.items():
        assert t.bytes == sum(f.stat().st_size for f in (store.root / name).iterdir())
    assert main(["store", str(store.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == sorted(expected)
    assert lines[-1].startswith("4 tables, ")
    assert main(["store", str(store.root / "nowhere")]) == 2
    assert "feature store not found" in capsys.readouterr().err


def test_a_shard_of_clean_and_augmented_views_together_is_refused(store):
    with pytest.raises(ValueError, match=r"clean views \(0\) or augmented ones"):
        store.write(torch.zeros(2, 6, 4, 4), ["a", "b"], [0, 1])
    assert len(store) == 0
