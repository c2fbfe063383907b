"""The inference API and `edgelesion predict`: the training preprocessing, checked files, no TensorFlow."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgelesion import Classifier, FailedImage
from edgelesion.cli import main
from edgelesion.errors import EdgelesionError
from edgelesion.export.bundle import input_spec
from edgelesion.export.options import ARTIFACTS
from edgelesion.fileio import read_csv
from edgelesion.images import to_model_input
from edgelesion.infer.bundle_reader import bundle_preprocessing
from edgelesion.infer.runtimes import log_odds
from edgelesion.preprocessing import Preprocessing
from tests.conftest import rewrite_bundle


def validation_files(trained_run):
    data_dir = json.loads((trained_run / "config.json").read_text())["data_dir"]
    return [f"{data_dir}/{row['path']}" for row in read_csv(trained_run / "splits" / "val.csv")]


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_api_matches_the_keras_model_on_the_same_files(bundle_dir, trained_run, artifact):
    from edgelesion._tf import keras
    from edgelesion.data.dataset import load_dataset

    files = validation_files(trained_run)
    model = keras.models.load_model(trained_run / "best.keras")
    clf = Classifier.load(bundle_dir, artifact)
    pixels = load_dataset(
        json.loads((trained_run / "config.json").read_text())["data_dir"], clf.preprocessing, progress=False
    )
    by_path = {str(pixels.root / r.relpath): i for i, r in enumerate(pixels.records)}
    keras_probs = model.predict(pixels.images[[by_path[f] for f in files]].astype(np.float32), verbose=0)
    results = list(clf.predict_many(files, batch_size=4))
    api_probs = np.array([[r.probabilities[c] for c in clf.classes] for r in results])
    entry = json.loads((bundle_dir / "bundle.json").read_text())["artifacts"][artifact]
    agreement = (api_probs.argmax(1) == keras_probs.argmax(1)).mean()
    # the API must reproduce the export's own parity figures on the images as they are exactly
    as_is = entry["parity"]["vs_float"]["as_is"]
    assert agreement == pytest.approx(as_is["top1_agreement"])
    assert np.abs(api_probs - keras_probs).max() == pytest.approx(as_is["max_abs_prob_diff"], abs=1e-6)
    if entry["tolerance"]["max_prob_diff"] is not None:
        assert np.abs(api_probs - keras_probs).max() <= entry["tolerance"]["max_prob_diff"]
    assert [r.source for r in results] == files
    # the artifact's own alert threshold reaches its target sensitivity on the validation split it was chosen on
    alert = entry["melanoma_alert"]
    is_melanoma = np.array([Path(f).parent.name == "melanoma" for f in files])
    caught = api_probs[is_melanoma, clf.classes.index("melanoma")] >= alert["threshold"]
    assert caught.mean() >= alert["target_sensitivity"]
    assert caught.mean() == pytest.approx(alert["validation_sensitivity"]["value"])


def test_any_image_form_gives_the_training_input(bundle_dir, tmp_path):
    clf = Classifier.load(bundle_dir, "float32.onnx")
    Image.new("L", (50, 40), 90).save(tmp_path / "gray.png")
    assert (clf.pixels(tmp_path / "gray.png") == 90).all()
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert clf.pixels(tmp_path / "cmyk.jpg")[..., 0].mean() > 200
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (clf.pixels(tmp_path / "clear.png") == 255).all()
    upright = Image.new("RGB", (40, 20), (0, 0, 0))
    upright.paste((255, 255, 255), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    rotated = clf.pixels(tmp_path / "rotated.jpg")
    assert rotated[:16].mean() > 200 and rotated[16:].mean() < 50
    Image.new("RGB", (4000, 3000), (10, 20, 30)).save(tmp_path / "huge.png")
    assert clf.pixels(tmp_path / "huge.png").shape == (32, 32, 3)
    array = np.full((64, 48, 3), 7, np.uint8)
    assert clf.predict(array).probabilities == clf.predict(Image.fromarray(array)).probabilities
    assert sum(clf.predict(array).probabilities.values()) == pytest.approx(1.0, abs=1e-3)


def test_bad_inputs_get_clear_errors(bundle_dir, tmp_path):
    clf = Classifier.load(bundle_dir, "int8.tflite")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(EdgelesionError, match="broken.jpg: .*corrupt|broken.jpg: not a JPEG"):
        clf.predict(tmp_path / "broken.jpg")
    with pytest.raises(EdgelesionError, match="missing.jpg: cannot read file"):
        clf.predict(tmp_path / "missing.jpg")
    results = list(clf.predict_many([tmp_path / "broken.jpg", np.zeros((8, 8, 3), np.uint8)]))
    assert isinstance(results[0], FailedImage) and not isinstance(results[1], FailedImage)
    with pytest.raises(EdgelesionError, match="uint8"):
        clf.predict(np.zeros((8, 8, 3), np.float32))


def test_damaged_or_incomplete_bundles_are_refused(bundle_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    with open(copy / "int8.onnx", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(EdgelesionError, match="does not match its sha256"):
        Classifier.load(copy, "int8.onnx")
    size = (copy / "int8.tflite").stat().st_size
    with open(copy / "int8.tflite", "r+b") as handle:  # one byte changed, same size: only the hash can tell
        handle.seek(size // 2)
        byte = handle.read(1)
        handle.seek(size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert (copy / "int8.tflite").stat().st_size == size
    with pytest.raises(EdgelesionError, match="does not match its sha256"):
        Classifier.load(copy, "int8.tflite")
    (copy / "float16.tflite").unlink()
    with pytest.raises(EdgelesionError, match="float16.tflite is missing"):
        Classifier.load(copy, "float16.tflite")
    with pytest.raises(EdgelesionError, match="has no int4.tflite"):
        Classifier.load(copy, "int4.tflite")
    manifest = json.loads((copy / "bundle.json").read_text())
    reversed_classes = {**manifest, "classes": manifest["classes"][::-1]}
    (copy / "bundle.json").write_text(json.dumps(reversed_classes))  # edited by hand: its self-hash tells
    with pytest.raises(EdgelesionError, match="does not match its own sha256"):
        Classifier.load(copy, "float32.tflite")
    rewrite_bundle(copy, {**reversed_classes, "output": {**manifest["output"], "classes": manifest["classes"][::-1]}})
    with pytest.raises(
        EdgelesionError,
        match=r"the class order disagrees: labels.txt lists \['basal cell carcinoma', 'melanoma', 'nevus'\], "
        r"bundle.json's classes are \['nevus'",
    ):
        Classifier.load(copy, "float32.tflite")  # a consistent bundle.json, but labels.txt says otherwise
    (copy / "bundle.json").write_text(json.dumps({**manifest, "schema_version": manifest["schema_version"] + 1}))
    with pytest.raises(EdgelesionError, match=r"has bundle schema 5; this edgelesion reads schema 3 and 4:"):
        Classifier.load(copy, "float32.tflite")
    (copy / "bundle.json").write_text(json.dumps(manifest)[:-10])  # cut short, as by a full disk
    with pytest.raises(EdgelesionError, match="bundle.json is not valid JSON"):
        Classifier.load(copy, "float32.tflite")
    (copy / "bundle.json").unlink()
    with pytest.raises(EdgelesionError, match="no bundle.json"):
        Classifier.load(copy)


def test_every_artifact_file_carries_its_labels_mediapipe_names_them_and_a_file_that_disagrees_is_refused(
    bundle_dir, trained_run, tmp_path
):
    import mediapipe as mp
    import onnx
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision

    from edgelesion.export.bundle import ModelDescription
    from edgelesion.export.onnx_export import write_metadata
    from edgelesion.export.tflite_metadata import with_metadata
    from edgelesion.fileio import sha256_file

    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    classes = manifest["classes"]
    for name in ARTIFACTS:
        assert (
            manifest["artifacts"][name]["labels_inside"] and Classifier.load(bundle_dir, name).runner.labels == classes
        )
    for name in ("float32.onnx", "int8.onnx"):
        props = {p.key: p.value for p in onnx.load(str(bundle_dir / name)).metadata_props}
        assert json.loads(props["edgelesion_labels"]) == classes
        assert json.loads(props["edgelesion_input"]) == manifest["artifacts"][name]["input"]
        assert props["edgelesion_source_model_sha256"] == sha256_file(trained_run / "best.keras")
    pixels = Classifier.load(bundle_dir, "int8.tflite").pixels(validation_files(trained_run)[0])
    for name in ("int8.tflite", "float32.tflite"):  # float input works too: the metadata states its normalisation
        options = vision.ImageClassifierOptions(
            base_options=mp_tasks.BaseOptions(model_asset_path=str(bundle_dir / name)), max_results=-1
        )
        with vision.ImageClassifier.create_from_options(options) as mediapipe:
            categories = (
                mediapipe.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
                .classifications[0]
                .categories
            )
        assert sorted((c.index, c.category_name) for c in categories) == list(enumerate(classes)), name
    assert manifest["artifacts"]["int8.tflite"]["mediapipe"]["category_names"] == classes  # checked at export too

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    wrong = ModelDescription("int8.tflite", classes[::-1], Classifier.load(bundle_dir).preprocessing, "x")
    (copy / "int8.tflite").write_bytes(with_metadata((bundle_dir / "int8.tflite").read_bytes(), wrong))
    write_metadata(copy / "int8.onnx", {**props, "edgelesion_labels": json.dumps(classes[::-1])})
    for name in ("int8.tflite", "int8.onnx"):
        manifest["artifacts"][name]["sha256"] = sha256_file(copy / name)  # consistent checksums, wrong labels
    rewrite_bundle(copy, manifest)
    for name in ("int8.tflite", "int8.onnx"):
        with pytest.raises(
            EdgelesionError,
            match=rf"{name}: the labels inside the file \['nevus'.*disagree with "
            r"the bundle's classes \['basal cell carcinoma'",
        ):
            Classifier.load(copy, name)


def test_an_artifact_kept_with_keep_failed_warns_when_loaded(bundle_dir, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    Classifier.load(copy, "int8.onnx")
    assert "warning" not in capsys.readouterr().out
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["artifacts"]["int8.onnx"]["passed"] = False
    rewrite_bundle(copy, manifest)
    Classifier.load(copy, "int8.onnx")
    assert (
        "warning: int8.onnx missed its parity tolerance at export (kept with --keep-failed)" in capsys.readouterr().out
    )


def test_melanoma_alert_uses_the_bundle_threshold(bundle_dir):
    entry = json.loads((bundle_dir / "bundle.json").read_text())["artifacts"]["float32.onnx"]["melanoma_alert"]
    clf = Classifier.load(bundle_dir, "float32.onnx")
    below = np.zeros((32, 32, 3), np.uint8)
    result = clf.predict(below)
    assert result.melanoma_alert == (result.probabilities["melanoma"] >= entry["threshold"])
    assert clf.melanoma_threshold == entry["threshold"]  # each artifact's own threshold, from bundle.json
    clf.melanoma_threshold = result.probabilities["melanoma"]  # exactly at the threshold: an alert (>=)
    assert clf.predict(below).melanoma_alert is True
    clf.melanoma_threshold = result.probabilities["melanoma"] + 1e-6  # the alert follows the threshold it holds
    assert clf.predict(below).melanoma_alert is False


def test_predict_cli_writes_csv_and_json_with_a_row_per_input(bundle_dir, trained_run, tmp_path, capsys):
    files = validation_files(trained_run)[:3]
    (tmp_path / "bad.png").write_bytes(b"")
    inputs = [*files, str(tmp_path / "bad.png")]
    assert main(["predict", str(bundle_dir), *inputs, "--format", "csv", "--out", str(tmp_path / "p.csv")]) == 1
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert [r["path"] for r in rows] == inputs
    assert rows[-1]["error"].endswith("empty file (0 bytes)") and all(not r["error"] for r in rows[:-1])
    assert main(["predict", str(bundle_dir), *inputs, "--format", "json", "--out", str(tmp_path / "p.csv")]) == 2
    assert "already exists" in capsys.readouterr().err
    folder = tmp_path / "folder"
    (folder / "nested").mkdir(parents=True)
    for i, f in enumerate(files):
        shutil.copy(f, folder / "nested" / f"{i}.jpg")
    assert (
        main(
            [
                "predict",
                str(bundle_dir),
                str(folder),
                "--artifact",
                "int8.onnx",
                "--format",
                "json",
                "--out",
                str(tmp_path / "p.json"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "p.json").read_text())
    assert len(report["results"]) == 3 and report["artifact"] == "int8.onnx"
    # int8 outputs come in steps of 1/256, so with 3 classes the sum may be off by up to 3/512
    assert all(abs(sum(r[c] for c in report["classes"]) - 1) <= 3 / 512 for r in report["results"])


def test_a_folder_scan_answers_every_file_by_content_and_warns_on_tiny_images(bundle_dir, trained_run, tmp_path):
    folder = tmp_path / "odd"
    (folder / "sub").mkdir(parents=True)
    lesion = Image.open(validation_files(trained_run)[0])
    for name, fmt in (
        ("a.webp", "WEBP"),
        ("b.gif", "GIF"),
        ("c.tiff", "TIFF"),
        ("no_extension", "JPEG"),
        ("sub/d.bmp", "BMP"),
        ("png_named.jpg", "PNG"),
    ):
        lesion.save(folder / name, fmt)
    lesion.save(folder / "camera.jpg", "MPO", save_all=True, append_images=[lesion])  # a phone's multi-picture JPEG
    Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "tiny.png")
    Image.new("RGB", (4000, 3), (200, 30, 30)).save(folder / "strip.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "drawing.eps").write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "gone.jpg").symlink_to(folder / "missing.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "linked").symlink_to(folder / "sub", target_is_directory=True)
    out = tmp_path / "rows.json"
    assert main(["predict", str(bundle_dir), str(folder), "--format", "json", "--out", str(out)]) == 1  # some failed
    rows = {Path(r["path"]).relative_to(folder).as_posix(): r for r in json.loads(out.read_text())["results"]}
    expected_errors = {
        "notes.txt": "not a JPEG, PNG, BMP, GIF, TIFF or WebP image",
        "drawing.eps": "not a JPEG, PNG, BMP, GIF, TIFF or WebP image",  # never handed to Ghostscript
        "empty.jpg": "empty file",
        "gone.jpg": f"a broken symbolic link: its target {folder / 'missing.jpg'} does not exist",
        "loop.jpg": "a symbolic link loop",
        "linked": "a link to a folder, not followed",
    }
    classified = {
        "a.webp",
        "b.gif",
        "c.tiff",
        "no_extension",
        "sub/d.bmp",
        "png_named.jpg",
        "camera.jpg",
        "tiny.png",
        "strip.png",
    }
    assert set(rows) == classified | set(expected_errors)  # one row per entry, none dropped
    for name, reason in expected_errors.items():
        assert reason in rows[name]["error"] and rows[name]["label"] is None, name
    for name in classified:
        assert rows[name]["error"] is None and rows[name]["label"] in json.loads(out.read_text())["classes"], name
    assert "only 1x1 pixels, under half the model's 32-pixel input side" in rows["tiny.png"]["warning"]
    assert "only 4000x3 pixels" in rows["strip.png"]["warning"]
    assert all(rows[name]["warning"] is None for name in classified - {"tiny.png", "strip.png"})
    for name in ("notes.txt", "drawing.eps", "empty.jpg", "gone.jpg", "loop.jpg", "linked"):
        (folder / name).unlink()
    assert main(["predict", str(bundle_dir), str(folder), "--format", "json", "--out", str(out), "--force"]) == 0


def test_the_input_spec_gives_back_the_preprocessing_it_was_written_from():
    for preprocessing in (Preprocessing(), Preprocessing(image_size=224, centre_crop=0.6, jpeg_draft_margin=2)):
        bundle = {"artifacts": {"float32.onnx": {"input": input_spec("float32.onnx", preprocessing)}}}
        assert bundle_preprocessing(bundle) == replace(preprocessing, scale=1 / 255, offset=0.0)  # scaling is in-model


def test_a_bundle_with_a_centre_crop_predicts_on_the_centre_and_one_without_the_field_on_the_whole_image(
    bundle_dir, trained_run, tmp_path
):
    image = Image.open(validation_files(trained_run)[0]).convert("RGB").resize((120, 90))
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    assert all(entry["input"]["resize"]["centre_crop"] == 1.0 for entry in manifest["artifacts"].values())
    whole = Classifier.load(bundle_dir, "float32.onnx").pixels(image)
    for crop, name in ((0.5, "cropped"), (None, "older")):
        copy = tmp_path / name
        shutil.copytree(bundle_dir, copy)
        for entry in manifest["artifacts"].values():
            entry["input"]["resize"]["centre_crop"] = crop
            if crop is None:  # written before the crop existed, under schema 3
                del entry["input"]["resize"]["centre_crop"]
        rewrite_bundle(copy, {**manifest, "schema_version": 4 if crop else 3})
        pixels = Classifier.load(copy, "float32.onnx").pixels(image)
        expected = to_model_input(image, Preprocessing(image_size=whole.shape[0], centre_crop=crop or 1.0))
        assert np.array_equal(pixels, expected) and np.array_equal(pixels, whole) == (crop is None)


def test_large_jpegs_are_decoded_reduced_as_the_input_spec_says_unless_asked_for_in_full(
    bundle_dir, trained_run, tmp_path
):
    big = tmp_path / "big.jpg"
    Image.open(validation_files(trained_run)[0]).resize((600, 450), Image.Resampling.BICUBIC).save(big, quality=92)
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    assert all(entry["input"]["resize"]["jpeg_draft"] for entry in manifest["artifacts"].values())
    reduced = Classifier.load(bundle_dir, "float32.onnx", recheck_margin=0, alert_recheck_margin=0)  # never again
    exact = Classifier.load(bundle_dir, "float32.onnx", jpeg_draft=False)
    assert all(entry["input"]["resize"]["jpeg_draft_margin"] == 3 for entry in manifest["artifacts"].values())
    assert reduced.decoded(big).size == (150, 113) and exact.decoded(big).size == (600, 450)  # 1/4 keeps >= 3 x 32
    assert np.abs(reduced.pixels(big).astype(int) - exact.pixels(big)).mean() < 3
    out = tmp_path / "rows.json"
    assert (
        main(
            [
                "predict",
                str(bundle_dir),
                str(big),
                "--artifact",
                "float32.onnx",
                "--full-decode",
                "--format",
                "json",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    row = json.loads(out.read_text())["results"][0]
    expected = exact.predict(big).probabilities
    assert expected != reduced.predict(big).probabilities  # the two decodes differ, so this checks --full-decode
    assert [row[c] for c in expected] == pytest.approx(list(expected.values()), abs=1e-6)
    copy = tmp_path / "older"  # a bundle made before the margin was recorded decoded to no less than 4 input sides
    shutil.copytree(bundle_dir, copy)
    for entry in manifest["artifacts"].values():
        del entry["input"]["resize"]["jpeg_draft_margin"]
    rewrite_bundle(copy, manifest)
    assert Classifier.load(copy, "float32.onnx").decoded(big).size == (300, 225)
    assert Classifier.load(copy, "float32.onnx", jpeg_draft_margin=3).decoded(big).size == (150, 113)
    for entry in manifest["artifacts"].values():  # a bundle of a run that decoded in full (before reduced decoding)
        entry["input"]["resize"]["jpeg_draft"] = False
    rewrite_bundle(copy, manifest)
    assert Classifier.load(copy, "float32.onnx").decoded(big).size == (600, 450)


def test_a_close_answer_from_a_reduced_decode_is_decided_again_from_the_full_decode(bundle_dir, trained_run, tmp_path):
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    Image.open(validation_files(trained_run)[0]).resize((600, 450), Image.Resampling.BICUBIC).save(big, quality=92)
    Image.open(validation_files(trained_run)[0]).save(small, quality=92)
    reduced = Classifier.load(bundle_dir, "float32.onnx", recheck_margin=0, alert_recheck_margin=0)
    exact = Classifier.load(bundle_dir, "float32.onnx", jpeg_draft=False).predict(big).probabilities
    first, second = sorted(reduced.predict(big).probabilities.values())[-2:][::-1]
    margin = first - second
    assert reduced.predict(big).probabilities != exact  # the decodes differ, so a recheck shows
    below, above = (
        Classifier.load(bundle_dir, "float32.onnx", recheck_margin=m, alert_recheck_margin=0)
        for m in (margin * 0.99, margin * 1.01)
    )
    assert below.predict(big).probabilities == reduced.predict(big).probabilities  # not close enough: kept
    assert above.predict(big).probabilities == pytest.approx(exact, abs=1e-6)  # closer than the margin: decided again
    assert Classifier.load(bundle_dir, "float32.onnx").recheck_margin == 0.05  # the default, as measured
    rows = list(above.predict_many([big, small, tmp_path / "missing.jpg"], batch_size=2))
    assert rows[0].probabilities == pytest.approx(exact, abs=1e-6) and isinstance(rows[2], FailedImage)
    assert rows[1].probabilities == reduced.predict(small).probabilities  # its own answer, not the big one's
    close = np.array([list(reduced.predict(big).probabilities.values())])
    assert not np.array_equal(above._rechecked(close, [big]), close)
    np.testing.assert_array_equal(above._rechecked(close, [tmp_path / "gone.jpg"]), close)  # vanished since: kept
    with pytest.raises(EdgelesionError, match="recheck_margin 2 must be"):
        Classifier.load(bundle_dir, "float32.onnx", recheck_margin=2)


def test_a_melanoma_probability_near_the_alert_threshold_is_decided_again_from_the_full_decode(
    bundle_dir, trained_run, tmp_path
):
    big = tmp_path / "big.jpg"
    Image.open(validation_files(trained_run)[0]).resize((600, 450), Image.Resampling.BICUBIC).save(big, quality=92)
    reduced = Classifier.load(bundle_dir, "float32.onnx", recheck_margin=0, alert_recheck_margin=0)
    exact = Classifier.load(bundle_dir, "float32.onnx", jpeg_draft=False).predict(big).probabilities
    threshold = reduced.melanoma_threshold
    assert threshold is not None and reduced.predict(big).probabilities != exact
    distance = abs(log_odds(reduced.predict(big).probabilities["melanoma"]) - log_odds(threshold))
    below, above = (
        Classifier.load(bundle_dir, "float32.onnx", recheck_margin=0, alert_recheck_margin=m)
        for m in (distance * 0.99, distance * 1.01)
    )
    assert below.predict(big).probabilities == reduced.predict(big).probabilities  # not close enough: kept
    assert above.predict(big).probabilities == pytest.approx(exact, abs=1e-6)  # near the threshold: decided again
    assert Classifier.load(bundle_dir, "float32.onnx").alert_recheck_margin == 0.2  # the default, as measured
    alerts_only = Classifier.load(bundle_dir, "float32.onnx", recheck_margin=0)
    rows = np.zeros((4, len(alerts_only.classes)))
    near_and_far = log_odds(threshold) + np.array([-0.15, 0.15, 1.0, -1.0])  # log-odds from the threshold
    rows[:, alerts_only.classes.index("melanoma")] = 1 / (1 + np.exp(-near_and_far))
    np.testing.assert_array_equal(alerts_only.needs_full_decode(rows), [True, True, False, False])
    alerts_only.melanoma_threshold = None  # an artifact without an alert: no alert to keep
    assert not alerts_only.needs_full_decode(rows).any()
    with pytest.raises(EdgelesionError, match="alert_recheck_margin -1 must be"):
        Classifier.load(bundle_dir, "float32.onnx", alert_recheck_margin=-1)


def test_inference_runs_where_tensorflow_cannot_be_imported(bundle_dir, trained_run):
    image = validation_files(trained_run)[0]
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {{'tensorflow', 'tf_keras', 'tensorflow_model_optimization', 'tf2onnx', 'keras',
                                  'sklearn', 'scipy', 'matplotlib', 'imagehash', 'Augmentor', 'mediapipe',
                                  'onnx', 'sympy'}}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import importlib, pkgutil, edgelesion.infer
for module in pkgutil.walk_packages(edgelesion.infer.__path__, 'edgelesion.infer.'):
    importlib.import_module(module.name)  # the whole inference side, not only what predict touches
from edgelesion import Classifier
from edgelesion.cli import main
for artifact in ('int8.tflite', 'int8.onnx'):
    print(Classifier.load({str(bundle_dir)!r}, artifact).predict({image!r}).label)
sys.exit(main(['predict', {str(bundle_dir)!r}, {image!r}]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) >= 3
