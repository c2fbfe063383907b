"""Near-duplicate search at archive scale: multi-index hashing against the exhaustive search.

    .venv/bin/python -m benchmarks.near_duplicates --images 400000

On the shared set's own perceptual hashes, both searches must give the same pairs. Then an archive of
`--images` hashes is drawn from them the way archives repeat themselves: each is a real hash with 0 to 12
bits flipped (re-encodings, crops, other shots of one lesion), one in ten a uniformly random hash. The
multi-index search runs on all of it; the exhaustive search's time is its time on the first 2,000 hashes
against all, scaled to every pair, and both searches are compared in full on the first 20,000. Records
benchmarks/results/near_duplicates_KIND.{json,md} (KIND: the CPU kind).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks.common import cpu_kind_record_name, record, require_data, write_table
from edgelesion.data.audit import NEAR_DUPLICATE_MAX_DISTANCE
from edgelesion.data.dataset import load_dataset
from edgelesion.data.near_pairs import exhaustive_pairs, hamming_pairs
from edgelesion.preprocessing import Preprocessing


def archive_like(real: np.ndarray, images: int, seed: int = 0) -> np.ndarray:
    """`images` hashes: real ones with 0-12 random bits flipped, one in ten uniformly random."""
    rng = np.random.default_rng(seed)
    hashes = real[rng.integers(0, len(real), images)]
    flips = rng.integers(0, 13, images)
    for k in range(1, 13):
        rows = np.flatnonzero(flips >= k)
        hashes[rows] ^= np.uint64(1) << rng.integers(0, 64, len(rows)).astype(np.uint64)
    random_rows = rng.random(images) < 0.1
    hashes[random_rows] = rng.integers(0, 2**63, int(random_rows.sum()), dtype=np.int64).astype(np.uint64) << 1
    return hashes


def timed(function, *args, **kwargs):
    """(result, seconds)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400_000, help="hashes in the synthetic archive (default 400,000)")
    args = parser.parse_args()
    distance = NEAR_DUPLICATE_MAX_DISTANCE
    real = load_dataset(require_data(), Preprocessing(), progress=False).phash
    shared = {
        "images": len(real),
        "pairs": len(hamming_pairs(real, real, distance, same=True)),
        "same_as_exhaustive": bool(
            np.array_equal(
                hamming_pairs(real, real, distance, same=True), exhaustive_pairs(real, real, distance, same=True)
            )
        ),
    }
    archive = archive_like(real, args.images)
    found, seconds = timed(hamming_pairs, archive, archive, distance, same=True)
    head = archive[:20_000]
    head_same = bool(
        np.array_equal(
            hamming_pairs(head, head, distance, same=True), exhaustive_pairs(head, head, distance, same=True)
        )
    )
    _, sample_seconds = timed(exhaustive_pairs, archive[:2000], archive, distance)
    exhaustive_seconds = sample_seconds * (args.images / 2000) / 2  # the same=True search compares each pair once
    result = {
        "max_distance": distance,
        "shared_set": shared,
        "archive": {
            "images": args.images,
            "pairs": len(found),
            "multi_index_seconds": seconds,
            "exhaustive_seconds_estimated": exhaustive_seconds,
            "first_20000_same_as_exhaustive": head_same,
        },
    }
    name = cpu_kind_record_name("near_duplicates")
    record(name, result)
    write_table(
        name,
        [
            "# Near-duplicate search at archive scale",
            "",
            f"Command: `python -m benchmarks.near_duplicates {' '.join(sys.argv[1:])}`; Hamming distance <= {distance}.",
            "",
            "| hashes | pairs found | multi-index search | exhaustive search | same pairs as the exhaustive search |",
            "|---|---:|---:|---:|---|",
            f"| the shared set, {shared['images']:,} | {shared['pairs']:,} | | | {'yes' if shared['same_as_exhaustive'] else '**no**'} |",
            f"| archive-like, {args.images:,} | {len(found):,} | {seconds:.1f} s | {exhaustive_seconds:.0f} s (estimated "
            f"from 2,000 rows) | {'yes' if head_same else '**no**'} (on the first 20,000) |",
        ],
    )


if __name__ == "__main__":
    main()
