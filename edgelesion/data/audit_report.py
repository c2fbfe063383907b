"""The `audit` job: audit a dataset folder (and its overlap with a test folder) into audit.json and a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelesion.data.audit import (NEAR_DUPLICATE_MAX_DISTANCE, ConflictPolicy, audit_dataset, find_overlaps,
                              format_audit, overlaps_to_dict)
from edgelesion.data.dataset import load_dataset
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import ensure_outside, write_json
from edgelesion.plots import class_counts_chart
from edgelesion.preprocessing import Preprocessing
from edgelesion.provenance import provenance


def run_audit(data_dir: str | Path, out: str | Path, *, test_dir: str | Path | None = None,
              policy: ConflictPolicy = ConflictPolicy.EXCLUDE,
              near_max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE, force: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Audit `data_dir`, print a summary, write audit.json and class_counts.png into `out`; return the audit dict."""
    out = Path(out)
    if (out / "audit.json").exists() and not force:
        raise EdgelesionError(f"{out / 'audit.json'} already exists: choose another --out or pass --force")
    ensure_outside(out, data_dir)
    if test_dir is not None:
        ensure_outside(out, test_dir)
    preprocessing = Preprocessing()
    dataset = load_dataset(data_dir, preprocessing, progress=progress)
    report = audit_dataset(dataset, policy=policy, near_max_distance=near_max_distance)
    print(format_audit(report))
    result = report.to_dict()
    if test_dir is not None:
        test = load_dataset(test_dir, preprocessing, min_classes=1, progress=progress)
        overlaps = find_overlaps(test, dataset.sha256, dataset.phash, near_max_distance)
        listed = overlaps_to_dict(overlaps, test, [r.relpath for r in dataset.records], [r.label for r in dataset.records])
        differ = sum(o["labels_differ"] for o in listed)
        print(f"  test folder {test_dir}: {len(listed)} of {len(test.records)} images are also in the training "
              f"folder ({differ} of them under a different label); evaluation removes them before scoring")
        result["test"] = {"data_root": str(test.root), "data_fingerprint": test.fingerprint(),
                          "images_readable": len(test.records), "skipped_files": [vars(s) for s in test.skipped],
                          "overlaps_with_training": listed}
    result["provenance"] = provenance()
    write_json(out / "audit.json", result)
    class_counts_chart(report.class_counts(), out / "class_counts.png")
    print(f"wrote {out / 'audit.json'} and {out / 'class_counts.png'}")
    return result
