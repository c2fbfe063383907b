"""Pairs of 64-bit perceptual hashes within a Hamming distance, found without comparing every pair.

Multi-index hashing (Norouzi et al., 2012): cut the bits two hashes may still differ in into d + 1
blocks; two hashes within distance d agree exactly on at least one block (pigeonhole), so only hashes
that share a block's value are compared. Real perceptual hashes are not uniform: where many hashes
share one block's value, that bucket is searched again the same way, its blocks cut from the bits
that still vary inside it, so a cluster never turns the search back into every pair. The answer is
the exhaustive search's, sorted.
"""

from __future__ import annotations

import numpy as np

HASH_BITS = 64
# a bucket whose pairs number at most this many is compared directly: one vectorised popcount
DIRECT_PAIRS = 1 << 16


def exhaustive_pairs(a: np.ndarray, b: np.ndarray, max_distance: int, *, same: bool = False) -> np.ndarray:
    """Index pairs (i, j) with popcount(a[i] ^ b[j]) <= max_distance, comparing every pair; with `same`, only
    i < j. Sorted."""
    pairs = []
    chunk = 1024
    for start in range(0, len(a), chunk):
        block = a[start : start + chunk, None] ^ b[None, :]
        i, j = np.nonzero(np.bitwise_count(block) <= max_distance)
        i += start
        if same:
            keep = i < j
            i, j = i[keep], j[keep]
        pairs.append(np.stack([i, j], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)


def hamming_pairs(a: np.ndarray, b: np.ndarray, max_distance: int, *, same: bool = False) -> np.ndarray:
    """What `exhaustive_pairs` returns, by multi-index hashing: (i, j) with popcount(a[i] ^ b[j]) <=
    max_distance, sorted; with `same` (`b` is `a`), only i < j."""
    a, b = np.asarray(a, np.uint64), np.asarray(b, np.uint64)
    found: list[np.ndarray] = []
    if len(a) and len(b):
        free = np.uint64((1 << HASH_BITS) - 1)
        _search(a, b, np.arange(len(a)), np.arange(len(b)), free, max_distance, same, found)
    if not found:
        return np.zeros((0, 2), np.int64)
    codes = np.unique(np.concatenate(found))  # a pair shares several blocks: found once per block
    return np.stack([codes // len(b), codes % len(b)], axis=1).astype(np.int64)


def _blocks(free: np.uint64, count: int) -> list[np.uint64]:
    """The set bits of `free` cut into `count` masks of consecutive set bits, as equal in size as can be."""
    positions = [bit for bit in range(HASH_BITS) if int(free) >> bit & 1]
    size, extra = divmod(len(positions), count)
    masks, start = [], 0
    for part in range(count):
        end = start + size + (part < extra)
        masks.append(np.uint64(sum(1 << bit for bit in positions[start:end])))
        start = end
    return masks


def _compare(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray, max_distance: int, same: bool) -> np.ndarray:
    """Codes i * len(b) + j of the pairs of `ia` x `ib` within `max_distance`, compared directly (in row chunks:
    a cluster of identical hashes can be large)."""
    codes = []
    rows = max(1, DIRECT_PAIRS // len(ib))
    for start in range(0, len(ia), rows):
        part = ia[start : start + rows]
        close = np.bitwise_count(a[part][:, None] ^ b[ib][None, :]) <= max_distance
        if same:
            close &= part[:, None] < ib[None, :]
        i, j = np.nonzero(close)
        codes.append(part[i].astype(np.int64) * len(b) + ib[j])
    return np.concatenate(codes)


def _search(
    a: np.ndarray,
    b: np.ndarray,
    ia: np.ndarray,
    ib: np.ndarray,
    free: np.uint64,
    max_distance: int,
    same: bool,
    found: list[np.ndarray],
) -> None:
    """Add to `found` the close pairs of `ia` x `ib`, hashes that agree on every bit outside `free`."""
    reference = a[ia[0]]
    varying = np.bitwise_or.reduce(a[ia] ^ reference) | np.bitwise_or.reduce(b[ib] ^ reference)
    free &= varying  # bits every hash here shares tell no pair apart: blocks are cut from the others
    if len(ia) * len(ib) <= DIRECT_PAIRS or int(free).bit_count() <= max_distance:
        found.append(_compare(a, b, ia, ib, max_distance, same))
        return
    for block in _blocks(free, max_distance + 1):
        groups_a = _buckets(a, ia, block)
        groups_b = groups_a if same else _buckets(b, ib, block)  # with `same`, b and ib are a and ia
        for value, bucket_a in groups_a.items():
            bucket_b = groups_b.get(value)
            if bucket_b is None or (same and len(bucket_a) < 2):
                continue
            _search(a, b, bucket_a, bucket_b, free & ~block, max_distance, same, found)


def _buckets(hashes: np.ndarray, indices: np.ndarray, block: np.uint64) -> dict[int, np.ndarray]:
    """`indices` grouped by the value of their hashes' bits in `block`."""
    keys = hashes[indices] & block
    order = np.argsort(keys, kind="stable")
    values, starts = np.unique(keys[order], return_index=True)
    return dict(zip(values.tolist(), np.split(indices[order], starts[1:]), strict=True))
