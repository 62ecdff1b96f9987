"""The originals' comparison table, reproducible: strategies and backbones on real GTSRB.

Builds a throw-away copy of this project pointed at the shared GTSRB subset
(`data.source=gtsrb`, the archive as a local mirror), then runs one
`dvc exp run -S ...` per configuration, exactly as a user would, and prints one
JSON line per configuration (validation/test accuracy, open-set AUROC, training
time). Usage: `python benchmarks/compare_strategies.py [--quick] [--epochs N]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SIGNFLOW_SHARED", REPO.parent / "shared"))
ARCHIVE = SHARED / "data" / "gtsrb" / "GTSRB-Training_subset.zip"
WORKDIR = Path(os.environ.get("SIGNFLOW_COMPARE_DIR", "/tmp/signflow-compare"))
# (name, -S overrides): the originals' strategies plus the small-CNN baseline.
CONFIGS = (
    ("lite0-linear", ["strategy=linear", "model.backbone=efficientnet_lite0"]),
    ("lite0-full", ["strategy=full", "model.backbone=efficientnet_lite0"]),
    ("lite0-scratch", ["strategy=scratch", "model.backbone=efficientnet_lite0"]),
    ("simple_cnn-scratch", ["strategy=scratch", "model.backbone=simple_cnn", "train.lr=0.003"]),
)

log = logging.getLogger("compare")


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def prepare(workdir: Path, epochs: int) -> None:
    """A git+DVC copy of the tracked project files, with GTSRB as the source."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    files = run(["git", "ls-files"], REPO).split()
    for name in files:
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    shutil.rmtree(workdir / "metrics", ignore_errors=True)
    shutil.rmtree(workdir / "reports", ignore_errors=True)
    (workdir / "dvc.lock").unlink(missing_ok=True)
    run(["git", "init", "-q"], workdir)
    run(["dvc", "params", "diff"], workdir)  # fails early if dvc is broken
    overrides = ["data.source=gtsrb", f"data.gtsrb.url={ARCHIVE}", "data.gtsrb.md5=", f"train.epochs={epochs}"]
    _set_params(workdir, overrides)
    run(["git", "add", "-A"], workdir)
    run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "gtsrb"], workdir)
    start = time.perf_counter()
    run(["dvc", "repro", "add_unknown"], workdir)
    log.info("data stages on GTSRB: %.1fs", time.perf_counter() - start)


def _set_params(workdir: Path, overrides: list[str]) -> None:
    import yaml

    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for item in overrides:
        key, value = item.split("=", 1)
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value) if value else ""
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="1 epoch, first two configurations")
    args = parser.parse_args()
    epochs = 1 if args.quick else args.epochs
    prepare(WORKDIR, epochs)
    for name, overrides in CONFIGS[:2] if args.quick else CONFIGS:
        start = time.perf_counter()
        run(["dvc", "exp", "run", "-n", name, *[a for o in overrides for a in ("-S", o)]], WORKDIR)
        train = json.loads((WORKDIR / "metrics" / "train.json").read_text())
        evaluate = json.loads((WORKDIR / "metrics" / "evaluate.json").read_text())
        print(json.dumps({
            "config": name, "overrides": overrides, "epochs": epochs,
            "best_val_accuracy": train["best_val_accuracy"], "test_accuracy": evaluate["test.accuracy"],
            "test_macro_f1": evaluate["test.macro_f1"], "openset_auroc": evaluate["openset.auroc"],
            "test_ece": evaluate["test.ece"], "train_seconds": train["train_seconds"],
            "stage_seconds": round(time.perf_counter() - start, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
