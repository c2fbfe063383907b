"""Run an exported bundle from a script: the bundle's own preprocessing, any artifact, no TensorFlow.

from edgelesion import Classifier
clf = Classifier.load("export/model3", artifact="int8.onnx")
result = clf.predict("lesion.jpg")
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from edgelesion.errors import EdgelesionError
from edgelesion.images import UnreadableImage, read_image, small_image_warning, to_model_input, to_rgb
from edgelesion.infer.bundle_reader import bundle_preprocessing, labels_disagreement, read_bundle, verified_artifact
from edgelesion.infer.runtimes import Runner, log_odds, open_runner, top_two_margin

ImageInput = str | Path | Image.Image | np.ndarray
# A reduced JPEG decode moves the model input by about 0.1 grey level, which flips the top-1 answer of about 1% of
# 4000x3000 photos on Lite0, all of them answers whose top two probabilities were within 0.04 (float) or 0.08
# (int8). Re-deciding from the full decode every answer within 0.05 re-decodes about 5% of such photos and keeps
# 99.75-100% of the full decode's answers (docs/decoding.md).
RECHECK_MARGIN = 0.05
# The melanoma alert flips too: with only the margin above, 1.0% of 4000x3000 photos (Lite0 int8 files; float 0.3%)
# got another alert than from the full decode, each with a melanoma probability within 0.15 log-odds of the
# threshold. Re-deciding every answer within 0.2 log-odds kept every alert of 2,400 views (docs/decoding.md).
ALERT_RECHECK_MARGIN = 0.2


@dataclass(frozen=True)
class Prediction:
    """One image's result: probabilities for every class in the bundle's label order."""

    label: str
    probabilities: dict[str, float]
    melanoma_alert: bool | None  # melanoma probability >= the artifact's threshold (bundle.json); None without one
    source: str | None = None  # the file path, when the input was a file
    warning: str | None = None  # why this answer deserves less trust (an image far smaller than the model's input)


@dataclass(frozen=True)
class FailedImage:
    """An input that could not be read, and why (predict_many reports these instead of stopping)."""

    source: str
    reason: str


class _Prepared(NamedTuple):
    """One image ready for the model."""

    pixels: np.ndarray
    warning: str | None
    reduced_file: Path | None  # the file, when it was decoded reduced


class Classifier:
    """A bundle artifact loaded on its runtime, with the bundle's input spec and labels."""

    def __init__(
        self,
        bundle: dict[str, Any],
        artifact: str,
        runner: Runner,
        *,
        jpeg_draft: bool | None = None,
        jpeg_draft_margin: int | None = None,
        recheck_margin: float = RECHECK_MARGIN,
        alert_recheck_margin: float = ALERT_RECHECK_MARGIN,
    ) -> None:
        self.bundle, self.artifact, self.runner = bundle, artifact, runner
        if not 0 <= recheck_margin <= 1:
            raise EdgelesionError(f"recheck_margin {recheck_margin} must be a probability difference in [0, 1]")
        if not 0 <= alert_recheck_margin <= 10:
            raise EdgelesionError(f"alert_recheck_margin {alert_recheck_margin} must be a log-odds distance in [0, 10]")
        self.recheck_margin, self.alert_recheck_margin = recheck_margin, alert_recheck_margin
        self.classes: list[str] = bundle["classes"]
        # jpeg_draft False: the exact path, every JPEG decoded in full; None keeps what the input spec says
        overrides: dict[str, Any] = {"jpeg_draft": jpeg_draft, "jpeg_draft_margin": jpeg_draft_margin}
        self.preprocessing = replace(
            bundle_preprocessing(bundle, artifact),
            **{name: value for name, value in overrides.items() if value is not None},
        )
        alert = bundle["artifacts"][artifact].get("melanoma_alert") or {}
        self.melanoma_threshold: float | None = alert.get("threshold")
        positive = bundle["source_run"]["config"]["positive_class"]  # "melanoma" unless trained otherwise
        self.melanoma_index = self.classes.index(positive) if positive in self.classes else None

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        artifact: str = "int8.tflite",
        *,
        threads: int | None = None,
        jpeg_draft: bool | None = None,
        jpeg_draft_margin: int | None = None,
        recheck_margin: float = RECHECK_MARGIN,
        alert_recheck_margin: float = ALERT_RECHECK_MARGIN,
    ) -> Classifier:
        """Open `artifact` of the bundle in `bundle_dir` after checking its sha256 against bundle.json.

        `jpeg_draft`: None decodes JPEGs as the bundle's input spec says; False decodes every JPEG in full (exact,
        slower on large photos); True decodes large JPEGs reduced (see Preprocessing.jpeg_draft).
        `jpeg_draft_margin`: None as the input spec says, else how far a reduced decode may go (in input sides).
        `recheck_margin`: an answer from a reduced decode whose top two probabilities are closer than this is
        decided again from the file's full decode (0: never).
        `alert_recheck_margin`: so is one whose melanoma probability is within this many log-odds of the artifact's
        alert threshold (0: never), so a reduced decode keeps the alert the full decode would give.
        """
        bundle_dir = Path(bundle_dir)
        bundle = read_bundle(bundle_dir)
        path = verified_artifact(bundle_dir, bundle, artifact)
        entry = bundle["artifacts"][artifact]
        if not entry.get("passed", True):
            print(f"warning: {artifact} missed its parity tolerance at export (kept with --keep-failed)")
        runner = open_runner(path, threads)
        disagreement = labels_disagreement(path, runner.labels, bundle["classes"])
        if disagreement:
            raise EdgelesionError(f"{disagreement}: copy the bundle again from the original")
        return cls(
            bundle,
            artifact,
            runner,
            jpeg_draft=jpeg_draft,
            jpeg_draft_margin=jpeg_draft_margin,
            recheck_margin=recheck_margin,
            alert_recheck_margin=alert_recheck_margin,
        )

    def decoded(self, image: ImageInput) -> Image.Image:
        """One image as upright RGB: a path, a PIL image, or an HxWx3 (or HxW) uint8 array (an RGB PIL image passed in
        is returned as it is, not copied)."""
        return self._decoded(image)[0]

    def _decoded(self, image: ImageInput, draft: bool = True) -> tuple[Image.Image, bool]:
        """`decoded`, and whether a JPEG file was decoded reduced (`draft` False: never)."""
        if isinstance(image, (str, Path)):
            try:
                read = read_image(image, self.preprocessing.draft_side if draft else None)
            except UnreadableImage as exc:
                raise EdgelesionError(f"{image}: {exc}") from exc
            return read.image, read.reduced
        if isinstance(image, Image.Image):
            return to_rgb(image), False
        if isinstance(image, np.ndarray):
            if (
                image.dtype != np.uint8
                or image.ndim not in (2, 3)
                or (image.ndim == 3 and image.shape[2] not in (3, 4))
            ):
                raise EdgelesionError(
                    f"an array image must be HxWx3 (RGB) or HxW uint8, not {image.dtype} {image.shape}"
                )
            return to_rgb(Image.fromarray(image)), False
        raise EdgelesionError(f"cannot classify a {type(image).__name__}: pass a path, a PIL image or a uint8 array")

    def pixels(self, image: ImageInput) -> np.ndarray:
        """The model input for one image (see `decoded` for what an image may be)."""
        return self._prepared(image).pixels

    def _prepared(self, image: ImageInput) -> _Prepared:
        """The model input, a warning for an image far smaller than the model's input, and the file to decode in
        full if the answer is close (when it was decoded reduced)."""
        decoded, reduced = self._decoded(image)
        return _Prepared(
            to_model_input(decoded, self.preprocessing),
            small_image_warning(decoded.size, self.preprocessing),
            Path(image) if reduced else None,  # type: ignore[arg-type]  # reduced: only a file is decoded reduced
        )

    @property
    def alert_rule(self) -> tuple[int, float] | None:
        """(melanoma class index, this artifact's alert threshold), or None where it raises no alert."""
        if self.melanoma_index is None or self.melanoma_threshold is None:
            return None
        return self.melanoma_index, self.melanoma_threshold

    def needs_full_decode(self, probabilities: np.ndarray) -> np.ndarray:
        """Which rows of probabilities from reduced decodes are decided again from the full decode: those whose top
        two are within `recheck_margin`, or whose melanoma probability is within `alert_recheck_margin` log-odds of
        the alert threshold."""
        close = top_two_margin(probabilities) < self.recheck_margin
        if self.alert_rule is not None:
            index, threshold = self.alert_rule
            close |= np.abs(log_odds(probabilities[:, index]) - log_odds(threshold)) < self.alert_recheck_margin
        return close

    def _rechecked(
        self, probabilities: np.ndarray, reduced_files: list[Path | None], pool: ThreadPoolExecutor | None = None
    ) -> np.ndarray:
        """`probabilities` of a batch, each row that came from a reduced decode and `needs_full_decode` replaced by
        the prediction from that file's full decode (decoded in `pool`'s threads if given; kept where the file can no
        longer be read)."""
        again = self.needs_full_decode(probabilities)
        close = {i: path for i, path in enumerate(reduced_files) if path is not None and again[i]}
        decoded = (pool.map if pool else map)(self._full_pixels, close.values())
        full = {i: pixels for i, pixels in zip(close, decoded) if pixels is not None}
        if not full:
            return probabilities
        rechecked = probabilities.copy()
        rechecked[list(full)] = self.runner.predict(np.stack(list(full.values())))
        return rechecked

    def _full_pixels(self, path: Path) -> np.ndarray | None:
        """The model input from the file's full decode; None if it can no longer be read."""
        try:
            return to_model_input(self._decoded(path, draft=False)[0], self.preprocessing)
        except EdgelesionError:
            return None

    def _result(self, probabilities: np.ndarray, source: str | None, warning: str | None) -> Prediction:
        alert = None
        if self.alert_rule is not None:
            index, threshold = self.alert_rule
            alert = bool(probabilities[index] >= threshold)
        return Prediction(
            self.classes[int(probabilities.argmax())],
            {name: float(p) for name, p in zip(self.classes, probabilities)},
            alert,
            source,
            warning,
        )

    def predict(self, image: ImageInput) -> Prediction:
        """Classify one image."""
        source = str(image) if isinstance(image, (str, Path)) else None
        prepared = self._prepared(image)
        probabilities = self._rechecked(self.runner.predict(prepared.pixels[None]), [prepared.reduced_file])
        return self._result(probabilities[0], source, prepared.warning)

    def predict_many(
        self, images: Iterable[ImageInput], *, batch_size: int = 32, progress: bool = False, workers: int = 4
    ) -> Iterator[Prediction | FailedImage]:
        """Classify many images in batches, in input order; decoding runs in threads ahead of inference.

        An unreadable file yields a FailedImage with its reason and never stops the batch.
        """
        items = list(images) if progress else images
        bar = tqdm(
            total=len(items) if progress else None,  # type: ignore[arg-type]  # progress: items is a list
            unit="img",
            desc="predicting",
            disable=not progress,
        )

        def load(item: ImageInput) -> tuple[str | None, _Prepared | str]:
            source = str(item) if isinstance(item, (str, Path)) else None
            try:
                return source, self._prepared(item)
            except EdgelesionError as exc:
                return source, str(exc)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: deque = deque()
            iterator = iter(items)
            for item in iterator:  # keep two batches of decoding in flight
                pending.append(pool.submit(load, item))
                if len(pending) >= 2 * batch_size:
                    yield from self._run_batch([pending.popleft().result() for _ in range(batch_size)], bar, pool)
            while pending:
                yield from self._run_batch(
                    [pending.popleft().result() for _ in range(min(batch_size, len(pending)))], bar, pool
                )
        bar.close()

    def _run_batch(
        self, loaded: list[tuple[str | None, _Prepared | str]], bar: tqdm, pool: ThreadPoolExecutor
    ) -> Iterator[Prediction | FailedImage]:
        good = [prepared for _, prepared in loaded if not isinstance(prepared, str)]
        probabilities = iter(
            self._rechecked(
                self.runner.predict(np.stack([p.pixels for p in good])), [p.reduced_file for p in good], pool
            )
            if good
            else []
        )
        for source, prepared in loaded:
            if isinstance(prepared, str):
                yield FailedImage(source or "<image>", prepared)
            else:
                yield self._result(next(probabilities), source, prepared.warning)
        bar.update(len(loaded))
