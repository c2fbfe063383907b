"""Mixed-precision training: refused where the hardware lacks it, the head in float32, exported files float32."""

from __future__ import annotations

import numpy as np
import pytest

from edgelesion.errors import EdgelesionError
from edgelesion.export.exporting import export_run
from edgelesion.export.options import ExportOptions
from edgelesion.fileio import read_json
from edgelesion.infer.runtimes import litert_interpreter
from edgelesion.preprocessing import Preprocessing
from edgelesion.provenance import cpu_flags
from edgelesion.train import precision, training
from edgelesion.train.config import TrainConfig
from edgelesion.train.runs import RunDir

TINY = TrainConfig(
    model="seed-simple",
    epochs=2,
    batch_size=8,
    min_support=2,
    rebalance="none",
    preprocessing=Preprocessing(image_size=24),
    precision="mixed_bfloat16",
)
HAS_BF16 = any(flag in cpu_flags() for flag in precision.BF16_CPU_FLAGS)


def test_a_machine_without_the_instructions_refuses_before_making_anything(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ["avx2", "fma"])
    monkeypatch.setattr(precision, "_gpu_capabilities", list)
    with pytest.raises(EdgelesionError, match="avx512_bf16 or amx_bf16"):
        training.train(dataset_dir, tmp_path / "run", TINY, progress=False)
    with pytest.raises(EdgelesionError, match="GPU of compute capability 7.0"):
        precision.check_precision("mixed_float16")
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(precision, "_gpu_capabilities", lambda: [(8, 0)])  # an A100 runs both
    precision.check_precision("mixed_bfloat16")
    precision.check_precision("mixed_float16")


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16)")
def test_bfloat16_training_keeps_the_head_float32_and_exports_float32_files(dataset_dir, tmp_path):
    from edgelesion._tf import keras
    from edgelesion.train.evaluation import predict
    from edgelesion.train.models import HEAD

    run = RunDir(tmp_path / "run")
    training.train(dataset_dir, run.root, TINY, progress=False)
    assert keras.mixed_precision.global_policy().name == "float32"  # the policy does not outlive training
    trained = keras.models.load_model(run.best_model)
    computes = {layer.name: layer.compute_dtype for layer in trained.layers}
    assert computes[HEAD] == "float32" and "bfloat16" in computes.values()
    copy = precision.float32_copy(trained, TINY)
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(copy.get_weights(), trained.get_weights()))
    pixels = np.random.default_rng(0).integers(0, 255, (8, 24, 24, 3), np.uint8)
    assert np.abs(predict(copy, pixels) - predict(trained, pixels)).max() < 0.05  # bfloat16 keeps 8 bits

    bundle = tmp_path / "bundle"
    export_run(run.root, bundle, ExportOptions(artifacts=("float32.tflite",)), progress=False)  # parity checked
    assert read_json(bundle / "bundle.json")["artifacts"]["float32.tflite"]["parity"]["vs_float"]
    tensors = litert_interpreter(model_path=str(bundle / "float32.tflite")).get_tensor_details()
    assert {np.dtype(t["dtype"]).name for t in tensors} <= {"float32", "int32"}  # no bfloat16 left in the file


def test_a_resumed_float16_run_keeps_its_loss_scale(tmp_path):
    from edgelesion._tf import keras

    with precision.precision_policy("mixed_float16"):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
        model.optimizer.build(model.trainable_variables)  # as training builds it before its first save
        precision.restore_loss_scale(model, {"scale": 128.0, "good_steps": 7})  # as some steps would leave it
        saved = precision.loss_scale_state(model)
        model.save(tmp_path / "model.keras")
        restored = keras.models.load_model(tmp_path / "model.keras")
        assert precision.loss_scale_state(restored) != saved  # what a .keras file alone gives back
        precision.restore_loss_scale(restored, saved)
    assert saved == {"scale": 128.0, "good_steps": 7} and precision.loss_scale_state(restored) == saved
