"""`edgelesion calibrate`: a bundle's melanoma alert thresholds chosen again on a labelled sample of a new site.

A detector tuned on one archive meets other dermatoscopes, light and patients at a clinic, so the clinic chooses its
own operating point on its own images. The new bundle keeps every artifact byte for byte (the files carry no
threshold; bundle.json does), so their parity figures still hold; bundle.json and the model card carry the site's
thresholds and how they were chosen. Needs no TensorFlow.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgelesion.data.dataset import LoadedDataset, load_dataset
from edgelesion.data.metadata import MetadataSpec
from edgelesion.errors import EdgelesionError
from edgelesion.export.bundle import check_output_dir, site_calibration_lines, write_bundle_files
from edgelesion.fileio import ensure_outside, replace_dir, staging_dir
from edgelesion.infer.bundle_reader import SELF_HASH_FIELD, bundle_preprocessing, read_bundle, sealed, verified_artifact
from edgelesion.infer.inference import Classifier
from edgelesion.infer.runtimes import predict_in_batches
from edgelesion.metrics import LOOKALIKES
from edgelesion.provenance import provenance
from edgelesion.source_figures import lookalike_indices
from edgelesion.thresholds import alert_figures, melanomas_needed, order_statistic_threshold

# A site sample must hold at least this many melanomas: with fewer, a sensitivity of 0.90 measured on it has a 95%
# Wilson lower bound under 0.74 (20 melanomas: 0.70; 10: 0.60), more than 0.16 below the target itself, and the
# sample says too little about the melanomas the threshold will miss.
MIN_MELANOMAS = 30
# ... and this many other images: with fewer, a specificity of 0.5 (where a 0.90-sensitivity alert often leaves it)
# has a 95% Wilson interval wider than [0.38, 0.62], too wide to say what the alert costs in needless referrals.
MIN_OTHER_IMAGES = 60
# The phone path decodes large JPEGs reduced but decides again from the full decode every answer near the alert
# threshold (Classifier.needs_full_decode), so its alerts are the full decode's: choosing on the full decode keeps the
# choice independent of the threshold in force while decoding.
DECODING = "every JPEG decoded in full, as 'predict --full-decode' does"


def sample_size_problem(n_positive: int, n_other: int, positive_class: str, target: float) -> str | None:
    """Why a site sample is too small to choose a threshold for `target` sensitivity on (None when it is large
    enough): MIN_MELANOMAS and MIN_OTHER_IMAGES, and at a target near 1 the melanomas it takes to reach it at all."""
    needed = max(MIN_MELANOMAS, melanomas_needed(target))
    if n_positive >= needed and n_other >= MIN_OTHER_IMAGES:
        return None
    return (
        f"the sample holds {n_positive} {positive_class} images and {n_other} others: calibrate needs at least "
        f"{needed} {positive_class} images for a target sensitivity of {target:g}, and {MIN_OTHER_IMAGES} others "
        f"(with fewer than {MIN_MELANOMAS} {positive_class} images, a sensitivity of 0.90 on the sample has a 95% "
        f"interval reaching below 0.74; a threshold among n scores can be expected to reach n / (n + 1) at most). "
        "Add labelled images of this site, or keep the bundle's thresholds chosen on validation"
    )


def site_probabilities(bundle_dir: Path, bundle: dict[str, Any], files: list[Path]) -> dict[str, np.ndarray]:
    """Each artifact's probabilities for `files`, through the inference API (each file checked against its
    sha256), every JPEG decoded in full (DECODING)."""
    classifiers = {name: Classifier.load(bundle_dir, name, jpeg_draft=False) for name in bundle["artifacts"]}
    decoder = next(iter(classifiers.values()))  # every artifact of a bundle shares one input spec
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        pixels = np.stack(list(pool.map(decoder.pixels, files)))
    return {name: predict_in_batches(classifier.runner, pixels) for name, classifier in classifiers.items()}


def sample_record(
    data_dir: Path, sample: LoadedDataset, positive: int, metadata: MetadataSpec | None
) -> dict[str, Any]:
    """What bundle.json says of a site sample: its folder's name, its dataset fingerprint, its counts, how it was
    read."""
    labels = sample.labels
    n_positive = int((labels == positive).sum())
    return {
        "name": data_dir.resolve().name,
        "fingerprint": sample.fingerprint(),
        "images": len(labels),
        "melanomas": n_positive,
        "other_images": len(labels) - n_positive,
        "per_class": {name: int((labels == c).sum()) for c, name in enumerate(sample.classes) if (labels == c).any()},
        "skipped_files": len(sample.skipped),
        "metadata_csv": None if metadata is None else metadata.csv.name,
        "decoding": DECODING,
    }


def site_alert(
    previous: dict[str, Any],
    probabilities: np.ndarray,
    labels: np.ndarray,
    positive: int,
    lookalikes: dict[str, int],
    rule_text: str,
) -> dict[str, Any]:
    """An artifact's new `melanoma_alert`: the highest threshold at which new melanomas of the site are expected to
    reach the target sensitivity recorded in `previous` (the entry it replaces, kept inside it), chosen among the
    sample's melanoma scores (`order_statistic_threshold`), with its figures on the sample and those of the previous
    threshold there."""
    target = previous["target_sensitivity"]
    chosen = order_statistic_threshold(probabilities, labels, positive, target)
    threshold = chosen["threshold"]
    return {
        "threshold": threshold,
        "target_sensitivity": target,
        "expected_sensitivity": chosen["expected_sensitivity"],
        "rule": "site",
        "rule_text": rule_text,
        "site": alert_figures(probabilities, labels, positive, threshold, lookalikes),
        "previous_on_site": alert_figures(probabilities, labels, positive, previous["threshold"], lookalikes),
        "previous": previous,
    }


def calibrate_bundle(
    bundle_dir: str | Path,
    data_dir: str | Path,
    out: str | Path,
    *,
    metadata: MetadataSpec | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write to `out` a copy of the bundle whose melanoma alert thresholds are chosen on the labelled site sample
    `data_dir` (class folders, or described by `metadata`); returns the new bundle.json.

    Each artifact's threshold is the highest at which the site's new melanomas are expected to reach the bundle's
    target sensitivity, with that sensitivity's 95% interval, and the sample's own figures with Wilson intervals. A sample with fewer than MIN_MELANOMAS melanomas or MIN_OTHER_IMAGES other images is refused.
    The original bundle is only read; the new one is built beside `out` and renamed into place when whole.
    """
    bundle_dir, data_dir, out = Path(bundle_dir), Path(data_dir), Path(out)
    bundle = read_bundle(bundle_dir)
    if bundle_dir.resolve() in (out.resolve(), *out.resolve().parents):
        raise EdgelesionError(
            f"--out {out} is the bundle being calibrated, or inside it: calibrate leaves it as it is; choose "
            "another --out"
        )
    check_output_dir(out, force)
    ensure_outside(out, data_dir)
    config, classes = bundle["source_run"]["config"], bundle["classes"]
    positive_class = config["positive_class"]
    if positive_class not in classes:
        raise EdgelesionError(f"{bundle_dir} has no {positive_class!r} class, so it raises no alert to calibrate")
    positive = classes.index(positive_class)
    sample = load_dataset(
        data_dir, bundle_preprocessing(bundle), classes=classes, min_classes=1, progress=progress, metadata=metadata
    )
    record = {
        "sample": sample_record(data_dir, sample, positive, metadata),
        "minimum": {"melanomas": MIN_MELANOMAS, "other_images": MIN_OTHER_IMAGES},
        "calibrated_from": {"name": bundle_dir.resolve().name, SELF_HASH_FIELD: bundle[SELF_HASH_FIELD]},
        "provenance": provenance(portable=True),  # its `created` is the date of the calibration
    }
    n_positive, n_other = record["sample"]["melanomas"], record["sample"]["other_images"]
    target = max(entry["melanoma_alert"]["target_sensitivity"] for entry in bundle["artifacts"].values())
    if problem := sample_size_problem(n_positive, n_other, positive_class, target):
        raise EdgelesionError(f"{data_dir}: {problem}")
    if sample.skipped:
        print(
            f"note: {len(sample.skipped)} files under {data_dir} were skipped (first: {sample.skipped[0].relpath}: "
            f"{sample.skipped[0].reason})"
        )
    rule_text = (
        f"chosen on a labelled sample of the site {record['sample']['name']!r} ({n_positive} {positive_class} "
        f"images, {n_other} others; fingerprint {record['sample']['fingerprint'][:16]}) as the highest "
        "at which new melanomas there are expected to reach the target sensitivity (order statistics of the sample's "
        "melanoma scores); the threshold it replaces is kept under `previous`"
    )
    probabilities = site_probabilities(bundle_dir, bundle, [sample.root / r.relpath for r in sample.records])
    labels = sample.labels
    lookalikes = lookalike_indices(classes, config.get("lookalikes", LOOKALIKES))
    artifacts = {
        name: {
            **entry,
            "melanoma_alert": site_alert(
                entry["melanoma_alert"], probabilities[name], labels, positive, lookalikes, rule_text
            ),
        }
        for name, entry in bundle["artifacts"].items()
    }
    # the run lies where it did: its path relative to the new bundle folder, so benchmark finds it
    run = os.path.relpath((bundle_dir / bundle["source_run"]["relative_path"]).resolve(), out.resolve())
    manifest = {key: value for key, value in bundle.items() if key != SELF_HASH_FIELD}
    manifest = sealed(
        {
            **manifest,
            "artifacts": artifacts,
            "source_run": {**bundle["source_run"], "relative_path": run},
            "site_calibration": record,
        }
    )
    write_calibrated_bundle(bundle_dir, manifest, out)
    print("\n".join(site_calibration_lines(manifest)))
    print(f"wrote bundle {out}")
    return manifest


def write_calibrated_bundle(bundle_dir: Path, manifest: dict[str, Any], out: Path) -> None:
    """The artifacts of `bundle_dir` copied unchanged beside `manifest`'s bundle files, checked, then moved to `out`."""
    staging = staging_dir(out)
    try:
        for name in manifest["artifacts"]:
            shutil.copyfile(bundle_dir / name, staging / name)
        write_bundle_files(staging, manifest, manifest["validation_metrics_float"])
        written = read_bundle(staging)
        for name in written["artifacts"]:
            verified_artifact(staging, written, name)
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
