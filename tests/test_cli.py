"""The command line: clear errors naming the file or argument, the right exit codes, no TensorFlow traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import nullcontext

import pytest

from edgelesion import __version__
from edgelesion.cli import main
from edgelesion.errors import EdgelesionError
from tests.conftest import write_dataset


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgelesion.cli", *args], capture_output=True, check=False, text=True, timeout=300
    )


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out


def test_missing_data_folder_is_named(tmp_path, capsys):
    assert main(["audit", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "nowhere does not exist" in err and "Traceback" not in err


def test_empty_class_folder_is_named(dataset_dir, tmp_path, capsys):
    (dataset_dir / "dermatofibroma").mkdir()
    assert main(["train", "--data", str(dataset_dir), "--out", str(tmp_path / "run")]) == 2
    assert "dermatofibroma" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_single_class_is_refused(tmp_path, capsys):
    data = write_dataset(tmp_path / "one", per_class=3, classes={"melanoma": (0, 0, 0)})
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert "at least 2 classes" in capsys.readouterr().err


def test_existing_run_folder_is_refused_before_any_work(dataset_dir, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    assert main(["train", "--data", str(dataset_dir), "--out", str(tmp_path / "run")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"


def test_run_folder_inside_the_dataset_is_refused(dataset_dir, capsys):
    assert main(["train", "--data", str(dataset_dir), "--out", str(dataset_dir / "run")]) == 2
    assert "inside the dataset folder" in capsys.readouterr().err
    assert not (dataset_dir / "run").exists()


def test_bad_option_value_is_a_usage_error(dataset_dir, tmp_path, capsys):
    assert main(["train", "--data", str(dataset_dir), "--out", str(tmp_path / "r"), "--augment-target", "lots"]) == 2
    assert "augmentation target 'lots'" in capsys.readouterr().err


def test_evaluate_missing_run_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "norun")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_audit_writes_report_and_finds_test_overlap(dataset_dir, tmp_path):
    test = write_dataset(tmp_path / "test", per_class=2, seed=42)
    shutil.copy(dataset_dir / "nevus" / "img_005.jpg", test / "melanoma" / "dup.jpg")
    result = run_cli("audit", "--data", str(dataset_dir), "--test", str(test), "--out", str(tmp_path / "audit"))
    assert result.returncode == 0, result.stderr
    assert "1 of 7 images are also in the training folder (1 of them under a different label)" in result.stdout
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    overlap = report["test"]["overlaps_with_training"][0]
    assert overlap["test_label"] == "melanoma" and overlap["train_matches"][0]["label"] == "nevus"
    assert (tmp_path / "audit" / "class_counts.png").stat().st_size > 0
    again = run_cli("audit", "--data", str(dataset_dir), "--out", str(tmp_path / "audit"))
    assert again.returncode == 2 and "--force" in again.stderr


def test_train_then_evaluate_a_test_folder_removes_and_reports_overlap(dataset_dir, tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--data", str(dataset_dir), "--out", str(out), "--recipe", "seed-dropout-augmentor"]
    train += ["--epochs", "1", "--folds", "3", "--min-support", "2", "--batch-size", "8", "--image-size", "32"]
    assert main(train) == 0
    trained = capsys.readouterr().out
    assert trained.index("balanced accuracy") < trained.index("accuracy   ")
    test = write_dataset(tmp_path / "test", per_class=4, seed=7)
    shutil.copy(dataset_dir / "melanoma" / "img_000.jpg", test / "melanoma" / "seen.jpg")
    assert main(["evaluate", str(out), "--data", str(test)]) == 0
    evaluated = capsys.readouterr().out
    assert "1 of 13 test images are also in the training folder" in evaluated
    assert "INFLATED" in evaluated
    folder = next((out / "evaluation").glob("test-test-*"))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_images"] == 12 and metrics["overlap_removed"] == 1
    kept = json.loads((folder / "with_overlap_kept" / "metrics.json").read_text())
    assert kept["n_images"] == 13
    assert kept["balanced_accuracy"]["classes"] == metrics["balanced_accuracy"]["classes"]


def test_killed_training_resumes_from_the_cli_to_the_uninterrupted_result(dataset_dir, tmp_path, capsys):
    import os
    import signal
    import time

    from edgelesion.fileio import read_csv

    common = [
        "--data",
        str(dataset_dir),
        "--recipe",
        "seed-dropout-augmentor",
        "--epochs",
        "3",
        "--folds",
        "3",
        "--min-support",
        "2",
        "--batch-size",
        "8",
        "--image-size",
        "32",
    ]
    assert main(["train", *common, "--out", str(tmp_path / "full")]) == 0  # in this process: only the cut run is killed

    state = tmp_path / "cut" / "checkpoints" / "state.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgelesion.cli", "train", *common, "--out", str(tmp_path / "cut")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not state.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done < 3, f"the run was not interrupted mid-way (epochs done: {done})"

    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(tmp_path / "cut")]) == 0
    assert f"resuming {tmp_path / 'cut'} after epoch {done}" in capsys.readouterr().out
    full = read_csv(tmp_path / "full" / "history.csv")
    cut = read_csv(tmp_path / "cut" / "history.csv")
    assert [r["val_loss"] for r in cut] == [r["val_loss"] for r in full]
    full_metrics = json.loads((tmp_path / "full" / "evaluation" / "validation" / "metrics.json").read_text())
    cut_metrics = json.loads((tmp_path / "cut" / "evaluation" / "validation" / "metrics.json").read_text())
    assert cut_metrics["balanced_accuracy"] == full_metrics["balanced_accuracy"]


def test_lite0_options_take_its_recipe_and_refuse_an_impossible_one(dataset_dir, tmp_path, capsys):
    from edgelesion.cli import _train_config, build_parser
    from edgelesion.train.config import TrainConfig

    args = build_parser("train").parse_args(
        [
            "train",
            "--data",
            str(dataset_dir),
            "--out",
            str(tmp_path / "r"),
            "--model",
            "efficientnet-lite0",
            "--image-size",
            "96",
            "--centre-crop",
            "0.6",
            "--no-online-augment",
            "--label-smoothing",
            "0",
        ]
    )
    config = _train_config(args, fold=args.fold)
    recipe = TrainConfig.for_model("efficientnet-lite0")
    assert config.head_epochs == recipe.head_epochs and config.lr_schedule == "cosine"
    assert config.preprocessing.image_size == 96 and config.preprocessing.scale == recipe.preprocessing.scale
    assert config.preprocessing.centre_crop == 0.6 and recipe.preprocessing.centre_crop == 1
    assert not config.online_augment.enabled and config.label_smoothing == 0
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset_dir),
                "--out",
                str(tmp_path / "r"),
                "--model",
                "efficientnet-lite0",
                "--epochs",
                "3",
            ]
        )
        == 2
    )  # the recipe's 3 head epochs leave no whole-network epoch
    assert "head_epochs 3 must be" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cv_merge_of_a_folder_that_is_not_one_is_a_clear_error(tmp_path, capsys):
    assert main(["cv", "--out", str(tmp_path), "--merge-only"]) == 2
    assert "not a cross-validation folder" in capsys.readouterr().err


def test_an_interrupted_command_exits_130_and_says_how_to_continue(dataset_dir, tmp_path, monkeypatch, capsys):
    from edgelesion.train import training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--data", str(dataset_dir), "--out", str(out)]) == 130
    assert f"interrupted; continue with: edgelesion train --resume --out {out}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["audit", "train", "cv", "evaluate", "export", "calibrate", "predict", "benchmark", "recipes"]
)
def test_help_imports_no_tensorflow_and_prints_only_usage(command):
    code = (
        "import sys\n"
        "from edgelesion.cli import main\n"
        "try:\n"
        f"    main([{command!r}, '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tensorflow', 'tf_keras', 'tf2onnx', 'tensorflow_model_optimization') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: edgelesion {command}") and result.stderr == ""


def test_the_default_is_the_recommended_recipe_and_options_change_it(dataset_dir, tmp_path):
    from edgelesion.cli import _train_config, build_parser
    from edgelesion.train.recipes import RECIPES, RECOMMENDED_RECIPE

    def config(*options: str):
        args = build_parser("train").parse_args(["train", "--data", str(dataset_dir), "--out", "r", *options])
        return _train_config(args, fold=args.fold)

    assert config() == RECIPES[RECOMMENDED_RECIPE].config
    assert config("--recipe", "seed-simple") == RECIPES["seed-simple"].config
    changed = config(
        "--online-augment-options",
        "mixup=0.2,min_crop=0.6,gamma=0.3",
        "--head-learning-rate",
        "5e-4",
        "--near-distance",
        "2",
        "--positive-class",
        "nevus",
        "--augmentor-flips",
    )
    assert changed.online_augment.mixup == 0.2 and changed.online_augment.min_crop == 0.6
    assert changed.online_augment.gamma == 0.3 and changed.online_augment.enabled
    assert changed.head_learning_rate == 5e-4 and changed.near_duplicate_max_distance == 2
    assert changed.positive_class == "nevus" and changed.augment.flips
    base, moved = config().to_dict(), changed.to_dict()
    assert {key for key in base if base[key] != moved[key]} == {
        "online_augment",
        "head_learning_rate",
        "near_duplicate_max_distance",
        "positive_class",
        "augment",
    }


def test_recipes_lists_every_recipe_and_marks_the_default(capsys):
    from edgelesion.train.recipes import RECIPES, RECOMMENDED_RECIPE

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES) and f"{RECOMMENDED_RECIPE}  (default)" in out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--flips"], "--flips is now --augmentor-flips"),
        (["--zoom"], "--zoom is now --augmentor-zoom"),
        (["--recipe", "seed-simple", "--model", "seed-dropout"], "not allowed with argument"),
        (["--online-augment-options", "hue"], "'hue' is not KEY=NUMBER"),
        (["--online-augment-options", "sparkle=2"], "sparkle"),
        (["--model", "resnet-9000"], "--model 'resnet-9000': choose one of"),
    ],
)
def test_renamed_conflicting_and_unknown_training_options_are_refused(dataset_dir, tmp_path, capsys, options, message):
    with pytest.raises(SystemExit) if options[0] in ("--flips", "--zoom", "--recipe") else nullcontext():
        assert main(["train", "--data", str(dataset_dir), "--out", str(tmp_path / "r"), *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_option_not_given_keeps_the_recipe_s_value(dataset_dir, monkeypatch):
    from edgelesion.cli import _train_config, build_parser
    from edgelesion.data.rebalance import AugmentConfig
    from edgelesion.train import recipes
    from edgelesion.train.config import TrainConfig

    config = TrainConfig(
        model="seed-simple",
        pretrained=False,
        seed=7,
        folds=3,
        min_support=2,
        near_duplicate_max_distance=2,
        conflict_policy="keep",
        lookalikes=("nevus",),
        augment=AugmentConfig(target="seed", flips=True),
    )
    monkeypatch.setitem(recipes.RECIPES, "custom", recipes.Recipe("custom", "a recipe that sets them all", config, ""))
    args = build_parser("train").parse_args(["train", "--data", str(dataset_dir), "--out", "r", "--recipe", "custom"])
    assert _train_config(args) == config
    args = build_parser("train").parse_args(
        ["train", "--data", str(dataset_dir), "--out", "r", "--recipe", "custom", "--seed", "1", "--max-copies", "2"]
    )
    assert _train_config(args) == config.with_changes(
        seed=1, augment=AugmentConfig(target="seed", flips=True, max_copies_per_image=2)
    )


def test_strategy_options_reach_the_distribution_config(tmp_path):
    from edgelesion.cli import _distribute, build_parser
    from edgelesion.train.config import DistributeConfig

    base = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert _distribute(build_parser("train").parse_args(base)) == DistributeConfig("auto", None, True)
    given = base + ["--strategy", "multi-worker", "--collective-timeout", "30", "--no-determinism"]
    assert _distribute(build_parser("train").parse_args(given)) == DistributeConfig("multi-worker", 30.0, False)
    with pytest.raises(EdgelesionError, match="--collective-timeout 0.0 must be a positive number of seconds"):
        _distribute(build_parser("train").parse_args([*base, "--collective-timeout", "0"]))
