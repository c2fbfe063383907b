"""`edgelesion calibrate`: a new site's own melanoma alert threshold, in a new bundle, the original untouched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelesion import Classifier
from edgelesion.cli import main
from edgelesion.data.dataset import load_dataset
from edgelesion.errors import EdgelesionError
from edgelesion.export.site_calibration import MIN_MELANOMAS, MIN_OTHER_IMAGES, calibrate_bundle, sample_size_problem
from edgelesion.fileio import sha256_file
from edgelesion.infer.bundle_reader import bundle_preprocessing, read_bundle
from edgelesion.metrics import wilson_interval
from tests.conftest import CLASS_TINTS, synthetic_image


def write_site(root: Path, melanomas: int = MIN_MELANOMAS, nevi: int = MIN_OTHER_IMAGES) -> Path:
    """A site sample whose melanomas drift towards the nevus tint (another dermatoscope, other light), so the
    probabilities the bundle gives them spread out and the site's threshold is not the validation one."""
    rng = np.random.default_rng(7)
    (root / "melanoma").mkdir(parents=True)
    (root / "nevus").mkdir()
    melanoma, nevus = np.array(CLASS_TINTS["melanoma"]), np.array(CLASS_TINTS["nevus"])
    for i in range(melanomas):
        drift = 0.8 * i / melanomas
        tint = tuple(int(v) for v in (1 - drift) * melanoma + drift * nevus)
        synthetic_image(rng, tint).save(root / "melanoma" / f"site_{i:03d}.jpg", quality=95)
    for i in range(nevi):
        synthetic_image(rng, CLASS_TINTS["nevus"]).save(root / "nevus" / f"site_{i:03d}.jpg", quality=95)
    return root


def files_and_labels(site: Path) -> tuple[list[Path], np.ndarray]:
    files = sorted(site.rglob("*.jpg"))
    return files, np.array([path.parent.name == "melanoma" for path in files])


def digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): sha256_file(path) for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory) -> Path:
    return write_site(tmp_path_factory.mktemp("site") / "clinic-c")


@pytest.fixture(scope="module")
def calibrated(bundle_dir, site_dir, tmp_path_factory):
    """The bundle calibrated on the site sample, with the original's file digests before and after."""
    before = digest(bundle_dir)
    out = tmp_path_factory.mktemp("calibrated") / "clinics" / "tiny-clinic-c"  # one level deeper than the original
    manifest = calibrate_bundle(bundle_dir, site_dir, out, progress=False)
    return out, manifest, before, digest(bundle_dir)


def test_each_artifact_s_site_threshold_is_expected_to_reach_the_target_on_new_images(calibrated, site_dir):
    out, manifest, _, _ = calibrated
    files, is_melanoma = files_and_labels(site_dir)
    for name, entry in manifest["artifacts"].items():
        alert = entry["melanoma_alert"]
        clf = Classifier.load(out, name, jpeg_draft=False)
        scores = np.array([r.probabilities["melanoma"] for r in clf.predict_many(files)])
        caught = scores[is_melanoma] >= alert["threshold"]
        assert alert["rule"] == "site" and alert["target_sensitivity"] == alert["previous"]["target_sensitivity"]
        # at 30 melanomas and 0.90, the 3rd lowest melanoma score: a new melanoma passes it with probability
        # Beta(28, 3), mean 28/31 >= 0.90 (at the 4th, the sample's own 27/30, the mean is 27/31 = 0.87)
        assert alert["threshold"] == np.sort(scores[is_melanoma])[2], name
        expected = alert["expected_sensitivity"]
        assert expected["value"] == pytest.approx(28 / 31) and 28 / 31 >= alert["target_sensitivity"]
        assert expected["ci95"] == pytest.approx([0.779, 0.979], abs=1e-3) and expected["n"] == MIN_MELANOMAS
        site = alert["site"]
        assert site["sensitivity"] == wilson_interval(int(caught.sum()), MIN_MELANOMAS)
        spared = int((scores[~is_melanoma] < alert["threshold"]).sum())
        assert site["specificity"] == wilson_interval(spared, MIN_OTHER_IMAGES)
        assert site["specificity_by_lookalike"] == {"nevus": site["specificity"]}  # every other image is a nevus
        # what the threshold chosen on validation gives on this sample, beside it
        old = alert["previous"]["threshold"]
        assert alert["previous_on_site"]["threshold"] == old
        assert alert["previous_on_site"]["sensitivity"]["value"] == pytest.approx((scores[is_melanoma] >= old).mean())


def test_the_new_bundle_records_the_sample_and_keeps_everything_else(calibrated, bundle_dir, site_dir):
    out, manifest, _, _ = calibrated
    original = read_bundle(bundle_dir)
    assert read_bundle(out) == manifest  # sealed: its self-hash matches
    site = manifest["site_calibration"]
    sample = load_dataset(site_dir, bundle_preprocessing(original), classes=original["classes"], progress=False)
    assert site["sample"]["fingerprint"] == sample.fingerprint()
    assert site["sample"]["name"] == "clinic-c" and site["sample"]["per_class"] == {"melanoma": 30, "nevus": 60}
    assert (site["sample"]["melanomas"], site["sample"]["other_images"]) == (MIN_MELANOMAS, MIN_OTHER_IMAGES)
    assert site["calibrated_from"] == {"name": bundle_dir.name, "bundle_sha256": original["bundle_sha256"]}
    assert site["provenance"]["created"]
    # the run is found from the new folder where it was found from the original
    assert (out / manifest["source_run"]["relative_path"]).resolve() == (
        bundle_dir / original["source_run"]["relative_path"]
    ).resolve()
    changed = {"artifacts", "source_run", "site_calibration", "bundle_sha256"}
    assert {k: v for k, v in manifest.items() if k not in changed} == {
        k: v for k, v in original.items() if k not in changed
    }
    for name, entry in manifest["artifacts"].items():
        # the artifacts carry no threshold, so they are copied byte for byte: weights, graph and metadata unchanged
        assert sha256_file(out / name) == sha256_file(bundle_dir / name) == entry["sha256"]
        assert {k: v for k, v in entry.items() if k != "melanoma_alert"} == {
            k: v for k, v in original["artifacts"][name].items() if k != "melanoma_alert"
        }
        assert entry["melanoma_alert"]["previous"] == original["artifacts"][name]["melanoma_alert"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Site calibration: clinic-c" in card and site["sample"]["fingerprint"][:16] in card
    for entry in manifest["artifacts"].values():
        assert f"{entry['melanoma_alert']['threshold']:.4f}" in card
    assert (out / "labels.txt").read_text() == (bundle_dir / "labels.txt").read_text()


def test_the_original_bundle_is_left_byte_identical(calibrated):
    _, _, before, after = calibrated
    assert before == after and "bundle.json" in before and "MODEL_CARD.md" in before


def test_predict_and_benchmark_use_the_site_threshold(calibrated, bundle_dir, trained_run, site_dir, tmp_path):
    from edgelesion.bench.benchmarking import run_benchmark
    from tests.test_benchmarking import QUICK, run_without_keras_model

    out, manifest, _, _ = calibrated
    files, _ = files_and_labels(site_dir)
    new = manifest["artifacts"]["float32.onnx"]["melanoma_alert"]["threshold"]
    old = read_bundle(bundle_dir)["artifacts"]["float32.onnx"]["melanoma_alert"]["threshold"]
    args = ["predict", str(out), *map(str, files), "--artifact", "float32.onnx", "--full-decode", "--format", "json"]
    assert main([*args, "--out", str(tmp_path / "p.json")]) == 0
    predicted = json.loads((tmp_path / "p.json").read_text())
    assert predicted["melanoma_threshold"] == new != old
    rows = predicted["results"]
    assert all(row["melanoma_alert"] == (row["melanoma"] >= new) for row in rows)
    # the site's threshold decides some image the original's decided otherwise
    assert any((row["melanoma"] >= new) != (row["melanoma"] >= old) for row in rows)
    run = run_without_keras_model(trained_run, tmp_path / "run")
    result = run_benchmark(out, tmp_path / "bench", run_dir=run, config=QUICK, progress=False)
    for name, entry in manifest["artifacts"].items():
        assert result["artifacts"][name]["melanoma_alert"]["threshold"] == entry["melanoma_alert"]["threshold"]


def test_a_sample_too_small_is_refused_naming_the_counts_and_the_minimum(bundle_dir, tmp_path, capsys):
    site = write_site(tmp_path / "small", melanomas=MIN_MELANOMAS - 1)
    out = tmp_path / "out"
    assert main(["calibrate", str(bundle_dir), "--data", str(site), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert (
        "holds 29 melanoma images and 60 others" in error
        and "at least 30 melanoma images for a target sensitivity of 0.9, and 60 others" in error
    )
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    assert sample_size_problem(MIN_MELANOMAS, MIN_OTHER_IMAGES - 1, "melanoma", 0.9) is not None
    assert sample_size_problem(MIN_MELANOMAS, MIN_OTHER_IMAGES, "melanoma", 0.9) is None
    # 0.98: a threshold among n scores is expected to pass n / (n + 1) of new melanomas at most, so 49 are needed
    assert "at least 49 melanoma images for a target sensitivity of 0.98" in sample_size_problem(
        MIN_MELANOMAS, MIN_OTHER_IMAGES, "melanoma", 0.98
    )
    assert sample_size_problem(49, MIN_OTHER_IMAGES, "melanoma", 0.98) is None


def test_the_minimum_sample_holds_the_reason_it_states():
    # at 30 melanomas a sensitivity of 0.90 is known to a lower bound of 0.74; at 20, 0.70
    assert wilson_interval(27, MIN_MELANOMAS)["ci95"][0] >= 0.74 > wilson_interval(18, 20)["ci95"][0]
    low, high = wilson_interval(MIN_OTHER_IMAGES // 2, MIN_OTHER_IMAGES)["ci95"]
    assert 0.37 < low < 0.38 and 0.62 < high < 0.63


def test_an_existing_out_or_the_bundle_itself_is_refused_and_force_replaces_a_bundle(
    calibrated, bundle_dir, site_dir, tmp_path
):
    out, manifest, _, _ = calibrated
    with pytest.raises(EdgelesionError, match="already exists: choose another --out or replace it with --force"):
        calibrate_bundle(bundle_dir, site_dir, out, progress=False)
    for inside in (bundle_dir, bundle_dir / "clinic"):
        with pytest.raises(EdgelesionError, match="is the bundle being calibrated, or inside it"):
            calibrate_bundle(bundle_dir, site_dir, inside, force=True, progress=False)
    (tmp_path / "folder").mkdir()
    with pytest.raises(EdgelesionError, match="not an edgelesion bundle, so --force will not replace it"):
        calibrate_bundle(bundle_dir, site_dir, tmp_path / "folder", force=True, progress=False)
    replaced = tmp_path / "replaced"
    shutil.copytree(out, replaced)
    (replaced / "MODEL_CARD.md").write_text("stale")
    again = calibrate_bundle(bundle_dir, site_dir, replaced, force=True, progress=False)
    assert again["artifacts"] == manifest["artifacts"] and (replaced / "MODEL_CARD.md").read_text() != "stale"


def test_a_flat_sample_labelled_by_a_metadata_csv_gives_the_same_thresholds(calibrated, bundle_dir, site_dir, tmp_path):
    _, manifest, _, _ = calibrated
    flat = tmp_path / "flat"
    flat.mkdir()
    rows = []
    for path in sorted(site_dir.rglob("*.jpg")):
        shutil.copy(path, flat / f"{path.parent.name}_{path.name}")
        rows.append(f"{path.parent.name}_{path.stem},{path.parent.name}")
    (tmp_path / "labels.csv").write_text("image,diagnosis\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    args = ["calibrate", str(bundle_dir), "--data", str(flat), "--metadata", str(tmp_path / "labels.csv")]
    assert main([*args, "--label-column", "diagnosis", "--out", str(out)]) == 0
    flat_manifest = read_bundle(out)
    assert flat_manifest["site_calibration"]["sample"]["metadata_csv"] == "labels.csv"
    for name, entry in manifest["artifacts"].items():
        assert flat_manifest["artifacts"][name]["melanoma_alert"]["site"] == entry["melanoma_alert"]["site"]


def test_calibrate_is_on_the_export_face_and_needs_no_tensorflow():
    import edgelesion.export

    assert edgelesion.export.calibrate_bundle is calibrate_bundle
    code = "import sys; from edgelesion.export import calibrate_bundle; print('tensorflow' in sys.modules)"
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert answer.strip() == "False"
