"""Charts people would rather look at than tables: class counts, training curves, confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from edgelesion.fileio import atomic_path  # noqa: E402


def _save(figure: plt.Figure, target: Path) -> None:
    with atomic_path(target) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)


def class_counts_chart(counts: dict[str, dict[str, int]], target: Path) -> None:
    """Horizontal bars: images found and images kept after the duplicate policy, per class."""
    names = list(counts)
    found = [counts[n]["found"] for n in names]
    kept = [counts[n]["kept"] for n in names]
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    y = np.arange(len(names))
    axis.barh(y + 0.2, found, height=0.4, label="found", color="#bbbbbb")
    axis.barh(y - 0.2, kept, height=0.4, label="kept (duplicates and conflicts removed)", color="#1f77b4")
    axis.set_yticks(y, names)
    axis.invert_yaxis()
    axis.set_xlabel("images")
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title("Images per class")
    _save(figure, target)


def training_curves_chart(history: list[dict[str, float]], target: Path) -> None:
    """Loss and the validation metrics that matter, per epoch."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(epochs, [r["loss"] for r in history], label="training loss")
    loss_axis.plot(epochs, [r["val_loss"] for r in history], label="validation loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.legend()
    for key, label in (("val_balanced_accuracy", "validation balanced accuracy"),
                       ("val_melanoma_sensitivity", "validation melanoma sensitivity"),
                       ("accuracy", "training accuracy")):
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            metric_axis.plot(epochs, [np.nan if v is None else v for v in values], label=label)
    metric_axis.set_ylim(0, 1)
    metric_axis.set_xlabel("epoch")
    metric_axis.legend(fontsize=8)
    figure.suptitle("Training curves")
    _save(figure, target)


def confusion_matrix_chart(matrix: list[list[int]], class_names: list[str], target: Path, title: str) -> None:
    """Counts, true class down the side, predicted class along the bottom."""
    size = 1.0 + 0.75 * len(class_names)
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=class_names).plot(
        ax=axis, cmap="Blues", xticks_rotation=45, colorbar=False
    )
    axis.set_title(title)
    _save(figure, target)
