"""Audit the full ISIC training set and measure the near-duplicate threshold on it.

    .venv/bin/python -m benchmarks.audit_full

Writes results/audit/ (what `edgelesion audit --data DATA --out benchmarks/results/audit` writes)
and results/near_duplicate_threshold.json: how far re-saving moves an image's perceptual hash,
against how close distinct files of the set come to each other.
"""

from __future__ import annotations

import argparse
import io
import time

import imagehash
import numpy as np
from PIL import Image

from benchmarks.common import RESULTS, record, require_data
from edgelesion.data.audit_report import run_audit
from edgelesion.data.dataset import load_dataset
from edgelesion.preprocessing import Preprocessing

RESAVES = {
    "jpeg quality 50": lambda im: _jpeg(im, 50),
    "resized to half": lambda im: im.resize((im.width // 2, im.height // 2)),
    "resized to double (bicubic)": lambda im: im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC),
    "two-thirds size, then jpeg quality 30": lambda im: _jpeg(im.resize((im.width * 2 // 3, im.height * 2 // 3)), 30),
}


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    data = require_data()
    started = time.perf_counter()
    run_audit(data, RESULTS / "audit", force=True)
    audit_seconds = time.perf_counter() - started

    dataset = load_dataset(data, Preprocessing(), progress=False)
    distance = np.bitwise_count(dataset.phash[:, None] ^ dataset.phash[None, :]).astype(int)
    sha = np.array(dataset.sha256)
    upper = np.triu(np.ones_like(distance, dtype=bool), k=1)
    distinct = distance[upper & (sha[:, None] != sha[None, :])]
    distinct_counts = {str(d): int((distinct == d).sum()) for d in range(0, 11, 2)}

    rng = np.random.default_rng(0)
    resave_counts = {}
    for name, change in RESAVES.items():
        moved = []
        for i in rng.choice(len(dataset.records), 300, replace=False):
            image = Image.open(data / dataset.records[i].relpath).convert("RGB")
            moved.append(int(imagehash.phash(image) - imagehash.phash(change(image))))
        resave_counts[name] = {str(d): moved.count(d) for d in sorted(set(moved))}
    record(
        "near_duplicate_threshold",
        {
            "audit_seconds": audit_seconds,
            "distinct_file_pairs_by_phash_distance": distinct_counts,
            "resaved_copies_by_phash_distance (300 images each)": resave_counts,
        },
    )


if __name__ == "__main__":
    main()
