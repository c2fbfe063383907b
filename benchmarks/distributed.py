"""Training under tf.distribute against one device, Lite0 on the shared set, and what mixed_bfloat16 does here.

    .venv/bin/python -m benchmarks.distributed                  # trains what is missing (resumable), records
    .venv/bin/python -m benchmarks.distributed --seeds 0 1 2

Three ways of training the recipe (`--recipe lite0-20ep --epochs 3 --head-epochs 1`, fold 0, the same global batch
of 32), each for every seed: one device (`--strategy none`), `mirrored` over two logical CPU devices of this
process, and `multi-worker` over two local processes (inside one private network namespace, TF_CONFIG on
127.0.0.1). Recorded: the first 50 steps' losses of each against one device (largest relative difference), the
validation balanced accuracy and melanoma sensitivity of each run, and each strategy's paired difference from one
device over the seeds (mean, 95% t interval). Then a killed worker: a multi-worker run of seed 0 whose second worker
is killed (SIGKILL) 15 s into its second epoch; recorded are the seconds until the chief stops and its message, and
after restarting both workers with --resume, the largest difference of the final weights from the uninterrupted
multi-worker run. Last, `--precision mixed_bfloat16` on this CPU: its flags, and what the option does (trains, or
the refusal). Runs go to runs/benchmarks/distributed/ (git-ignored); the record is
benchmarks/results/distributed_KIND.{json,md} with distributed_KIND/first_steps.png (KIND: the CPU kind).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from benchmarks.common import RESULTS, RUNS, cpu_kind_record_name, markdown_table, record, require_data, write_table
from edgelesion.fileio import read_csv, read_json
from edgelesion.provenance import cpu_flags
from tests.launch_on_cpus import PrivateNetwork, PrivateNetworkRefused, command

TRAIN = ["--recipe", "lite0-20ep", "--epochs", "3", "--head-epochs", "1", "--batch-size", "32"]
STRATEGIES = {"one device": (0, "none"), "mirrored": (2, "mirrored"), "multi-worker": (0, "multi-worker")}
FIRST_STEPS = 50
KILL_AFTER_SECONDS = 15.0  # into the second epoch


def _finished(run: Path) -> bool:
    return (run / "evaluation" / "validation" / "metrics.json").is_file()


def _logged(log: Path) -> Callable[[int], dict[str, Any]]:
    """Each worker's output appended to its own log beside `log`."""
    return lambda index: {
        "stdout": open(log.with_name(f"{log.name}-worker-{index}.log"), "a"),
        "stderr": subprocess.STDOUT,
    }


def _train(name: str, seed: int, run: Path, network: PrivateNetwork) -> None:
    """Train (or resume) one run of strategy `name` to its end."""
    if _finished(run):
        return
    devices, strategy = STRATEGIES[name]
    start = ["train", "--resume", "--out", str(run)] if (run / "checkpoints" / "state.json").is_file() else None
    args = (start or ["train", "--data", str(require_data()), "--out", str(run), *TRAIN, "--seed", str(seed)]) + [
        "--strategy",
        strategy,
    ]
    print(f"{name}, seed {seed}: {run}", flush=True)
    log = run.parent / f"{run.name}.log"
    if strategy == "multi-worker":
        workers = network.workers(args, _logged(log))
        codes = [w.wait() for w in workers]
    else:
        with open(log, "a") as out:
            result = subprocess.run(command(devices, *args), check=False, stdout=out, stderr=subprocess.STDOUT)
            codes = [result.returncode]
    if any(codes):
        raise SystemExit(f"{run} failed (exit {codes}): see {log}")


def _killed_worker(reference: Path, run: Path, network: PrivateNetwork) -> dict[str, Any]:
    """Kill the second worker of a multi-worker run mid-epoch, time the chief's stop, resume, compare weights."""
    if not _finished(run):
        shutil.rmtree(run, ignore_errors=True)
        log = run.parent / f"{run.name}.log"
        args = ["train", "--data", str(require_data()), "--out", str(run), *TRAIN, "--seed", "0"]
        chief, second = network.workers([*args, "--strategy", "multi-worker"], _logged(log))
        state = run / "checkpoints" / "state.json"
        while not (state.is_file() and read_json(state)["epochs_done"] >= 1):
            time.sleep(0.5)
        time.sleep(KILL_AFTER_SECONDS)
        second.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        chief.wait()
        stopped_after = time.monotonic() - killed
        second.wait()
        message = [line for line in log.with_name(f"{log.name}-worker-0.log").read_text().splitlines() if line][-1]
        kill = {"epochs_done_at_kill": read_json(state)["epochs_done"], "chief_exit": chief.returncode}
        kill.update(chief_stopped_after_seconds=round(stopped_after, 1), chief_message=message)
        resumed = network.workers(["train", "--resume", "--out", str(run), "--strategy", "multi-worker"], _logged(log))
        if any(w.wait() for w in resumed):
            raise SystemExit(f"the resumed run {run} failed: see {log}")
        (run / "kill.json").write_text(json.dumps(kill))
    from edgelesion._tf import keras

    def weights(folder: Path) -> list[np.ndarray]:
        state = read_json(folder / "checkpoints" / "state.json")
        return keras.models.load_model(folder / "checkpoints" / state["checkpoint"]).get_weights()

    difference = max(float(np.abs(a - b).max()) for a, b in zip(weights(run), weights(reference)))
    return {
        **json.loads((run / "kill.json").read_text()),
        "final_weights_max_abs_difference": difference,
        "val_balanced_accuracy": _figures(run)["val_balanced_accuracy"],
        "uninterrupted_val_balanced_accuracy": _figures(reference)["val_balanced_accuracy"],
    }


def _figures(run: Path) -> dict[str, Any]:
    metrics = read_json(run / "evaluation" / "validation" / "metrics.json")
    return {
        "val_balanced_accuracy": metrics["balanced_accuracy"]["value"],
        "val_melanoma_sensitivity": metrics["melanoma_sensitivity"]["value"],
        "first_step_losses": [float(row["loss"]) for row in read_csv(run / "steps.csv")][:FIRST_STEPS],
        "distribution": read_json(run / "distribution.json"),
    }


def _t_interval(differences: list[float]) -> dict[str, Any]:
    mean = float(np.mean(differences))
    if len(differences) < 2:
        return {"value": mean, "ci95": None, "seeds": len(differences)}
    half = float(stats.t.ppf(0.975, len(differences) - 1) * stats.sem(differences))
    return {"value": mean, "ci95": [mean - half, mean + half], "seeds": len(differences)}


def _bfloat16() -> dict[str, Any]:
    flags = [f for f in cpu_flags() if f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2")]
    from edgelesion.errors import EdgelesionError
    from edgelesion.train.precision import check_precision

    try:
        check_precision("mixed_bfloat16")
        outcome = "allowed: this CPU has bfloat16 instructions (its throughput is not measured by this script)"
    except EdgelesionError as exc:
        outcome = f"refused: {exc}"
    return {"cpu_flags": flags, "mixed_bfloat16": outcome}


def _plot(runs: dict[str, dict[str, Any]], target: Path) -> None:
    import matplotlib.pyplot as plt

    from edgelesion.plots import save_figure

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    reference = np.array(runs["one device"]["first_step_losses"])
    for name, figures in runs.items():
        losses = np.array(figures["first_step_losses"])
        top.plot(range(1, len(losses) + 1), losses, label=name)
        bottom.plot(range(1, len(losses) + 1), np.abs(losses - reference) / reference, label=name)
    top.set_ylabel("loss (running mean of the epoch)")
    top.legend()
    bottom.set_ylabel("relative difference from one device")
    bottom.set_xlabel("step (seed 0)")
    fig.suptitle("Lite0 on the shared set: the first steps under each strategy")
    save_figure(fig, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-kill", action="store_true", help="leave out the killed-worker run")
    args = parser.parse_args()
    folder = RUNS / "distributed"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        network = PrivateNetwork()
    except PrivateNetworkRefused as refusal:
        raise SystemExit(f"multi-worker runs need a private network namespace (run as root: unshare -n): {refusal}")
    try:
        for seed in args.seeds:
            for name in STRATEGIES:
                _train(name, seed, folder / f"{name.replace(' ', '-')}-seed{seed}", network)
        kill = None if args.no_kill else _killed_worker(folder / "multi-worker-seed0", folder / "killed", network)
    finally:
        network.close()
    runs = {
        name: {seed: _figures(folder / f"{name.replace(' ', '-')}-seed{seed}") for seed in args.seeds}
        for name in STRATEGIES
    }
    name = cpu_kind_record_name("distributed")
    first = {strategy: by_seed[args.seeds[0]] for strategy, by_seed in runs.items()}
    _plot(first, RESULTS / name / "first_steps.png")
    reference = np.array(first["one device"]["first_step_losses"])
    comparison = {}
    for strategy in ("mirrored", "multi-worker"):
        losses = np.array(first[strategy]["first_step_losses"])
        differences = {
            key: [runs[strategy][s][key] - runs["one device"][s][key] for s in args.seeds]
            for key in ("val_balanced_accuracy", "val_melanoma_sensitivity")
        }
        comparison[strategy] = {
            "first_steps_max_relative_loss_difference": float(np.max(np.abs(losses - reference) / reference)),
            **{f"{key}_difference": _t_interval(values) for key, values in differences.items()},
        }
    results = {
        "command": "python -m benchmarks.distributed " + " ".join(sys.argv[1:]),
        "train_options": TRAIN,
        "runs": {strategy: {str(s): f for s, f in by_seed.items()} for strategy, by_seed in runs.items()},
        "against_one_device": comparison,
        "killed_worker": kill,
        "bfloat16": _bfloat16(),
    }
    record(name, results)
    rows = []
    for strategy, by_seed in runs.items():
        for seed, figures in by_seed.items():
            rows.append(
                [
                    strategy,
                    str(seed),
                    f"{figures['val_balanced_accuracy']:.3f}",
                    f"{figures['val_melanoma_sensitivity']:.3f}",
                ]
            )
    lines = ["# Training under tf.distribute against one device (Lite0, shared set, fold 0)", ""]
    lines += [f"Command: `{results['command']}`; options `{' '.join(TRAIN)}`.", ""]
    lines += markdown_table(["strategy", "seed", "val balanced accuracy", "val melanoma sensitivity"], rows, "llrr")
    lines += ["", "Against one device (paired by seed; mean difference, 95% t interval over the seeds):", ""]
    for strategy, figures in comparison.items():
        bal, mel = figures["val_balanced_accuracy_difference"], figures["val_melanoma_sensitivity_difference"]
        ci = lambda e: "n/a" if e["ci95"] is None else f"[{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]"
        lines.append(
            f"- {strategy}: first {FIRST_STEPS} steps' losses within {figures['first_steps_max_relative_loss_difference']:.1e}"
            f" (relative); balanced accuracy {bal['value']:+.3f} {ci(bal)}, melanoma sensitivity {mel['value']:+.3f} "
            f"{ci(mel)}"
        )
    if kill:
        lines += [
            "",
            f"Killed worker: the chief stopped {kill['chief_stopped_after_seconds']} s after its peer was killed "
            f'(exit {kill["chief_exit"]}: "{kill["chief_message"][:200]}"); resumed from epoch '
            f"{kill['epochs_done_at_kill']}, its final weights differ from the uninterrupted run's by at most "
            f"{kill['final_weights_max_abs_difference']:.1e}.",
        ]
    lines += ["", f"mixed_bfloat16 on this CPU ({', '.join(results['bfloat16']['cpu_flags'])}): "
              f"{results['bfloat16']['mixed_bfloat16']}"]  # fmt: skip
    write_table(name, lines)


if __name__ == "__main__":
    main()
