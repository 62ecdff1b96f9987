"""Prediction on image files vs the model's inference limit, and the ONNX backend vs the torch one.

Writes ``--files`` real GTSRB images (re-encoded as PNG, or the original PPM
files) to a temporary directory, then times, in one process and alternating:

- ``predict_img_s``: ``signflow.serving.batch.predict_files`` on the directory, as
  ``signflow predict DIR`` runs it (collect files, decode in a thread pool,
  classify in batches, build the result dicts), torch backend;
- ``predict_inprocess_decode_img_s``: the same with ``workers=1`` (decoding in
  this thread, no pool), to show what the pool costs or saves;
- ``inference_limit_img_s``: the torch predictor's ``predict_images``
  (``signflow.model.inference.predict_probs``) on the same images already decoded in
  memory, same batch size;
- ``onnx_predict_img_s`` and ``onnx_inference_limit_img_s``: the same two with
  the model exported by ``signflow.serving.export.export_onnx`` (as the export stage
  does) and run by onnxruntime (``signflow predict --backend onnx``).

Then, in fresh processes, ``startup_s``: the wall time of the console script
``signflow predict --backend B --model M --json IMAGE`` on one image, per
backend (median of ``--reps``, backends alternating): interpreter start,
imports, model load, one decode and forward pass, JSON out.

``ratio`` = predict / limit (target >= 0.7); ``onnx_speedup_predict`` and
``onnx_speedup_limit`` = onnx / torch images/s; ``startup_speedup`` = torch /
onnx start-up time. The model is the configured backbone with ImageNet
weights and a fresh head, saved as a signflow checkpoint and loaded with
``signflow.load_predictor`` exactly as the CLI does; torch and onnxruntime
threads are left at their defaults, as in the CLI. ``onnx_max_prob_diff`` and
``onnx_mismatched`` check the two backends agree on the decoded images.
Usage: ``python benchmarks/bench_predict.py [--quick] [--files N] [--format png|ppm]``.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from signflow.config import SPLIT_NAMES, Config
from signflow.data.manifest import read_manifest
from signflow.model.checkpoint import save_checkpoint
from signflow.model.inference import LoadedModel, load_model
from signflow.serving.batch import decode_many, predict_files
from signflow.serving.export import export_onnx
from signflow.serving.predictor import load_predictor
from signflow.training.stage import build_model, checkpoint_meta

import common

FILES, FILES_QUICK = 2000, 200
BATCH_SIZE = 256  # `signflow predict --batch-size` default
RATIO_TARGET = 0.7
# Timed cases: predict_files as the CLI runs it; the same with decoding in-process (workers=1);
# predict_probs on decoded arrays (the limit); decode_many alone through the thread pool;
# predict_files and the limit again with the ONNX model in onnxruntime.
CASES = ("predict", "predict_inprocess", "limit", "decode_pool", "predict_onnx", "limit_onnx")
BACKENDS = ("torch", "onnx")
STARTUP_TIMEOUT_S = 300

log = logging.getLogger("bench.predict")


def write_images(cfg: Config, dataset: Path, out: Path, n: int, fmt: str) -> list[Path]:
    """``n`` GTSRB images of every split and role (targets, unknown, held-out), as files in ``out``."""
    frame = pd.concat([read_manifest(dataset / f"{name}.csv") for name in SPLIT_NAMES], ignore_index=True)
    rows = frame.iloc[np.random.default_rng(common.SUBSAMPLE_SEED).permutation(len(frame))[:n]]
    root = common.gtsrb_root()
    written = []
    for i, path in enumerate(rows["path"]):
        source = root / path
        target = out / f"{i:05d}_{source.stem}.{fmt}"
        if fmt == "ppm":
            shutil.copyfile(source, target)
        elif not cv2.imwrite(str(target), cv2.imread(str(source), cv2.IMREAD_COLOR)):
            raise OSError(f"could not write {target}")
        written.append(target)
    if len(written) < n:
        log.warning("only %d images available, asked for %d", len(written), n)
    return written


def trained_like_checkpoint(cfg: Config, path: Path) -> LoadedModel:
    """The configured model saved as a signflow checkpoint and loaded back as the CLI loads it."""
    model = build_model(cfg)
    save_checkpoint(path, {**checkpoint_meta(cfg, model), "model": model.state_dict(), "epoch": 0})
    return load_model(path, "cpu")


def signflow_command() -> list[str]:
    """The console script beside this python (what a user runs), else ``python -m signflow``."""
    script = Path(sys.executable).parent / "signflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "signflow"]


def startup_seconds(models: dict[str, Path], image: Path, reps: int, cwd: Path) -> dict[str, list[float]]:
    """Wall time of ``signflow predict --backend B --model M --json IMAGE`` in a fresh process, per backend."""
    seconds: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    for rep in range(reps):
        for backend in BACKENDS if rep % 2 == 0 else BACKENDS[::-1]:
            command = [*signflow_command(), "predict", "--backend", backend, "--model", str(models[backend]),
                       "--threshold", "0", "--json", str(image)]
            begin = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S, cwd=cwd)
            seconds[backend].append(time.perf_counter() - begin)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=None,
                   help=f"image files to classify (default: {FILES}, {FILES_QUICK} with --quick)")
    p.add_argument("--format", choices=("png", "ppm"), default="png",
                   help="png: re-encoded (what users usually have); ppm: the original GTSRB files "
                        "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="images per forward pass (default: %(default)s)")
    args = p.parse_args()
    cfg = common.start(args)
    n_files = args.files or (FILES_QUICK if args.quick else FILES)
    dataset = common.prepare_dataset(cfg)

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp_dir = Path(tmp)
        images_dir = tmp_dir / "images"
        images_dir.mkdir()
        files = write_images(cfg, dataset, images_dir, n_files, args.format)
        models = {"torch": tmp_dir / "best.pt", "onnx": tmp_dir / "model.onnx"}
        loaded = trained_like_checkpoint(cfg, models["torch"])
        export_onnx(loaded, models["onnx"], threshold=0.0, source_checkpoint=models["torch"])
        onnx_mb = models["onnx"].stat().st_size / 2**20
        by_torch, by_onnx = load_predictor(models["torch"]), load_predictor(models["onnx"])
        decoded, errors = decode_many(files, loaded.image_size, workers=1)  # untimed: the limits' input
        if any(errors):
            bad = [e for e in errors if e is not None]
            raise RuntimeError(f"{len(bad)} files failed to decode, e.g. {bad[0]}")
        for predictor in (by_torch, by_onnx):  # warm-up: primitives, allocator, onnxruntime's thread pool
            predictor.predict_images(decoded[: args.batch_size], args.batch_size)

        idle_before = common.wait_for_idle(args.wait_idle)
        watch = common.CpuWatch()
        seconds: dict[str, list[float]] = {case: [] for case in CASES}
        for rep in range(args.reps):
            for case in CASES if rep % 2 == 0 else CASES[::-1]:  # alternate, so load drift hits all cases
                begin = time.perf_counter()
                if case == "predict":
                    results = predict_files(by_torch, [images_dir], batch_size=args.batch_size)
                elif case == "predict_inprocess":
                    predict_files(by_torch, [images_dir], batch_size=args.batch_size, workers=1)
                elif case == "limit":
                    torch_probs = by_torch.predict_images(decoded, args.batch_size)
                elif case == "predict_onnx":
                    onnx_results = predict_files(by_onnx, [images_dir], batch_size=args.batch_size)
                elif case == "limit_onnx":
                    onnx_probs = by_onnx.predict_images(decoded, args.batch_size)
                else:  # decoding alone, pool start-up included
                    decode_many(files, loaded.image_size)
                seconds[case].append(time.perf_counter() - begin)
        for found in (results, onnx_results):
            failed = sum("error" in r for r in found)
            if len(found) != len(files) or failed:
                raise RuntimeError(f"predict_files returned {len(found)} results for {len(files)} files, "
                                   f"{failed} failed")
        others_busy = watch.others_cores()
        startup_watch = common.CpuWatch()  # counts the reaped start-up processes as this benchmark's own
        startup = startup_seconds(models, files[0], args.reps, tmp_dir)
        startup_others_busy = startup_watch.others_cores()

    n = len(files)
    img_s = {case: n / statistics.median(times) for case, times in seconds.items()}
    startup_s = {backend: statistics.median(times) for backend, times in startup.items()}
    common.emit({
        "benchmark": "predict",
        "model": cfg.model.backbone, "weights": cfg.model.weights, "image_size": loaded.image_size,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(), "decode_workers": common.available_cores(),
        "channels_last": loaded.channels_last, "n_images": n, "format": args.format,
        "quick": args.quick, "reps": args.reps,
        "predict_img_s": round(img_s["predict"], 1), "inference_limit_img_s": round(img_s["limit"], 1),
        "ratio": round(img_s["predict"] / img_s["limit"], 3), "ratio_target": RATIO_TARGET,
        "predict_inprocess_decode_img_s": round(img_s["predict_inprocess"], 1),
        "ratio_inprocess_decode": round(img_s["predict_inprocess"] / img_s["limit"], 3),
        "decode_only_pool_img_s": round(img_s["decode_pool"], 1),
        "onnx_predict_img_s": round(img_s["predict_onnx"], 1),
        "onnx_inference_limit_img_s": round(img_s["limit_onnx"], 1),
        "onnx_speedup_predict": round(img_s["predict_onnx"] / img_s["predict"], 3),
        "onnx_speedup_limit": round(img_s["limit_onnx"] / img_s["limit"], 3),
        "onnx_max_prob_diff": float(f"{np.abs(onnx_probs - torch_probs).max():.3g}"),
        "onnx_mismatched": int((onnx_probs.argmax(1) != torch_probs.argmax(1)).sum()),
        "startup_s": {backend: round(t, 3) for backend, t in startup_s.items()},
        "startup_speedup": round(startup_s["torch"] / startup_s["onnx"], 2),
        "onnx_model_mb": round(onnx_mb, 2),
        "seconds_reps": {case: [round(t, 3) for t in times] for case, times in seconds.items()},
        "startup_seconds_reps": {backend: [round(t, 3) for t in times] for backend, times in startup.items()},
        "peak_rss_mb": common.peak_rss_mb(),
        "others_cores_busy_before": idle_before, "others_cores_busy": others_busy,
        "startup_others_cores_busy": startup_others_busy,
    })


if __name__ == "__main__":
    main()
