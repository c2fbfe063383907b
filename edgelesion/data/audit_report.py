"""The `audit` job: audit a dataset folder (and its overlap with a test folder) into audit.json and a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelesion.data.audit import (
    NEAR_DUPLICATE_MAX_DISTANCE,
    AuditReport,
    ConflictPolicy,
    audit_dataset,
    find_overlaps,
    format_audit,
    overlaps_to_dict,
)
from edgelesion.data.confounding import (
    border_probe,
    class_by_source,
    confounding_to_dict,
    format_confounding,
    source_confounding,
)
from edgelesion.data.dataset import load_dataset
from edgelesion.data.metadata import MetadataSpec
from edgelesion.errors import EdgelesionError
from edgelesion.fileio import ensure_outside, write_json
from edgelesion.metrics import LOOKALIKES, POSITIVE_CLASS
from edgelesion.plots import class_by_source_chart, class_counts_chart
from edgelesion.preprocessing import Preprocessing
from edgelesion.provenance import provenance


def audit_confounding(
    report: AuditReport, out: Path, positive_class: str, lookalikes: tuple[str, ...]
) -> dict[str, Any]:
    """Whether class goes with source among the kept images: the class-by-source table and chart (with sources),
    and the border-colour probe from the pixels (always). Printed, and returned for audit.json."""
    dataset, kept = report.dataset, report.kept
    labels, classes = dataset.labels[kept], dataset.classes
    table, confounds, skipped = None, [], []
    if (all_sources := dataset.sources) is not None:
        sources = [all_sources[i] for i in kept]
        table = class_by_source(labels, sources, classes)
        confounds, skipped = source_confounding(labels, sources, classes, positive_class, lookalikes)
        class_by_source_chart(table, out / "class_by_source.png", "Kept images per class and source")
    probes, probe_skipped = border_probe(
        dataset.images.take(kept), labels, report.group_ids[kept], classes, positive_class, lookalikes
    )
    skipped += [f"border probe: {reason}" for reason in probe_skipped]
    print(format_confounding(table, confounds, probes, skipped))
    return confounding_to_dict(table, confounds, probes, skipped)


def run_audit(
    data_dir: str | Path,
    out: str | Path,
    *,
    test_dir: str | Path | None = None,
    metadata: MetadataSpec | None = None,
    policy: ConflictPolicy = ConflictPolicy.EXCLUDE,
    near_max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE,
    positive_class: str = POSITIVE_CLASS,
    lookalikes: tuple[str, ...] = LOOKALIKES,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Audit `data_dir`, print a summary, write audit.json, class_counts.png and (with sources in `metadata`)
    class_by_source.png into `out`; return the audit dict.

    The audit looks for duplicates, conflicting labels, test overlap, and whether class goes with source.
    """
    out = Path(out)
    if (out / "audit.json").exists() and not force:
        raise EdgelesionError(f"{out / 'audit.json'} already exists: choose another --out or pass --force")
    ensure_outside(out, data_dir)
    if test_dir is not None:
        ensure_outside(out, test_dir)
    preprocessing = Preprocessing()
    dataset = load_dataset(data_dir, preprocessing, progress=progress, metadata=metadata)
    report = audit_dataset(dataset, policy=policy, near_max_distance=near_max_distance)
    print(format_audit(report))
    out.mkdir(parents=True, exist_ok=True)
    result = report.to_dict()
    result["confounding"] = audit_confounding(report, out, positive_class, tuple(lookalikes))
    if test_dir is not None:
        test = load_dataset(test_dir, preprocessing, min_classes=1, progress=progress)
        overlaps = find_overlaps(test, dataset.sha256, dataset.phash, near_max_distance)
        listed = overlaps_to_dict(
            overlaps, test, [r.relpath for r in dataset.records], [r.label for r in dataset.records]
        )
        differ = sum(o["labels_differ"] for o in listed)
        print(
            f"  test folder {test_dir}: {len(listed)} of {len(test.records)} images are also in the training "
            f"folder ({differ} of them under a different label); evaluation removes them before scoring"
        )
        result["test"] = {
            "data_root": str(test.root),
            "data_fingerprint": test.fingerprint(),
            "images_readable": len(test.records),
            "skipped_files": [vars(s) for s in test.skipped],
            "overlaps_with_training": listed,
        }
    result["provenance"] = provenance()
    write_json(out / "audit.json", result)
    class_counts_chart(report.class_counts(), out / "class_counts.png")
    charts = ["class_counts.png", *(["class_by_source.png"] if dataset.sources is not None else [])]
    print(f"wrote {out / 'audit.json'} and {', '.join(str(out / c) for c in charts)}")
    return result
