"""Packaging: `import edgelesion` stays light (TensorFlow loads only in the modules that train), and the wheel
ships the package alone and predicts in an environment without TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = ["-c", str(REPO / "constraints.txt")]


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


def _pip(*args: str, python: Path | None = None) -> subprocess.CompletedProcess:
    """This interpreter's pip, acting on `python`'s environment when given (a venv made without pip of its own)."""
    target = [] if python is None else ["--python", str(python)]
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *target, *args]
    return subprocess.run(command, capture_output=True, check=False, text=True, timeout=600)


def _filled_wheel_cache(pytestconfig: pytest.Config, tmp_path: Path) -> Path:
    """A folder holding wheels of the base dependencies and the build backend, kept between runs in pytest's cache:
    filled from the package index on the first run (or after constraints.txt changes), read offline after."""
    cache = getattr(pytestconfig, "cache", None)
    folder = tmp_path / "wheels" if cache is None else cache.mkdir("base-install-wheels")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    download = ["download", "--only-binary", ":all:", "--dest", str(folder), *CONSTRAINTS, *needed]
    if _pip(*download, "--no-index", "--find-links", str(folder)).returncode != 0:  # not all there yet
        fetched = _pip(*download)
        if fetched.returncode != 0:
            pytest.fail(
                f"the base install's wheels are not all in {folder} and pip could not download them (this needs a "
                f"package index once; later runs are offline):\n{fetched.stderr[-2000:]}"
            )
    return folder


def _source_copy(target: Path) -> Path:
    """The repository without its environments and build leftovers: a stale build/ folder cannot reach the wheel."""
    leftovers = {
        ".git",
        ".venv",
        "build",
        "runs",
        "export",
        ".pytest_cache",
        ".hypothesis",
        ".ruff_cache",
        ".mypy_cache",
    }

    def ignored(folder: str, names: list[str]) -> list[str]:
        top = Path(folder) == REPO
        return [n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (top and n in leftovers)]

    return Path(shutil.copytree(REPO, target, ignore=ignored))


def test_the_wheel_ships_only_the_package_and_installs_alone_to_predict_without_tensorflow(
    bundle_dir, trained_run, tmp_path, pytestconfig
):
    """Built and installed without network from the wheel cache. The build backend comes from that cache too
    (build isolation): a new venv's own setuptools (65 in Python 3.11) cannot read the project's license field."""
    offline = ["--no-index", "--find-links", str(_filled_wheel_cache(pytestconfig, tmp_path))]
    built = _pip(
        "wheel", "--quiet", "--no-deps", *offline, "-w", str(tmp_path / "dist"), str(_source_copy(tmp_path / "src"))
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("edgelesion-*.whl")
    shipped = [name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name]
    assert "edgelesion/py.typed" in shipped
    # no tests, benchmarks, demo, data or images: the package's modules and its type marker only
    assert [
        name for name in shipped if not (name.startswith("edgelesion/") and name.endswith((".py", "/py.typed")))
    ] == []

    venv = tmp_path / "venv"  # no --system-site-packages: it sees nothing of this environment
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = _pip("install", "--quiet", *offline, *CONSTRAINTS, str(wheel), python=python)
    assert installed.returncode == 0, installed.stderr[-2000:]
    tensorflow = subprocess.run([python, "-c", "import tensorflow"], capture_output=True, check=False, text=True)
    assert tensorflow.returncode != 0 and "No module named 'tensorflow'" in tensorflow.stderr

    image = min((trained_run.parent / "data").rglob("*.jpg"))
    for artifact in ("int8.tflite", "float32.onnx"):  # LiteRT and onnxruntime
        command = [
            venv / "bin" / "edgelesion",
            "predict",
            bundle_dir,
            image,
            "--artifact",
            artifact,
            "--format",
            "json",
        ]
        result = subprocess.run(command, capture_output=True, check=False, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        answer = json.loads(result.stdout)
        (row,) = answer["results"]
        assert row["error"] is None and row["label"] in answer["classes"] and row["path"] == str(image)


@pytest.mark.parametrize("what", ["tensorflow", "litert"])
def test_native_library_notices_are_dropped_unless_verbose(bundle_dir, what):
    code = {
        "tensorflow": "import edgelesion._tf",
        "litert": "import numpy as np\n"
        "from edgelesion.infer.runtimes import LiteRTRunner\n"
        f"runner = LiteRTRunner({str(bundle_dir / 'float32.tflite')!r})\n"
        "runner.predict(np.zeros((1, *runner.input['shape'][1:]), np.uint8))\n",
    }[what]
    # oneDNN announces itself only on CPUs it enables by default; absl's line precedes any native log line
    notices = {"tensorflow": ("oneDNN", "absl::InitializeLog"), "litert": ("XNNPACK",)}[what]

    def stderr(**env: str) -> str:
        environment = {"PATH": "/usr/bin:/bin", **env}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, check=False, text=True, timeout=120, env=environment
        )
        assert result.returncode == 0, result.stderr
        return result.stderr

    assert stderr() == ""
    verbose = stderr(EDGELESION_VERBOSE="1")
    assert any(notice in verbose for notice in notices), verbose  # the notices are still there to be dropped
