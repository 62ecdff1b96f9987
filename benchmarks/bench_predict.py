"""Prediction on image files vs the model's inference limit.

Writes ``--files`` real GTSRB images (re-encoded as PNG, or the original PPM
files) to a temporary directory, then times, in one process and alternating:

- ``predict_img_s``: ``signflow.predict.predict_files`` on the directory, as
  ``signflow predict DIR`` runs it (collect files, decode in a process pool,
  classify in batches, build the result dicts);
- ``predict_inprocess_decode_img_s``: the same with ``workers=1`` (decoding in
  this process, no pool), to show what the pool costs or saves;
- ``inference_limit_img_s``: ``signflow.inference.predict_probs`` on the same
  images already decoded in memory, same batch size.

``ratio`` = predict / limit (target >= 0.7). The model is the configured
backbone with ImageNet weights and a fresh head, saved as a signflow
checkpoint and reloaded with ``load_model`` exactly as the CLI does; torch
threads are left at torch's default, as in the CLI.
Usage: ``python benchmarks/bench_predict.py [--quick] [--files N] [--format png|ppm]``.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from signflow.checkpoint import save_checkpoint
from signflow.config import SPLIT_NAMES, Config
from signflow.data.manifest import read_manifest
from signflow.experiment import build_model, checkpoint_meta
from signflow.inference import LoadedModel, load_model, predict_probs
from signflow.predict import decode_many, predict_files

import common

FILES, FILES_QUICK = 2000, 200
BATCH_SIZE = 256  # `signflow predict --batch-size` default
RATIO_TARGET = 0.7
# Timed cases: predict_files as the CLI runs it; the same with decoding in-process (workers=1);
# predict_probs on decoded arrays (the limit); decode_many alone through the process pool.
CASES = ("predict", "predict_inprocess", "limit", "decode_pool")

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
        loaded = trained_like_checkpoint(cfg, tmp_dir / "best.pt")
        decoded, errors = decode_many(files, loaded.image_size, workers=1)  # untimed: the limit's input
        if any(errors):
            bad = [e for e in errors if e is not None]
            raise RuntimeError(f"{len(bad)} files failed to decode, e.g. {bad[0]}")
        predict_probs(loaded, decoded[: args.batch_size], args.batch_size)  # warm-up: primitives, allocator

        idle_before = common.wait_for_idle(args.wait_idle)
        watch = common.CpuWatch()
        seconds: dict[str, list[float]] = {case: [] for case in CASES}
        for rep in range(args.reps):
            for case in CASES if rep % 2 == 0 else CASES[::-1]:  # alternate, so load drift hits all cases
                begin = time.perf_counter()
                if case == "predict":
                    results = predict_files(loaded, [images_dir], batch_size=args.batch_size)
                elif case == "predict_inprocess":
                    predict_files(loaded, [images_dir], batch_size=args.batch_size, workers=1)
                elif case == "limit":
                    predict_probs(loaded, decoded, args.batch_size)
                else:  # decoding alone, pool start-up included
                    decode_many(files, loaded.image_size)
                seconds[case].append(time.perf_counter() - begin)
        failed = sum("error" in r for r in results)
        if len(results) != len(files) or failed:
            raise RuntimeError(f"predict_files returned {len(results)} results for {len(files)} files, {failed} failed")

    n = len(files)
    img_s = {case: n / statistics.median(times) for case, times in seconds.items()}
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
        "seconds_reps": {case: [round(t, 3) for t in times] for case, times in seconds.items()},
        "peak_rss_mb": common.peak_rss_mb(),
        "others_cores_busy_before": idle_before, "others_cores_busy": watch.others_cores(),
    })


if __name__ == "__main__":
    main()
