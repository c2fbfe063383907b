"""Reduced JPEG decoding (Pillow's draft mode) against a full decode, on dermatoscope-sized photos.

    .venv/bin/python -m benchmarks.jpeg_decode export/lite0-fold0 --images 300 [--margin 3]

The shared images are 180x180; users' photos are 1024x768 to 6000x4000. A sample of the shared images is
re-encoded (bicubic upscale, JPEG quality 90) at 1024x768 and 4000x3000 into runs/benchmarks/jpeg-decode
(git-ignored; decode cost depends on pixel count, not content). For each size:
- decode + resize time per image, one thread, full against reduced;
- `edgelesion predict`'s own throughput (Classifier.predict_many on int8.tflite, all cores), full against reduced;
- for every artifact of the bundle, top-1 agreement and the largest probability difference between the two, on
  the images as they are and over their 8 orientations (as the export judges parity: 8x the predictions, so
  one flipped image is not the whole margin);
- the same as `predict` answers: an answer from the reduced decode whose top two probabilities are within the
  classifier's recheck margin is decided from the full decode (emulated per view), and how many views that takes;
- the model's own floor under that agreement: where the decode is reduced (by a factor k), the full decode
  box-reduced by k in pixels before the same resize, against the full decode resized directly. Both are exact
  full-resolution pipelines that differ only in resampling order, as the reduced decode differs from them.
The reduced decode goes as far as the bundle's input spec allows (`jpeg_draft_margin`), or `--margin` input sides
(recorded as jpeg_decode_marginN, or as --record NAME).
Goal (4000x3000): predict >= 4x faster, >= 99.5% top-1 agreement per artifact.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from benchmarks.common import DATA, RESULTS, RUNS, record, require_data
from edgelesion import Classifier
from edgelesion.export.parity import predict_oriented
from edgelesion.fileio import read_json, write_text
from edgelesion.images import IMAGE_SUFFIXES
from edgelesion.infer.runtimes import predict_in_batches, top_two_margin

SIZES = {"1024x768": (1024, 768), "4000x3000": (4000, 3000)}


def reencoded(files: list[Path], size: tuple[int, int]) -> list[Path]:
    """`files` upscaled to `size` and saved as JPEG (quality 90) once, under runs/benchmarks/jpeg-decode."""
    folder = RUNS / "jpeg-decode" / f"{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / f"{f.parent.name.replace(' ', '_')}__{f.stem}.jpg" for f in files]
    for source, target in tqdm(list(zip(files, targets)), desc=f"re-encoding at {size[0]}x{size[1]}", unit="img"):
        if not target.exists():
            Image.open(source).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(target, quality=90)
    return targets


def decode_seconds(classifier: Classifier, files: list[Path]) -> tuple[np.ndarray, float]:
    """Every file's model input, and the median decode + resize time per image on this thread."""
    pixels, times = [], []
    for f in files:
        start = time.perf_counter()
        pixels.append(classifier.pixels(f))
        times.append(time.perf_counter() - start)
    return np.stack(pixels), float(np.median(times))


def predict_throughput(classifier: Classifier, files: list[Path]) -> float:
    """Images/s of predict_many (decoding in threads ahead of inference), as `edgelesion predict` runs it."""
    start = time.perf_counter()
    for _ in classifier.predict_many(files, batch_size=32):
        pass
    return len(files) / (time.perf_counter() - start)


def compare(bundle: Path, files: list[Path], margin: int | None) -> dict:
    """Full against reduced decoding of `files` with every artifact of `bundle` (reduced to `margin` input sides,
    None: as the bundle says)."""
    artifacts = list(read_json(bundle / "bundle.json")["artifacts"])
    reduced = Classifier.load(bundle, "int8.tflite", jpeg_draft=True, jpeg_draft_margin=margin)
    full = Classifier.load(bundle, "int8.tflite", jpeg_draft=False)
    reduced_pixels, reduced_ms = decode_seconds(reduced, files)
    full_pixels, full_ms = decode_seconds(full, files)
    reduced_size = reduced.decoded(files[0]).size
    factor = full.decoded(files[0]).width // reduced_size[0]
    box_pixels = np.stack([full.pixels(full.decoded(f).reduce(factor)) for f in files]) if factor > 1 else None
    result = {"images": len(files), "jpeg_draft_margin": reduced.preprocessing.jpeg_draft_margin, "reduction": factor,
              "decoded_size_reduced": list(reduced_size),
              "decode_resize_ms_median": {"full": full_ms * 1e3, "reduced": reduced_ms * 1e3},
              "decode_speedup": full_ms / reduced_ms,
              "predict_images_per_second": {"full": predict_throughput(full, files),
                                            "reduced": predict_throughput(reduced, files)},
              "artifacts": {}}
    result["predict_speedup"] = result["predict_images_per_second"]["reduced"] / result["predict_images_per_second"]["full"]
    for name in artifacts:
        runner = Classifier.load(bundle, name).runner
        predict = partial(predict_oriented, lambda view: predict_in_batches(runner, view))
        full_probabilities, reduced_probabilities = predict(full_pixels), predict(reduced_pixels)
        result["artifacts"][name] = agreement(full_probabilities, reduced_probabilities, len(files))
        if box_pixels is not None:
            close = top_two_margin(reduced_probabilities) < reduced.recheck_margin  # as Classifier decides again
            answered = np.where(close[:, None], full_probabilities, reduced_probabilities)
            result["artifacts"][name]["rechecked"] = {**agreement(full_probabilities, answered, len(files)),
                                                      "margin": reduced.recheck_margin,
                                                      "decided_again_8_orientations": float(close.mean())}
            floor = agreement(full_probabilities, predict(box_pixels), len(files))
            result["artifacts"][name]["box_reduced_full_decode"] = floor
    return result


def agreement(a: np.ndarray, b: np.ndarray, images: int) -> dict[str, float]:
    """Top-1 agreement and the largest probability difference of two predict_oriented results of `images` images:
    on the images as they are (predict_oriented's first orientation) and over all 8."""
    as_is = slice(0, images)
    return {"top1_agreement": float((a[as_is].argmax(1) == b[as_is].argmax(1)).mean()),
            "max_probability_difference": float(np.abs(a[as_is] - b[as_is]).max()),
            "top1_agreement_8_orientations": float((a.argmax(1) == b.argmax(1)).mean())}


def agreement_text(a: dict[str, float]) -> str:
    """'99.3% (99.21%), 0.041': agreement as they are (over 8 orientations), largest probability difference."""
    return f"{a['top1_agreement']:.1%} ({a['top1_agreement_8_orientations']:.2%}), {a['max_probability_difference']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="a bundle made by 'edgelesion export'")
    parser.add_argument("--images", type=int, default=300, help="shared images to re-encode (default 300)")
    parser.add_argument("--margin", type=int, help="decode reduced to no less than this many input sides "
                        "(default: the bundle's jpeg_draft_margin)")
    parser.add_argument("--record", help="name of the record in benchmarks/results (default jpeg_decode[_marginN])")
    args = parser.parse_args()
    require_data()
    everything = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    sample = everything[:: max(1, len(everything) // args.images)][: args.images]  # spread over every class
    results = {tag: compare(args.bundle, reencoded(sample, size), args.margin) for tag, size in SIZES.items()}
    name = args.record or ("jpeg_decode" if args.margin is None else f"jpeg_decode_margin{args.margin}")
    record(name, {"bundle": args.bundle.name, "sizes": results})
    rows = ["| photo size | decoded (reduced; margin) | decode + resize ms, full / reduced | predict img/s, full / reduced "
            "| predict speed-up | per artifact: top-1 agreement (images as they are; over 8 orientations), max prob diff "
            "(as they are) | as `predict` answers, close answers decided from the full decode: agreement (same "
            "columns), share decided again | the floor: the full decode box-reduced before resizing, against it "
            "resized directly (same columns) |", "|---|---|---:|---:|---:|---|---|---|"]
    for tag, r in results.items():
        ms, ips = r["decode_resize_ms_median"], r["predict_images_per_second"]
        reduced = "; ".join(f"{name} {agreement_text(a)}" for name, a in r["artifacts"].items())
        rechecked = "; ".join(f"{name} {agreement_text(a['rechecked'])}, {a['rechecked']['decided_again_8_orientations']:.1%}"
                              for name, a in r["artifacts"].items() if "rechecked" in a) or "not reduced"
        floor = "; ".join(f"{name} {agreement_text(a['box_reduced_full_decode'])}" for name, a in r["artifacts"].items()
                          if "box_reduced_full_decode" in a) or "not reduced"
        rows.append(f"| {tag} ({r['images']} images) | {r['decoded_size_reduced'][0]}x{r['decoded_size_reduced'][1]}; "
                    f"{r['jpeg_draft_margin']} "
                    f"| {ms['full']:.1f} / {ms['reduced']:.1f} | {ips['full']:.1f} / {ips['reduced']:.1f} "
                    f"| {r['predict_speedup']:.1f}x | {reduced} | {rechecked} | {floor} |")
    write_text(RESULTS / f"{name}.md", "\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
