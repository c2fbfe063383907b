"""Find what makes a dataset's numbers dishonest: duplicates, conflicting labels, train/test overlap."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from edgelesion.data.dataset import LoadedDataset, SkippedFile
from edgelesion.data.near_pairs import hamming_pairs

# Two images whose 64-bit perceptual hashes (imagehash.phash) differ in at most this many bits
# are treated as the same lesion. Measured on 300 ISIC images (benchmarks/audit.md): re-saving
# at JPEG quality 50 or resizing moves the phash by 0-4 bits. Among distinct files of the
# 2,241-image ISIC set, 10 pairs lie within 4 bits (most are the same lesion photographed
# twice, which belongs on one side of a split anyway) and 20 more at 6 bits, several of them
# different lesions; so 4 catches re-saved copies without merging unrelated lesions.
NEAR_DUPLICATE_MAX_DISTANCE = 4

# A class with fewer usable images than this is flagged as too small to learn.
MIN_IMAGES_TO_LEARN = 20


class ConflictPolicy(str, Enum):
    """What to do with copies of one image that carry different labels."""

    EXCLUDE = "exclude"  # drop every copy: the true label is unknown (default)
    KEEP = "keep"  # keep one copy per label; the group still stays on one side of every split


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are byte-identical or near-identical to each other (indices into the dataset)."""

    members: tuple[int, ...]
    kind: str  # "exact" when all members are byte-identical, else "near"
    labels: tuple[str, ...]  # the distinct labels in the group, sorted

    @property
    def conflicting(self) -> bool:
        """True when the copies carry more than one label."""
        return len(self.labels) > 1


@dataclass(frozen=True)
class Overlap:
    """A test image that is also (exactly or nearly) in the training folder."""

    test_index: int
    train_indices: tuple[int, ...]
    kind: str  # "exact" or "near"


@dataclass
class AuditReport:
    """What an audit found, and which images the chosen policy keeps."""

    dataset: LoadedDataset
    group_ids: np.ndarray  # one id per image; images sharing an id must share a split side
    groups: list[DuplicateGroup]  # groups with two or more members
    policy: ConflictPolicy
    kept: np.ndarray  # indices of the images used for training and evaluation
    excluded: list[SkippedFile] = field(default_factory=list)  # images dropped by the policy, with why
    near_max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE

    @property
    def conflicts(self) -> list[DuplicateGroup]:
        """Groups whose copies carry different labels."""
        return [g for g in self.groups if g.conflicting]

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Per class: readable images found, and images kept after the duplicate policy."""
        found = Counter(r.label for r in self.dataset.records)
        kept = Counter(self.dataset.records[i].label for i in self.kept)
        return {c: {"found": found[c], "kept": kept[c]} for c in self.dataset.classes}

    def small_classes(self) -> list[str]:
        """Classes left with fewer than MIN_IMAGES_TO_LEARN images after the policy."""
        return [c for c, n in self.class_counts().items() if n["kept"] < MIN_IMAGES_TO_LEARN]

    def to_dict(self) -> dict[str, Any]:
        """Everything the audit found, every group listed, for audit.json."""
        ds = self.dataset

        def describe(group: DuplicateGroup) -> dict[str, Any]:
            return {
                "kind": group.kind,
                "labels": list(group.labels),
                "members": [
                    {"path": ds.records[i].relpath, "label": ds.records[i].label, "sha256": ds.sha256[i]}
                    for i in group.members
                ],
            }

        return {
            "data_root": str(ds.root),
            "data_fingerprint": ds.fingerprint(),
            "near_duplicate_max_distance": self.near_max_distance,
            "conflict_policy": self.policy.value,
            "images_readable": len(ds.records),
            "images_kept": len(self.kept),
            "classes": self.class_counts(),
            "small_classes": self.small_classes(),
            "skipped_files": [vars(s) for s in ds.skipped],
            "metadata": None
            if ds.metadata is None
            else {
                "spec": ds.metadata.spec.to_dict(),
                "fingerprint": ds.metadata.fingerprint,
                "rows_matching_no_image": ds.unmatched_rows,
                "lesion_or_patient_groups": len({g for r in ds.records for g in r.groups}),
            },
            "exact_duplicate_groups": [describe(g) for g in self.groups if g.kind == "exact"],
            "near_duplicate_groups": [describe(g) for g in self.groups if g.kind == "near"],
            "conflicting_groups": [describe(g) for g in self.conflicts],
            "excluded_by_policy": [vars(s) for s in self.excluded],
        }


def _components(n: int, edges: list[np.ndarray]) -> np.ndarray:
    """Connected-component id of each of `n` nodes, given (i, j) edge arrays."""
    pairs = np.concatenate([np.zeros((0, 2), np.int64), *edges]) if edges else np.zeros((0, 2), np.int64)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def metadata_group_edges(dataset: LoadedDataset) -> list[np.ndarray]:
    """Edges joining the images that share a lesion or patient group of the metadata CSV."""
    members: dict[str, list[int]] = {}
    for i, record in enumerate(dataset.records):
        for group in record.groups:
            members.setdefault(group, []).append(i)
    return [np.stack([m[:-1], m[1:]], axis=1) for m in map(np.array, members.values()) if len(m) > 1]


def find_groups(dataset: LoadedDataset, max_distance: int) -> tuple[np.ndarray, list[DuplicateGroup]]:
    """Group ids for splitting (connected components of 'identical or near-identical' and, with metadata, 'same
    lesion or patient'), and the multi-member duplicate groups."""
    n = len(dataset.records)
    pairs = [hamming_pairs(dataset.phash, dataset.phash, max_distance, same=True)]
    first_with_sha: dict[str, int] = {}
    for i, sha in enumerate(dataset.sha256):
        if sha in first_with_sha:
            pairs.append(np.array([[first_with_sha[sha], i]]))
        else:
            first_with_sha[sha] = i
    duplicate_ids = _components(n, pairs)
    groups = []
    for gid in np.unique(duplicate_ids):
        members = np.flatnonzero(duplicate_ids == gid)
        if len(members) < 2:
            continue
        kind = "exact" if len({dataset.sha256[i] for i in members}) == 1 else "near"
        labels = tuple(sorted({dataset.records[i].label for i in members}))
        groups.append(DuplicateGroup(tuple(int(i) for i in members), kind, labels))
    lesion_edges = metadata_group_edges(dataset)
    return (_components(n, pairs + lesion_edges) if lesion_edges else duplicate_ids), groups


def audit_dataset(
    dataset: LoadedDataset,
    *,
    policy: ConflictPolicy = ConflictPolicy.EXCLUDE,
    near_max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE,
) -> AuditReport:
    """Find duplicate groups and apply the conflict policy; byte-identical same-label copies are kept once."""
    policy = ConflictPolicy(policy)
    group_ids, groups = find_groups(dataset, near_max_distance)
    records = dataset.records
    dropped: dict[int, str] = {}
    for group in groups:
        if group.conflicting and policy is ConflictPolicy.EXCLUDE:
            for i in group.members:
                others = ", ".join(f"{records[j].relpath} ({records[j].label})" for j in group.members if j != i)
                dropped[i] = f"conflicting labels across {group.kind} duplicates: {others}"
            continue
        first_copy: dict[tuple[str, str], int] = {}
        for i in group.members:
            key = (dataset.sha256[i], records[i].label)
            if key in first_copy:
                dropped[i] = f"byte-identical copy of {records[first_copy[key]].relpath}"
            else:
                first_copy[key] = i
    kept = np.array([i for i in range(len(records)) if i not in dropped], dtype=np.int64)
    excluded = [SkippedFile(records[i].relpath, reason) for i, reason in sorted(dropped.items())]
    return AuditReport(dataset, group_ids, groups, policy, kept, excluded, near_max_distance)


def find_overlaps(
    test: LoadedDataset,
    train_sha256: list[str],
    train_phash: np.ndarray,
    max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE,
) -> list[Overlap]:
    """Test images that are byte-identical or near-identical to any training image."""
    by_sha: dict[str, list[int]] = {}
    for j, sha in enumerate(train_sha256):
        by_sha.setdefault(sha, []).append(j)
    near: dict[int, list[int]] = {}
    for i, j in hamming_pairs(test.phash, train_phash, max_distance):
        near.setdefault(int(i), []).append(int(j))
    overlaps = []
    for i, sha in enumerate(test.sha256):
        exact = by_sha.get(sha, [])
        matches = sorted(set(exact) | set(near.get(i, [])))
        if matches:
            overlaps.append(Overlap(i, tuple(matches), "exact" if exact else "near"))
    return overlaps


def overlaps_to_dict(
    overlaps: list[Overlap], test: LoadedDataset, train_paths: list[str], train_labels: list[str]
) -> list[dict[str, Any]]:
    """JSON-ready overlap list, with both labels so a disagreement is visible."""
    return [
        {
            "test_path": test.records[o.test_index].relpath,
            "test_label": test.records[o.test_index].label,
            "kind": o.kind,
            "train_matches": [{"path": train_paths[j], "label": train_labels[j]} for j in o.train_indices],
            "labels_differ": any(train_labels[j] != test.records[o.test_index].label for j in o.train_indices),
        }
        for o in overlaps
    ]


def format_audit(report: AuditReport) -> str:
    """A readable terminal summary of an audit."""
    ds = report.dataset
    exact = [g for g in report.groups if g.kind == "exact"]
    near = [g for g in report.groups if g.kind == "near"]
    lines = [
        f"Audit of {ds.root}: {len(ds.records)} readable images in {len(ds.classes)} classes, "
        f"{len(ds.skipped)} files skipped",
        f"  byte-identical duplicate groups: {len(exact)} ({sum(len(g.members) for g in exact)} files)",
        f"  near-duplicate groups (phash distance <= {report.near_max_distance}): {len(near)} "
        f"({sum(len(g.members) for g in near)} files)",
        f"  groups with conflicting labels: {len(report.conflicts)}"
        + (
            f" — {', '.join(f'{label_set}: {n}' for label_set, n in _conflicting_labels(report).items())}"
            if report.conflicts
            else ""
        ),
        f"  policy '{report.policy.value}': {len(report.excluded)} images excluded, {len(report.kept)} kept",
        f"  {'class':<28} {'found':>6} {'kept':>6}",
    ]
    if ds.metadata is not None:
        spec = ds.metadata.spec
        lines.insert(
            len(lines) - 1,
            f"  metadata {spec.csv.name}: "
            + (f"{len(set(ds.sources or []))} sources ({spec.source_column}); " if spec.source_column else "")
            + (
                f"{len({g for r in ds.records for g in r.groups})} {'/'.join(spec.group_columns)} groups, "
                "each kept on one side of every split; "
                if spec.group_columns
                else ""
            )
            + f"{len(ds.unmatched_rows)} rows match no image",
        )
    small = set(report.small_classes())
    for name, n in report.class_counts().items():
        flag = f"  <- fewer than {MIN_IMAGES_TO_LEARN}: too small to learn or to score" if name in small else ""
        lines.append(f"  {name:<28} {n['found']:>6} {n['kept']:>6}{flag}")
    for skipped in ds.skipped:
        lines.append(f"  skipped {skipped.relpath}: {skipped.reason}")
    return "\n".join(lines)


def _conflicting_labels(report: AuditReport) -> Counter:
    """How many conflicting groups hold each set of labels (two or more), by 'a / b / ...'."""
    return Counter(" / ".join(g.labels) for g in report.conflicts)


@dataclass
class ScoringSet:
    """A test folder made fit to score: duplicates and conflicts dropped, training overlap removed."""

    clean: LoadedDataset  # what is scored
    with_overlap: LoadedDataset  # the same, training-overlap images kept (an inflated score)
    overlaps: list[dict[str, Any]]  # every removed image with its training matches and both labels
    excluded: list[SkippedFile]  # unreadable, duplicate or conflicting test files

    def summary(self) -> str:
        """One line for the terminal."""
        return (
            f"{len(self.overlaps)} of {len(self.with_overlap.records)} test images are also in the training "
            f"folder and are removed before scoring ({len(self.excluded)} unreadable, duplicate or conflicting "
            "test files were dropped first)"
        )


def prepare_test_set(
    test: LoadedDataset, train_index: list[dict[str, str]], policy: ConflictPolicy, near_max_distance: int
) -> ScoringSet:
    """Apply the duplicate policy to a test folder and remove images also in the training folder.

    `train_index` is a run's data_index.csv rows (path, label, sha256, phash): every image the
    training folder held, so overlap is found even for images the run excluded.
    """
    report = audit_dataset(test, policy=policy, near_max_distance=near_max_distance)
    kept = test.subset(report.kept)
    overlaps = find_overlaps(
        kept,
        [row["sha256"] for row in train_index],
        np.array([int(row["phash"], 16) for row in train_index], dtype=np.uint64),
        near_max_distance,
    )
    shared = {o.test_index for o in overlaps}
    clean = kept.subset([i for i in range(len(kept.records)) if i not in shared])
    listed = overlaps_to_dict(
        overlaps, kept, [row["path"] for row in train_index], [row["label"] for row in train_index]
    )
    return ScoringSet(clean, kept, listed, [*test.skipped, *report.excluded])
