"""Reading a bundle back: bundle.json, each artifact checked against its sha256, the input spec.

Light (no TensorFlow, no scikit-learn): inference and the benchmark harness both use it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgelesion.errors import EdgelesionError
from edgelesion.fileio import sha256_file
from edgelesion.preprocessing import LEGACY_DRAFT_MARGIN, Preprocessing

SUPPORTED_SCHEMAS = (3, 4)  # 3: written before input.resize.centre_crop, every image resized whole
SELF_HASH_FIELD = "bundle_sha256"  # sha256 of bundle.json's own content less this field, computed last


def bundle_content_sha256(bundle: dict[str, Any]) -> str:
    """sha256 of a bundle manifest less its self-hash field, as canonical JSON (sorted keys, no spaces)."""
    content = {key: value for key, value in bundle.items() if key != SELF_HASH_FIELD}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sealed(bundle: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its self-hash added (values made JSON first, as bundle.json will hold them)."""
    content = json.loads(json.dumps(bundle, default=str))
    return {**content, SELF_HASH_FIELD: bundle_content_sha256(content)}


def read_bundle(bundle_dir: Path) -> dict[str, Any]:
    """bundle.json of `bundle_dir`, refused clearly when missing, unreadable or of another schema."""
    manifest = bundle_dir / "bundle.json"
    if not manifest.is_file():
        raise EdgelesionError(
            f"{bundle_dir} is not an edgelesion bundle (no bundle.json): "
            "make one with 'edgelesion export RUN --out DIR'"
        )
    try:
        bundle = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EdgelesionError(f"{manifest} is not valid JSON ({exc}): export the bundle again") from exc
    if bundle.get("schema_version") not in SUPPORTED_SCHEMAS:
        raise EdgelesionError(
            f"{manifest} has bundle schema {bundle.get('schema_version')}; this edgelesion reads schema "
            f"{' and '.join(map(str, SUPPORTED_SCHEMAS))}: export the bundle again with this version"
        )
    if bundle.get(SELF_HASH_FIELD) != bundle_content_sha256(bundle):
        raise EdgelesionError(
            f"{manifest} does not match its own sha256 ({SELF_HASH_FIELD}): it was edited or is "
            "damaged; copy the bundle again from the original"
        )
    labels_file = bundle_dir / "labels.txt"
    labels = labels_file.read_text(encoding="utf-8").splitlines() if labels_file.is_file() else None
    if labels != bundle["classes"] or bundle["output"]["classes"] != bundle["classes"]:
        raise EdgelesionError(
            f"{bundle_dir}: the class order disagrees: labels.txt lists {labels}, bundle.json's "
            f"classes are {bundle['classes']} and its output lists {bundle['output']['classes']}; "
            "every prediction would be mislabelled: copy the bundle again from the original"
        )
    return bundle


def labels_disagreement(path: Path, inside: list[str] | None, classes: list[str]) -> str | None:
    """Why an artifact file's own labels make it unusable with the bundle's `classes` (None when they agree or the
    file carries none)."""
    if inside is None or inside == classes:
        return None
    return (
        f"{path}: the labels inside the file {inside} disagree with the bundle's classes {classes}; every "
        "prediction would be mislabelled"
    )


def verified_artifact(bundle_dir: Path, bundle: dict[str, Any], artifact: str) -> Path:
    """The path of `artifact`, after checking that bundle.json lists it and the file matches its sha256."""
    if artifact not in bundle["artifacts"]:
        raise EdgelesionError(f"{bundle_dir} has no {artifact}: choose one of {', '.join(bundle['artifacts'])}")
    path = bundle_dir / artifact
    if not path.is_file():
        raise EdgelesionError(f"{path} is missing although bundle.json lists it: copy the whole bundle folder")
    if sha256_file(path) != bundle["artifacts"][artifact]["sha256"]:
        raise EdgelesionError(
            f"{path} does not match its sha256 in bundle.json: the file is damaged or was "
            "changed; copy it again from the original bundle"
        )
    return path


def bundle_preprocessing(bundle: dict[str, Any], artifact: str | None = None) -> Preprocessing:
    """The input resizing of `artifact` (every artifact of a bundle shares it), as a Preprocessing."""
    entry = bundle["artifacts"][artifact] if artifact else next(iter(bundle["artifacts"].values()))
    resize = entry["input"]["resize"]
    return Preprocessing(
        image_size=resize["size"][0],
        resize_method=resize["method"],
        centre_crop=resize.get("centre_crop", 1.0),  # bundles written before the crop existed resized whole images
        jpeg_draft=resize["jpeg_draft"],
        jpeg_draft_margin=resize.get("jpeg_draft_margin", LEGACY_DRAFT_MARGIN),
    )
