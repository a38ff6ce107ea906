"""NeighbourBank gives the brute-force k-th nearest similarity, blocked or not: the knn detector's score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monkeysee.models.neighbours import NeighbourBank
from monkeysee.models.unknown import KNN


def brute_force(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ b.astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("block", [7, 64, 10_000])  # several blocks, a ragged last block, one block
def test_nearest_equals_brute_force(k, block):
    rng = np.random.default_rng(k)
    bank, queries = rng.normal(size=(200, 16)), rng.normal(size=(30, 16))
    sims, index = NeighbourBank(bank, block=block).nearest(queries, k, batch=8)
    expected_sims, expected_index = brute_force(bank, queries, k)
    np.testing.assert_array_equal(index.numpy(), expected_index)
    np.testing.assert_allclose(sims.numpy(), expected_sims, rtol=0, atol=1e-6)


def test_kth_similarity_is_one_minus_the_knn_detector_score():
    rng = np.random.default_rng(0)
    bank, queries = np.abs(rng.normal(size=(300, 32))), np.abs(rng.normal(size=(20, 32)))
    score = KNN(k=5, max_train=1000).fit(bank).score(np.zeros((20, 1)), queries)
    np.testing.assert_allclose(NeighbourBank(bank, block=50).kth_similarity(queries, 5), 1.0 - score,
                               rtol=0, atol=1e-6)


def test_hand_made_bank_gives_exact_similarities():
    bank = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [1.0, 1.0, 0]])
    sims, index = NeighbourBank(bank, block=2).nearest(np.array([[4.0, 0.5, 0]]), k=4)
    norm = math.sqrt(4.0**2 + 0.5**2)
    assert index.tolist() == [[0, 3, 1, 2]]
    assert sims[0].tolist() == pytest.approx([4 / norm, 4.5 / norm / math.sqrt(2), 0.5 / norm, 0.0], abs=1e-7)


def test_k_is_capped_at_the_bank_size_and_bad_shapes_are_refused():
    bank = NeighbourBank(np.eye(3))
    assert bank.nearest(np.eye(3), k=10)[0].shape == (3, 3)
    assert bank.kth_similarity(np.eye(3), k=1).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="dimensions"):
        bank.nearest(np.ones((1, 4)), k=1)
    with pytest.raises(ValueError, match="at least one"):
        NeighbourBank(np.zeros((0, 3)))
