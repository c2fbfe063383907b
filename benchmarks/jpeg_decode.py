"""Reduced JPEG decoding (Pillow's draft mode) against a full decode, on dermatoscope-sized photos.

    .venv/bin/python -m benchmarks.jpeg_decode export/lite0-fold0 --images 300 [--margin 3]

The shared images are 180x180; users' photos are 1024x768 to 6000x4000. A sample of the shared images is
re-encoded (bicubic upscale, JPEG quality 90) at 1024x768 and 4000x3000 into runs/benchmarks/jpeg-decode
(git-ignored; decode cost depends on pixel count, not content). For each size:
- decode + resize time per image, one thread, full against reduced;
- `edgelesion predict`'s own throughput (Classifier.predict_many on int8.tflite, all cores), full against reduced
  (three runs each, taking turns: the speed-up is the median of each round's ratio),
  and the limit each path's costs allow on these cores (benchmarks.common.decode_inference_limit: decode + resize
  on one thread, int8.tflite's batch throughput; the reduced path also pays a full decode for each answer
  int8.tflite decides again, and runs the model again): the speed-up those costs allow, beside the measured one;
- for every artifact of the bundle, top-1 agreement and the largest probability difference between the two, on
  the images as they are and over their 8 orientations (as the export judges parity: 8x the predictions, so
  one flipped image is not the whole margin);
- the same as `predict` answers: an answer from the reduced decode that is close (top two probabilities, or the
  melanoma probability and the artifact's alert threshold: Classifier.needs_full_decode) is decided from the full
  decode (emulated per view), and how many views that takes;
- beside top-1, melanoma alert agreement (the artifact's own threshold) wherever the bundle has one;
- the model's own floor under that agreement: where the decode is reduced (by a factor k), the full decode
  box-reduced by k in pixels before the same resize, against the full decode resized directly. Both are exact
  full-resolution pipelines that differ only in resampling order, as the reduced decode differs from them.
The reduced decode goes as far as the bundle's input spec allows (`jpeg_draft_margin`), or `--margin` input sides
Recorded as jpeg_decode_BUNDLE_KIND (KIND: the CPU's int8 kind), or as --record NAME.
Goal (4000x3000): predict >= 4x faster, >= 99.5% top-1 agreement per artifact, every melanoma alert kept.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmarks.common import (
    DATA,
    RESULTS,
    RUNS,
    cpu_kind_record_name,
    decode_inference_limit,
    record,
    require_data,
    runtime_images_per_second,
)
from edgelesion import Classifier
from edgelesion.export.parity import predict_oriented
from edgelesion.fileio import read_json, write_text
from edgelesion.images import IMAGE_SUFFIXES
from edgelesion.infer.runtimes import predict_in_batches

SIZES = {"1024x768": (1024, 768), "4000x3000": (4000, 3000)}
ROUNDS = 3  # predict runs of each path, taking turns


def reencoded(files: list[Path], size: tuple[int, int]) -> list[Path]:
    """`files` upscaled to `size` and saved as JPEG (quality 90) once, under runs/benchmarks/jpeg-decode."""
    folder = RUNS / "jpeg-decode" / f"{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / f"{f.parent.name.replace(' ', '_')}__{f.stem}.jpg" for f in files]
    for source, target in tqdm(list(zip(files, targets)), desc=f"re-encoding at {size[0]}x{size[1]}", unit="img"):
        if not target.exists():
            Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(target, quality=90)
    return targets


def decode_seconds(classifiers: dict[str, Classifier], files: list[Path]) -> dict[str, tuple[np.ndarray, float]]:
    """Every file's model input by each classifier, and the median decode + resize time per image on this thread
    (the classifiers take turns file by file, so a busier moment of the machine falls on both)."""
    pixels: dict[str, list] = {name: [] for name in classifiers}
    times: dict[str, list] = {name: [] for name in classifiers}
    for f in files:
        for name, classifier in classifiers.items():
            start = time.perf_counter()
            pixels[name].append(classifier.pixels(f))
            times[name].append(time.perf_counter() - start)
    return {name: (np.stack(pixels[name]), float(np.median(times[name]))) for name in classifiers}


def predict_throughput(
    classifiers: dict[str, Classifier], files: list[Path], rounds: int = ROUNDS
) -> dict[str, list[float]]:
    """Images/s of predict_many (decoding in threads ahead of inference), as `edgelesion predict` runs it, for each
    classifier in turn, `rounds` times."""
    speeds: dict[str, list[float]] = {name: [] for name in classifiers}
    for _ in range(rounds):
        for name, classifier in classifiers.items():
            start = time.perf_counter()
            for _ in classifier.predict_many(files, batch_size=32):
                pass
            speeds[name].append(len(files) / (time.perf_counter() - start))
    return speeds


def compare(bundle: Path, files: list[Path], margin: int | None) -> dict:
    """Full against reduced decoding of `files` with every artifact of `bundle` (reduced to `margin` input sides,
    None: as the bundle says)."""
    artifacts = list(read_json(bundle / "bundle.json")["artifacts"])
    reduced = Classifier.load(bundle, "int8.tflite", jpeg_draft=True, jpeg_draft_margin=margin)
    full = Classifier.load(bundle, "int8.tflite", jpeg_draft=False)
    decoded = decode_seconds({"full": full, "reduced": reduced}, files)
    (full_pixels, full_seconds), (reduced_pixels, reduced_seconds) = decoded["full"], decoded["reduced"]
    speeds = predict_throughput({"full": full, "reduced": reduced}, files)
    reduced_size = reduced.decoded(files[0]).size
    factor = full.decoded(files[0]).width // reduced_size[0]
    box_pixels = np.stack([full.pixels(full.decoded(f).reduce(factor)) for f in files]) if factor > 1 else None
    result = {
        "images": len(files),
        "jpeg_draft_margin": reduced.preprocessing.jpeg_draft_margin,
        "reduction": factor,
        "decoded_size_reduced": list(reduced_size),
        "decode_resize_ms_median": {"full": full_seconds * 1e3, "reduced": reduced_seconds * 1e3},
        "decode_speedup": full_seconds / reduced_seconds,
        "predict_images_per_second": {path: float(np.median(v)) for path, v in speeds.items()},
        "predict_images_per_second_rounds": speeds,
        # each round's full and reduced runs are back to back: the median of their ratios
        "predict_speedup": float(np.median(np.divide(speeds["reduced"], speeds["full"]))),
        "artifacts": {},
    }
    for name in artifacts:
        classifier = Classifier.load(bundle, name)
        predict = partial(predict_oriented, partial(predict_in_batches, classifier.runner))
        full_probabilities, reduced_probabilities = predict(full_pixels), predict(reduced_pixels)
        agree = partial(agreement, full_probabilities, images=len(files), alert=classifier.alert_rule)
        result["artifacts"][name] = agree(reduced_probabilities)
        if box_pixels is not None:
            close = classifier.needs_full_decode(reduced_probabilities)  # as predict decides again
            answered = np.where(close[:, None], full_probabilities, reduced_probabilities)
            result["artifacts"][name]["rechecked"] = {
                **agree(answered),
                "margin": classifier.recheck_margin,
                "alert_margin_log_odds": classifier.alert_recheck_margin,
                "decided_again": float(close[: len(files)].mean()),
                "decided_again_8_orientations": float(close.mean()),
            }
            floor = agree(predict(box_pixels))
            result["artifacts"][name]["box_reduced_full_decode"] = floor
    decided_again = result["artifacts"]["int8.tflite"].get("rechecked", {}).get("decided_again", 0.0)
    runtime_ips = runtime_images_per_second(full.runner, full_pixels)
    limits = {
        "full": decode_inference_limit(full_seconds, runtime_ips),
        "reduced": decode_inference_limit(
            reduced_seconds + decided_again * full_seconds, runtime_ips, inferences=1 + decided_again
        ),
    }
    result["limit"] = {
        "images_per_second": limits,
        "speedup": limits["reduced"] / limits["full"],
        "int8_tflite_images_per_second": runtime_ips,
        "share_of_limit": {path: result["predict_images_per_second"][path] / limits[path] for path in limits},
    }
    return result


def agreement(a: np.ndarray, b: np.ndarray, images: int, alert: tuple[int, float] | None = None) -> dict[str, float]:
    """Top-1 agreement and the largest probability difference of two predict_oriented results of `images` images:
    on the images as they are (predict_oriented's first orientation) and over all 8; melanoma alert agreement too,
    given `alert` (class index, threshold)."""
    as_is = slice(0, images)
    result = {
        "top1_agreement": float((a[as_is].argmax(1) == b[as_is].argmax(1)).mean()),
        "max_probability_difference": float(np.abs(a[as_is] - b[as_is]).max()),
        "top1_agreement_8_orientations": float((a.argmax(1) == b.argmax(1)).mean()),
    }
    if alert is not None:
        index, threshold = alert
        same = (a[:, index] >= threshold) == (b[:, index] >= threshold)
        result |= {"alert_agreement": float(same[as_is].mean()), "alert_agreement_8_orientations": float(same.mean())}
    return result


def agreement_text(a: dict[str, float]) -> str:
    """'99.3% (99.21%), 0.041, alerts 99.0% (99.08%)': top-1 agreement as they are (over 8 orientations), largest
    probability difference, melanoma alert agreement (where the artifact has an alert)."""
    text = (
        f"{a['top1_agreement']:.1%} ({a['top1_agreement_8_orientations']:.2%}), {a['max_probability_difference']:.3f}"
    )
    if "alert_agreement" in a:
        text += f", alerts {a['alert_agreement']:.1%} ({a['alert_agreement_8_orientations']:.2%})"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="a bundle made by 'edgelesion export'")
    parser.add_argument("--images", type=int, default=300, help="shared images to re-encode (default 300)")
    parser.add_argument(
        "--margin",
        type=int,
        help="decode reduced to no less than this many input sides (default: the bundle's jpeg_draft_margin)",
    )
    parser.add_argument("--record", help="name of the record in benchmarks/results (default jpeg_decode_BUNDLE_KIND)")
    args = parser.parse_args()
    require_data()
    everything = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    sample = everything[:: max(1, len(everything) // args.images)][: args.images]  # spread over every class
    results = {tag: compare(args.bundle, reencoded(sample, size), args.margin) for tag, size in SIZES.items()}
    name = args.record or cpu_kind_record_name("jpeg_decode_" + args.bundle.resolve().name.replace("-", "_"))
    record(name, {"bundle": args.bundle.name, "sizes": results})
    rows = [
        "| photo size | decoded (reduced; margin) | decode + resize ms, full / reduced | predict img/s, full / reduced "
        "| predict speed-up | the limit these costs allow, img/s full / reduced (its speed-up) | per artifact: top-1 agreement (images as they are; over 8 orientations), max prob diff "
        "(as they are), melanoma alert agreement (same) | as `predict` answers, close answers decided from the full decode: agreement (same "
        "columns), share decided again | the floor: the full decode box-reduced before resizing, against it "
        "resized directly (same columns) |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for tag, r in results.items():
        ms, ips, limit = r["decode_resize_ms_median"], r["predict_images_per_second"], r["limit"]
        reduced = "; ".join(f"{name} {agreement_text(a)}" for name, a in r["artifacts"].items())
        rechecked = (
            "; ".join(
                f"{name} {agreement_text(a['rechecked'])}, {a['rechecked']['decided_again_8_orientations']:.1%}"
                for name, a in r["artifacts"].items()
                if "rechecked" in a
            )
            or "not reduced"
        )
        floor = (
            "; ".join(
                f"{name} {agreement_text(a['box_reduced_full_decode'])}"
                for name, a in r["artifacts"].items()
                if "box_reduced_full_decode" in a
            )
            or "not reduced"
        )
        rows.append(
            f"| {tag} ({r['images']} images) | {r['decoded_size_reduced'][0]}x{r['decoded_size_reduced'][1]}; "
            f"{r['jpeg_draft_margin']} "
            f"| {ms['full']:.1f} / {ms['reduced']:.1f} | {ips['full']:.1f} / {ips['reduced']:.1f} "
            f"| {r['predict_speedup']:.1f}x | {limit['images_per_second']['full']:.1f} / "
            f"{limit['images_per_second']['reduced']:.1f} ({limit['speedup']:.1f}x) | {reduced} | {rechecked} | {floor} |"
        )
    write_text(RESULTS / f"{name}.md", "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
