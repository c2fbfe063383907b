"""benchmark.md and the charts of a benchmark: accuracy against latency, and the latency distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from edgelesion.bench.op_profile import PROFILED_CALLS
from edgelesion.fileio import write_text
from edgelesion.metrics import format_estimate
from edgelesion.plots import reliability_curves_chart, save_figure
from edgelesion.provenance import int8_instructions
from edgelesion.source_figures import format_within_source


def _interval(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "n/a"
    ci = entry["ci95"]
    return f"{entry['value']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _alert(alert: dict[str, Any] | None) -> str:
    if alert is None:
        return "n/a"
    return (
        f"{format_estimate(alert['sensitivity'])} / {format_estimate(alert['specificity'])} "
        f"at p >= {alert['threshold']:.3f}"
    )


def markdown_table(result: dict[str, Any], label: str = "") -> list[str]:
    """One row per artifact: accuracy first, then latency, throughput, size, load time and memory."""
    cores = next(iter(result["artifacts"].values()))["all_cores"]
    rows = [
        f"| artifact | runtime | balanced accuracy [95% CI] | melanoma alert: sensitivity / specificity "
        f"[95% CI] | melanoma sensitivity, arg-max [95% CI] "
        f"| Δ balanced accuracy vs baseline [paired 95% CI] | Δ melanoma sensitivity | top-1 agreement "
        f"| expected calibration error | median / p90 / p99 ms, 1 thread | median ms, {cores} threads "
        f"| img/s (batch) | size MB | load s | memory added MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in result["artifacts"].items():
        one = a["latency_1_thread"]
        diff = a.get("difference_from_baseline")
        rows.append(
            f"| {label + ' ' if label else ''}{name} | {a['runtime']} | {format_estimate(a['balanced_accuracy'])} | "
            f"{_alert(a.get('melanoma_alert'))} | {format_estimate(a['melanoma_sensitivity'] or {})} | "
            f"{_interval(diff['delta_balanced_accuracy']) if diff else 'baseline'} | "
            f"{_interval(diff['delta_melanoma_sensitivity']) if diff else 'baseline'} | "
            f"{a['top1_agreement_with_baseline']:.3f} | {a['calibration']['expected_calibration_error']:.3f} | "
            f"{one['median_ms']:.2f} / {one['p90_ms']:.2f} / {one['p99_ms']:.2f} | "
            f"{a[f'latency_{cores}_threads']['median_ms']:.2f} | {a['throughput_images_per_second']:.0f} | "
            f"{a['size_bytes'] / 1e6:.2f} | {a['load_seconds']:.2f} | {a['peak_memory_added_mb']:.0f} |"
        )
    return rows


def efficiency_lines(result: dict[str, Any]) -> list[str]:
    """How close each artifact gets to this machine's measured peak at 1 thread: float artifacts against the
    float32 matmul peak, int8 ones against the int8 one; and whether int8 is faster than float32 here, and why."""
    flops, peak = result["model_flops_per_image"], result["machine_peak"]
    int8_peak = peak.get("int8", {}).get("1_thread_gops")
    flags = result["provenance"]["machine"].get("cpu_flags", [])
    lines = [f"CPU int8 instructions: {int8_instructions(flags)}.", ""]
    if not flops or not peak.get("1_thread_gflops"):
        return lines + ["FLOPs or the machine peak are unavailable: no efficiency figure."]
    lines += [
        f"Model: {flops / 1e6:.0f} MFLOPs per image. Machine peaks at 1 thread (all cores): float32 matmul "
        f"(numpy) {peak['1_thread_gflops']:.1f} ({peak['all_cores_gflops']:.1f}) GFLOP/s; int8 matmul "
        + (
            f"({peak['int8']['runtime']}) {int8_peak:.1f} ({peak['int8']['all_cores_gops']:.1f}) GOP/s"
            if int8_peak
            else f"not measured ({peak.get('int8', {}).get('error', 'unavailable')})"
        )
        + ".",
        "",
    ]
    for name, a in result["artifacts"].items():
        achieved = flops / (a["latency_1_thread"]["median_ms"] / 1000) / 1e9
        reference = int8_peak if "int8" in name else peak["1_thread_gflops"]
        lines.append(
            f"- {name}: {achieved:.1f} G(FL)OP/s at 1 thread"
            + (
                f" = {achieved / reference:.0%} of the {'int8' if 'int8' in name else 'float32'} peak"
                if reference
                else ""
            )
        )
    for runtime in ("tflite", "onnx"):
        int8, float32 = result["artifacts"].get(f"int8.{runtime}"), result["artifacts"].get(f"float32.{runtime}")
        if int8 and float32:
            ratio = float32["latency_1_thread"]["median_ms"] / int8["latency_1_thread"]["median_ms"]
            spread = _process_spread(int8, float32)
            lines.append(
                f"- int8.{runtime} is {ratio:.2f}x the speed of float32.{runtime} at 1 thread"
                + ("" if ratio > 1.05 else f": not faster on this CPU ({int8_instructions(flags)})")
                + spread
            )
    return lines


def _process_spread(int8: dict[str, Any], float32: dict[str, Any]) -> str:
    """' (each the median of N fresh processes: the range of their medians)' where the 1-thread latency was timed
    in more than one process."""
    ms = [a["latency_1_thread"].get("process_medians_ms", []) for a in (int8, float32)]
    if min(len(m) for m in ms) < 2:
        return ""
    return (
        f" (each the median of {len(ms[0])} fresh processes: int8 {min(ms[0]):.2f}-{max(ms[0]):.2f} ms, "
        f"float32 {min(ms[1]):.2f}-{max(ms[1]):.2f} ms)"
    )


def op_time_lines(result: dict[str, Any], shown: int = 5) -> list[str]:
    """Where each .onnx artifact's time goes by operator type (onnxruntime's profiler), and what LiteRT lacks."""
    lines = []
    for name, a in result["artifacts"].items():
        shares = a.get("op_time_shares_1_thread")
        if shares:
            top = list(shares.items())[:shown]
            rest = 1 - sum(share for _, share in top)
            lines.append(
                f"- {name}: "
                + ", ".join(f"{op} {share:.0%}" for op, share in top)
                + (f", other {rest:.0%}" if rest >= 0.005 else "")
            )
    if any(name.endswith(".tflite") for name in result["artifacts"]):
        lines.append(
            "- .tflite files: LiteRT runs the whole graph as one XNNPACK node and has no per-operator "
            "profiler in Python."
        )
    return (
        [f"Time by operator at 1 thread (onnxruntime's profiler, {PROFILED_CALLS} single-image calls):", *lines, ""]
        if lines
        else []
    )


def validation_gap_lines(result: dict[str, Any]) -> list[str]:
    """On an external folder: each model's balanced accuracy there beside its validation figure, and the gap."""
    if not result.get("external_data"):
        return []
    lines = [
        "## External folder against the validation split",
        "",
        "The same models on the export's validation split and on this folder. A folder from another source or "
        "period shows shifts that no same-distribution split can see.",
        "",
        "| model | balanced accuracy, validation split | balanced accuracy, this folder | gap |",
        "|---|---:|---:|---:|",
    ]
    for name, a in result["artifacts"].items():
        figures = (a["validation_balanced_accuracy"], a["balanced_accuracy"]["value"], a["gap_to_validation"])
        lines.append(
            f"| {name} | "
            + " | ".join("n/a" if x is None else f"{x:{'+' if i == 2 else ''}.3f}" for i, x in enumerate(figures))
            + " |"
        )
    return lines + [""]


def within_source_lines(result: dict[str, Any]) -> list[str]:
    """Each artifact's figures within every source beside the pooled ones, where sources are known."""
    scored = {name: a["within_source"] for name, a in result["artifacts"].items() if a.get("within_source")}
    if not scored:
        return []
    lines = [
        "## Within each source",
        "",
        "Where class and source go together, pooled figures reward a model that learned the source; these are "
        "what a new clinic can expect.",
        "",
    ]
    for name, figures in scored.items():
        lines += [f"{name}:", "```", format_within_source(figures), "```"]
    return lines + [""]


def write_report(result: dict[str, Any], out: Path) -> None:
    """benchmark.md, accuracy_vs_latency.png, latency_distribution.png and reliability.png into `out`."""
    lines = [
        f"# Benchmark of {result['bundle']}",
        "",
        f"Evaluation set: {result['evaluation_set']}; baseline: {result['baseline']}; balanced accuracy over "
        f"{len(result['scored_classes'])} classes. Machine: {result['provenance']['machine']['cpu']}, "
        f"{result['provenance']['machine']['cores']} cores.",
        "",
        *markdown_table(result),
        "",
        *efficiency_lines(result),
        "",
        *op_time_lines(result),
        *validation_gap_lines(result),
        *within_source_lines(result),
    ]
    write_text(out / "benchmark.md", "\n".join(lines))
    accuracy_latency_chart({"": result}, out / "accuracy_vs_latency.png")
    reliability_curves_chart(
        {
            name: (a["calibration"]["bins"], a["calibration"]["expected_calibration_error"])
            for name, a in result["artifacts"].items()
        },
        out / "reliability.png",
        f"Calibration on {result['evaluation_set']}",
    )
    figure, axis = plt.subplots(figsize=(8, 0.5 * len(result["artifacts"]) + 1.5))
    names = list(result["artifacts"])
    axis.boxplot([result["artifacts"][n]["latency_1_thread"]["times_ms"] for n in names], vert=False, showfliers=True)
    axis.set_yticks(range(1, len(names) + 1), names)
    axis.set_xscale("log")
    axis.set_xlabel("single-image latency, 1 thread (ms, log scale)")
    axis.set_title("Latency distribution")
    save_figure(figure, out / "latency_distribution.png")


def accuracy_latency_chart(results: dict[str, dict[str, Any]], target: Path) -> None:
    """Balanced accuracy against median 1-thread latency: one point per artifact (and bundle)."""
    figure, axis = plt.subplots(figsize=(8, 5))
    for label, result in results.items():
        for name, a in result["artifacts"].items():
            bal = a["balanced_accuracy"]
            if bal["value"] is None or bal["ci95"] is None:  # no class with enough images to score
                continue
            x = a["latency_1_thread"]["median_ms"]
            axis.errorbar(
                x,
                bal["value"],
                yerr=[[bal["value"] - bal["ci95"][0]], [bal["ci95"][1] - bal["value"]]],
                fmt="o",
                capsize=3,
                label=f"{label} {name} ({a['runtime']})".strip(),
            )
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axis.legend(fontsize=7, loc="best")
    axis.set_xlabel("median single-image latency, 1 thread (ms, log scale)")
    axis.set_ylabel("balanced accuracy (95% CI)")
    axis.set_title("Accuracy against latency")
    save_figure(figure, target)


def write_comparison(results: dict[str, dict[str, Any]], out: Path) -> None:
    """One table and one chart for several bundles."""
    lines = ["# Comparison", ""]
    for label, result in results.items():
        lines += [f"## {label}", "", *markdown_table(result, label), ""]
    write_text(out / "comparison.md", "\n".join(lines))
    accuracy_latency_chart(results, out / "comparison_accuracy_vs_latency.png")
