"""`import edgelesion` stays light: TensorFlow loads only in the modules that train."""

from __future__ import annotations

import subprocess
import sys


def test_import_edgelesion_does_not_import_tensorflow():
    code = (
        "import sys, edgelesion, edgelesion.images, edgelesion.preprocessing, edgelesion.cli\n"
        "heavy = [m for m in ('tensorflow', 'tf_keras', 'Augmentor') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_training_modules_select_keras_2():
    code = (
        "import edgelesion.train.models, tensorflow as tf\n"
        "assert tf.keras.__name__.startswith('tf_keras'), tf.keras.__name__\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
