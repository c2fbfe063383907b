"""The static GPU-delegate check of each .tflite file: TFLite's analyzer, its report read, its limits recorded."""

from __future__ import annotations

import json

import pytest

from edgelesion.export import gpu_compatibility
from edgelesion.export.gpu_compatibility import (
    analyzer_refuses_a_flex_op,
    analyzer_report,
    gpu_delegate_check,
    gpu_delegate_verdict,
    parse_report,
)

# How an analyzer that checks ops reports a refused one: tensorflow/lite/python/analyzer_wrapper/model_analyzer.cc
# wrote each reason under its op, then a line per subgraph (the reason's wording here is illustrative). TF 2.21's
# analyzer no longer writes these lines, so no file can give them here.
REFUSING_REPORT = """=== TFLite ModelAnalyzer ===

Subgraph#0 main(T#0) -> [T#4]
  Op#0 FULLY_CONNECTED(T#0, T#1, T#-1) -> [T#2]
  Op#1 FlexCumprod(T#2, T#3[-1]) -> [T#4]
GPU COMPATIBILITY WARNING: Not supported custom op FlexCumprod
  Op#2 SOFTMAX(T#4) -> [T#5]

GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 with TFLite runtime version N

Tensors of Subgraph#0
  T#0(x) shape_signature:[-1, 8], type:FLOAT32
"""


def test_tf_2_21_analyzer_calls_even_a_flex_op_compatible_so_no_verdict_is_recorded():
    """When this fails, the installed TensorFlow's analyzer checks ops again: its verdicts are then recorded."""
    assert not analyzer_refuses_a_flex_op()


def test_the_report_of_a_refused_op_names_it_and_a_compatible_report_names_none(tmp_path):
    assert parse_report(REFUSING_REPORT) == {
        "compatible": False,
        "incompatible_ops": [
            {"subgraph": 0, "node": 1, "op": "FlexCumprod", "reason": "Not supported custom op FlexCumprod"}
        ],
    }
    with pytest.raises(ValueError, match="no verdict and ends: Failed to mmap the given model buffer"):
        parse_report(analyzer_report(b"not a model"))


def test_float16_lite0_is_compatible_by_the_analyzer_and_its_report_is_read(monkeypatch):
    """The recommended recipe's float16 file, as TFLite's analyzer reads it (ops, not weights, matter: random ones)."""
    from dataclasses import replace

    from edgelesion.export.tflite_export import convert_float16
    from edgelesion.train.config import TrainConfig
    from edgelesion.train.models.registry import create_model

    recipe = TrainConfig.for_model("efficientnet-lite0")
    model = create_model("efficientnet-lite0", 3, replace(recipe.preprocessing, image_size=32))
    report = analyzer_report(convert_float16(model))
    assert "DEPTHWISE_CONV_2D" in report  # the whole graph was read
    assert parse_report(report) == {"compatible": True, "incompatible_ops": []}


def test_every_tflite_file_of_a_bundle_records_the_check_and_its_model_card_shows_it(bundle_dir):
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    assert "## GPU delegate (a static check, not a run on a phone)" in card
    for name, entry in bundle["artifacts"].items():
        if not name.endswith(".tflite"):
            assert "gpu_delegate" not in entry
            continue
        check = entry["gpu_delegate"]
        assert check["check"].startswith("static: TFLite's Analyzer with gpu_compatibility=True (TF 2.21")
        assert check == gpu_delegate_check(bundle_dir / name)
        assert f"| `{name}` | {gpu_delegate_verdict(check)} |" in card
    float16 = bundle["artifacts"]["float16.tflite"]["gpu_delegate"]
    assert float16["compatible"] is None and "checks no op" in float16["not_checked"]  # TF 2.21 (above)


def test_where_the_analyzer_checks_ops_a_bundle_file_gets_its_verdict(bundle_dir, monkeypatch):
    monkeypatch.setattr(gpu_compatibility, "analyzer_refuses_a_flex_op", lambda: True)
    for name in ("float16.tflite", "int8.tflite"):
        assert gpu_delegate_check(bundle_dir / name) == {
            "compatible": True,
            "incompatible_ops": [],
            "check": gpu_compatibility.check_description(),
        }
    monkeypatch.setattr(gpu_compatibility, "analyzer_report", lambda content: REFUSING_REPORT)
    refused = gpu_delegate_check(bundle_dir / "float16.tflite")
    assert gpu_delegate_verdict(refused) == "NOT compatible: FlexCumprod (node 1): Not supported custom op FlexCumprod"


def test_a_file_the_analyzer_cannot_check_is_recorded_as_not_checked_without_failing(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_compatibility, "analyzer_refuses_a_flex_op", lambda: True)
    (tmp_path / "broken.tflite").write_bytes(b"not a model")
    entry = gpu_delegate_check(tmp_path / "broken.tflite")
    assert entry["compatible"] is None and entry["incompatible_ops"] is None
    assert entry["not_checked"].endswith("Failed to mmap the given model buffer.") and str(tmp_path) not in str(entry)

    def crash(content: bytes) -> str:
        raise RuntimeError("analyzer crashed")

    monkeypatch.setattr(gpu_compatibility, "analyzer_report", crash)
    assert (
        gpu_delegate_check(tmp_path / "broken.tflite")["not_checked"]
        == "the analyzer could not check it: analyzer crashed"
    )
