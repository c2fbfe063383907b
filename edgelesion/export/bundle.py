"""The bundle a phone app or a script loads: artifacts, labels.txt, bundle.json, MODEL_CARD.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgelesion import __version__
from edgelesion.errors import EdgelesionError
from edgelesion.export.gpu_compatibility import gpu_delegate_verdict
from edgelesion.export.parity import ORIENTATIONS
from edgelesion.fileio import write_json, write_text
from edgelesion.infer.bundle_reader import bundle_preprocessing
from edgelesion.metrics import format_estimate, format_mean_sd
from edgelesion.preprocessing import Preprocessing
from edgelesion.source_figures import format_within_source

BUNDLE_SCHEMA_VERSION = 4  # 4: input.resize.centre_crop


def input_spec(artifact: str, preprocessing: Preprocessing) -> dict[str, Any]:
    """What an artifact's input tensor takes. Every artifact takes raw RGB pixels 0-255, resized as in training."""
    size = preprocessing.image_size
    quantized_input = artifact == "int8.tflite"
    return {
        "name": "pixels",
        "shape": [-1, size, size, 3],
        "layout": "NHWC",
        "batch_dimension": 0,
        "dynamic_batch": True,
        "dtype": "uint8" if quantized_input else "float32",
        "color_order": preprocessing.color_order,
        "value_range": [0, 255],
        "quantization": (
            dict(zip(("scale", "zero_point"), preprocessing.uint8_quantization)) if quantized_input else None
        ),
        "resize": {
            "size": [size, size],
            "method": preprocessing.resize_method,
            "library": "Pillow",
            "keep_aspect_ratio": False,
            "centre_crop": preprocessing.centre_crop,
            "jpeg_draft": preprocessing.jpeg_draft,
            "jpeg_draft_margin": preprocessing.jpeg_draft_margin,
            "jpeg_decode": (
                f"a JPEG of at least {2 * preprocessing.draft_side} px per side is decoded reduced "
                f"(Pillow draft) to no less than {preprocessing.draft_side} px, then resized; "
                "the bundle's figures were measured this way"
            )
            if preprocessing.jpeg_draft
            else "every JPEG decoded in full, then resized",
        },
        "scaling": f"inside the model (pixels * {preprocessing.scale:.6g} + {preprocessing.offset:.6g})",
    }


@dataclass(frozen=True)
class ModelDescription:
    """What an artifact file carries about itself, so it is usable and checkable away from its bundle."""

    artifact: str
    classes: list[str]
    preprocessing: Preprocessing
    source_model_sha256: str  # of the run's best.keras, the model the file was converted from

    def onnx_properties(self) -> dict[str, str]:
        """ONNX metadata_props: labels in output order, the input spec, the edgelesion version, the source."""
        return {
            "edgelesion_labels": json.dumps(self.classes),
            "edgelesion_input": json.dumps(input_spec(self.artifact, self.preprocessing)),
            "edgelesion_version": __version__,
            "edgelesion_source_model_sha256": self.source_model_sha256,
        }


def output_spec(classes: list[str]) -> dict[str, Any]:
    """The output tensor: one probability per class, in labels.txt order."""
    return {
        "name": "probabilities",
        "shape": [-1, len(classes)],
        "dtype": "float32",
        "kind": "softmax probabilities",
        "classes": classes,
    }


def _input_lines(bundle: dict[str, Any]) -> list[str]:
    """What a user must know of the input beyond its size: the centre crop, where the model takes one."""
    preprocessing = bundle_preprocessing(bundle)
    if preprocessing.centre_crop == 1:
        return []
    return [
        f"The model sees {preprocessing.crop_description} (`input.resize.centre_crop`): what lies outside is never "
        "looked at, so the lesion must be centred."
    ]


def model_card(bundle: dict[str, Any], validation: dict[str, Any]) -> str:
    """MODEL_CARD.md: intended use, data, honest metrics with intervals, limitations; not a medical device."""
    source = bundle["source_run"]
    bal = validation["balanced_accuracy"]
    lines = [
        f"# Model card: {source['config']['model']} ({source['name']})",
        "",
        "**Not a medical device.** This model is a research artifact. It must not be used to diagnose,",
        "to rule out, or to delay the diagnosis of any skin condition.",
        "",
        "## Intended use",
        "Research and engineering of on-device skin-lesion classification from dermoscopic images,",
        "for example to measure what quantization costs in accuracy and what it saves in latency.",
        "",
        "## Data",
        f"Trained on `{source['data_name']}` (fingerprint `{source['data_fingerprint'][:16]}`), classes: "
        + ", ".join(bundle["classes"])
        + ".",
        "Duplicates and conflicting labels were removed by edgelesion's audit; the validation split keeps every",
        "group of identical or near-identical images on one side.",
        *_held_out_source_lines(source["config"]),
        *_input_lines(bundle),
        "",
        f"## Metrics on the validation split ({validation['n_images']} images; 95% intervals)",
        f"- balanced accuracy: {format_estimate(bal)} over {len(bal['classes'])} classes",
    ]
    for key in ("melanoma_sensitivity", "melanoma_specificity", "accuracy"):
        if key in validation:
            lines.append(f"- {key.replace('_', ' ')}: {format_estimate(validation[key])}")
    rules = {entry.get("melanoma_alert", {}).get("rule_text") for entry in bundle["artifacts"].values()} - {None}
    lines += [f"- each artifact's melanoma alert threshold: {rule}" for rule in sorted(rules)]
    if within := validation.get("within_source"):
        lines += [
            "",
            "## Within each source (validation split, float model)",
            "Where class and source go together, pooled figures reward a model that learned the source; "
            "these are what a new clinic can expect.",
            "",
            "```",
            format_within_source(within),
            "```",
        ]
    lines += site_calibration_lines(bundle)
    lines += _cross_validation_lines(bundle.get("cross_validation"), source["config"]["fold"])
    lines += _leave_source_out_lines(bundle.get("leave_source_out"), source["config"].get("held_out_source"))
    lines += [
        "",
        f"## Artifacts against the float model (validation split, each image in its {ORIENTATIONS} orientations: "
        "flips and quarter turns)",
        "",
        "| artifact | made by | top-1 agreement | on sure predictions (p >= 0.5) | Δ balanced accuracy [paired 95% CI] "
        "| top-1 ties | passed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in bundle["artifacts"].items():
        for method, figures in entry.get(
            "int8_candidates", {None: {"vs_float": entry["parity"]["vs_float"], "passed": entry["passed"]}}
        ).items():
            made_by = (
                f"{method.upper()}{' (shipped)' if method == entry['int8_method'] else ' (not shipped)'}"
                if method
                else "conversion"
            )
            lines.append(
                f"| {name} | {made_by} | {_parity_row(figures['vs_float'])} | {'yes' if figures['passed'] else 'NO'} |"
            )
    lines += [
        "",
        "Every artifact's full figures, against each Keras model, are in `bundle.json` (`artifacts.*.parity`).",
        *_gpu_delegate_lines(bundle["artifacts"]),
        "",
        "## Known limitations",
    ]
    for item in validation["unscored_classes"]:
        lines.append(f"- {item['class']}: {item['n']} validation images, not scored ({item['reason']}).")
    lines += [
        "- Validation sets are small: the intervals above are wide, and one image moves a small class's recall by",
        "  several points.",
        "- Dermoscopic images only; not validated on phone-camera photographs, on other populations or skin types,",
        "  or against a clinician's diagnosis.",
        "",
    ]
    return "\n".join(lines)


def site_calibration_lines(bundle: dict[str, Any]) -> list[str]:
    """The model card's section on a site calibration (none without one): the sample, and each artifact's threshold
    with its figures on the sample beside those of the threshold it replaced."""
    site = bundle.get("site_calibration")
    if site is None:
        return []
    sample, positive = site["sample"], bundle["source_run"]["config"]["positive_class"]
    target = next(iter(bundle["artifacts"].values()))["melanoma_alert"]["target_sensitivity"]
    lines = [
        "",
        f"## Site calibration: {sample['name']} ({site['provenance']['created'][:10]})",
        f"Each artifact's {positive} alert threshold was chosen again on a labelled sample of this site, as the "
        f"highest at which new {positive} images there are expected to reach {target:.0%} sensitivity (order "
        f"statistics of the sample's {positive} scores): {sample['images']} images, {sample['melanomas']} "
        f"{positive} images and {sample['other_images']} others (fingerprint `{sample['fingerprint'][:16]}`), "
        f"{sample['decoding']}. Calibrated from the bundle `{site['calibrated_from']['name']}` (bundle_sha256 "
        f"`{site['calibrated_from']['bundle_sha256'][:16]}`). The expected sensitivity's interval is the order "
        "statistic's (Beta), the sample's figures' are 95% Wilson intervals: a sample this small gives wide ones. The validation figures elsewhere in this card are the export's, at its own thresholds.",
        "",
        "| artifact | alert at p >= | expected sensitivity on new images [95%] | sensitivity on the sample "
        "| specificity | specificity by look-alike | before: alert at p >= | its sensitivity on the sample "
        "| its specificity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in bundle["artifacts"].items():
        alert = entry["melanoma_alert"]
        now, before = alert["site"], alert["previous_on_site"] or {}
        by_lookalike = "; ".join(f"{k} {format_estimate(v)}" for k, v in now["specificity_by_lookalike"].items())
        old_threshold = f"{before['threshold']:.4f}" if before else "n/a"
        lines.append(
            f"| {name} | {now['threshold']:.4f} | {format_estimate(alert['expected_sensitivity'])} "
            f"| {format_estimate(now['sensitivity'])} "
            f"| {format_estimate(now['specificity'])} | {by_lookalike or 'none in the sample'} | {old_threshold} "
            f"| {format_estimate(before.get('sensitivity', {}))} | {format_estimate(before.get('specificity', {}))} |"
        )
    return lines


def _cross_validation_lines(cv: dict[str, Any] | None, fold: int) -> list[str]:
    """The model card's section on the recipe's cross-validation, this model being one of its folds."""
    if cv is None:
        return []
    summary = cv["summary"]
    membership = (
        f"this model is its fold {fold}"
        if cv["this_run_is_a_fold"]
        else f"this model is a separate run of the same recipe, validated on fold {fold}'s split"
    )
    lines = [
        "",
        f"## Cross-validation of this recipe ({len(cv['finished_folds'])} of {cv['folds']} leak-free folds; "
        f"{membership})",
        f"- balanced accuracy: {format_mean_sd(summary['balanced_accuracy'])} (mean ± sd over folds, each fold's best "
        "epoch, chosen on the fold it is scored on: leans optimistic)",
    ]
    if "last_epoch_balanced_accuracy" in summary:
        lines.append(
            f"- balanced accuracy of each fold's last epoch (no epoch chosen on the scored fold): "
            f"{format_mean_sd(summary['last_epoch_balanced_accuracy'])}"
        )
    lines.append(
        f"- melanoma alert at a threshold chosen on the other folds for {cv['target_sensitivity']:.0%} "
        f"sensitivity: sensitivity {format_mean_sd(summary['alert_sensitivity'])}, specificity "
        f"{format_mean_sd(summary['alert_specificity'])}"
    )
    if cv["melanoma_auc_out_of_fold"] is not None:
        lines.append(f"- out-of-fold melanoma AUC (against the rest): {cv['melanoma_auc_out_of_fold']:.3f}")
    if cv.get("within_source_out_of_fold"):
        lines += [
            "- out-of-fold, within each source:",
            "",
            "```",
            format_within_source(cv["within_source_out_of_fold"]),
            "```",
        ]
    if cv["folds_changed_since_merge"]:
        lines.append(
            f"- folds {cv['folds_changed_since_merge']} finished, changed or were removed after these figures were "
            "merged: run 'edgelesion cv' again to include them"
        )
    return lines


def _held_out_source_lines(config: dict[str, Any]) -> list[str]:
    """The Data section's line for a model trained without one source (a leave-source-out fold)."""
    if not config.get("held_out_source"):
        return []
    return [f"Source {config['held_out_source']} was held out of training: the model never saw it."]


def _leave_source_out_lines(lso: dict[str, Any] | None, held_out_source: str | None) -> list[str]:
    """The model card's section on the recipe's leave-source-out cross-validation: each source never trained on
    (`held_out_source`: the one this model never saw, when it is one of the folds)."""
    if lso is None:
        return []
    positive = lso["positive_class"]
    lines = [
        "",
        f"## Sources never trained on (this recipe's leave-source-out cross-validation: {len(lso['finished'])} of "
        f"{len(lso['sources'])} sources held out"
        + (f"; this model holds out {held_out_source})" if held_out_source else ")"),
        "Each fold trains without one source and chooses its best epoch and its alert threshold on the other "
        "sources' validation split: the held-out figures are what a new clinic can expect, the validation figures "
        "what a pooled split reports. To set the alert from a labelled sample of a new site: `edgelesion calibrate`.",
    ]
    for source, row in lso["per_source"].items():
        held, validation = row["held_out"], row["validation"]
        threshold = "n/a" if row["alert_threshold"] is None else f"{row['alert_threshold']:.3f}"
        for lookalike in lso["lookalikes"]:
            pair = held["lookalikes"][lookalike]
            if not pair["auc"]:
                continue
            lines.append(
                f"- held out {source} ({row['held_out_images']} images), {positive} against {lookalike}: AUC "
                f"{format_estimate(pair['auc'])} (on the training sources' validation split: "
                f"{format_estimate(validation['lookalikes'][lookalike]['auc'] or {})}); at that fold's own alert "
                f"threshold {threshold}, chosen on the training sources, sensitivity {format_estimate(held['alert_sensitivity'] or {})} and {lookalike} "
                f"specificity {format_estimate(pair['alert_specificity'] or {})}"
            )
    lines += [f"- not held out: {source} ({reason})" for source, reason in lso["skipped_sources"].items()]
    if lso["changed_since_merge"]:
        lines.append(
            f"- sources {lso['changed_since_merge']} finished, changed or were removed after these figures were "
            "merged: run 'edgelesion cv --merge-only --leave-source-out' on the folder "
            f"{lso['cv_name']} again to include them"
        )
    return lines


def _gpu_delegate_lines(artifacts: dict[str, Any]) -> list[str]:
    """The model card's static GPU-delegate check of each .tflite file (none for a bundle made without it)."""
    checks = {name: entry["gpu_delegate"] for name, entry in artifacts.items() if "gpu_delegate" in entry}
    if not checks:
        return []
    lines = [
        "",
        "## GPU delegate (a static check, not a run on a phone)",
        f"{next(iter(checks.values()))['check']}.",
        "",
        "| artifact | GPU delegate |",
        "| --- | --- |",
    ]
    return lines + [f"| `{name}` | {gpu_delegate_verdict(check)} |" for name, check in checks.items()]


def _parity_row(figures: dict[str, Any]) -> str:
    sure, delta, ci = (
        figures["sure_top1_agreement"],
        figures["delta_balanced_accuracy"],
        figures["delta_balanced_accuracy_ci95"],
    )
    return " | ".join(
        [
            f"{figures['top1_agreement']:.3f}",
            "n/a" if sure is None else f"{sure:.3f} of {figures['sure_images']}",
            "n/a" if delta is None else f"{delta:+.3f}" + ("" if ci is None else f" [{ci[0]:+.3f}, {ci[1]:+.3f}]"),
            f"{figures['top1_ties']:.3f}",
        ]
    )


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse an existing bundle without --force, and never replace a folder that is not a bundle."""
    if out.exists():
        if not force:
            raise EdgelesionError(f"{out} already exists: choose another --out or replace it with --force")
        if not (out / "bundle.json").is_file():
            raise EdgelesionError(
                f"{out} is not an edgelesion bundle, so --force will not replace it: choose another --out"
            )


def write_bundle_files(folder: Path, bundle: dict[str, Any], validation: dict[str, Any]) -> None:
    """labels.txt, bundle.json and MODEL_CARD.md into `folder` (the artifacts are already there)."""
    write_text(folder / "labels.txt", "\n".join(bundle["classes"]) + "\n")
    write_json(folder / "bundle.json", bundle)
    write_text(folder / "MODEL_CARD.md", model_card(bundle, validation))
