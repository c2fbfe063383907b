"""Charts people would rather look at than tables: class counts, training curves, confusion matrices, CV, ROC."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay

from edgelesion.fileio import atomic_path


def save_figure(figure: plt.Figure, target: Path) -> None:
    """Write `figure` as a PNG at `target` (atomically: a chart is never half written) and close it."""
    target.parent.mkdir(parents=True, exist_ok=True)
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
    save_figure(figure, target)


def training_curves_chart(history: list[dict[str, float]], target: Path) -> None:
    """Loss and the validation metrics that matter, per epoch."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(epochs, [r["loss"] for r in history], label="training loss")
    loss_axis.plot(epochs, [r["val_loss"] for r in history], label="validation loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.legend()
    for key, label in (
        ("val_balanced_accuracy", "validation balanced accuracy"),
        ("val_melanoma_sensitivity", "validation melanoma sensitivity"),
        ("accuracy", "training accuracy"),
    ):
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            metric_axis.plot(epochs, [np.nan if v is None else v for v in values], label=label)
    metric_axis.set_ylim(0, 1)
    metric_axis.set_xlabel("epoch")
    metric_axis.legend(fontsize=8)
    figure.suptitle("Training curves")
    save_figure(figure, target)


def confusion_matrix_chart(matrix: list[list[int]], class_names: list[str], target: Path, title: str) -> None:
    """Counts, true class down the side, predicted class along the bottom."""
    size = 1.0 + 0.75 * len(class_names)
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=class_names).plot(
        ax=axis, cmap="Blues", xticks_rotation=45, colorbar=False
    )
    axis.set_title(title)
    save_figure(figure, target)


def cv_folds_chart(values: dict[str, list[float | None]], target: Path, title: str) -> None:
    """Each figure's folds as dots, with their mean and ± 1 sd as a bar and whisker."""
    names = list(values)
    figure, axis = plt.subplots(figsize=(1.3 * len(names) + 2, 4))
    for x, name in enumerate(names):
        present = np.array([v for v in values[name] if v is not None], dtype=float)
        if not len(present):
            continue
        sd = present.std(ddof=1) if len(present) > 1 else 0.0
        axis.bar(x, present.mean(), yerr=sd, color="#9ecae1", capsize=6, width=0.6)
        axis.scatter(np.full(len(present), x), present, color="#08519c", zorder=3, s=14)
    axis.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("mean ± sd over folds (dots: folds)")
    axis.set_title(title)
    save_figure(figure, target)


def melanoma_roc_chart(
    is_positive: np.ndarray, scores: np.ndarray, points: list[tuple[float, float, str]], target: Path, title: str
) -> None:
    """The ROC curve of one class against the rest, with operating points as (specificity, sensitivity, label)."""
    from sklearn.metrics import RocCurveDisplay

    figure, axis = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(is_positive, scores, ax=axis, name="out-of-fold", plot_chance_level=True)
    for specificity, sensitivity, label in points:
        if specificity is not None and sensitivity is not None:
            axis.scatter(1 - specificity, sensitivity, zorder=3, s=20, label=f"alert, {label}")
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(title, fontsize=9)
    save_figure(figure, target)


def _reliability_axes(size: tuple[float, float]) -> tuple[plt.Figure, plt.Axes]:
    """A confidence-accuracy square with the calibrated diagonal drawn."""
    figure, axis = plt.subplots(figsize=size)
    axis.plot([0, 1], [0, 1], linestyle="--", color="#999999", label="calibrated")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("top-1 confidence")
    axis.set_ylabel("accuracy")
    return figure, axis


def reliability_curves_chart(
    curves: dict[str, tuple[list[dict[str, float | None]], float]], target: Path, title: str
) -> None:
    """Accuracy against top-1 confidence, one line per model (name: (bins, expected calibration error))."""
    figure, axis = _reliability_axes((5.5, 5))
    for name, (bins, ece) in curves.items():
        used = [b for b in bins if b["n"]]
        axis.plot(
            [b["confidence"] for b in used],
            [b["accuracy"] for b in used],
            "o-",
            markersize=3,
            label=f"{name} (ECE {ece:.3f})",
        )
    axis.legend(loc="upper left", fontsize=7)
    axis.set_title(title, fontsize=9)
    save_figure(figure, target)


def reliability_chart(bins: list[dict[str, float | None]], ece: float, target: Path, title: str) -> None:
    """Accuracy against top-1 confidence per bin (a calibrated model sits on the diagonal), with image counts."""
    used = [b for b in bins if b["n"]]
    figure, axis = _reliability_axes((5, 5))
    width = used[0]["high"] - used[0]["low"] if used else 0.1
    axis.bar(
        [b["low"] for b in used],
        [b["accuracy"] for b in used],
        width=width,
        align="edge",
        edgecolor="#08519c",
        color="#9ecae1",
        label="accuracy",
    )
    axis.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o", color="#08519c", markersize=3)
    for b in used:
        axis.annotate(str(b["n"]), (b["low"] + width / 2, 0.02), ha="center", fontsize=6)
    axis.legend(loc="upper left", fontsize=8)
    axis.set_title(f"{title}\nexpected calibration error {ece:.3f}", fontsize=9)
    save_figure(figure, target)


def class_by_source_chart(table: dict[str, dict[str, int]], target: Path, title: str) -> None:
    """Image counts as a heatmap, classes down the side, sources along the bottom, each count written in its cell."""
    classes = list(table)
    sources = sorted({s for row in table.values() for s in row})
    counts = np.array([[table[c].get(s, 0) for s in sources] for c in classes])
    figure, axis = plt.subplots(figsize=(1.4 * len(sources) + 3, 0.45 * len(classes) + 1.5))
    axis.imshow(counts, cmap="Blues", aspect="auto")
    dark = counts > counts.max() / 2  # white text on the dark cells
    for (i, j), n in np.ndenumerate(counts):
        axis.text(j, i, str(n), ha="center", va="center", fontsize=8, color="white" if dark[i, j] else "black")
    axis.set_xticks(range(len(sources)), sources, rotation=30, ha="right", fontsize=8)
    axis.set_yticks(range(len(classes)), classes, fontsize=8)
    axis.set_xlabel("source")
    axis.set_title(title, fontsize=9)
    save_figure(figure, target)
