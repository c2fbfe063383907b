"""int8 against the float model, per bundle: both candidates (QAT and post-training) of int8.tflite and of
int8.onnx, which one `--int8 auto` shipped, as the export measured them on its validation split.

    .venv/bin/python -m benchmarks.int8_parity export/model1-seed-simple export/model2-seed-dropout export/model3 \
        export/lite0-fold0 export/lite0-20ep-fold0

Reads each bundle's bundle.json (made by a plain `edgelesion export`; one kept with --keep-failed shows
its failing files as failing rows) and records
benchmarks/results/int8_parity.{md,json}. The export's figures are over the validation images in their
8 orientations (predictions = 8 x images; each image counts once in the balanced accuracy and its
interval); "images as they are" is the agreement on the first orientation alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import bundle_folders, markdown_table, record, signed_interval, write_table
from edgelesion.export.exporting import CANDIDATE_FIGURES
from edgelesion.export.options import INT8_ARTIFACTS
from edgelesion.fileio import read_json


def int8_rows(bundle: Path) -> dict[str, dict[str, Any]]:
    """Each int8 file the export built for `bundle`, with its figures against the float model (a QAT file's
    name says what its fine-tune fitted: the float model or the labels)."""
    manifest = read_json(bundle / "bundle.json")
    artifacts, qat = manifest["artifacts"], manifest.get("qat") or {}
    if any("as_is" not in entry["parity"]["vs_float"] for entry in artifacts.values()):
        raise SystemExit(f"{bundle} was exported before parity over orientations: export it again")
    rows = {}
    for name in INT8_ARTIFACTS:
        entry = artifacts.get(name)
        if entry is None:
            continue
        # a bundle without int8_candidates made its int8 file one way only (onnxruntime's post-training file)
        candidates = entry.get(
            "int8_candidates",
            {
                "ptq": {
                    "passed": entry["passed"],
                    "problems": [],
                    "vs_float": {k: entry["parity"]["vs_float"][k] for k in CANDIDATE_FIGURES},
                }
            },
        )
        for method, candidate in candidates.items():
            shipped = "shipped" if method == entry.get("int8_method", "ptq") else "not shipped"
            fitted = (
                f", fitting the {'float model' if qat.get('target') == 'float-model' else 'labels'}"
                if method == "qat"
                else ""
            )
            rows[f"{name} by {method.upper()}{fitted} ({shipped})"] = {
                "passed": candidate["passed"],
                "problems": candidate["problems"],
                **candidate["vs_float"],
            }
    return rows


def _row(bundle: str, name: str, figures: dict[str, Any]) -> list[str]:
    return [
        bundle,
        name,
        signed_interval(figures["delta_balanced_accuracy"], figures["delta_balanced_accuracy_ci95"]),
        f"{figures['sure_top1_agreement']:.3f} of {figures['sure_images']}",
        f"{figures['top1_agreement']:.3f}",
        f"{figures['as_is']['top1_agreement']:.3f}",
        f"{figures['top1_ties']:.3f}",
        "yes" if figures["passed"] else "no",
    ]


def main() -> None:
    bundles = {bundle.name: int8_rows(bundle) for bundle in bundle_folders(__doc__)}
    record("int8_parity", {"bundles": bundles})
    lines = markdown_table(
        [
            "bundle",
            "int8 file",
            "Δ balanced accuracy vs float [paired 95% CI]",
            "top-1 agreement on sure predictions",
            "top-1 agreement, all",
            "all, images as they are",
            "top-1 ties",
            "passes",
        ],
        [_row(bundle, name, figures) for bundle, rows in bundles.items() for name, figures in rows.items()],
        "llrrrrrl",
    )
    write_table("int8_parity", lines)


if __name__ == "__main__":
    main()
