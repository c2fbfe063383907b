"""Training from the decoded-image cache against holding the dataset in memory: peak memory by dataset size, and
epoch throughput.

    .venv/bin/python -m benchmarks.large_datasets throughput --rounds 3
    .venv/bin/python -m benchmarks.large_datasets decodes
    .venv/bin/python -m benchmarks.large_datasets memory --images 2000 10000 40000 --baseline-checkout ../old

`throughput` trains Lite0 (the recipe) on the shared set's training split and times whole-network epochs, the two
pipelines alternating in one process on the same model: batches read from the memory-mapped cache, and batches
gathered from the whole split held as one tensor. Each round runs both on the
same epoch (the same order and augmentation); the ratio is paired by round.

`decodes` counts the files decoded by a 5-fold `cv` on the shared set with an empty cache, then by a `train` on the
same folder (seed-simple, one epoch at 64 px: the count does not depend on the model).

`memory` runs `edgelesion train --model efficientnet-lite0 --epochs 2 --head-epochs 1` on archives of N images (the
shared images re-encoded at 600x450 with a small random crop and brightness change, made once under
runs/benchmarks/archive-N) and samples the process's RssAnon (its own memory, not the page cache a memory map fills)
every 0.2 s from start to end, with an empty image cache (so the decode is part of it); the process is the first the
kernel's OOM killer takes, so a pipeline that outgrows the machine ends as its point ("did not finish"). With --baseline-checkout (a
checkout of the commit before the cache: `git worktree add ../old f839e7d`, with the audit fix 8ed78dd cherry-picked so
it can read archives whose copies carry three labels), the same command of that checkout too; each point records its
checkout's commit. --baseline-name and --baseline-env make another baseline, for example glibc's mmap threshold fixed
(an experiment not adopted, docs/experiments.md): `--baseline-checkout . --baseline-only --baseline-name "image
cache, mmap threshold fixed at 4 MiB" --baseline-env MALLOC_MMAP_THRESHOLD_=4194304`.
Records benchmarks/results/large_datasets_KIND.{json,md} and large_datasets_KIND/peak_memory.png; each point is kept
as it finishes, and a rerun replaces only the points it measures.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from benchmarks.common import RESULTS, RUNS, cpu_kind_record_name, markdown_table, record, require_data, write_table
from edgelesion.fileio import atomic_path, read_json
from edgelesion.images import IMAGE_SUFFIXES

ARCHIVE_SIZE = (600, 450)
BEFORE_THE_CACHE = "in memory (before the cache)"
SAMPLE_SECONDS = 0.2


def archive(images: int) -> Path:
    """runs/benchmarks/archive-N: `images` re-encodings of the shared images, made once (resumable)."""
    folder = RUNS / f"archive-{images}"
    sources = sorted(p for p in require_data().rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)

    def make(i: int) -> None:
        source = sources[i % len(sources)]
        target = folder / source.parent.name / f"{i:06d}_{source.stem}.jpg"
        if target.exists():
            return
        rng = np.random.default_rng(i)
        with Image.open(source) as image:
            rgb = image.convert("RGB")
        share = rng.uniform(0.9, 1.0)
        width, height = rgb.size
        w, h = int(width * share), int(height * share)
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        changed = rgb.crop((left, top, left + w, top + h)).resize(ARCHIVE_SIZE, Image.Resampling.BICUBIC)
        changed = ImageEnhance.Brightness(changed).enhance(rng.uniform(0.95, 1.05))
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            changed.save(tmp, format="JPEG", quality=90)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(make, range(images)))
    return folder


def peak_anonymous_memory(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run `command`; its peak RssAnon (bytes, sampled), peak VmHWM, wall and CPU seconds, exit code and RssAnon by
    second."""
    start, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_anon, hwm = 0, 0
    trace: dict[int, int] = {}  # whole seconds since the start: the highest RssAnon sampled in that second
    # stderr to a file, not a pipe: a pipe read only at the end fills with progress lines and stalls the command
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        # the OOM killer's first choice, should it run the machine out (its children inherit this)
        Path(f"/proc/{process.pid}/oom_score_adj").write_text("1000")
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                break
            fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.endswith("kB")}
            anon = int(fields.get("RssAnon", 0)) * 1024
            peak_anon = max(peak_anon, anon)
            second = int(time.perf_counter() - start)
            trace[second] = max(trace.get(second, 0), anon)
            hwm = max(hwm, int(fields.get("VmHWM", 0)) * 1024)
            time.sleep(SAMPLE_SECONDS)
        process.wait()
        errors.seek(0)
        tail = errors.read()[-600:]
    return {
        "peak_rss_anon_bytes": peak_anon,
        "peak_rss_bytes": hwm,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": sum(
            getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f) - getattr(children, f)
            for f in ("ru_utime", "ru_stime")
        ),
        "returncode": process.returncode,
        "stderr_tail": tail if process.returncode else "",
        "rss_anon_trace": [[second, anon] for second, anon in sorted(trace.items())],
    }


def memory_point(images: int, checkout: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    """`edgelesion train` of `checkout` on the N-image archive, with an empty cache of its own (and `extra_env`)."""
    data = archive(images)
    with tempfile.TemporaryDirectory(dir=RUNS) as scratch:
        env = {**os.environ, **extra_env, "EDGELESION_CACHE": str(Path(scratch) / "cache"), "PYTHONPATH": str(checkout)}
        command = [sys.executable, "-m", "edgelesion.cli", "train", "--model", "efficientnet-lite0"]
        command += ["--epochs", "2", "--head-epochs", "1", "--data", str(data), "--out", str(Path(scratch) / "run")]
        print(f"{checkout.name}: training on {images:,} images")
        result = peak_anonymous_memory(command, env, checkout)
        result["environment"] = extra_env
        result["commit"] = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        cache = Path(scratch) / "cache"
        result["cache_bytes"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) if cache.is_dir() else 0
    return result


def throughput(rounds: int) -> dict[str, Any]:
    """Whole-network epoch seconds of both pipelines, alternating, on the same model and epochs."""
    from edgelesion._tf import tf
    from edgelesion.data.rebalance import class_weights
    from edgelesion.train import training
    from edgelesion.train.config import TrainConfig
    from edgelesion.train.models import create_model

    config = TrainConfig.for_model("efficientnet-lite0")
    data = training.prepare_data(require_data(), config, progress=False)
    x, y = data.train.images, data.train.labels
    weights = class_weights(y, len(data.dataset.classes)) if config.rebalance.value == "class-weights" else None
    model = create_model(config.model, len(data.dataset.classes), config.preprocessing, pretrained=config.pretrained)
    training.set_trainable(model, config, head_only=False)
    training.compile_model(model, config, tf.keras.optimizers.Adam(config.learning_rate))
    in_memory = tf.constant(np.asarray(x))  # the split as one tensor, as training held it before the cache
    readers = {"cache": training.image_reader, "in memory": lambda rows: lambda index: tf.gather(in_memory, index)}
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    y_tensor = tf.constant(y)
    for round_number in range(rounds):
        epoch = config.head_epochs + round_number
        order = list(readers) if round_number % 2 == 0 else list(reversed(readers))
        for name in order:
            training.image_reader = readers[name]
            training.configure_epoch(model, config, epoch)
            start = time.perf_counter()
            training.fit_one_epoch(model, x, y_tensor, epoch, config, weights, progress=False)
            seconds[name].append(time.perf_counter() - start)
            print(
                f"round {round_number + 1}: {name} {seconds[name][-1]:.1f} s ({len(x) / seconds[name][-1]:.1f} img/s)"
            )
    ratios = [memory / cache for memory, cache in zip(seconds["in memory"], seconds["cache"])]
    return {
        "train_images": len(x),
        "epoch_seconds": seconds,
        "images_per_second": {name: [len(x) / s for s in values] for name, values in seconds.items()},
        "cache_vs_memory_throughput_ratio": {"per_round": ratios, "median": statistics.median(ratios)},
    }


def decodes() -> dict[str, Any]:
    """Files decoded by `cv` over 5 folds with an empty cache, and by a `train` of the same data after it."""
    from edgelesion.data import image_cache
    from edgelesion.preprocessing import Preprocessing
    from edgelesion.train.config import TrainConfig
    from edgelesion.train.cross_validation import cross_validate
    from edgelesion.train.training import train

    decoded: list[Path] = []
    decode = image_cache._decode
    image_cache._decode = lambda path, preprocessing: decoded.append(path) or decode(path, preprocessing)
    config = TrainConfig(model="seed-simple", epochs=1, rebalance="class-weights", preprocessing=Preprocessing(64))
    data = require_data()
    with tempfile.TemporaryDirectory(dir=RUNS) as scratch:
        os.environ["EDGELESION_CACHE"] = str(Path(scratch) / "cache")
        cross_validate(data, Path(scratch) / "cv", config, progress=False)
        by_cv = list(decoded)
        train(data, Path(scratch) / "run", config, progress=False)
    return {
        "image_files": sum(1 for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES),
        "cv_5_folds_decoded": len(by_cv),
        "cv_5_folds_distinct_files_decoded": len(set(by_cv)),
        "train_after_cv_decoded": len(decoded) - len(by_cv),
        "how_unchanged_files_are_known": "each file's path, size, modification and status change times (os.stat)",
    }


def peak_memory_chart(points: dict[str, dict[str, Any]], target: Path) -> None:
    """Peak RssAnon (GB) against images, one line per pipeline; a failed run is marked where it stopped."""
    import matplotlib.pyplot as plt

    from edgelesion.plots import save_figure

    figure, axis = plt.subplots(figsize=(6, 4))
    for pipeline, by_size in points.items():
        sizes = sorted(by_size, key=int)
        peaks = [by_size[n]["peak_rss_anon_bytes"] / 1e9 for n in sizes]
        axis.plot([int(n) for n in sizes], peaks, marker="o", label=pipeline)
        for n, peak in zip(sizes, peaks):
            if by_size[n]["returncode"]:
                axis.annotate("did not finish", (int(n), peak), textcoords="offset points", xytext=(4, 4))
    axis.set_xscale("log")
    axis.set_xlabel("images in the dataset")
    axis.set_ylabel("peak RssAnon of edgelesion train (GB)")
    axis.set_title("Lite0, 2 epochs: memory by dataset size")
    axis.legend()
    save_figure(figure, target)


def memory_over_time_chart(points: dict[str, dict[str, Any]], target: Path) -> None:
    """RssAnon (GB) against minutes, one panel per dataset size, one line per pipeline."""
    import matplotlib.pyplot as plt

    from edgelesion.plots import save_figure

    sizes = sorted({n for by_size in points.values() for n in by_size}, key=int)
    figure, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.6), squeeze=False)
    for axis, n in zip(axes[0], sizes):
        for colour, (pipeline, by_size) in enumerate(points.items()):  # one colour per pipeline in every panel
            trace = by_size.get(n, {}).get("rss_anon_trace")
            if trace:
                minutes, gigabytes = [t / 60 for t, _ in trace], [anon / 1e9 for _, anon in trace]
                axis.plot(minutes, gigabytes, color=f"C{colour}", label=pipeline, lw=0.8)
        axis.set_title(f"{int(n):,} images")
        axis.set_xlabel("minutes")
        axis.set_ylabel("RssAnon (GB)")
    axes[0][0].legend(fontsize=7)
    save_figure(figure, target)


def table(results: dict[str, Any]) -> list[str]:
    """The record's markdown."""
    lines = ["# Training from the image cache against the dataset in memory", ""]
    run = results.get("throughput")
    if run:
        lines += [
            f"Throughput, whole-network Lite0 epochs on the shared set's {run['train_images']:,} training images, "
            "alternating in one process:",
            "",
            *markdown_table(
                ["pipeline", "images/s by round", "median"],
                [
                    [name, ", ".join(f"{v:.1f}" for v in values), f"{statistics.median(values):.1f}"]
                    for name, values in run["images_per_second"].items()
                ],
                "lrr",
            ),
            "",
            f"Cache against memory, paired by round: "
            f"{', '.join(f'{r:.3f}' for r in run['cache_vs_memory_throughput_ratio']['per_round'])} "
            f"(median {run['cache_vs_memory_throughput_ratio']['median']:.3f}).",
            "",
        ]
    counted = results.get("decodes")
    if counted:
        lines += [
            f"Decoding: a 5-fold `edgelesion cv` on the shared set's {counted['image_files']:,} files, empty cache, "
            f"decoded {counted['cv_5_folds_decoded']:,} files ({counted['cv_5_folds_distinct_files_decoded']:,} "
            f"distinct); a `train` after it decoded {counted['train_after_cv_decoded']:,}. Unchanged files are known "
            f"by {counted['how_unchanged_files_are_known']}.",
            "",
        ]
    memory = results.get("memory") or {}
    if memory:
        rows = []
        for pipeline, by_size in memory.items():
            for n in sorted(by_size, key=int):
                point = by_size[n]
                rows.append(
                    [
                        pipeline,
                        f"{int(n):,}",
                        f"{point['peak_rss_anon_bytes'] / 1e9:.2f}",
                        f"{point['peak_rss_bytes'] / 1e9:.2f}",
                        f"{point['seconds'] / 60:.1f}",
                        f"{point['cpu_seconds'] / 60:.1f}" if "cpu_seconds" in point else "",
                        f"{point['cache_bytes'] / 1e9:.2f}",
                        "finished" if not point["returncode"] else f"exit {point['returncode']}",
                    ]
                )
        lines += [
            "Peak memory of `edgelesion train --model efficientnet-lite0 --epochs 2 --head-epochs 1`, empty cache:",
            "",
            *markdown_table(
                [
                    "pipeline",
                    "images",
                    "peak RssAnon (GB)",
                    "peak RSS (GB)",
                    "minutes",
                    "CPU minutes",
                    "cache (GB)",
                    "run",
                ],
                rows,
                "lrrrrrrl",
            ),
            "",
            f"![peak memory]({cpu_kind_record_name('large_datasets')}/peak_memory.png)",
            "",
            f"![memory over time]({cpu_kind_record_name('large_datasets')}/memory_over_time.png)",
        ]
    return lines


def environment_pair(text: str) -> tuple[str, str]:
    """KEY=VALUE from the command line."""
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("measure", choices=["throughput", "memory", "decodes"])
    parser.add_argument("--rounds", type=int, default=3, help="throughput: epochs of each pipeline (default 3)")
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 10000, 40000], help="memory: dataset sizes")
    parser.add_argument(
        "--baseline-checkout", type=Path, help="memory: also run this checkout (the commit before the cache)"
    )
    parser.add_argument(
        "--baseline-name", default=BEFORE_THE_CACHE, help=f"memory: the baseline's pipeline name ({BEFORE_THE_CACHE!r})"
    )
    parser.add_argument(
        "--baseline-env",
        nargs="*",
        default=[],
        type=environment_pair,
        metavar="KEY=VALUE",
        help="memory: environment of the baseline's runs",
    )
    parser.add_argument("--baseline-only", action="store_true", help="memory: run only --baseline-checkout")
    args = parser.parse_args()
    name = cpu_kind_record_name("large_datasets")
    previous = RESULTS / f"{name}.json"
    results = {
        k: v
        for k, v in (read_json(previous) if previous.is_file() else {}).items()
        if k in ("throughput", "memory", "decodes")
    }
    if args.measure == "throughput":
        results["throughput"] = throughput(args.rounds)
    elif args.measure == "decodes":
        results["decodes"] = decodes()
    else:
        runs = {} if args.baseline_only else {"image cache": (Path(__file__).resolve().parent.parent, {})}
        if args.baseline_checkout:
            extra_env = dict(args.baseline_env)
            runs[args.baseline_name] = (args.baseline_checkout.resolve(), extra_env)
        memory = results.setdefault("memory", {})
        for images in args.images:
            for pipeline, (checkout, extra_env) in runs.items():
                memory.setdefault(pipeline, {})[str(images)] = memory_point(images, checkout, extra_env)
                record(name, results)  # each point kept as it finishes
        peak_memory_chart(memory, RESULTS / name / "peak_memory.png")
        memory_over_time_chart(memory, RESULTS / name / "memory_over_time.png")
    record(name, results)
    write_table(name, table(results))


if __name__ == "__main__":
    main()
