"""Will a .tflite file run on a phone's GPU delegate? TFLite's static analyzer, asked and its report read."""

from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path
from typing import Any

# The analyzer prints each refused op's reason under that op's line, then a summary line per subgraph
# (tensorflow/lite/python/analyzer_wrapper/model_analyzer.cc).
_WARNING = "GPU COMPATIBILITY WARNING: "
_SUMMARY = _WARNING + "Subgraph#"  # the subgraph's line after its ops, naming no op
_COMPATIBLE = "Your model looks compatible with GPU delegate"
_SUBGRAPH = re.compile(r"^Subgraph#(\d+)\b")
_OP = re.compile(r"^\s+Op#(\d+) ([^(\s]+)\(")


def analyzer_report(model_content: bytes) -> str:
    """The text `tf.lite.experimental.Analyzer.analyze(..., gpu_compatibility=True)` prints for one model."""
    from edgelesion._tf import tf

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the analyzer returns nothing: Python prints the C++ report
        tf.lite.experimental.Analyzer.analyze(model_content=model_content, gpu_compatibility=True)
    return printed.getvalue()


def parse_report(text: str) -> dict[str, Any]:
    """The verdict of an analyzer report: `compatible`, and each op it refuses (subgraph, node, op, reason).

    Raises ValueError naming the report's last line when it holds no verdict (the file could not be read)."""
    refused, subgraph, op = [], None, None
    for line in text.splitlines():
        if match := _SUBGRAPH.match(line):
            subgraph, op = int(match[1]), None
        elif match := _OP.match(line):
            op = (int(match[1]), match[2])
        elif line.startswith(_WARNING) and not line.startswith(_SUMMARY) and op is not None:
            refused.append({"subgraph": subgraph, "node": op[0], "op": op[1], "reason": line[len(_WARNING) :]})
    flagged = any(line.startswith(_WARNING) for line in text.splitlines())
    if not flagged and _COMPATIBLE not in text:
        last = next((line for line in reversed(text.splitlines()) if line.strip()), "(no output)")
        raise ValueError(f"its report gives no verdict and ends: {last.strip()}")
    return {"compatible": not flagged, "incompatible_ops": refused}


@functools.cache
def analyzer_refuses_a_flex_op() -> bool:
    """Whether this TensorFlow's analyzer refuses a TensorFlow (Flex) op, which no GPU delegate runs.

    TF 2.21's analyzer no longer checks any op and calls every model compatible, so its verdict is only
    recorded where this canary shows the check at work."""
    from edgelesion._tf import tf
    from edgelesion.export.tflite_export import converted

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def cumulative_product(x: Any) -> Any:
        return tf.math.cumprod(x, axis=-1)  # no TFLite builtin: becomes FlexCumprod

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [cumulative_product.get_concrete_function()], cumulative_product
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    return not parse_report(analyzer_report(converted(converter)))["compatible"]


def check_description() -> str:
    """What the check is, for bundle.json and the model card."""
    from edgelesion._tf import tf

    return (
        f"static: TFLite's Analyzer with gpu_compatibility=True (TF {tf.__version__}); "
        "the delegate on a given phone may still differ"
    )


def gpu_delegate_check(path: Path) -> dict[str, Any]:
    """bundle.json's `gpu_delegate` entry of one .tflite file. Never raises: a file or a TensorFlow that cannot be
    checked is recorded as not checked (`compatible` null), with the reason."""
    entry: dict[str, Any] = {"compatible": None, "incompatible_ops": None, "check": check_description()}
    try:
        refuses_flex = analyzer_refuses_a_flex_op()
    except Exception as exc:  # noqa: BLE001 - a check that cannot run must not stop the export
        return {**entry, "not_checked": f"the analyzer's own check on a Flex-op model could not run: {exc}"}
    try:
        if not refuses_flex:
            return {
                **entry,
                "not_checked": "this TensorFlow's Analyzer checks no op: it calls even a model with a "
                "TensorFlow (Flex) op, which no GPU delegate runs, compatible",
            }
        # the file's bytes, not its path: a failure's reason then names no folder of this machine
        return {**entry, **parse_report(analyzer_report(path.read_bytes()))}
    except Exception as exc:  # noqa: BLE001 - a check that cannot run must not stop the export
        return {**entry, "not_checked": f"the analyzer could not check it: {exc}"}


def gpu_delegate_verdict(entry: dict[str, Any]) -> str:
    """One line for a `gpu_delegate` entry: compatible, the ops refused, or why it was not checked."""
    if entry["compatible"] is None:
        return f"not checked: {entry['not_checked']}"
    if entry["compatible"]:
        return "compatible"
    return "NOT compatible: " + "; ".join(
        f"{op['op']} (node {op['node']}): {op['reason']}" for op in entry["incompatible_ops"]
    )
