"""How much the float model's own answers move under imperceptible input noise: the floor under any int8 agreement.

    .venv/bin/python -m benchmarks.noise_floor export/lite0-fold0 export/model3

For each bundle, the float model (its float32.onnx, which matches the Keras model to 1e-5) is run on
the export's validation images and on the same images with uniform integer noise of +-1 and +-2
grey levels added (3 seeded draws each; JPEG compression itself changes pixels by more). Its
agreement with itself is set beside the int8 files' agreement with it (the export's figures in
bundle.json): an int8 file cannot be asked to keep more answers than a one-grey-level change keeps.
Records benchmarks/results/noise_floor.{md,json}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from benchmarks.common import (bundle_folders, bundle_run, markdown_table, noisy, record, scoring, signed_interval,
                               write_table)
from edgelesion.bench.benchmarking import as_is_parity
from edgelesion.export.parity import compare
from edgelesion.infer.runtimes import open_runner, predict_in_batches
from edgelesion.train.evaluation import recorded_splits

AMPLITUDES = (1, 2)  # grey levels, uniform integer noise in [-a, a]
DRAWS = 3
INT8_FILES = ("int8.tflite", "int8.onnx")


def measure(bundle_dir: Path) -> dict[str, Any]:
    """The float model against itself under noise, and the bundle's int8 files against the float model."""
    bundle, run, info = bundle_run(bundle_dir)
    (val,) = recorded_splits(run, info, "val")
    scored, positive = scoring(info, val.labels)
    model = open_runner(bundle_dir / "float32.onnx")
    reference = predict_in_batches(model, val.images)
    rows = {}
    for amplitude in AMPLITUDES:
        for draw in range(DRAWS):
            rows[f"float model, ±{amplitude} grey levels (draw {draw + 1})"] = compare(
                reference, predict_in_batches(model, noisy(val.images, amplitude, draw)), val.labels, scored, positive,
                seed=info.config.seed)
    for name in INT8_FILES:
        if name in bundle["artifacts"]:
            rows[f"{name} (the export's figures, images as they are)"] = as_is_parity(bundle["artifacts"][name])
    return rows


def _row(bundle: str, name: str, figures: dict[str, Any]) -> list[str]:
    return [bundle, name, f"{figures['top1_agreement']:.3f}",
            f"{figures['sure_top1_agreement']:.3f} of {figures['sure_images']}",
            signed_interval(figures["delta_balanced_accuracy"], figures["delta_balanced_accuracy_ci95"]),
            f"{figures['max_abs_prob_diff']:.3f}"]


def main() -> None:
    bundles = {bundle.name: measure(bundle) for bundle in bundle_folders(__doc__)}
    record("noise_floor", {"amplitudes": AMPLITUDES, "draws": DRAWS, "bundles": bundles})
    lines = markdown_table(["bundle", "against the float model", "top-1 agreement, all", "on sure images",
                            "Δ balanced accuracy [paired 95% CI]", "max prob diff"],
                           [_row(bundle, name, figures) for bundle, rows in bundles.items()
                            for name, figures in rows.items()], "llrrrr")
    write_table("noise_floor", lines)


if __name__ == "__main__":
    main()
