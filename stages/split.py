"""DVC stage `split`: stratified, track-grouped train/val/test manifests of the target classes."""

from signflow import paths
from signflow.config import load_config
from signflow.data.records import INDEX_FILE, read_records
from signflow.data.split import split_targets
from signflow.files import atomic_path
from signflow.logs import run_stage, setup_logging


def main() -> None:
    setup_logging()
    cfg = load_config(paths.PARAMS)
    index = read_records(paths.RAW_DIR / INDEX_FILE)
    frames = split_targets(index, cfg.data.classes, cfg.split.fractions, cfg.split.seed, cfg.split.group_by == "track")
    with atomic_path(paths.SPLIT_DIR) as tmp:
        tmp.mkdir()
        for name, frame in frames.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)


if __name__ == "__main__":
    run_stage(main)
