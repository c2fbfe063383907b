"""MediaPipe's ImageClassifier (the task API phone apps use) on a bundle's int8.tflite over the demo sample:
does every returned category carry our class name, and is its top-1 edgelesion's label?

    .venv/bin/python -m benchmarks.mediapipe_names export/lite0-fold0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, RESULTS, record
from edgelesion import Classifier
from edgelesion.export.mediapipe_check import mediapipe_probabilities
from edgelesion.fileio import write_text

SAMPLE = REPO / "demo" / "sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="a bundle made by 'edgelesion export'")
    bundle = parser.parse_args().bundle
    classifier = Classifier.load(bundle, "int8.tflite")
    files = sorted(SAMPLE.rglob("*.jpg"))
    pixels = np.stack([classifier.pixels(f) for f in files])
    scores, names = mediapipe_probabilities(bundle / "int8.tflite", pixels)
    labels = [classifier.predict(p).label for p in pixels]
    same_top1 = sum(names[i] == label for i, label in zip(scores.argmax(1), labels))
    result = {"bundle": bundle.name, "images": len(files), "category_names": names,
              "names_are_labels_txt": names == classifier.classes, "top1_name_is_edgelesion_label": same_top1}
    record("mediapipe_names", result)
    line = (f"MediaPipe ImageClassifier on {bundle.name}/int8.tflite over the {len(files)} demo images: category names "
            f"{'are' if result['names_are_labels_txt'] else 'are NOT'} labels.txt's; top-1 name = edgelesion's label "
            f"on {same_top1} of {len(files)}")
    write_text(RESULTS / "mediapipe_names.md", line + "\n")
    print(line)


if __name__ == "__main__":
    main()
