"""Reading a bundle back: bundle.json, each artifact checked against its sha256, the input spec.

Light (no TensorFlow, no scikit-learn): inference and the benchmark harness both use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgelesion.errors import EdgelesionError
from edgelesion.fileio import sha256_file
from edgelesion.preprocessing import Preprocessing

SUPPORTED_SCHEMA = 2


def read_bundle(bundle_dir: Path) -> dict[str, Any]:
    """bundle.json of `bundle_dir`, refused clearly when missing, unreadable or of another schema."""
    manifest = bundle_dir / "bundle.json"
    if not manifest.is_file():
        raise EdgelesionError(f"{bundle_dir} is not an edgelesion bundle (no bundle.json): "
                              "make one with 'edgelesion export RUN --out DIR'")
    try:
        bundle = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EdgelesionError(f"{manifest} is not valid JSON ({exc}): export the bundle again") from exc
    if bundle.get("schema_version") != SUPPORTED_SCHEMA:
        raise EdgelesionError(f"{manifest} has bundle schema {bundle.get('schema_version')}; this edgelesion "
                              f"reads schema {SUPPORTED_SCHEMA}: export the bundle again with this version")
    return bundle


def verified_artifact(bundle_dir: Path, bundle: dict[str, Any], artifact: str) -> Path:
    """The path of `artifact`, after checking that bundle.json lists it and the file matches its sha256."""
    if artifact not in bundle["artifacts"]:
        raise EdgelesionError(f"{bundle_dir} has no {artifact}: choose one of {', '.join(bundle['artifacts'])}")
    path = bundle_dir / artifact
    if not path.is_file():
        raise EdgelesionError(f"{path} is missing although bundle.json lists it: copy the whole bundle folder")
    if sha256_file(path) != bundle["artifacts"][artifact]["sha256"]:
        raise EdgelesionError(f"{path} does not match its sha256 in bundle.json: the file is damaged or was "
                              "changed; copy it again from the original bundle")
    return path


def bundle_preprocessing(bundle: dict[str, Any], artifact: str | None = None) -> Preprocessing:
    """The input resizing of `artifact` (every artifact of a bundle shares it), as a Preprocessing."""
    entry = bundle["artifacts"][artifact] if artifact else next(iter(bundle["artifacts"].values()))
    resize = entry["input"]["resize"]
    return Preprocessing(image_size=resize["size"][0], resize_method=resize["method"])
