"""Tiny models for tests: a simple_cnn checkpoint whose favoured class is known without training, its ONNX export,
and a fresh-process run that reports which heavy modules it imported (the torch-free predict path must import none).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from signflow.config import load_config
from signflow.model.checkpoint import save_checkpoint
from signflow.model.inference import load_model
from signflow.serving.export import export_onnx
from signflow.training.stage import build_model, checkpoint_meta

IMAGE_SIZE = 32
BIAS_BOOST = 3.0  # logit added to the favoured class: it wins with p ~0.8 on every image
FAVOURED = "stop"
# What `signflow predict --backend onnx` must not import (a `signflow[predict]` install has none of them).
HEAVY_MODULES = ("torch", "torchvision", "timm", "sklearn", "pandas", "dvc", "mlflow", "matplotlib", "yaml")
# Runs python code with the arguments after it, then writes the heavy modules it imported to $HEAVY_OUT.
# -c, not -m signflow: the check must see the process as the console script leaves it.
IMPORT_CHECK = """
import json, os, sys
code = sys.argv.pop(1)
try:
    exec(code)
finally:
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(os.environ["HEAVY"])))
    with open(os.environ["HEAVY_OUT"], "w") as out:
        json.dump(heavy, out)
"""


def tiny_checkpoint(repo_root: Path, path: Path, favoured: str, unknown: bool = True) -> Path:
    cfg = load_config(repo_root / "params.yaml")
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, backbone="simple_cnn", weights="none"),
        data=dataclasses.replace(cfg.data, image_size=IMAGE_SIZE),
        unknown=dataclasses.replace(cfg.unknown, enabled=unknown),
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.head.fc.bias[cfg.class_names.index(favoured)] += BIAS_BOOST
    save_checkpoint(path, {**checkpoint_meta(cfg, model), "model": model.state_dict(), "epoch": 0})
    return path


def tiny_onnx(checkpoint: Path, path: Path, threshold: float = 0.0) -> Path:
    """``checkpoint`` exported as the export stage does: ``path`` and its sidecar ``path.with_suffix(".json")``."""
    export_onnx(load_model(checkpoint), path, threshold=threshold, source_checkpoint=checkpoint)
    return path


def run_checking_imports(code: str, *args: str | Path, cwd: Path, tmp_path: Path) -> tuple[int, str, str, list[str]]:
    """Run ``code`` in a fresh python (``sys.argv[1:]`` = ``args``): exit code, stdout, stderr, heavy modules."""
    heavy_out = tmp_path / "heavy.json"
    env = {**os.environ, "HEAVY": json.dumps(HEAVY_MODULES), "HEAVY_OUT": str(heavy_out)}
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK, code, *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env)
    return done.returncode, done.stdout, done.stderr, json.loads(heavy_out.read_text())
