"""The `predict` job: classify files and folders with a bundle, and write a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from edgelesion.errors import EdgelesionError
from edgelesion.fileio import write_text
from edgelesion.images import READABLE
from edgelesion.infer.inference import Classifier, FailedImage, Prediction

FORMATS = ("table", "csv", "json")


def scan_folder(folder: Path) -> tuple[list[Path], list[FailedImage]]:
    """Every file under `folder` (recursively, sorted), whatever its name, and the parts that cannot be scanned.

    Each file becomes an input, so one that is not an image, a broken link or a link loop gets its own error
    row when read. Links to folders are not followed (that is how loops are avoided): each is reported.
    """
    files: list[Path] = []
    problems: list[FailedImage] = []

    def unlistable(error: OSError) -> None:
        problems.append(FailedImage(str(error.filename), f"cannot list this folder: {error.strerror or error}"))

    for root, folders, names in os.walk(folder, onerror=unlistable):
        folders.sort()
        problems += [
            FailedImage(
                str(Path(root) / name),
                "a link to a folder, not followed inside a scanned folder: pass it as a PATH of its own",
            )
            for name in folders
            if (Path(root) / name).is_symlink()
        ]
        files += sorted(Path(root) / name for name in names)
    return files, problems


def collect_inputs(paths: list[str | Path]) -> tuple[list[Path], list[FailedImage]]:
    """Files as given and every file under each folder, with what could not be scanned (see `scan_folder`)."""
    inputs: list[Path] = []
    problems: list[FailedImage] = []
    for path in map(Path, paths):
        if path.is_dir():
            files, unscanned = scan_folder(path)
            inputs += files
            problems += unscanned
        else:
            inputs.append(path)  # a missing or unreadable file is reported in the output, not here
    if not inputs and not problems:
        raise EdgelesionError(f"no files found in {', '.join(map(str, paths))}: pass {READABLE} files or folders")
    return inputs, problems


def result_rows(results: list[Prediction | FailedImage], classes: list[str]) -> list[dict[str, Any]]:
    """One flat row per input: path, label, melanoma alert, every class probability, or the error."""
    rows: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, FailedImage):
            rows.append(
                {
                    "path": result.source,
                    "label": None,
                    "melanoma_alert": None,
                    **{c: None for c in classes},
                    "warning": None,
                    "error": result.reason,
                }
            )
        else:
            rows.append(
                {
                    "path": result.source,
                    "label": result.label,
                    "melanoma_alert": result.melanoma_alert,
                    **result.probabilities,
                    "warning": result.warning,
                    "error": None,
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A terminal table: label, its probability, the melanoma probability and alert."""
    lines = [f"{'path':<48} {'label':<28} {'p':>6} {'p(melanoma)':>11} {'alert':>5}"]
    for row in rows:
        if row["error"]:
            lines.append(f"{row['path']:<48} error: {row['error']}")
            continue
        melanoma = row.get("melanoma")
        alert = {True: "YES", False: "no", None: "n/a"}[row["melanoma_alert"]]
        lines.append(
            f"{row['path']:<48} {row['label']:<28} {row[row['label']]:>6.3f} "
            f"{'n/a' if melanoma is None else f'{melanoma:.3f}':>11} {alert:>5}"
        )
        if row["warning"]:
            lines.append(f"{'':<48} warning: {row['warning']}")
    return "\n".join(lines)


def run_predict(
    bundle_dir: str | Path,
    paths: list[str | Path],
    *,
    artifact: str = "int8.tflite",
    output_format: str = "table",
    out: str | Path | None = None,
    force: bool = False,
    batch_size: int = 32,
    threads: int | None = None,
    full_decode: bool = False,
) -> list[dict[str, Any]]:
    """Classify `paths` with the bundle and print or write one row per input file; returns the rows."""
    if output_format not in FORMATS:
        raise EdgelesionError(f"--format {output_format!r}: choose one of {', '.join(FORMATS)}")
    if out is not None and Path(out).exists() and not force:
        raise EdgelesionError(f"{out} already exists: choose another --out or pass --force")
    classifier = Classifier.load(bundle_dir, artifact, threads=threads, jpeg_draft=False if full_decode else None)
    inputs, unscanned = collect_inputs(paths)
    results = [*classifier.predict_many(inputs, batch_size=batch_size, progress=len(inputs) > 1), *unscanned]
    rows = result_rows(results, classifier.classes)
    if output_format == "table":
        text = format_table(rows)
    elif output_format == "json":
        text = json.dumps(
            {
                "bundle": str(bundle_dir),
                "artifact": artifact,
                "classes": classifier.classes,
                "melanoma_threshold": classifier.melanoma_threshold,
                "results": rows,
            },
            indent=2,
        )
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue().rstrip("\n")
    if out is None:
        print(text)
    else:
        write_text(out, text + "\n")
        print(f"wrote {len(rows)} rows to {out}")
    failed = sum(row["error"] is not None for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} inputs could not be classified (see their 'error')")
    warned = sum(row["warning"] is not None for row in rows)
    if warned:
        print(f"{warned} of {len(rows)} results carry a warning (see their 'warning')")
    return rows
