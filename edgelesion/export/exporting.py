"""The export job: a trained run becomes a bundle of validated TFLite and ONNX artifacts."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgelesion._tf import keras
from edgelesion.data.dataset import LoadedDataset
from edgelesion.errors import CheckFailed, EdgelesionError
from edgelesion.export.bundle import (
    BUNDLE_SCHEMA_VERSION,
    ModelDescription,
    check_output_dir,
    input_spec,
    output_spec,
    write_bundle_files,
)
from edgelesion.export.calibration import calibration_sample
from edgelesion.export.gpu_compatibility import gpu_delegate_check, gpu_delegate_verdict
from edgelesion.export.mediapipe_check import INSTALL_HINT, mediapipe_agreement
from edgelesion.export.options import INT8_ARTIFACTS, ExportOptions, OnnxInt8Scheme
from edgelesion.export.parity import CONVERSION_TOLERANCE, ORIENTATIONS, Tolerance, compare, failures, predict_oriented
from edgelesion.export.qat import qat_finetune
from edgelesion.export.scaling import with_scaling
from edgelesion.fileio import replace_dir, sha256_file, staging_dir
from edgelesion.infer.bundle_reader import labels_disagreement, sealed
from edgelesion.infer.runtimes import open_runner, predict_in_batches
from edgelesion.metrics import classification_metrics, scored_class_indices
from edgelesion.preprocessing import Preprocessing
from edgelesion.provenance import provenance
from edgelesion.source_figures import lookalike_indices, within_source_figures
from edgelesion.thresholds import alert_threshold
from edgelesion.train.cross_validation import K_FOLD, LEAVE_SOURCE_OUT, cv_kind, fold_of, recipe_cv_figures
from edgelesion.train.evaluation import predict, recorded_splits
from edgelesion.train.leave_source_out import recipe_leave_source_out_figures
from edgelesion.train.precision import float32_copy
from edgelesion.train.runs import RunDir, read_run
from edgelesion.train.training import training_arrays

METHOD_NAMES = {
    "int8.tflite": {"qat": "quantization-aware training", "ptq": "post-training quantization"},
    "int8.onnx": {"qat": "conversion of the QAT int8.tflite", "ptq": "onnxruntime's post-training quantization"},
}
# the figures against the float model that bundle.json keeps for each int8 candidate
CANDIDATE_FIGURES = (
    "images",
    "views",
    "top1_agreement",
    "sure_top1_agreement",
    "sure_images",
    "delta_balanced_accuracy",
    "delta_balanced_accuracy_ci95",
    "top1_ties",
    "max_abs_prob_diff",
    "as_is",
)


def file_list_fingerprint(rows: list[tuple[str, str, str]]) -> str:
    """sha256 over (path, label, sha256) rows: names an evaluation set exactly."""
    return hashlib.sha256("".join(f"{p}\t{l}\t{s}\n" for p, l, s in rows).encode()).hexdigest()


def described_tflite(tflite: bytes, description: ModelDescription) -> bytes:
    """A .tflite file with its metadata (labels, input spec) inside; unchanged, with a warning, without mediapipe,
    whose generated metadata-schema modules write it."""
    try:
        from edgelesion.export.tflite_metadata import with_metadata
    except ImportError:
        print(
            f"  warning: {description.artifact} gets no metadata (labels) inside: mediapipe is not installed "
            f"({INSTALL_HINT})"
        )
        return tflite
    return with_metadata(tflite, description)


def _write_artifact(target: Path, float_model: keras.Model, description: ModelDescription) -> None:
    """Every float artifact (the int8 ones: export_int8), with its description inside."""
    from edgelesion.export import onnx_export, tflite_export

    name = description.artifact
    if name == "float32.tflite":
        target.write_bytes(described_tflite(tflite_export.convert_float32(float_model), description))
    elif name == "float16.tflite":
        target.write_bytes(described_tflite(tflite_export.convert_float16(float_model), description))
    elif name == "float32.onnx":
        onnx_export.convert_float32(float_model, target)
        onnx_export.write_metadata(target, description.onnx_properties())


@dataclass
class Int8Sources:
    """What the int8 artifacts are made from. The QAT int8.tflite file is converted once and serves both int8.tflite
    and int8.onnx (tflite_to_onnx)."""

    float_model: keras.Model
    quantized_core: keras.Model | None  # None: no QAT fine-tune (--int8 ptq)
    calibration: np.ndarray
    preprocessing: Preprocessing
    onnx_int8: OnnxInt8Scheme
    _qat_tflite: bytes | None = field(default=None, init=False, repr=False)  # converted once, on first use

    def qat_tflite(self) -> bytes:
        from edgelesion.export import tflite_export

        if self._qat_tflite is None:
            self._qat_tflite = tflite_export.convert_int8_qat(
                self.float_model, self.quantized_core, self.calibration, self.preprocessing
            )
        return self._qat_tflite

    def write(self, target: Path, method: str, description: ModelDescription, staging: Path) -> None:
        """The int8 artifact `description.artifact` made by `method` (qat or ptq), with its description inside."""
        from edgelesion.export import onnx_export, tflite_export, tflite_to_onnx

        if description.artifact == "int8.tflite":
            converted = (
                self.qat_tflite()
                if method == "qat"
                else tflite_export.convert_int8_ptq(self.float_model, self.calibration, self.preprocessing)
            )
            target.write_bytes(described_tflite(converted, description))
            return
        if method == "qat":
            qat_file = staging / ".int8-qat-for-onnx.tflite"
            qat_file.write_bytes(self.qat_tflite())
            tflite_to_onnx.convert_int8_tflite(qat_file, target)
            qat_file.unlink()
        else:
            float_onnx = staging / "float32.onnx"  # when the bundle has one already
            if not float_onnx.exists():
                float_onnx = staging / ".float32-for-int8.onnx"
                onnx_export.convert_float32(self.float_model, float_onnx)
            onnx_export.quantize_static_int8(float_onnx, target, self.calibration, self.onnx_int8)
            (staging / ".float32-for-int8.onnx").unlink(missing_ok=True)
        onnx_export.write_metadata(target, description.onnx_properties())


def _closeness(entry: dict[str, Any], missed: list[str], method: str) -> tuple:
    """Sort key: an int8 candidate that passes, keeps more of the float model's answers (all of them, every
    view counted; then those on sure images), moves balanced accuracy less, and (all else equal) is the
    post-training one, comes first."""
    judged = entry["parity"]["vs_float"]
    return (
        bool(missed),
        -judged["top1_agreement"],
        -(judged["sure_top1_agreement"] or 0.0),
        abs(judged["delta_balanced_accuracy"] or 0.0),
        method != "ptq",
    )


def export_int8(
    staging: Path,
    method: str,
    sources: Int8Sources,
    description: ModelDescription,
    validate: Callable[[Path, dict[str, np.ndarray]], tuple[dict[str, Any], list[str]]],
    references: dict[str, np.ndarray],
) -> tuple[dict[str, Any], list[str]]:
    """Write int8.tflite or int8.onnx by QAT, by post-training quantization, or (method "auto") both, shipping the
    one that agrees better with the float model on the validation split; every candidate's figures go in its entry.
    A QAT file is also checked against the QAT model it was converted from."""
    name = description.artifact
    candidates = {}
    for candidate in ("qat", "ptq") if method == "auto" else (method,):
        path = staging / f".{candidate}-{name}"
        sources.write(path, candidate, description, staging)
        print(f"  {name} by {METHOD_NAMES[name][candidate]}:")
        entry, missed = validate(path, references if candidate == "qat" else {"float": references["float"]})
        if candidate == "qat":  # is the file faithful to the QAT model it was converted from?
            unfaithful = failures(name, entry["parity"]["vs_qat"], CONVERSION_TOLERANCE, "QAT")
            if unfaithful:
                print(f"  {name}: FAILED against the QAT model: {'; '.join(unfaithful)}")
            missed += unfaithful
            entry["passed"] = not missed
        candidates[candidate] = (path, entry, missed)
    chosen = min(candidates, key=lambda c: _closeness(candidates[c][1], candidates[c][2], c))
    path, entry, missed = candidates[chosen]
    path.rename(staging / name)
    for other_path, _, _ in candidates.values():
        other_path.unlink(missing_ok=True)
    entry["int8_method"] = chosen
    entry["int8_candidates"] = {
        c: {
            "passed": e["passed"],
            "problems": m,
            "vs_float": {k: e["parity"]["vs_float"][k] for k in CANDIDATE_FIGURES},
        }
        for c, (_, e, m) in candidates.items()
    }
    if chosen == "ptq" and name == "int8.onnx":
        entry["onnx_int8_scheme"] = asdict(sources.onnx_int8)
    if len(candidates) > 1:
        print(f"  {name}: shipping the {chosen.upper()} file (closer to the float model on the validation split)")
    return entry, missed


def validate_artifact(
    name: str,
    path: Path,
    references: dict[str, np.ndarray],
    val: LoadedDataset,
    scored: list[int],
    positive: int | None,
    tolerance: Tolerance,
    melanoma_sensitivity: float,
    lookalikes: list[int],
) -> tuple[dict[str, Any], list[str]]:
    """Score the artifact file itself on the validation images, in all their orientations, against every reference
    model's probabilities for those (judged against the float model).

    Returns its bundle.json entry (with its own melanoma alert threshold, chosen on its own
    validation probabilities, within the sources holding both classes where sources are known)
    and the reasons it misses `tolerance` (none when it passes).
    int8.tflite is also run in MediaPipe's ImageClassifier, which must give LiteRT's top-1.
    """
    runner, pixels = open_runner(path), np.asarray(val.images)  # the validation split, read from the image cache
    every_orientation = predict_oriented(lambda view: predict_in_batches(runner, view), pixels)
    parity = {
        f"vs_{ref}": compare(ref_probs, every_orientation, val.labels, scored, positive, views=ORIENTATIONS)
        for ref, ref_probs in references.items()
    }
    probs = every_orientation[: len(val.images)]  # the images as they are
    judged = parity["vs_float"]
    missed = failures(name, judged, tolerance, "float")
    entry: dict[str, Any] = {
        "file": name,
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "runtime": "LiteRT" if name.endswith(".tflite") else "onnxruntime",
        "reference": "float",
        "tolerance": tolerance.to_dict(),
        "parity": parity,
        "melanoma_alert": alert_threshold(
            probs, val.labels, positive, melanoma_sensitivity, sources=val.sources, lookalikes=lookalikes
        ),
        "labels_inside": runner.labels is not None,  # metadata written (export/README.md)
    }
    disagreement = labels_disagreement(path, runner.labels, val.classes)
    if disagreement:
        missed.append(disagreement)
    if name == "int8.tflite":
        try:
            entry["mediapipe"] = mediapipe_agreement(path, pixels, probs)
        except ImportError:
            entry["mediapipe"] = {"skipped": f"mediapipe is not installed: {INSTALL_HINT}"}
            print(f"  warning: MediaPipe check skipped: mediapipe is not installed ({INSTALL_HINT})")
        else:
            if entry["mediapipe"]["top1_agreement_with_litert"] < 1.0:
                missed.append(
                    f"{name}: MediaPipe ImageClassifier top-1 agrees with LiteRT on only "
                    f"{entry['mediapipe']['top1_agreement_with_litert']:.4f} of the images"
                )
            if runner.labels is not None and entry["mediapipe"]["category_names"] != val.classes:
                missed.append(
                    f"{name}: MediaPipe ImageClassifier names the classes {entry['mediapipe']['category_names']}, "
                    f"not {val.classes}"
                )
    entry["passed"] = not missed
    verdict = "ok" if not missed else "FAILED: " + "; ".join(missed)
    sure = judged["sure_top1_agreement"]
    print(
        f"  {name}: top-1 agreement with the float model {judged['top1_agreement']:.4f} over the validation images "
        f"in {ORIENTATIONS} orientations ({'n/a' if sure is None else f'{sure:.4f}'} on the {judged['sure_images']} "
        f"sure ones), "
        f"max prob diff {judged['max_abs_prob_diff']:.2e} (99th percentile {judged['p99_abs_prob_diff']:.2e}), "
        f"balanced accuracy change "
        f"{_signed(judged['delta_balanced_accuracy'])} — {verdict}"
    )
    return entry, missed


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _cross_validations(run: RunDir, cv_dirs: tuple[Path, ...]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The recipe's k-fold and leave-source-out figures for the model card, from `cv_dirs` (at most one of each
    kind; one that does not fit the run is refused). Without a k-fold one, the CV folder the run is a fold of."""
    by_kind: dict[str, Path] = {}
    for folder in cv_dirs:
        kind = cv_kind(folder)
        if kind in by_kind:
            raise EdgelesionError(f"--cv {folder} and --cv {by_kind[kind]} are both {kind}: give one of each kind")
        by_kind[kind] = folder
    k_fold = recipe_cv_figures(by_kind[K_FOLD], run.root) if K_FOLD in by_kind else _fold_around(run)
    leave_source_out = (
        recipe_leave_source_out_figures(by_kind[LEAVE_SOURCE_OUT], run.root) if LEAVE_SOURCE_OUT in by_kind else None
    )
    return k_fold, leave_source_out


def _fold_around(run: RunDir) -> dict[str, Any] | None:
    """The CV figures of the folder the run is a fold of, when it fits (else the card goes without, and says why)."""
    if (around := fold_of(run.root)) is None:
        return None
    try:
        return recipe_cv_figures(around, run.root)
    except EdgelesionError as exc:
        print(f"note: the model card leaves out the cross-validation around the run: {exc}")
        return None


def export_run(
    run_dir: str | Path,
    out: str | Path,
    options: ExportOptions = ExportOptions(),
    *,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Export a run's best model to the bundle folder `out`; every artifact is validated on the validation split.

    The bundle is built in a temporary folder beside `out` and renamed into place only when
    complete; an artifact that misses its tolerance fails the export (CheckFailed) unless
    options.keep_failed is set.
    """
    run, out = RunDir(Path(run_dir)), Path(out)
    check_output_dir(out, force)
    info = read_run(run.root)
    cross_validation, leave_source_out = _cross_validations(run, options.cv_dirs)
    float_model = float32_copy(keras.models.load_model(run.best_model), info.config)  # trained mixed: float32
    source_sha256 = sha256_file(run.best_model)
    train, val = recorded_splits(run, info, "train", "val")
    classes, config = info.classes, info.config
    calibration = calibration_sample(train.images, n=options.calibration_images, seed=config.seed)

    references = {
        "float": predict_oriented(lambda view: predict(float_model, view), val.images)
    }  # see validate_artifact
    quantized_core = None
    if set(INT8_ARTIFACTS) & set(options.artifacts) and options.int8 in ("qat", "auto"):
        x, y, weights = training_arrays(run, train, config, progress)
        quantized_core = qat_finetune(
            float_model, x, y, weights, calibration, run.root / "qat", options.qat, config, progress=progress
        )
        qat_model = with_scaling(float_model, quantized_core)  # what its int8 file computes (qat.quantize_core)
        references["qat"] = predict_oriented(lambda view: predict(qat_model, view), val.images)
    int8_sources = Int8Sources(float_model, quantized_core, calibration, config.preprocessing, options.onnx_int8)

    scored = scored_class_indices(val.labels, len(classes), config.min_support)
    positive = classes.index(config.positive_class) if config.positive_class in classes else None
    lookalikes = list(lookalike_indices(classes, config.lookalikes).values())
    staging = staging_dir(out)
    try:
        artifacts, problems, failed = {}, [], []
        for name in options.artifacts:
            print(f"exporting {name}")

            def validate(path: Path, refs: dict[str, np.ndarray], name: str = name) -> tuple[dict[str, Any], list[str]]:
                return validate_artifact(
                    name,
                    path,
                    refs,
                    val,
                    scored,
                    positive,
                    options.tolerances[name],
                    options.melanoma_sensitivity,
                    lookalikes,
                )

            description = ModelDescription(name, classes, config.preprocessing, source_sha256)
            if name in INT8_ARTIFACTS:
                entry, missed = export_int8(staging, options.int8, int8_sources, description, validate, references)
            else:
                _write_artifact(staging / name, float_model, description)
                entry, missed = validate(staging / name, references)
            entry["input"] = input_spec(name, config.preprocessing)
            if name.endswith(".tflite"):
                entry["gpu_delegate"] = gpu_delegate_check(staging / name)
                print(f"  {name}: GPU delegate (static check): {gpu_delegate_verdict(entry['gpu_delegate'])}")
            artifacts[name], problems = entry, problems + missed
            if missed:
                failed.append(name)
        if problems and not options.keep_failed:
            passed = [name for name in options.artifacts if name not in failed]
            without = f"export without them (--artifacts {','.join(passed)}), or " if passed else ""
            raise CheckFailed(
                "artifacts missed their parity tolerance: "
                + "; ".join(problems)
                + f". No bundle was written: {without}pass --keep-failed to keep them, marked as failed"
            )
        as_they_are = references["float"][: len(val.images)]
        validation = classification_metrics(
            val.labels,
            as_they_are,
            classes,
            min_support=config.min_support,
            positive_class=config.positive_class,
            seed=config.seed,
        )
        if val.sources is not None:
            float_alert = alert_threshold(
                as_they_are,
                val.labels,
                positive,
                options.melanoma_sensitivity,
                sources=val.sources,
                lookalikes=lookalikes,
            )
            validation["within_source"] = within_source_figures(
                as_they_are,
                val.labels,
                classes,
                val.sources,
                config.positive_class,
                config.lookalikes,
                float_alert["threshold"],
            )
        val_rows = [(r.relpath, r.label, s) for r, s in zip(val.records, val.sha256)]
        bundle = {
            "schema_version": BUNDLE_SCHEMA_VERSION,
            "classes": classes,
            "output": output_spec(classes),
            "artifacts": artifacts,
            "calibration": {"images": len(calibration), "source": "training split", "seed": config.seed},
            "int8_method": options.int8,
            "qat": None if quantized_core is None else asdict(options.qat),
            "validation_metrics_float": validation,
            "cross_validation": cross_validation,  # the recipe's, when the run is a fold of one or --cv names it
            "leave_source_out": leave_source_out,  # the recipe's, when --cv names one
            "source_run": {  # names, fingerprints and relative paths only: a bundle carries no machine's paths
                "name": run.root.name,
                "relative_path": os.path.relpath(run.root.resolve(), out.resolve()),
                "config": config.to_dict(),
                "data_name": info.data_dir.name,
                "data_fingerprint": info.data_fingerprint,
                "best_model_sha256": source_sha256,
                "validation_files": [list(row) for row in val_rows],
                "validation_sources": val.sources,  # None without a metadata CSV's source column
                "validation_fingerprint": file_list_fingerprint(val_rows),
            },
            "provenance": provenance(portable=True),
        }
        bundle = sealed(bundle)  # its self-hash last, over everything else
        write_bundle_files(staging, bundle, validation)
        replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote bundle {out}")
    return bundle
