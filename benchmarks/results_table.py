"""The originals' comparison, reproducible: strategies x backbones x unknown class x seeds on real GTSRB.

Builds a throw-away git+DVC copy of this project, switches it to the real-data
recipe (``signflow preset gtsrb``: the shared GTSRB subset as a local mirror,
split 80/10/10), then runs one ``dvc exp run -S ... evaluate`` per configuration,
exactly as a user would, one after the other (2 cores: parallel runs would only
slow each other). After each run it reads ``metrics/train.json``,
``metrics/timings/train.json`` and ``metrics/evaluate.json`` and measures the
trained ``models/best.pt``: weight size and inference images/s on the test
split. Writes ``reports/results.md`` (mean and spread over seeds, then every
run) and ``reports/results.csv``; prints one JSON line per run.

Usage: ``python benchmarks/results_table.py [--seeds 0 1 2] [--unknown true false] [--strategies full ...]
[--epochs 8] [--out reports/results] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_repro import set_params

from signflow import paths
from signflow.data.arrays import load_split
from signflow.evaluation.report import md_table
from signflow.files import write_text
from signflow.model.inference import load_model, predict_probs

import common

WORKDIR = Path(os.environ.get("SIGNFLOW_RESULTS_DIR", "/tmp/signflow-results"))
OUT_STEM = common.REPO / "reports" / "results"  # .md and .csv
# (strategy, backbone, extra -S overrides): the originals' strategies on the pretrained backbone,
# and the small CNN from scratch (it has no pretrained weights, so no other strategy applies).
CONFIGS = (
    ("linear", "efficientnet_lite0", []),
    ("partial", "efficientnet_lite0", []),
    ("full", "efficientnet_lite0", []),
    ("scratch", "efficientnet_lite0", []),
    ("scratch", "simple_cnn", ["train.lr=0.003"]),
)
# The real-data recipe for the strategies that train the backbone: 8 epochs fit in 3 minutes on 2 cores.
# linear keeps params.yaml's epochs: its epochs run on cached features and cost milliseconds.
FINE_TUNE_EPOCHS = 8
INFERENCE_BATCH, INFERENCE_REPS = 256, 3
TABLE_STAGE = "evaluate"  # the last stage whose outputs the table reads
# (key, column, decimals): what the table shows of each run.
METRICS = (("test_accuracy", "test acc", 4), ("test_macro_f1", "macro F1", 4), ("openset_auroc", "open-set AUROC", 4),
           ("known_accuracy", "known-class acc", 4), ("heldout_rejected", "held-out rejected", 3),
           ("test_ece", "ECE", 4), ("target_errors", "target errors", 1), ("train_seconds", "train s", 0),
           ("weights_mb", "weights MB", 2), ("inference_img_s", "inference img/s", 0))

log = logging.getLogger("results")


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def prepare(workdir: Path) -> None:
    """A git+DVC copy of the tracked project files on the real-data recipe, data stages run once."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    for name in run(["git", "ls-files"], common.REPO).split():
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(common.REPO / name, target)
    (workdir / "dvc.lock").unlink(missing_ok=True)
    run(["git", "init", "-q"], workdir)
    run([sys.executable, "-m", "signflow", "preset", "gtsrb"], workdir)
    set_params(workdir / "params.yaml", {"data.gtsrb.url": str(common.ARCHIVE), "data.gtsrb.md5": ""})
    run(["git", "add", "-A"], workdir)
    run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "real"], workdir)
    start = time.perf_counter()
    run(["dvc", "repro", "add_unknown"], workdir)
    log.info("data stages on GTSRB: %.1fs", time.perf_counter() - start)


def overrides(strategy: str, backbone: str, extra: list[str], unknown: str, seed: int, epochs: int | None) -> list[str]:
    """The run's ``-S`` values; ``epochs=None`` keeps params.yaml's epochs and early stopping."""
    recipe = [] if epochs is None else [f"train.epochs={epochs}", "train.patience=0"]
    return [f"strategy={strategy}", f"model.backbone={backbone}", f"unknown.enabled={unknown}",
            f"train.seed={seed}", *recipe, *extra]


def measure_model(workdir: Path) -> dict[str, float]:
    """Weights in MB (what a deployment ships, no optimizer state) and inference images/s on the test split."""
    loaded = load_model(workdir / "models" / "best.pt")
    weights = sum(t.numel() * t.element_size() for t in loaded.model.state_dict().values())
    _, images = load_split(workdir / "data" / "dataset", "test")
    images = np.ascontiguousarray(images)
    predict_probs(loaded, images[:INFERENCE_BATCH], INFERENCE_BATCH)  # warm-up
    seconds, _ = common.median_seconds(lambda: predict_probs(loaded, images, INFERENCE_BATCH), INFERENCE_REPS)
    return {"weights_mb": round(weights / 2**20, 2), "inference_img_s": round(len(images) / seconds, 1)}


def reset_params(workdir: Path) -> None:
    """Put back the committed params.yaml before the next ``-S``.

    A workspace ``dvc exp run`` leaves its ``-S`` values in params.yaml, so without
    this every run would inherit the previous runs' overrides (``train.lr=0.003`` of
    the small CNN, the fine-tuning epochs) wherever it does not set the key itself.
    """
    run(["git", "checkout", "HEAD", "--", "params.yaml"], workdir)


def run_experiment(workdir: Path, sets: list[str]) -> None:
    """One workspace experiment from the committed params plus exactly ``sets``, up to ``evaluate``.

    The table reads only what ``train`` and ``evaluate`` write; ``report`` and ``export``
    would only add time per run.
    """
    reset_params(workdir)
    run(["dvc", "exp", "run", *[a for o in sets for a in ("-S", o)], TABLE_STAGE], workdir)


def one_run(workdir: Path, config: tuple[str, str, list[str]], unknown: str, seed: int, epochs: int | None) -> dict:
    strategy, backbone, extra = config
    sets = overrides(strategy, backbone, extra, unknown, seed, epochs)
    run_experiment(workdir, sets)
    train = json.loads((workdir / "metrics" / "train.json").read_text())
    timings = json.loads((workdir / paths.TRAIN_TIMINGS).read_text())
    evaluate = json.loads((workdir / "metrics" / "evaluate.json").read_text())
    return {"strategy": strategy, "backbone": backbone, "unknown": unknown == "true", "seed": seed,
            "test_accuracy": evaluate["test.accuracy"], "test_macro_f1": evaluate["test.macro_f1"],
            "openset_auroc": evaluate.get("openset.auroc"), "test_ece": evaluate["test.ece"],
            "test_ece_uncalibrated": evaluate.get("test.ece_uncalibrated"),
            "known_accuracy": evaluate.get("openset.known_accuracy"),
            "heldout_rejected": evaluate.get("openset.heldout_rejected"),
            "target_errors": target_errors(workdir), "train_seconds": timings["train_seconds"],
            "epochs_run": train["epochs_run"], **measure_model(workdir), "overrides": sets}


def target_errors(workdir: Path) -> int:
    """Misclassified test images of the four targets (argmax, before any threshold)."""
    predictions = pd.read_csv(workdir / "metrics" / "predictions.csv")
    targets = predictions[predictions["role"] == "target"]
    return int((targets["prediction"] != targets["label"]).sum())


def _mean_spread(values: list[Any], decimals: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    spread = f" ± {statistics.stdev(values):.{decimals}f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.{decimals}f}{spread}"


def write_tables(rows: list[dict], command: str, stem: Path) -> None:
    frame = pd.DataFrame(rows)
    frame.drop(columns=["overrides"]).to_csv(stem.with_suffix(".csv"), index=False)
    groups = frame.groupby(["strategy", "backbone", "unknown"], sort=False)
    summary = [[f"`{s}`", b, "on" if u else "off", len(g), *[_mean_spread(g[key].tolist(), d) for key, _, d in METRICS]]
               for (s, b, u), g in groups]
    columns = [label for _, label, _ in METRICS]
    runs = [[r["strategy"], r["backbone"], "on" if r["unknown"] else "off", r["seed"],
             *[_mean_spread([r[key]], d) for key, _, d in METRICS]] for r in rows]
    write_text(stem.with_suffix(".md"), "\n\n".join([
        "# Results: strategies x backbones on real GTSRB",
        "Shared GTSRB subset (25,087 real images, 35 px), four targets (12 priority road, 13 give way, "
        "14 stop, 17 no entry), track-grouped 80/10/10 split (`signflow preset gtsrb`), 64 px input, "
        "2 CPU cores. Mean ± standard deviation over seeds (`train.seed`). \"test acc\" is closed-set accuracy "
        "(targets and, when on, the trained unknown class); \"known-class acc\" and \"held-out rejected\" are "
        "taken at the validation-chosen threshold; \"target errors\" counts misclassified target test images "
        "(argmax); ECE after temperature scaling; weights without optimizer state; inference on the test "
        "split, batch 256.",
        f"Regenerate: `{command}`",
        md_table(["strategy", "backbone", "unknown", "seeds", *columns], summary),
        "## Every run",
        md_table(["strategy", "backbone", "unknown", "seed", *columns], runs),
    ]) + "\n")


def run_epochs(strategy: str, args: argparse.Namespace) -> int | None:
    """Epochs to force: 1 with --quick; none for linear (params.yaml's, on cached features); else --epochs."""
    if args.quick:
        return 1
    return None if strategy == "linear" else args.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--unknown", nargs="+", default=["true", "false"], choices=["true", "false"])
    strategies = sorted({strategy for strategy, _, _ in CONFIGS})
    parser.add_argument("--strategies", nargs="+", default=strategies, choices=strategies,
                        help="only these rows (e.g. the real-data recipe: --strategies full)")
    parser.add_argument("--epochs", type=int, default=FINE_TUNE_EPOCHS,
                        help="epochs of the strategies that train the backbone")
    parser.add_argument("--out", type=Path, default=OUT_STEM, help="writes OUT.md and OUT.csv")
    parser.add_argument("--quick", action="store_true", help="1 epoch, the first two configurations chosen, seed 0")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    common.setup_logging(os.environ.get("SIGNFLOW_LOG", "INFO"))
    prepare(WORKDIR)
    configs = [c for c in CONFIGS if c[0] in args.strategies]
    configs = configs[:2] if args.quick else configs
    seeds = args.seeds[:1] if args.quick else args.seeds
    rows = []
    for unknown in args.unknown:
        for seed in seeds:
            for config in configs:
                rows.append(one_run(WORKDIR, config, unknown, seed, run_epochs(config[0], args)))
                common.emit({k: v for k, v in rows[-1].items()})
                write_tables(rows, "python benchmarks/results_table.py " + " ".join(sys.argv[1:]), args.out)


if __name__ == "__main__":
    main()
