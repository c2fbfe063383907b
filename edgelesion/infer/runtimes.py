"""Run an exported artifact on its CPU runtime: LiteRT for .tflite, onnxruntime for .onnx.

Both take HxWx3 uint8 RGB pixels at the model's input size and return class probabilities;
this module never imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgelesion.errors import EdgelesionError
from edgelesion.quiet import native_stderr_dropped


class Runner(Protocol):
    """A loaded artifact: uint8 pixels in (N x H x W x 3), probabilities out (N x classes)."""

    labels: list[str] | None  # the class names the file itself carries, in output order (None when it carries none)

    def predict(self, pixels: np.ndarray) -> np.ndarray: ...


def _packed_labels(tflite: Path) -> list[str] | None:
    """The labels file packed in a .tflite file's metadata (a zip appended to the flatbuffer), if it has one."""
    try:
        with zipfile.ZipFile(tflite) as archive:
            return archive.read("labels.txt").decode("utf-8").splitlines()
    except (zipfile.BadZipFile, KeyError):
        return None


def litert_interpreter(**options: Any) -> Any:
    """A LiteRT interpreter (ai_edge_litert's Interpreter(**options)), made without its delegate notice."""
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_dropped():  # LiteRT announces its XNNPACK delegate when it applies it
        return Interpreter(**options)


class LiteRTRunner:
    """A .tflite file on the LiteRT interpreter (XNNPACK CPU delegate, as on phones)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = threads or os.cpu_count() or 1
        self.interpreter = litert_interpreter(model_path=str(self.path), num_threads=self.threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch: int | None = None
        self.labels = _packed_labels(self.path)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of uint8 images."""
        if self.batch != len(pixels):
            self.interpreter.resize_tensor_input(self.input["index"], [len(pixels), *self.input["shape"][1:]])
            with native_stderr_dropped():  # and again on an allocation that applies it
                self.interpreter.allocate_tensors()
            self.batch = len(pixels)
        # uint8 inputs take camera pixels as they are (export checks scale 1/255, zero point 0)
        self.interpreter.set_tensor(self.input["index"], pixels.astype(self.input["dtype"]))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output["quantization"]
        if scale:
            out = (out.astype(np.float32) - zero_point) * scale
        return out.astype(np.float32)


class OnnxRunner:
    """An .onnx file on onnxruntime's CPU execution provider."""

    def __init__(self, path: str | Path, threads: int | None = None, profile_prefix: str | None = None) -> None:
        """`profile_prefix`: turn on onnxruntime's profiler, writing its JSON trace to PREFIX_DATE.json."""
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime picks (all cores)
        options.inter_op_num_threads = 1
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        labels = self.session.get_modelmeta().custom_metadata_map.get("edgelesion_labels")  # metadata_props
        self.labels = None if labels is None else json.loads(labels)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of uint8 images."""
        return self.session.run(None, {self.input_name: pixels.astype(np.float32)})[0].astype(np.float32)


def open_runner(path: str | Path, threads: int | None = None) -> Runner:
    """The runner for `path`, chosen by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise EdgelesionError(f"artifact {path} does not exist")
    if path.suffix == ".tflite":
        return LiteRTRunner(path, threads)
    if path.suffix == ".onnx":
        return OnnxRunner(path, threads)
    raise EdgelesionError(f"{path}: unknown artifact type {path.suffix!r}; expected .tflite or .onnx")


def predict_in_batches(runner: Runner, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Probabilities for many images, `batch_size` at a time."""
    return np.concatenate([runner.predict(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)])


def top_two_margin(probabilities: np.ndarray) -> np.ndarray:
    """Each row's highest probability minus its second highest (0: a tie, which arg-max decides by class order)."""
    top_two = np.partition(probabilities, -2, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def log_odds(probability: np.ndarray | float) -> np.ndarray:
    """log(p / (1 - p)) in float64, finite at 0 and 1 (p clipped to [1e-7, 1 - 1e-7])."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)
