"""Where an .onnx artifact's time goes: onnxruntime's own profiler, summed by operator type.

LiteRT has no counterpart here: its Python interpreter runs a whole graph as one XNNPACK node and offers no
per-operator profile.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgelesion.infer.runtimes import OnnxRunner

PROFILED_CALLS = 30  # single-image calls profiled, after one warm-up call


def onnx_op_time_shares(
    path: str | Path, image: np.ndarray, *, runs: int = PROFILED_CALLS, threads: int = 1
) -> dict[str, float]:
    """Each operator type's share of kernel time over `runs` single-image calls, largest first.

    Operator types are those of the graph onnxruntime runs after its optimisations (fused nodes keep their
    fused name, such as QLinearConv or FusedConv); the shares sum to 1.
    """
    with tempfile.TemporaryDirectory() as scratch:
        runner = OnnxRunner(path, threads=threads, profile_prefix=str(Path(scratch) / "profile"))
        for _ in range(runs + 1):
            runner.predict(image[None])
        events = json.loads(Path(runner.session.end_profiling()).read_text())
    model_runs = sorted(
        (e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    warmed = model_runs[0][0] + model_runs[0][1] if model_runs else 0  # the first call is a warm-up: left out
    microseconds: dict[str, float] = defaultdict(float)
    for event in events:
        if (
            event.get("cat") == "Node"
            and event.get("name", "").endswith("_kernel_time")
            and event.get("ts", 0) >= warmed
        ):
            microseconds[event["args"]["op_name"]] += event["dur"]
    total = sum(microseconds.values())
    if not total:
        return {}
    return {op: us / total for op, us in sorted(microseconds.items(), key=lambda item: -item[1])}
