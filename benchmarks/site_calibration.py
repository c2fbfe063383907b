"""A new site's own alert threshold on real data: `edgelesion calibrate` on a small sample of a source the model
never saw, judged on that source's other images.

    edgelesion export runs/lso-lite0/source-isic-0000100-0000999 --out export/lso-lite0 --int8 ptq
    .venv/bin/python -m benchmarks.site_calibration export/lso-lite0 --draws 10

The bundle's model was trained without ISIC block 0000100-0000999 (`edgelesion cv --leave-source-out`). Each draw
takes 30 melanomas and 60 nevi of that block at random as the site sample (the minimum calibrate accepts is 30
melanomas), calibrates the bundle on it, and scores every artifact of the new bundle through `Classifier` (as
`predict` answers) on the block's remaining melanomas and nevi: is the alert's sensitivity there inside the interval
calibrate stated? That check takes the held-back point estimate (itself binomial on about 94 melanomas), and the
draws share most held-back images, so it is a rough reading of the interval's coverage, not an exact one. Records benchmarks/results/site_calibration_NAME.{json,md}. The sample folders are links in a
temporary folder; nothing is written beside the data.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import markdown_table, record, require_data, write_table
from edgelesion.export.site_calibration import calibrate_bundle
from edgelesion.fileio import read_csv, read_json
from edgelesion.infer.inference import Classifier, Prediction
from edgelesion.metrics import format_estimate, wilson_interval

SOURCE = "isic-0000100-0000999"
SAMPLE = {"melanoma": 30, "nevus": 60}


def block_files(bundle: Path, data: Path) -> dict[str, list[Path]]:
    """The block's melanomas and nevi as the bundle's leave-source-out run held them out (after its audit: no
    duplicate or conflicting copies), by class."""
    run = (bundle / read_json(bundle / "bundle.json")["source_run"]["relative_path"]).resolve()
    rows = read_csv(run / "evaluation" / "held_out_source" / "predictions.csv")
    return {label: sorted(data / row["path"] for row in rows if row["label"] == label) for label in SAMPLE}


def linked_folder(root: Path, files: dict[str, list[Path]]) -> Path:
    """A class-folder dataset of links to `files` under `root`."""
    for label, paths in files.items():
        (root / label).mkdir(parents=True)
        for path in paths:
            (root / label / path.name).symlink_to(path.resolve())
    return root


def alert_on(bundle: Path, artifact: str, files: dict[str, list[Path]]) -> dict[str, Any]:
    """The artifact's alert on the held-back images, as `predict` answers: sensitivity and nevus specificity."""
    classifier = Classifier.load(bundle, artifact)
    flagged = {}
    for label, paths in files.items():
        answers = list(classifier.predict_many(paths))
        flagged[label] = sum(isinstance(a, Prediction) and bool(a.melanoma_alert) for a in answers)
    return {
        "sensitivity": wilson_interval(flagged["melanoma"], len(files["melanoma"])),
        "nevus_specificity": wilson_interval(len(files["nevus"]) - flagged["nevus"], len(files["nevus"])),
    }


def one_draw(bundle: Path, files: dict[str, list[Path]], seed: int, work: Path) -> dict[str, Any]:
    """Calibrate on a random site sample and score the new bundle on the rest."""
    rng = np.random.default_rng(seed)
    picked = {label: set(rng.choice(len(paths), SAMPLE[label], replace=False)) for label, paths in files.items()}
    sample = {label: [p for i, p in enumerate(paths) if i in picked[label]] for label, paths in files.items()}
    rest = {label: [p for i, p in enumerate(paths) if i not in picked[label]] for label, paths in files.items()}
    calibrated = calibrate_bundle(bundle, linked_folder(work / "sample", sample), work / "bundle", progress=False)
    artifacts = {}
    for name, entry in calibrated["artifacts"].items():
        alert = entry["melanoma_alert"]
        held_back = alert_on(work / "bundle", name, rest)
        stated = alert["expected_sensitivity"]["ci95"]
        artifacts[name] = {
            "threshold": alert["threshold"],
            "previous_threshold": alert["previous"]["threshold"],
            "expected": alert["expected_sensitivity"],
            "sample": alert["site"],
            "held_back": held_back,
            "held_back_previous_threshold": alert_on(bundle, name, rest),
            "inside_stated_interval": stated[0] <= held_back["sensitivity"]["value"] <= stated[1],
        }
    return {"seed": seed, "held_back_images": {k: len(v) for k, v in rest.items()}, "artifacts": artifacts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="a bundle whose model never saw block 0000100-0000999")
    parser.add_argument("--draws", type=int, default=5, help="random site samples (default 5)")
    args = parser.parse_args()
    files = block_files(args.bundle, require_data())
    draws = []
    for seed in range(args.draws):
        with tempfile.TemporaryDirectory() as work:
            draws.append(one_draw(args.bundle, files, seed, Path(work)))
            print(f"draw {seed + 1}/{args.draws} done", file=sys.stderr)
    name = f"site_calibration_{args.bundle.name.replace('-', '_')}"
    record(name, {"bundle": args.bundle.name, "source": SOURCE, "sample": SAMPLE, "draws": draws})
    rows = [
        [
            str(draw["seed"]),
            artifact,
            f"{figures['previous_threshold']:.3f} → {figures['threshold']:.3f}",
            format_estimate(figures["expected"]),
            format_estimate(figures["sample"]["sensitivity"]),
            format_estimate(figures["held_back"]["sensitivity"]),
            "yes" if figures["inside_stated_interval"] else "**no**",
            format_estimate(figures["held_back"]["nevus_specificity"]),
            f"{format_estimate(figures['held_back_previous_threshold']['sensitivity'])} / "
            f"{format_estimate(figures['held_back_previous_threshold']['nevus_specificity'])}",
        ]
        for draw in draws
        for artifact, figures in draw["artifacts"].items()
    ]
    header = [
        "draw",
        "artifact",
        "threshold: validation → site",
        "expected sensitivity on new melanomas (stated)",
        "alert sensitivity on the sample",
        "on the held-back melanomas",
        "inside the stated interval",
        "nevus specificity, held back",
        "validation threshold held back: sensitivity / nevus specificity",
    ]
    summary = [
        f"- {artifact}: held-back sensitivity {np.mean(held):.3f} on average (the stated expectation "
        f"{draws[0]['artifacts'][artifact]['expected']['value']:.3f}), inside the stated 95% interval in "
        f"{sum(d['artifacts'][artifact]['inside_stated_interval'] for d in draws)} of {len(draws)} draws"
        for artifact in draws[0]["artifacts"]
        for held in [[d["artifacts"][artifact]["held_back"]["sensitivity"]["value"] for d in draws]]
    ]
    lines = [
        f"# `edgelesion calibrate` on {SOURCE}, a source the model never saw",
        "",
        f"Command: `python -m benchmarks.site_calibration {' '.join(sys.argv[1:])}`. Each draw: a sample of "
        f"{SAMPLE['melanoma']} melanomas and {SAMPLE['nevus']} nevi of the block, the rest held back "
        f"({draws[0]['held_back_images']['melanoma']} melanomas, {draws[0]['held_back_images']['nevus']} nevi). "
        "'Inside' compares the held-back point estimate (itself uncertain) with the interval stated for the "
        "expected sensitivity, and the draws share most held-back images: a rough reading of coverage.",
        "",
        *summary,
        "",
        *markdown_table(header, rows, "llrrrrlrr"),
    ]
    write_table(name, lines)


if __name__ == "__main__":
    main()
