"""Near-duplicate search below every pair: the same answer as the exhaustive search, clustered hashes included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelesion.data import near_pairs
from edgelesion.data.near_pairs import exhaustive_pairs, hamming_pairs


def flipped(hashes: np.ndarray, rng: np.random.Generator, most: int) -> np.ndarray:
    """Each hash with 0 to `most` random bits flipped: planted near duplicates."""
    out = hashes.copy()
    for k in range(len(out)):
        for bit in rng.choice(64, rng.integers(0, most + 1), replace=False):
            out[k] ^= np.uint64(1) << np.uint64(bit)
    return out


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(
        np.uint64
    )


@pytest.mark.parametrize("max_distance", [0, 4, 8])
def test_uniform_hashes_with_planted_near_duplicates_match_the_exhaustive_search(max_distance):
    rng = np.random.default_rng(max_distance)
    base = random_hashes(rng, 1500)
    hashes = np.concatenate([base, flipped(base[:500], rng, max_distance)])
    found = hamming_pairs(hashes, hashes, max_distance, same=True)
    np.testing.assert_array_equal(found, exhaustive_pairs(hashes, hashes, max_distance, same=True))
    assert len(found) >= 500  # every planted pair is found
    test = flipped(base[::7], rng, max_distance + 1)
    np.testing.assert_array_equal(
        hamming_pairs(test, hashes, max_distance), exhaustive_pairs(test, hashes, max_distance)
    )


def test_clustered_hashes_match_and_the_cluster_is_searched_again_not_compared_whole(monkeypatch):
    rng = np.random.default_rng(1)
    # 10,000 of 20,000 hashes share their top 32 bits: the first-level blocks cut from those bits put the whole
    # cluster in one bucket, which naive bucketing would compare pair by pair
    cluster = (np.uint64(0xDEADBEEF) << np.uint64(32)) | rng.integers(0, 2**32, 9000).astype(np.uint64)
    hashes = np.concatenate([cluster, flipped(cluster[:1000], rng, 4), random_hashes(rng, 10000)])
    compared = []
    real_compare = near_pairs._compare

    def counted(a, b, ia, ib, max_distance, same):
        compared.append(len(ia) * len(ib))
        return real_compare(a, b, ia, ib, max_distance, same)

    monkeypatch.setattr(near_pairs, "_compare", counted)
    found = hamming_pairs(hashes, hashes, 4, same=True)
    np.testing.assert_array_equal(found, exhaustive_pairs(hashes, hashes, 4, same=True))
    assert len(found) >= 1000 and max(compared) <= near_pairs.DIRECT_PAIRS
    # a fifth of the pairs the exhaustive search compares; comparing the cluster whole alone takes 10,000^2
    assert sum(compared) < len(hashes) ** 2 / 2 / 5


def test_identical_hashes_pair_with_each_other_and_empty_inputs_give_no_pairs():
    hashes = np.zeros(700, np.uint64)
    found = hamming_pairs(hashes, hashes, 4, same=True)
    assert len(found) == 700 * 699 // 2 and np.array_equal(found, exhaustive_pairs(hashes, hashes, 4, same=True))
    assert hamming_pairs(np.zeros(0, np.uint64), hashes, 4).shape == (0, 2)
    assert hamming_pairs(hashes[:3], np.zeros(0, np.uint64), 4).shape == (0, 2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), min_size=0, max_size=60),
    st.lists(st.integers(0, 2**64 - 1), min_size=0, max_size=60),
    st.integers(0, 10),
)
def test_any_hashes_match_the_exhaustive_search(first, second, max_distance):
    a, b = np.array(first, np.uint64), np.array(second, np.uint64)
    a = np.concatenate([a, a[: len(a) // 2] ^ np.uint64(5)])  # near copies, so there is something to find
    np.testing.assert_array_equal(hamming_pairs(a, b, max_distance), exhaustive_pairs(a, b, max_distance))
    np.testing.assert_array_equal(
        hamming_pairs(a, a, max_distance, same=True), exhaustive_pairs(a, a, max_distance, same=True)
    )
