"""DVC stage `split`: stratified, grouped train/val/test manifests of the target classes, minus split.exclude."""

from signflow import paths
from signflow.config import load_config
from signflow.data.images import ImageLimits
from signflow.data.records import INDEX_FILE, read_records
from signflow.data.split import EXCLUDED_FILE, excluded_frame, resolve_grouping, split_targets
from signflow.files import atomic_path
from signflow.logs import run_stage, setup_logging


def main() -> None:
    setup_logging()
    cfg = load_config(paths.PARAMS)
    index = read_records(paths.RAW_DIR / INDEX_FILE)
    exclude = cfg.split.exclude_reasons
    excluded = excluded_frame(index, exclude)  # first: a path not in the index fails before any image is read
    # Only group_by hash reads images (decoded whole from data/raw, in decode_workers processes).
    grouping = resolve_grouping(cfg.split.group_by, raw_root=paths.RAW_DIR, hash_distance=cfg.split.hash_distance,
                                limits=ImageLimits(cfg.data.min_image_side, cfg.data.max_image_side),
                                workers=cfg.data.decode_workers)
    frames = split_targets(index, cfg.data.classes, cfg.split.fractions, cfg.split.seed,
                           grouping=grouping, exclude=exclude)
    with atomic_path(paths.SPLIT_DIR) as tmp:
        tmp.mkdir()
        for name, frame in frames.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)
        excluded.to_csv(tmp / EXCLUDED_FILE, index=False)  # the reasons travel with the data


if __name__ == "__main__":
    run_stage(main)
