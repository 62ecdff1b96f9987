"""What changes the trained model on one machine: CPU instruction set, oneDNN kernels, thread count.

Builds a small synthetic dataset once (the real stages, in a temporary copy of the pipeline), then trains
the default model (``params.yaml``: linear strategy on ImageNet efficientnet_lite0) and evaluates it
once per variant, each in a fresh process whose environment emulates another CPU:
``ATEN_CPU_CAPABILITY`` (default | avx2 | avx512: PyTorch's own vectorised kernels) and
``ONEDNN_MAX_CPU_ISA`` (AVX2: oneDNN's convolutions and matmuls as on an AVX2-only CPU), or sets
``train.threads``. Each variant is compared with the baseline (``threads`` 1, nothing emulated, run
twice to show a rerun is exact): the largest weight difference of best.pt, the test predictions that
changed, best epoch, validation and test accuracy. One JSON line on stdout.
Usage: ``python benchmarks/bench_determinism.py [--quick] [--keep]``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from bench_repro import copy_pipeline, run, set_params

import common

# Smaller than the default dataset (150 tracks per class), so each variant trains in about half a minute.
DATA_PARAMS = {"data.synthetic.tracks_per_class": 30, "unknown.max_images": 200, "unknown.heldout_max_images": 120,
               "data.decode_workers": 1, "train.threads": 1}
QUICK_PARAMS = {"data.synthetic.tracks_per_class": 10, "unknown.max_images": 60, "unknown.heldout_max_images": 24,
                "train.epochs": 5}
# name -> (environment, train.threads)
VARIANTS: dict[str, tuple[dict[str, str], int]] = {
    "baseline": ({}, 1),
    "baseline_again": ({}, 1),
    "aten_default": ({"ATEN_CPU_CAPABILITY": "default"}, 1),
    "aten_avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, 1),
    "onednn_avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, 1),
    "avx2_machine": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, 1),
    "threads_2": ({}, 2),
}
EMULATION_KEYS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")

log = logging.getLogger("bench.determinism")


def train_and_evaluate(workdir: Path, env: dict[str, str], threads: int) -> dict[str, Any]:
    """A fresh training (no last.pt to resume) and its evaluation; what they wrote."""
    shutil.rmtree(workdir / "models", ignore_errors=True)
    set_params(workdir / "params.yaml", {"train.threads": threads})
    seconds, _ = run([sys.executable, "stages/train.py"], workdir, env)
    run([sys.executable, "stages/evaluate.py"], workdir, env)
    state = torch.load(workdir / "models" / "best.pt", map_location="cpu", weights_only=True)
    return {"weights": state["model"], "seconds": seconds,
            "train": json.loads((workdir / "metrics" / "train.json").read_text()),
            "evaluate": json.loads((workdir / "metrics" / "evaluate.json").read_text()),
            "predictions": pd.read_csv(workdir / "metrics" / "predictions.csv")["prediction"]}


def compare(result: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    diff = max((result["weights"][k].float() - base["weights"][k].float()).abs().max().item()
               for k in base["weights"] if base["weights"][k].is_floating_point())
    return {
        "max_abs_weight_diff": float(f"{diff:.3g}"),
        "test_predictions_changed": int((result["predictions"] != base["predictions"]).sum()),
        "test_images": len(base["predictions"]),
        "best_epoch": result["train"]["best_epoch"], "epochs_run": result["train"]["epochs_run"],
        "best_val_accuracy": result["train"]["best_val_accuracy"],
        "test_accuracy": round(result["evaluate"]["test.accuracy"], 4),
        "train_s": round(result["seconds"], 1),
    }


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="keep the temporary project (its path is logged)")
    args = p.parse_args()
    common.start(args)
    bin_dir = str(Path(sys.executable).parent)
    tmp = tempfile.mkdtemp(prefix="bench-determinism-")
    workdir = Path(tmp) / "project"
    base_env = {key: value for key, value in os.environ.items() if key not in EMULATION_KEYS}
    env = {**base_env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(workdir / "src"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'mlflow.db'}", "SIGNFLOW_LOG": "WARNING"}
    try:
        workdir.mkdir()
        copy_pipeline(workdir)
        shutil.copy2(args.params, workdir / "params.yaml")
        set_params(workdir / "params.yaml", {**DATA_PARAMS, **(QUICK_PARAMS if args.quick else {})})
        for stage in ("download", "split", "add_unknown"):
            run([sys.executable, f"stages/{stage}.py"], workdir, env)
        results: dict[str, dict[str, Any]] = {}
        for name, (extra, threads) in VARIANTS.items():
            log.info("variant %s: %s, train.threads=%d", name, extra or "nothing emulated", threads)
            results[name] = train_and_evaluate(workdir, {**env, **extra}, threads)
    finally:
        if args.keep:
            log.info("kept %s", workdir)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    base = results["baseline"]
    params = {**DATA_PARAMS, **(QUICK_PARAMS if args.quick else {})}
    common.emit({
        "benchmark": "determinism", "quick": args.quick, "params": params,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
        "variants": {name: {"env": VARIANTS[name][0], "threads": VARIANTS[name][1], **compare(result, base)}
                     for name, result in results.items()},
    })


if __name__ == "__main__":
    main()
