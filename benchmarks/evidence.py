"""The evidence behind an answer: how long retrieval takes, and how much more often flagged answers are wrong.

    PYTHONPATH=src:. python benchmarks/evidence.py speed [--photos 10000] [--species 100] [--repeats 50]
    PYTHONPATH=src:. python benchmarks/evidence.py flags RUN_DIR [--split test] [--data DIR]

`speed`, in this one run, on a bank of N x 1280 features (EfficientNet-Lite0's pooled width) of S species:

* evidence: `EvidenceBank.explain` for one answer (exact: a bfloat16 pass over the bank picks candidates,
  scored again in float32; the 5 nearest photos for the vote and the 3 nearest of the answer and of the
  runner-up, ties by row), per answer in a batch of 16, and with one float32 pass instead (CPUs
  without bfloat16 take that path);
* torch: `NeighbourBank.nearest` (the kNN detector's exact search) for the vote's 5 nearest only;
* faiss Flat: `IndexFlatIP.search` for the vote's 5 nearest, plus one `IDSelectorBatch` search per shown
  species (the same work as `explain`);
* the model: one photo through efficientnet_lite0 at 224 px (fp32), the peer the ratio is taken against.

`flags`: each photo of a split of a run that has an evidence bank through the predictor; the error rate of
answers whose nearest training photos outvote them ("check this one") against the rest, for 1, 3, 5
(the default), 7 and 10 voters; the answers counted are the top species of every photo, and separately
those given as a species (not "unknown" or "take another photo").
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from monkeysee.data.species import Species
from monkeysee.models.evidence import VOTERS, EvidenceBank, top_rows

DIM = 1280


def timed(call: Callable[[], object], repeats: int) -> float:
    """Median seconds of `repeats` calls, after one warm-up."""
    call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def speed(photos: int, species: int, repeats: int) -> None:
    from monkeysee.models import create_model
    from monkeysee.models.neighbours import NeighbourBank

    rng = np.random.default_rng(0)
    centres = np.abs(rng.normal(size=(species, DIM))).astype(np.float32)
    targets = rng.integers(0, species, photos)
    feats = centres[targets] + np.abs(rng.normal(scale=0.8, size=(photos, DIM))).astype(np.float32)
    bank = EvidenceBank(feats, targets, np.arange(species)[::-1].copy(),
                        [Species(f"s{i}", f"species {i}") for i in range(species)])
    query = feats[:1] + rng.normal(scale=0.1, size=(1, DIM)).astype(np.float32)
    batch = feats[:16] + rng.normal(scale=0.1, size=(16, DIM)).astype(np.float32)
    ranked = np.array([[int(targets[0]), (int(targets[0]) + 1) % species]])
    rows: dict[str, float] = {}
    rows["evidence, 1 answer"] = timed(lambda: bank.explain(query, ranked), repeats)
    rows["evidence, per answer in 16"] = timed(lambda: bank.explain(batch, ranked.repeat(16, 0)),
                                               max(3, repeats // 8)) / 16
    if bank.coarse is not None:
        plain = EvidenceBank(feats, targets, bank.partners, bank.species)
        plain.coarse = None
        rows["evidence, float32 only, 1 answer"] = timed(lambda: plain.explain(query, ranked), repeats)
    torch_bank = NeighbourBank(bank.features)
    rows["torch NeighbourBank, vote only"] = timed(lambda: torch_bank.nearest(query, VOTERS), repeats)
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatIP(DIM)
        index.add(bank.features)
        q = (query / np.linalg.norm(query)).astype(np.float32)
        selectors = [faiss.IDSelectorBatch(bank.rows_of[s]) for s in ranked[0]]

        def with_faiss() -> None:
            index.search(q, VOTERS)
            for sel in selectors:
                index.search(q, 3, params=faiss.SearchParameters(sel=sel))

        rows["faiss Flat, vote only"] = timed(lambda: index.search(q, VOTERS), repeats)
        rows["faiss Flat, vote + 2 species"] = timed(with_faiss, repeats)
        _, got = index.search(q, VOTERS)
        exact = top_rows(bank.similarities(query)[0], VOTERS)
        print(f"faiss Flat's 5 nearest equal the exact ones: {got[0].tolist() == exact.tolist()}")
    model = create_model("efficientnet_lite0", num_classes=species, pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        forward = timed(lambda: model(x), max(5, repeats // 5))
    print(f"bank {photos} x {DIM}, {species} species, {torch.get_num_threads()} torch threads")
    print(f"{'':34s} {'ms':>8s} {'/ forward':>10s}")
    print(f"{'model forward, 1 photo (fp32)':34s} {forward * 1e3:8.2f} {1.0:10.3f}")
    for name, seconds in rows.items():
        print(f"{name:34s} {seconds * 1e3:8.2f} {seconds / forward:10.3f}")


def flags(run_dir: Path, split: str, data: Path | None, batch_size: int) -> None:
    from monkeysee.data.dataset import decoded_batches
    from monkeysee.predict import Predictor
    from monkeysee.rundir import RunDir

    predictor = Predictor.from_run_dir(run_dir, precision="fp32")
    if predictor.evidence is None:
        raise SystemExit(f"{run_dir} has no evidence bank: build one with `monkeysee evidence`")
    bank = predictor.evidence.bank
    samples = RunDir(run_dir).read_splits(data).split(split)
    truth = {str(s.path): s.target for s in samples}
    answers, targets, answered, sims = [], [], [], []
    for batch in decoded_batches([s.path for s in samples], batch_size, 2, predictor.run.manifest.preprocess):
        good = [(src, im) for src, im in batch if not isinstance(im, str)]
        x = predictor.prepare([im for _, im in good])
        logits, feats = predictor.logits_and_features(x)
        preds = predictor.decide(logits.numpy(), feats.numpy(), [s for s, _ in good], 1,
                                 [predictor.assess(im) for _, im in good])
        answers += [p.top[0].index for p in preds]
        answered += [p.verdict == "species" for p in preds]
        targets += [truth[s] for s, _ in good]
        sims.append(bank.similarities(feats.numpy()))
    a, t, given, s = np.array(answers), np.array(targets), np.array(answered), np.concatenate(sims)
    wrong = a != t
    print(f"{run_dir} {split}: {len(a)} photos, {wrong.mean():.2%} top-1 wrong, "
          f"{given.sum()} answered as a species ({wrong[given].mean():.2%} of those wrong)")
    print(f"{'voters':>6s} {'answers':>10s} {'flagged':>8s} {'wrong if flagged':>17s} "
          f"{'wrong if not':>13s} {'ratio':>7s} {'errors caught':>14s}")
    for k in (1, 3, 5, 7, 10):
        votes = [bank.vote(row, k)[1] for row in s]
        flagged = np.array([v.max() > v[ans] for v, ans in zip(votes, a, strict=True)])
        for name, keep in (("all", np.ones_like(given)), ("species", given)):
            f, w = flagged[keep], wrong[keep]
            on = w[f].mean() if f.any() else float("nan")
            off = w[~f].mean() if (~f).any() else float("nan")
            caught = (w & f).sum() / max(1, w.sum())
            mark = " (default)" if k == VOTERS else ""
            print(f"{k:6d} {name:>10s} {f.mean():8.2%} {on:17.2%} {off:13.2%} {on / max(off, 1e-9):7.1f}x "
                  f"{caught:14.2%}{mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--photos", type=int, default=10_000)
    s.add_argument("--species", type=int, default=100)
    s.add_argument("--repeats", type=int, default=50)
    f = sub.add_parser("flags")
    f.add_argument("run_dir", type=Path)
    f.add_argument("--split", default="test")
    f.add_argument("--data", type=Path, default=None)
    f.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.what == "speed":
        speed(args.photos, args.species, args.repeats)
    else:
        flags(args.run_dir, args.split, args.data, args.batch_size)


if __name__ == "__main__":
    main()
