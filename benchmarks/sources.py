"""Where images come from, on the real data: the confounding audit, within-source 5-fold CV and leave-source-out.

    .venv/bin/python -m benchmarks.sources               # trains what is missing (resumable), then records
    .venv/bin/python -m benchmarks.sources --merge-only  # records the folds finished so far

Uses `sources.csv` beside the data folder (the ISIC id block of each image, a proxy for where it was taken).
Runs `edgelesion cv --metadata ... --source-column source` and `edgelesion cv --leave-source-out` for the model's
recipe (as the CLI runs it) into runs/benchmarks/ (git-ignored), and records benchmarks/results/sources_MODEL_KIND.json
and .md (KIND: the CPU kind), with the class-by-source chart in sources_MODEL_KIND/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, RUNS, cpu_kind_record_name, record, require_data
from edgelesion.data.audit_report import run_audit
from edgelesion.data.metadata import MetadataSpec
from edgelesion.fileio import read_json, write_text
from edgelesion.metrics import format_estimate
from edgelesion.train.config import TrainConfig
from edgelesion.train.cross_validation import CvDir, cross_validate, merge_cv
from edgelesion.train.leave_source_out import cross_validate_sources, merge_sources


def fold_within_source(cv: CvDir, folds: list[int]) -> dict[int, dict[str, Any]]:
    """Each fold's validation split read within each source (from its metrics.json)."""
    return {k: read_json(cv.fold(k).evaluation / "validation" / "metrics.json")["within_source"] for k in folds}


def fold_rows(within: dict[int, dict[str, Any]]) -> list[str]:
    """Markdown rows: each fold's melanoma-vs-look-alike AUC pooled and within each scored source."""
    lines = [
        "| fold | look-alike | pooled AUC | source | AUC within the source | alert sensitivity within | "
        "alert specificity within |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, figures in within.items():
        for source, row in figures["sources"].items():
            for name, pair in row["lookalikes"].items():
                lines.append(
                    f"| {k} | {name} | {format_estimate(figures['pooled']['lookalikes'][name]['auc'])} | "
                    f"{source} | {format_estimate(pair['auc'])} | "
                    f"{format_estimate(row['alert_sensitivity'] or {})} | "
                    f"{format_estimate(pair['alert_specificity'] or {})} |"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficientnet-lite0", help="whose recipe (default efficientnet-lite0)")
    parser.add_argument(
        "--kfold-dir", type=Path, help="the k-fold cv folder (default runs/benchmarks/cv-MODEL-sources)"
    )
    parser.add_argument("--lso-dir", type=Path, help="the leave-source-out folder (default runs/benchmarks/lso-MODEL)")
    parser.add_argument("--merge-only", action="store_true", help="train nothing: record the folds finished so far")
    args = parser.parse_args()
    data = require_data()
    csv = data.parent / "sources.csv"
    metadata = MetadataSpec(csv, source_column="source")
    config = TrainConfig.for_model(args.model)
    kfold = CvDir(args.kfold_dir or RUNS / f"cv-{args.model}-sources")
    lso = CvDir(args.lso_dir or RUNS / f"lso-{args.model}")
    name = cpu_kind_record_name("sources_" + args.model.replace("-", "_"))

    audits = {
        label: run_audit(data, RUNS / f"audit-{label}", metadata=spec, force=True, progress=False)["confounding"]
        for label, spec in (("with-sources", metadata), ("pixels-only", None))
    }
    if args.merge_only:
        kfold_result, lso_result = merge_cv(kfold.root), merge_sources(lso.root)
    else:
        kfold_result = cross_validate(data, kfold.root, config, metadata=metadata)
        lso_result = cross_validate_sources(data, lso.root, config, metadata)
    within = fold_within_source(kfold, kfold_result["finished_folds"])
    record(
        name,
        {
            "config": config.to_dict(),
            "metadata": metadata.to_dict(),
            "audit": audits,
            "cv": kfold_result,
            "cv_fold_within_source": within,
            "leave_source_out": lso_result,
        },
    )
    findings = [f["sentence"] for f in audits["with-sources"]["source_confounds"]]
    probes = [f["sentence"] for f in audits["pixels-only"]["border_probes"]]
    lines = [
        f"# Where images come from: {args.model}",
        "",
        f"Command: `python -m benchmarks.sources {' '.join(sys.argv[1:])}`. Data: the shared ISIC set with "
        "`sources.csv` (ISIC id blocks).",
        "",
        "## Audit",
        "",
        "With `sources.csv`:",
        "",
        *[f"- {s}" for s in findings],
        "",
        "From the pixels alone (no metadata):",
        "",
        *[f"- {s}" for s in probes],
        "",
        f"## 5-fold cross-validation ({len(kfold_result['finished_folds'])} of {kfold_result['folds']} folds), pooled",
        "",
        kfold.table.read_text().strip(),
        "",
        "## Each fold's validation split within each source",
        "",
        *fold_rows(within),
        "",
        "## Leave-source-out",
        "",
        lso.table.read_text(),
    ]
    write_text(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    (RESULTS / name).mkdir(exist_ok=True)
    shutil.copyfile(RUNS / "audit-with-sources" / "class_by_source.png", RESULTS / name / "class_by_source.png")
    for chart in (kfold.chart, kfold.roc):
        shutil.copyfile(chart, RESULTS / name / chart.name)


if __name__ == "__main__":
    main()
