"""ImageNet evidence on real photos: apes put their ImageNet mass on classes no known monkey is taken for.

Small on purpose (60 photos through the frozen backbone): three known species fitted on 12 photos each,
judged on 8 other photos of each and on 8 gorillas and 8 chimpanzees of ../shared/data/other-primates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monkeysee.data.images import load_rgb
from monkeysee.data.transforms import eval_transform
from monkeysee.models import create_model, get_backbone
from monkeysee.models.forward import forward_pass
from monkeysee.models.unknown_imagenet import KNNImageNet, imagenet_head
from tests.conftest import MONKEYS, SHARED_DATA

PRIMATES = SHARED_DATA / "other-primates"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MONKEYS / "training").is_dir() or not PRIMATES.is_dir(),
                       reason=f"real data not found at {MONKEYS} and {PRIMATES}"),
]


def _pooled(paths: list) -> np.ndarray:
    model = create_model("efficientnet_lite0", 1000, pretrained=True)
    transform = eval_transform(get_backbone("efficientnet_lite0").preprocess)
    x = torch.stack([transform(load_rgb(p)) for p in paths])
    features = forward_pass(model, x).features
    assert features is not None
    return features.numpy()


def test_apes_carry_foreign_imagenet_evidence_and_known_monkeys_do_not():
    species = ["n0", "n3", "n5"]  # mantled howler, Japanese macaque, white-headed capuchin
    photos = {s: sorted((MONKEYS / "training" / s).glob("*.jpg"))[:20] for s in species}
    apes = sorted((PRIMATES / "gorilla").iterdir())[:8] + sorted((PRIMATES / "chimpanzee").iterdir())[:8]
    train = [p for s in species for p in photos[s][:12]]
    known = [p for s in species for p in photos[s][12:]]
    feats = _pooled(train + known + apes)
    det = KNNImageNet(claim=0.05, imagenet=imagenet_head("efficientnet_lite0"))
    det.fit(feats[:36], np.repeat(np.arange(3), 12))
    known_evidence, ape_evidence = det.evidence(feats[36:60]), det.evidence(feats[60:])
    assert np.median(known_evidence) < 0.2 and np.median(ape_evidence) > 0.8, (known_evidence, ape_evidence)
    # Above 0.84 the evidence alone (x 0.5) passes the monkeys' kNN threshold of ~0.42.
    assert (ape_evidence > 0.84).sum() >= 8 and (known_evidence > 0.84).sum() <= 1
