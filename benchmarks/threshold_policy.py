"""Which threshold policy to ship: each one chosen on half the validation tracks, judged on images it never saw.

The committed pipeline's model (``models/best.pt``) scores its own validation
and test splits (``data/dataset``, read only). The validation split's target
and held-out tracks are cut in two halves by track, per class, with a seeded
shuffle; every policy of ``signflow.evaluation.threshold.POLICIES``, with its
setting in ``params.yaml``, chooses its threshold on one half and is judged on
the other, both ways round, for ``--seeds`` shuffles. Then, as the pipeline
does, each chooses on the whole validation split and is judged on test and,
when the shared GTSRB subset is there (``benchmarks/common.py``), on the real
photos of the target classes and of the held-out ones: images from recordings
other than the training ones, where genuine signs are less confident.

Figures, each a share: ``known kept`` (target images answered with a sign,
right or wrong), ``known right`` (answered with the right sign),
``held-out rejected`` (never-seen signs answered "unknown"), ``open-set
accuracy`` (both kinds). Prints a Markdown table per set of images on stdout.
Usage: ``python benchmarks/threshold_policy.py [--seeds N] [--no-real]``.
"""

from __future__ import annotations

import logging
import statistics
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from signflow.catalog import UNKNOWN_NAME
from signflow.config import Config
from signflow.data.arrays import load_split
from signflow.data.decode import decode_frame
from signflow.data.images import ImageLimits
from signflow.data.manifest import HELDOUT_LABEL_IDX, ROLE_HELDOUT, to_frame
from signflow.data.sources.gtsrb import read_gtsrb_tree
from signflow.data.split import target_frame
from signflow.evaluation.evaluate import Scored, openset_rows, openset_split, score_split
from signflow.evaluation.openset import openset_hits
from signflow.evaluation.threshold import POLICIES, OpenSetSplit, choose_with_policy, outcomes_at
from signflow.markdown import table
from signflow.model.inference import LoadedModel, load_model

import common

log = logging.getLogger("bench")
DATASET_DIR = common.REPO / "data" / "dataset"
MODEL = common.REPO / "models" / "best.pt"
DEFAULT_SEEDS = 10  # shuffles of the validation tracks; each gives two judgements (A -> B, B -> A)
FIGURES = ("known kept", "known right", "held-out rejected", "open-set accuracy")
NO_THRESHOLD = "none: the unknown class alone"  # threshold 0: what the unknown class rejects by itself


def track_halves(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """True for the rows of half A: per class, a seeded half of its tracks (track ids repeat across classes)."""
    rng = np.random.default_rng(seed)
    keys = frame["class_id"].astype(str) + "/" + frame["track"].astype(str)
    in_a = set()
    for _, tracks in keys.groupby(frame["class_id"].astype(str)):
        shuffled = rng.permutation(tracks.unique())
        in_a.update(shuffled[: len(shuffled) // 2])
    return keys.isin(in_a).to_numpy()


def judge(split: OpenSetSplit, threshold: float) -> dict[str, float | None]:
    """The four figures at ``threshold`` (None for a side without images)."""
    hits = openset_hits(split.scores, split.is_known, split.correct, threshold)
    shares = outcomes_at(split, threshold)
    return {"known kept": shares["known_kept"],
            "known right": float(hits[split.is_known].mean()) if split.is_known.any() else None,
            "held-out rejected": shares["heldout_rejected"],
            "open-set accuracy": float(hits.mean())}


def settings(cfg: Config) -> dict[str, float]:
    return {name: getattr(cfg.evaluate.threshold, policy.setting) for name, policy in POLICIES.items()}


def held_back(val: OpenSetSplit, frame: pd.DataFrame, cfg: Config, seeds: int) -> dict[str, list[dict]]:
    """Per policy: one judgement per half (chosen on the other), ``2 * seeds`` in all."""
    out: dict[str, list[dict]] = {name: [] for name in POLICIES}
    for seed in range(seeds):
        in_a = track_halves(frame, seed)
        for choose_on, judge_on in ((in_a, ~in_a), (~in_a, in_a)):
            for name, setting in settings(cfg).items():
                threshold = choose_with_policy(name, val.take(choose_on), setting).threshold
                out[name].append({"threshold": threshold, **judge(val.take(judge_on), threshold)})
    return out


def _mean_sd(values: Iterable[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f}% ± {100 * sd:.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def held_back_table(results: Mapping[str, list[dict]], cfg: Config) -> str:
    rows = [[f"`{name}` ({setting:g})", f"{statistics.fmean(r['threshold'] for r in results[name]):.3f}",
             *(_mean_sd(r[f] for r in results[name]) for f in FIGURES)]
            for name, setting in settings(cfg).items()]
    return table(["policy (setting)", "mean threshold", *FIGURES], rows, str)


def judged_table(val: OpenSetSplit, sets: Mapping[str, OpenSetSplit], cfg: Config) -> str:
    """Each policy chosen on the whole validation split, judged on each of ``sets``; threshold 0 for reference."""
    chosen = {f"`{name}` ({setting:g})": choose_with_policy(name, val, setting).threshold
              for name, setting in settings(cfg).items()}
    chosen[NO_THRESHOLD] = 0.0
    rows = [[policy, f"{threshold:.3f}", label, *(_pct(v) for v in judge(split, threshold).values())]
            for policy, threshold in chosen.items() for label, split in sets.items()]
    return table(["policy (setting)", "threshold", "images", *FIGURES], rows, str)


def real_photos(cfg: Config, loaded: LoadedModel) -> Scored:
    """Every real GTSRB photo of the target classes and of the held-out ones, scored by ``loaded``."""
    records = read_gtsrb_tree(common.gtsrb_root())
    heldout = [r for r in records if r.class_id in set(cfg.unknown.heldout)]
    frame = pd.concat([target_frame([r for r in records if r.class_id in cfg.data.classes], cfg.data.classes),
                       to_frame(heldout, UNKNOWN_NAME, HELDOUT_LABEL_IDX, ROLE_HELDOUT)], ignore_index=True)
    limits = ImageLimits(cfg.data.min_image_side, cfg.data.max_image_side)
    images = decode_frame(frame, common.gtsrb_root(), loaded.image_size, cfg.data.roi_crop, 0, limits)
    log.info("real photos: %d target, %d held-out", int((frame["role"] != ROLE_HELDOUT).sum()), len(heldout))
    return score_split(loaded, frame, images, cfg.evaluate.batch_size)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="shuffles of the validation tracks")
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--no-real", action="store_true", help="skip the real GTSRB photos")
    args = p.parse_args()
    cfg = common.start(args)
    loaded = load_model(args.model, expect=cfg)
    val, test = (score_split(loaded, *load_split(DATASET_DIR, name), cfg.evaluate.batch_size)
                 for name in ("val", "test"))
    val_split = openset_split(val, loaded.unknown_index)
    val_frame = val.frame[openset_rows(val)].reset_index(drop=True)
    sets = {"test": openset_split(test, loaded.unknown_index)}
    if not args.no_real and common.ARCHIVE.is_file():
        sets["real GTSRB photos"] = openset_split(real_photos(cfg, loaded), loaded.unknown_index)
    halves = held_back(val_split, val_frame, cfg, args.seeds)
    sys.stdout.write(
        f"Validation tracks held back ({int(val_split.is_known.sum())} target and "
        f"{int((~val_split.is_known).sum())} held-out images, halves by track, {args.seeds} shuffles x 2 "
        f"directions; mean ± standard deviation):\n\n{held_back_table(halves, cfg)}\n\n"
        f"Chosen on the whole validation split:\n\n{judged_table(val_split, sets, cfg)}\n")


if __name__ == "__main__":
    main()
